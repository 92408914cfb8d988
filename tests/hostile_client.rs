//! A client that speaks raw gRPC and sends malformed results: each is refused with a
//! specific status and message, and the run goes on with the good clients.

use std::sync::Arc;

use strata_core::records::RoundRecord;
use strata_core::tensor::{NamedTensor, TensorSet};
use strata_proto::assemble::AssemblyLimits;
use strata_proto::{Assembler, TensorSlices, pb, tensor_specs};
use strata_tests::{read_jsonl, spawn_client, start_server, synthetic_config};
use tonic::Code;

type Rpc = pb::federation_client::FederationClient<tonic::transport::Channel>;

async fn download(rpc: &mut Rpc, run_id: &str, client_id: &str, task_id: &str) -> TensorSet {
    let request = pb::DownloadRequest { run_id: run_id.into(), client_id: client_id.into(), task_id: task_id.into() };
    let mut stream = rpc.download_parameters(request).await.expect("download").into_inner();
    let Some(pb::ParameterPart { part: Some(pb::parameter_part::Part::Header(h)) }) =
        stream.message().await.expect("part")
    else {
        panic!("no header first");
    };
    let mut asm = Assembler::new(&h.tensors, h.total_bytes, AssemblyLimits::default()).expect("header");
    while let Some(part) = stream.message().await.expect("part") {
        let Some(pb::parameter_part::Part::Tensor(slice)) = part.part else { panic!("unexpected part") };
        asm.push(&slice).expect("slice");
    }
    asm.finish().expect("complete")
}

/// Pushes `tensors` as a result with the given header fields; returns the server's verdict.
async fn push(rpc: &mut Rpc, mut header: pb::ResultHeader, tensors: TensorSet) -> Result<(), tonic::Status> {
    header.tensors = tensor_specs(&tensors);
    header.total_bytes = tensors.byte_len() as u64;
    let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) };
    let slices = TensorSlices::new(Arc::new(tensors), 1 << 16)
        .map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Tensor(s)) });
    rpc.push_result(tokio_stream_iter(std::iter::once(first).chain(slices).collect())).await.map(|_| ())
}

fn tokio_stream_iter(parts: Vec<pb::ResultPart>) -> impl tokio_stream::Stream<Item = pb::ResultPart> {
    tokio_stream::iter(parts)
}

fn with(set: &TensorSet, edit: impl Fn(&mut Vec<NamedTensor>)) -> TensorSet {
    let mut tensors = set.clone().into_tensors();
    edit(&mut tensors);
    TensorSet::new(tensors).expect("distinct names")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_results_are_refused_and_the_run_goes_on() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 2);
    config.min_clients = 2;
    config.round_timeout_secs = 4;
    let server = start_server(config, out.path()).await;

    // The rogue joins first, as index 2, and polls for its round-0 task.
    let client_id = uuid::Uuid::new_v4().to_string();
    let mut rpc = Rpc::connect(server.url.clone()).await.expect("connect");
    let join = pb::JoinRequest { client_id: client_id.clone(), capabilities: None, requested_index: Some(2) };
    let run_id = rpc.join(join).await.expect("join").into_inner().run_id;
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();

    let task = loop {
        let poll = pb::PullTaskRequest {
            run_id: run_id.clone(),
            client_id: client_id.clone(),
            wait_ms: 5000,
            ..Default::default()
        };
        let task = rpc.pull_task(poll).await.expect("poll").into_inner();
        if task.kind == pb::TaskKind::Train as i32 {
            break task;
        }
    };
    assert_eq!(task.round, 0);
    let params = download(&mut rpc, &run_id, &client_id, &task.task_id).await;
    let header = pb::ResultHeader {
        run_id: run_id.clone(),
        round: 0,
        task_id: task.task_id.clone(),
        client_id: client_id.clone(),
        num_samples: 100,
        ..Default::default()
    };

    let wrong_shape = with(&params, |t| {
        let head = t.iter_mut().find(|x| x.name == "head.weight").expect("head");
        head.shape = vec![head.shape[1], head.shape[0]];
    });
    let status = push(&mut rpc, header.clone(), wrong_shape).await.expect_err("wrong shape");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("head.weight") && status.message().contains("shape"), "{}", status.message());

    let nan = with(&params, |t| t[0].values[3] = f32::NAN);
    let status = push(&mut rpc, header.clone(), nan).await.expect_err("NaN");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("non-finite"), "{}", status.message());

    let missing = with(&params, |t| {
        t.pop();
    });
    let status = push(&mut rpc, header.clone(), missing).await.expect_err("missing tensor");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("missing"), "{}", status.message());

    let stale = pb::ResultHeader { round: 7, ..header.clone() };
    let status = push(&mut rpc, stale, params.clone()).await.expect_err("wrong round");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("round 7"), "{}", status.message());

    let no_samples = pb::ResultHeader { num_samples: 0, ..header.clone() };
    let status = push(&mut rpc, no_samples, params.clone()).await.expect_err("zero samples");
    assert_eq!(status.code(), Code::InvalidArgument);

    let wrong_run = pb::ResultHeader { run_id: "another-run".into(), ..header.clone() };
    let status = push(&mut rpc, wrong_run, params.clone()).await.expect_err("wrong run");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let stranger = pb::ResultHeader { client_id: uuid::Uuid::new_v4().to_string(), ..header.clone() };
    let status = push(&mut rpc, stranger, params.clone()).await.expect_err("unknown client");
    assert_eq!(status.code(), Code::PermissionDenied);

    // A valid result is taken once; a second copy is a duplicate.
    push(&mut rpc, header.clone(), params.clone()).await.expect("a valid result is accepted");
    let status = push(&mut rpc, header, params).await.expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);

    // From here on the rogue is silent: round 1 must finish with the two good clients.
    let outcome = server.handle.await.expect("server task").expect("run completes");
    for client in good {
        client.await.expect("client task").expect("good client ends cleanly");
    }
    assert_eq!(outcome.summary.rounds_completed, 2);
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!((rounds[1].picked, rounds[1].reported), (3, 2), "round 1 went on without the silent client");
    assert!(rounds[1].aggregated);
}

/// Pushes CCVR statistics (an empty tensor set, the given stats header and payload).
async fn push_stats(
    rpc: &mut Rpc,
    header: pb::ResultHeader,
    spec: pb::FeatureStatsSpec,
    payload: &[u8],
) -> Result<(), tonic::Status> {
    let header = pb::ResultHeader { feature_stats: Some(spec), ..header };
    let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) };
    let slices = strata_proto::stats::stats_slices(payload, 1 << 16)
        .into_iter()
        .map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Stats(s)) });
    rpc.push_result(tokio_stream_iter(std::iter::once(first).chain(slices).collect())).await.map(|_| ())
}

/// During CCVR's statistics phase a rogue sends statistics of the wrong dimension, with a NaN,
/// or cut short: each is refused with InvalidArgument naming the problem,
/// and the classifier is calibrated from the two honest clients alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_feature_statistics_are_refused_and_calibration_uses_the_good_ones() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 1);
    config.min_clients = 2;
    config.round_timeout_secs = 3;
    config.calibration.method = strata_core::calibration::CalibrationMethod::Ccvr;
    let server = start_server(config, out.path()).await;

    let client_id = uuid::Uuid::new_v4().to_string();
    let mut rpc = Rpc::connect(server.url.clone()).await.expect("connect");
    let join = pb::JoinRequest { client_id: client_id.clone(), capabilities: None, requested_index: Some(2) };
    let run_id = rpc.join(join).await.expect("join").into_inner().run_id;
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();

    // The rogue ignores its training task, answers evaluations (so that it is not taken for
    // dead when the statistics are asked for), and waits for the statistics task.
    let mut last_task_id = String::new();
    let task = loop {
        let poll = pb::PullTaskRequest {
            run_id: run_id.clone(),
            client_id: client_id.clone(),
            wait_ms: 5000,
            last_task_id: last_task_id.clone(),
            ..Default::default()
        };
        let task = rpc.pull_task(poll).await.expect("poll").into_inner();
        if task.kind == pb::TaskKind::FeatureStats as i32 {
            break task;
        }
        if task.kind == pb::TaskKind::Evaluate as i32 {
            let header = pb::ResultHeader {
                run_id: run_id.clone(),
                round: task.round,
                task_id: task.task_id.clone(),
                client_id: client_id.clone(),
                ..Default::default()
            };
            push(&mut rpc, header, TensorSet::default()).await.expect("an evaluation result is accepted");
        }
        if !task.task_id.is_empty() {
            last_task_id = task.task_id;
        }
    };
    let header = pb::ResultHeader {
        run_id: run_id.clone(),
        round: task.round,
        task_id: task.task_id.clone(),
        client_id: client_id.clone(),
        ..Default::default()
    };
    // The MLP's classifier sees 200 features: per class 200 mean values and 200·201/2 covariances.
    let dim = 200usize;
    let per_class = dim + dim * (dim + 1) / 2;
    let good_payload: Vec<u8> = (0..per_class).flat_map(|i| (i as f32 * 1e-3).to_le_bytes()).collect();
    let spec = |dim: u32, counts: Vec<u64>| pb::FeatureStatsSpec { dim, classes: vec![3], counts };

    let refused = |r: Result<(), tonic::Status>| r.expect_err("refused");
    let status = refused(push_stats(&mut rpc, header.clone(), spec(100, vec![5]), &good_payload).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("dimension 100"), "{}", status.message());

    let mut nan = good_payload.clone();
    nan[4 * (dim + 7)..4 * (dim + 8)].copy_from_slice(&f32::NAN.to_le_bytes());
    let status = refused(push_stats(&mut rpc, header.clone(), spec(200, vec![5]), &nan).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("class 3: a covariance value is not finite"), "{}", status.message());

    let status = refused(push_stats(&mut rpc, header.clone(), spec(200, vec![5]), &good_payload[..400]).await);
    assert!(status.message().contains("end after"), "{}", status.message());

    let outcome = server.handle.await.expect("server task").expect("run completes");
    for c in good {
        c.await.expect("client task").expect("honest client ends cleanly");
    }
    let calibration = outcome.summary.calibration.expect("calibrated despite the rogue");
    assert_eq!(calibration.clients_pooled, 2, "only the honest clients' statistics were pooled");
}
