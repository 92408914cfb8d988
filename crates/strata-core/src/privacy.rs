//! User-level differential privacy for the federation (`[privacy]`): DP-FedAvg.
//!
//! Each round, every client is sampled independently with probability `fraction` (Poisson
//! sampling, what the accountant assumes); each sampled client's update of the shared tensors
//! (its change from the model it was sent) is clipped to an L2 bound; the server adds
//! Gaussian noise of standard deviation `noise_multiplier × bound` to the *unweighted* sum and
//! divides by the expected cohort `fraction × clients`, a number nobody's data changes (McMahan
//! et al., "Learning Differentially Private Recurrent Language Models", ICLR 2018). The bound
//! is fixed, or adaptive: it follows a target quantile of the update norms, learned from a
//! noised count (Andrew et al., "Differentially Private Learning with Adaptive Clipping",
//! NeurIPS 2021). What is private is what is shared: a personal head (FedPer, FedRep) or
//! FedBN's normalization layers never leave the client and are not covered, nor needed.

use serde::{Deserialize, Serialize};

/// `[privacy]`: off unless `noise_multiplier` or `target_epsilon` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// z: the noise's standard deviation over the clip bound. Unset with `target_epsilon`
    /// set: the server picks the smallest z whose ε after `rounds` rounds is the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_multiplier: Option<f64>,
    /// The budget: with `noise_multiplier` set, training stops before a round that would
    /// spend more (the final evaluation still runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee reported; well below 1 / clients.
    pub delta: f64,
    /// C: the L2 bound on each client's update of the shared tensors; with
    /// `target_quantile`, the bound the first round starts from.
    pub clipping_norm: f64,
    /// Adaptive clipping: the share of updates the bound should leave unclipped (γ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_quantile: Option<f64>,
    /// Adaptive clipping: η of the geometric update C ← C·exp(−η(b̃ − γ)).
    pub clip_learning_rate: f64,
    /// Adaptive clipping: σ_b, the noise on the count of unclipped updates; default the
    /// expected cohort / 20 (Andrew et al.).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipped_count_stddev: Option<f64>,
    /// Where updates are clipped: on the server, or on the client (so the server never sees
    /// an unclipped update; the server checks the bound all the same).
    pub placement: ClipPlacement,
}

/// Where each update is clipped to the bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClipPlacement {
    #[default]
    Server,
    Client,
}

impl std::fmt::Display for ClipPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Server => "server",
            Self::Client => "client",
        })
    }
}

impl std::str::FromStr for ClipPlacement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "server" => Ok(Self::Server),
            "client" => Ok(Self::Client),
            other => Err(format!("unknown clipping placement `{other}`: expected `server` or `client`")),
        }
    }
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            noise_multiplier: None,
            target_epsilon: None,
            delta: 1e-5,
            clipping_norm: Self::DEFAULT_CLIPPING_NORM,
            target_quantile: None,
            clip_learning_rate: 0.2,
            clipped_count_stddev: None,
            placement: ClipPlacement::Server,
        }
    }
}

impl PrivacyConfig {
    /// The initial bound of Andrew et al., TFF and Flower.
    pub const DEFAULT_CLIPPING_NORM: f64 = 0.1;

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the run is differentially private.
    pub fn is_on(&self) -> bool {
        self.noise_multiplier.is_some() || self.target_epsilon.is_some()
    }

    pub fn is_adaptive(&self) -> bool {
        self.target_quantile.is_some()
    }

    /// σ_b for an expected cohort of `expected_cohort` clients.
    pub fn count_stddev(&self, expected_cohort: f64) -> f64 {
        self.clipped_count_stddev.unwrap_or(expected_cohort / 20.0)
    }

    /// The noise multiplier left for the updates' sum once the count of unclipped updates
    /// has taken its share, so that the round as a whole is a Gaussian mechanism with
    /// multiplier z (Andrew et al., §3.1): z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2). Fixed clipping: z.
    pub fn sum_noise_multiplier(&self, z: f64, expected_cohort: f64) -> Result<f64, String> {
        if !self.is_adaptive() || z == 0.0 {
            return Ok(z);
        }
        let sigma_b = self.count_stddev(expected_cohort);
        if z >= 2.0 * sigma_b {
            return Err(format!(
                "privacy: adaptive clipping with noise_multiplier {z} needs clipped_count_stddev above z / 2 \
                 ({}), got {sigma_b}{}; raise it, or sample more clients a round",
                z / 2.0,
                if self.clipped_count_stddev.is_none() { " (the default: expected cohort / 20)" } else { "" }
            ));
        }
        Ok((z.powi(-2) - (2.0 * sigma_b).powi(-2)).powf(-0.5))
    }

    /// The settings on their own; how they fit the method and cohort is `RunConfig`'s check.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("privacy.{name} must be a positive number, got {v}"))
            }
        };
        if let Some(z) = self.noise_multiplier
            && !(z.is_finite() && z >= 0.0)
        {
            return Err(format!("privacy.noise_multiplier must be a number >= 0, got {z}"));
        }
        if let Some(eps) = self.target_epsilon {
            positive("target_epsilon", eps)?;
        }
        if self.noise_multiplier == Some(0.0) && self.target_epsilon.is_some() {
            return Err("privacy.noise_multiplier 0 adds no noise: no finite target_epsilon can be met".into());
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(format!("privacy.delta must be in (0, 1), got {}", self.delta));
        }
        positive("clipping_norm", self.clipping_norm)?;
        if let Some(q) = self.target_quantile
            && !(0.0..=1.0).contains(&q)
        {
            return Err(format!("privacy.target_quantile must be in [0, 1], got {q}"));
        }
        positive("clip_learning_rate", self.clip_learning_rate)?;
        if let Some(s) = self.clipped_count_stddev {
            if !(s.is_finite() && s >= 0.0) {
                return Err(format!("privacy.clipped_count_stddev must be a number >= 0, got {s}"));
            }
            if !self.is_adaptive() {
                return Err("privacy.clipped_count_stddev applies to adaptive clipping: set target_quantile".into());
            }
        }
        Ok(())
    }
}

/// `[dp_sgd]`: example-level differential privacy on each client (DP-SGD, Abadi et al., "Deep
/// Learning with Differential Privacy", CCS 2016): every local step draws its batch by Poisson
/// sampling, clips each sample's gradient to an L2 bound and adds Gaussian noise to the sum.
/// Each client accounts for its own data: the guarantee holds whatever the server does.
/// Off unless `noise_multiplier` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpSgdConfig {
    /// z: the noise's standard deviation over the per-sample clipping bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_multiplier: Option<f64>,
    /// C: the L2 bound on each sample's gradient, over every trained parameter together.
    pub clipping_norm: f64,
    /// δ of the (ε, δ) guarantee each client reports; below 1 / its training samples.
    pub delta: f64,
}

impl Default for DpSgdConfig {
    fn default() -> Self {
        Self { noise_multiplier: None, clipping_norm: 1.0, delta: 1e-5 }
    }
}

impl DpSgdConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn is_on(&self) -> bool {
        self.noise_multiplier.is_some()
    }

    /// What a client trains with when it has its own promise (`strata client --dp-sgd-*`)
    /// beside the run's: its own, unless the run's adds more noise.
    pub fn at_least(self, own: Option<DpSgdConfig>) -> DpSgdConfig {
        match own {
            Some(own) if own.noise_multiplier > self.noise_multiplier => own,
            _ => self,
        }
    }

    /// The settings on their own; how they fit the method is `RunConfig`'s check.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(z) = self.noise_multiplier
            && !(z.is_finite() && z >= 0.0)
        {
            return Err(format!("dp_sgd.noise_multiplier must be a number >= 0, got {z}"));
        }
        if !(self.clipping_norm.is_finite() && self.clipping_norm > 0.0) {
            return Err(format!("dp_sgd.clipping_norm must be a positive number, got {}", self.clipping_norm));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(format!("dp_sgd.delta must be in (0, 1), got {}", self.delta));
        }
        Ok(())
    }
}

/// What differential privacy did in a round, as `rounds.jsonl` records it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReport {
    /// ε spent so far, at `delta`, after this round's release (RDP accountant, Poisson
    /// sampling); `None` when nothing bounds it (noise multiplier 0).
    pub epsilon: Option<f64>,
    pub delta: f64,
    /// z of the whole round (for adaptive clipping, the sum and the count share it).
    pub noise_multiplier: f64,
    /// The bound this round's updates were clipped to.
    pub clipping_norm: f64,
    /// Adaptive clipping: the noised share of updates left unclipped, and the next bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unclipped_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_clipping_norm: Option<f64>,
    /// The tensors that are private; the rest never left the clients.
    pub covers: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_split_matches_the_papers_example() {
        // z = 1, m = 100, σ_b = m/20 = 5: z_Δ = 1.00504 (the spec's worked example).
        let config = PrivacyConfig { noise_multiplier: Some(1.0), target_quantile: Some(0.5), ..Default::default() };
        let z_delta = config.sum_noise_multiplier(1.0, 100.0).unwrap();
        assert!((z_delta - 1.00504).abs() < 1e-5, "{z_delta}");
        // z = 1 needs σ_b > 0.5, i.e. more than 10 expected clients by default.
        let err = config.sum_noise_multiplier(1.0, 10.0).unwrap_err();
        assert!(err.contains("clipped_count_stddev"), "{err}");
        assert_eq!(config.sum_noise_multiplier(0.0, 10.0).unwrap(), 0.0);
        let fixed = PrivacyConfig { noise_multiplier: Some(1.3), ..Default::default() };
        assert_eq!(fixed.sum_noise_multiplier(1.3, 5.0).unwrap(), 1.3);
    }

    #[test]
    fn nonsense_settings_are_refused_by_name() {
        let cases = [
            (PrivacyConfig { noise_multiplier: Some(-1.0), ..Default::default() }, "noise_multiplier"),
            (PrivacyConfig { target_epsilon: Some(0.0), ..Default::default() }, "target_epsilon"),
            (
                PrivacyConfig { noise_multiplier: Some(0.0), target_epsilon: Some(3.0), ..Default::default() },
                "no finite",
            ),
            (PrivacyConfig { delta: 1.0, ..Default::default() }, "delta"),
            (PrivacyConfig { clipping_norm: 0.0, ..Default::default() }, "clipping_norm"),
            (PrivacyConfig { target_quantile: Some(1.5), ..Default::default() }, "target_quantile"),
            (PrivacyConfig { clip_learning_rate: f64::NAN, ..Default::default() }, "clip_learning_rate"),
            (PrivacyConfig { clipped_count_stddev: Some(2.0), ..Default::default() }, "target_quantile"),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(PrivacyConfig::default().validate().is_ok());
        assert!(!PrivacyConfig::default().is_on());
    }

    #[test]
    fn a_clients_own_dp_sgd_applies_unless_the_run_adds_more_noise() {
        let run = |z: Option<f64>| DpSgdConfig { noise_multiplier: z, ..Default::default() };
        let own = DpSgdConfig { noise_multiplier: Some(1.0), clipping_norm: 0.5, delta: 1e-6 };
        assert_eq!(run(None).at_least(Some(own.clone())), own);
        assert_eq!(run(Some(0.8)).at_least(Some(own.clone())), own);
        assert_eq!(run(Some(2.0)).at_least(Some(own)), run(Some(2.0)));
        assert_eq!(run(Some(0.8)).at_least(None), run(Some(0.8)));
    }

    #[test]
    fn placement_reads_and_writes_its_name() {
        for p in [ClipPlacement::Server, ClipPlacement::Client] {
            assert_eq!(p.to_string().parse::<ClipPlacement>().unwrap(), p);
        }
        assert!("edge".parse::<ClipPlacement>().unwrap_err().contains("edge"));
    }
}
