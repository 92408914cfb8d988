//! Krum and Multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
//! Gradient Descent", NeurIPS 2017), pinned to the paper: squared L2 distances, each update
//! scored by the sum over its n − f − 2 nearest others. Krum keeps the best-scored update;
//! Multi-Krum averages the m best, by samples (Flower) or uniformly (the paper).
//!
//! Unlike Flower, an update is left out of its own neighbours by index, not by sorted position,
//! and ties go to the lower client id. Like Flower, at least one neighbour is used, so the rule
//! still runs when n ≤ 2f + 2, with a warning.

use strata_core::defense::Weighting;

use super::{Contribution, Outcome, RobustError, linear_combination, normalize, report};

/// Coordinates whose Δs are held at once for the distances: n × this many f64.
const DISTANCE_BLOCK: usize = 1024;

/// The first reference plus the mean Δ of the `keep` best-scored updates (default n − f,
/// clamped to [1, n]). Expects checked contributions with one reference.
pub(super) fn aggregate(
    rule: &'static str,
    malicious: u32,
    keep: Option<u32>,
    weighting: Weighting,
    updates: &[Contribution],
) -> Result<Outcome, RobustError> {
    let n = updates.len();
    let scores = krum_scores(updates, malicious);
    let mut ranking: Vec<usize> = (0..n).collect();
    ranking.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(updates[a].client.cmp(&updates[b].client)));
    let keep = keep.map_or(n.saturating_sub(malicious as usize), |m| m as usize).clamp(1, n.max(1));
    let chosen: Vec<Contribution> = ranking.iter().take(keep).map(|&i| updates[i]).collect();
    let weights = match weighting {
        Weighting::Samples => normalize(chosen.iter().map(|c| c.weight))?,
        Weighting::Uniform => vec![1.0 / chosen.len() as f64; chosen.len()],
    };
    let mut report = report(rule);
    report.selected = Some(chosen.iter().map(|c| c.client).collect());
    let least = (malicious as usize).saturating_mul(2).saturating_add(2);
    if n <= least {
        report.warning = Some(format!(
            "{rule} with f = {malicious} over {n} updates: the paper needs n > 2f + 2 = {least}; \
             each score sums the {} nearest",
            neighbour_count(n, malicious)
        ));
    }
    Ok(Outcome { aggregate: linear_combination(&chosen, &weights), report })
}

/// Each update's Krum score, in input order: the sum of its squared distances to its
/// max(1, n − f − 2) nearest other updates (fewer when there are fewer others).
/// Expects checked contributions.
pub(crate) fn krum_scores(updates: &[Contribution], malicious: u32) -> Vec<f64> {
    let n = updates.len();
    let neighbours = neighbour_count(n, malicious);
    let distances = squared_distances(updates);
    let mut others = Vec::with_capacity(n);
    (0..n)
        .map(|i| {
            if neighbours == 0 {
                return 0.0;
            }
            others.clear();
            others.extend((0..n).filter(|&j| j != i).map(|j| distances[i * n + j]));
            others.select_nth_unstable_by(neighbours - 1, f64::total_cmp);
            others[..neighbours].iter().sum()
        })
        .collect()
}

/// max(1, n − f − 2), but no more than the n − 1 others.
fn neighbour_count(n: usize, malicious: u32) -> usize {
    n.saturating_sub((malicious as usize).saturating_add(2)).max(1).min(n.saturating_sub(1))
}

/// The n × n matrix (row-major) of ‖Δ_i − Δ_j‖², from exact differences rather than the Gram
/// trick, which can go negative. Each pair is summed once, block by block of coordinates, so
/// the only buffer beyond the matrix is n blocks.
fn squared_distances(updates: &[Contribution]) -> Vec<f64> {
    let n = updates.len();
    let mut distances = vec![0.0; n * n];
    let Some(first) = updates.first() else { return distances };
    let mut block = vec![0.0; n * DISTANCE_BLOCK];
    for (t, tensor) in first.update.tensors().iter().enumerate() {
        for start in (0..tensor.numel()).step_by(DISTANCE_BLOCK) {
            let end = (start + DISTANCE_BLOCK).min(tensor.numel());
            for (row, c) in block.chunks_exact_mut(DISTANCE_BLOCK).zip(updates) {
                let update = &c.update.tensors()[t].values()[start..end];
                let reference = &c.reference.tensors()[t].values()[start..end];
                for ((delta, &x), &r) in row.iter_mut().zip(update).zip(reference) {
                    *delta = x as f64 - r as f64;
                }
            }
            let width = end - start;
            for (i, a) in block.chunks_exact(DISTANCE_BLOCK).enumerate() {
                for (j, b) in block.chunks_exact(DISTANCE_BLOCK).enumerate().skip(i + 1) {
                    let sum: f64 = a[..width].iter().zip(&b[..width]).map(|(p, q)| (p - q) * (p - q)).sum();
                    distances[i * n + j] += sum;
                }
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            distances[i * n + j] = distances[j * n + i];
        }
    }
    distances
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Round, flat, flat_delta};
    use super::*;

    /// Five honest points around 0 and one far outlier, over two one-value tensors, sent the
    /// reference (10, −10). Clients in input order: 7 at (1, 0), 2 at (0, 1), 9 at (0, 0), 4 at
    /// (−1, 0), 5 at (0, −1), 1 at (100, 100); weights 3, 2, 1, 5, 1, 1.
    fn five_honest_one_outlier() -> Round {
        let mut round = Round::new(&[("body.x", vec![1]), ("body.y", vec![1])], &[10.0, -10.0]);
        let points = [(7, 3.0, [1.0, 0.0]), (2, 2.0, [0.0, 1.0]), (9, 1.0, [0.0, 0.0])];
        let more = [(4, 5.0, [-1.0, 0.0]), (5, 1.0, [0.0, -1.0]), (1, 1.0, [100.0, 100.0])];
        for (client, weight, delta) in points.into_iter().chain(more) {
            round.push(client, weight, &delta);
        }
        round
    }

    #[test]
    fn scores_sum_the_three_nearest_squared_distances() {
        let round = five_honest_one_outlier();
        // Centre: 1 + 1 + 1. A ring point: 1 (centre) + 2 + 2 (its two neighbours on the ring).
        // Outlier: 99² + 100² twice (to (1, 0) and (0, 1)), then 100² + 100² (to the centre).
        let outlier = 2.0 * (99.0f64.powi(2) + 100.0f64.powi(2)) + 2.0 * 100.0f64.powi(2);
        assert_eq!(krum_scores(&round.contributions(), 1), [5.0, 5.0, 3.0, 5.0, 5.0, outlier]);
    }

    #[test]
    fn krum_picks_the_honest_centre() {
        let round = five_honest_one_outlier();
        let outcome = aggregate("krum", 1, Some(1), Weighting::Uniform, &round.contributions()).unwrap();
        assert_eq!(outcome.report.selected, Some(vec![9]));
        assert_eq!(outcome.report.warning, None);
        assert_eq!(flat(&outcome.aggregate), [10.0, -10.0]);
    }

    #[test]
    fn multi_krum_keeps_the_best_scores_ties_to_the_lower_id() {
        let round = five_honest_one_outlier();
        let updates = round.contributions();
        // Clients 9, 2 and 4: Δ (0, 0), (0, 1), (−1, 0) with weights 1, 2, 5.
        let uniform = aggregate("multi-krum", 1, Some(3), Weighting::Uniform, &updates).unwrap();
        assert_eq!(uniform.report.selected, Some(vec![9, 2, 4]));
        assert_eq!(flat(&uniform.aggregate), [(10.0 - 1.0 / 3.0) as f32, (-10.0 + 1.0 / 3.0) as f32]);
        let weighted = aggregate("multi-krum", 1, Some(3), Weighting::Samples, &updates).unwrap();
        assert_eq!(flat(&weighted.aggregate), [10.0 - 5.0 / 8.0, -10.0 + 2.0 / 8.0]);
        // Default m = n − f = 5 leaves the outlier out; m is clamped to [1, n].
        let default = aggregate("multi-krum", 1, None, Weighting::Uniform, &updates).unwrap();
        assert_eq!(default.report.selected, Some(vec![9, 2, 4, 5, 7]));
        assert_eq!(flat(&default.aggregate), [10.0, -10.0]);
        let all = aggregate("multi-krum", 1, Some(50), Weighting::Uniform, &updates).unwrap();
        assert_eq!(all.report.selected, Some(vec![9, 2, 4, 5, 7, 1]));
    }

    #[test]
    fn too_few_updates_for_f_still_run_with_a_warning() {
        let round = five_honest_one_outlier();
        let updates = &round.contributions()[..4];
        let outcome = aggregate("krum", 1, Some(1), Weighting::Uniform, updates).unwrap();
        let warning = outcome.report.warning.unwrap();
        assert!(warning.contains("n > 2f + 2 = 4") && warning.contains("the 1 nearest"), "{warning}");
        // One neighbour each: the centre's nearest is at 1, the ring points' too.
        assert_eq!(krum_scores(updates, 1), [1.0, 1.0, 1.0, 1.0]);
        assert_eq!(outcome.report.selected, Some(vec![2]));
        assert_eq!(krum_scores(&updates[..1], 0), [0.0]);
        assert_eq!(krum_scores(&[], 0), Vec::<f64>::new());
    }

    #[test]
    fn distances_span_blocks_and_tensors() {
        let shapes = vec![("body.w", vec![3, DISTANCE_BLOCK - 5]), ("body.b", vec![7])];
        let round = Round::random(5, 5, &shapes);
        let updates = round.contributions();
        let deltas: Vec<Vec<f64>> = updates.iter().map(flat_delta).collect();
        let distances = squared_distances(&updates);
        for i in 0..5 {
            for j in 0..5 {
                let naive: f64 = deltas[i].iter().zip(&deltas[j]).map(|(a, b)| (a - b).powi(2)).sum();
                assert!((distances[i * 5 + j] - naive).abs() <= 1e-9 * naive.max(1.0), "{i}, {j}");
            }
        }
    }
}
