//! The server's half: the neighbour graph, routing sealed shares, the running sum of masked
//! vectors, and the unmasking: self-masks of the clients that sent a vector are rebuilt and
//! removed, and so are the pairwise masks their neighbours drew with the ones that dropped
//! out. Bonawitz's nested sets decide who counts at each stage: U1 sent keys, U2 sealed
//! shares, U3 sent a masked vector, U4 answered the unmask.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::StaticSecret;

use crate::error::SecAggError;
use crate::graph::Graph;
use crate::keys::{self, PublicKeys};
use crate::messages::{SealedShares, UnmaskReply, UnmaskRequest};
use crate::params::RoundParams;
use crate::{prg, shamir};

/// Who was lost at which stage of a round, for the round's record.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dropouts {
    /// Sent no keys (left out of everything after).
    pub setup: Vec<u32>,
    /// Sent keys but no shares (nobody masked with them).
    pub share_keys: Vec<u32>,
    /// Shared, then sent no vector: their pairwise masks were removed with their key's shares.
    pub masking: Vec<u32>,
    /// Sent a vector, then no unmask answer: their vectors still count.
    pub unmask: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Keys,
    Shares,
    Vectors,
    Unmask,
    Done,
}

/// One round of secure aggregation, from the server's side.
pub struct SecAggServer {
    params: RoundParams,
    context: Vec<u8>,
    graph: Graph,
    stage: Stage,
    u0: BTreeSet<u32>,
    keys: BTreeMap<u32, PublicKeys>,
    /// Every public key received, so that a repeated one is found without a scan.
    seen_keys: BTreeSet<[u8; 32]>,
    /// What each client of U1 was sent at share-keys: its live neighbours, in share order.
    sent: BTreeMap<u32, Vec<u32>>,
    commitments: BTreeMap<u32, [u8; 32]>,
    /// Sealed shares waiting for their destination, by destination.
    mail: BTreeMap<u32, Vec<(u32, Vec<u8>)>>,
    u2: BTreeSet<u32>,
    sum: Vec<u32>,
    length: Option<usize>,
    u3: BTreeSet<u32>,
    /// Shares returned at unmask, by owner: (holder, share).
    self_shares: BTreeMap<u32, Vec<(u32, Vec<u8>)>>,
    key_shares: BTreeMap<u32, Vec<(u32, Vec<u8>)>>,
    u4: BTreeSet<u32>,
    /// The stage a close was last attempted into (what the dropouts can be counted up to,
    /// even when the close failed).
    closed: Stage,
}

impl std::fmt::Debug for SecAggServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggServer")
            .field("stage", &self.stage)
            .field("clients", &self.u0.len())
            .finish_non_exhaustive()
    }
}

impl SecAggServer {
    /// A round over `clients` (distinct ids) with `params` resolved for their number; the
    /// graph is shuffled by `rng` (the server's, from the OS).
    pub fn new(
        params: RoundParams,
        context: &[u8],
        clients: &[u32],
        rng: &mut impl rand::Rng,
    ) -> Result<Self, SecAggError> {
        params.check()?;
        let u0: BTreeSet<u32> = clients.iter().copied().collect();
        if u0.len() != clients.len() || u0.len() != params.clients {
            return Err(SecAggError::Config(format!(
                "{} distinct clients of {} given, for parameters resolved for {}",
                u0.len(),
                clients.len(),
                params.clients
            )));
        }
        let graph = Graph::ring(clients, params.neighbours, rng);
        Ok(Self {
            params,
            context: context.to_vec(),
            graph,
            stage: Stage::Keys,
            u0,
            keys: BTreeMap::new(),
            seen_keys: BTreeSet::new(),
            sent: BTreeMap::new(),
            commitments: BTreeMap::new(),
            mail: BTreeMap::new(),
            u2: BTreeSet::new(),
            sum: Vec::new(),
            length: None,
            u3: BTreeSet::new(),
            self_shares: BTreeMap::new(),
            key_shares: BTreeMap::new(),
            u4: BTreeSet::new(),
            closed: Stage::Keys,
        })
    }

    pub fn params(&self) -> &RoundParams {
        &self.params
    }

    fn at(&self, stage: Stage, name: &'static str) -> Result<(), SecAggError> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(SecAggError::OutOfOrder { stage: name, at: format_stage(self.stage) })
        }
    }

    fn bad(client: u32, what: impl Into<String>) -> SecAggError {
        SecAggError::BadMessage { client, what: what.into() }
    }

    /// Stage 0's answer from `id`.
    pub fn add_keys(&mut self, id: u32, keys: PublicKeys) -> Result<(), SecAggError> {
        self.at(Stage::Keys, "setup")?;
        if !self.u0.contains(&id) {
            return Err(Self::bad(id, "not in this round"));
        }
        if self.keys.contains_key(&id) {
            return Err(Self::bad(id, "sent its keys twice"));
        }
        // Two equal keys would let one client's shares open with another's key.
        if keys.mask == keys.shares || self.seen_keys.contains(&keys.mask) || self.seen_keys.contains(&keys.shares) {
            return Err(Self::bad(id, "its keys repeat keys already sent"));
        }
        self.seen_keys.extend([keys.mask, keys.shares]);
        self.keys.insert(id, keys);
        Ok(())
    }

    /// Ends setup: U1 is who sent keys. Each member of U1 must keep t live neighbours
    /// (itself included), or the round cannot protect it and ends here.
    pub fn close_keys(&mut self) -> Result<(), SecAggError> {
        self.at(Stage::Keys, "setup")?;
        let u1: BTreeSet<u32> = self.keys.keys().copied().collect();
        for &i in &u1 {
            let live = self.graph.live(i, &u1);
            self.require(i, live.len(), "share-keys")?;
            self.sent.insert(i, live.into_iter().collect());
        }
        self.stage = Stage::Shares;
        Ok(())
    }

    fn require(&self, client: u32, live: usize, stage: &'static str) -> Result<(), SecAggError> {
        if live < self.params.threshold {
            return Err(SecAggError::TooFewNeighbours { client, live, threshold: self.params.threshold, stage });
        }
        Ok(())
    }

    /// Stage 1's message for `id`: its live neighbours' keys, its own included.
    pub fn neighbour_keys(&self, id: u32) -> Result<BTreeMap<u32, PublicKeys>, SecAggError> {
        self.at(Stage::Shares, "share-keys")?;
        let sent = self.sent.get(&id).ok_or_else(|| Self::bad(id, "sent no keys"))?;
        Ok(sent.iter().map(|j| (*j, self.keys[j])).collect())
    }

    /// Stage 1's answer from `id`: a sealed message for each neighbour it was sent, itself
    /// excepted, exactly once.
    pub fn add_shares(&mut self, id: u32, shares: SealedShares) -> Result<(), SecAggError> {
        self.at(Stage::Shares, "share-keys")?;
        let sent = self.sent.get(&id).ok_or_else(|| Self::bad(id, "sent no keys"))?;
        if self.commitments.contains_key(&id) {
            return Err(Self::bad(id, "sent its shares twice"));
        }
        let expected: BTreeSet<u32> = sent.iter().copied().filter(|&j| j != id).collect();
        let got: BTreeSet<u32> = shares.to.iter().map(|(j, _)| *j).collect();
        if got != expected || shares.to.len() != expected.len() {
            return Err(Self::bad(id, "its shares are not one for each of its neighbours"));
        }
        self.commitments.insert(id, shares.commitment);
        for (dst, sealed) in shares.to {
            self.mail.entry(dst).or_default().push((id, sealed));
        }
        Ok(())
    }

    /// Ends share-keys: U2 is who sealed shares. Shares from or to anyone outside U2 are
    /// dropped (nobody masks with a client that never shared), and each member of U2 must
    /// keep t live neighbours.
    pub fn close_shares(&mut self) -> Result<(), SecAggError> {
        self.at(Stage::Shares, "share-keys")?;
        self.closed = Stage::Vectors;
        self.u2 = self.commitments.keys().copied().collect();
        let u2 = self.u2.clone();
        self.mail.retain(|dst, _| u2.contains(dst));
        for inbox in self.mail.values_mut() {
            inbox.retain(|(src, _)| u2.contains(src));
        }
        for &i in &self.u2 {
            self.require(i, self.graph.live(i, &self.u2).len(), "masking")?;
        }
        self.stage = Stage::Vectors;
        Ok(())
    }

    /// Stage 2's shares for `id`: what its neighbours in U2 sealed to it, by sender.
    pub fn shares_for(&self, id: u32) -> Result<Vec<(u32, Vec<u8>)>, SecAggError> {
        self.at(Stage::Vectors, "masking")?;
        if !self.u2.contains(&id) {
            return Err(Self::bad(id, "sealed no shares"));
        }
        Ok(self.mail.get(&id).cloned().unwrap_or_default())
    }

    /// Stage 2's answer from `id`: its masked vector, folded into the sum at once (the
    /// server holds one vector, whatever the number of clients).
    pub fn add_masked(&mut self, id: u32, masked: &[u32]) -> Result<(), SecAggError> {
        self.at(Stage::Vectors, "masking")?;
        if !self.u2.contains(&id) {
            return Err(Self::bad(id, "sealed no shares"));
        }
        if self.u3.contains(&id) {
            return Err(Self::bad(id, "sent its vector twice"));
        }
        let length = *self.length.get_or_insert(masked.len());
        if masked.len() != length || length == 0 {
            return Err(Self::bad(id, format!("a vector of {} values, where the round's have {length}", masked.len())));
        }
        if masked.iter().any(|&v| u64::from(v) >= self.params.modulus) {
            return Err(Self::bad(id, "a value outside the ring"));
        }
        if self.sum.is_empty() {
            self.sum = vec![0; length];
        }
        for (s, &v) in self.sum.iter_mut().zip(masked) {
            *s = s.wrapping_add(v);
        }
        self.u3.insert(id);
        Ok(())
    }

    /// Ends masking: U3 is who sent a vector; every member of U2 must keep t neighbours in
    /// U3 to hold the shares that repair it.
    pub fn close_masked(&mut self) -> Result<(), SecAggError> {
        self.at(Stage::Vectors, "masking")?;
        self.closed = Stage::Unmask;
        if self.u3.is_empty() {
            return Err(SecAggError::Refused("no client sent a masked vector".into()));
        }
        for &i in &self.u2 {
            self.require(i, self.graph.live(i, &self.u3).len(), "unmask")?;
        }
        self.stage = Stage::Unmask;
        Ok(())
    }

    /// Stage 3's request for `id` (in U3): its neighbours that sent vectors and those that
    /// shared but did not.
    pub fn unmask_request(&self, id: u32) -> Result<UnmaskRequest, SecAggError> {
        self.at(Stage::Unmask, "unmask")?;
        if !self.u3.contains(&id) {
            return Err(Self::bad(id, "sent no vector"));
        }
        let shared = self.graph.live(id, &self.u2);
        Ok(UnmaskRequest {
            active: shared.iter().copied().filter(|j| self.u3.contains(j)).collect(),
            dead: shared.iter().copied().filter(|j| !self.u3.contains(j)).collect(),
        })
    }

    /// Stage 3's answer from `id`: only shares it was asked for are kept.
    pub fn add_unmask(&mut self, id: u32, reply: UnmaskReply) -> Result<(), SecAggError> {
        let request = self.unmask_request(id)?;
        if !self.u4.insert(id) {
            return Err(Self::bad(id, "answered the unmask twice"));
        }
        let asked = |list: &[u32], owner: &u32| list.contains(owner);
        for (owner, share) in reply.self_mask {
            if asked(&request.active, &owner) {
                self.self_shares.entry(owner).or_default().push((id, share));
            }
        }
        for (owner, share) in reply.mask_key {
            if asked(&request.dead, &owner) {
                self.key_shares.entry(owner).or_default().push((id, share));
            }
        }
        Ok(())
    }

    /// Ends the round: the sum of U3's vectors mod M, with every mask removed, and how many
    /// vectors it holds. Fails (nothing of the sum is revealed) when a secret has fewer
    /// than t shares or a rebuilt one does not match what its owner committed to.
    pub fn finish(&mut self) -> Result<(Vec<u32>, usize), SecAggError> {
        self.at(Stage::Unmask, "unmask")?;
        self.stage = Stage::Done;
        let mut sum = std::mem::take(&mut self.sum);
        for &i in &self.u3 {
            let seed = self.rebuild(i, self.self_shares.get(&i), "self-mask seed")?;
            if keys::commitment(&self.context, i, &seed) != self.commitments[&i] {
                return Err(SecAggError::BadReconstruction { owner: i, secret: "self-mask seed" });
            }
            prg::apply(&mut sum, &seed, false);
        }
        for &d in self.u2.difference(&self.u3) {
            let key = self.rebuild(d, self.key_shares.get(&d), "mask key")?;
            if keys::public_of(key) != self.keys[&d].mask {
                return Err(SecAggError::BadReconstruction { owner: d, secret: "mask key" });
            }
            let secret = StaticSecret::from(key);
            // Each live neighbour j added +mask if j > d, −mask otherwise: undo it.
            for j in self.graph.live(d, &self.u3) {
                let seed = keys::mask_seed(&secret, &self.keys[&j].mask, &self.context);
                prg::apply(&mut sum, &seed, j < d);
            }
        }
        for v in &mut sum {
            *v = self.params.reduce(*v);
        }
        Ok((sum, self.u3.len()))
    }

    fn rebuild(
        &self,
        owner: u32,
        shares: Option<&Vec<(u32, Vec<u8>)>>,
        secret: &'static str,
    ) -> Result<[u8; 32], SecAggError> {
        let order = &self.sent[&owner];
        let placed: Vec<(usize, Vec<u8>)> = shares
            .into_iter()
            .flatten()
            .filter_map(|(holder, share)| order.iter().position(|j| j == holder).map(|p| (p, share.clone())))
            .collect();
        let got = placed.len();
        shamir::combine(&placed, self.params.threshold).ok_or(SecAggError::TooFewShares {
            owner,
            secret,
            got,
            threshold: self.params.threshold,
        })
    }

    /// Who dropped out at which stage so far.
    pub fn dropouts(&self) -> Dropouts {
        let reached = self.stage.max(self.closed);
        let u1: BTreeSet<u32> = self.keys.keys().copied().collect();
        let minus = |a: &BTreeSet<u32>, b: &BTreeSet<u32>| a.difference(b).copied().collect();
        Dropouts {
            setup: minus(&self.u0, &u1),
            share_keys: if reached >= Stage::Vectors { minus(&u1, &self.u2) } else { Vec::new() },
            masking: if reached >= Stage::Unmask { minus(&self.u2, &self.u3) } else { Vec::new() },
            unmask: if reached >= Stage::Done { minus(&self.u3, &self.u4) } else { Vec::new() },
        }
    }

    /// The clients whose vectors the sum holds (U3).
    pub fn contributors(&self) -> &BTreeSet<u32> {
        &self.u3
    }
}

fn format_stage(stage: Stage) -> &'static str {
    match stage {
        Stage::Keys => "setup",
        Stage::Shares => "share-keys",
        Stage::Vectors => "masking",
        Stage::Unmask => "unmask",
        Stage::Done => "done",
    }
}
