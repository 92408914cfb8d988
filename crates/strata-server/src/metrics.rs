//! The server's Prometheus metrics: counters fed by the run's events, and client liveness read
//! from the registry when scraped (so a client that falls silent shows as offline at once).

use std::sync::Arc;
use std::time::Duration;

use strata_telemetry::exposition::Kind;
use strata_telemetry::{Collect, Counter, Exposition, Gauge};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::events::ServerEvent;
use crate::registry::Registry;

pub struct ServerMetrics {
    registry: Registry,
    /// Silence after which a client counts as offline (the liveness setting).
    patience: Duration,
    capacity: u32,
    rounds: Counter,
    round: Gauge,
    round_seconds: Gauge,
    refused: Counter,
    accepted: Counter,
    resumed: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    personalized: Gauge,
    global: Gauge,
}

impl ServerMetrics {
    pub fn new(registry: Registry, patience: Duration, capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            registry,
            patience,
            capacity,
            rounds: Counter::default(),
            round: Gauge::default(),
            round_seconds: Gauge::default(),
            refused: Counter::default(),
            accepted: Counter::default(),
            resumed: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            personalized: Gauge::default(),
            global: Gauge::default(),
        })
    }

    /// Folds one event into the counters.
    pub fn observe(&self, event: &ServerEvent) {
        match event {
            ServerEvent::RoundStarted { round, .. } => self.round.set(*round as f64),
            ServerEvent::ResultAccepted { .. } => self.accepted.inc(),
            ServerEvent::ResultRefused { .. } => self.refused.inc(),
            ServerEvent::UploadResumed { .. } => self.resumed.inc(),
            ServerEvent::RoundFinished(record) => {
                // The last, evaluation-only round measures the final model; it trains nothing.
                if record.picked > 0 {
                    self.rounds.inc();
                }
                self.round_seconds.set(record.seconds);
                self.bytes_in.add(record.bytes_up as f64);
                self.bytes_out.add(record.bytes_down as f64);
                if let Some(a) = record.personalized_accuracy {
                    self.personalized.set(a);
                }
                if let Some(a) = record.global_accuracy {
                    self.global.set(a);
                }
            }
            ServerEvent::ClientJoined { .. } | ServerEvent::RunFinished => {}
        }
    }

    /// Listens to the run's events until the run's channel closes.
    pub async fn follow(self: Arc<Self>, mut events: broadcast::Receiver<ServerEvent>) {
        loop {
            match events.recv().await {
                Ok(event) => self.observe(&event),
                Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "metrics missed events"),
                Err(RecvError::Closed) => return,
            }
        }
    }
}

impl Collect for ServerMetrics {
    fn collect(&self, out: &mut Exposition<'_>) {
        let (online, offline) = self.registry.liveness(self.patience);
        out.counter("strata_rounds_completed_total", "Training rounds completed.", self.rounds.get())
            .gauge("strata_round", "The round in progress (or the last one).", self.round.get())
            .gauge("strata_round_duration_seconds", "How long the last round took.", self.round_seconds.get())
            .gauge("strata_clients_expected", "Clients in the federation (the partition's size).", self.capacity as f64)
            .gauge("strata_clients_online", "Joined clients heard from within the offline patience.", online as f64)
            .gauge(
                "strata_clients_offline",
                "Clients silent for longer than the patience, or not back after a resume.",
                offline as f64,
            )
            .counter("strata_results_accepted_total", "Results that passed validation.", self.accepted.get())
            .counter(
                "strata_results_refused_total",
                "Results refused by validation (each logged with the client and the reason).",
                self.refused.get(),
            )
            .counter(
                "strata_uploads_resumed_total",
                "Uploads cut by the transport that went on from the parts the server kept.",
                self.resumed.get(),
            )
            .counter("strata_bytes_received_total", "Result bytes received from clients.", self.bytes_in.get())
            .counter("strata_bytes_sent_total", "Parameter bytes sent to clients.", self.bytes_out.get())
            .gauge(
                "strata_personalized_accuracy",
                "Sample-weighted accuracy of the clients' own models in the last round.",
                self.personalized.get(),
            )
            .gauge(
                "strata_global_accuracy",
                "Sample-weighted accuracy of the global model in the last round.",
                self.global.get(),
            );
        out.family(
            "strata_build_info",
            "The server's version.",
            Kind::Gauge,
            [([("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::records::RoundRecord;
    use strata_telemetry::exposition::{find_sample, scrape};

    fn record(round: u64, picked: u32) -> RoundRecord {
        RoundRecord {
            round,
            picked,
            reported: picked,
            aggregated: picked > 0,
            seconds: 1.5,
            global_accuracy: Some(0.5),
            personalized_accuracy: Some(0.75),
            personalized_accuracy_trained: None,
            train_loss: None,
            bytes_up: 100,
            bytes_down: 300,
            defense: None,
            privacy: None,
            budget_spent: false,
            dp_sgd_epsilon: None,
            secure_aggregation: None,
            phases: None,
        }
    }

    #[test]
    fn events_and_the_registry_make_the_metrics() {
        let registry = Registry::new(3);
        registry.join(uuid::Uuid::new_v4(), None, None, "").unwrap();
        registry.join(uuid::Uuid::new_v4(), None, None, "").unwrap();
        let metrics = ServerMetrics::new(registry, Duration::from_secs(30), 3);
        metrics.observe(&ServerEvent::RoundFinished(Box::new(record(0, 2))));
        metrics.observe(&ServerEvent::RoundFinished(Box::new(record(1, 2))));
        // The final evaluation round is no training round.
        metrics.observe(&ServerEvent::RoundFinished(Box::new(record(2, 0))));
        metrics.observe(&ServerEvent::ResultRefused { client: Some(1), reason: "NaN".into() });
        let text = scrape(metrics);
        let value = |name| find_sample(&text, name, &[]).unwrap();
        assert_eq!(value("strata_rounds_completed_total"), 2.0);
        assert_eq!(value("strata_clients_online"), 2.0);
        assert_eq!(value("strata_clients_offline"), 0.0);
        assert_eq!(value("strata_clients_expected"), 3.0);
        assert_eq!(value("strata_results_refused_total"), 1.0);
        assert_eq!(value("strata_bytes_received_total"), 300.0);
        assert_eq!(value("strata_bytes_sent_total"), 900.0);
        assert_eq!(value("strata_personalized_accuracy"), 0.75);
        assert_eq!(value("strata_round_duration_seconds"), 1.5);
    }

    #[test]
    fn silent_clients_count_as_offline() {
        let registry = Registry::new(2);
        registry.join(uuid::Uuid::new_v4(), None, None, "").unwrap();
        let metrics = ServerMetrics::new(registry, Duration::ZERO, 2);
        std::thread::sleep(Duration::from_millis(5));
        let text = scrape(metrics);
        assert_eq!(find_sample(&text, "strata_clients_online", &[]), Some(0.0));
        assert_eq!(find_sample(&text, "strata_clients_offline", &[]), Some(1.0));
    }
}
