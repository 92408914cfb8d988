//! DP-FedAvg's server step for the methods that average what they share (`[privacy]`):
//! every update's change from the global model it was sent is clipped, summed unweighted,
//! noised and divided by the expected cohort; with adaptive clipping, the bound then learns
//! from the noised count of unclipped updates.
//!
//! Each training round releases a noised model whatever arrives, even nothing: skipping a
//! round, or weighting by reported sample counts, would let one client's presence or data
//! move the release by more than the noise covers.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use strata_core::privacy::{ClipPlacement, PrivacyConfig, PrivacyReport};
use strata_core::tensor::TensorSet;
use strata_methods::dp::{AdaptiveClip, NoisedMean, secure_rng};
use strata_secagg::encoding::Decoded;
use strata_secagg::layout::Layout;

use super::RestoreError;
use crate::validate::ValidUpdate;

/// The privacy settings a strategy runs with, resolved (z known) and checked at start.
#[derive(Clone, Debug)]
pub struct PrivateSettings {
    pub config: PrivacyConfig,
    /// z of the whole round, what the accountant is told.
    pub noise_multiplier: f64,
    /// z_Δ: the share of z left for the sum (z itself with fixed clipping).
    pub sum_noise_multiplier: f64,
    /// m = fraction × clients: the fixed denominator.
    pub expected_cohort: f64,
}

impl PrivateSettings {
    /// Settings for `config` with noise multiplier `z`, over an expected cohort of `m`.
    pub fn new(config: PrivacyConfig, z: f64, expected_cohort: f64) -> Result<Self, String> {
        let sum_noise_multiplier = config.sum_noise_multiplier(z, expected_cohort)?;
        Ok(Self { config, noise_multiplier: z, sum_noise_multiplier, expected_cohort })
    }
}

pub struct PrivateMean {
    settings: PrivateSettings,
    /// The bound this round's updates are clipped to, and how it learns when adaptive.
    clip: AdaptiveClip,
    /// The round being summed: its noised mean, and (client-side clipping) the clients' bits.
    pending: Option<(u64, NoisedMean, usize)>,
    /// Noise nobody can replay from the run's seed.
    rng: ChaCha20Rng,
    /// Which tensors the release covers, for the report.
    covers: String,
}

impl PrivateMean {
    pub fn new(settings: PrivateSettings, covers: String) -> Self {
        let config = &settings.config;
        let clip = AdaptiveClip {
            bound: config.clipping_norm,
            target_quantile: config.target_quantile.unwrap_or(0.5),
            learning_rate: config.clip_learning_rate,
            count_stddev: config.count_stddev(settings.expected_cohort),
        };
        Self { settings, clip, pending: None, rng: secure_rng(), covers }
    }

    /// The bound a training task asks its client to clip to, when clients clip.
    pub fn client_bound(&self) -> Option<f64> {
        (self.settings.config.placement == ClipPlacement::Client).then_some(self.clip.bound)
    }

    /// Clips and adds one update of `round`, sent `global`.
    pub fn absorb(&mut self, round: u64, global: &TensorSet, update: &ValidUpdate) {
        let bound = self.clip.bound;
        let (_, mean, bits) = match &mut self.pending {
            Some(pending) if pending.0 == round => pending,
            // A new round's first update (an abandoned round's sums go with it).
            slot => slot.insert((round, NoisedMean::new(global, bound), 0)),
        };
        mean.add(global, update.parameters());
        *bits += usize::from(update.unclipped() == Some(true));
    }

    pub fn abandon(&mut self, round: u64) {
        if self.pending.as_ref().is_some_and(|(r, _, _)| *r == round) {
            self.pending = None;
        }
    }

    /// Takes the round's sum from secure aggregation (`decoded`, laid out by `layout`): the
    /// clients clipped their changes to this round's bound and weighed 1 each, so it is the
    /// sum [`Self::absorb`] would have made; [`Self::release`] noises it alike.
    pub fn absorb_sum(
        &mut self,
        round: u64,
        global: &TensorSet,
        layout: &Layout,
        decoded: &Decoded,
    ) -> Result<(), String> {
        let sums = layout
            .slices(global, &decoded.sum)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| s.map(<[f64]>::to_vec).ok_or("the secure sum does not cover every shared tensor"))
            .collect::<Result<Vec<_>, _>>()?;
        let updates = decoded.total_weight.round() as usize;
        let bits = decoded.tail.first().map_or(0, |&b| b as usize);
        let mean = NoisedMean::from_sum(global, self.clip.bound, sums, updates, bits).map_err(|e| e.to_string())?;
        self.pending = Some((round, mean, bits));
        Ok(())
    }

    /// The round's release from `global`, and what it did; the bound then learns, when adaptive.
    pub fn release(&mut self, round: u64, global: &TensorSet) -> Result<(TensorSet, PrivacyReport), String> {
        let (mean, client_bits) = match self.pending.take() {
            Some((r, mean, bits)) if r == round => (mean, bits),
            _ => (NoisedMean::new(global, self.clip.bound), 0),
        };
        let unclipped = match self.settings.config.placement {
            ClipPlacement::Server => mean.unclipped(),
            ClipPlacement::Client => client_bits,
        };
        let bound = mean.bound();
        let m = self.settings.expected_cohort;
        let next = mean
            .finish(global, self.settings.sum_noise_multiplier, m, &mut self.rng)
            .map_err(|e| format!("cannot build the noised model: {e}"))?;
        let mut report = PrivacyReport {
            noise_multiplier: self.settings.noise_multiplier,
            clipping_norm: bound,
            covers: self.covers.clone(),
            delta: self.settings.config.delta,
            ..PrivacyReport::default()
        };
        if self.settings.config.is_adaptive() {
            let step = self.clip.learn(unclipped, m, &mut self.rng);
            report.unclipped_share = Some(step.unclipped_share);
            report.next_clipping_norm = Some(step.next_bound);
        }
        Ok((next, report))
    }

    /// What `--resume` needs: the bound the next round clips to.
    pub fn save(&self, meta: &mut BTreeMap<String, String>) {
        meta.insert("privacy.clipping_norm".into(), self.clip.bound.to_string());
    }

    pub fn load(&mut self, meta: &BTreeMap<String, String>) -> Result<(), RestoreError> {
        let bad = RestoreError::Privacy;
        let Some(text) = meta.get("privacy.clipping_norm") else {
            return Err(bad("the saved run was not differentially private; it cannot resume with [privacy]".into()));
        };
        let bound: f64 = text.parse().map_err(|e| bad(format!("privacy.clipping_norm `{text}`: {e}")))?;
        if !(bound.is_finite() && bound > 0.0) {
            return Err(bad(format!("privacy.clipping_norm {bound} is not a positive number")));
        }
        self.clip.bound = bound;
        Ok(())
    }

    pub fn summary(&self) -> String {
        let c = &self.settings.config;
        let clipping = match c.target_quantile {
            Some(q) => format!("adaptive from {} to the {q} quantile", c.clipping_norm),
            None => format!("fixed at {}", c.clipping_norm),
        };
        format!(
            "user-level DP: z = {}, clipping {clipping} on the {}, unweighted over {} expected clients, covering {}",
            self.settings.noise_multiplier, c.placement, self.settings.expected_cohort, self.covers
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    use strata_core::method::Method;
    use strata_core::tensor::NamedTensor;
    use strata_secagg::encoding::Decoded;
    use strata_secagg::layout::Layout;

    use super::*;
    use crate::client_info::ClientInfo;
    use crate::strategy::{Aggregated, AverageShared, Strategy};

    fn set(names: &[(&str, &[f32])]) -> TensorSet {
        TensorSet::new(names.iter().map(|(n, v)| NamedTensor::new(*n, vec![v.len()], v.to_vec()).unwrap()).collect())
            .unwrap()
    }

    fn client(index: u32) -> ClientInfo {
        ClientInfo { id: uuid::Uuid::from_u128(index as u128 + 1), index }
    }

    fn settings(z: f64, edit: impl Fn(&mut PrivacyConfig)) -> PrivateSettings {
        let mut config = PrivacyConfig { noise_multiplier: Some(z), clipping_norm: 1.0, ..Default::default() };
        edit(&mut config);
        PrivateSettings::new(config, z, 4.0).unwrap()
    }

    /// Clients clip; the bound learns the median from a noiseless count.
    fn client_adaptive(c: &mut PrivacyConfig) {
        c.placement = ClipPlacement::Client;
        c.target_quantile = Some(0.5);
        c.clipped_count_stddev = Some(0.0);
    }

    fn released(strategy: &mut AverageShared, round: u64, updates: Vec<ValidUpdate>) -> PrivacyReport {
        match strategy.aggregate_train(round, updates) {
            Aggregated::Updated { privacy: Some(report), .. } => report,
            other => panic!("a private round releases: {other:?}"),
        }
    }

    #[test]
    fn a_private_round_is_the_unweighted_mean_of_clipped_changes_over_the_expected_cohort() {
        let mut strategy =
            AverageShared::new(Method::FedAvg, set(&[("w", &[1.0, 1.0])])).with_privacy(settings(0.0, |_| {}));
        // Δ = (3, 4) clipped to (0.6, 0.8); Δ = (0.5, 0) kept. Sample counts 1 and 1000 do not weigh.
        let a = ValidUpdate::for_tests(client(0), set(&[("w", &[4.0, 5.0])]), 1);
        let b = ValidUpdate::for_tests(client(1), set(&[("w", &[1.5, 1.0])]), 1000);
        assert!(strategy.absorb(0, a).is_none(), "folded in on arrival");
        let report = released(&mut strategy, 0, vec![b]);
        let w = strategy.global().unwrap().get("w").unwrap().values().to_vec();
        assert!((w[0] - 1.275).abs() < 1e-6 && (w[1] - 1.2).abs() < 1e-6, "{w:?}");
        assert_eq!((report.clipping_norm, report.covers.as_str()), (1.0, "the whole model"));
        // Nobody answering still releases (here, z = 0: the model unchanged).
        released(&mut strategy, 1, vec![]);
        assert_eq!(strategy.global().unwrap().get("w").unwrap().values(), w);
    }

    #[test]
    fn the_noise_scale_is_z_times_the_bound_over_the_expected_cohort() {
        let n = 50_000;
        let zeros = vec![0.0f32; n];
        let mut strategy =
            AverageShared::new(Method::FedAvg, set(&[("w", &zeros)])).with_privacy(settings(2.0, |_| {}));
        released(&mut strategy, 0, vec![]);
        let values = strategy.global().unwrap().get("w").unwrap().values().to_vec();
        let var = values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        let expected = (2.0f64 * 1.0 / 4.0).powi(2);
        assert!((var - expected).abs() < 5.0 * expected * (2.0 / n as f64).sqrt(), "{var} vs {expected}");
    }

    #[test]
    fn fedpers_head_is_neither_sent_nor_noised() {
        let initial = set(&[("body.w", &[0.0; 3]), ("head.w", &[7.0, 8.0])]);
        let mut fedper = AverageShared::new(Method::FedPer, initial).with_privacy(settings(1.0, |_| {}));
        let tasks = fedper.configure_train(0, &[client(0)]);
        assert_eq!(tasks[0].parameters.specs().len(), 1, "only the body travels");
        assert!(!tasks[0].upload.matches("head.w"));
        let report = released(&mut fedper, 0, vec![]);
        assert!(
            report.covers.contains("shared tensors only") && report.covers.contains(r#"except ["head.*"]"#),
            "{}",
            report.covers
        );
        let body = fedper.configure_train(1, &[client(0)]).remove(0).parameters;
        assert!(body.get("head.w").is_none() && body.get("body.w").unwrap().values().iter().any(|&v| v != 0.0));
    }

    #[test]
    fn clients_that_clip_are_told_the_bound_and_their_bits_drive_the_adaptive_bound() {
        let mut strategy =
            AverageShared::new(Method::FedAvg, set(&[("w", &[0.0])])).with_privacy(settings(0.0, client_adaptive));
        let tasks = strategy.configure_train(0, &[client(0), client(1)]);
        assert!(tasks.iter().all(|t| t.clip_norm == Some(1.0)));
        assert!(strategy.configure_evaluate(0, &[client(2)])[0].clip_norm.is_none());
        // All four expected clients report "clipped": the bound rises by exp(0.2·0.5).
        let updates = (0..4).map(|i| ValidUpdate::for_tests(client(i), set(&[("w", &[1.0])]), 5).with_unclipped(false));
        let report = released(&mut strategy, 0, updates.collect());
        assert_eq!(report.unclipped_share, Some(0.0));
        let next = report.next_clipping_norm.unwrap();
        assert!((next - 0.1f64.exp()).abs() < 1e-12, "{next}");
        assert_eq!(strategy.configure_train(1, &[client(0)])[0].clip_norm, Some(next));
        // The learned bound survives --resume.
        let snapshot = strategy.snapshot();
        let mut restored =
            AverageShared::new(Method::FedAvg, set(&[("w", &[0.0])])).with_privacy(settings(0.0, client_adaptive));
        restored.restore(snapshot).unwrap();
        assert_eq!(restored.configure_train(1, &[client(0)])[0].clip_norm, Some(next));
        let plain = AverageShared::new(Method::FedAvg, set(&[("w", &[0.0])])).snapshot();
        let err = restored.restore(plain).unwrap_err().to_string();
        assert!(err.contains("not differentially private"), "{err}");
    }

    #[test]
    fn a_secure_sum_is_released_as_the_clients_clipped_updates_would_be() {
        let initial = set(&[("b", &[0.0]), ("a", &[1.0, 1.0])]);
        let mut folded =
            AverageShared::new(Method::FedAvg, initial.clone()).with_privacy(settings(0.0, client_adaptive));
        let mut secure = AverageShared::new(Method::FedAvg, initial).with_privacy(settings(0.0, client_adaptive));
        // Two clients that clipped their own changes: (a: +0.6 +0.8, b: 0) and (a: 0, b: −0.5).
        let updates = vec![
            ValidUpdate::for_tests(client(0), set(&[("b", &[0.0]), ("a", &[1.6, 1.8])]), 3).with_unclipped(false),
            ValidUpdate::for_tests(client(1), set(&[("b", &[-0.5]), ("a", &[1.0, 1.0])]), 9).with_unclipped(true),
        ];
        let from_updates = released(&mut folded, 0, updates);
        // The same sum as secure aggregation decodes it: the layout sorts by name (a, then b).
        let layout = Layout::of(&secure.global().unwrap().specs());
        let decoded = Decoded { sum: vec![0.6, 0.8, -0.5], total_weight: 2.0, tail: vec![1] };
        let from_sum = match secure.apply_secure_sum(0, &layout, &decoded) {
            Aggregated::Updated { privacy: Some(report), .. } => report,
            other => panic!("a private secure round releases: {other:?}"),
        };
        assert_eq!(from_sum, from_updates);
        assert_eq!(from_sum.unclipped_share, Some(0.25), "one bit of the expected four");
        let values = |s: &AverageShared| {
            s.global().unwrap().tensors().iter().flat_map(|t| t.values().to_vec()).collect::<Vec<f32>>()
        };
        assert_eq!(values(&secure), values(&folded));
        assert_eq!(values(&secure), vec![0.0 - 0.125, 1.15, 1.2]);
        // A sum that does not fit the shared tensors moves nothing.
        let short = Decoded { sum: vec![0.6, 0.8], total_weight: 2.0, tail: vec![1] };
        assert!(matches!(secure.apply_secure_sum(1, &layout, &short), Aggregated::Skipped { .. }));
    }
}
