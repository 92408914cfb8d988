//! A client daemon's Prometheus metrics and health. One [`ClientTelemetry`] serves every
//! virtual client of a process, each sample labelled with the client's index.

use std::collections::BTreeMap;
use std::sync::Mutex;

use strata_telemetry::exposition::Kind;
use strata_telemetry::health::{HealthReporter, ServingStatus};
use strata_telemetry::{Collect, Exposition};

/// What the process's clients report; shared by them (`ClientOptions::telemetry`).
#[derive(Default)]
pub struct ClientTelemetry {
    clients: Mutex<BTreeMap<u32, ClientStats>>,
    /// The gRPC health service of the process, if it serves one: SERVING while every client
    /// of the process is connected to the server.
    health: Option<HealthReporter>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ClientStats {
    device: String,
    connected: bool,
    tasks: u64,
    tasks_failed: u64,
    train_seconds: f64,
    trained_samples: u64,
    /// Of the last training.
    samples_per_second: Option<f64>,
}

impl ClientTelemetry {
    pub fn new(health: Option<HealthReporter>) -> Self {
        Self { clients: Mutex::default(), health }
    }

    fn with(&self, index: u32, change: impl FnOnce(&mut ClientStats)) {
        change(self.clients.lock().unwrap_or_else(|e| e.into_inner()).entry(index).or_default());
    }

    /// The client joined (again) and loaded its data onto `device`.
    pub(crate) async fn connected(&self, index: u32, device: &str) {
        self.with(index, |c| {
            c.device = device.to_string();
            c.connected = true;
        });
        self.report_health().await;
    }

    /// The server stopped answering this client (an outage it waits out), or the client ended.
    pub(crate) async fn disconnected(&self, index: u32) {
        self.with(index, |c| c.connected = false);
        self.report_health().await;
    }

    pub(crate) fn task_done(&self, index: u32, training: Option<(u64, f64)>) {
        self.with(index, |c| {
            c.tasks += 1;
            if let Some((samples, seconds)) = training {
                c.trained_samples += samples;
                c.train_seconds += seconds;
                c.samples_per_second = (seconds > 0.0).then(|| samples as f64 / seconds);
            }
        });
    }

    pub(crate) fn task_failed(&self, index: u32) {
        self.with(index, |c| c.tasks_failed += 1);
    }

    async fn report_health(&self) {
        let Some(health) = &self.health else { return };
        let all_connected = {
            let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            !clients.is_empty() && clients.values().all(|c| c.connected)
        };
        let status = if all_connected { ServingStatus::Serving } else { ServingStatus::NotServing };
        strata_telemetry::health::set(health, status).await;
    }
}

impl Collect for ClientTelemetry {
    fn collect(&self, out: &mut Exposition<'_>) {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner()).clone();
        type Field = fn(&ClientStats) -> Option<f64>;
        let families: [(&str, &str, Kind, Field); 6] = [
            ("strata_client_connected", "1 while the client is connected to the server.", Kind::Gauge, |c| {
                Some(if c.connected { 1.0 } else { 0.0 })
            }),
            ("strata_client_tasks_total", "Tasks done (training and evaluation).", Kind::Counter, |c| {
                Some(c.tasks as f64)
            }),
            ("strata_client_tasks_failed_total", "Tasks that failed or were refused.", Kind::Counter, |c| {
                Some(c.tasks_failed as f64)
            }),
            ("strata_client_train_seconds_total", "Seconds spent in local training.", Kind::Counter, |c| {
                Some(c.train_seconds)
            }),
            ("strata_client_trained_samples_total", "Samples trained on (repeats count).", Kind::Counter, |c| {
                Some(c.trained_samples as f64)
            }),
            ("strata_client_samples_per_second", "Training throughput of the last round.", Kind::Gauge, |c| {
                c.samples_per_second
            }),
        ];
        for (name, help, kind, field) in families {
            let samples = clients.iter().filter_map(|(index, c)| Some(([("client", index.to_string())], field(c)?)));
            out.family(name, help, kind, samples);
        }
        let devices =
            clients.iter().map(|(index, c)| ([("client", index.to_string()), ("device", c.device.clone())], 1.0));
        out.family("strata_client_device_info", "Where each client trains (value 1).", Kind::Gauge, devices);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_telemetry::exposition::{find_sample, scrape};

    #[tokio::test]
    async fn clients_are_labelled_by_index() {
        let t = std::sync::Arc::new(ClientTelemetry::new(None));
        t.connected(0, "Cpu").await;
        t.connected(1, "Cuda(0)").await;
        t.task_done(0, Some((100, 2.0)));
        t.task_done(0, None);
        t.task_failed(1);
        t.disconnected(1).await;
        let text = scrape(t);
        let get = |name, client: &str| find_sample(&text, name, &[("client", client)]);
        assert_eq!(get("strata_client_tasks_total", "0"), Some(2.0));
        assert_eq!(get("strata_client_samples_per_second", "0"), Some(50.0));
        assert_eq!(get("strata_client_samples_per_second", "1"), None);
        assert_eq!(get("strata_client_tasks_failed_total", "1"), Some(1.0));
        assert_eq!(get("strata_client_connected", "1"), Some(0.0));
        assert_eq!(
            find_sample(&text, "strata_client_device_info", &[("client", "1"), ("device", "Cuda(0)")]),
            Some(1.0)
        );
    }
}
