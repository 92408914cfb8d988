//! The coordinate-wise trimmed mean (Yin et al., ICML 2018; Flower's `FedTrimmedAvg`, a copy of
//! scipy's `trim_mean`): per coordinate, ⌊β·n⌋ values cut from each end and the rest averaged,
//! unweighted. When ⌊β·n⌋ = 0 nothing is trimmed; the report warns, as the spec asks.

use super::{Contribution, Outcome, RobustError, combine_coordinates, report};

/// The first reference plus the coordinate-wise trimmed mean of the Δs. Expects checked
/// contributions; refuses a β that leaves no value.
pub(super) fn aggregate(beta: f64, updates: &[Contribution]) -> Result<Outcome, RobustError> {
    let n = updates.len();
    // A negative or NaN β casts to a cut of 0.
    let cut = (beta * n as f64).floor() as usize;
    if cut.saturating_mul(2) >= n {
        return Err(RobustError::NothingLeft { beta, n, cut });
    }
    let mut report = report("trimmed-mean");
    if cut == 0 {
        report.warning = Some(format!(
            "trimmed-mean:{beta} over {n} updates cuts floor(beta*n) = 0 values: this round is a plain mean"
        ));
    }
    let aggregate = combine_coordinates(updates, |values| trimmed_mean_in_place(values, cut));
    Ok(Outcome { aggregate, report })
}

/// The mean of `values` without the `cut` smallest and `cut` largest, by two selections (it
/// reorders `values`). Expects 2·cut < n.
fn trimmed_mean_in_place(values: &mut [f64], cut: usize) -> f64 {
    let kept_len = values.len().saturating_sub(2 * cut);
    let kept = if cut == 0 {
        values
    } else {
        // Puts the `cut` smallest first, then, among the rest, the `cut` largest last.
        let (_, _, above_smallest) = values.select_nth_unstable_by(cut - 1, f64::total_cmp);
        let (kept, _, _) = above_smallest.select_nth_unstable_by(kept_len, f64::total_cmp);
        kept
    };
    kept.iter().sum::<f64>() / kept_len as f64
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Round, flat, flat_delta};
    use super::*;

    /// scipy's `trim_mean` by sorting a copy.
    fn naive_trimmed_mean(values: &[f64], beta: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let cut = (beta * values.len() as f64).floor() as usize;
        let kept = &sorted[cut..sorted.len() - cut];
        kept.iter().sum::<f64>() / kept.len() as f64
    }

    #[test]
    fn small_cases_by_hand() {
        assert_eq!(trimmed_mean_in_place(&mut [9.0, 1.0, 5.0, -40.0, 3.0], 1), 3.0);
        assert_eq!(trimmed_mean_in_place(&mut [9.0, 1.0, 5.0, -40.0, 3.0, 3.0], 2), 3.0);
        assert_eq!(trimmed_mean_in_place(&mut [2.0, 2.0, 2.0, 8.0], 1), 2.0);
        assert_eq!(trimmed_mean_in_place(&mut [1.0, 2.0], 0), 1.5);
    }

    #[test]
    fn matches_a_sort_per_coordinate_for_odd_and_even_counts() {
        let shapes = vec![("body.w", vec![2, 5]), ("body.b", vec![5])];
        for (seed, n, beta) in [(1, 5, 0.2), (2, 6, 0.2), (3, 7, 0.3), (4, 8, 0.45), (5, 10, 0.1), (6, 3, 0.4)] {
            let round = Round::random(seed, n, &shapes);
            let updates = round.contributions();
            let deltas: Vec<Vec<f64>> = updates.iter().map(flat_delta).collect();
            let outcome = aggregate(beta, &updates).unwrap();
            assert_eq!(outcome.report.warning, None);
            for (k, (got, r)) in flat(&outcome.aggregate).iter().zip(flat(&round.reference)).enumerate() {
                let column: Vec<f64> = deltas.iter().map(|d| d[k]).collect();
                let expected = (r as f64 + naive_trimmed_mean(&column, beta)) as f32;
                assert!((got - expected).abs() <= 1e-6, "n = {n}, beta = {beta}, k = {k}: {got} vs {expected}");
            }
        }
    }

    #[test]
    fn trimming_nothing_is_the_plain_mean_with_a_warning() {
        let round = Round::random(9, 4, &[("w", vec![6])]);
        let updates = round.contributions();
        let outcome = aggregate(0.2, &updates).unwrap();
        let warning = outcome.report.warning.unwrap();
        assert!(warning.contains("over 4 updates") && warning.contains("plain mean"), "{warning}");
        let mean = Round::mean_delta(&updates);
        for ((got, r), m) in flat(&outcome.aggregate).iter().zip(flat(&round.reference)).zip(mean) {
            assert!((got - (r as f64 + m) as f32).abs() <= 1e-6);
        }
    }

    #[test]
    fn a_beta_that_leaves_nothing_is_an_error() {
        let round = Round::random(9, 4, &[("w", vec![3])]);
        let expected = RobustError::NothingLeft { beta: 0.5, n: 4, cut: 2 };
        assert_eq!(aggregate(0.5, &round.contributions()), Err(expected));
        assert!(matches!(aggregate(0.9, &round.contributions()), Err(RobustError::NothingLeft { cut: 3, .. })));
        assert!(aggregate(0.49, &round.contributions()).is_ok());
    }
}
