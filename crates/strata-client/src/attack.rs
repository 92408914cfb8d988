//! Hostile clients, for measuring defenses: `simulate --attack KIND:FRACTION` makes that share
//! of the clients send one of the classic poisoned updates, so that what a robust rule costs
//! and what it saves are numbers (see `shared/methods/robust-aggregation.md`, §7).
//!
//! A hostile client trains as an honest one does (its own model and metrics stay honest);
//! what it uploads is changed. With Δ = trained − received over the uploaded tensors:
//! - `sign-flip`: sends received − Δ (Damaskinos et al.);
//! - `scale:λ`: sends received + λ·Δ (boosting; Bagdasaryan et al.'s model replacement without
//!   the backdoor);
//! - `noise:σ`: sends received + N(0, σ²) per value (Blanchard et al.'s Gaussian attacker);
//! - `free-rider`: sends what it received (Δ = 0; Lin et al.'s plain free rider);
//! - `label-flip`: trains on labels y → C − 1 − y and sends that update as it is.

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use strata_core::tensor::TensorSet;

/// What a hostile client does to its update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    SignFlip,
    Scale(f64),
    Noise(f64),
    FreeRider,
    LabelFlip,
}

/// `--attack KIND:FRACTION`: an attack and the share of the clients that mount it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttackSpec {
    pub attack: Attack,
    /// In [0, 1]; the hostile clients are this share of the federation, rounded.
    pub fraction: f64,
}

const FORMS: &str = "sign-flip:F, scale:LAMBDA:F, noise:SIGMA:F, free-rider:F or label-flip:F, \
                     with F the share of clients in [0, 1] (e.g. scale:100:0.1)";

/// Why an attack spec cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("attack `{spec}`: {problem} (forms: {FORMS})")]
pub struct AttackSpecError {
    spec: String,
    problem: String,
}

impl FromStr for AttackSpec {
    type Err = AttackSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem: &str| AttackSpecError { spec: s.to_string(), problem: problem.to_string() };
        let (head, fraction) = s.rsplit_once(':').ok_or_else(|| fail("no share of clients after `:`"))?;
        let fraction: f64 = fraction.parse().map_err(|_| fail("the share of clients is not a number"))?;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(fail("the share of clients must be in [0, 1]"));
        }
        let (kind, parameter) = match head.split_once(':') {
            Some((k, p)) => (k, Some(p.parse::<f64>().map_err(|_| fail("the attack's parameter is not a number"))?)),
            None => (head, None),
        };
        let attack = match (kind, parameter) {
            ("sign-flip", None) => Attack::SignFlip,
            ("free-rider", None) => Attack::FreeRider,
            ("label-flip", None) => Attack::LabelFlip,
            ("scale", Some(l)) if l.is_finite() => Attack::Scale(l),
            ("noise", Some(sigma)) if sigma.is_finite() && sigma > 0.0 => Attack::Noise(sigma),
            ("scale", _) => return Err(fail("scale needs a finite factor, e.g. scale:100:0.1")),
            ("noise", _) => return Err(fail("noise needs a positive standard deviation, e.g. noise:1:0.1")),
            ("sign-flip" | "free-rider" | "label-flip", Some(_)) => return Err(fail("this attack takes no parameter")),
            _ => return Err(fail("unknown attack")),
        };
        Ok(Self { attack, fraction })
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attack::SignFlip => write!(f, "sign-flip"),
            Attack::Scale(l) => write!(f, "scale:{l}"),
            Attack::Noise(sigma) => write!(f, "noise:{sigma}"),
            Attack::FreeRider => write!(f, "free-rider"),
            Attack::LabelFlip => write!(f, "label-flip"),
        }
    }
}

impl fmt::Display for AttackSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.attack, self.fraction)
    }
}

impl AttackSpec {
    /// The hostile clients among `clients`: the spec's share, rounded, chosen by `seed` (the
    /// run's), in ascending order. The same seed picks the same clients, so seeds compare.
    pub fn hostile(&self, clients: u32, seed: u64) -> Vec<u32> {
        use rand::seq::SliceRandom;
        let count = ((self.fraction * clients as f64).round() as usize).min(clients as usize);
        let mut all: Vec<u32> = (0..clients).collect();
        // Its own stream: which clients are hostile does not shift the run's other draws.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6174_7461_636b);
        all.shuffle(&mut rng);
        let mut hostile = all[..count].to_vec();
        hostile.sort_unstable();
        hostile
    }
}

impl Attack {
    /// The labels a label-flipping client trains on: y → C − 1 − y.
    pub fn flips_labels(&self) -> bool {
        *self == Attack::LabelFlip
    }

    /// What the client uploads instead of `trained`, given the `received` parameters; `seed`
    /// makes the noise reproducible (the round's and the client's). Tensors not received
    /// (none for the methods that share) go as trained.
    pub fn poison(&self, received: &TensorSet, mut trained: TensorSet, seed: u64) -> TensorSet {
        if self.flips_labels() {
            return trained; // its harm is in the labels it trained on
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let noise = match self {
            Attack::Noise(sigma) => Normal::new(0.0, *sigma).ok(),
            _ => None,
        };
        for (name, values) in trained.values_mut() {
            let Some(sent) = received.get(name).map(|t| t.values()).filter(|v| v.len() == values.len()) else {
                continue;
            };
            for (v, &r) in values.iter_mut().zip(sent) {
                let delta = f64::from(*v) - f64::from(r);
                let poisoned = match self {
                    Attack::SignFlip => f64::from(r) - delta,
                    Attack::Scale(l) => f64::from(r) + l * delta,
                    Attack::Noise(_) => f64::from(r) + noise.map_or(0.0, |n| n.sample(&mut rng)),
                    Attack::FreeRider => f64::from(r),
                    Attack::LabelFlip => f64::from(*v),
                };
                *v = poisoned as f32;
            }
        }
        trained
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::tensor::NamedTensor;

    fn set(values: &[f32]) -> TensorSet {
        TensorSet::new(vec![NamedTensor::new("w", vec![values.len()], values.to_vec()).unwrap()]).unwrap()
    }

    fn poisoned(attack: Attack) -> Vec<f32> {
        attack.poison(&set(&[1.0, 2.0]), set(&[1.5, 1.0]), 7).get("w").unwrap().values().to_vec()
    }

    #[test]
    fn specs_read_and_print_back() {
        for text in ["sign-flip:0.1", "scale:100:0.2", "noise:1.5:0.5", "free-rider:1", "label-flip:0", "scale:-4:0.1"]
        {
            let spec: AttackSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!("scale:100:0.1".parse::<AttackSpec>().unwrap().attack, Attack::Scale(100.0));
        for bad in
            ["sign-flip", "sign-flip:2", "scale:0.1", "noise:0:0.1", "flip:0.1", "sign-flip:3:0.1", "scale:x:0.1"]
        {
            let e = bad.parse::<AttackSpec>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("forms"), "{e}");
        }
    }

    #[test]
    fn each_attack_changes_the_update_as_documented() {
        // Δ = [0.5, -1.0] from received [1, 2].
        assert_eq!(poisoned(Attack::SignFlip), vec![0.5, 3.0]);
        assert_eq!(poisoned(Attack::Scale(100.0)), vec![51.0, -98.0]);
        assert_eq!(poisoned(Attack::FreeRider), vec![1.0, 2.0]);
        assert_eq!(poisoned(Attack::LabelFlip), vec![1.5, 1.0]);
        let noisy = poisoned(Attack::Noise(1.0));
        assert_ne!(noisy, vec![1.0, 2.0]);
        assert_eq!(noisy, poisoned(Attack::Noise(1.0)), "the same seed gives the same noise");
    }

    #[test]
    fn the_hostile_share_is_rounded_and_drawn_by_seed() {
        let spec: AttackSpec = "sign-flip:0.1".parse().unwrap();
        let two = spec.hostile(20, 1);
        assert_eq!(two.len(), 2);
        assert!(two.windows(2).all(|w| w[0] < w[1]) && two.iter().all(|&i| i < 20));
        assert_eq!(spec.hostile(20, 1), two);
        let other_seeds: Vec<Vec<u32>> = (2..6).map(|s| spec.hostile(20, s)).collect();
        assert!(other_seeds.iter().any(|h| *h != two), "the seed draws the clients");
        assert_eq!("free-rider:1".parse::<AttackSpec>().unwrap().hostile(5, 3), vec![0, 1, 2, 3, 4]);
        assert!("free-rider:0".parse::<AttackSpec>().unwrap().hostile(5, 3).is_empty());
    }
}
