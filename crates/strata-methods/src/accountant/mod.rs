//! A differential-privacy accountant: the Rényi DP (RDP) of the sampled Gaussian mechanism,
//! composed over a run's steps and turned into an (ε, δ) guarantee. Pure Rust, as pinned in
//! `shared/methods/differential-privacy.md` (c).
//!
//! A step releases a clipped sum plus Gaussian noise of z times its L2 sensitivity, computed on
//! a random sample: Poisson sampling with rate q (add-or-remove-one neighbours) or a fixed-size
//! sample without replacement (replace-one neighbours). [`RdpAccountant`] adds each step's RDP
//! curve over a list of orders α (composition is addition, heterogeneous steps included) and
//! converts the total with the improved bound of Balle et al. 2020. The numbers follow Google's
//! dp_accounting 0.6.0 (`dp_accounting.rdp.RdpAccountant`) to its details, and are checked
//! against it on a grid: `bench/results/2026-12-02-dp-accountant/`.
//!
//! # Layout
//! - `poisson`: one step's RDP under Poisson sampling (Mironov, Talwar and Zhang 2019).
//! - `without_replacement`: one step's RDP for a fixed-size sample (Wang, Balle and
//!   Kasiviswanathan 2019, Thm 27).
//! - `conversion`: RDP curve → (ε, δ), and ε → δ.
//! - `calibrate`: the noise multiplier that reaches a target ε ([`noise_multiplier_for`]).
//! - `log_space`: log-sum arithmetic, ln |C(n, k)| and a tail-stable ln erfc.
//!
//! Not here: clipping and adding the noise (that is `strata_methods::dp`), the tighter PRV and
//! PLD accountants (RDP overstates ε by about 7–13 % against them, see the spec's table), and
//! deciding which guarantee a run reports: user-level (clients sampled per round) and
//! example-level (DP-SGD inside a client) ε are different guarantees and are never added.

mod calibrate;
mod conversion;
mod log_space;
mod poisson;
#[cfg(test)]
mod reference_grid;
mod without_replacement;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use calibrate::{CALIBRATION_RELATIVE_TOLERANCE, MAX_NOISE_MULTIPLIER, noise_multiplier_for};
pub use poisson::MAX_FRACTIONAL_TERMS;

/// dp_accounting's `DEFAULT_RDP_ORDERS`: 1.1, 1.2, …, 10.9, then 11, …, 63, then 128, 256,
/// 512 and 1024 (156 orders). The large ones matter for small ε; Opacus' list stops at 63 and
/// lacks 11.
pub const DEFAULT_ORDERS: [f64; 156] = default_orders();

/// Which datasets count as neighbours: the ε of a run means nothing without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Neighbouring {
    /// One record added or removed: what Poisson sampling is accounted under.
    AddOrRemoveOne,
    /// One record replaced by another, the dataset size being public: what sampling without
    /// replacement is accounted under. A sum of updates clipped to C then has sensitivity 2C.
    ReplaceOne,
}

impl fmt::Display for Neighbouring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Neighbouring::AddOrRemoveOne => "add-or-remove-one",
            Neighbouring::ReplaceOne => "replace-one",
        })
    }
}

/// `steps` releases of one sampled Gaussian mechanism: what the accountant composes and keeps.
/// `noise_multiplier` is the noise std over the L2 sensitivity under the event's neighbouring
/// relation; 0 steps compose nothing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sampling", rename_all = "kebab-case")]
pub enum Event {
    /// Each record joins each step independently with probability `sampling_rate` (q);
    /// add-or-remove-one, so z is the noise std over the clip C.
    Poisson { sampling_rate: f64, noise_multiplier: f64, steps: u64 },
    /// Each step uses `sample_size` (m) records drawn uniformly without replacement from
    /// `population` (N), q = m/N; replace-one, so σ is the noise std over 2C (σ = z/2).
    WithoutReplacement { population: u64, sample_size: u64, noise_multiplier: f64, steps: u64 },
}

/// An (ε, δ)-DP guarantee and the RDP order whose bound gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpGuarantee {
    /// +∞ when no order gives a finite bound (no noise, or nothing converged).
    pub epsilon: f64,
    pub delta: f64,
    pub order: f64,
}

/// The privacy spent so far: the events composed, and the sum of their RDP curves.
///
/// Saved with serde (the server keeps it in its resume state) as the events plus the curve,
/// +∞ written as `null`; loading checks the structure, not that the curve is the events' sum.
/// serde_json reads a float back exactly only with its `float_roundtrip` feature; without it
/// a value may come back one ulp off (1e-16 relative: no ε changes visibly).
/// Rebuilding from the events alone is `new` plus one `compose` per event (milliseconds each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SavedAccountant", into = "SavedAccountant")]
pub struct RdpAccountant {
    neighbouring: Neighbouring,
    orders: Vec<f64>,
    /// ε_RDP(α) at each order, summed over every composed step; +∞ where one step was.
    rdp: Vec<f64>,
    /// What was composed, in order; consecutive events of the same mechanism are merged.
    events: Vec<Event>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AccountantError {
    #[error("sampling rate q = {0} must be in [0, 1]")]
    SamplingRate(f64),
    #[error("noise multiplier z = {0} must be finite and >= 0")]
    NoiseMultiplier(f64),
    #[error(
        "a sample of {sample_size} from a population of {population}: the population must be at least 1 and the sample at most the population"
    )]
    SampleSize { population: u64, sample_size: u64 },
    #[error("delta = {0} must be in (0, 1)")]
    Delta(f64),
    #[error("epsilon = {0} must be finite and >= 0")]
    Epsilon(f64),
    #[error("target epsilon = {0} must be finite and > 0")]
    TargetEpsilon(f64),
    #[error("calibrating a noise multiplier for 0 steps: nothing is released, any noise gives epsilon 0")]
    NoSteps,
    #[error(
        "{sampling} sampling is accounted with {needs} neighbours, and this accountant counts {has} neighbours: use one accountant per neighbouring relation"
    )]
    Neighbouring { sampling: &'static str, needs: Neighbouring, has: Neighbouring },
    #[error("an RDP accountant needs at least one order")]
    NoOrders,
    #[error("RDP order {0} must be finite and > 1")]
    Order(f64),
    #[error("{0} steps of this event are already composed: more would overflow the step count")]
    TooManySteps(u64),
    #[error("a saved accountant does not hold together: {0}")]
    Inconsistent(String),
    #[error(
        "target epsilon = {target_epsilon} is out of reach: even noise multiplier {noise_multiplier} gives epsilon = {epsilon}"
    )]
    Unreachable { target_epsilon: f64, noise_multiplier: f64, epsilon: f64 },
}

impl Event {
    pub fn steps(&self) -> u64 {
        match *self {
            Event::Poisson { steps, .. } | Event::WithoutReplacement { steps, .. } => steps,
        }
    }

    /// The relation this event's RDP bound is proved for.
    pub fn neighbouring(&self) -> Neighbouring {
        match self {
            Event::Poisson { .. } => Neighbouring::AddOrRemoveOne,
            Event::WithoutReplacement { .. } => Neighbouring::ReplaceOne,
        }
    }

    /// q ∈ [0, 1], z finite and ≥ 0, 1 ≤ N and m ≤ N. Steps are a u64: any count is valid, and
    /// 0 composes nothing.
    pub fn validate(&self) -> Result<(), AccountantError> {
        let noise_multiplier = match *self {
            Event::Poisson { sampling_rate, noise_multiplier, .. } => {
                if !(0.0..=1.0).contains(&sampling_rate) {
                    return Err(AccountantError::SamplingRate(sampling_rate));
                }
                noise_multiplier
            }
            Event::WithoutReplacement { population, sample_size, noise_multiplier, .. } => {
                if population == 0 || sample_size > population {
                    return Err(AccountantError::SampleSize { population, sample_size });
                }
                noise_multiplier
            }
        };
        if !(noise_multiplier.is_finite() && noise_multiplier >= 0.0) {
            return Err(AccountantError::NoiseMultiplier(noise_multiplier));
        }
        Ok(())
    }

    /// One step's ε_RDP at each order (+∞ allowed, NaN never). Expects a valid event.
    fn step_rdp(&self, orders: &[f64]) -> Vec<f64> {
        let curve: Vec<f64> = match *self {
            Event::Poisson { sampling_rate, noise_multiplier, .. } => {
                orders.iter().map(|&order| poisson::rdp(sampling_rate, noise_multiplier, order)).collect()
            }
            Event::WithoutReplacement { population, sample_size, noise_multiplier, .. } => {
                // dp_accounting's q: sample_size / dataset_size.
                let q = sample_size as f64 / population as f64;
                let mut log_a = BTreeMap::new();
                let mut memoized = |alpha: u32| {
                    *log_a
                        .entry(alpha)
                        .or_insert_with(|| without_replacement::log_a_integer(q, noise_multiplier, alpha))
                };
                orders
                    .iter()
                    .map(|&order| without_replacement::rdp(q, noise_multiplier, order, &mut memoized))
                    .collect()
            }
        };
        // A NaN could only come from an extreme σ (σ² underflowing); no bound is the safe reading.
        curve.into_iter().map(|r| if r.is_nan() { f64::INFINITY } else { r }).collect()
    }

    /// The same mechanism (everything but the step count).
    fn same_mechanism(&self, other: &Event) -> bool {
        self.with_steps(0) == other.with_steps(0)
    }

    fn with_steps(self, steps: u64) -> Event {
        match self {
            Event::Poisson { sampling_rate, noise_multiplier, .. } => {
                Event::Poisson { sampling_rate, noise_multiplier, steps }
            }
            Event::WithoutReplacement { population, sample_size, noise_multiplier, .. } => {
                Event::WithoutReplacement { population, sample_size, noise_multiplier, steps }
            }
        }
    }

    fn sampling_name(&self) -> &'static str {
        match self {
            Event::Poisson { .. } => "Poisson",
            Event::WithoutReplacement { .. } => "without-replacement",
        }
    }
}

impl RdpAccountant {
    /// Nothing spent yet, over [`DEFAULT_ORDERS`].
    pub fn new(neighbouring: Neighbouring) -> Self {
        RdpAccountant {
            neighbouring,
            orders: DEFAULT_ORDERS.to_vec(),
            rdp: vec![0.0; DEFAULT_ORDERS.len()],
            events: Vec::new(),
        }
    }

    /// Nothing spent yet, over the given orders (each finite and > 1, at least one).
    pub fn with_orders(neighbouring: Neighbouring, orders: Vec<f64>) -> Result<Self, AccountantError> {
        check_orders(&orders)?;
        let rdp = vec![0.0; orders.len()];
        Ok(RdpAccountant { neighbouring, orders, rdp, events: Vec::new() })
    }

    /// Adds `event`'s steps. Refuses an invalid event, or one proved for the other
    /// neighbouring relation, and then changes nothing.
    pub fn compose(&mut self, event: Event) -> Result<(), AccountantError> {
        event.validate()?;
        if event.neighbouring() != self.neighbouring {
            return Err(AccountantError::Neighbouring {
                sampling: event.sampling_name(),
                needs: event.neighbouring(),
                has: self.neighbouring,
            });
        }
        let steps = event.steps();
        if steps == 0 {
            return Ok(());
        }
        let merged = match self.events.last() {
            Some(last) if last.same_mechanism(&event) => {
                let total = last.steps().checked_add(steps).ok_or(AccountantError::TooManySteps(last.steps()))?;
                Some(last.with_steps(total))
            }
            _ => None,
        };
        let count = steps as f64;
        for (total, step) in self.rdp.iter_mut().zip(event.step_rdp(&self.orders)) {
            *total += count * step;
        }
        match (merged, self.events.last_mut()) {
            (Some(merged), Some(last)) => *last = merged,
            _ => self.events.push(event),
        }
        Ok(())
    }

    /// `steps` Poisson-sampled steps: rate q, noise multiplier z (noise std over the L2
    /// sensitivity of one record's contribution). Needs [`Neighbouring::AddOrRemoveOne`].
    pub fn compose_poisson(
        &mut self,
        sampling_rate: f64,
        noise_multiplier: f64,
        steps: u64,
    ) -> Result<(), AccountantError> {
        self.compose(Event::Poisson { sampling_rate, noise_multiplier, steps })
    }

    /// `steps` steps on `sample_size` of `population` records drawn without replacement, with
    /// noise multiplier σ as dp_accounting takes it: noise std over the replace-one sensitivity
    /// (2C for a sum clipped to C, so σ = z/2). Needs [`Neighbouring::ReplaceOne`].
    pub fn compose_sampled_without_replacement(
        &mut self,
        population: u64,
        sample_size: u64,
        noise_multiplier: f64,
        steps: u64,
    ) -> Result<(), AccountantError> {
        self.compose(Event::WithoutReplacement { population, sample_size, noise_multiplier, steps })
    }

    /// The smallest ε such that everything composed so far is (ε, δ)-DP, with its order.
    pub fn epsilon(&self, delta: f64) -> Result<DpGuarantee, AccountantError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(AccountantError::Delta(delta));
        }
        let (epsilon, order) = conversion::epsilon(&self.orders, &self.rdp, delta);
        Ok(DpGuarantee { epsilon, delta, order })
    }

    /// The smallest δ such that everything composed so far is (ε, δ)-DP, with its order
    /// (δ = 1 when no order gives a bound).
    pub fn delta(&self, epsilon: f64) -> Result<DpGuarantee, AccountantError> {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(AccountantError::Epsilon(epsilon));
        }
        let (delta, order) = conversion::delta(&self.orders, &self.rdp, epsilon);
        Ok(DpGuarantee { epsilon, delta, order })
    }

    pub fn neighbouring(&self) -> Neighbouring {
        self.neighbouring
    }

    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The composed ε_RDP at each of [`Self::orders`].
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

const fn default_orders() -> [f64; 156] {
    let mut orders = [0.0; 156];
    let mut k = 0;
    // dp_accounting writes them 1 + x / 10.0: the same floats.
    while k < 99 {
        orders[k] = 1.0 + (k + 1) as f64 / 10.0;
        k += 1;
    }
    while k < 152 {
        orders[k] = (k - 99 + 11) as f64;
        k += 1;
    }
    orders[152] = 128.0;
    orders[153] = 256.0;
    orders[154] = 512.0;
    orders[155] = 1024.0;
    orders
}

fn check_orders(orders: &[f64]) -> Result<(), AccountantError> {
    if orders.is_empty() {
        return Err(AccountantError::NoOrders);
    }
    match orders.iter().find(|order| !(order.is_finite() && **order > 1.0)) {
        Some(&order) => Err(AccountantError::Order(order)),
        None => Ok(()),
    }
}

/// [`RdpAccountant`] as saved: JSON has no infinity, so +∞ in the curve is `None` (`null`).
#[derive(Serialize, Deserialize)]
struct SavedAccountant {
    neighbouring: Neighbouring,
    orders: Vec<f64>,
    rdp: Vec<Option<f64>>,
    events: Vec<Event>,
}

impl From<RdpAccountant> for SavedAccountant {
    fn from(accountant: RdpAccountant) -> Self {
        let rdp = accountant.rdp.iter().map(|&r| r.is_finite().then_some(r)).collect();
        SavedAccountant {
            neighbouring: accountant.neighbouring,
            orders: accountant.orders,
            rdp,
            events: accountant.events,
        }
    }
}

impl TryFrom<SavedAccountant> for RdpAccountant {
    type Error = AccountantError;

    fn try_from(saved: SavedAccountant) -> Result<Self, AccountantError> {
        check_orders(&saved.orders)?;
        if saved.rdp.len() != saved.orders.len() {
            return Err(AccountantError::Inconsistent(format!(
                "{} RDP values for {} orders",
                saved.rdp.len(),
                saved.orders.len()
            )));
        }
        let rdp: Vec<f64> = saved.rdp.iter().map(|r| r.unwrap_or(f64::INFINITY)).collect();
        if let Some(r) = rdp.iter().find(|r| !(r.is_finite() || **r == f64::INFINITY)) {
            return Err(AccountantError::Inconsistent(format!("RDP value {r}")));
        }
        for event in &saved.events {
            event.validate()?;
            if event.neighbouring() != saved.neighbouring {
                return Err(AccountantError::Inconsistent(format!(
                    "a {} event in a {} accountant",
                    event.neighbouring(),
                    saved.neighbouring
                )));
            }
        }
        Ok(RdpAccountant { neighbouring: saved.neighbouring, orders: saved.orders, rdp, events: saved.events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, relative: f64) -> bool {
        (got - want).abs() <= relative * want.abs()
    }

    fn poisson_epsilon(q: f64, z: f64, steps: u64, delta: f64) -> DpGuarantee {
        let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        accountant.compose_poisson(q, z, steps).unwrap();
        accountant.epsilon(delta).unwrap()
    }

    #[test]
    fn default_orders_are_dp_accountings() {
        assert_eq!(DEFAULT_ORDERS.len(), 156);
        assert_eq!(&DEFAULT_ORDERS[..3], &[1.1, 1.2, 1.3]);
        assert_eq!(DEFAULT_ORDERS[98], 10.9);
        assert_eq!(&DEFAULT_ORDERS[99..101], &[11.0, 12.0]);
        assert_eq!(&DEFAULT_ORDERS[150..], &[62.0, 63.0, 128.0, 256.0, 512.0, 1024.0]);
        assert!(DEFAULT_ORDERS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn full_batches_compose_to_the_gaussian_closed_form() {
        // Config F: q = 1, σ = 5, T = 100: ε_RDP(α) = Tα/(2σ²) = 2α.
        let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        accountant.compose_poisson(1.0, 5.0, 100).unwrap();
        for (order, r) in accountant.orders().iter().zip(accountant.rdp()) {
            assert!(close(*r, 2.0 * order, 1e-15), "{order}: {r}");
        }
        let spent = accountant.epsilon(1e-5).unwrap();
        assert!(close(spent.epsilon, 10.7255, 1e-5) && spent.order == 3.3, "{spent:?}");
    }

    /// The spec's table, configs A–I: dp_accounting 0.6.0's RdpAccountant, full precision.
    #[test]
    fn the_spec_configs_match_dp_accounting() {
        let configs = [
            ("A", 256.0 / 60000.0, 1.1, 14062, 1e-5, 2.5965558697943036, 8.1),
            ("B", 0.01, 1.0, 1000, 1e-5, 2.101366525420273, 7.8),
            ("C", 0.01, 1.0, 10000, 1e-5, 6.712756664482653, 4.1),
            ("D", 0.1, 1.0, 100, 1e-5, 7.903850223578231, 3.2),
            ("E", 0.1, 2.0, 500, 1e-5, 6.034562203370491, 4.4),
            ("F", 1.0, 5.0, 100, 1e-5, 10.725509696418232, 3.3),
            ("G", 0.05, 0.8, 2000, 1e-6, 31.19457148629344, 2.0),
            ("H", 0.001, 0.7, 100000, 1e-6, 4.592229810452948, 5.4),
            ("I", 0.02, 1.5, 3000, 1e-5, 3.8883044151688573, 6.0),
        ];
        for (id, q, z, steps, delta, want, want_order) in configs {
            let spent = poisson_epsilon(q, z, steps, delta);
            assert!(close(spent.epsilon, want, 1e-3), "{id}: {spent:?}, dp_accounting {want}");
            assert_eq!(spent.order, want_order, "{id}");
            // δ(ε) inverts ε(δ) at the same order.
            let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
            accountant.compose_poisson(q, z, steps).unwrap();
            let back = accountant.delta(spent.epsilon).unwrap();
            assert!(close(back.delta, delta, 1e-9) && back.order == want_order, "{id}: {back:?}");
        }
    }

    /// The spec's fixed-cohort examples: N = 1000, m = 10, T = 1000, δ = 1e-5.
    #[test]
    fn sampling_without_replacement_matches_the_spec_examples() {
        // σ = z/2 = 0.5 (z = 1, replace-one sensitivity 2C), σ = 1 (z = 1 with the sensitivity
        // wrongly taken as C, or z = 2 halved), σ = 2 (z = 2 taken as is).
        for (sigma, want, want_order) in
            [(0.5, 20.987072439841914, 2.0), (1.0, 3.576111482350549, 6.0), (2.0, 1.445298242121019, 13.0)]
        {
            let mut accountant = RdpAccountant::new(Neighbouring::ReplaceOne);
            accountant.compose_sampled_without_replacement(1000, 10, sigma, 1000).unwrap();
            let spent = accountant.epsilon(1e-5).unwrap();
            assert!(close(spent.epsilon, want, 1e-3) && spent.order == want_order, "σ {sigma}: {spent:?}");
        }
        // The Poisson figures beside them: 2.101 (z = 1) and 0.686 (z = 2).
        assert!(close(poisson_epsilon(0.01, 1.0, 1000, 1e-5).epsilon, 2.101, 1e-3));
        assert!(close(poisson_epsilon(0.01, 2.0, 1000, 1e-5).epsilon, 0.686, 1e-3));
    }

    #[test]
    fn more_steps_larger_samples_and_less_noise_never_lower_epsilon() {
        let eps = |q, z, steps| poisson_epsilon(q, z, steps, 1e-5).epsilon;
        let steps = [1, 10, 100, 1000, 10000];
        for (q, z) in [(0.01, 1.0), (0.1, 0.8), (0.5, 2.0)] {
            let curve: Vec<f64> = steps.iter().map(|&t| eps(q, z, t)).collect();
            assert!(curve.windows(2).all(|w| w[0] <= w[1]), "q {q} z {z}: {curve:?}");
        }
        let rates = [0.0, 0.001, 0.01, 0.05, 0.2, 0.7, 1.0];
        let curve: Vec<f64> = rates.iter().map(|&q| eps(q, 1.0, 100)).collect();
        assert!(curve[0] == 0.0 && curve.windows(2).all(|w| w[0] <= w[1]), "{curve:?}");
        let noise = [0.0, 0.3, 0.5, 0.8, 1.0, 2.0, 5.0, 20.0];
        let curve: Vec<f64> = noise.iter().map(|&z| eps(0.05, z, 100)).collect();
        assert!(curve[0] == f64::INFINITY && curve.windows(2).all(|w| w[0] >= w[1]), "{curve:?}");
        let mut accountant = RdpAccountant::new(Neighbouring::ReplaceOne);
        let mut last = 0.0;
        for _ in 0..5 {
            accountant.compose_sampled_without_replacement(1000, 100, 1.0, 20).unwrap();
            let now = accountant.epsilon(1e-5).unwrap().epsilon;
            assert!(now >= last, "{now} < {last}");
            last = now;
        }
    }

    #[test]
    fn heterogeneous_steps_add_their_curves_and_repeats_merge() {
        let mut split = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        split.compose_poisson(0.01, 1.0, 600).unwrap();
        split.compose_poisson(0.01, 1.0, 400).unwrap();
        split.compose_poisson(0.05, 2.0, 50).unwrap();
        split.compose_poisson(0.01, 1.0, 0).unwrap();
        assert_eq!(
            split.events(),
            [
                Event::Poisson { sampling_rate: 0.01, noise_multiplier: 1.0, steps: 1000 },
                Event::Poisson { sampling_rate: 0.05, noise_multiplier: 2.0, steps: 50 },
            ]
        );
        let mut first = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        first.compose_poisson(0.01, 1.0, 1000).unwrap();
        let mut second = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        second.compose_poisson(0.05, 2.0, 50).unwrap();
        for ((total, a), b) in split.rdp().iter().zip(first.rdp()).zip(second.rdp()) {
            assert!(close(*total, a + b, 1e-12));
        }
        let (all, alone) = (split.epsilon(1e-5).unwrap().epsilon, first.epsilon(1e-5).unwrap().epsilon);
        assert!(all > alone && close(alone, 2.101366525420273, 1e-9));
    }

    #[test]
    fn the_saved_form_round_trips_infinities_included() {
        let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        // q = 0.5, σ = 5: the orders below 2 do not converge and are +∞.
        accountant.compose_poisson(0.5, 5.0, 3).unwrap();
        accountant.compose_poisson(0.01, 1.1, 100).unwrap();
        assert!(accountant.rdp().contains(&f64::INFINITY));
        let json = serde_json::to_string(&accountant).unwrap();
        assert!(json.contains("\"sampling\":\"poisson\"") && json.contains("null"), "{json}");
        let back: RdpAccountant = serde_json::from_str(&json).unwrap();
        // serde_json writes the shortest exact decimal but, without its `float_roundtrip`
        // feature, may read it back one ulp off.
        assert_eq!(
            (back.neighbouring(), back.orders(), back.events()),
            (accountant.neighbouring(), accountant.orders(), accountant.events())
        );
        for (got, want) in back.rdp().iter().zip(accountant.rdp()) {
            assert!(got == want || close(*got, *want, 1e-15), "{got} {want}");
        }
        let (got, want) = (back.epsilon(1e-5).unwrap(), accountant.epsilon(1e-5).unwrap());
        assert!(close(got.epsilon, want.epsilon, 1e-15) && got.order == want.order);

        let mut wor = RdpAccountant::with_orders(Neighbouring::ReplaceOne, vec![2.0, 3.5]).unwrap();
        wor.compose_sampled_without_replacement(100, 10, 1.0, 7).unwrap();
        let json = serde_json::to_string(&wor).unwrap();
        assert_eq!(serde_json::from_str::<RdpAccountant>(&json).unwrap().events(), wor.events());

        let refused = |json: &str| serde_json::from_str::<RdpAccountant>(json).unwrap_err().to_string();
        let short = r#"{"neighbouring":"replace-one","orders":[2.0,3.5],"rdp":[1.0],"events":[]}"#;
        assert!(refused(short).contains("1 RDP values for 2 orders"), "{}", refused(short));
        let mixed = r#"{"neighbouring":"replace-one","orders":[2.0],"rdp":[1.0],"events":[{"sampling":"poisson","sampling_rate":0.1,"noise_multiplier":1.0,"steps":3}]}"#;
        assert!(refused(mixed).contains("a add-or-remove-one event in a replace-one accountant"));
        let bad_order = r#"{"neighbouring":"replace-one","orders":[1.0],"rdp":[1.0],"events":[]}"#;
        assert!(refused(bad_order).contains("RDP order 1 must be finite and > 1"));
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        accountant.compose_poisson(0.01, 1.0, 10).unwrap();
        let before = accountant.clone();
        let refused = |result: Result<(), AccountantError>| result.unwrap_err().to_string();
        assert_eq!(refused(accountant.compose_poisson(1.5, 1.0, 1)), "sampling rate q = 1.5 must be in [0, 1]");
        assert_eq!(refused(accountant.compose_poisson(-0.1, 1.0, 1)), "sampling rate q = -0.1 must be in [0, 1]");
        assert_eq!(refused(accountant.compose_poisson(f64::NAN, 1.0, 1)), "sampling rate q = NaN must be in [0, 1]");
        assert_eq!(
            refused(accountant.compose_poisson(0.1, -1.0, 1)),
            "noise multiplier z = -1 must be finite and >= 0"
        );
        assert_eq!(
            refused(accountant.compose_poisson(0.1, f64::INFINITY, 1)),
            "noise multiplier z = inf must be finite and >= 0"
        );
        assert_eq!(
            refused(accountant.compose_sampled_without_replacement(100, 10, 1.0, 1)),
            "without-replacement sampling is accounted with replace-one neighbours, and this accountant counts \
             add-or-remove-one neighbours: use one accountant per neighbouring relation"
        );
        assert_eq!(
            refused(accountant.compose_poisson(0.01, 1.0, u64::MAX)),
            "10 steps of this event are already composed: more would overflow the step count"
        );
        assert_eq!(accountant, before);

        let mut wor = RdpAccountant::new(Neighbouring::ReplaceOne);
        for (population, sample_size) in [(0, 0), (10, 11)] {
            let error = wor.compose_sampled_without_replacement(population, sample_size, 1.0, 1).unwrap_err();
            assert_eq!(error, AccountantError::SampleSize { population, sample_size });
        }
        assert!(matches!(wor.compose_poisson(0.1, 1.0, 1), Err(AccountantError::Neighbouring { .. })));
        wor.compose_sampled_without_replacement(10, 0, 0.0, 5).unwrap();
        assert_eq!(wor.epsilon(1e-5).unwrap().epsilon, 0.0);

        for delta in [0.0, 1.0, -1e-5, f64::NAN] {
            assert!(matches!(accountant.epsilon(delta), Err(AccountantError::Delta(_))), "{delta}");
        }
        for epsilon in [-1.0, f64::INFINITY, f64::NAN] {
            assert!(matches!(accountant.delta(epsilon), Err(AccountantError::Epsilon(_))), "{epsilon}");
        }
        assert_eq!(RdpAccountant::with_orders(Neighbouring::ReplaceOne, vec![]), Err(AccountantError::NoOrders));
        assert_eq!(
            RdpAccountant::with_orders(Neighbouring::ReplaceOne, vec![2.0, 0.5]),
            Err(AccountantError::Order(0.5))
        );
    }
}
