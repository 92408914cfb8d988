//! Moving tensor sets over the wire: downloading a task's parameters into one assembled copy,
//! and uploading a result as a header followed by slices.

use crate::{ClientError, ProtocolError, Rpc};
use prost::Message;
use strata_core::mask::BitMask;
use strata_core::tensor::TensorSet;
use strata_methods::ccvr::ClassStats;
use strata_proto::assemble::AssemblyLimits;
use strata_proto::mask::mask_slices;
use strata_proto::secagg::{Answer, answer_to_wire};
use strata_proto::{Assembler, Decoding, Encoded, TensorSlices, pb};

/// One client's per-class statistics of the classifier's input (CCVR).
#[derive(Debug)]
pub struct FeatureStats {
    pub dim: usize,
    pub classes: Vec<ClassStats>,
}

/// Streams a task's parameters, into `spare` when it fits (see [`Assembler::reusing`]), taking
/// the encodings `decoding` allows; returns them with the bytes received.
pub async fn download(
    rpc: &mut Rpc,
    request: pb::DownloadRequest,
    spare: Option<TensorSet>,
    decoding: Decoding,
) -> Result<(TensorSet, u64), ClientError> {
    let mut stream = rpc.download_parameters(request).await?.into_inner();
    let first = stream.message().await?.ok_or(ProtocolError::EmptyStream)?;
    let mut bytes = first.encoded_len() as u64;
    let Some(pb::parameter_part::Part::Header(header)) = first.part else {
        return Err(ProtocolError::NoHeader.into());
    };
    let mut assembler =
        Assembler::reusing(&header.tensors, header.total_bytes, AssemblyLimits::default(), spare, decoding)
            .map_err(ProtocolError::ParameterHeader)?;
    while let Some(part) = stream.message().await? {
        bytes += part.encoded_len() as u64;
        match part.part {
            Some(pb::parameter_part::Part::Tensor(slice)) => {
                assembler.push(&slice).map_err(ProtocolError::Parameters)?
            }
            _ => return Err(ProtocolError::UnexpectedPart.into()),
        }
    }
    let set = assembler.finish().map_err(ProtocolError::Parameters)?;
    Ok((set, bytes))
}

/// Uploads a result: the header (with the tensors' specs and encodings), then the tensors
/// slice by slice, then the mask's and the feature statistics' slices.
pub async fn upload(
    rpc: &mut Rpc,
    mut header: pb::ResultHeader,
    tensors: Encoded,
    mask: Option<BitMask>,
    stats: Option<FeatureStats>,
    chunk_bytes: usize,
) -> Result<u64, ClientError> {
    header.tensors = tensors.specs();
    header.total_bytes = tensors.total_bytes();
    header.mask = mask.as_ref().map(|m| pb::MaskSpec { num_bits: m.len() as u64 });
    let mask_parts = mask
        .map(|m| mask_slices(&m, chunk_bytes))
        .unwrap_or_default()
        .into_iter()
        .map(|slice| pb::ResultPart { part: Some(pb::result_part::Part::Mask(slice)) });
    let stats_parts = match stats {
        Some(FeatureStats { dim, classes }) => {
            let (spec, bytes) = strata_proto::stats::encode(&classes, dim);
            header.feature_stats = Some(spec);
            strata_proto::stats::stats_slices(&bytes, chunk_bytes)
        }
        None => Vec::new(),
    }
    .into_iter()
    .map(|slice| pb::ResultPart { part: Some(pb::result_part::Part::Stats(slice)) });
    let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) };
    let slices = TensorSlices::encoded(tensors, chunk_bytes)
        .map(|slice| pb::ResultPart { part: Some(pb::result_part::Part::Tensor(slice)) });
    // The iterator encodes one slice at a time as the transport pulls it.
    let parts = tokio_stream::iter(std::iter::once(first).chain(slices).chain(mask_parts).chain(stats_parts));
    let ack = rpc.push_result(parts).await?.into_inner();
    Ok(ack.bytes_received)
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
