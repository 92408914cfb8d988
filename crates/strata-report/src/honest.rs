//! Under an attack a defense is judged on the clients it protects: the last evaluated row,
//! sample-weighted over the clients that were not hostile. The federation-wide figures also
//! count the hostile clients' own test splits, which a rule that rightly leaves their updates
//! out cannot serve when one of them holds most of a class (as under a Dirichlet split).

use serde::{Deserialize, Serialize};
use strata_core::records::{ClientRoundRecord, weighted_mean};

/// Final accuracies over the clients that were not hostile (before any CCVR calibration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HonestAccuracy {
    /// The row the numbers come from: the last one any client reported in.
    pub round: u64,
    /// The honest clients that row averages.
    pub clients: usize,
    pub global_accuracy: Option<f64>,
    pub personalized_accuracy: Option<f64>,
}

/// The final accuracies of the clients not in `hostile`; `None` without rows, or when every
/// client in the last row was hostile.
pub fn honest_accuracy(clients: &[ClientRoundRecord], hostile: &[u32]) -> Option<HonestAccuracy> {
    let round = clients.iter().map(|c| c.round).max()?;
    let rows: Vec<&ClientRoundRecord> =
        clients.iter().filter(|c| c.round == round && !hostile.contains(&c.client)).collect();
    if rows.is_empty() {
        return None;
    }
    let mean = |metric: fn(&ClientRoundRecord) -> Option<f64>| {
        weighted_mean(rows.iter().filter_map(|c| Some((metric(c)?, c.test_samples))))
    };
    Some(HonestAccuracy {
        round,
        clients: rows.len(),
        global_accuracy: mean(|c| c.global_accuracy),
        personalized_accuracy: mean(|c| c.accuracy),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_records::client;

    fn with_global(mut row: ClientRoundRecord, global: f64) -> ClientRoundRecord {
        row.global_accuracy = Some(global);
        row
    }

    #[test]
    fn the_last_row_is_averaged_over_the_clients_that_were_not_hostile() {
        let rows = [
            with_global(client(0, 0, true, 0.1, None, 10), 0.1),
            with_global(client(1, 0, false, 0.9, None, 10), 0.8),
            with_global(client(1, 1, false, 0.6, None, 30), 0.4),
            with_global(client(1, 2, false, 0.0, None, 60), 0.0),
        ];
        let all = honest_accuracy(&rows, &[]).unwrap();
        assert_eq!((all.round, all.clients), (1, 3));
        assert!((all.personalized_accuracy.unwrap() - 0.27).abs() < 1e-12, "{all:?}");
        let honest = honest_accuracy(&rows, &[2]).unwrap();
        assert_eq!(honest.clients, 2);
        assert!((honest.personalized_accuracy.unwrap() - 0.675).abs() < 1e-12, "{honest:?}");
        assert!((honest.global_accuracy.unwrap() - 0.5).abs() < 1e-12, "{honest:?}");
    }

    #[test]
    fn nothing_to_average_is_none() {
        assert_eq!(honest_accuracy(&[], &[]), None);
        assert_eq!(honest_accuracy(&[client(3, 4, false, 0.5, None, 10)], &[4]), None);
        let no_global = honest_accuracy(&[client(3, 4, false, 0.5, None, 10)], &[]).unwrap();
        assert_eq!(no_global.global_accuracy, None);
    }
}
