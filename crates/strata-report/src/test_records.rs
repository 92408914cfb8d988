//! Hand-made records for the tests of every module.

use strata_core::config::RunConfig;
use strata_core::records::{ClientRoundRecord, RoundRecord};

/// The reference config with `rounds` training rounds.
pub(crate) fn config(rounds: u64) -> RunConfig {
    RunConfig { rounds, ..RunConfig::reference_fmnist() }
}

/// A round row: 2 picked, 2 reported, aggregated, 100 bytes up and 200 down. Rows before the
/// last carry a trained accuracy 0.05 above the merged one and a loss.
pub(crate) fn round(round: u64, global: Option<f64>, personalized: f64, seconds: f64) -> RoundRecord {
    let trains = seconds > 0.0;
    RoundRecord {
        round,
        picked: if trains { 2 } else { 0 },
        reported: if trains { 2 } else { 0 },
        aggregated: trains,
        seconds,
        global_accuracy: global,
        personalized_accuracy: Some(personalized),
        personalized_accuracy_trained: trains.then_some(personalized + 0.05),
        train_loss: trains.then_some(1.0 / (round as f64 + 1.0)),
        bytes_up: 100,
        bytes_down: 200,
        defense: None,
        privacy: None,
        budget_spent: false,
        dp_sgd_epsilon: None,
        secure_aggregation: None,
        phases: None,
    }
}

/// A client row with three times as many train samples as test samples.
pub(crate) fn client(
    round: u64,
    client: u32,
    trained: bool,
    accuracy: f64,
    accuracy_trained: Option<f64>,
    test_samples: u64,
) -> ClientRoundRecord {
    ClientRoundRecord {
        round,
        client,
        trained,
        train_samples: 3 * test_samples,
        test_samples,
        train_loss: trained.then_some(0.5),
        accuracy: Some(accuracy),
        accuracy_trained,
        global_accuracy: None,
        bytes_up: if trained { 1_000_000 } else { 0 },
        bytes_down: 2_000_000,
        train_seconds: if trained { 1.0 } else { 0.0 },
        device: None,
        dp_sgd_epsilon: None,
        secagg_seconds: None,
    }
}

/// Checks that `path` holds a non-trivial PNG; copies it into `$STRATA_REPORT_KEEP` when set,
/// to look at.
#[allow(clippy::unwrap_used)]
pub(crate) fn assert_png(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 1000, "{} is only {} bytes", path.display(), bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    if let Ok(keep) = std::env::var("STRATA_REPORT_KEEP") {
        std::fs::copy(path, std::path::Path::new(&keep).join(path.file_name().unwrap())).unwrap();
    }
}
