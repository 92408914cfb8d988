//! Classifier calibration (CCVR) in the run's outputs: accuracy before and after, globally and
//! per client, next to each other. "Before" is the round record of the same row (the model as
//! the strategy holds it); "after" is the calibration record (the same model, classifier
//! retrained).

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use strata_core::records::{CalibrationRecord, ClientRoundRecord, RoundRecord};

use crate::format::pct;

/// The last calibration of a run, with every earlier one in `history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSummary {
    pub method: String,
    /// The row whose model was calibrated (normally the final one).
    pub round: u64,
    pub clients_pooled: u32,
    pub classes: u32,
    pub virtual_features: u64,
    pub global_before: Option<f64>,
    pub global_after: Option<f64>,
    pub personalized_before: Option<f64>,
    pub personalized_after: Option<f64>,
    pub clients: Vec<ClientCalibration>,
    pub history: Vec<CalibrationPoint>,
}

/// One client's accuracy on its test split under the uncalibrated and the calibrated global
/// model (its personalized model when the method has no separate global one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientCalibration {
    pub client: u32,
    pub test_samples: u64,
    pub before: Option<f64>,
    pub after: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPoint {
    pub round: u64,
    pub global_before: Option<f64>,
    pub global_after: Option<f64>,
}

fn global_or_personal(c: &ClientRoundRecord) -> Option<f64> {
    c.global_accuracy.or(c.accuracy)
}

/// `None` when the run calibrated nothing.
pub fn summarize_calibration(
    rounds: &[RoundRecord],
    clients: &[ClientRoundRecord],
    calibrations: &[CalibrationRecord],
) -> Option<CalibrationSummary> {
    let last = calibrations.iter().max_by_key(|c| c.round)?;
    let before_row = rounds.iter().find(|r| r.round == last.round);
    let mut per_client: Vec<ClientCalibration> = last
        .clients
        .iter()
        .map(|after| ClientCalibration {
            client: after.client,
            test_samples: after.test_samples,
            before: clients
                .iter()
                .find(|c| c.round == last.round && c.client == after.client)
                .and_then(global_or_personal),
            // Evaluation tasks always report the merged model's accuracy.
            after: global_or_personal(after).unwrap_or_default(),
        })
        .collect();
    per_client.sort_by_key(|c| c.client);
    let mut history: Vec<CalibrationPoint> = calibrations
        .iter()
        .map(|c| CalibrationPoint {
            round: c.round,
            global_before: rounds.iter().find(|r| r.round == c.round).and_then(|r| r.global_accuracy),
            global_after: c.global_accuracy,
        })
        .collect();
    history.sort_by_key(|p| p.round);
    Some(CalibrationSummary {
        method: last.method.clone(),
        round: last.round,
        clients_pooled: last.clients_pooled,
        classes: last.classes,
        virtual_features: last.virtual_features,
        global_before: before_row.and_then(|r| r.global_accuracy),
        global_after: last.global_accuracy,
        personalized_before: before_row.and_then(|r| r.personalized_accuracy),
        personalized_after: last.personalized_accuracy,
        clients: per_client,
        history,
    })
}

/// The report's calibration section.
pub fn calibration_markdown(c: &CalibrationSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Calibration ({})\n\nThe model of row {} with its classifier retrained on {} virtual features of {} classes, \
         from the statistics of {} clients.\n",
        c.method, c.round, c.virtual_features, c.classes, c.clients_pooled
    );
    let _ = writeln!(out, "| row | global acc % before | global acc % after |\n|---:|---:|---:|");
    for p in &c.history {
        let _ = writeln!(out, "| {} | {} | {} |", p.round, pct(p.global_before), pct(p.global_after));
    }
    let _ = writeln!(
        out,
        "\nPersonalized (as merged): {} before, {} after.\n\n| client | test samples | accuracy % before | accuracy % after |\n|---:|---:|---:|---:|",
        pct(c.personalized_before),
        pct(c.personalized_after)
    );
    for row in &c.clients {
        let _ =
            writeln!(out, "| {} | {} | {} | {} |", row.client, row.test_samples, pct(row.before), pct(Some(row.after)));
    }
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_records::{client, round};

    fn calibrated(round: u64, clients: Vec<ClientRoundRecord>, global: f64) -> CalibrationRecord {
        CalibrationRecord {
            round,
            method: "ccvr".into(),
            clients_pooled: clients.len() as u32,
            classes: 10,
            virtual_features: 2000,
            seconds: 1.0,
            global_accuracy: Some(global),
            personalized_accuracy: Some(global),
            bytes_up: 0,
            bytes_down: 0,
            clients,
            secure_aggregation: None,
        }
    }

    #[test]
    fn before_and_after_pair_up_by_row_and_client() {
        let mut rounds = vec![round(2, None, 0.5, 0.0), round(4, None, 0.6, 0.0)];
        rounds[0].global_accuracy = Some(0.5);
        rounds[1].global_accuracy = Some(0.6);
        let before = vec![client(4, 0, false, 0.6, None, 10), client(4, 1, false, 0.6, None, 30)];
        let after_final = vec![client(4, 0, false, 0.7, None, 10), client(4, 1, false, 0.9, None, 30)];
        let records = vec![calibrated(4, after_final, 0.85), calibrated(2, vec![], 0.55)];
        let s = summarize_calibration(&rounds, &before, &records).unwrap();
        assert_eq!((s.round, s.global_before, s.global_after), (4, Some(0.6), Some(0.85)));
        assert_eq!(s.clients[1], ClientCalibration { client: 1, test_samples: 30, before: Some(0.6), after: 0.9 });
        assert_eq!(s.history.iter().map(|p| p.round).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(s.history[0].global_before, Some(0.5));
        let md = calibration_markdown(&s);
        assert!(md.contains("| 4 | 60.00 | 85.00 |"), "{md}");
        assert!(summarize_calibration(&rounds, &before, &[]).is_none());
    }
}
