//! `summary.json`: the run's headline numbers, computed from its round and client records.
//!
//! Row `r` is evaluated at the start of round `r`, on the model after `r` rounds of
//! aggregation; the row `r = config.rounds` is the final, evaluation-only one. Accuracies are
//! fractions in [0, 1].

use crate::calibration_summary::CalibrationSummary;
use serde::{Deserialize, Serialize};
use strata_core::config::RunConfig;
use strata_core::records::{ClientRoundRecord, RoundRecord, Spread, weighted_mean};

/// What a run achieved, as written to `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub method: String,
    pub dataset: String,
    pub split: String,
    pub model: String,
    pub clients: u32,
    pub seed: u64,
    /// Training rounds the run was configured for.
    pub rounds: u64,
    /// Share of the available clients that trained each round.
    #[serde(default = "one")]
    pub fraction: f64,
    /// Who evaluated, when, and how often, in words.
    #[serde(default)]
    pub evaluation: String,
    /// Training rounds whose updates were aggregated.
    pub rounds_completed: u64,
    /// The last evaluation (normally the evaluation-only row `r = rounds`).
    #[serde(rename = "final")]
    pub final_eval: FinalMetrics,
    pub best: BestMetrics,
    pub wall_seconds: f64,
    /// Bytes sent by clients, over all rounds.
    pub bytes_up: u64,
    /// Bytes sent to clients, over all rounds.
    pub bytes_down: u64,
    /// Mean duration of the training rounds; `None` when there was none.
    pub seconds_per_round: Option<f64>,
    /// Classifier calibration (CCVR), when the run calibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSummary>,
    /// What user-level differential privacy spent, when the run had `[privacy]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySummary>,
    /// What DP-SGD spent of the clients' data, when the run had `[dp_sgd]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_sgd: Option<DpSgdSummary>,
}

/// Example-level privacy (DP-SGD): each client's own guarantee for its training data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpSgdSummary {
    pub noise_multiplier: f64,
    pub clipping_norm: f64,
    pub delta: f64,
    /// The largest ε any client reported for its data (its last report, after all its steps).
    pub max_epsilon: Option<f64>,
    /// Clients that reported one.
    pub clients: usize,
}

impl DpSgdSummary {
    fn of(config: &RunConfig, clients: &[ClientRoundRecord]) -> Option<Self> {
        let z = config.dp_sgd.noise_multiplier?;
        let mut latest: std::collections::BTreeMap<u32, f64> = std::collections::BTreeMap::new();
        for r in clients {
            if let Some(e) = r.dp_sgd_epsilon {
                let slot = latest.entry(r.client).or_insert(e);
                *slot = slot.max(e);
            }
        }
        Some(Self {
            noise_multiplier: z,
            clipping_norm: config.dp_sgd.clipping_norm,
            delta: config.dp_sgd.delta,
            max_epsilon: latest.values().copied().reduce(f64::max),
            clients: latest.len(),
        })
    }
}

/// The (ε, δ) guarantee of a differentially private run and how it was reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacySummary {
    /// ε after the last released round, at `delta`; `None` when nothing bounds it (z = 0).
    pub epsilon: Option<f64>,
    pub delta: f64,
    pub noise_multiplier: f64,
    /// `fixed C` or `adaptive from C₀ to the γ quantile`, and where updates were clipped.
    pub clipping: String,
    /// The bound the last released round clipped to.
    pub last_clipping_norm: f64,
    /// Training rounds that released a noised model.
    pub releases: u64,
    /// Which tensors the guarantee covers.
    pub covers: String,
    /// How ε was computed.
    pub accountant: String,
    /// The row where training stopped because another round would exceed `target_epsilon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by_budget_at: Option<u64>,
}

impl PrivacySummary {
    fn of(config: &RunConfig, rounds: &[RoundRecord]) -> Option<Self> {
        let p = &config.privacy;
        if !p.is_on() {
            return None;
        }
        let releases: Vec<&RoundRecord> = rounds.iter().filter(|r| r.privacy.is_some()).collect();
        let last = releases.iter().max_by_key(|r| r.round).and_then(|r| r.privacy.as_ref());
        let clipping = match p.target_quantile {
            Some(q) => format!("adaptive from {} to the {q} quantile, on the {}", p.clipping_norm, p.placement),
            None => format!("fixed at {}, on the {}", p.clipping_norm, p.placement),
        };
        Some(Self {
            epsilon: last.map_or(Some(0.0), |l| l.epsilon),
            delta: p.delta,
            noise_multiplier: last.map_or(p.noise_multiplier.unwrap_or(f64::NAN), |l| l.noise_multiplier),
            clipping,
            last_clipping_norm: last.map_or(p.clipping_norm, |l| l.clipping_norm),
            releases: releases.len() as u64,
            covers: last.map(|l| l.covers.clone()).unwrap_or_default(),
            accountant: format!(
                "RDP of the Poisson-subsampled Gaussian mechanism (clients drawn independently with probability {}), \
                 add/remove-one client",
                config.fraction
            ),
            stopped_by_budget_at: rounds.iter().find(|r| r.budget_spent).map(|r| r.round),
        })
    }
}

/// Accuracies of the last evaluated row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalMetrics {
    /// The row the numbers come from; `None` when there are no rows.
    pub round: Option<u64>,
    pub global_accuracy: Option<f64>,
    /// Personalized models as received and merged, sample-weighted over clients.
    pub personalized_accuracy: Option<f64>,
    /// Personalized models right after local training, from the last row that has them
    /// (the evaluation-only row trains nobody, so normally row `rounds - 1`).
    pub personalized_accuracy_trained: Option<f64>,
    /// The row `personalized_accuracy_trained` comes from.
    pub trained_round: Option<u64>,
    /// Min / median / max across clients of the last row's merged accuracy.
    pub personalized_spread: Option<Spread>,
    /// Clients whose evaluation the last row averages (fewer than the federation when some
    /// were unavailable: offline, or sitting out rounds after failed results).
    #[serde(default)]
    pub clients_evaluated: usize,
}

/// The best value of each accuracy over all rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BestMetrics {
    pub global_accuracy: Option<BestValue>,
    pub personalized_accuracy: Option<BestValue>,
    pub personalized_accuracy_trained: Option<BestValue>,
}

/// An accuracy and the (first) row it was reached in.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestValue {
    pub accuracy: f64,
    pub round: u64,
}

/// Computes the summary of a run from its records (in any order).
pub fn summarize(
    config: &RunConfig,
    rounds: &[RoundRecord],
    clients: &[ClientRoundRecord],
    wall_seconds: f64,
) -> RunSummary {
    let training: Vec<&RoundRecord> = rounds.iter().filter(|r| r.round < config.rounds && !r.budget_spent).collect();
    let seconds_per_round =
        (!training.is_empty()).then(|| training.iter().map(|r| r.seconds).sum::<f64>() / training.len() as f64);
    RunSummary {
        method: config.method.to_string(),
        dataset: config.data.dataset.to_string(),
        split: config.data.split.to_string(),
        model: config.model.name.clone(),
        clients: config.clients,
        seed: config.seed,
        rounds: config.rounds,
        fraction: config.fraction,
        evaluation: config.evaluation.describe(),
        rounds_completed: training.iter().filter(|r| r.aggregated).count() as u64,
        final_eval: final_metrics(rounds, clients),
        best: BestMetrics {
            global_accuracy: best(rounds, |r| r.global_accuracy),
            personalized_accuracy: best(rounds, |r| r.personalized_accuracy),
            personalized_accuracy_trained: best(rounds, |r| r.personalized_accuracy_trained),
        },
        wall_seconds,
        bytes_up: rounds.iter().map(|r| r.bytes_up).sum(),
        bytes_down: rounds.iter().map(|r| r.bytes_down).sum(),
        seconds_per_round,
        calibration: None,
        privacy: PrivacySummary::of(config, rounds),
        dp_sgd: DpSgdSummary::of(config, clients),
    }
}

fn one() -> f64 {
    1.0
}

/// The row with the highest round number.
pub(crate) fn last_round(rounds: &[RoundRecord]) -> Option<&RoundRecord> {
    rounds.iter().max_by_key(|r| r.round)
}

fn final_metrics(rounds: &[RoundRecord], clients: &[ClientRoundRecord]) -> FinalMetrics {
    let Some(last) = last_round(rounds) else {
        return FinalMetrics::default();
    };
    let rows: Vec<&ClientRoundRecord> = clients.iter().filter(|c| c.round == last.round).collect();
    let trained =
        rounds.iter().filter_map(|r| Some((r.round, r.personalized_accuracy_trained?))).max_by_key(|(round, _)| *round);
    FinalMetrics {
        round: Some(last.round),
        global_accuracy: last.global_accuracy,
        personalized_accuracy: last
            .personalized_accuracy
            .or_else(|| weighted_mean(rows.iter().filter_map(|c| Some((c.accuracy?, c.test_samples))))),
        personalized_accuracy_trained: trained.map(|(_, a)| a),
        trained_round: trained.map(|(r, _)| r),
        personalized_spread: Spread::of(rows.iter().filter_map(|c| c.accuracy)),
        clients_evaluated: clients_evaluated(rows.iter().copied()),
    }
}

/// Clients of one row that measured an accuracy (their own model's or the global one's).
pub fn clients_evaluated<'a>(rows: impl IntoIterator<Item = &'a ClientRoundRecord>) -> usize {
    rows.into_iter().filter(|c| c.accuracy.is_some() || c.global_accuracy.is_some()).count()
}

/// The highest value of `metric` over the rows, with the earliest round that reached it.
fn best(rounds: &[RoundRecord], metric: impl Fn(&RoundRecord) -> Option<f64>) -> Option<BestValue> {
    let mut best: Option<BestValue> = None;
    for r in rounds {
        let Some(accuracy) = metric(r).filter(|a| a.is_finite()) else {
            continue;
        };
        let better = match best {
            None => true,
            Some(b) => accuracy > b.accuracy || (accuracy == b.accuracy && r.round < b.round),
        };
        if better {
            best = Some(BestValue { accuracy, round: r.round });
        }
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_records::{client, config, round};

    #[test]
    fn final_numbers_come_from_the_last_row_weighted_by_test_samples() {
        let config = config(2);
        let clients = [
            client(2, 0, false, 0.9, None, 30),
            client(2, 1, false, 0.5, None, 10),
            client(1, 0, true, 0.6, Some(0.8), 30),
            client(1, 1, true, 0.4, Some(0.7), 10),
        ];
        // Rows built from the clients, as the server does, so the weighting is core's.
        let rounds = [
            RoundRecord::from_clients(1, 2, true, 3.0, &clients[2..]),
            RoundRecord::from_clients(2, 0, false, 1.0, &clients[..2]),
        ];
        let s = summarize(&config, &rounds, &clients, 10.0);
        assert_eq!(s.final_eval.round, Some(2));
        assert!((s.final_eval.personalized_accuracy.unwrap() - 0.8).abs() < 1e-12);
        assert!((s.final_eval.personalized_accuracy_trained.unwrap() - 0.775).abs() < 1e-12);
        assert_eq!(s.final_eval.trained_round, Some(1));
        let spread = s.final_eval.personalized_spread.unwrap();
        assert_eq!((spread.min, spread.max), (0.5, 0.9));
        assert!((spread.median - 0.7).abs() < 1e-12);
        assert_eq!(s.final_eval.clients_evaluated, 2);
    }

    #[test]
    fn rounds_completed_counts_aggregated_training_rounds_only() {
        let config = config(3);
        let mut rounds: Vec<RoundRecord> = (0..=3).map(|r| round(r, Some(0.1), 0.2, 2.0)).collect();
        rounds[1].aggregated = false;
        rounds[3].aggregated = true; // the evaluation-only row never counts
        let s = summarize(&config, &rounds, &[], 1.0);
        assert_eq!(s.rounds_completed, 2);
        assert_eq!(s.seconds_per_round, Some(2.0));
    }

    #[test]
    fn best_takes_the_earliest_round_of_the_highest_value() {
        let config = config(3);
        let rounds = [
            round(0, Some(0.1), 0.1, 1.0),
            round(1, Some(0.7), 0.9, 1.0),
            round(2, Some(0.5), 0.9, 1.0),
            round(3, None, 0.8, 0.0),
        ];
        let s = summarize(&config, &rounds, &[], 1.0);
        assert_eq!(s.best.global_accuracy, Some(BestValue { accuracy: 0.7, round: 1 }));
        assert_eq!(s.best.personalized_accuracy, Some(BestValue { accuracy: 0.9, round: 1 }));
        assert_eq!(s.final_eval.global_accuracy, None);
        assert_eq!(s.final_eval.personalized_accuracy, Some(0.8));
        assert_eq!(s.bytes_up, 400);
        assert_eq!(s.bytes_down, 800);
    }

    #[test]
    fn summary_json_round_trips_and_names_final() {
        let s = summarize(&config(1), &[round(0, Some(0.5), 0.5, 1.0)], &[], 1.0);
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"final\":{"), "{text}");
        assert_eq!(serde_json::from_str::<RunSummary>(&text).unwrap(), s);
    }

    #[test]
    fn empty_records_give_an_empty_summary() {
        let s = summarize(&config(5), &[], &[], 0.0);
        assert_eq!(s.rounds_completed, 0);
        assert_eq!(s.final_eval, FinalMetrics::default());
        assert_eq!(s.seconds_per_round, None);
    }
}
