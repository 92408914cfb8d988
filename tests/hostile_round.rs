//! One round shared by honest clients and hostile ones: every kind of bad result is refused
//! with its own status, and the global model is, bit for bit, the one the honest clients make
//! alone.
//!
//! Two runs of one config, side by side: the reference, with only the two honest client daemons
//! (partitions 0 and 1), and the hostile run, where a raw gRPC client (partition 2) sends every
//! kind of bad result in the round it is picked for, and a latecomer (partition 3) sends one
//! for a round it has no task in. Each honest client trains seeded by its index and the round,
//! and FedAvg of two updates does not depend on their order (IEEE addition commutes), so the
//! honest clients upload the same bits in both runs, and the reference's global model is the
//! sample-weighted average of exactly those uploads: the only model the hostile run may end with.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_core::config::RunConfig;
use strata_core::liveness::{LivenessConfig, RoundCloses};
use strata_core::records::{ClientRoundRecord, RoundRecord};
use strata_core::tensor::{NamedTensor, TensorSet};
use strata_proto::pb;
use strata_server::ServerEvent;
use strata_tests::{
    RawClient, client_options, edit_tensors, next_event, read_jsonl, result_parts, spawn_client, start_server,
    synthetic_config,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Four partitions, two rounds, a round closing once every task is answered or its client has
/// been silent for 6 s (the hostile clients fall silent when they are done).
fn config() -> RunConfig {
    let mut config = synthetic_config(4, 2);
    config.min_clients = 2;
    config.round_timeout_secs = 120;
    config.liveness = LivenessConfig {
        heartbeat_secs: 1,
        offline_after_secs: 6,
        round_closes: RoundCloses::All,
        ..LivenessConfig::default()
    };
    config
}

/// The sample count the hostile client reports about itself when it polls.
const HOSTILE_SAMPLES: u64 = 100;

/// The reference: the two honest clients alone.
async fn honest_run(out: &Path, cache: &Arc<strata_client::DataCache>) {
    let server = start_server(config(), out).await;
    let honest: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, cache)).collect();
    server.handle.await.expect("server task").expect("the reference run completes");
    for c in honest {
        c.await.expect("client task").expect("honest client ends cleanly");
    }
}

fn header_of(parts: &mut [pb::ResultPart]) -> &mut pb::ResultHeader {
    match parts.first_mut().and_then(|p| p.part.as_mut()) {
        Some(pb::result_part::Part::Header(h)) => h,
        _ => panic!("a result stream starts with its header"),
    }
}

fn slice_of(parts: &mut [pb::ResultPart], i: usize) -> &mut pb::TensorSlice {
    match parts[i].part.as_mut() {
        Some(pb::result_part::Part::Tensor(s)) => s,
        _ => panic!("part {i} is not a tensor slice"),
    }
}

/// The hostile run; returns the round the hostile client was picked for.
async fn hostile_run(out: &Path, cache: &Arc<strata_client::DataCache>) -> u64 {
    let config = config();
    let server = start_server(config.clone(), out).await;
    let mut events = server.events.subscribe();
    let mut honest_ids = Vec::new();
    let mut honest = Vec::new();
    for i in 0..2 {
        let options = client_options(&server.url, i, cache);
        honest_ids.push(options.client_id);
        honest.push(tokio::spawn(strata_client::run(options, std::future::pending())));
    }
    // The hostile client joins once both honest ones have: it is picked in round 0 if it
    // joined before that round began, in round 1 otherwise; either is the round under test.
    next_event(&mut events, |e| matches!(e, ServerEvent::ClientJoined { joined: 2, .. }).then_some(())).await;
    let mut hostile = RawClient::join(&server.url, 2).await;
    hostile.capabilities = Some(pb::ClientCapabilities { train_samples: HOSTILE_SAMPLES, ..Default::default() });
    let task = hostile.wait_for(pb::TaskKind::Train).await;
    let round = task.round;
    let params = hostile.download(&task.task_id).await;
    // A result the server would take: never sent as is, only edited below.
    let header = pb::ResultHeader { num_samples: HOSTILE_SAMPLES, ..hostile.header(&task) };
    let good = || result_parts(header.clone(), params.clone());
    let parts = |edit: &dyn Fn(&mut Vec<pb::ResultPart>)| {
        let mut p = good();
        edit(&mut p);
        p
    };
    let headed = |edit: &dyn Fn(&mut pb::ResultHeader)| {
        let mut h = header.clone();
        edit(&mut h);
        result_parts(h, params.clone())
    };
    let tensors = |edit: &dyn Fn(&mut Vec<NamedTensor>)| result_parts(header.clone(), edit_tensors(&params, edit));
    let first_tensor_bytes = params.tensors()[0].values().len() * 4;

    // The latecomer joins after the round's tasks went out, so it has none in this round.
    let mut latecomer = RawClient::join(&server.url, 3).await;
    let not_picked = pb::ResultHeader {
        client_id: latecomer.client_id.clone(),
        session: latecomer.session.clone(),
        ..header.clone()
    };
    let status = latecomer.push(result_parts(not_picked, params.clone())).await.expect_err("not picked");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    assert!(status.message().contains(&format!("not given a task in round {round}")), "{}", status.message());

    use Code::{FailedPrecondition, InvalidArgument, PermissionDenied};
    let bad: Vec<(&str, Vec<pb::ResultPart>, Code, String)> = vec![
        (
            "a tensor of the wrong shape",
            tensors(&|t| {
                let head = t.iter_mut().find(|x| x.name() == "head.weight").expect("head");
                let (name, shape, values) = head.clone().into_parts();
                *head = NamedTensor::new(name, vec![shape[1], shape[0]], values).expect("transposed");
            }),
            InvalidArgument,
            "`head.weight` has shape".into(),
        ),
        (
            "a tensor the model lacks",
            tensors(&|t| t[0] = t[0].clone().with_name("body.evil")),
            InvalidArgument,
            "`body.evil`".into(),
        ),
        ("tensors out of order", tensors(&|t| t.swap(0, 1)), InvalidArgument, "model's order".into()),
        (
            "a missing tensor",
            tensors(&|t| {
                t.pop();
            }),
            InvalidArgument,
            "is missing".into(),
        ),
        (
            "an extra tensor",
            tensors(&|t| t.push(NamedTensor::new("extra", vec![1], vec![0.0]).expect("tensor"))),
            InvalidArgument,
            "one more".into(),
        ),
        ("a NaN", tensors(&|t| t[0].values_mut()[3] = f32::NAN), InvalidArgument, "non-finite value (NaN)".into()),
        (
            "an infinity",
            tensors(&|t| t.last_mut().expect("tensors").values_mut()[0] = f32::NEG_INFINITY),
            InvalidArgument,
            "non-finite value (-inf)".into(),
        ),
        (
            "a dtype other than f32",
            parts(&|p| header_of(p).tensors[0].dtype = pb::Dtype::F64 as i32),
            InvalidArgument,
            "DTYPE_F64, which Strata never sends".into(),
        ),
        ("a wrong declared size", parts(&|p| header_of(p).total_bytes += 4), InvalidArgument, "declares".into()),
        ("a sample count of 0", headed(&|h| h.num_samples = 0), InvalidArgument, "num_samples is 0".into()),
        (
            "an implausible sample count",
            headed(&|h| h.num_samples = 1_000_000),
            InvalidArgument,
            format!("reported {HOSTILE_SAMPLES} training samples"),
        ),
        (
            "a non-finite metric",
            headed(&|h| h.metrics.push(strata_proto::scalar::metric("accuracy", f64::INFINITY))),
            InvalidArgument,
            "metric `accuracy` is not finite".into(),
        ),
        (
            "a mask the task did not ask for",
            headed(&|h| h.mask = Some(pb::MaskSpec { num_bits: 8 })),
            InvalidArgument,
            "takes no mask".into(),
        ),
        (
            "statistics the task did not ask for",
            headed(&|h| h.feature_stats = Some(pb::FeatureStatsSpec { dim: 200, classes: vec![1], counts: vec![1] })),
            InvalidArgument,
            "takes no feature statistics".into(),
        ),
        ("slices out of order", parts(&|p| p.swap(1, 2)), InvalidArgument, "out of order".into()),
        (
            "a slice missing mid-stream",
            parts(&|p| {
                p.remove(2);
            }),
            InvalidArgument,
            "out of order".into(),
        ),
        (
            "a stream cut short",
            parts(&|p| {
                p.pop();
            }),
            InvalidArgument,
            "incomplete".into(),
        ),
        (
            "a slice sent twice",
            parts(&|p| {
                let last = p.last().cloned().expect("slices");
                p.push(last);
            }),
            InvalidArgument,
            "expected no more slices".into(),
        ),
        (
            "a slice that runs past its tensor",
            parts(&|p| slice_of(p, 1).data = vec![0; first_tensor_bytes + 4]),
            InvalidArgument,
            "runs past".into(),
        ),
        (
            "a slice of a partial f32",
            parts(&|p| slice_of(p, 1).data.truncate(6)),
            InvalidArgument,
            "whole number of its 4-byte values".into(),
        ),
        (
            "a slice for a tensor the header lacks",
            parts(&|p| slice_of(p, 1).tensor_index = 99),
            InvalidArgument,
            "tensor index 99".into(),
        ),
        (
            "a second header",
            parts(&|p| {
                let header = p[0].clone();
                p.insert(2, header);
            }),
            InvalidArgument,
            "exactly one header".into(),
        ),
        (
            "an empty part",
            parts(&|p| p.insert(2, pb::ResultPart { part: None })),
            InvalidArgument,
            "empty result part".into(),
        ),
        (
            "slices before the header",
            parts(&|p| {
                p.remove(0);
            }),
            InvalidArgument,
            "must start with its header".into(),
        ),
        ("nothing at all", Vec::new(), InvalidArgument, "empty result stream".into()),
        ("another round", headed(&|h| h.round += 7), FailedPrecondition, format!("result is for round {}", round + 7)),
        ("another task", headed(&|h| h.task_id = "r0-forged".into()), FailedPrecondition, "task `r0-forged`".into()),
        ("another run", headed(&|h| h.run_id = "another-run".into()), FailedPrecondition, "run `another-run`".into()),
        (
            "a client that never joined",
            headed(&|h| h.client_id = uuid::Uuid::new_v4().to_string()),
            PermissionDenied,
            "has not joined".into(),
        ),
    ];
    for (what, parts, code, says) in bad {
        let status = hostile.push(parts).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(status.message().contains(&says), "{what}: `{}` does not say `{says}`", status.message());
    }

    // Two streams for the task at once: whichever the server admitted second is a duplicate of
    // the one in flight. Both carry a NaN, so neither could be taken on its own.
    let nan = tensors(&|t| t[0].values_mut()[0] = f32::NAN);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for part in &nan[..2] {
        tx.send(part.clone()).await.expect("open stream");
    }
    let mut rpc = hostile.rpc.clone();
    let held = tokio::spawn(async move { rpc.push_result(ReceiverStream::new(rx)).await.map(|_| ()) });
    let second = loop {
        let status = hostile.push(nan.clone()).await.expect_err("a NaN is never taken");
        if status.code() == Code::AlreadyExists || held.is_finished() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(tx);
    let held = held.await.expect("push task").expect_err("a stream cut short is refused");
    let duplicate = if second.code() == Code::AlreadyExists { second } else { held };
    assert_eq!(duplicate.code(), Code::AlreadyExists, "{}", duplicate.message());
    // Not "already sent": nothing was; one stream is still being received.
    assert!(duplicate.message().contains("already being received"), "{}", duplicate.message());

    // A copy of honest client 0's accepted result, sent under its identity once the server took
    // the original: its UUID alone does not let anyone speak for it (issue 14, item 4).
    let accepted_0 = |e: &ServerEvent| matches!(e, ServerEvent::ResultAccepted { round: r, client: 0 } if *r == round);
    hostile.alive_until(next_event(&mut events, |e| accepted_0(e).then_some(()))).await;
    let (_, partition) = cache.get(&config).expect("the run's data");
    let replay = pb::ResultHeader {
        client_id: honest_ids[0].to_string(),
        task_id: format!("{}c0", task.task_id.strip_suffix("c2").expect("a task id ends with its client")),
        num_samples: partition.clients[0].train.len() as u64,
        ..header.clone()
    };
    let halved =
        edit_tensors(&params, |t| t.iter_mut().flat_map(|x| x.values_mut().iter_mut()).for_each(|v| *v *= 0.5));
    let status = hostile.push(result_parts(replay.clone(), halved.clone())).await.expect_err("a replay");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    assert!(status.message().contains("does not carry the session"), "{}", status.message());
    assert!(!status.message().contains(&honest_ids[0].to_string()), "{}", status.message());
    // Nor with a guessed session.
    let guessed = pb::ResultHeader { session: "0".repeat(32), ..replay.clone() };
    let status = hostile.push(result_parts(guessed, halved.clone())).await.expect_err("a guessed session");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    // Its capabilities cannot be rewritten (item 5): a poll in its name is refused.
    let poll = pb::PullTaskRequest {
        run_id: hostile.run_id.clone(),
        client_id: honest_ids[1].to_string(),
        wait_ms: 10,
        capabilities: Some(pb::ClientCapabilities { train_samples: 1, device: "forged".into(), ..Default::default() }),
        ..Default::default()
    };
    let status = hostile.rpc.pull_task(poll).await.expect_err("a poll in another's name");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    // Nor can its slot be joined again without its session, and the refusal names no one.
    let join = pb::JoinRequest { client_id: honest_ids[1].to_string(), requested_index: Some(1), ..Default::default() };
    let status = hostile.rpc.join(join).await.expect_err("a join under another's id");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    let taken =
        pb::JoinRequest { client_id: uuid::Uuid::new_v4().to_string(), requested_index: Some(0), ..Default::default() };
    let status = hostile.rpc.join(taken).await.expect_err("a taken index");
    assert!(!status.message().contains(&honest_ids[0].to_string()), "{}", status.message());

    // The hostile clients fall silent; the round closes once they count as offline.
    drop((hostile, latecomer));
    server.handle.await.expect("server task").expect("the hostile run completes");
    for c in honest {
        c.await.expect("client task").expect("honest client ends cleanly");
    }
    round
}

/// Round, client, trained, samples, loss, accuracy before and after training, global accuracy.
type Row = (u64, u32, bool, u64, Option<f64>, Option<f64>, Option<f64>, Option<f64>);

/// The honest clients' rows: what they measured and how they trained, round by round.
fn honest_rows(dir: &Path) -> Vec<Row> {
    let rows: Vec<ClientRoundRecord> = read_jsonl(&dir.join("metrics.jsonl"));
    rows.into_iter()
        .filter(|r| r.client < 2)
        .map(|r| {
            (
                r.round,
                r.client,
                r.trained,
                r.train_samples,
                r.train_loss,
                r.accuracy,
                r.accuracy_trained,
                r.global_accuracy,
            )
        })
        .collect()
}

fn global_model(dir: &Path) -> TensorSet {
    strata_core::safetensors::read(&dir.join("model.safetensors")).expect("the final global model").0
}

fn bits(set: &TensorSet) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    set.tensors()
        .iter()
        .map(|t| (t.name().to_string(), t.shape().to_vec(), t.values().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_results_are_refused_and_the_global_model_is_the_honest_clients_average() {
    let (reference, hostile) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let cache = Arc::new(strata_client::DataCache::default());
    let ((), round) = tokio::join!(honest_run(reference.path(), &cache), hostile_run(hostile.path(), &cache));

    let rounds: Vec<RoundRecord> = read_jsonl(&hostile.path().join("rounds.jsonl"));
    let under_test = rounds.iter().find(|r| r.round == round).expect("the hostile round's record");
    assert_eq!((under_test.picked, under_test.reported), (3, 2), "{under_test:?}");
    assert!(under_test.aggregated, "{under_test:?}");
    assert!(rounds.iter().all(|r| r.round == 2 || r.aggregated), "{rounds:?}");

    // The honest clients received the same models and trained the same way in both runs...
    assert_eq!(honest_rows(hostile.path()), honest_rows(reference.path()));
    // ...and the global model after the hostile round (and the next) is theirs, bit for bit.
    let (got, want) = (global_model(hostile.path()), global_model(reference.path()));
    assert!(!got.is_empty());
    assert!(bits(&got) == bits(&want), "the global model differs from the honest clients' average");
}
