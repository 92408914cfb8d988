//! A server that dies in the middle of a run and is restarted with `--resume`: the clients
//! wait for it, rejoin with their identity, and the run completes with every round recorded
//! exactly once and the strategy's state (FedCAC's per-client masks and models) carried over.

use std::sync::Arc;
use std::time::Duration;

use strata_core::method::Method;
use strata_core::records::{ClientRoundRecord, RoundRecord};
use strata_server::{ServerEvent, ServerOptions};
use strata_tests::{read_jsonl, spawn_client, synthetic_config, torch_backend};
use tokio::net::TcpListener;

/// Binds `addr` again once the dead server's socket is gone.
async fn rebind(addr: std::net::SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr} again");
}

/// Runs `config` with three client daemons, kills the server once round 1 is recorded (after
/// `grace`, while round 2 runs), restarts it with `--resume` on the same address, and waits
/// for the clients to finish. Returns the resumed run's outcome.
async fn killed_after_round_one_and_resumed(
    config: strata_core::config::RunConfig,
    out: &std::path::Path,
    grace: Duration,
) -> strata_server::RunOutcome {
    let round_one = |e: &ServerEvent| matches!(e, ServerEvent::RoundFinished(r) if r.round == 1);
    killed_and_resumed(config, out, round_one, grace).await
}

/// As above, killing the server `grace` after the first event `kill_at` picks.
async fn killed_and_resumed(
    config: strata_core::config::RunConfig,
    out: &std::path::Path,
    kill_at: impl Fn(&ServerEvent) -> bool,
    grace: Duration,
) -> strata_server::RunOutcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (events, mut rx) = tokio::sync::broadcast::channel(4096);
    let mut options = ServerOptions::new(config.clone(), out.to_path_buf(), torch_backend());
    options.events = Some(events);
    let first = tokio::spawn(strata_server::run(options, listener, std::future::pending()));

    let cache = Arc::new(strata_client::DataCache::default());
    let url = format!("http://{addr}");
    let clients: Vec<_> = (0..3).map(|i| spawn_client(&url, i, &cache)).collect();
    while !kill_at(&rx.recv().await.expect("events")) {}
    tokio::time::sleep(grace).await;
    first.abort();
    assert!(first.await.expect_err("aborted").is_cancelled());

    let mut options = ServerOptions::new(config, out.to_path_buf(), torch_backend());
    options.resume = true;
    let outcome = strata_server::run(options, rebind(addr).await, std::future::pending()).await.expect("resumed run");
    for c in clients {
        c.await.expect("client task").expect("the clients waited for the server and finished");
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_resumes_and_the_run_completes_with_each_round_once() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 5);
    config.method = Method::FedCac;
    let outcome = killed_after_round_one_and_resumed(config, out.path(), Duration::from_millis(100)).await;

    assert_eq!(outcome.summary.rounds_completed, 5);
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!(rounds.iter().map(|r| r.round).collect::<Vec<_>>(), (0..=5).collect::<Vec<_>>());
    let rows: Vec<ClientRoundRecord> = read_jsonl(&out.path().join("metrics.jsonl"));
    for round in 0..=5 {
        let mut who: Vec<u32> = rows.iter().filter(|r| r.round == round).map(|r| r.client).collect();
        who.sort();
        assert_eq!(who, vec![0, 1, 2], "round {round}: every client exactly once");
    }
    // FedCAC's customized models survived: after the restart clients still get models of their own.
    let last = rows.iter().filter(|r| r.round == 5).map(|r| r.accuracy).collect::<Vec<_>>();
    assert!(last.iter().all(|a| a.is_some_and(|a| a > 0.2)), "{last:?}");
}

#[tokio::test]
async fn resuming_a_directory_without_state_is_a_clear_error() {
    let out = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut options = ServerOptions::new(synthetic_config(2, 1), out.path().to_path_buf(), torch_backend());
    options.resume = true;
    let err = strata_server::run(options, listener, std::future::pending()).await.expect_err("refused").to_string();
    assert!(err.contains("cannot resume") && err.contains("state.json"), "{err}");
}

/// Under `[privacy]`, a resumed run keeps counting: every round's ε is the accountant's for
/// that many releases, across the restart, and adaptive clipping goes on from the saved bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_private_run_keeps_its_epsilon_and_its_bound() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 4);
    config.privacy.noise_multiplier = Some(0.7);
    config.privacy.target_quantile = Some(0.5);
    config.privacy.clipped_count_stddev = Some(1.0);
    killed_after_round_one_and_resumed(config, out.path(), Duration::ZERO).await;
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    let released: Vec<_> = rounds.iter().filter_map(|r| Some((r.round, r.privacy.clone()?))).collect();
    assert_eq!(released.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [0, 1, 2, 3], "{rounds:?}");
    for (round, p) in &released {
        let mut accountant =
            strata_methods::accountant::RdpAccountant::new(strata_methods::accountant::Neighbouring::AddOrRemoveOne);
        accountant.compose_poisson(1.0, 0.7, round + 1).expect("event");
        let expected = accountant.epsilon(1e-5).expect("delta").epsilon;
        assert!((p.epsilon.expect("bounded") - expected).abs() < 1e-9 * expected, "round {round}");
    }
    for pair in released.windows(2) {
        assert_eq!(Some(pair[1].1.clipping_norm), pair[0].1.next_clipping_norm, "the bound carries over");
    }
}

/// Under secure aggregation, a server killed as the next round's protocol starts redoes that
/// round from its setup: every round is recorded once, each with its sum recovered from every
/// client, and the clients drop what they held of the interrupted protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_interrupted_in_the_middle_of_secure_aggregation_is_redone() {
    use strata_core::secure_aggregation::{CountOrFraction, SecAggConfig};
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 4);
    config.secure_aggregation =
        Some(SecAggConfig { reconstruction_threshold: CountOrFraction::Count(2), ..SecAggConfig::default() });
    // Killed as round 2's first setup answer (a client's keys) is accepted: mid-protocol.
    let setup_answered = |e: &ServerEvent| matches!(e, ServerEvent::ResultAccepted { round: 2, .. });
    let outcome = killed_and_resumed(config, out.path(), setup_answered, Duration::ZERO).await;
    assert_eq!(outcome.summary.rounds_completed, 4);
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!(rounds.iter().map(|r| r.round).collect::<Vec<_>>(), (0..=4).collect::<Vec<_>>());
    for r in rounds.iter().filter(|r| r.round < 4) {
        let s = r.secure_aggregation.as_ref().expect("a training round records the protocol");
        assert!(s.recovered && s.summed == 3 && r.aggregated, "round {}: {s:?}", r.round);
    }
}
