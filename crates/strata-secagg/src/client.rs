//! The client's half: fresh keys, shares of its two secrets sealed to its neighbours, its
//! vector masked, and at most one unmask answer, refused when it would hand the server both
//! secrets of any client. Stages run in order, once each.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::SecAggError;
use crate::keys::{self, PublicKeys, Secrets};
use crate::messages::{SealedShares, UnmaskReply, UnmaskRequest};
use crate::params::RoundParams;
use crate::{prg, shamir};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    ShareKeys,
    Mask,
    Unmask,
    Done,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::ShareKeys => "share-keys",
            Stage::Mask => "masking",
            Stage::Unmask => "unmask",
            Stage::Done => "done",
        }
    }
}

/// The two shares one neighbour holds for another.
struct Held {
    self_mask: Vec<u8>,
    mask_key: Vec<u8>,
}

/// One client in one round of secure aggregation.
pub struct SecAggClient {
    id: u32,
    context: Vec<u8>,
    params: RoundParams,
    stage: Stage,
    secrets: Secrets,
    self_seed: [u8; 32],
    /// Stage 1's neighbourhood with its keys, the client included.
    neighbours: BTreeMap<u32, PublicKeys>,
    /// Shares held for each neighbour that sealed some to us (and our own).
    held: BTreeMap<u32, Held>,
}

impl std::fmt::Debug for SecAggClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggClient").field("id", &self.id).field("stage", &self.stage).finish_non_exhaustive()
    }
}

impl SecAggClient {
    /// Stage 0: the round's parameters (checked) and a `context` binding every key and
    /// message to this round (the server's run, round and task; the layout of the vector).
    /// Returns the client and the public keys to send.
    pub fn setup(id: u32, context: &[u8], params: RoundParams) -> Result<(Self, PublicKeys), SecAggError> {
        params.check()?;
        let secrets = Secrets::generate();
        let public = secrets.public();
        let client = Self {
            id,
            context: context.to_vec(),
            params,
            stage: Stage::ShareKeys,
            secrets,
            self_seed: keys::random_32(),
            neighbours: BTreeMap::new(),
            held: BTreeMap::new(),
        };
        Ok((client, public))
    }

    /// Starts `stage` if it is the one due. The client counts as done until the stage
    /// succeeds (which sets the next one): a stage refused or broken half way ends the
    /// client's part in the round, so no later stage runs on what it left behind.
    fn enter(&mut self, stage: Stage) -> Result<(), SecAggError> {
        let at = self.stage;
        self.stage = Stage::Done;
        if at != stage {
            return Err(SecAggError::OutOfOrder { stage: stage.name(), at: at.name() });
        }
        Ok(())
    }

    /// Stage 1: the neighbours' keys (ours among them). Shares both secrets among them and
    /// seals each neighbour's pair to it.
    pub fn share_keys(&mut self, neighbours: BTreeMap<u32, PublicKeys>) -> Result<SealedShares, SecAggError> {
        self.enter(Stage::ShareKeys)?;
        let refuse = |what: String| Err(SecAggError::Refused(format!("share-keys: {what}")));
        if neighbours.get(&self.id) != Some(&self.secrets.public()) {
            return refuse("the neighbourhood does not hold this client's own keys".into());
        }
        let (t, k) = (self.params.threshold, self.params.neighbours);
        if neighbours.len() < t || neighbours.len() > k {
            return refuse(format!("{} neighbours, where the round allows {t} to {k}", neighbours.len()));
        }
        let mut distinct = BTreeSet::new();
        if !neighbours.values().all(|p| distinct.insert(p.mask) && distinct.insert(p.shares)) {
            return refuse("two neighbours' keys are the same".into());
        }
        let mask_key = self.secrets.mask.to_bytes();
        let self_shares = shamir::split(&self.self_seed, t, neighbours.len());
        let key_shares = shamir::split(&mask_key, t, neighbours.len());
        let mut to = Vec::with_capacity(neighbours.len() - 1);
        for (position, (&j, public)) in neighbours.iter().enumerate() {
            let (b, s) = (&self_shares[position], &key_shares[position]);
            if j == self.id {
                self.held.insert(j, Held { self_mask: b.clone(), mask_key: s.clone() });
                continue;
            }
            let mut plain = Vec::with_capacity(b.len() + s.len() + 2);
            plain.extend_from_slice(&(b.len() as u16).to_be_bytes());
            plain.extend_from_slice(b);
            plain.extend_from_slice(s);
            to.push((j, keys::seal(&self.secrets.shares, &public.shares, &self.context, self.id, j, &plain)));
        }
        self.neighbours = neighbours;
        self.stage = Stage::Mask;
        Ok(SealedShares { commitment: keys::commitment(&self.context, self.id, &self.self_seed), to })
    }

    /// Stage 2: the shares sealed to us, by sender, and our encoded vector (already in
    /// 0..M). Returns the masked vector: ours plus our self-mask, plus or minus the pairwise
    /// mask of every sender (the larger id adds), mod M.
    pub fn mask(&mut self, received: &[(u32, Vec<u8>)], encoded: &[u32]) -> Result<Vec<u32>, SecAggError> {
        self.enter(Stage::Mask)?;
        let refuse = |what: String| Err(SecAggError::Refused(format!("masking: {what}")));
        if received.len() + 1 < self.params.threshold {
            return refuse(format!(
                "shares from {} neighbours, below the threshold {} with ours",
                received.len(),
                self.params.threshold
            ));
        }
        for (src, sealed) in received {
            let Some(public) = self.neighbours.get(src).filter(|_| *src != self.id) else {
                return refuse(format!("shares from {src}, which is not a neighbour"));
            };
            if self.held.contains_key(src) {
                return refuse(format!("two messages from {src}"));
            }
            let Some(plain) = keys::open(&self.secrets.shares, &public.shares, &self.context, *src, self.id, sealed)
            else {
                return refuse(format!("the shares from {src} do not open: not sealed by it, for us, in this round"));
            };
            let Some(b_len) = plain.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
                return refuse(format!("the shares from {src} are truncated"));
            };
            let Some((b, s)) = plain.get(2..).filter(|rest| rest.len() > b_len).map(|rest| rest.split_at(b_len)) else {
                return refuse(format!("the shares from {src} are truncated"));
            };
            self.held.insert(*src, Held { self_mask: b.to_vec(), mask_key: s.to_vec() });
        }
        let mut masked = encoded.to_vec();
        prg::apply(&mut masked, &self.self_seed, true);
        // Pairwise masks only with those whose shares reached us: the pairs that can be
        // repaired if one end drops out.
        for &j in self.held.keys().filter(|&&j| j != self.id) {
            let seed = keys::mask_seed(&self.secrets.mask, &self.neighbours[&j].mask, &self.context);
            prg::apply(&mut masked, &seed, self.id > j);
        }
        for v in &mut masked {
            *v = self.params.reduce(*v);
        }
        self.stage = Stage::Unmask;
        Ok(masked)
    }

    /// Stage 3, once: self-mask shares of the active, mask-key shares of the dead. Refused
    /// if the lists overlap, name anyone that did not send us shares, or leave fewer than t
    /// active: any of those could hand the server both secrets of one client.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<UnmaskReply, SecAggError> {
        self.enter(Stage::Unmask)?;
        let refuse = |what: String| Err(SecAggError::Refused(format!("unmask: {what}")));
        let active: BTreeSet<u32> = request.active.iter().copied().collect();
        let dead: BTreeSet<u32> = request.dead.iter().copied().collect();
        if active.len() != request.active.len() || dead.len() != request.dead.len() {
            return refuse("a client is listed twice".into());
        }
        if let Some(both) = active.intersection(&dead).next() {
            return refuse(format!("client {both} is listed both as active and as dropped"));
        }
        if !active.contains(&self.id) {
            return refuse("this client, which sent its vector, is not listed as active".into());
        }
        if let Some(stranger) = active.iter().chain(&dead).find(|j| !self.held.contains_key(j)) {
            return refuse(format!("client {stranger} did not share with this one"));
        }
        if active.len() < self.params.threshold {
            return refuse(format!(
                "{} active neighbours, below the threshold {}",
                active.len(),
                self.params.threshold
            ));
        }
        Ok(UnmaskReply {
            self_mask: active.iter().map(|j| (*j, self.held[j].self_mask.clone())).collect(),
            mask_key: dead.iter().map(|j| (*j, self.held[j].mask_key.clone())).collect(),
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}
