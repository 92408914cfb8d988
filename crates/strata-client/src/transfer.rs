//! Moving tensor sets over the wire: downloading a task's parameters into one assembled copy,
//! and uploading a result as a header followed by slices.

use crate::backoff::Backoff;
use crate::{ClientError, ProtocolError, Rpc, is_outage};
use prost::Message;
use strata_core::mask::BitMask;
use strata_core::tensor::TensorSet;
use strata_methods::ccvr::ClassStats;
use strata_proto::assemble::AssemblyLimits;
use strata_proto::mask::mask_slices;
use strata_proto::secagg::{Answer, answer_to_wire};
use strata_proto::{Assembler, Decoding, Encoded, TensorSlices, pb};
use tokio::time::Instant;
use tonic::Code;
use tracing::warn;

/// One client's per-class statistics of the classifier's input (CCVR).
#[derive(Debug)]
pub struct FeatureStats {
    pub dim: usize,
    pub classes: Vec<ClassStats>,
}

/// Streams a task's parameters, into `spare` when it fits (see [`Assembler::reusing`]), taking
/// the encodings `decoding` allows; returns them with the bytes received. A stream the
/// transport cuts is asked for again from the first part not received, until `until`.
pub async fn download(
    rpc: &mut Rpc,
    request: pb::DownloadRequest,
    spare: Option<TensorSet>,
    decoding: Decoding,
    until: Instant,
) -> Result<(TensorSet, u64), ClientError> {
    let mut progress = Download { first: None, parts: 0, bytes: 0, spare, decoding };
    let mut backoff = Backoff::new();
    loop {
        let request = pb::DownloadRequest { resume_from_part: progress.parts, ..request.clone() };
        match progress.receive(rpc, request).await {
            Ok(()) => break,
            Err(ClientError::Rpc(status)) if is_outage(&status) && Instant::now() < until => {
                warn!(task = %request_task(&progress), parts = progress.parts, "download cut ({}); resuming", status.message());
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
    let (_, assembler) = progress.first.ok_or(ProtocolError::EmptyStream)?;
    let set = assembler.finish().map_err(ProtocolError::Parameters)?;
    Ok((set, progress.bytes))
}

/// A download so far: its header and assembler, the parts after the header received.
struct Download {
    first: Option<(pb::ParameterHeader, Assembler)>,
    parts: u64,
    bytes: u64,
    spare: Option<TensorSet>,
    decoding: Decoding,
}

impl Download {
    /// One stream of the download, from `request.resume_from_part` on.
    async fn receive(&mut self, rpc: &mut Rpc, request: pb::DownloadRequest) -> Result<(), ClientError> {
        let mut stream = rpc.download_parameters(request).await?.into_inner();
        let head = stream.message().await?.ok_or(ProtocolError::EmptyStream)?;
        self.bytes += head.encoded_len() as u64;
        let Some(pb::parameter_part::Part::Header(header)) = head.part else {
            return Err(ProtocolError::NoHeader.into());
        };
        match &self.first {
            Some((first, _)) if *first != header => return Err(ProtocolError::ResumedHeaderChanged.into()),
            Some(_) => {}
            None => {
                let (limits, decoding) = (AssemblyLimits::default(), self.decoding.clone());
                let assembler =
                    Assembler::reusing(&header.tensors, header.total_bytes, limits, self.spare.take(), decoding)
                        .map_err(ProtocolError::ParameterHeader)?;
                self.first = Some((header, assembler));
            }
        }
        let Some((_, assembler)) = self.first.as_mut() else { return Err(ProtocolError::NoHeader.into()) };
        while let Some(part) = stream.message().await? {
            self.bytes += part.encoded_len() as u64;
            match part.part {
                Some(pb::parameter_part::Part::Tensor(slice)) => {
                    assembler.push(&slice).map_err(ProtocolError::Parameters)?
                }
                _ => return Err(ProtocolError::UnexpectedPart.into()),
            }
            self.parts += 1;
        }
        Ok(())
    }
}

fn request_task(download: &Download) -> &str {
    download.first.as_ref().map_or("", |(h, _)| h.task_id.as_str())
}

/// Uploads a result: the header (with the tensors' specs and encodings), then the tensors
/// slice by slice, then the mask's and the feature statistics' slices. A stream the transport
/// cuts is resumed, until `until`, from the parts the server says it holds (`UploadOffset`).
pub async fn upload(
    rpc: &mut Rpc,
    mut header: pb::ResultHeader,
    tensors: Encoded,
    mask: Option<BitMask>,
    stats: Option<FeatureStats>,
    chunk_bytes: usize,
    until: Instant,
) -> Result<u64, ClientError> {
    header.tensors = tensors.specs();
    header.total_bytes = tensors.total_bytes();
    header.mask = mask.as_ref().map(|m| pb::MaskSpec { num_bits: m.len() as u64 });
    let mask_parts: Vec<_> = mask
        .map(|m| mask_slices(&m, chunk_bytes))
        .unwrap_or_default()
        .into_iter()
        .map(|slice| pb::ResultPart { part: Some(pb::result_part::Part::Mask(slice)) })
        .collect();
    let stats_parts: Vec<_> = match stats {
        Some(FeatureStats { dim, classes }) => {
            let (spec, bytes) = strata_proto::stats::encode(&classes, dim);
            header.feature_stats = Some(spec);
            strata_proto::stats::stats_slices(&bytes, chunk_bytes)
        }
        None => Vec::new(),
    }
    .into_iter()
    .map(|slice| pb::ResultPart { part: Some(pb::result_part::Part::Stats(slice)) })
    .collect();
    // Every part after the header, cut again (the same way) for each stream.
    let parts = || {
        TensorSlices::encoded(tensors.clone(), chunk_bytes)
            .map(|slice| pb::ResultPart { part: Some(pb::result_part::Part::Tensor(slice)) })
            .chain(mask_parts.clone())
            .chain(stats_parts.clone())
    };
    let (mut from, mut retried) = (0, false);
    let mut backoff = Backoff::new();
    loop {
        let first = pb::ResultHeader { resume_from_part: from, ..header.clone() };
        let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(first)) };
        // The iterator encodes one slice at a time as the transport pulls it.
        let skip = usize::try_from(from).unwrap_or(usize::MAX);
        let stream = tokio_stream::iter(std::iter::once(first).chain(parts().skip(skip)));
        let cut = match rpc.push_result(stream).await {
            Ok(ack) => return Ok(ack.into_inner().bytes_received),
            // A retry of a result the server took before the cut lost its answer: `UploadOffset`
            // said no stream of it was still open, so the server holds it whole.
            Err(status) if retried && status.code() == Code::AlreadyExists => return Ok(0),
            Err(status) if is_outage(&status) && Instant::now() < until => status,
            Err(status) => return Err(status.into()),
        };
        // Ask where the server stands once it answers again.
        let request = pb::UploadOffsetRequest {
            run_id: header.run_id.clone(),
            client_id: header.client_id.clone(),
            session: header.session.clone(),
            task_id: header.task_id.clone(),
        };
        let offset = loop {
            tokio::time::sleep(backoff.next_delay()).await;
            if Instant::now() >= until {
                return Err(cut.into());
            }
            match rpc.upload_offset(request.clone()).await {
                Ok(reply) => break reply.into_inner(),
                Err(status) if is_outage(&status) => continue,
                Err(status) => return Err(status.into()),
            }
        };
        (from, retried) = (offset.parts_received, true);
        warn!(
            task = %header.task_id,
            resume_from_part = from,
            server_holds_bytes = offset.bytes_received,
            update_bytes = header.total_bytes,
            resent_bytes = header.total_bytes.saturating_sub(offset.bytes_received),
            "upload cut ({}); resuming",
            cut.message()
        );
    }
}

/// Uploads a secure-aggregation answer: the header alone, or with a masked vector's slices
/// after it.
pub async fn upload_answer(
    rpc: &mut Rpc,
    mut header: pb::ResultHeader,
    answer: Answer,
    chunk_bytes: usize,
) -> Result<u64, ClientError> {
    header.secagg = Some(answer_to_wire(&answer));
    let values = match answer {
        Answer::Masked(values) => values,
        _ => Vec::new(),
    };
    let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) };
    let slices: Vec<_> = strata_proto::masked::masked_slices(&values, chunk_bytes)
        .map(|slice| pb::ResultPart { part: Some(pb::result_part::Part::Masked(slice)) })
        .collect();
    let ack = rpc.push_result(tokio_stream::iter(std::iter::once(first).chain(slices))).await?.into_inner();
    Ok(ack.bytes_received)
}
