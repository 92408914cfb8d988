//! Liveness: a client that goes silent is taken for offline after `offline_after_secs`, and
//! rounds stop waiting for it long before their deadline; under `round_closes = "min-results"`
//! a round closes as soon as it has `min_clients` training results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_core::liveness::{LivenessConfig, RoundCloses};
use strata_core::records::RoundRecord;
use strata_proto::pb;
use strata_server::ServerEvent;
use strata_tests::{read_jsonl, spawn_client, start_server, synthetic_config};

type Rpc = pb::federation_client::FederationClient<tonic::transport::Channel>;

/// Runs 3 rounds with two real clients and one that joins as index 2 and then says nothing.
async fn run_with_a_silent_client(liveness: LivenessConfig) -> (Vec<RoundRecord>, Duration) {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 3);
    config.min_clients = 2;
    config.round_timeout_secs = 120;
    config.liveness = liveness;
    let started = Instant::now();
    let server = start_server(config, out.path()).await;
    let mut events = server.events.subscribe();
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();
    // The silent one joins after the two live ones, so that every round has two live clients
    // (the round that picks it too, whether round 0 or round 1).
    loop {
        if let ServerEvent::ClientJoined { joined: 2, .. } = events.recv().await.expect("events") {
            break;
        }
    }
    let mut rpc = Rpc::connect(server.url.clone()).await.expect("connect");
    let join = pb::JoinRequest {
        client_id: uuid::Uuid::new_v4().to_string(),
        capabilities: None,
        requested_index: Some(2),
        host_id: String::new(),
    };
    rpc.join(join).await.expect("join");
    let outcome = server.handle.await.expect("server task").expect("run completes");
    for c in good {
        c.await.expect("client task").expect("client ends cleanly");
    }
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!(outcome.summary.rounds_completed, 3, "{rounds:?}");
    (rounds, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_client_goes_offline_and_rounds_stop_waiting_for_it() {
    let liveness = LivenessConfig { heartbeat_secs: 1, offline_after_secs: 6, round_closes: RoundCloses::All };
    let (rounds, took) = run_with_a_silent_client(liveness).await;
    // Without liveness the round that picked it would wait out its 120 s deadline.
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    // It was picked once (round 0 or 1) and that round closed without it; afterwards it is no
    // longer picked. The live clients, which heartbeat, always are.
    assert!(rounds.iter().any(|r| r.picked == 3 && r.reported == 2 && r.aggregated), "{rounds:?}");
    let last = rounds.iter().find(|r| r.round == 2).expect("round 2");
    assert_eq!((last.picked, last.reported), (2, 2), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_results_closes_a_round_once_enough_clients_reported() {
    // Patient enough that the silent client still counts as online when its round closes.
    let liveness = LivenessConfig { heartbeat_secs: 1, offline_after_secs: 600, round_closes: RoundCloses::MinResults };
    let (rounds, took) = run_with_a_silent_client(liveness).await;
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    assert!(rounds.iter().any(|r| r.picked == 3 && r.reported == 2), "closed on two results of three: {rounds:?}");
    assert!(rounds.iter().filter(|r| r.round < 3).all(|r| r.aggregated && r.reported == 2), "{rounds:?}");
}
