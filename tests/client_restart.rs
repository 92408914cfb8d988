//! A client daemon killed mid-run and restarted with the same `--state-dir`: the round goes on
//! without it, and the restarted daemon rejoins as the same client (UUID and index) with the
//! personal model it had saved.

use std::sync::Arc;

use strata_core::method::Method;
use strata_core::records::ClientRoundRecord;
use strata_server::ServerEvent;
use strata_tests::{read_jsonl, spawn_client, start_server, synthetic_config};

fn stateful(url: &str, dir: &std::path::Path, cache: &Arc<strata_client::DataCache>) -> strata_client::ClientOptions {
    let mut options = strata_client::ClientOptions::new(url);
    options.device = "cpu".into();
    options.data_cache = Arc::clone(cache);
    options.state_dir = Some(dir.to_path_buf());
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_client_rejoins_as_itself_with_its_personal_model() {
    let out = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("state dir");
    let mut config = synthetic_config(3, 5);
    config.method = Method::FedPer;
    config.min_clients = 2;
    config.round_timeout_secs = 3;
    let server = start_server(config, out.path()).await;
    let mut events = server.events.subscribe();
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();
    let mut options = stateful(&server.url, state.path(), &cache);
    options.requested_index = Some(2);
    let first = tokio::spawn(strata_client::run(options, std::future::pending()));

    loop {
        if let ServerEvent::RoundFinished(r) = events.recv().await.expect("events")
            && r.round == 1
        {
            break;
        }
    }
    first.abort();
    let _ = first.await;
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("client.json")).expect("client.json")).expect("json");
    let index = identity["index"].as_u64().expect("index") as u32;

    // No index asked for: the state directory says which.
    let again = strata_client::run(stateful(&server.url, state.path(), &cache), std::future::pending());
    let outcome = again.await.expect("the restarted client finishes the run");
    assert!(outcome.restored, "the personal model came from the state directory");
    assert_eq!((outcome.index, index), (2, 2), "same partition index");
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("client.json")).expect("client.json")).expect("json");
    assert_eq!(after["client_id"], identity["client_id"], "same identity");

    let summary = server.handle.await.expect("server task").expect("run completes");
    for c in good {
        c.await.expect("client task").expect("client ends cleanly");
    }
    assert_eq!(summary.summary.rounds_completed, 5);
    let rows: Vec<ClientRoundRecord> = read_jsonl(&out.path().join("metrics.jsonl"));
    let late: Vec<&ClientRoundRecord> = rows.iter().filter(|r| r.client == index && r.round >= 4).collect();
    assert!(!late.is_empty(), "the restarted client took part again");
    assert!(rows.iter().all(|r| r.client < 3), "no new client index was handed out");
}
