//! `strata server` and two `strata client --virtual 5` processes on loopback (five daemons
//! each, or one population host of five each): the server completes its rounds with 10 clients.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Process, free_port, strata};

#[test]
fn two_processes_of_five_virtual_clients_make_a_federation_of_ten() {
    federation_of_ten(|_| Vec::new());
}

#[test]
fn two_population_hosts_of_five_make_a_federation_of_ten() {
    federation_of_ten(|p| vec!["--population".into(), "--first-index".into(), (5 * p).to_string()]);
}

/// Runs the federation with two client processes, process `p` given `extra(p)` flags.
fn federation_of_ten(extra: impl Fn(usize) -> Vec<String>) {
    let out = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let run = out.path().join("run");
    let server = strata()
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--clients", "10", "--rounds", "2"])
        .args(["--dataset", "synthetic", "--split", "iid", "--model", "mlp", "--lr", "0.05", "--batch-size", "20"])
        .args(["--round-timeout", "120", "--out"])
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let mut server = Process(server);
    let clients: Vec<Process> = (0..2)
        .map(|p| {
            let child = strata()
                .args(["client", "--server", &format!("http://127.0.0.1:{port}"), "--virtual", "5", "--device", "cpu"])
                .args(extra(p))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("client process starts");
            Process(child)
        })
        .collect();

    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("server status") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the run did not finish in 5 minutes");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "server exited with {status}");
    for mut c in clients {
        let status = c.0.wait().expect("client status");
        assert!(status.success(), "a client process exited with {status}");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).expect("summary.json")).expect("json");
    assert_eq!(summary["rounds_completed"], 2);
    let rounds = std::fs::read_to_string(run.join("rounds.jsonl")).expect("rounds.jsonl");
    for line in rounds.lines().take(2) {
        let r: serde_json::Value = serde_json::from_str(line).expect("round record");
        assert_eq!((r["picked"].as_u64(), r["reported"].as_u64()), (Some(10), Some(10)), "{line}");
    }
}
