//! `strata health`, the probe images and units use: it exits 0 for a serving server (gRPC
//! health on the server's port, HTTP /healthz on --metrics-listen) and for a client that has
//! joined (its --health-listen), and fails with a reason otherwise.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Process, free_port, strata};

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

/// A server on `port` expecting two clients, of which at most one comes: the run waits,
/// serving, for as long as the test needs. Its run goes into `dir/run`.
fn waiting_server(port: u16, dir: &std::path::Path, extra: &[&str]) -> Process {
    let server = strata()
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--clients", "2", "--rounds", "1"])
        .args(["--dataset", "synthetic", "--split", "iid", "--model", "mlp"])
        .args(extra)
        .arg("--out")
        .arg(dir.join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    Process(server)
}

#[test]
fn the_probe_passes_for_serving_daemons_and_fails_otherwise() {
    let out = tempfile::tempdir().expect("tempdir");
    let (port, metrics, client_health) = (free_port(), free_port(), free_port());
    let _server = waiting_server(port, out.path(), &["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
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

/// Behind mutual TLS the probe needs what any client needs: the CA, and a client certificate.
#[test]
fn the_probe_dials_a_mutual_tls_server_with_the_client_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let made = strata().args(["certs", "--clients", "1", "--out"]).arg(&certs).output().expect("strata certs");
    assert!(made.status.success(), "{made:?}");
    let file = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let port = free_port();
    let tls = ["--tls-cert", &file("server.pem"), "--tls-key", &file("server.key"), "--tls-client-ca", &file("ca.pem")];
    let _server = waiting_server(port, dir.path(), &tls);
    let url = format!("https://localhost:{port}");
    let (ca, cert, key) = (file("ca.pem"), file("client-0.pem"), file("client-0.key"));
    assert_eq!(wait_healthy(&["--grpc", &url, "--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]), "SERVING");
    let without_ca = health(&["--grpc", &url]);
    assert!(String::from_utf8_lossy(&without_ca.stderr).contains("--tls-ca"), "{without_ca:?}");
    let without_cert = health(&["--grpc", &url, "--tls-ca", &ca]);
    assert!(!without_cert.status.success(), "a server requiring client certificates refuses the probe without one");
}
