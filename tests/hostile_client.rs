//! A client that speaks raw gRPC and sends malformed results: each is refused with a
//! specific status and message, and the run goes on with the good clients.

use std::sync::Arc;

use strata_core::records::RoundRecord;
use strata_core::tensor::{NamedTensor, TensorSet};
use strata_proto::pb;
use strata_tests::{RawClient, edit_tensors, read_jsonl, result_parts, spawn_client, start_server, synthetic_config};
use tonic::Code;

/// Pushes `tensors` as a result with the given header fields; returns the server's verdict.
async fn push(rogue: &mut RawClient, header: pb::ResultHeader, tensors: TensorSet) -> Result<(), tonic::Status> {
    rogue.push(result_parts(header, tensors)).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_results_are_refused_and_the_run_goes_on() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 2);
    config.min_clients = 2;
    config.round_timeout_secs = 4;
    let server = start_server(config, out.path()).await;

    // The rogue joins first, as index 2, and polls for its round-0 task.
    let mut rogue = RawClient::join(&server.url, 2).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();

    // It says what a client says once its data is loaded: its sample counts.
    rogue.capabilities = Some(pb::ClientCapabilities { train_samples: 100, test_samples: 30, ..Default::default() });
    let task = rogue.wait_for(pb::TaskKind::Train).await;
    assert_eq!(task.round, 0);
    let params = rogue.download(&task.task_id).await;
    let header = pb::ResultHeader { num_samples: 100, ..rogue.header(&task) };

    // Metrics out of their range never reach the records (an accuracy of 500 %, a test count
    // that would outweigh every honest client, a negative loss).
    for (name, value) in [("accuracy", 5.0), ("test_samples", 1.8e19), ("train_loss", -1.0)] {
        let bad = pb::ResultHeader { metrics: vec![strata_proto::scalar::metric(name, value)], ..header.clone() };
        let status = push(&mut rogue, bad, params.clone()).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(&format!("metric `{name}`")), "{}", status.message());
    }

    let wrong_shape = edit_tensors(&params, |t| {
        let head = t.iter_mut().find(|x| x.name() == "head.weight").expect("head");
        let (name, shape, values) = head.clone().into_parts();
        *head = NamedTensor::new(name, vec![shape[1], shape[0]], values).expect("transposed");
    });
    let status = push(&mut rogue, header.clone(), wrong_shape).await.expect_err("wrong shape");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("head.weight") && status.message().contains("shape"), "{}", status.message());

    let nan = edit_tensors(&params, |t| t[0].values_mut()[3] = f32::NAN);
    let status = push(&mut rogue, header.clone(), nan).await.expect_err("NaN");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("non-finite"), "{}", status.message());

    // Issue 14, item 2: finite but huge values (all 1e30 once made every global weight 3e26,
    // and every later honest result a NaN loss) are refused, naming the bound.
    let huge = edit_tensors(&params, |t| t.iter_mut().for_each(|x| x.values_mut().fill(1e30)));
    let status = push(&mut rogue, header.clone(), huge).await.expect_err("1e30 everywhere");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("max_abs_value"), "{}", status.message());

    let missing = edit_tensors(&params, |t| {
        t.pop();
    });
    let status = push(&mut rogue, header.clone(), missing).await.expect_err("missing tensor");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("missing"), "{}", status.message());

    let stale = pb::ResultHeader { round: 7, ..header.clone() };
    let status = push(&mut rogue, stale, params.clone()).await.expect_err("wrong round");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("round 7"), "{}", status.message());

    let no_samples = pb::ResultHeader { num_samples: 0, ..header.clone() };
    let status = push(&mut rogue, no_samples, params.clone()).await.expect_err("zero samples");
    assert_eq!(status.code(), Code::InvalidArgument);

    let wrong_run = pb::ResultHeader { run_id: "another-run".into(), ..header.clone() };
    let status = push(&mut rogue, wrong_run, params.clone()).await.expect_err("wrong run");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // What a client sends comes back cut and escaped, not whole (a megabyte once came back as
    // a megabyte of status, and of log line, per call).
    let long = format!("{}\nforged log line", "t".repeat(1 << 20));
    for (what, edited) in [
        ("task id", pb::ResultHeader { task_id: long.clone(), ..header.clone() }),
        ("run id", pb::ResultHeader { run_id: long.clone(), ..header.clone() }),
        ("client id", pb::ResultHeader { client_id: long.clone(), ..header.clone() }),
    ] {
        let status = push(&mut rogue, edited, params.clone()).await.expect_err(what);
        assert!(
            status.message().len() < 1000 && !status.message().contains('\n'),
            "{what}: {} bytes",
            status.message().len()
        );
    }
    let mut odd_dtype = result_parts(header.clone(), params.clone());
    if let Some(pb::result_part::Part::Header(h)) = &mut odd_dtype[0].part {
        h.tensors[0].dtype = 99;
    }
    let status = rogue.push(odd_dtype).await.expect_err("dtype 99");
    assert!(status.message().contains("99 (not a dtype)"), "{}", status.message());

    let stranger = pb::ResultHeader { client_id: uuid::Uuid::new_v4().to_string(), ..header.clone() };
    let status = push(&mut rogue, stranger, params.clone()).await.expect_err("unknown client");
    assert_eq!(status.code(), Code::PermissionDenied);

    // A valid result is taken once; a second copy is a duplicate.
    push(&mut rogue, header.clone(), params.clone()).await.expect("a valid result is accepted");
    let status = push(&mut rogue, header, params).await.expect_err("duplicate");
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
    for r in &rounds {
        for a in [r.global_accuracy, r.personalized_accuracy].into_iter().flatten() {
            assert!((0.0..=1.0).contains(&a), "round {}: accuracy {a}", r.round);
        }
    }
}

/// Pushes CCVR statistics (an empty tensor set, the given stats header and payload).
async fn push_stats(
    rogue: &mut RawClient,
    header: pb::ResultHeader,
    spec: pb::FeatureStatsSpec,
    payload: &[u8],
) -> Result<(), tonic::Status> {
    let mut parts = result_parts(pb::ResultHeader { feature_stats: Some(spec), ..header }, TensorSet::default());
    let slices = strata_proto::stats::stats_slices(payload, 1 << 16);
    parts.extend(slices.into_iter().map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Stats(s)) }));
    rogue.push(parts).await.map(|_| ())
}

/// During CCVR's statistics phase a rogue sends statistics of the wrong dimension, with a NaN,
/// cut short, or with a negative variance: each is refused with InvalidArgument naming the problem,
/// and the classifier is calibrated from the two honest clients alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_feature_statistics_are_refused_and_calibration_uses_the_good_ones() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 1);
    config.min_clients = 2;
    config.round_timeout_secs = 3;
    config.calibration.method = strata_core::calibration::CalibrationMethod::Ccvr;
    let server = start_server(config, out.path()).await;

    let mut rogue = RawClient::join(&server.url, 2).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();

    // The rogue ignores its training task, answers evaluations (so that it is not taken for
    // dead when the statistics are asked for), and waits for the statistics task.
    let task = rogue.wait_for(pb::TaskKind::FeatureStats).await;
    let header = rogue.header(&task);
    // The MLP's classifier sees 200 features: per class 200 mean values and 200·201/2 covariances.
    let dim = 200usize;
    let per_class = dim + dim * (dim + 1) / 2;
    let good_payload: Vec<u8> = (0..per_class).flat_map(|i| (i as f32 * 1e-3).to_le_bytes()).collect();
    let spec = |dim: u32, counts: Vec<u64>| pb::FeatureStatsSpec { dim, classes: vec![3], counts };

    let refused = |r: Result<(), tonic::Status>| r.expect_err("refused");
    let status = refused(push_stats(&mut rogue, header.clone(), spec(100, vec![5]), &good_payload).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("dimension 100"), "{}", status.message());

    let mut nan = good_payload.clone();
    nan[4 * (dim + 7)..4 * (dim + 8)].copy_from_slice(&f32::NAN.to_le_bytes());
    let status = refused(push_stats(&mut rogue, header.clone(), spec(200, vec![5]), &nan).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("class 3: a covariance value is not finite"), "{}", status.message());

    let status = refused(push_stats(&mut rogue, header.clone(), spec(200, vec![5]), &good_payload[..400]).await);
    assert!(status.message().contains("end after"), "{}", status.message());

    // A variance of −1e18 once made the pooled covariance impossible to factorize, and the
    // panic cancelled calibration for everyone: now that client's statistics are refused.
    let mut negative = good_payload.clone();
    negative[4 * dim..4 * (dim + 1)].copy_from_slice(&(-1e18f32).to_le_bytes());
    let status = refused(push_stats(&mut rogue, header.clone(), spec(200, vec![5]), &negative).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("variance of feature 0 is negative"), "{}", status.message());

    let outcome = server.handle.await.expect("server task").expect("run completes");
    for c in good {
        c.await.expect("client task").expect("honest client ends cleanly");
    }
    let calibration = outcome.summary.calibration.expect("calibrated despite the rogue");
    assert_eq!(calibration.clients_pooled, 2, "only the honest clients' statistics were pooled");
}

/// A server that holds the run's data, as `strata simulate` and a `strata server` with the data
/// are: it knows the dataset's fingerprint and each index's training and test samples.
async fn start_knowing_server(
    config: &strata_core::config::RunConfig,
    out: &std::path::Path,
    cache: &strata_client::DataCache,
) -> (String, tokio::task::JoinHandle<Result<strata_server::RunOutcome, strata_server::ServerError>>) {
    let (dataset, partition) = cache.get(config).expect("the run's data");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut options =
        strata_server::ServerOptions::new(config.clone(), out.to_path_buf(), strata_tests::torch_backend());
    options.dataset_fingerprint = Some(dataset.fingerprint());
    options.share_sizes =
        Some(strata_server::ShareSizes { train: partition.train_sizes(), test: partition.test_sizes() });
    (url, tokio::spawn(strata_server::run(options, listener, std::future::pending())))
}

/// Issue 14, item 1: a client that joins first with a made-up dataset fingerprint is refused
/// alone when the server holds the data; honest clients join after it and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_made_up_fingerprint_is_refused_when_the_server_knows_the_data() {
    let out = tempfile::tempdir().expect("tempdir");
    let config = synthetic_config(3, 1);
    let cache = Arc::new(strata_client::DataCache::default());
    let (url, server) = start_knowing_server(&config, out.path(), &cache).await;

    // First in, with a fingerprint of its own invention: refused, and told it is its data.
    let mut rpc = strata_tests::Rpc::connect(url.clone()).await.expect("connect");
    let forged = pb::ClientCapabilities { dataset_fingerprint: "fmnist/1/forged".into(), ..Default::default() };
    let join = pb::JoinRequest {
        client_id: uuid::Uuid::new_v4().to_string(),
        capabilities: Some(forged),
        requested_index: Some(2),
        ..Default::default()
    };
    let status = rpc.join(join).await.expect_err("a made-up fingerprint");
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    assert!(status.message().contains("this client loaded dataset `fmnist/1/forged`"), "{}", status.message());

    // The honest clients are not locked out.
    let clients: Vec<_> = (0..3).map(|i| spawn_client(&url, i, &cache)).collect();
    let outcome = server.await.expect("server task").expect("run completes");
    for c in clients {
        c.await.expect("client task").expect("honest client ends cleanly");
    }
    assert_eq!(outcome.summary.rounds_completed, 1);
}

/// Issue 14, items 3 and 6: a client cannot choose its weight, in an average or in a round's
/// accuracy. One that said nothing about itself cannot send a training result with any sample
/// count, nor count test samples; one that claims more samples than its partition index holds
/// is refused; the honest clients' rounds go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_cannot_choose_its_weight() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 1);
    // The round starts with all three and aggregates the two honest results.
    config.min_results = Some(2);
    config.round_timeout_secs = 4;
    let cache = Arc::new(strata_client::DataCache::default());
    let (url, server) = start_knowing_server(&config, out.path(), &cache).await;
    let (_, partition) = cache.get(&config).expect("the run's data");
    let own = partition.clients[2].train.len() as u64;

    let mut rogue = RawClient::join(&url, 2).await;
    rogue.heartbeat().await; // alive, so that the first round picks it too
    let good: Vec<_> = (0..2).map(|i| spawn_client(&url, i, &cache)).collect();
    let task = rogue.wait_for(pb::TaskKind::Train).await;
    let params = rogue.download(&task.task_id).await;
    let heaviest = pb::ResultHeader { num_samples: u64::MAX, ..rogue.header(&task) };
    let status = push(&mut rogue, heaviest, params.clone()).await.expect_err("a weight it chose");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("has not reported its training samples"), "{}", status.message());

    // Claiming more than its share is refused where it is claimed, and not recorded.
    let claim = pb::ClientCapabilities { train_samples: own * 1000, ..Default::default() };
    let poll = pb::PullTaskRequest {
        run_id: rogue.run_id.clone(),
        client_id: rogue.client_id.clone(),
        session: rogue.session.clone(),
        last_task_id: task.task_id.clone(),
        wait_ms: 10,
        capabilities: Some(claim),
    };
    let status = rogue.rpc.pull_task(poll).await.expect_err("more samples than its share");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains(&format!("partition index 2 holds {own}")), "{}", status.message());
    let claimed = pb::ResultHeader { num_samples: own * 1000, ..rogue.header(&task) };
    let status = push(&mut rogue, claimed, params.clone()).await.expect_err("a weight it was refused");
    assert!(status.message().contains("has not reported its training samples"), "{}", status.message());

    // Nor its accuracy's weight in the round's records (item 6): a test count beyond its share
    // is refused where it is claimed, and a result cannot count test samples never reported.
    let own_test = partition.clients[2].test.len() as u64;
    let saying = |capabilities| pb::PullTaskRequest {
        run_id: rogue.run_id.clone(),
        client_id: rogue.client_id.clone(),
        session: rogue.session.clone(),
        last_task_id: String::new(),
        wait_ms: 10,
        capabilities: Some(capabilities),
    };
    let claim = pb::ClientCapabilities { train_samples: own, test_samples: u64::MAX, ..Default::default() };
    let status = rogue.rpc.pull_task(saying(claim)).await.expect_err("more test samples than its share");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    let message = format!("{} test samples, but partition index 2 holds {own_test}", u64::MAX);
    assert!(status.message().contains(&message), "{}", status.message());
    let honest_training = pb::ClientCapabilities { train_samples: own, ..Default::default() };
    rogue.rpc.pull_task(saying(honest_training)).await.expect("its own training samples are taken");
    let counted = strata_proto::scalar::metric("test_samples", 1.8e19);
    let heavy = pb::ResultHeader { num_samples: own, metrics: vec![counted], ..rogue.header(&task) };
    let status = push(&mut rogue, heavy, params).await.expect_err("test samples it never reported");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("has not reported its test samples"), "{}", status.message());

    // Silent from here: the round closes with the two honest clients.
    let outcome = server.await.expect("server task").expect("run completes");
    for c in good {
        c.await.expect("client task").expect("good client ends cleanly");
    }
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!(outcome.summary.rounds_completed, 1, "{rounds:?}");
    assert!(rounds[0].aggregated && rounds[0].reported == 2, "{rounds:?}");
}

/// Sends bytes as they are, whatever they parse as, and ignores the reply's content.
#[derive(Clone, Copy, Default)]
struct RawBytes;

struct RawEncoder;
struct AnyReply;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = AnyReply;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AnyReply {
        AnyReply
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for AnyReply {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let rest = bytes::Buf::remaining(buf);
        bytes::Buf::advance(buf, rest);
        Ok(Some(()))
    }
}

/// Issue 14, item 10: bytes that are not a protobuf message are the sender's error
/// (INVALID_ARGUMENT, saying so), not an INTERNAL error of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_an_invalid_argument() {
    let out = tempfile::tempdir().expect("tempdir");
    let server = start_server(synthetic_config(3, 1), out.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone()).expect("url").connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    for (path, garbage) in [
        ("/strata.v1.Federation/Join", vec![0x0a, 0xff]),
        ("/strata.v1.Federation/PullTask", vec![0xff; 11]),
        ("/strata.v1.Federation/Heartbeat", vec![0x12, 0x05, b'a']),
    ] {
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        let status = grpc.unary(tonic::Request::new(garbage), path.clone(), RawBytes).await.expect_err("garbage");
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {}", status.message());
        assert!(status.message().contains("malformed protobuf message"), "{path}: {}", status.message());
    }
    server.handle.abort();
}

/// Issue 14, item 10: a method this server does not have is UNIMPLEMENTED with a message that
/// says what it serves, not an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_says_what_the_server_serves() {
    let out = tempfile::tempdir().expect("tempdir");
    let server = start_server(synthetic_config(3, 1), out.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone()).expect("url").connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    for path in ["/strata.v1.Federation/Unknown", "/strata.v2.Federation/Join"] {
        grpc.ready().await.expect("ready");
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        let status =
            grpc.unary(tonic::Request::new(Vec::new()), path.clone(), RawBytes).await.expect_err("no such method");
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {}", status.message());
        assert!(status.message().contains("it serves strata.v1.Federation"), "{path}: {}", status.message());
    }
    server.handle.abort();
}
