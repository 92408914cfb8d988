//! The yardstick for "wire speed": the same bytes a model transfer moves, through a bare tonic
//! stream on loopback with Strata's message types, chunk size and HTTP/2 windows, and nothing
//! else — then with Strata's own steps added one at a time, so that the gap between a bare
//! stream and a Strata round can be split into its causes:
//!
//! - `bare`: the server streams parts prepared in advance (each sent as a clone, as any
//!   server that keeps its model must); the client counts the bytes and drops them.
//! - `+ slicing`: the server cuts the model into parts as Strata does (`TensorSlices`: f32
//!   values to little-endian bytes, one part at a time).
//! - `+ assembling`: the client also builds the model from the parts as Strata does
//!   (`Assembler`: checked against the header, copied into place), in fresh memory each time.
//! - `+ assembling into the last one`: the same, into the previous download's memory
//!   (`Assembler::reusing`), as a Strata client does since 2026-12-03.
//! - `upload, bare`: the client streams prepared parts to the server, which counts and drops
//!   them.
//!
//! - `N streams at once`: with a third argument N > 1, the bare download and upload again on N
//!   connections at once (as N clients of one server would), each stream's speed and all of
//!   them together.
//!
//! Run: `cargo run --release -p strata-server --example wire_speed [MiB] [passes] [streams]`
//! (defaults 1024, 3 and 1); compare with a round's download and upload phases in
//! `rounds.jsonl` (`scripts/large-model.sh`, `scripts/bench-big-model.sh`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use strata_core::tensor::{NamedTensor, TensorSet};
use strata_proto::assemble::{Assembler, AssemblyLimits};
use strata_proto::pb;
use strata_proto::{CONNECTION_WINDOW_BYTES, DEFAULT_CHUNK_BYTES, STREAM_WINDOW_BYTES, TensorSlices, tensor_specs};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type Parts = Pin<Box<dyn Stream<Item = Result<pb::ParameterPart, Status>> + Send>>;

/// A server that only streams: prepared parts, or a model sliced as Strata slices it.
struct Bare {
    model: Arc<TensorSet>,
    prepared: Arc<Vec<pb::ParameterPart>>,
}

#[tonic::async_trait]
impl pb::federation_server::Federation for Bare {
    type DownloadParametersStream = Parts;

    async fn download_parameters(&self, request: Request<pb::DownloadRequest>) -> Result<Response<Parts>, Status> {
        let sliced = request.into_inner().task_id == "sliced";
        let (tx, rx) = mpsc::channel(4);
        let (model, prepared) = (Arc::clone(&self.model), Arc::clone(&self.prepared));
        tokio::spawn(async move {
            let header = pb::ParameterHeader {
                tensors: tensor_specs(&model),
                total_bytes: model.byte_len() as u64,
                ..Default::default()
            };
            let _ = tx.send(Ok(pb::ParameterPart { part: Some(pb::parameter_part::Part::Header(header)) })).await;
            if sliced {
                for slice in TensorSlices::new(model, DEFAULT_CHUNK_BYTES) {
                    let part = pb::ParameterPart { part: Some(pb::parameter_part::Part::Tensor(slice)) };
                    if tx.send(Ok(part)).await.is_err() {
                        return;
                    }
                }
            } else {
                for part in prepared.iter() {
                    if tx.send(Ok(part.clone())).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn push_result(&self, request: Request<Streaming<pb::ResultPart>>) -> Result<Response<pb::PushAck>, Status> {
        let mut stream = request.into_inner();
        let mut bytes = 0u64;
        while let Some(part) = stream.message().await? {
            if let Some(pb::result_part::Part::Tensor(slice)) = part.part {
                bytes += slice.data.len() as u64;
            }
        }
        Ok(Response::new(pb::PushAck { bytes_received: bytes }))
    }

    async fn join(&self, _: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        Err(Status::unimplemented("streams only"))
    }
    async fn pull_task(&self, _: Request<pb::PullTaskRequest>) -> Result<Response<pb::Task>, Status> {
        Err(Status::unimplemented("streams only"))
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatReply>, Status> {
        Err(Status::unimplemented("streams only"))
    }
    async fn pull_host_tasks(&self, _: Request<pb::HostPollRequest>) -> Result<Response<pb::HostTasks>, Status> {
        Err(Status::unimplemented("streams only"))
    }
    async fn upload_offset(
        &self,
        _: Request<pb::UploadOffsetRequest>,
    ) -> Result<Response<pb::UploadOffsetReply>, Status> {
        Err(Status::unimplemented("streams only"))
    }
}

type Client = pb::federation_client::FederationClient<tonic::transport::Channel>;

/// Downloads once; with `assemble`, builds the model from the parts as a Strata client does,
/// into `spare` when given one (where what it built is then kept).
async fn download(
    client: &mut Client,
    task: &str,
    assemble: bool,
    mut spare: Option<&mut Option<TensorSet>>,
) -> Result<u64, Box<dyn std::error::Error>> {
    let request = pb::DownloadRequest { task_id: task.into(), ..Default::default() };
    let mut stream = client.download_parameters(request).await?.into_inner();
    let Some(pb::parameter_part::Part::Header(header)) = stream.message().await?.and_then(|p| p.part) else {
        return Err("the stream must start with its header".into());
    };
    let last = spare.as_mut().and_then(|s| s.take());
    let mut assembler = assemble
        .then(|| {
            Assembler::reusing(&header.tensors, header.total_bytes, AssemblyLimits::default(), last, Default::default())
        })
        .transpose()?;
    let mut bytes = 0u64;
    while let Some(part) = stream.message().await? {
        let Some(pb::parameter_part::Part::Tensor(slice)) = part.part else { return Err("unexpected part".into()) };
        bytes += slice.data.len() as u64;
        if let Some(assembler) = &mut assembler {
            assembler.push(&slice)?;
        }
    }
    if let Some(assembler) = assembler {
        let set = std::hint::black_box(assembler.finish()?);
        if let Some(spare) = spare {
            *spare = Some(set);
        }
    }
    Ok(bytes)
}

async fn upload(client: &mut Client, parts: &Arc<Vec<pb::ParameterPart>>) -> Result<u64, Box<dyn std::error::Error>> {
    let parts = Arc::clone(parts);
    let stream = tokio_stream::iter(0..parts.len()).map(move |i| {
        let Some(pb::parameter_part::Part::Tensor(slice)) = parts[i].part.clone() else {
            unreachable!("prepared parts are tensor slices")
        };
        pb::ResultPart { part: Some(pb::result_part::Part::Tensor(slice)) }
    });
    Ok(client.push_result(stream).await?.into_inner().bytes_received)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let passes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let streams: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let values = mib * (1 << 20) / 4;
    let model = TensorSet::new(vec![NamedTensor::new("w", vec![values], (0..values).map(|i| i as f32).collect())?])?;
    let model = Arc::new(model);
    let prepared: Arc<Vec<pb::ParameterPart>> = Arc::new(
        TensorSlices::new(Arc::clone(&model), DEFAULT_CHUNK_BYTES)
            .map(|slice| pb::ParameterPart { part: Some(pb::parameter_part::Part::Tensor(slice)) })
            .collect(),
    );
    println!(
        "{mib} MiB in {} parts of {} KiB; stream window {} MiB, connection window {} MiB",
        prepared.len(),
        DEFAULT_CHUNK_BYTES / 1024,
        STREAM_WINDOW_BYTES >> 20,
        CONNECTION_WINDOW_BYTES >> 20
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let service = Bare { model: Arc::clone(&model), prepared: Arc::clone(&prepared) };
    tokio::spawn(
        tonic::transport::Server::builder()
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .add_service(
                pb::federation_server::FederationServer::new(service)
                    .max_decoding_message_size(2 * DEFAULT_CHUNK_BYTES)
                    .max_encoding_message_size(2 * DEFAULT_CHUNK_BYTES),
            )
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = connect(&url).await?;

    for (name, task, assemble, reuse) in [
        ("download, bare", "prepared", false, false),
        ("download + slicing", "sliced", false, false),
        ("download + slicing + assembling", "sliced", true, false),
        ("download + slicing + assembling into the last one", "sliced", true, true),
    ] {
        let mut spare = None;
        for pass in 0..passes {
            let started = Instant::now();
            let bytes = download(&mut client, task, assemble, reuse.then_some(&mut spare)).await?;
            let seconds = started.elapsed().as_secs_f64();
            println!("{name} (pass {pass}): {:.2} s, {:.0} MB/s", seconds, bytes as f64 / seconds / 1e6);
        }
    }
    for pass in 0..passes {
        let started = Instant::now();
        let bytes = upload(&mut client, &prepared).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!("upload, bare (pass {pass}): {:.2} s, {:.0} MB/s", seconds, bytes as f64 / seconds / 1e6);
    }
    if streams > 1 {
        let mut clients = Vec::with_capacity(streams);
        for _ in 0..streams {
            clients.push(connect(&url).await?);
        }
        for upload_pass in [false, true] {
            for pass in 0..passes {
                let started = Instant::now();
                let mut running = tokio::task::JoinSet::new();
                for mut client in clients.iter().cloned() {
                    let prepared = Arc::clone(&prepared);
                    running.spawn(async move {
                        let started = Instant::now();
                        let bytes = match upload_pass {
                            true => upload(&mut client, &prepared).await,
                            false => download(&mut client, "prepared", false, None).await,
                        };
                        bytes.map(|b| (b, started.elapsed().as_secs_f64())).map_err(|e| e.to_string())
                    });
                }
                let (mut total, mut each) = (0u64, Vec::with_capacity(streams));
                while let Some(done) = running.join_next().await {
                    let (bytes, seconds) = done??;
                    total += bytes;
                    each.push(bytes as f64 / seconds / 1e6);
                }
                let seconds = started.elapsed().as_secs_f64();
                let what = if upload_pass { "upload" } else { "download" };
                let mean = each.iter().sum::<f64>() / each.len() as f64;
                println!(
                    "{what}, bare, {streams} streams at once (pass {pass}): {seconds:.2} s, {:.0} MB/s in all, {mean:.0} MB/s a stream",
                    total as f64 / seconds / 1e6
                );
            }
        }
    }
    Ok(())
}

/// A client on its own connection, with Strata's windows and message limits.
async fn connect(url: &str) -> Result<Client, Box<dyn std::error::Error>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .connect()
        .await?;
    Ok(Client::new(channel)
        .max_decoding_message_size(2 * DEFAULT_CHUNK_BYTES)
        .max_encoding_message_size(2 * DEFAULT_CHUNK_BYTES))
}
