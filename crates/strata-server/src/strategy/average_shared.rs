//! The server half of every method that averages what it shares: FedAvg (McMahan et al.,
//! "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017,
//! arXiv:1602.05629) and the methods that differ from it only on the client or in what they
//! share ([`Method::shares`]).
//!
//! Every picked client receives the shared part of the global model, trains, and sends that
//! part back; the next shared part is the average of the updates weighted by each client's
//! training samples. Sharing the whole model is FedAvg itself (and, with a proximal term on
//! the client, FedProx and Ditto's global model); sharing part of it is how FedPer and FedRep
//! (the body), FedBN (all but normalization layers) and Local (nothing) differ on the server:
//! only the shared tensors travel, both ways. The methods' hyper-parameters reach the client
//! halves in the run's configuration, not from here.
//!
//! With `[privacy]`, the round's updates are clipped, summed unweighted and noised instead
//! ([`PrivateMean`]): the release covers the shared tensors only, which are all that leave
//! the clients.
//!
//! With a robust rule (`[defense] rule`), the round's updates are kept until the round ends
//! and combined by [`strata_methods::robust`] instead: the rule sees every update relative to
//! the shared global model all were sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_core::defense::Defense;
use strata_core::method::Method;
use strata_core::parts::ModelParts;
use strata_core::selection::Selector;
use strata_core::tensor::TensorSet;
use strata_methods::aggregate::RunningMean;
use strata_methods::robust::{self, Contribution};
use strata_secagg::encoding::Decoded;
use strata_secagg::layout::Layout;
use tracing::warn;

use super::private_mean::{PrivateMean, PrivateSettings};
use super::{Aggregated, Instruction, RestoreError, Snapshot, Strategy, same_method, same_specs};
use crate::client_info::ClientInfo;
use crate::validate::ValidUpdate;

pub struct AverageShared {
    method: Method,
    /// The tensors that travel and are averaged.
    shared: Selector,
    /// Whether `shared` is the whole model (then it is a global model clients can evaluate).
    whole_model: bool,
    /// The shared part of the global model.
    global: Arc<TensorSet>,
    /// The round's updates folded in so far: the only copy the server keeps of them.
    pending: Option<(u64, RunningMean)>,
    /// The last round's sums, whose memory the next round's take.
    spare: Vec<Vec<f64>>,
    /// The robust rule; [`Defense::None`] folds updates as they arrive.
    defense: Defense,
    /// User-level differential privacy, when on: it replaces the weighted mean.
    privacy: Option<PrivateMean>,
}

impl AverageShared {
    /// Averages the tensors `method` shares of a registered model, starting from `initial`; the
    /// rest stay on the clients.
    pub fn new(method: Method, initial: TensorSet) -> Self {
        Self::sharing(method, method.shares(&ModelParts::registered()), initial)
    }

    /// Averages the tensors `shared` selects (what `method` shares of the run's model).
    pub fn sharing(method: Method, shared: Selector, initial: TensorSet) -> Self {
        let global = initial.select(|n| shared.matches(n));
        let whole_model = global.len() == initial.len();
        Self {
            method,
            shared,
            whole_model,
            global: Arc::new(global),
            pending: None,
            spare: Vec::new(),
            defense: Defense::None,
            privacy: None,
        }
    }

    /// Releases each round's mean with user-level differential privacy.
    pub fn with_privacy(mut self, settings: PrivateSettings) -> Self {
        let covers = if self.whole_model {
            "the whole model".to_string()
        } else {
            format!(
                "the shared tensors only ({:?} except {:?}); the rest never leave the clients",
                self.shared.patterns(),
                self.shared.exceptions()
            )
        };
        self.privacy = Some(PrivateMean::new(settings, covers));
        self
    }

    /// The round's noised release, whatever arrived.
    fn release(&mut self, round: u64, updates: Vec<ValidUpdate>) -> Aggregated {
        let Some(privacy) = &mut self.privacy else {
            return Aggregated::Skipped { reason: "no privacy settings".into() };
        };
        for update in &updates {
            privacy.absorb(round, &self.global, update);
        }
        match privacy.release(round, &self.global) {
            Ok((next, report)) => {
                self.global = Arc::new(next);
                Aggregated::Updated { defense: None, privacy: Some(report) }
            }
            Err(reason) => Aggregated::Skipped { reason },
        }
    }
    /// Combines the round's updates with `defense` instead of the sample-weighted mean.
    pub fn with_defense(mut self, defense: Defense) -> Self {
        self.defense = defense;
        self
    }

    /// The robust rule over the round's updates, each relative to the global model all were sent.
    fn aggregate_robust(&mut self, round: u64, updates: &[ValidUpdate]) -> Aggregated {
        let contributions: Vec<Contribution> = updates
            .iter()
            .map(|u| Contribution {
                client: u.client().index,
                reference: &self.global,
                update: u.parameters(),
                weight: u.num_samples() as f64,
            })
            .collect();
        match robust::aggregate(&self.defense, &contributions) {
            Ok(outcome) => {
                if let Some(warning) = &outcome.report.warning {
                    warn!(round, rule = %self.defense, "{warning}");
                }
                self.global = Arc::new(outcome.aggregate);
                Aggregated::Updated { defense: Some(outcome.report), privacy: None }
            }
            Err(e) => Aggregated::Skipped { reason: format!("{}: {e}", self.defense) },
        }
    }

    fn send_global(&self, clients: &[ClientInfo]) -> Vec<Instruction> {
        let global =
            |c: &ClientInfo| Instruction::new(*c, Arc::clone(&self.global), self.whole_model, self.shared.clone());
        clients.iter().map(global).collect()
    }
}

impl Strategy for AverageShared {
    fn configure_train(&mut self, _round: u64, picked: &[ClientInfo]) -> Vec<Instruction> {
        let clip_norm = self.privacy.as_ref().and_then(PrivateMean::client_bound);
        let mut instructions = self.send_global(picked);
        for i in &mut instructions {
            i.clip_norm = clip_norm;
        }
        instructions
    }

    fn configure_evaluate(&mut self, _round: u64, clients: &[ClientInfo]) -> Vec<Instruction> {
        self.send_global(clients)
    }

    fn absorb(&mut self, round: u64, update: ValidUpdate) -> Option<ValidUpdate> {
        if let Some(privacy) = &mut self.privacy {
            privacy.absorb(round, &self.global, &update);
            return None;
        }
        if self.defense.keeps_updates() {
            return Some(update);
        }
        let weight = update.num_samples() as f64;
        match &mut self.pending {
            Some((r, mean)) if *r == round => mean.add(update.parameters(), weight),
            // A new round's first update (an abandoned round's sums go with it).
            _ => {
                let spare = std::mem::take(&mut self.spare);
                self.pending = Some((round, RunningMean::reusing(update.parameters(), weight, spare)));
            }
        }
        None
    }

    fn abandon(&mut self, round: u64) {
        if let Some(privacy) = &mut self.privacy {
            privacy.abandon(round);
        }
        if self.pending.as_ref().is_some_and(|(r, _)| *r == round) {
            self.pending = None;
        }
    }

    fn aggregate_train(&mut self, round: u64, updates: Vec<ValidUpdate>) -> Aggregated {
        if self.privacy.is_some() {
            return self.release(round, updates);
        }
        if self.defense.keeps_updates() {
            return self.aggregate_robust(round, &updates);
        }
        for update in updates {
            self.absorb(round, update);
        }
        let Some((_, mean)) = self.pending.take().filter(|(r, _)| *r == round) else {
            return Aggregated::Skipped { reason: "no update with training samples".into() };
        };
        // The mean goes over the previous global model when nothing holds it any more (the
        // round's tasks let go of it before aggregation; a state still being written may not).
        let mean = match Arc::get_mut(&mut self.global) {
            Some(global) => match mean.finish_over(global) {
                Ok(spare) => {
                    self.spare = spare;
                    return Aggregated::Updated { defense: None, privacy: None };
                }
                Err(mean) => mean,
            },
            None => mean,
        };
        match mean.finish() {
            Some(avg) => {
                self.global = Arc::new(avg);
                Aggregated::Updated { defense: None, privacy: None }
            }
            None => Aggregated::Skipped { reason: "no update with training samples".into() },
        }
    }

    fn apply_secure_sum(&mut self, round: u64, layout: &Layout, sum: &Decoded) -> Aggregated {
        self.abandon(round);
        if self.defense.keeps_updates() {
            return Aggregated::Skipped { reason: "robust rules need the updates themselves".into() };
        }
        if let Some(i) = sum.sum.iter().position(|v| !v.is_finite()) {
            return Aggregated::Skipped { reason: format!("the unmasked sum is not finite at value {i}") };
        }
        if let Some(privacy) = &mut self.privacy {
            if let Err(reason) = privacy.absorb_sum(round, &self.global, layout, sum) {
                return Aggregated::Skipped { reason };
            }
            return self.release(round, Vec::new());
        }
        match layout.apply(&self.global, &sum.mean()) {
            Ok(next) => {
                self.global = Arc::new(next);
                Aggregated::Updated { defense: None, privacy: None }
            }
            Err(e) => Aggregated::Skipped { reason: e.to_string() },
        }
    }

    fn global(&self) -> Option<Arc<TensorSet>> {
        self.whole_model.then(|| Arc::clone(&self.global))
    }

    fn snapshot(&self) -> Snapshot {
        let mut meta = BTreeMap::from([("method".to_string(), self.method.to_string())]);
        if let Some(privacy) = &self.privacy {
            privacy.save(&mut meta);
        }
        Snapshot { tensors: Arc::clone(&self.global), masks: BTreeMap::new(), meta }
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<(), RestoreError> {
        same_method(&snapshot, self.method)?;
        same_specs(&self.global, &snapshot.tensors, "global model")?;
        if let Some(privacy) = &mut self.privacy {
            privacy.load(&snapshot.meta)?;
        }
        self.global = snapshot.tensors;
        Ok(())
    }

    fn summary(&self) -> Vec<(&'static str, String)> {
        vec![
            ("method", self.method.to_string()),
            ("weighting", if self.privacy.is_some() { "none (privacy)" } else { "training samples" }.into()),
            ("defense", self.defense.to_string()),
            ("privacy", self.privacy.as_ref().map_or_else(|| "off".into(), PrivateMean::summary)),
            ("shared", format!("{:?} except {:?}", self.shared.patterns(), self.shared.exceptions())),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::validate::ValidUpdate;
    use strata_core::tensor::NamedTensor;

    fn set(values: &[f32]) -> TensorSet {
        TensorSet::new(vec![NamedTensor::new("w", vec![values.len()], values.to_vec()).unwrap()]).unwrap()
    }

    fn client(index: u32) -> ClientInfo {
        ClientInfo { id: uuid::Uuid::from_u128(index as u128 + 1), index }
    }

    /// Runs one FedAvg round from `initial` over (values, samples) updates; returns the new global.
    fn check(initial: &[f32], updates: &[(&[f32], u64)]) -> Vec<f32> {
        let mut strategy = AverageShared::new(Method::FedAvg, set(initial));
        let updates = updates
            .iter()
            .enumerate()
            .map(|(i, (v, n))| ValidUpdate::for_tests(client(i as u32), set(v), *n))
            .collect();
        assert!(matches!(strategy.aggregate_train(0, updates), Aggregated::Updated { .. }));
        strategy.global().unwrap().get("w").unwrap().values().to_vec()
    }

    /// A round writes its mean over the last global model when nothing holds it, and into
    /// fresh memory when something does (a state being written, a task still served), leaving
    /// what is held alone; the sums' memory goes from one round to the next.
    #[test]
    fn a_round_writes_over_the_last_global_model_unless_it_is_held() {
        let mut strategy = AverageShared::new(Method::FedAvg, set(&[0.0, 0.0]));
        let round = |strategy: &mut AverageShared, r: u64, v: &[f32]| {
            let update = ValidUpdate::for_tests(client(0), set(v), 1);
            assert!(matches!(strategy.aggregate_train(r, vec![update]), Aggregated::Updated { .. }));
        };
        let at = |strategy: &AverageShared| strategy.global.tensors()[0].values().as_ptr();
        round(&mut strategy, 0, &[1.0, 2.0]);
        let (before, sums) = (at(&strategy), strategy.spare[0].as_ptr());
        round(&mut strategy, 1, &[3.0, 4.0]);
        assert_eq!((at(&strategy), strategy.spare[0].as_ptr()), (before, sums), "written in place");
        assert_eq!(strategy.global().unwrap().get("w").unwrap().values(), [3.0, 4.0]);

        let held = strategy.snapshot();
        round(&mut strategy, 2, &[5.0, 6.0]);
        assert_ne!(at(&strategy), before);
        assert_eq!(held.tensors.get("w").unwrap().values(), [3.0, 4.0], "the snapshot is left alone");
        assert_eq!(strategy.global().unwrap().get("w").unwrap().values(), [5.0, 6.0]);
    }

    #[test]
    fn snapshots_restore_the_global_model_of_the_same_method_only() {
        let mut strategy = AverageShared::new(Method::FedAvg, set(&[0.0, 0.0]));
        strategy.aggregate_train(0, vec![ValidUpdate::for_tests(client(0), set(&[1.0, 2.0]), 1)]);
        let snapshot = strategy.snapshot();
        let mut restored = AverageShared::new(Method::FedAvg, set(&[0.0, 0.0]));
        restored.restore(snapshot.clone()).unwrap();
        assert_eq!(restored.global(), strategy.global());
        let mut prox = AverageShared::new(Method::FedProx, set(&[0.0, 0.0]));
        assert!(prox.restore(snapshot.clone()).unwrap_err().to_string().contains("fedprox"));
        let mut bigger = AverageShared::new(Method::FedAvg, set(&[0.0, 0.0, 0.0]));
        assert!(bigger.restore(snapshot).unwrap_err().to_string().contains("does not match"));
    }

    #[test]
    fn global_is_the_sample_weighted_mean() {
        assert_eq!(check(&[0.0, 0.0], &[(&[1.0, 2.0], 1), (&[3.0, 6.0], 3)]), vec![2.5, 5.0]);
        assert_eq!(check(&[9.0], &[(&[1.0], 10)]), vec![1.0]);
    }

    #[test]
    fn updates_absorbed_as_they_arrive_make_the_batch_mean_and_are_not_kept() {
        let mut streamed = AverageShared::new(Method::FedAvg, set(&[0.0, 0.0]));
        // An abandoned round's sums do not leak into the next round.
        assert!(streamed.absorb(0, ValidUpdate::for_tests(client(0), set(&[100.0, 100.0]), 5)).is_none());
        streamed.abandon(0);
        assert!(streamed.absorb(1, ValidUpdate::for_tests(client(0), set(&[1.0, 2.0]), 1)).is_none());
        assert!(streamed.absorb(1, ValidUpdate::for_tests(client(1), set(&[3.0, 6.0]), 3)).is_none());
        assert!(matches!(streamed.aggregate_train(1, vec![]), Aggregated::Updated { .. }));
        assert_eq!(streamed.global().unwrap().get("w").unwrap().values(), vec![2.5, 5.0]);
        // Sums left from a round that never aggregated are not the next round's.
        let mut stale = AverageShared::new(Method::FedAvg, set(&[0.0]));
        stale.absorb(2, ValidUpdate::for_tests(client(0), set(&[100.0]), 5));
        stale.absorb(3, ValidUpdate::for_tests(client(0), set(&[1.0]), 1));
        assert!(matches!(stale.aggregate_train(3, vec![]), Aggregated::Updated { .. }));
        assert_eq!(stale.global().unwrap().get("w").unwrap().values(), vec![1.0]);
        let mut nothing = AverageShared::new(Method::FedAvg, set(&[0.0]));
        nothing.absorb(0, ValidUpdate::for_tests(client(0), set(&[1.0]), 1));
        nothing.abandon(0);
        assert!(matches!(nothing.aggregate_train(0, vec![]), Aggregated::Skipped { .. }));
    }

    #[test]
    fn every_client_gets_the_same_global_and_uploads_everything() {
        let mut strategy = AverageShared::new(Method::FedAvg, set(&[1.0]));
        let tasks = strategy.configure_train(0, &[client(0), client(1)]);
        assert_eq!(tasks.len(), 2);
        assert!(Arc::ptr_eq(&tasks[0].parameters, &tasks[1].parameters));
        assert!(tasks.iter().all(|t| t.parameters_are_global && t.upload.matches("head.weight")));
    }

    #[test]
    fn partial_sharing_sends_and_averages_only_the_shared_tensors() {
        let initial = TensorSet::new(vec![
            NamedTensor::new("body.w", vec![1], vec![1.0]).unwrap(),
            NamedTensor::new("head.w", vec![1], vec![5.0]).unwrap(),
        ])
        .unwrap();
        let mut fedper = AverageShared::new(Method::FedPer, initial);
        let tasks = fedper.configure_train(0, &[client(0)]);
        assert_eq!(tasks[0].parameters.specs().len(), 1, "only the body travels");
        assert!(
            !tasks[0].parameters_are_global && tasks[0].upload.matches("body.w") && !tasks[0].upload.matches("head.w")
        );
        assert!(fedper.global().is_none(), "a shared body is not a global model");
        let body = |v: f32| TensorSet::new(vec![NamedTensor::new("body.w", vec![1], vec![v]).unwrap()]).unwrap();
        let updates =
            vec![ValidUpdate::for_tests(client(0), body(2.0), 1), ValidUpdate::for_tests(client(1), body(4.0), 3)];
        assert!(matches!(fedper.aggregate_train(0, updates), Aggregated::Updated { .. }));
        assert_eq!(fedper.configure_train(1, &[client(0)])[0].parameters.get("body.w").unwrap().values(), vec![3.5]);
    }

    #[test]
    fn a_robust_rule_keeps_the_round_and_reports_what_it_did() {
        let robust = |rule: &str, updates: &[(u32, f32)]| {
            let mut strategy = AverageShared::new(Method::FedAvg, set(&[0.0])).with_defense(rule.parse().unwrap());
            let updates: Vec<ValidUpdate> =
                updates.iter().map(|&(i, v)| ValidUpdate::for_tests(client(i), set(&[v]), 10)).collect();
            let Aggregated::Updated { defense: Some(report), .. } = strategy.aggregate_train(0, updates) else {
                panic!("{rule} aggregates");
            };
            (strategy.global().unwrap().get("w").unwrap().values()[0], report)
        };
        let mut kept = AverageShared::new(Method::FedAvg, set(&[0.0])).with_defense(Defense::Median);
        assert!(kept.absorb(0, ValidUpdate::for_tests(client(0), set(&[1.0]), 1)).is_some(), "kept for the rule");
        let honest_and_scaled = [(0, 1.0), (1, 1.2), (2, 0.8), (3, 1.1), (4, 100.0)];
        let (median, report) = robust("median", &honest_and_scaled);
        assert_eq!((median, report.rule.as_str()), (1.1, "median"));
        let (krum, report) = robust("krum:1", &honest_and_scaled);
        assert!((0.8..=1.2).contains(&krum) && report.selected.as_ref().is_some_and(|s| !s.contains(&4)), "{report:?}");
        let (bounded, report) = robust("norm-bound:median", &honest_and_scaled);
        // The median norm is 1.1: updates 1.2 and 100 are scaled down to it.
        assert!(report.bound.is_some_and(|b| (b - 1.1).abs() < 1e-6) && report.clipped == [1, 4], "{report:?}");
        assert!((bounded - 1.02).abs() < 1e-5, "the scaled update counts as the median norm: {bounded}");
        let mut nothing = AverageShared::new(Method::FedAvg, set(&[0.0])).with_defense(Defense::Median);
        assert!(matches!(nothing.aggregate_train(0, vec![]), Aggregated::Skipped { .. }));
    }

    #[test]
    fn local_shares_nothing() {
        let mut local = AverageShared::new(Method::Local, set(&[1.0]));
        let tasks = local.configure_train(0, &[client(0)]);
        assert!(tasks[0].parameters.is_empty() && !tasks[0].upload.matches("w"));
    }

    #[test]
    fn no_updates_keeps_the_previous_model() {
        let mut strategy = AverageShared::new(Method::FedAvg, set(&[1.0]));
        assert!(matches!(strategy.aggregate_train(0, vec![]), Aggregated::Skipped { .. }));
        assert_eq!(strategy.global().unwrap().get("w").unwrap().values(), vec![1.0]);
    }
}
