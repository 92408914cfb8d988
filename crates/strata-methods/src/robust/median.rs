//! The coordinate-wise median (Yin et al., "Byzantine-Robust Distributed Learning: Towards
//! Optimal Statistical Rates", ICML 2018; Flower's `FedMedian`): unweighted, and with an even
//! number of updates the mean of the two middle values, as numpy's `median`.

use super::{Contribution, Outcome, combine_coordinates, report};

/// The first reference plus the coordinate-wise median of the Δs. Expects checked contributions.
pub(super) fn aggregate(updates: &[Contribution]) -> Outcome {
    Outcome { aggregate: combine_coordinates(updates, median_in_place), report: report("median") }
}

/// numpy's median of `values`, which it reorders: a selection, not a sort. NaN when empty.
pub(super) fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let (below, &mut upper_middle, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return upper_middle;
    }
    // With an even n the lower middle value is the largest of those below.
    let lower_middle = below.iter().copied().max_by(f64::total_cmp).unwrap_or(upper_middle);
    (lower_middle + upper_middle) / 2.0
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Round, flat, flat_delta};
    use super::*;

    /// The median by sorting a copy.
    fn naive_median(values: &[f64]) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
    }

    #[test]
    fn small_cases_by_hand() {
        assert_eq!(median_in_place(&mut [3.0]), 3.0);
        assert_eq!(median_in_place(&mut [5.0, -1.0]), 2.0);
        assert_eq!(median_in_place(&mut [2.0, 9.0, -4.0]), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 1.0, 1.0]), 1.0);
        assert_eq!(median_in_place(&mut [7.0, 1.0, 3.0, 3.0, 10.0, 0.0]), 3.0);
        assert_eq!(median_in_place(&mut [7.0, 1.0, 2.0, 3.0, 10.0, 0.0]), 2.5);
        assert!(median_in_place(&mut []).is_nan());
    }

    #[test]
    fn matches_a_sort_per_coordinate_for_odd_and_even_counts() {
        let shapes = vec![("body.w", vec![3, 4]), ("body.b", vec![4]), ("body.s", vec![])];
        for (seed, n) in [(1, 1), (2, 2), (3, 5), (4, 6), (5, 11), (6, 12)] {
            let round = Round::random(seed, n, &shapes);
            let updates = round.contributions();
            let deltas: Vec<Vec<f64>> = updates.iter().map(flat_delta).collect();
            let expected: Vec<f32> = flat(&round.reference)
                .iter()
                .enumerate()
                .map(|(k, &r)| (r as f64 + naive_median(&deltas.iter().map(|d| d[k]).collect::<Vec<_>>())) as f32)
                .collect();
            let outcome = aggregate(&updates);
            assert_eq!(flat(&outcome.aggregate), expected, "n = {n}");
            assert_eq!(outcome.aggregate.specs(), round.reference.specs());
        }
    }
}
