//! Operations surface end to end: the server's Prometheus endpoint scraped during a run (the
//! round counter rises, the client gauges count the clients), the clients' shared endpoint,
//! and the gRPC health service on the server's port.

use std::sync::Arc;
use std::time::Duration;

use strata_server::ServerEvent;
use strata_telemetry::exposition::find_sample;
use strata_telemetry::http::get_once;
use strata_tests::{read_jsonl, synthetic_config, torch_backend};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

const CLIENTS: u32 = 3;
const ROUNDS: u64 = 4;

async fn scrape(url: &str) -> String {
    let response = get_once(url, Duration::from_secs(5)).await.expect("scrape");
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Scrapes until `name` reaches at least `at_least` (the metrics follow the run's events, a
/// moment after the test hears them), and returns the value seen.
async fn value_reaching(url: &str, name: &str, at_least: f64) -> f64 {
    for _ in 0..100 {
        if let Some(v) = find_sample(&scrape(url).await, name, &[]).filter(|&v| v >= at_least) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {at_least}:\n{}", scrape(url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_the_run_and_health_says_serving() {
    let out = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
    let server_metrics = format!("http://{}/metrics", metrics.local_addr().expect("addr"));
    let (events, mut heard) = broadcast::channel(4096);
    let mut options =
        strata_server::ServerOptions::new(synthetic_config(CLIENTS, ROUNDS), out.path().to_path_buf(), torch_backend());
    options.events = Some(events);
    options.metrics = Some(metrics);
    let server = tokio::spawn(strata_server::run(options, listener, std::future::pending()));

    // The clients share one telemetry endpoint, as `strata client --virtual` does.
    let telemetry = Arc::new(strata_client::ClientTelemetry::new(None));
    let client_metrics = format!(
        "http://{}/metrics",
        strata_telemetry::http::spawn("127.0.0.1:0", telemetry.clone(), std::future::pending())
            .await
            .expect("client metrics")
    );
    let cache = Arc::new(strata_client::DataCache::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut options = strata_client::ClientOptions::new(&url);
            options.requested_index = Some(i);
            options.device = "cpu".into();
            options.data_cache = Arc::clone(&cache);
            options.telemetry = Some(telemetry.clone());
            tokio::spawn(strata_client::run(options, std::future::pending()))
        })
        .collect();

    let health =
        strata_telemetry::http::get_once(&server_metrics.replace("/metrics", "/healthz"), Duration::from_secs(5))
            .await
            .expect("healthz");
    assert_eq!(health.status, 200);
    let channel = tonic::transport::Endpoint::from_shared(url.clone()).expect("url").connect().await.expect("connect");
    let status =
        strata_telemetry::health::check(channel.clone(), strata_telemetry::health::FEDERATION, Duration::from_secs(5))
            .await
            .expect("health check");
    assert_eq!(status, "SERVING");

    // After each training round, the counter has reached it (waiting for the scrape to show
    // it) and every client is online.
    let mut seen = Vec::new();
    while seen.len() < ROUNDS as usize {
        if let ServerEvent::RoundFinished(record) = heard.recv().await.expect("events") {
            let counted =
                value_reaching(&server_metrics, "strata_rounds_completed_total", (record.round + 1) as f64).await;
            seen.push(counted);
            let text = scrape(&server_metrics).await;
            assert_eq!(find_sample(&text, "strata_clients_online", &[]), Some(f64::from(CLIENTS)), "{text}");
            assert_eq!(find_sample(&text, "strata_clients_offline", &[]), Some(0.0), "{text}");
            assert!(find_sample(&text, "strata_bytes_received_total", &[]).is_some_and(|b| b > 0.0), "{text}");
        }
    }
    // Rounds can finish faster than their events are read, so two events may see one value.
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "the round counter never went back: {seen:?}");
    assert_eq!(seen.last(), Some(&(ROUNDS as f64)), "the round counter counted every round: {seen:?}");

    let outcome = server.await.expect("server task").expect("run completes");
    assert_eq!(outcome.summary.rounds_completed, ROUNDS);
    // Each client's row says where it trained (what scripts/gpu-check.sh prints).
    let rows: Vec<strata_core::records::ClientRoundRecord> = read_jsonl(&out.path().join("metrics.jsonl"));
    assert!(!rows.is_empty() && rows.iter().all(|r| r.device.as_deref() == Some("Cpu")), "{rows:?}");
    for c in clients {
        c.await.expect("client task").expect("client ends cleanly");
    }
    // The clients' endpoint has each client's training, and says they are no longer connected.
    let text = scrape(&client_metrics).await;
    for i in 0..CLIENTS {
        let label = i.to_string();
        let tasks = find_sample(&text, "strata_client_tasks_total", &[("client", &label)]);
        assert!(tasks.is_some_and(|t| t >= ROUNDS as f64), "client {i}: {text}");
        let rate = find_sample(&text, "strata_client_samples_per_second", &[("client", &label)]);
        assert!(rate.is_some_and(|r| r > 0.0), "client {i}: {text}");
        let device = find_sample(&text, "strata_client_device_info", &[("client", &label), ("device", "Cpu")]);
        assert_eq!(device, Some(1.0), "client {i}: {text}");
        assert_eq!(find_sample(&text, "strata_client_connected", &[("client", &label)]), Some(0.0), "{text}");
    }
}
