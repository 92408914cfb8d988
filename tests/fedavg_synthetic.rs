//! A real server and three real clients on loopback train FedAvg on synthetic data: accuracy
//! rises, every round reports every client, and the run's files are written.

use std::sync::Arc;

use strata_core::records::{ClientRoundRecord, RoundRecord};
use strata_tests::{read_jsonl, spawn_client, synthetic_config, torch_backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedavg_over_grpc_learns_and_writes_its_records() {
    let out = tempfile::tempdir().expect("tempdir");
    let config = synthetic_config(3, 4);

    // Clients start before the server is up: they must retry until it answers.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let cache = Arc::new(strata_client::DataCache::default());
    let clients: Vec<_> = (0..3).map(|i| spawn_client(&url, i, &cache)).collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the probed port");
    let options = strata_server::ServerOptions::new(config.clone(), out.path().to_path_buf(), torch_backend());
    let outcome = strata_server::run(options, listener, std::future::pending()).await.expect("run completes");
    for client in clients {
        let done = client.await.expect("client task").expect("client ends cleanly");
        assert_eq!(done.tasks_done, 5, "4 training rounds and the final evaluation");
    }

    assert_eq!(outcome.ending, strata_server::Ending::Completed);
    assert_eq!(outcome.summary.rounds_completed, 4);
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!(rounds.len(), 5, "rounds 0-3 and the final evaluation");
    let first = rounds[0].global_accuracy.expect("global accuracy at round 0");
    let last = rounds[4].global_accuracy.expect("final global accuracy");
    assert!(last > 0.6, "final global accuracy {last:.3} should be well above chance (0.1)");
    assert!(last > first + 0.2, "accuracy should rise: {first:.3} -> {last:.3}");
    // Where the time went: every training round streamed, trained, received, checked and folded.
    for r in &rounds[..4] {
        let p = r.phases.expect("phase timings");
        assert!(p.download > 0.0 && p.train > 0.0 && p.upload > 0.0 && p.aggregation > 0.0, "round {}: {p:?}", r.round);
        assert!(p.snapshot > 0.0 && p.snapshot < r.seconds, "round {}: {p:?}", r.round);
        assert!(p.validation > 0.0 && p.validation < r.seconds * 3.0, "round {}: {p:?}", r.round);
    }
    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report");
    assert!(report.contains("## Where the time went"), "{report}");
    // Each round's state is written beside the next round; the last one before the run ends.
    let state = std::fs::read(out.path().join("state/state.json")).expect("state.json");
    let state: serde_json::Value = serde_json::from_slice(&state).expect("state.json is JSON");
    assert_eq!(state["next_round"], 5, "{state}");

    let rows: Vec<ClientRoundRecord> = read_jsonl(&out.path().join("metrics.jsonl"));
    assert_eq!(rows.len(), 15, "one row per client per round");
    let model_bytes = 4 * (60 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10) as u64;
    for row in rows.iter().filter(|r| r.trained) {
        // The whole model travels each way, plus a little protobuf framing.
        assert!(row.bytes_up >= model_bytes && row.bytes_up < model_bytes + 4096, "bytes up {}", row.bytes_up);
        assert!(row.bytes_down >= model_bytes && row.bytes_down < model_bytes + 4096, "bytes down {}", row.bytes_down);
        assert!(row.train_loss.is_some_and(f64::is_finite));
    }
    for file in ["config.toml", "summary.json", "report.md", "accuracy.png"] {
        assert!(out.path().join(file).metadata().is_ok_and(|m| m.len() > 0), "{file} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).expect("summary"))
            .expect("json");
    assert_eq!(summary["method"], "fedavg");
    assert!(summary["final"]["global_accuracy"].as_f64().is_some_and(|a| a > 0.6));
}
