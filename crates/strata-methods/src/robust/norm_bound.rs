//! Norm bounding: each Δ scaled down to a bound on its L2 norm, then the sample-weighted mean.
//! The bound is fixed (Sun et al., "Can You Really Backdoor Federated Learning?", 2019) or κ
//! times the median of the round's norms (FLAME, Nguyen et al., USENIX Security 2022): a
//! minority cannot raise the median past the honest norms. It limits each client's influence
//! and filters nothing.

use strata_core::defense::{Defense, NormBound};
use strata_core::tensor::TensorSet;

use crate::delta::{clip_factor, delta_norm, scaled_update};

use super::median::median_in_place;
use super::{
    Contribution, DefenseReport, Outcome, RobustError, check_contributions, linear_combination, normalize, report,
};

/// Scales each Δ_i = update_i − reference_i down to the bound (fixed M, or κ times the median of
/// this call's norms) and returns the bounded updates, reference_i + clipped Δ_i, in input order
/// (an update within the bound comes back unchanged), with the report.
///
/// Each update is bounded against its own reference: the references may differ (FedCAC), but
/// every update must hold the same tensors.
pub fn bound_norms(mode: NormBound, updates: &[Contribution]) -> Result<(Vec<TensorSet>, DefenseReport), RobustError> {
    Defense::NormBound(mode).validate()?;
    check_contributions(updates)?;
    let (report, factors) = clip_factors(mode, updates);
    let bounded = updates.iter().zip(factors).map(|(c, factor)| scaled_update(c.reference, c.update, factor)).collect();
    Ok((bounded, report))
}

/// The first reference plus the sample-weighted mean of the bounded Δs. Expects checked
/// contributions with one reference and a valid mode.
pub(super) fn aggregate(mode: NormBound, updates: &[Contribution]) -> Result<Outcome, RobustError> {
    let (report, factors) = clip_factors(mode, updates);
    let weights = normalize(updates.iter().map(|c| c.weight))?;
    let coefficients: Vec<f64> = weights.iter().zip(&factors).map(|(w, f)| w * f).collect();
    Ok(Outcome { aggregate: linear_combination(updates, &coefficients), report })
}

/// This round's bound and each Δ's factor min(1, bound / ‖Δ‖); a zero Δ keeps factor 1.
fn clip_factors(mode: NormBound, updates: &[Contribution]) -> (DefenseReport, Vec<f64>) {
    let norms: Vec<f64> = updates.iter().map(|c| delta_norm(c.reference, c.update)).collect();
    let bound = match mode {
        NormBound::Fixed(bound) => bound,
        NormBound::Median(kappa) => kappa * median_in_place(&mut norms.clone()),
    };
    let factors: Vec<f64> = norms.iter().map(|&norm| clip_factor(norm, bound)).collect();
    let mut report = report("norm-bound");
    report.bound = Some(bound);
    report.clipped = updates.iter().zip(&factors).filter(|(_, f)| **f < 1.0).map(|(c, _)| c.client).collect();
    (report, factors)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Round, flat, flat_delta};
    use super::*;

    fn norm(delta: &[f64]) -> f64 {
        delta.iter().map(|d| d * d).sum::<f64>().sqrt()
    }

    #[test]
    fn bounded_updates_are_within_the_bound_and_the_rest_unchanged() {
        let round = Round::random(3, 8, &[("body.w", vec![4, 4]), ("body.b", vec![4])]);
        let updates = round.contributions();
        let norms: Vec<f64> = updates.iter().map(|c| norm(&flat_delta(c))).collect();
        let bound = 2.4;
        let (bounded, report) = bound_norms(NormBound::Fixed(bound), &updates).unwrap();
        assert_eq!(report.bound, Some(bound));
        let expected_clipped: Vec<u32> =
            updates.iter().zip(&norms).filter(|(_, n)| **n > bound).map(|(c, _)| c.client).collect();
        assert!(!expected_clipped.is_empty() && expected_clipped.len() < updates.len());
        assert_eq!(report.clipped, expected_clipped);
        for ((c, out), original_norm) in updates.iter().zip(&bounded).zip(&norms) {
            let delta = flat_delta(&Contribution { update: out, ..*c });
            if *original_norm > bound {
                assert!(norm(&delta) <= bound * (1.0 + 1e-6), "{} > {bound}", norm(&delta));
                assert!(norm(&delta) >= bound * (1.0 - 1e-6));
            } else {
                assert_eq!(out, c.update);
            }
        }
    }

    #[test]
    fn each_update_is_bounded_against_its_own_reference() {
        let mut a = Round::new(&[("w", vec![2])], &[10.0, 10.0]);
        a.push(0, 1.0, &[3.0, 4.0]);
        let mut b = Round::new(&[("w", vec![2])], &[-1.0, 0.0]);
        b.push(1, 1.0, &[0.0, 1.0]);
        let updates = [a.contributions()[0], b.contributions()[0]];
        let (bounded, report) = bound_norms(NormBound::Fixed(2.5), &updates).unwrap();
        assert_eq!(flat(&bounded[0]), [11.5, 12.0]);
        assert_eq!(flat(&bounded[1]), [-1.0, 1.0]);
        assert_eq!(report.clipped, [0]);
    }

    #[test]
    fn the_mean_is_sample_weighted_over_the_bounded_deltas() {
        let mut round = Round::new(&[("w", vec![2])], &[1.0, -1.0]);
        round.push(7, 1.0, &[3.0, 4.0]);
        round.push(3, 3.0, &[0.0, 1.0]);
        let outcome = aggregate(NormBound::Fixed(2.5), &round.contributions()).unwrap();
        // (1.5, 2) and (0, 1), weights 1 and 3.
        assert_eq!(flat(&outcome.aggregate), [1.0 + 0.375, -1.0 + 1.25]);
        assert_eq!(outcome.report.clipped, [7]);
        // The median of the norms 5 and 1 is 3: (3, 4) becomes (1.8, 2.4).
        let outcome = aggregate(NormBound::Median(1.0), &round.contributions()).unwrap();
        assert_eq!((outcome.report.bound, outcome.report.clipped), (Some(3.0), vec![7]));
        let expected = [1.0 + 0.45, -1.0 + 0.6 + 0.75];
        assert!(flat(&outcome.aggregate).iter().zip(expected).all(|(got, e)| (got - e).abs() < 1e-6));
        // Twice the median is 6: nothing is clipped, the plain weighted mean.
        let outcome = aggregate(NormBound::Median(2.0), &round.contributions()).unwrap();
        assert_eq!((outcome.report.bound, outcome.report.clipped.len()), (Some(6.0), 0));
        assert_eq!(flat(&outcome.aggregate), [1.0 + 0.75, -1.0 + 1.75]);
    }

    #[test]
    fn one_huge_update_barely_moves_the_median_bound() {
        let mut round = Round::new(&[("w", vec![3])], &[0.5; 3]);
        for client in 0..5 {
            let scale = 1.0 + 0.01 * client as f32;
            round.push(client, 1.0, &[0.6 * scale, 0.0, 0.8 * scale]);
        }
        let honest = bound_norms(NormBound::Median(1.5), &round.contributions()).unwrap().1;
        round.push(5, 1.0, &[1e6, -1e6, 1e6]);
        let (bounded, attacked) = bound_norms(NormBound::Median(1.5), &round.contributions()).unwrap();
        let (honest_bound, attacked_bound) = (honest.bound.unwrap(), attacked.bound.unwrap());
        assert!((honest_bound - 1.5 * 1.02).abs() < 1e-6, "{honest_bound}");
        assert!((attacked_bound - honest_bound).abs() <= 1.5 * 0.005 + 1e-6, "{attacked_bound}");
        assert_eq!(attacked.clipped, [5]);
        let attacker_delta = flat_delta(&Contribution { update: &bounded[5], ..round.contributions()[5] });
        assert!((norm(&attacker_delta) - attacked_bound).abs() <= attacked_bound * 1e-6);
    }

    #[test]
    fn a_zero_delta_is_kept_and_never_divides_by_zero() {
        let mut round = Round::new(&[("w", vec![2])], &[1.0, 2.0]);
        round.push(0, 1.0, &[0.0, 0.0]);
        round.push(1, 1.0, &[0.0, 0.0]);
        round.push(2, 1.0, &[3.0, 4.0]);
        let (bounded, report) = bound_norms(NormBound::Fixed(1.0), &round.contributions()).unwrap();
        assert_eq!(flat(&bounded[0]), [1.0, 2.0]);
        assert_eq!(report.clipped, [2]);
        // The median norm is 0: the non-zero Δ is scaled to nothing, the zero ones stay.
        let (bounded, report) = bound_norms(NormBound::Median(1.0), &round.contributions()).unwrap();
        assert_eq!((report.bound, report.clipped), (Some(0.0), vec![2]));
        assert!(bounded.iter().all(|set| flat(set) == [1.0, 2.0]));
    }

    #[test]
    fn bad_bounds_and_input_are_refused() {
        let round = Round::random(1, 3, &[("w", vec![2])]);
        let refused = bound_norms(NormBound::Fixed(-1.0), &round.contributions());
        assert!(matches!(refused, Err(RobustError::InvalidDefense(e)) if e.0.contains("positive bound")));
        assert!(matches!(
            bound_norms(NormBound::Median(f64::NAN), &round.contributions()),
            Err(RobustError::InvalidDefense(_))
        ));
        assert_eq!(bound_norms(NormBound::Fixed(1.0), &[]), Err(RobustError::NoUpdates));
    }
}
