//! Transfers cut in the middle resume where the other side stands: an upload from the parts
//! the server kept (`UploadOffset`, `resume_from_part`), a download from the parts the client
//! holds. Cut here by cancelling the stream, as a broken connection does.

use std::sync::Arc;
use std::time::Duration;

use strata_core::records::RoundRecord;
use strata_proto::pb;
use strata_tests::{
    CutAt, CutProxy, RawClient, client_options, result_parts, spawn_client, start_server, synthetic_config,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// The parts of the rogue's upload the server says it holds.
async fn offset(client: &mut RawClient, task_id: &str) -> Result<pb::UploadOffsetReply, tonic::Status> {
    let request = pb::UploadOffsetRequest {
        run_id: client.run_id.clone(),
        client_id: client.client_id.clone(),
        session: client.session.clone(),
        task_id: task_id.to_string(),
    };
    client.rpc.upload_offset(request).await.map(tonic::Response::into_inner)
}

/// The server's first `UploadResumed`: (client index, part resumed from, bytes held), within
/// a minute.
async fn first_upload_resume(
    events: &mut tokio::sync::broadcast::Receiver<strata_server::ServerEvent>,
) -> (u32, u64, u64) {
    let resumed = strata_tests::next_event(events, |e| match e {
        strata_server::ServerEvent::UploadResumed { client, from_part, bytes_held } => {
            Some((*client, *from_part, *bytes_held))
        }
        _ => None,
    });
    tokio::time::timeout(Duration::from_secs(60), resumed).await.expect("a cut upload resumes")
}

/// Every part of one download stream.
async fn download_parts(mut rpc: strata_tests::Rpc, request: pb::DownloadRequest) -> Vec<pb::ParameterPart> {
    let mut stream = rpc.download_parameters(request).await.expect("download").into_inner();
    let mut parts = Vec::new();
    while let Some(part) = stream.message().await.expect("part") {
        parts.push(part);
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_upload_resumes_from_the_parts_the_server_kept() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 1);
    config.round_timeout_secs = 15;
    let server = start_server(config, out.path()).await;
    let proxy = CutProxy::start(&server.url, CutAt::default()).await;
    let mut client = RawClient::join(&proxy.url, 2).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();
    client.capabilities = Some(pb::ClientCapabilities { train_samples: 100, test_samples: 30, ..Default::default() });
    let task = client.wait_for(pb::TaskKind::Train).await;
    let sent = client.download(&task.task_id).await;
    let header = pb::ResultHeader { num_samples: 100, ..client.header(&task) };
    // Small slices (16 KiB), so that the update is many parts.
    let parts = result_parts(header, sent.clone());
    assert!(parts.len() > 6, "{} parts", parts.len());
    // The header as sent, with the tensors' specs and sizes.
    let Some(pb::result_part::Part::Header(header)) = parts[0].part.clone() else { panic!("header first") };
    assert_eq!(offset(&mut client, &task.task_id).await.expect("offset").parts_received, 0, "nothing yet");

    // The header and four parts go out, then the link fails mid-stream.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut rpc = client.rpc.clone();
    let push = tokio::spawn(async move { rpc.push_result(ReceiverStream::new(rx)).await });
    for part in &parts[..5] {
        tx.send(part.clone()).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    let status = push.await.expect("push task").expect_err("the cut stream fails");
    assert!(matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "{status:?}");
    // What the server took, once the cut has reached it.
    let kept = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match offset(&mut client, &task.task_id).await {
            Ok(reply) => break reply,
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    };
    assert_eq!(kept.parts_received, 4, "{kept:?}");
    drop(tx);

    let resumed = |from: u64, header: &pb::ResultHeader| {
        let first = pb::ResultHeader { resume_from_part: from, ..header.clone() };
        let mut stream = vec![pb::ResultPart { part: Some(pb::result_part::Part::Header(first)) }];
        stream.extend(parts[1 + from as usize..].iter().cloned());
        stream
    };
    // Resuming from elsewhere than the server stands, or with another header, is refused
    // and leaves what it holds alone.
    let status = client.push(resumed(2, &header)).await.expect_err("wrong offset");
    assert!(status.code() == Code::FailedPrecondition && status.message().contains("holds 4 parts"), "{status:?}");
    let other = pb::ResultHeader { metrics: vec![strata_proto::scalar::metric("train_loss", 0.5)], ..header.clone() };
    let status = client.push(resumed(4, &other)).await.expect_err("another header");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(offset(&mut client, &task.task_id).await.expect("offset").parts_received, 4);

    let ack = client.push(resumed(4, &header)).await.expect("the rest of the upload");
    assert!(ack.bytes_received > 0);
    let status = client.push(resumed(4, &header)).await.expect_err("once taken, nothing to resume");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    let rounds: Vec<RoundRecord> =
        client.alive_until(async { server.handle.await.expect("server task").expect("run completes").rounds }).await;
    let round = rounds.iter().find(|r| r.round == 0).expect("round 0");
    assert_eq!((round.reported, round.aggregated), (3, true), "{round:?}");
    for c in good {
        c.await.expect("client task").expect("client ends cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_download_sends_the_header_and_the_parts_from_there() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(2, 1);
    config.round_timeout_secs = 15;
    config.compression.down = strata_core::compression::Compression::Int8;
    let server = start_server(config, out.path()).await;
    let mut client = RawClient::join(&server.url, 1).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let good = spawn_client(&server.url, 0, &cache);
    client.capabilities = Some(pb::ClientCapabilities { train_samples: 100, test_samples: 30, ..Default::default() });
    let task = client.wait_for(pb::TaskKind::Train).await;
    let stream_of = |from: u64| pb::DownloadRequest {
        run_id: client.run_id.clone(),
        client_id: client.client_id.clone(),
        task_id: task.task_id.clone(),
        session: client.session.clone(),
        resume_from_part: from,
    };
    let whole = download_parts(client.rpc.clone(), stream_of(0)).await;
    let resumed = download_parts(client.rpc.clone(), stream_of(1)).await;
    assert!(whole.len() >= 3, "{} parts", whole.len());
    // The same header, then the same bytes from part 1 on: int8's rounding draws again the
    // same way, so the pieces fit.
    assert_eq!(resumed[0], whole[0]);
    assert_eq!(&resumed[1..], &whole[2..]);

    let header = pb::ResultHeader { num_samples: 100, ..client.header(&task) };
    let sent = client
        .download_decoded(
            &task.task_id,
            strata_proto::Decoding { compression: strata_core::compression::Compression::Int8, reference: None },
        )
        .await;
    client.push(result_parts(header, sent)).await.expect("accepted");
    client.alive_until(async { server.handle.await.expect("server task").expect("run completes") }).await;
    good.await.expect("client task").expect("client ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_daemon_resumes_transfers_its_link_cut() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 2);
    config.round_timeout_secs = 60;
    let server = start_server(config, out.path()).await;
    let mut events = server.events.subscribe();
    // The model's update is about 210 KB: its first upload is cut about half-way, and its
    // first download (as much, the other way) too.
    let proxy = CutProxy::start(&server.url, CutAt { upstream: Some(120_000), downstream: None }).await;
    let down = CutProxy::start(&server.url, CutAt { upstream: None, downstream: Some(100_000) }).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let cut_up = tokio::spawn(strata_client::run(client_options(&proxy.url, 0, &cache), std::future::pending()));
    let cut_down = tokio::spawn(strata_client::run(client_options(&down.url, 1, &cache), std::future::pending()));
    let direct = spawn_client(&server.url, 2, &cache);
    let resumed = first_upload_resume(&mut events).await;
    assert_eq!(resumed.0, 0, "{resumed:?}");
    assert!(resumed.1 > 0 && resumed.2 > 0, "it went on from what the server held: {resumed:?}");
    let outcome = server.handle.await.expect("server task").expect("run completes");
    for round in outcome.rounds.iter().filter(|r| r.round < 2) {
        assert_eq!((round.reported, round.aggregated), (3, true), "{round:?}");
    }
    for c in [cut_up, cut_down, direct] {
        c.await.expect("client task").expect("client ends cleanly");
    }
    // The download link was cut too: the client asked for the rest, and its rounds counted.
    assert!(down.downstream_bytes.load(std::sync::atomic::Ordering::SeqCst) > 100_000);
}

/// With small upload parts (`--upload-part-kib`), a cut upload goes on from a later part: the
/// update (about 210 KB in a handful of tensors, each one part by default) is cut some 160,000
/// bytes in, and in 16 KiB parts the server holds at least 7 of them, more than the model has
/// tensors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_parts_keep_more_of_a_cut_upload() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(2, 1);
    config.round_timeout_secs = 60;
    let server = start_server(config, out.path()).await;
    let mut events = server.events.subscribe();
    let proxy = CutProxy::start(&server.url, CutAt { upstream: Some(160_000), downstream: None }).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let mut options = client_options(&proxy.url, 0, &cache);
    options.upload_part_bytes = 16 * 1024;
    let cut_up = tokio::spawn(strata_client::run(options, std::future::pending()));
    let direct = spawn_client(&server.url, 1, &cache);
    let (client, from_part, _) = first_upload_resume(&mut events).await;
    assert_eq!(client, 0);
    assert!(from_part >= 7, "resumed from part {from_part}");
    let outcome = server.handle.await.expect("server task").expect("run completes");
    let first = outcome.rounds.iter().find(|r| r.round == 0).expect("round 0");
    assert_eq!((first.reported, first.aggregated), (2, true), "{first:?}");
    for c in [cut_up, direct] {
        c.await.expect("client task").expect("client ends cleanly");
    }
}
