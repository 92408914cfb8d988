//! The round loop's calibration phase (CCVR): ask every available client for the statistics
//! of the classifier's input under the global model, calibrate the classifier, and have every
//! client evaluate the calibrated model. The strategy's state is never touched: the next round
//! sends the uncalibrated global model again, which is how periodic calibration stays
//! evaluation-only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_core::records::{CalibrationRecord, weighted_mean};
use strata_proto::stats::StatsExpectation;
use tracing::{info, warn};

use crate::assignment::{Assignment, TaskKind};
use crate::ccvr::{self, head_shape};
use crate::round::RoundLoop;

impl RoundLoop {
    /// Calibrates the model of row `row`; failures are logged, never fatal to the run.
    pub(crate) async fn calibrate(&mut self, row: u64) {
        let started = Instant::now();
        let Some(global) = self.strategy.global() else {
            warn!(row, "calibration skipped: the method has no global model");
            return;
        };
        let Some((num_classes, dim)) = head_shape(&self.model_spec) else {
            warn!(row, "calibration skipped: the model has no linear classifier `head.weight`");
            return;
        };
        let clients = self.registry.available(self.patience());
        let timeout = Duration::from_secs(self.config.round_timeout_secs);

        // 1. Statistics of the classifier's input under the global model.
        let deadline = tokio::time::Instant::now() + timeout;
        let expect = StatsExpectation { dim, num_classes: num_classes as u32, max_samples: None };
        let tasks: HashMap<_, _> = clients
            .iter()
            .map(|c| {
                let mut a = Assignment::in_phase(
                    row,
                    &format!("{}-ccvr", self.session),
                    TaskKind::FeatureStats,
                    c.index,
                    deadline,
                );
                a.parameters = Some(Arc::clone(&global));
                a.feature_stats = Some(expect);
                (c.id, Arc::new(a))
            })
            .collect();
        info!(row, clients = tasks.len(), "calibration: gathering feature statistics");
        let reports = self.dispatch(row, &tasks, deadline).await;
        let stats_bytes_down: u64 = tasks.values().map(|t| t.bytes_down()).sum();
        let bytes_up: u64 = reports.values().map(|r| r.bytes_up).sum();
        let stats: Vec<_> = reports.into_values().filter_map(|r| r.stats).collect();
        let clients_pooled = stats.len() as u32;

        // 2. Pool, sample, retrain the classifier (CPU work, off the runtime's threads).
        let config = self.config.calibration.clone();
        let seed = self.config.seed ^ row.wrapping_mul(0xC0FF_EE00_D15E_A5E5);
        let (base, backend) = (Arc::clone(&global), Arc::clone(&self.backend));
        let calibrated =
            tokio::task::spawn_blocking(move || ccvr::calibrate(&base, &stats, &config, seed, &*backend)).await;
        let calibrated = match calibrated {
            Ok(Ok(c)) => c,
            Ok(Err(reason)) => {
                warn!(row, clients_pooled, "calibration failed: {reason}");
                return;
            }
            Err(e) => {
                warn!(row, "calibration panicked: {e}");
                return;
            }
        };
        info!(row, clients_pooled, classes = calibrated.classes, "calibration: classifier retrained");

        // 3. Every client evaluates the calibrated model.
        let parameters = Arc::new(calibrated.parameters);
        if row == self.config.rounds {
            self.save_global("model-calibrated.safetensors", Some(&parameters), row);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let tasks: HashMap<_, _> = clients
            .iter()
            .map(|c| {
                let mut a = Assignment::in_phase(
                    row,
                    &format!("{}-calibrated", self.session),
                    TaskKind::Evaluate,
                    c.index,
                    deadline,
                );
                a.parameters = Some(Arc::clone(&parameters));
                a.parameters_are_global = true;
                (c.id, Arc::new(a))
            })
            .collect();
        let reports = self.dispatch(row, &tasks, deadline).await;
        let rows = self.records(row, &tasks, &reports);
        let record = CalibrationRecord {
            round: row,
            method: "ccvr".into(),
            clients_pooled,
            classes: calibrated.classes as u32,
            virtual_features: calibrated.virtual_features as u64,
            seconds: started.elapsed().as_secs_f64(),
            global_accuracy: weighted_mean(rows.iter().filter_map(|r| Some((r.global_accuracy?, r.test_samples)))),
            personalized_accuracy: weighted_mean(rows.iter().filter_map(|r| Some((r.accuracy?, r.test_samples)))),
            bytes_up: bytes_up + rows.iter().map(|r| r.bytes_up).sum::<u64>(),
            bytes_down: stats_bytes_down + rows.iter().map(|r| r.bytes_down).sum::<u64>(),
            clients: rows,
        };
        info!(row, global = ?record.global_accuracy, seconds = record.seconds, "calibration finished");
        if let Err(e) = self.output.append_calibration(&record) {
            warn!(row, "cannot write calibration record: {e}");
        }
    }
}
