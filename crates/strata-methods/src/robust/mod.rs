//! Robust aggregation: combining a round's updates so that a minority of bad clients cannot
//! steer the result. Norm bounding, the coordinate-wise median and trimmed mean, Krum and
//! Multi-Krum, as pinned in `shared/methods/robust-aggregation.md`.
//!
//! Every rule works on the updates relative to what each client was sent,
//! Δ_i = update_i − reference_i, over the shared tensors only. Δ is computed in f64 on the fly,
//! sums are f64, results are f32. Ties go to the lower client id, and nothing is random.
//! NaN and infinity are refused: one would poison a coordinate's median and every Krum distance.
//!
//! [`aggregate`] combines updates that were all sent one reference (a global model);
//! [`bound_norms`] bounds each update against its own reference (FedCAC's per-client models).

mod krum;
mod median;
mod norm_bound;
#[cfg(test)]
mod test_support;
mod trimmed_mean;

use strata_core::config_error::InvalidValue;
use strata_core::defense::{Defense, Weighting};
use strata_core::tensor::TensorSet;

pub use norm_bound::bound_norms;

/// One client's update, as a rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct Contribution<'a> {
    /// The client's index: ties go to the lower one, and reports name clients by it.
    pub client: u32,
    /// What the client was sent (the shared part).
    pub reference: &'a TensorSet,
    /// What the client returned: the reference's tensors, in the same order.
    pub update: &'a TensorSet,
    /// The client's aggregation weight (its training samples, already capped by the caller).
    pub weight: f64,
}

/// What [`aggregate`] made of a round.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The shared reference plus the combined Δ.
    pub aggregate: TensorSet,
    pub report: DefenseReport,
}

/// What a rule did this round: one type with the run's records, which carry it.
pub use strata_core::records::DefenseReport;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RobustError {
    #[error("no updates to aggregate")]
    NoUpdates,
    #[error("the aggregation weights sum to zero")]
    ZeroWeight,
    #[error("client {client} has weight {weight}: a weight must be finite and >= 0")]
    BadWeight { client: u32, weight: f64 },
    #[error("client {client}'s {part} holds NaN or infinity in tensor `{tensor}`")]
    NonFinite { client: u32, part: &'static str, tensor: String },
    /// Updates that do not fit together: different tensors, references or a repeated client.
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    InvalidDefense(#[from] InvalidValue),
    #[error(
        "trimmed mean with beta {beta} cuts {cut} of {n} values from each end, so nothing remains: beta is too large"
    )]
    NothingLeft { beta: f64, n: usize, cut: usize },
}

/// Combines the round's updates with `defense`: the reference plus the combined Δ.
///
/// Every contribution must have been sent the same reference (the same set, or an equal
/// one: checked by pointer, then by value). [`Defense::None`] is the sample-weighted mean
/// of the Δs, so a caller may send every rule through here.
pub fn aggregate(defense: &Defense, updates: &[Contribution]) -> Result<Outcome, RobustError> {
    defense.validate()?;
    check_shared_reference(updates)?;
    match *defense {
        Defense::None => {
            let weights = normalize(updates.iter().map(|c| c.weight))?;
            Ok(Outcome { aggregate: linear_combination(updates, &weights), report: report("none") })
        }
        Defense::NormBound(mode) => norm_bound::aggregate(mode, updates),
        Defense::Median => Ok(median::aggregate(updates)),
        Defense::TrimmedMean { beta } => trimmed_mean::aggregate(beta, updates),
        // One update kept: its weight does not matter, even when zero.
        Defense::Krum { malicious } => krum::aggregate("krum", malicious, Some(1), Weighting::Uniform, updates),
        Defense::MultiKrum { malicious, keep, weighting } => {
            krum::aggregate("multi-krum", malicious, keep, weighting, updates)
        }
    }
}

/// A report of `rule` that has nothing to say yet.
fn report(rule: &str) -> DefenseReport {
    DefenseReport { rule: rule.to_string(), ..DefenseReport::default() }
}

/// [`check_contributions`], and every reference equal to the first.
fn check_shared_reference(updates: &[Contribution]) -> Result<(), RobustError> {
    check_contributions(updates)?;
    let Some(first) = updates.first() else { return Err(RobustError::NoUpdates) };
    for c in updates {
        if !std::ptr::eq(c.reference, first.reference) && c.reference != first.reference {
            return Err(RobustError::Mismatch(format!(
                "client {} was sent another reference than client {}: aggregation needs one shared reference",
                c.client, first.client
            )));
        }
    }
    Ok(())
}

/// Refuses what no rule can use: no updates, a repeated client, an update whose tensors are
/// not its reference's, a non-finite value or a bad weight.
fn check_contributions(updates: &[Contribution]) -> Result<(), RobustError> {
    if updates.is_empty() {
        return Err(RobustError::NoUpdates);
    }
    let mut clients: Vec<u32> = updates.iter().map(|c| c.client).collect();
    clients.sort_unstable();
    if let Some(pair) = clients.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(RobustError::Mismatch(format!("client {} appears twice in one aggregation", pair[0])));
    }
    let mut previous_reference: Option<&TensorSet> = None;
    for c in updates {
        if !(c.weight.is_finite() && c.weight >= 0.0) {
            return Err(RobustError::BadWeight { client: c.client, weight: c.weight });
        }
        check_same_tensors(c)?;
        check_finite(c.client, "update", c.update)?;
        // A shared reference is checked once.
        if previous_reference.is_none_or(|p| !std::ptr::eq(p, c.reference)) {
            check_finite(c.client, "reference", c.reference)?;
        }
        previous_reference = Some(c.reference);
    }
    let Some(first) = updates.first() else { return Err(RobustError::NoUpdates) };
    match updates.iter().find(|c| c.reference.len() != first.reference.len()) {
        Some(c) => Err(RobustError::Mismatch(format!(
            "client {} has {} tensors and client {} has {}",
            c.client,
            c.reference.len(),
            first.client,
            first.reference.len()
        ))),
        None => updates.iter().try_for_each(|c| check_same_specs(c.client, c.reference, first.reference)),
    }
}

/// The update holds its reference's tensors: names and shapes, in order.
fn check_same_tensors(c: &Contribution) -> Result<(), RobustError> {
    if c.update.len() != c.reference.len() {
        return Err(RobustError::Mismatch(format!(
            "client {} returned {} tensors for the {} it was sent",
            c.client,
            c.update.len(),
            c.reference.len()
        )));
    }
    check_same_specs(c.client, c.update, c.reference)
}

/// `set` has `expected`'s names and shapes, in order (their lengths are equal).
fn check_same_specs(client: u32, set: &TensorSet, expected: &TensorSet) -> Result<(), RobustError> {
    for (got, want) in set.tensors().iter().zip(expected.tensors()) {
        if got.name() != want.name() || got.shape() != want.shape() {
            return Err(RobustError::Mismatch(format!(
                "client {client}: tensor `{}` {:?} where `{}` {:?} was expected",
                got.name(),
                got.shape(),
                want.name(),
                want.shape()
            )));
        }
    }
    Ok(())
}

fn check_finite(client: u32, part: &'static str, set: &TensorSet) -> Result<(), RobustError> {
    match set.tensors().iter().find(|t| t.first_non_finite().is_some()) {
        Some(t) => Err(RobustError::NonFinite { client, part, tensor: t.name().to_owned() }),
        None => Ok(()),
    }
}

/// Each weight over their sum.
fn normalize(weights: impl Iterator<Item = f64>) -> Result<Vec<f64>, RobustError> {
    let weights: Vec<f64> = weights.collect();
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(RobustError::ZeroWeight);
    }
    Ok(weights.into_iter().map(|w| w / total).collect())
}

/// The first reference plus Σ_i coefficient_i · Δ_i.
fn linear_combination(updates: &[Contribution], coefficients: &[f64]) -> TensorSet {
    combine_coordinates(updates, |deltas| deltas.iter().zip(coefficients).map(|(d, c)| d * c).sum())
}

/// The first reference plus, at each coordinate, `combine` of the updates' Δs there (in input
/// order, in a scratch buffer that `combine` may reorder). The only buffer is n values long:
/// the Δs are never held whole. Expects checked contributions.
fn combine_coordinates(updates: &[Contribution], mut combine: impl FnMut(&mut [f64]) -> f64) -> TensorSet {
    let Some(first) = updates.first() else { return TensorSet::default() };
    let mut out = first.reference.clone();
    let mut deltas = vec![0.0; updates.len()];
    for (t, (_, out_values)) in out.values_mut().enumerate() {
        let columns: Vec<(&[f32], &[f32])> =
            updates.iter().map(|c| (c.update.tensors()[t].values(), c.reference.tensors()[t].values())).collect();
        for (k, out_value) in out_values.iter_mut().enumerate() {
            for (delta, (update, reference)) in deltas.iter_mut().zip(&columns) {
                *delta = update[k] as f64 - reference[k] as f64;
            }
            *out_value = (*out_value as f64 + combine(&mut deltas)) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::test_support::{Round, flat};
    use super::*;
    use strata_core::defense::NormBound;

    fn shapes() -> Vec<(&'static str, Vec<usize>)> {
        vec![("a", vec![2]), ("b", vec![1])]
    }

    #[test]
    fn none_is_the_sample_weighted_mean_of_the_deltas() {
        let mut round = Round::new(&shapes(), &[1.0, 2.0, 3.0]);
        round.push(4, 1.0, &[3.0, 0.0, -1.0]);
        round.push(2, 3.0, &[-1.0, 4.0, 1.0]);
        let outcome = aggregate(&Defense::None, &round.contributions()).unwrap();
        assert_eq!(flat(&outcome.aggregate), [1.0, 5.0, 3.5]);
        assert_eq!(outcome.report, report("none"));
    }

    #[test]
    fn a_scaled_attacker_moves_the_mean_but_not_the_robust_rules() {
        let round = Round::honest_with_scaled_attacker(9, 100.0);
        let updates = round.contributions();
        let honest = Round::mean_delta(&updates[..9]);
        let distance = |defense: Defense| {
            let outcome = aggregate(&defense, &updates).unwrap();
            let delta: Vec<f64> =
                flat(&outcome.aggregate).iter().zip(flat(&round.reference)).map(|(x, r)| (x - r) as f64).collect();
            delta.iter().zip(&honest).map(|(d, h)| (d - h).abs()).fold(0.0, f64::max)
        };
        assert!(distance(Defense::None) > 5.0);
        for defense in [
            Defense::Median,
            Defense::TrimmedMean { beta: 0.2 },
            Defense::Krum { malicious: 1 },
            Defense::MultiKrum { malicious: 1, keep: None, weighting: Weighting::Samples },
            Defense::NormBound(NormBound::Median(1.0)),
        ] {
            assert!(distance(defense) < 0.15, "{defense}: {}", distance(defense));
        }
    }

    #[test]
    fn input_order_does_not_change_the_choice() {
        let round = Round::random(11, 7, &[("w", vec![9])]);
        let mut updates = round.contributions();
        let mut tied = Round::new(&[("w", vec![1])], &[0.0]);
        for client in [5, 3, 8, 1] {
            tied.push(client, 1.0, &[1.0]);
        }
        let mut tied_updates = tied.contributions();
        let run = |updates: &[Contribution], defense: &str| aggregate(&defense.parse().unwrap(), updates).unwrap();
        let before: Vec<Outcome> = ["median", "krum:1", "multi-krum:1:3"].iter().map(|d| run(&updates, d)).collect();
        let tied_before = run(&tied_updates, "multi-krum:0:2").report.selected;
        assert_eq!(tied_before, Some(vec![1, 3]));
        updates.reverse();
        tied_updates.reverse();
        let after: Vec<Outcome> = ["median", "krum:1", "multi-krum:1:3"].iter().map(|d| run(&updates, d)).collect();
        assert_eq!(before[0], after[0]);
        assert_eq!(before[1], after[1]);
        assert_eq!(before[2].report, after[2].report);
        assert_eq!(run(&tied_updates, "multi-krum:0:2").report.selected, tied_before);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut round = Round::new(&shapes(), &[0.0; 3]);
        round.push(1, 1.0, &[1.0, 2.0, 3.0]);
        round.push(2, 1.0, &[1.0, 2.0, 3.0]);
        let median = |updates: &[Contribution]| aggregate(&Defense::Median, updates).map(|o| o.report.rule);
        assert_eq!(median(&round.contributions()).as_deref(), Ok("median"));
        assert_eq!(median(&[]), Err(RobustError::NoUpdates));

        let mut repeated = round.contributions();
        repeated[1].client = 1;
        assert!(matches!(median(&repeated), Err(RobustError::Mismatch(m)) if m.contains("client 1 appears twice")));

        let other_reference = Round::new(&shapes(), &[0.0, 0.0, 1.0]).reference;
        let mut moved = round.contributions();
        moved[1].reference = &other_reference;
        assert!(matches!(median(&moved), Err(RobustError::Mismatch(m)) if m.contains("another reference")));
        let equal_reference = round.reference.clone();
        let mut copied = round.contributions();
        copied[1].reference = &equal_reference;
        assert_eq!(median(&copied).as_deref(), Ok("median"));

        let renamed = Round::new(&[("a", vec![2]), ("c", vec![1])], &[0.0; 3]).reference;
        let mut wrong_names = round.contributions();
        wrong_names[0].update = &renamed;
        assert!(matches!(median(&wrong_names), Err(RobustError::Mismatch(m)) if m.contains("`c` [1]")));

        let with_nan = Round::new(&shapes(), &[0.0, f32::NAN, 0.0]).reference;
        let mut poisoned = round.contributions();
        poisoned[1].update = &with_nan;
        let expected = RobustError::NonFinite { client: 2, part: "update", tensor: "a".into() };
        assert_eq!(median(&poisoned), Err(expected));

        let mut negative = round.contributions();
        negative[0].weight = -1.0;
        assert_eq!(median(&negative), Err(RobustError::BadWeight { client: 1, weight: -1.0 }));

        let mut weightless = round.contributions();
        weightless.iter_mut().for_each(|c| c.weight = 0.0);
        assert_eq!(aggregate(&Defense::None, &weightless), Err(RobustError::ZeroWeight));
        assert_eq!(
            aggregate(&Defense::Krum { malicious: 0 }, &weightless).map(|o| o.report.rule),
            Ok("krum".to_string())
        );

        let too_much_trim = aggregate(&Defense::TrimmedMean { beta: 0.5 }, &round.contributions());
        assert!(matches!(too_much_trim, Err(RobustError::InvalidDefense(e)) if e.0.contains("0 < beta < 0.5")));
    }
}
