//! Run records: one row per client per round (`metrics.jsonl`), one per round (`rounds.jsonl`),
//! and the arithmetic that summarizes them the way the field reports it.
//!
//! Round `r` is evaluated at its start, on the model after `r` rounds of aggregation
//! (PFLlib's convention); the last row, `r = rounds`, is the final evaluation-only round.

use serde::{Deserialize, Serialize};

/// Names of the metrics a client reports with each result; the server builds
/// [`ClientRoundRecord`]s from them.
pub mod metric {
    pub const ACCURACY: &str = "accuracy";
    pub const ACCURACY_TRAINED: &str = "accuracy_trained";
    pub const GLOBAL_ACCURACY: &str = "global_accuracy";
    pub const TRAIN_LOSS: &str = "train_loss";
    pub const TRAIN_SAMPLES: &str = "train_samples";
    pub const TEST_SAMPLES: &str = "test_samples";
    pub const TRAIN_SECONDS: &str = "train_seconds";
    /// A client that clipped its own update (`[privacy]` placement `client`): 1 when the
    /// update was within the bound, 0 when it was scaled down.
    pub const DP_UNCLIPPED: &str = "dp_unclipped";
    /// A client training with DP-SGD (`[dp_sgd]`): the ε its own accountant gives for its
    /// training data so far, at `dp_sgd.delta`.
    pub const DP_SGD_EPSILON: &str = "dp_sgd_epsilon";
    /// A client under secure aggregation: seconds it spent encoding and masking its update.
    pub const SECAGG_SECONDS: &str = "secagg_seconds";
}

/// What one client reported for one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientRoundRecord {
    pub round: u64,
    /// The client's index in the partition.
    pub client: u32,
    /// Whether the client trained this round (otherwise it only evaluated).
    pub trained: bool,
    pub train_samples: u64,
    pub test_samples: u64,
    /// Mean training loss over the local steps, when the client trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Personalized model as received and merged, before local training, on the client's test
    /// split; `None` when the client was not asked to evaluate it (`[evaluation]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Personalized model right after local training, when the client trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_trained: Option<f64>,
    /// The global model on the client's test split, for methods that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_accuracy: Option<f64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Seconds the client spent training (0 when it only evaluated).
    pub train_seconds: f64,
    /// Where the client trains, as it reported (libtorch's name: `Cpu`, `Cuda(0)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// With DP-SGD (`[dp_sgd]`): the ε the client's own accountant gives for its training data
    /// so far, as it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_sgd_epsilon: Option<f64>,
    /// Under secure aggregation: seconds the client spent encoding and masking its update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg_seconds: Option<f64>,
}

/// What the server saw of one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    pub picked: u32,
    pub reported: u32,
    /// Whether the round's updates were aggregated (false: too few results, previous model kept).
    pub aggregated: bool,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personalized_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personalized_accuracy_trained: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// What the robust rule did, when the run has one and the round aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defense: Option<DefenseReport>,
    /// What differential privacy did, when the run has `[privacy]` and the round trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::privacy::PrivacyReport>,
    /// This evaluation-only row ended training early: another round would have spent more
    /// than `privacy.target_epsilon`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub budget_spent: bool,
    /// With DP-SGD: the largest ε a client of this round reported for its own data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_sgd_epsilon: Option<f64>,
    /// What secure aggregation did, when the run has `[secure_aggregation]` and the round trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_aggregation: Option<crate::secure_aggregation::SecAggRecord>,
    /// Where the round's time went, by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<PhaseSeconds>,
}

/// Seconds a round spent in each phase a user can act on. Client phases overlap (clients
/// work at once), so they are summed over the round's clients, client-seconds; the server's
/// aggregation is its own. `seconds` of the round is the wall clock around them all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// Streaming the parameters down, as the server saw each download: first to last part.
    pub download: f64,
    /// Local training, as the clients reported it.
    pub train: f64,
    /// Receiving the results, from the header to the last part.
    pub upload: f64,
    /// Checking every result (sizes, finiteness, bounds) before it touches global state.
    pub validation: f64,
    /// Folding the updates into the global model (on arrival and at the round's end).
    pub aggregation: f64,
    /// Taking the state `--resume` needs (the strategy's snapshot), and waiting for the
    /// previous round's to be written if it still was; the writing itself runs beside the
    /// next round. Absent from records written before it was measured.
    #[serde(default)]
    pub snapshot: f64,
}

impl RoundRecord {
    /// Summarizes the clients' rows of one round.
    pub fn from_clients(round: u64, picked: u32, aggregated: bool, seconds: f64, rows: &[ClientRoundRecord]) -> Self {
        let trained: Vec<&ClientRoundRecord> = rows.iter().filter(|r| r.trained).collect();
        Self {
            round,
            picked,
            reported: trained.len() as u32,
            aggregated,
            seconds,
            global_accuracy: weighted_mean(rows.iter().filter_map(|r| Some((r.global_accuracy?, r.test_samples)))),
            personalized_accuracy: weighted_mean(rows.iter().filter_map(|r| Some((r.accuracy?, r.test_samples)))),
            personalized_accuracy_trained: weighted_mean(
                rows.iter().filter_map(|r| Some((r.accuracy_trained?, r.test_samples))),
            ),
            train_loss: weighted_mean(trained.iter().filter_map(|r| Some((r.train_loss?, r.train_samples)))),
            bytes_up: rows.iter().map(|r| r.bytes_up).sum(),
            bytes_down: rows.iter().map(|r| r.bytes_down).sum(),
            defense: None,
            privacy: None,
            budget_spent: false,
            dp_sgd_epsilon: rows.iter().filter_map(|r| r.dp_sgd_epsilon).reduce(f64::max),
            secure_aggregation: None,
            phases: None,
        }
    }
}

/// What a robust aggregation rule did in a round (`[defense] rule`), as `rounds.jsonl` records it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DefenseReport {
    /// The rule's name (`median`, `krum`, ...).
    pub rule: String,
    /// The norm bound used this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    /// The clients (by index) whose update was scaled down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clipped: Vec<u32>,
    /// Krum and Multi-Krum: the clients chosen, best score first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<Vec<u32>>,
    /// A setting that weakened the rule this round (a trimmed mean that trimmed nothing, Krum
    /// with too few updates for its f).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One classifier calibration (CCVR) of the model of row `round`, as `calibration.jsonl`
/// records it: the clients' statistics pooled, the classifier retrained on virtual features,
/// and every client evaluating the calibrated model. The uncalibrated numbers are those of the
/// round record with the same `round`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    pub round: u64,
    pub method: String,
    /// Clients whose statistics were pooled.
    pub clients_pooled: u32,
    /// Classes with virtual features (at least two samples over all clients).
    pub classes: u32,
    pub virtual_features: u64,
    pub seconds: f64,
    /// Weighted over the clients' test splits, as in [`RoundRecord`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personalized_accuracy: Option<f64>,
    /// Statistics up, calibrated model down (and the global model down for the statistics).
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Every client's evaluation of the calibrated model.
    pub clients: Vec<ClientRoundRecord>,
    /// Under `[secure_aggregation]`: the protocol that summed the statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_aggregation: Option<crate::secure_aggregation::SecAggRecord>,
}

/// Sample-weighted mean of (value, weight) pairs; `None` when there is no weight.
pub fn weighted_mean(pairs: impl IntoIterator<Item = (f64, u64)>) -> Option<f64> {
    // Weights add up in u128: a count a client made up cannot wrap the total around.
    let (mut sum, mut weight) = (0.0, 0u128);
    for (value, w) in pairs {
        sum += value * w as f64;
        weight += u128::from(w);
    }
    (weight > 0).then(|| sum / weight as f64)
}

/// Minimum, median and maximum of a set of values (the spread across clients).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { min: v[0], median, max: v[n - 1] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(client: u32, accuracy: f64, test_samples: u64) -> ClientRoundRecord {
        ClientRoundRecord {
            round: 1,
            client,
            trained: true,
            train_samples: 3 * test_samples,
            test_samples,
            train_loss: Some(1.0),
            accuracy: Some(accuracy),
            accuracy_trained: Some(accuracy + 0.1),
            global_accuracy: Some(accuracy),
            bytes_up: 10,
            bytes_down: 20,
            train_seconds: 1.0,
            device: None,
            dp_sgd_epsilon: None,
            secagg_seconds: None,
        }
    }

    #[test]
    fn round_accuracy_is_weighted_by_test_samples() {
        let rows = [row(0, 1.0, 30), row(1, 0.0, 10)];
        let r = RoundRecord::from_clients(1, 2, true, 3.0, &rows);
        assert_eq!(r.personalized_accuracy, Some(0.75));
        assert_eq!(r.global_accuracy, Some(0.75));
        assert_eq!(r.bytes_up, 20);
        assert_eq!(r.reported, 2);
    }

    #[test]
    fn spread_gives_min_median_max() {
        let s = Spread::of([3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn client_rows_round_trip_as_json() {
        let r = row(3, 0.5, 8);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ClientRoundRecord>(&text).unwrap(), r);
    }

    #[test]
    fn weights_made_up_by_a_client_do_not_wrap_around() {
        let mean = weighted_mean([(0.5, u64::MAX), (1.0, u64::MAX), (0.0, 10)]).unwrap();
        assert!((mean - 0.75).abs() < 1e-9, "{mean}");
        assert_eq!(weighted_mean([(0.3, 0)]), None);
    }
}
