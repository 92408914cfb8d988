//! `strata health`, the probe images and units use: it exits 0 for a serving server (gRPC
//! health on the server's port, HTTP /healthz on --metrics-listen) and for a client that has
//! joined (its --health-listen), and fails with a reason otherwise.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn health(args: &[&str]) -> Output {
    strata().arg("health").args(args).args(["--timeout", "2"]).output().expect("strata health runs")
}

/// Probes until it passes (the daemon is starting), for at most a minute.
fn wait_healthy(args: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let out = health(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never healthy: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_probe_passes_for_serving_daemons_and_fails_otherwise() {
    let out = tempfile::tempdir().expect("tempdir");
    let (port, metrics, client_health) = (free_port(), free_port(), free_port());
    // Two clients expected and one coming: the run waits, serving, for as long as the test needs.
    let server = strata()
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--clients", "2", "--rounds", "1"])
        .args(["--dataset", "synthetic", "--split", "iid", "--model", "mlp"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}"), "--out"])
        .arg(out.path().join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let _server = Process(server);
    let grpc = format!("http://127.0.0.1:{port}");
    assert_eq!(wait_healthy(&["--grpc", &grpc]), "SERVING");
    assert_eq!(wait_healthy(&["--grpc", &grpc, "--service", "strata.v1.Federation"]), "SERVING");
    assert_eq!(wait_healthy(&["--http", &format!("http://127.0.0.1:{metrics}/healthz")]), "ok");

    let client = strata()
        .args(["client", "--server", &grpc, "--device", "cpu"])
        .args(["--health-listen", &format!("127.0.0.1:{client_health}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("client starts");
    let _client = Process(client);
    // SERVING once it has joined and loaded its data.
    assert_eq!(wait_healthy(&["--grpc", &format!("http://127.0.0.1:{client_health}")]), "SERVING");

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let refused = health(&["--grpc", &nobody]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot reach"), "{refused:?}");
    let unknown = health(&["--grpc", &grpc, "--service", "no.such.Service"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("NotFound"), "{unknown:?}");
    let missing = health(&["--http", &format!("http://127.0.0.1:{metrics}/nothing")]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"), "{missing:?}");
}
