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

use strata_secagg::encoding::Decoded;

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
        let Some((num_classes, dim)) = head_shape(&self.model_spec, &self.parts) else {
            warn!(row, head = %self.parts.head_weight, "calibration skipped: the model has no linear classifier");
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
                a.set_parameters(Arc::clone(&global));
                a.feature_stats = Some(expect);
                (c.id, a)
            })
            .collect();
        info!(row, clients = tasks.len(), "calibration: gathering feature statistics");
        let (pooled, clients_pooled, stats_bytes_down, bytes_up, secure) = match self.config.secure_aggregation.clone()
        {
            Some(config) => {
                let (tasks, reports, outcome) =
                    self.secure_statistics(row, tasks, deadline, &config, (num_classes, dim)).await;
                let bytes_down: u64 = tasks.values().map(|t| t.bytes_down()).sum();
                let bytes_up = reports.values().map(|r| r.bytes_up).sum::<u64>() + outcome.record.protocol_bytes;
                let mut record = outcome.record;
                let pooled = match outcome.sum {
                    Some((_, sum)) => {
                        let pooled = pool_secure_sum(&sum, outcome.samples, num_classes, dim);
                        record.statistics_clipped = sum.tail.last().copied();
                        pooled
                    }
                    None => Err("the statistics' secure sum was not recovered".to_string()),
                };
                if let Some(clipped) = record.statistics_clipped.filter(|&n| n > 0) {
                    warn!(
                        row,
                        clipped,
                        range = config.statistics_range,
                        "calibration: some clients' statistics hit ±secure_aggregation.statistics_range; raise it"
                    );
                }
                (pooled, record.summed, bytes_down, bytes_up, Some(record))
            }
            None => {
                let tasks: HashMap<_, _> = tasks.into_iter().map(|(id, a)| (id, Arc::new(a))).collect();
                let reports = self.dispatch(row, &tasks, deadline).await;
                let bytes_down: u64 = tasks.values().map(|t| t.bytes_down()).sum();
                let bytes_up: u64 = reports.values().map(|r| r.bytes_up).sum();
                let stats: Vec<_> = reports.into_values().filter_map(|r| r.stats).collect();
                let count = stats.len() as u32;
                let all: Vec<_> = stats.into_iter().flatten().collect();
                (strata_methods::ccvr::pool(&all, dim).map_err(|e| e.to_string()), count, bytes_down, bytes_up, None)
            }
        };
        let pooled = match pooled {
            Ok(p) => p,
            Err(reason) => {
                warn!(row, clients_pooled, "calibration failed: {reason}");
                return;
            }
        };

        // 2. Pool, sample, retrain the classifier (CPU work, off the runtime's threads).
        let config = self.config.calibration.clone();
        let seed = self.config.seed ^ row.wrapping_mul(0xC0FF_EE00_D15E_A5E5);
        let (base, backend, parts) = (Arc::clone(&global), Arc::clone(&self.backend), self.parts.clone());
        let calibrated =
            tokio::task::spawn_blocking(move || ccvr::calibrate(&base, &parts, &pooled, &config, seed, &*backend))
                .await;
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
                a.set_parameters(Arc::clone(&parameters));
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
            secure_aggregation: secure,
        };
        info!(row, global = ?record.global_accuracy, seconds = record.seconds, "calibration finished");
        if let Err(e) = self.output.append_calibration(&record) {
            warn!(row, "cannot write calibration record: {e}");
        }
    }
}

/// The pooled classes from secure aggregation's sum of the clients' moment shares: the tail
/// holds the class counts (which must add up to the samples the contributors reported) and
/// how many clients' shares were clipped. The shares were weighted by n_k/M, so the sums
/// scale back by M = Σ n_k / Σ w_k.
fn pool_secure_sum(
    sum: &Decoded,
    samples: u64,
    classes: usize,
    dim: usize,
) -> Result<Vec<strata_methods::ccvr::PooledClass>, String> {
    let counts: Vec<u64> = sum.tail.iter().take(classes).map(|&n| u64::from(n)).collect();
    let total: u64 = counts.iter().sum();
    if total != samples {
        return Err(format!(
            "the class counts add up to {total}, where the contributors reported {samples} training samples: \
             a client sent counts of its own"
        ));
    }
    let scale = samples as f64 / sum.total_weight;
    strata_methods::ccvr_sums::pool_sums(&sum.sum, scale, &counts, classes, dim).map_err(|e| e.to_string())
}
