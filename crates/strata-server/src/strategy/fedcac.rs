//! FedCAC: Wu et al., "Bold but Cautious: Unlocking the Potential of Personalized Federated
//! Learning through Cautiously Aggressive Collaboration", ICCV 2023. The semantics follow the
//! author's code in the Fling framework (`fedcac_client.py`, `fedcac_group.py`), pinned in
//! `shared/methods/fedcac.md`; the arithmetic lives in [`strata_methods::fedcac`].
//!
//! Each client trains its own model and sends every trainable tensor plus a bit-packed mask of
//! its *critical* entries (per tensor, the top τ share by sensitivity). The server averages the
//! trained tensors into w̄ (sample-weighted), lets clients with similar masks collaborate
//! (overlap `o_ij ≥ θ_t`, θ rising from the mean overlap to the maximum over β rounds), and
//! sends client i `w_i = m_i ⊙ u_i + (1 − m_i) ⊙ w̄`, where `u_i` is the unweighted mean of its
//! collaborators' trained tensors. Round 0 customizes too (factor 1/β).
//!
//! Norm layers' running statistics are neither uploaded, masked nor customized: clients keep
//! theirs. The models sent still hold the initial statistics (w̄ is a full model whose running
//! statistics are never aggregated); the client half ignores them.
//!
//! **Partial participation** (the paper assumes every client reports every round): ō, o_max,
//! θ_t and the collaborator sets are computed among the clients that reported this round. A
//! known client that did not report keeps its last mask and customized part and gets the fresh
//! w̄ for the rest. The server stores, per client, only its last mask and its next-round model
//! w_i: the critical entries of w_i *are* its customized part (`m ⊙ w_i = m ⊙ u_i`), so an
//! absent client's new model is `combine(m_i, w_i, w̄_new)`, with no copy of u_i kept. A round
//! writes each model over the client's previous one (see `FedCac::fold`).
//! Every w_i is w̄ outside its critical entries, so the state saved for `--resume` holds w̄
//! and, per client, only the mask and those entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use strata_core::defense::{Defense, NormBound};
use strata_core::mask::BitMask;
use strata_core::method::Method;
use strata_core::records::DefenseReport;
use strata_core::selection::{RUNNING_STATS, Selector};
use strata_core::tensor::{NamedTensor, TensorError, TensorSet};
use strata_methods::fedcac::{self, Collaboration};
use strata_methods::robust::{self, Contribution};
use strata_proto::text::shown;
use tracing::{debug, warn};

use super::{Aggregated, Instruction, RestoreError, Snapshot, Strategy};
use crate::client_info::ClientInfo;
use crate::validate::ValidUpdate;

/// What the server keeps for a client that has trained at least once.
struct Personal {
    /// The critical mask of its last training round, over the covered tensors.
    mask: BitMask,
    /// Its next-round model w_i (every tensor of the model).
    model: Arc<TensorSet>,
}

pub struct FedCac {
    /// w̄: the full model; covered tensors are the sample-weighted average of the last round.
    global: Arc<TensorSet>,
    /// Whether w̄ has been aggregated at least once (else it is the initial model).
    aggregated: bool,
    tau: f64,
    beta: f64,
    /// The tensors uploaded, masked and customized: all but running statistics.
    covered: Selector,
    clients: HashMap<uuid::Uuid, Personal>,
    last_threshold: Option<f64>,
    /// Bounds each update's change from the model its client was sent, before anything else.
    norm_bound: Option<NormBound>,
}

impl FedCac {
    pub fn new(initial: TensorSet, tau: f64, beta: f64) -> Self {
        Self {
            global: Arc::new(initial),
            aggregated: false,
            tau,
            beta,
            covered: Selector::all().except(RUNNING_STATS),
            clients: HashMap::new(),
            last_threshold: None,
            norm_bound: None,
        }
    }

    /// Bounds the norm of each client's change (from the model it was sent) before the round's
    /// arithmetic; the only robust rule that fits a method building one model per client.
    pub fn with_norm_bound(mut self, bound: Option<NormBound>) -> Self {
        self.norm_bound = bound;
        self
    }

    /// The updates with each change from what its client was sent scaled to the bound.
    fn bounded(&self, mode: NormBound, updates: Vec<ValidUpdate>) -> Result<(Vec<ValidUpdate>, DefenseReport), String> {
        let sent: Vec<TensorSet> = updates
            .iter()
            .map(|u| {
                let model = self.clients.get(&u.client().id).map_or(&self.global, |p| &p.model);
                model.select(|n| u.parameters().get(n).is_some())
            })
            .collect();
        let contributions: Vec<Contribution> = updates
            .iter()
            .zip(&sent)
            .map(|(u, reference)| Contribution {
                client: u.client().index,
                reference,
                update: u.parameters(),
                weight: u.num_samples() as f64,
            })
            .collect();
        let (parameters, report) = robust::bound_norms(mode, &contributions).map_err(|e| format!("norm bound: {e}"))?;
        Ok((updates.into_iter().zip(parameters).map(|(u, p)| u.with_parameters(p)).collect(), report))
    }

    /// θ of the last aggregation (+∞ when a single client reported).
    pub fn last_threshold(&self) -> Option<f64> {
        self.last_threshold
    }

    /// Each client's own model, or w̄ for a client that has never trained.
    fn send_personal(&self, clients: &[ClientInfo]) -> Vec<Instruction> {
        clients
            .iter()
            .map(|c| {
                let (parameters, is_global) = match self.clients.get(&c.id) {
                    Some(p) => (Arc::clone(&p.model), false),
                    // w̄ counts as the global model only while untouched: after aggregation its
                    // running statistics are the initial ones, and clients train on their own.
                    None => (Arc::clone(&self.global), !self.aggregated),
                };
                let mut i = Instruction::new(*c, parameters, is_global, self.covered.clone());
                i.mask_over = Some(self.covered.clone());
                i
            })
            .collect()
    }

    /// Folds a round into the state, or leaves it whole and says why. The reporting clients'
    /// previous models are taken as the buffers their next ones are written into (when no
    /// task still holds them), and absent clients' models are refreshed in place, so that a
    /// round allocates no model per client: on this machine fresh memory costs more than the
    /// arithmetic (the kernel clears every page first).
    fn fold(&mut self, round: u64, updates: &[&ValidUpdate]) -> Result<Collaboration, String> {
        let masks: Vec<&BitMask> = updates.iter().filter_map(|u| u.mask()).collect();
        let collab = fedcac::collaboration(&masks, round, self.beta).map_err(|e| format!("overlaps: {e}"))?;
        for (id, p) in &self.clients {
            if fedcac::covered_len(&p.model, &self.covered) != p.mask.len() {
                return Err(format!("client {id}'s stored mask does not cover its model"));
            }
        }
        let models: Vec<&TensorSet> = updates.iter().map(|u| u.parameters()).collect();
        let weights: Vec<f64> = updates.iter().map(|u| u.num_samples() as f64).collect();
        let uploads =
            fedcac::Uploads { models: &models, weights: &weights, masks: &masks, collaborators: &collab.collaborators };

        // Each reporting client's previous state, and the buffer its next model is written into.
        let mut previous: Vec<Option<Personal>> = updates.iter().map(|u| self.clients.remove(&u.client().id)).collect();
        let mut reused = Vec::with_capacity(updates.len());
        let mut buffers: Vec<TensorSet> = previous
            .iter_mut()
            .map(|p| match p.as_mut().and_then(|p| Arc::get_mut(&mut p.model)) {
                Some(model) => {
                    reused.push(true);
                    std::mem::replace(model, TensorSet::zeros(&[]))
                }
                None => {
                    reused.push(false);
                    (*self.global).clone()
                }
            })
            .collect();
        let mut average = (*self.global).clone();
        if let Err(e) = fedcac::customize(uploads, &mut average, &mut buffers, &self.covered) {
            // Nothing was written: the previous models go back as they were.
            for (((u, p), buffer), reused) in updates.iter().zip(previous).zip(buffers).zip(reused) {
                if let Some(mut p) = p {
                    if reused {
                        p.model = Arc::new(buffer);
                    }
                    self.clients.insert(u.client().id, p);
                }
            }
            return Err(format!("customized models: {e}"));
        }
        // Absent clients: their critical entries of w_i are their customized part.
        for p in self.clients.values_mut() {
            // The masks were checked against the models above: neither can fail.
            let refreshed = match Arc::get_mut(&mut p.model) {
                Some(model) => fedcac::refresh(&p.mask, model, &average, &self.covered),
                None => fedcac::combine(&p.mask, &p.model, &average, &self.covered).map(|m| p.model = Arc::new(m)),
            };
            if let Err(e) = refreshed {
                warn!(round, "fedcac: an absent client's model kept as it was: {e}");
            }
        }
        for ((u, mask), model) in updates.iter().zip(&masks).zip(buffers) {
            self.clients.insert(u.client().id, Personal { mask: (*mask).clone(), model: Arc::new(model) });
        }
        self.global = Arc::new(average);
        Ok(collab)
    }
}

impl Strategy for FedCac {
    fn configure_train(&mut self, _round: u64, picked: &[ClientInfo]) -> Vec<Instruction> {
        self.send_personal(picked)
    }

    fn configure_evaluate(&mut self, _round: u64, clients: &[ClientInfo]) -> Vec<Instruction> {
        self.send_personal(clients)
    }

    fn aggregate_train(&mut self, round: u64, updates: Vec<ValidUpdate>) -> Aggregated {
        let (updates, defense) = match self.norm_bound {
            Some(mode) if !updates.is_empty() => match self.bounded(mode, updates) {
                Ok((bounded, report)) => (bounded, Some(report)),
                Err(reason) => return Aggregated::Skipped { reason },
            },
            _ => (updates, None),
        };
        let covered_len = fedcac::covered_len(&self.global, &self.covered);
        let usable: Vec<&ValidUpdate> = updates
            .iter()
            .filter(|u| match u.mask() {
                None => {
                    warn!(round, client = u.client().index, "fedcac: update without a critical mask, skipped");
                    false
                }
                Some(m) if m.len() != covered_len => {
                    warn!(
                        round,
                        client = u.client().index,
                        bits = m.len(),
                        expected = covered_len,
                        "fedcac: mask length does not match the covered tensors, skipped"
                    );
                    false
                }
                Some(_) => true,
            })
            .collect();
        if usable.is_empty() {
            return Aggregated::Skipped { reason: "no update with a critical mask".into() };
        }
        match self.fold(round, &usable) {
            Ok(collab) => {
                debug!(
                    round,
                    theta = collab.theta,
                    collaborators = ?collab.collaborators.iter().map(Vec::len).collect::<Vec<_>>(),
                    "fedcac: collaboration"
                );
                self.aggregated = true;
                self.last_threshold = Some(collab.theta);
                Aggregated::Updated { defense, privacy: None }
            }
            Err(reason) => Aggregated::Skipped { reason },
        }
    }

    fn global(&self) -> Option<Arc<TensorSet>> {
        Some(Arc::clone(&self.global))
    }

    /// `global/<name>` for w̄; per client `critical/<uuid>`, the critical entries of w_i in mask
    /// order (the rest of w_i is w̄: half the bytes of whole models at τ = 0.5), and its mask
    /// under `<uuid>` in the snapshot's masks (the meta has its length).
    fn snapshot(&self) -> Snapshot {
        let mut tensors = Vec::new();
        let prefixed = |prefix: &str, set: &TensorSet| -> Vec<NamedTensor> {
            set.tensors().iter().map(|t| t.clone().with_name(format!("{prefix}{}", t.name()))).collect()
        };
        tensors.extend(prefixed("global/", &self.global));
        let mut meta = BTreeMap::from([
            ("method".to_string(), "fedcac".to_string()),
            ("aggregated".to_string(), self.aggregated.to_string()),
        ]);
        if let Some(t) = self.last_threshold {
            meta.insert("last_threshold".into(), t.to_string());
        }
        let mut masks = BTreeMap::new();
        let mut ids: Vec<&uuid::Uuid> = self.clients.keys().collect();
        ids.sort();
        for id in ids {
            let p = &self.clients[id];
            let critical = fedcac::critical_values(&p.mask, &p.model, &self.covered)
                .expect("a client's mask runs over the covered tensors of its model");
            tensors.push(NamedTensor::new(format!("critical/{id}"), vec![critical.len()], critical).expect("a vector"));
            masks.insert(id.to_string(), p.mask.clone());
            meta.insert(format!("mask_bits/{id}"), p.mask.len().to_string());
        }
        Snapshot { tensors: Arc::new(TensorSet::new(tensors).expect("prefixed names are distinct")), masks, meta }
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<(), RestoreError> {
        super::same_method(&snapshot, Method::FedCac)?;
        let part = |prefix: &str| -> Result<TensorSet, TensorError> {
            let tensors = snapshot
                .tensors
                .tensors()
                .iter()
                .filter_map(|t| t.name().strip_prefix(prefix).map(|n| t.clone().with_name(n)))
                .collect();
            TensorSet::new(tensors)
        };
        let global = part("global/")?;
        super::same_specs(&self.global, &global, "global model")?;
        let covered_len = fedcac::covered_len(&global, &self.covered);
        let mut clients = HashMap::new();
        for (key, bits) in snapshot.meta.iter().filter_map(|(k, v)| k.strip_prefix("mask_bits/").map(|id| (id, v))) {
            let bad = |problem: String| RestoreError::Client { client: shown(key), problem };
            let id = uuid::Uuid::parse_str(key).map_err(|e| bad(format!("not a client id: {e}")))?;
            let bits: usize = bits.parse().map_err(|e| bad(format!("mask length: {e}")))?;
            let mask = match snapshot.masks.get(key) {
                Some(mask) => mask.clone(),
                // States saved before 2026-12-02 hold the mask's bytes as the bits of f32 words.
                None => {
                    let words =
                        snapshot.tensors.get(&format!("mask/{id}")).ok_or_else(|| bad("no saved mask".into()))?;
                    let bytes: Vec<u8> = words.values().iter().flat_map(|w| w.to_bits().to_le_bytes()).collect();
                    BitMask::from_bytes(bits, &bytes[..bits.div_ceil(8).min(bytes.len())])
                        .map_err(|e| bad(format!("mask: {e}")))?
                }
            };
            if mask.len() != covered_len || mask.len() != bits {
                let problem = format!("its mask has {} bits, the model {covered_len} covered values", mask.len());
                return Err(bad(problem));
            }
            let model = match snapshot.tensors.get(&format!("critical/{id}")) {
                Some(critical) => fedcac::with_critical_values(&mask, critical.values(), &global, &self.covered)
                    .map_err(|e| bad(format!("model: {e}")))?,
                // States saved before 2026-11-27 hold whole models.
                None => part(&format!("model/{id}/"))?,
            };
            super::same_specs(&self.global, &model, "client model")?;
            clients.insert(id, Personal { mask, model: Arc::new(model) });
        }
        self.global = Arc::new(global);
        self.aggregated = snapshot.meta.get("aggregated").is_some_and(|v| v == "true");
        self.last_threshold = snapshot.meta.get("last_threshold").and_then(|v| v.parse().ok());
        self.clients = clients;
        Ok(())
    }

    fn summary(&self) -> Vec<(&'static str, String)> {
        vec![
            ("method", "fedcac".into()),
            ("tau", self.tau.to_string()),
            ("beta", self.beta.to_string()),
            ("customized", "every tensor except running statistics".into()),
            ("norm bound", self.norm_bound.map_or("none".into(), |b| Defense::NormBound(b).to_string())),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::tensor::NamedTensor;

    fn client(index: u32) -> ClientInfo {
        ClientInfo { id: uuid::Uuid::from_u128(index as u128 + 1), index }
    }

    fn t(name: &str, values: &[f32]) -> NamedTensor {
        NamedTensor::new(name, vec![values.len()], values.to_vec()).unwrap()
    }

    /// The model: 4 body weights, one running statistic, 2 head weights (6 covered entries).
    fn model(body: [f32; 4], stat: f32, head: [f32; 2]) -> TensorSet {
        TensorSet::new(vec![t("body.w", &body), t("body.bn.running_mean", &[stat]), t("head.w", &head)]).unwrap()
    }

    /// What a client uploads: the covered tensors only.
    fn upload(body: [f32; 4], head: [f32; 2]) -> TensorSet {
        TensorSet::new(vec![t("body.w", &body), t("head.w", &head)]).unwrap()
    }

    fn bits(s: &str) -> BitMask {
        BitMask::from_bools(s.chars().map(|c| c == '1'))
    }

    fn update(index: u32, body: [f32; 4], head: [f32; 2], n: u64, mask: &str) -> ValidUpdate {
        ValidUpdate::for_tests(client(index), upload(body, head), n).with_mask(bits(mask))
    }

    /// Three clients: 0 and 1 have similar masks (o = 2/3), 2 overlaps little (o ≤ 1/3).
    fn three_updates() -> Vec<ValidUpdate> {
        vec![
            update(0, [1.0, 2.0, 3.0, 4.0], [5.0, 6.0], 1, "111000"),
            update(1, [3.0, 4.0, 5.0, 6.0], [7.0, 8.0], 3, "110100"),
            update(2, [10.0; 4], [10.0; 2], 4, "000111"),
        ]
    }

    /// The model the strategy would send `index` (train task).
    fn sent(strategy: &mut FedCac, index: u32) -> (Vec<f32>, Vec<f32>, Vec<f32>, bool) {
        let task = strategy.configure_train(0, &[client(index)]).remove(0);
        let p = &task.parameters;
        let v = |n: &str| p.get(n).unwrap().values().to_vec();
        (v("body.w"), v("head.w"), v("body.bn.running_mean"), task.parameters_are_global)
    }

    fn initial() -> TensorSet {
        model([0.0; 4], 7.0, [0.0; 2])
    }

    #[test]
    fn a_norm_bound_scales_each_change_from_what_the_client_was_sent() {
        let mut strategy = FedCac::new(initial(), 0.5, 2.0).with_norm_bound(Some(NormBound::Fixed(1.0)));
        let Aggregated::Updated { defense: Some(report), .. } = strategy.aggregate_train(0, three_updates()) else {
            panic!("round 0 aggregates");
        };
        assert_eq!(
            (report.rule.as_str(), report.bound, report.clipped.clone()),
            ("norm-bound", Some(1.0), vec![0, 1, 2])
        );
        // Every bounded change from the zero model has norm 1, so their average has at most 1.
        let global = strategy.global().unwrap();
        let norm: f64 = ["body.w", "head.w"]
            .iter()
            .flat_map(|n| global.get(n).unwrap().values().to_vec())
            .map(|v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        assert!(norm <= 1.0 + 1e-6 && norm > 0.1, "{norm}");
        // Round 1: client 0 is measured from the model it was sent, its own w_0.
        let (body, head, _, _) = sent(&mut strategy, 0);
        let near = update(0, [body[0] + 0.5, body[1], body[2], body[3]], [head[0], head[1]], 1, "111000");
        let Aggregated::Updated { defense: Some(report), .. } = strategy.aggregate_train(1, vec![near]) else {
            panic!("round 1 aggregates");
        };
        assert!(report.clipped.is_empty(), "a change of 0.5 from w_0 is within the bound: {report:?}");
    }

    #[test]
    fn tasks_upload_and_mask_everything_but_running_stats() {
        let mut strategy = FedCac::new(initial(), 0.5, 100.0);
        let tasks = strategy.configure_train(0, &[client(0), client(1)]);
        assert!(Arc::ptr_eq(&tasks[0].parameters, &tasks[1].parameters), "round 0: everyone gets w̄");
        for task in &tasks {
            assert!(task.parameters_are_global);
            assert!(task.upload.matches("body.bn.weight") && task.upload.matches("head.w"));
            assert!(!task.upload.matches("body.bn.running_mean") && !task.upload.matches("body.bn.running_var"));
            assert_eq!(task.mask_over.as_ref(), Some(&task.upload));
        }
        assert_eq!(strategy.summary()[1], ("tau", "0.5".into()));
        assert_eq!(strategy.summary()[2], ("beta", "100".into()));
    }

    #[test]
    fn a_restored_snapshot_sends_what_the_original_would() {
        let mut strategy = FedCac::new(initial(), 0.5, 2.0);
        assert!(matches!(strategy.aggregate_train(0, three_updates()), Aggregated::Updated { .. }));
        let snapshot = strategy.snapshot();
        let mut restored = FedCac::new(initial(), 0.5, 2.0);
        restored.restore(snapshot.clone()).unwrap();
        for i in 0..3 {
            assert_eq!(sent(&mut restored, i), sent(&mut strategy, i), "client {i}");
        }
        assert_eq!(restored.snapshot(), snapshot);
        assert_eq!(restored.last_threshold(), strategy.last_threshold());
        // Both go on the same way.
        assert!(matches!(strategy.aggregate_train(1, three_updates()), Aggregated::Updated { .. }));
        assert!(matches!(restored.aggregate_train(1, three_updates()), Aggregated::Updated { .. }));
        assert_eq!(restored.snapshot(), strategy.snapshot());
        // Client 2 misses a round: its model keeps its critical part and takes the new w̄.
        let two = || three_updates().into_iter().take(2).collect::<Vec<_>>();
        assert!(matches!(strategy.aggregate_train(2, two()), Aggregated::Updated { .. }));
        let mut restored = FedCac::new(initial(), 0.5, 2.0);
        restored.restore(strategy.snapshot()).unwrap();
        for i in 0..3 {
            assert_eq!(sent(&mut restored, i), sent(&mut strategy, i), "client {i} after a round without client 2");
        }
        // The state holds w̄ (7 values), each client's 3 critical values, and its mask as bits.
        let snapshot_now = strategy.snapshot();
        let saved: usize = snapshot_now.tensors.tensors().iter().map(|t| t.numel()).sum();
        assert_eq!(saved, 7 + 3 * 3);
        assert_eq!(snapshot_now.masks.len(), 3);
        assert!(snapshot_now.masks.values().all(|m| m.len() == 6), "one bit per covered value");

        let mut other_model = FedCac::new(model([0.0; 4], 7.0, [0.0; 2]).select(|n| n != "head.w"), 0.5, 2.0);
        assert!(other_model.restore(snapshot).unwrap_err().to_string().contains("does not match"));
    }

    #[test]
    fn a_state_saved_with_whole_client_models_still_restores() {
        let mut strategy = FedCac::new(initial(), 0.5, 2.0);
        assert!(matches!(strategy.aggregate_train(0, three_updates()), Aggregated::Updated { .. }));
        // The earlier layout: `model/<uuid>/<name>` for every tensor of w_i.
        let mut snapshot = strategy.snapshot();
        let mut tensors: Vec<NamedTensor> =
            snapshot.tensors.tensors().iter().filter(|t| !t.name().starts_with("critical/")).cloned().collect();
        for i in 0..3 {
            let id = client(i).id;
            for t in strategy.clients[&id].model.tensors() {
                tensors.push(t.clone().with_name(format!("model/{id}/{}", t.name())));
            }
        }
        snapshot.tensors = Arc::new(TensorSet::new(tensors).unwrap());
        let mut restored = FedCac::new(initial(), 0.5, 2.0);
        restored.restore(snapshot.clone()).unwrap();
        for i in 0..3 {
            assert_eq!(sent(&mut restored, i), sent(&mut strategy, i), "client {i}");
        }
        // A mask that does not cover the model is refused, not trusted.
        let id = client(0).id;
        snapshot.meta.insert(format!("mask_bits/{id}"), "5".into());
        let err = FedCac::new(initial(), 0.5, 2.0).restore(snapshot).unwrap_err();
        assert!(matches!(&err, RestoreError::Client { client, .. } if *client == id.to_string()), "{err}");
    }

    #[test]
    fn a_state_saved_with_masks_as_f32_words_still_restores() {
        let mut strategy = FedCac::new(initial(), 0.5, 2.0);
        assert!(matches!(strategy.aggregate_train(0, three_updates()), Aggregated::Updated { .. }));
        // The earlier layout: `mask/<uuid>`, the mask's bytes as the bits of f32 words.
        let mut snapshot = strategy.snapshot();
        let mut tensors = snapshot.tensors.tensors().to_vec();
        for (id, mask) in std::mem::take(&mut snapshot.masks) {
            let words: Vec<f32> = mask
                .to_bytes()
                .chunks(4)
                .map(|c| {
                    let mut w = [0u8; 4];
                    w[..c.len()].copy_from_slice(c);
                    f32::from_bits(u32::from_le_bytes(w))
                })
                .collect();
            tensors.push(NamedTensor::new(format!("mask/{id}"), vec![words.len()], words).unwrap());
        }
        snapshot.tensors = Arc::new(TensorSet::new(tensors).unwrap());
        let mut restored = FedCac::new(initial(), 0.5, 2.0);
        restored.restore(snapshot).unwrap();
        assert_eq!(restored.snapshot(), strategy.snapshot());
    }

    #[test]
    fn three_clients_by_hand() {
        // β = 2, round 0: overlaps o_01 = o_10 = 1 − 2/6 = 2/3, o_02 = o_20 = 0,
        // o_12 = o_21 = 1 − 4/6 = 1/3; ō = 1/3, o_max = 2/3, θ = 1/3 + ½·(1/3) = 1/2.
        // C_0 = C_1 = {0, 1}, C_2 = {2}.
        let mut strategy = FedCac::new(initial(), 0.5, 2.0);
        assert!(matches!(strategy.aggregate_train(0, three_updates()), Aggregated::Updated { .. }));
        assert!((strategy.last_threshold().unwrap() - 0.5).abs() < 1e-12);

        // w̄ with weights 1, 3, 4: body [50, 54, 58, 62]/8, head [66, 70]/8; statistics untouched.
        let global = strategy.global().unwrap();
        assert_eq!(global.get("body.w").unwrap().values(), vec![6.25, 6.75, 7.25, 7.75]);
        assert_eq!(global.get("head.w").unwrap().values(), vec![8.25, 8.75]);
        assert_eq!(global.get("body.bn.running_mean").unwrap().values(), vec![7.0]);

        // u_0 = u_1 = unweighted mean of clients 0 and 1: body [2, 3, 4, 5], head [6, 7].
        let (body, head, stat, is_global) = sent(&mut strategy, 0); // mask 111|000
        assert_eq!((body, head, stat, is_global), (vec![2.0, 3.0, 4.0, 7.75], vec![8.25, 8.75], vec![7.0], false));
        let (body, head, ..) = sent(&mut strategy, 1); // mask 110|100
        assert_eq!((body, head), (vec![2.0, 3.0, 7.25, 5.0], vec![8.25, 8.75]));
        // u_2 = client 2's own values.
        let (body, head, ..) = sent(&mut strategy, 2); // mask 000|111
        assert_eq!((body, head), (vec![6.25, 6.75, 7.25, 10.0], vec![10.0, 10.0]));
        // A client that never trained gets w̄, no longer flagged as the (untouched) global model.
        let (body, _, _, is_global) = sent(&mut strategy, 9);
        assert_eq!((body, is_global), (vec![6.25, 6.75, 7.25, 7.75], false));
        // Evaluation sends the same personal model.
        let eval = strategy.configure_evaluate(1, &[client(2)]).remove(0);
        assert_eq!(eval.parameters.get("head.w").unwrap().values(), vec![10.0, 10.0]);
    }

    #[test]
    fn round_zero_customizes_with_factor_one_over_beta() {
        // β = 1.5: θ_0 = 1/3 + (1/1.5)·(1/3) = 5/9 ≤ 2/3, so clients 0 and 1 collaborate at
        // round 0 (a round-0 skip would leave them w̄ or the initial weights).
        let mut strategy = FedCac::new(initial(), 0.5, 1.5);
        assert!(matches!(strategy.aggregate_train(0, three_updates()), Aggregated::Updated { .. }));
        assert!((strategy.last_threshold().unwrap() - 5.0 / 9.0).abs() < 1e-12);
        assert_eq!(sent(&mut strategy, 0).0, vec![2.0, 3.0, 4.0, 7.75]);
        // θ_1 = 1/3 + (2/1.5)·(1/3) = 7/9 > 2/3: the same round one round later, nobody collaborates.
        let mut strategy = FedCac::new(initial(), 0.5, 1.5);
        assert!(matches!(strategy.aggregate_train(1, three_updates()), Aggregated::Updated { .. }));
        assert!((strategy.last_threshold().unwrap() - 7.0 / 9.0).abs() < 1e-12);
        assert_eq!(sent(&mut strategy, 0).0, vec![1.0, 2.0, 3.0, 7.75]);
    }

    #[test]
    fn from_round_beta_on_nobody_collaborates() {
        // β = 1, t = 1: θ = 1/3 + 2·(1/3) = 1 > o_max; critical entries are each client's own.
        let mut strategy = FedCac::new(initial(), 0.5, 1.0);
        assert!(matches!(strategy.aggregate_train(1, three_updates()), Aggregated::Updated { .. }));
        assert!(strategy.last_threshold().unwrap() > 2.0 / 3.0);
        let (body, head, ..) = sent(&mut strategy, 0); // 111|000
        assert_eq!((body, head), (vec![1.0, 2.0, 3.0, 7.75], vec![8.25, 8.75]));
        let (body, head, ..) = sent(&mut strategy, 1); // 110|100
        assert_eq!((body, head), (vec![3.0, 4.0, 7.25, 6.0], vec![8.25, 8.75]));
        let (body, head, ..) = sent(&mut strategy, 2); // 000|111
        assert_eq!((body, head), (vec![6.25, 6.75, 7.25, 10.0], vec![10.0, 10.0]));
    }

    use strata_methods::aggregate::weighted_average;

    fn bits_of(set: &TensorSet) -> Vec<u32> {
        set.tensors().iter().flat_map(|t| t.values().iter().map(|x| x.to_bits())).collect()
    }

    /// The fold forms the customized models block by block, once per distinct collaborator set;
    /// they must be, to the bit, `combine(m_i, mean of C_i's uploads, w̄)` formed the direct way.
    #[test]
    fn customized_models_equal_the_direct_formula_to_the_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let covered = Selector::all().except(RUNNING_STATS);
        let random = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
        };
        let big = |rng: &mut rand_chacha::ChaCha8Rng| {
            // Over 2 × 16 blocks: several blocks, and a share for each of two threads.
            TensorSet::new(vec![t("body.w", &random(rng, 20_003)), t("head.w", &random(rng, 7))]).unwrap()
        };
        let initial = {
            let mut set = big(&mut rng).tensors().to_vec();
            set.insert(1, t("body.bn.running_mean", &[0.5]));
            TensorSet::new(set).unwrap()
        };
        // Rounds 0 and 1 give collaborator sets of several sizes; at round ≥ β all are {i};
        // τ = 1 masks (all ones) put every client in one group that shares a whole mean.
        for (round, density) in [(0, 0.5), (1, 0.3), (5, 0.5), (0, 1.0)] {
            let updates: Vec<ValidUpdate> = (0..7)
                .map(|i| {
                    let mask = BitMask::from_bools((0..20_010).map(|_| rng.random_bool(density)));
                    ValidUpdate::for_tests(client(i), big(&mut rng), 1 + i as u64).with_mask(mask)
                })
                .collect();
            let refs: Vec<&ValidUpdate> = updates.iter().collect();
            let mut strategy = FedCac::new(initial.clone(), 0.5, 5.0);
            let collab = strategy.fold(round, &refs).unwrap();
            let (global, next) = (&strategy.global, &strategy.clients);
            let weighted = updates.iter().map(|u| (u.parameters(), u.num_samples() as f64));
            let mut expected_global = initial.clone();
            expected_global.overwrite_from(&weighted_average(weighted).unwrap()).unwrap();
            assert_eq!(bits_of(global), bits_of(&expected_global), "w̄ of round {round}");
            let sizes: Vec<usize> = collab.collaborators.iter().map(Vec::len).collect();
            for (i, u) in updates.iter().enumerate() {
                let mean =
                    weighted_average(collab.collaborators[i].iter().map(|&j| (updates[j].parameters(), 1.0))).unwrap();
                let expected = fedcac::combine(u.mask().unwrap(), &mean, global, &covered).unwrap();
                let got = &next[&u.client().id].model;
                for (a, b) in got.tensors().iter().zip(expected.tensors()) {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(a.values()),
                        bits(b.values()),
                        "round {round}, client {i}, {}, sets {sizes:?}",
                        a.name()
                    );
                }
            }
        }
    }

    /// A round writes a reporting client's next model over its previous one when nothing else
    /// holds it, and into fresh memory when something does (a task still being served), with
    /// the same values either way.
    #[test]
    fn a_round_reuses_a_clients_previous_model_unless_it_is_held() {
        let values_at =
            |strategy: &FedCac, index: u32| strategy.clients[&client(index).id].model.tensors()[0].values().as_ptr();
        let mut reused = FedCac::new(initial(), 0.5, 2.0);
        let mut held = FedCac::new(initial(), 0.5, 2.0);
        for strategy in [&mut reused, &mut held] {
            assert!(matches!(strategy.aggregate_train(0, three_updates()), Aggregated::Updated { .. }));
        }
        let before = values_at(&reused, 0);
        let task = held.configure_train(1, &[client(0)]).remove(0);
        let sent = task.parameters.as_ref().clone();
        for strategy in [&mut reused, &mut held] {
            assert!(matches!(strategy.aggregate_train(1, three_updates()), Aggregated::Updated { .. }));
        }
        assert_eq!(values_at(&reused, 0), before, "written in place");
        assert_ne!(values_at(&held, 0), task.parameters.tensors()[0].values().as_ptr());
        assert_eq!(*task.parameters, sent, "what was sent is left alone");
        for index in 0..3 {
            assert_eq!(reused.clients[&client(index).id].model, held.clients[&client(index).id].model);
        }
    }

    #[test]
    fn absent_client_keeps_its_customized_part_and_gets_the_fresh_average() {
        let mut strategy = FedCac::new(initial(), 0.5, 2.0);
        assert!(matches!(strategy.aggregate_train(0, three_updates()), Aggregated::Updated { .. }));
        // Round 1: only clients 0 and 1 report, with equal masks (o = 1 = ō = o_max = θ).
        let round1 = vec![update(0, [2.0; 4], [2.0; 2], 1, "111000"), update(1, [4.0; 4], [4.0; 2], 1, "111000")];
        assert!(matches!(strategy.aggregate_train(1, round1), Aggregated::Updated { .. }));
        assert_eq!(strategy.last_threshold(), Some(1.0));
        assert_eq!(strategy.global().unwrap().get("body.w").unwrap().values(), vec![3.0; 4]);
        assert_eq!(sent(&mut strategy, 0).0, vec![3.0; 4]);
        // Client 2 (mask 000|111) keeps body[3] and the head from round 0's customization.
        let (body, head, stat, _) = sent(&mut strategy, 2);
        assert_eq!((body, head, stat), (vec![3.0, 3.0, 3.0, 10.0], vec![10.0, 10.0], vec![7.0]));
    }

    #[test]
    fn updates_without_a_usable_mask_are_skipped() {
        let mut strategy = FedCac::new(initial(), 0.5, 2.0);
        let updates = vec![
            update(0, [2.0; 4], [2.0; 2], 1, "111000"),
            ValidUpdate::for_tests(client(1), upload([100.0; 4], [100.0; 2]), 1),
            update(2, [100.0; 4], [100.0; 2], 1, "111"),
        ];
        assert!(matches!(strategy.aggregate_train(0, updates), Aggregated::Updated { .. }));
        assert_eq!(strategy.global().unwrap().get("body.w").unwrap().values(), vec![2.0; 4]);
        assert_eq!(strategy.last_threshold(), Some(f64::INFINITY), "one usable client");
        // Client 1's update was not used: it gets w̄, which is no longer the untouched model.
        let (body, _, _, is_global) = sent(&mut strategy, 1);
        assert_eq!((body, is_global), (vec![2.0; 4], false));
    }

    #[test]
    fn nothing_usable_keeps_the_previous_state() {
        let mut strategy = FedCac::new(initial(), 0.5, 2.0);
        let updates = vec![ValidUpdate::for_tests(client(0), upload([1.0; 4], [1.0; 2]), 1)];
        assert!(matches!(strategy.aggregate_train(0, updates), Aggregated::Skipped { .. }));
        assert!(matches!(strategy.aggregate_train(0, vec![]), Aggregated::Skipped { .. }));
        let (body, _, _, is_global) = sent(&mut strategy, 0);
        assert_eq!((body, is_global), (vec![0.0; 4], true));
        assert_eq!(strategy.last_threshold(), None);
    }
}
