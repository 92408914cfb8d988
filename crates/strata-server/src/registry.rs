//! Who is in the federation: clients by UUID, their partition index, what they reported
//! about themselves, and each one's mailbox for tasks.
//!
//! A cheap-clone handle over a concurrent map, shared by the gRPC service (which joins and
//! polls) and the round loop (which picks and posts).
//!
//! A client may join through a host (a simulation's population of virtual clients): its
//! tasks are queued for the host's polls, and the host's polls keep it alive, so an idle
//! virtual client costs its entry here and nothing else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use strata_security::TokenHash;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::assignment::Assignment;
use crate::client_info::ClientInfo;

/// What a client says about itself once it has loaded its data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capabilities {
    pub device: String,
    pub train_samples: u64,
    pub test_samples: u64,
    pub dataset_fingerprint: String,
    pub partition: String,
}

/// One client's entry.
#[derive(Debug)]
pub struct ClientEntry {
    pub index: u32,
    /// The SHA-256 of the session secret Join gave this client: what every later call must
    /// carry, so that knowing a client's UUID authorizes nothing.
    pub session: TokenHash,
    pub capabilities: Capabilities,
    /// The client's current task; a long poll waits for it to change.
    pub mailbox: watch::Sender<Option<Arc<Assignment>>>,
    pub last_seen: Instant,
    /// Set when the client missed a round's deadline; cleared by its next poll, so a client
    /// that died is not picked again (and waited for) until it comes back.
    pub missed_deadline: bool,
    /// Deadlines missed one after the other, and the first round the client may be picked in
    /// again: after its k-th miss in a row it sits out 2^(k−1) − 1 rounds (0, 1, 3, 7, ... up
    /// to 31), so a client that keeps polling but never delivers (a squatter, or one too slow
    /// for the deadline) stops costing every round a deadline. A delivered result resets both.
    pub misses_in_a_row: u32,
    pub benched_until: u64,
    /// Whether the client has received the FINISH task.
    pub told_finish: bool,
    /// Long polls of this client waiting right now: a client waiting for a task is alive even
    /// if it missed the last deadline (its poll began before the deadline marked it).
    pub polls_waiting: u32,
    /// Parameter downloads of this client open right now.
    pub downloads_open: u32,
    /// The host this client joined through, whose polls collect its tasks and keep it alive.
    pub host: Option<Arc<Host>>,
    /// The token or client certificate it joined with: only that credential may join the
    /// slot again, and each credential holds a bounded number of slots.
    pub credential: Option<Arc<str>>,
    /// The task the client has ended without a result (its result was refused, or its work
    /// failed): it asked for the next task, or its host joined it again. The round need not
    /// wait for it.
    pub gave_up: Option<String>,
    /// The task its host last collected for it: a host's join gives up only that one, since a
    /// join answered before the host ever saw a task (a population's joins racing the first
    /// round) says nothing about it.
    pub collected: Option<String>,
}

/// A host of virtual clients, as the server sees it.
#[derive(Debug)]
pub struct Host {
    last_seen: Mutex<Instant>,
    /// Clients of this host with a task posted since the host's last poll.
    pending: Mutex<VecDeque<Uuid>>,
    posted: Notify,
    /// The run is over: the host's next poll says so once its queue is empty.
    finishing: AtomicBool,
    told_finish: AtomicBool,
}

impl Host {
    fn new() -> Self {
        Self {
            last_seen: Mutex::new(Instant::now()),
            pending: Mutex::new(VecDeque::new()),
            posted: Notify::new(),
            finishing: AtomicBool::new(false),
            told_finish: AtomicBool::new(false),
        }
    }

    fn last_seen(&self) -> Instant {
        *self.last_seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn push(&self, id: Uuid) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push_back(id);
        self.posted.notify_one();
    }
}

/// What a host's poll collects.
#[derive(Debug, Default)]
pub struct HostPoll {
    pub tasks: Vec<(Uuid, Arc<Assignment>)>,
    pub finished: bool,
}

impl ClientEntry {
    /// Marks the current task, if it is `task_id`, as ended without a result to come.
    fn give_up(&mut self, task_id: &str) {
        let current = self.mailbox.borrow().as_ref().filter(|a| a.awaits_result()).map(|a| a.task_id.clone());
        if let Some(current) = current.filter(|c| c == task_id) {
            self.gave_up = Some(current);
        }
    }

    /// Whether the client may be picked: heard from within `patience`, and not silent since
    /// a missed deadline (a hosted client comes back when its host joins it again, so a host
    /// that polls but does not work costs each of its clients one deadline, not one a round).
    fn is_available(&self, patience: Duration, round: u64) -> bool {
        (!self.missed_deadline || self.polls_waiting > 0)
            && self.seen().elapsed() <= patience
            && round >= self.benched_until
    }

    /// A client silent past `patience` with no call open: gone, or never there (a join that
    /// never polls), so its slot may go to a client that wants one. A daemon heartbeats while
    /// it works, so only one that died or lost its link this long is taken for gone; hosted
    /// clients live and die with their host.
    fn is_gone(&self, patience: Duration) -> bool {
        self.host.is_none()
            && self.polls_waiting == 0
            && self.downloads_open == 0
            && self.last_seen.elapsed() > patience
    }

    /// When the client was last heard from, itself or through its host.
    fn seen(&self) -> Instant {
        match &self.host {
            Some(host) => host.last_seen().max(self.last_seen),
            None => self.last_seen,
        }
    }
}

/// The longest dataset fingerprint taken: `strata_data`'s are a name, counts, a shape and a
/// hash, well under this; longer is not one, and would be echoed to every client after.
pub const MAX_FINGERPRINT_CHARS: usize = 256;

/// A dataset fingerprint the federation does not take. Both fingerprints are cut and
/// escaped for messages.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// A client whose dataset is not the federation's.
    #[error("this client loaded dataset `{got}`, but the federation trains on `{expected}`: check --data-path")]
    Mismatch { expected: String, got: String },
    #[error(
        "dataset fingerprint `{got}` is not one: a fingerprint is at most {MAX_FINGERPRINT_CHARS} characters, none of them control characters"
    )]
    Malformed { got: String },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JoinError {
    #[error("client index {requested} is out of range: the federation has {capacity} clients (0..{capacity})")]
    IndexOutOfRange { requested: u32, capacity: u32 },
    /// The holder is not named: another client's identity is not this client's to know.
    #[error("client index {index} is already taken by another client")]
    IndexTaken { index: u32 },
    #[error("the federation is full: all {capacity} client indices are taken")]
    Full { capacity: u32 },
    #[error("client {id} already joined with index {index}, not {requested}")]
    IndexChanged { id: Uuid, index: u32, requested: u32 },
    #[error("client {id} joined through another host")]
    HostChanged { id: Uuid },
    /// The client id is held by another credential (token or client certificate).
    #[error("client {id} joined with another credential: its slot is bound to the token or certificate it joined with")]
    OtherCredential { id: Uuid },
    /// The credential holds as many slots as the server allows it.
    #[error(
        "this credential already holds {slots} client slot(s), the most the server allows one credential \
         (--slots-per-credential)"
    )]
    CredentialFull { slots: u32 },
    /// The client id is held, and the join does not carry that holder's session.
    #[error(
        "client {id} is already joined under another session: join with the session it was given, or as a new client"
    )]
    NotYourSession { id: Uuid },
}

/// A joined client's identity: its UUID, index and (the SHA-256 of) its session; `None` for a
/// client saved by a version without sessions, which gets one when it joins again.
pub type Identity = (Uuid, u32, Option<TokenHash>);

/// Why a call in a client's name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthorized {
    /// No such client in this run (a restarted server, or a client never joined): join again.
    NotJoined,
    /// The client is joined, and the call does not carry its session.
    WrongSession,
}

/// Which client holds each index, so that joining costs the same at any federation size.
#[derive(Debug, Default)]
struct Indices {
    holders: Vec<Option<Uuid>>,
    /// No index below this one is free.
    lowest_free: usize,
    /// Indices held for clients of a resumed run until they rejoin with their UUID and session.
    reserved: HashMap<u32, Uuid>,
    reserved_by_id: HashMap<Uuid, (u32, Option<TokenHash>)>,
    /// Slots each credential holds.
    by_credential: HashMap<Arc<str>, u32>,
}

impl Indices {
    fn new(capacity: u32) -> Self {
        Self { holders: vec![None; capacity as usize], ..Default::default() }
    }

    fn holder(&self, index: u32) -> Option<Uuid> {
        self.holders.get(index as usize).copied().flatten().or_else(|| self.reserved.get(&index).copied())
    }

    fn lowest_free(&mut self) -> Option<u32> {
        while self.lowest_free < self.holders.len() {
            let i = self.lowest_free as u32;
            if self.holder(i).is_none() {
                return Some(i);
            }
            self.lowest_free += 1;
        }
        None
    }

    fn release(&mut self, index: u32) {
        if let Some(slot) = self.holders.get_mut(index as usize) {
            *slot = None;
            self.lowest_free = self.lowest_free.min(index as usize);
        }
    }

    fn take(&mut self, index: u32, id: Uuid) {
        if let Some(holder) = self.reserved.remove(&index) {
            self.reserved_by_id.remove(&holder);
        }
        self.holders[index as usize] = Some(id);
    }
}

#[derive(Clone, Debug)]
pub struct Registry {
    clients: Arc<DashMap<Uuid, ClientEntry>>,
    capacity: u32,
    /// Who holds which index; its lock serializes joins so two cannot take the same index.
    indices: Arc<Mutex<Indices>>,
    hosts: Arc<DashMap<Uuid, Arc<Host>>>,
    /// Count of joined clients, for the round loop to wait on.
    joined: watch::Sender<usize>,
    /// Bumped whenever an identity is added or a slot given away, so that the saved identities
    /// are rewritten only when they changed.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The dataset fingerprint every client must match, so that nobody trains on different data
    /// than the split assumes: the server's own, or else the first one a client reported.
    fingerprint: Arc<Mutex<Option<String>>>,
    /// How long a client that joined may stay silent before its slot can be given away.
    patience: Duration,
    /// What a client may say about itself: its index's training samples, when the server
    /// holds the data, or else at most a bound.
    samples: SampleBounds,
    /// The round being run (see [`Registry::begin_round`]).
    round: Arc<std::sync::atomic::AtomicU64>,
    /// Slots one credential may hold.
    slots_per_credential: u32,
}

/// The training and test samples a client may report for its index: its weight in an
/// average, and its accuracy's weight in the records.
#[derive(Clone, Debug, Default)]
pub enum SampleBounds {
    /// Each index's counts, from the server's own partition: a client must report exactly its own.
    Known(Arc<ShareSizes>),
    /// At most this many of each (`max_samples_per_client`).
    AtMost(u64),
    #[default]
    Unbounded,
}

/// Each partition index's training and test samples, as the server's own copy of the data
/// splits them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShareSizes {
    pub train: Vec<u64>,
    pub test: Vec<u64>,
}

/// Capabilities a client may not report.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CapabilityError {
    #[error("this client reported {reported} {what} samples, but partition index {index} holds {known}")]
    NotItsShare { what: SampleKind, index: u32, reported: u64, known: u64 },
    #[error("this client reported {reported} {what} samples; this federation takes at most {max} per client")]
    TooMany { what: SampleKind, reported: u64, max: u64 },
}

/// Which of a client's sample counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleKind {
    Training,
    Test,
}

impl std::fmt::Display for SampleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Training => "training",
            Self::Test => "test",
        })
    }
}

impl Registry {
    pub fn new(capacity: u32) -> Self {
        Self {
            clients: Arc::new(DashMap::new()),
            capacity,
            indices: Arc::new(Mutex::new(Indices::new(capacity))),
            hosts: Arc::new(DashMap::new()),
            joined: watch::channel(0).0,
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            fingerprint: Arc::new(Mutex::new(None)),
            patience: Duration::from_secs(30),
            samples: SampleBounds::Unbounded,
            round: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            slots_per_credential: 1,
        }
    }

    /// The same registry, letting one credential hold `slots` client slots (a host of that
    /// many virtual clients behind one token or certificate).
    pub fn with_slots_per_credential(mut self, slots: u32) -> Self {
        self.slots_per_credential = slots.max(1);
        self
    }

    /// The same registry, checking the training samples clients report against `samples`.
    pub fn with_sample_bounds(mut self, samples: SampleBounds) -> Self {
        self.samples = samples;
        self
    }

    /// Checks what a client at `index` says about its training and test samples. Zero
    /// (nothing said yet) passes: such a client cannot send a training result, nor an
    /// evaluation that counts.
    pub fn check_capabilities(&self, index: u32, capabilities: &Capabilities) -> Result<(), CapabilityError> {
        self.check_samples(index, SampleKind::Training, capabilities.train_samples)?;
        self.check_samples(index, SampleKind::Test, capabilities.test_samples)
    }

    fn check_samples(&self, index: u32, what: SampleKind, reported: u64) -> Result<(), CapabilityError> {
        if reported == 0 {
            return Ok(());
        }
        match &self.samples {
            SampleBounds::Known(sizes) => {
                let own = match what {
                    SampleKind::Training => &sizes.train,
                    SampleKind::Test => &sizes.test,
                };
                match own.get(index as usize) {
                    Some(&known) if known != reported => {
                        Err(CapabilityError::NotItsShare { what, index, reported, known })
                    }
                    _ => Ok(()),
                }
            }
            SampleBounds::AtMost(max) if reported > *max => Err(CapabilityError::TooMany { what, reported, max: *max }),
            _ => Ok(()),
        }
    }

    /// The same registry, giving away the slots of clients silent since they joined for
    /// longer than `patience` (the run's `offline_after`).
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The same registry, with the dataset fingerprint every client must match known from the
    /// start (`None`: the first client's).
    pub fn with_fingerprint(self, fingerprint: Option<String>) -> Self {
        *self.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint;
        self
    }

    /// A resumed run's registry: each saved client keeps its index for its UUID, and the
    /// dataset fingerprint stays the one the run started with.
    pub fn resumed(capacity: u32, clients: &[Identity], fingerprint: Option<String>) -> Self {
        let registry = Self::new(capacity);
        {
            let mut indices = registry.lock_indices();
            indices.reserved = clients.iter().map(|&(id, index, _)| (index, id)).collect();
            indices.reserved_by_id = clients.iter().map(|&(id, index, session)| (id, (index, session))).collect();
        }
        *registry.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint;
        registry
    }

    /// Every joined client's identity, and the reserved ones not back yet.
    pub fn identities(&self) -> Vec<Identity> {
        let indices = self.lock_indices();
        let session = |id: &Uuid| match self.clients.get(id) {
            Some(entry) => Some(entry.session),
            None => indices.reserved_by_id.get(id).and_then(|(_, s)| *s),
        };
        (0..indices.holders.len() as u32).filter_map(|i| indices.holder(i).map(|id| (id, i, session(&id)))).collect()
    }

    /// Whether a call carrying `session` may act as client `id`.
    pub fn authorize(&self, id: &Uuid, session: &str) -> Result<(), Unauthorized> {
        let entry = self.clients.get(id).ok_or(Unauthorized::NotJoined)?;
        if entry.session.ct_eq(&TokenHash::of(session)) { Ok(()) } else { Err(Unauthorized::WrongSession) }
    }

    fn lock_indices(&self) -> std::sync::MutexGuard<'_, Indices> {
        self.indices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes whenever a client joins for the first time.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn fingerprint(&self) -> Option<String> {
        self.fingerprint.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Admits a client, or re-admits one with the same UUID at its old index; `host` names
    /// the host that serves it as a virtual client.
    /// Joins client `id` (or takes its join again): its index and its session secret. A held
    /// id joins again only with its session (`session`); a new one gets a fresh secret.
    #[cfg(test)]
    pub fn join(
        &self,
        id: Uuid,
        requested: Option<u32>,
        host: Option<Uuid>,
        session: &str,
    ) -> Result<(u32, String), JoinError> {
        self.join_as(None, id, requested, host, session)
    }

    /// [`Registry::join`] for a call that came with `credential` (a token's label or a client
    /// certificate's fingerprint): the slot is bound to it, and it holds at most
    /// `slots_per_credential` slots.
    pub fn join_as(
        &self,
        credential: Option<&str>,
        id: Uuid,
        requested: Option<u32>,
        host: Option<Uuid>,
        session: &str,
    ) -> Result<(u32, String), JoinError> {
        let presented = TokenHash::of(session);
        let mut indices = self.lock_indices();
        if let Some(mut entry) = self.clients.get_mut(&id) {
            if entry.credential.as_deref() != credential {
                return Err(JoinError::OtherCredential { id });
            }
            if !entry.session.ct_eq(&presented) {
                return Err(JoinError::NotYourSession { id });
            }
            if let Some(r) = requested.filter(|&r| r != entry.index) {
                return Err(JoinError::IndexChanged { id, index: entry.index, requested: r });
            }
            if entry.host.is_some() != host.is_some() {
                return Err(JoinError::HostChanged { id });
            }
            entry.last_seen = Instant::now();
            entry.missed_deadline = false;
            // A host joins a virtual client again after its task failed: that task ends there.
            if host.is_some()
                && let Some(collected) = entry.collected.clone()
            {
                entry.give_up(&collected);
            }
            return Ok((entry.index, session.to_string()));
        }
        let saved = indices.reserved_by_id.get(&id).copied();
        if let Some((_, Some(hash))) = saved
            && !hash.ct_eq(&presented)
        {
            return Err(JoinError::NotYourSession { id });
        }
        // A client back from a saved run keeps its session; a new one (or one saved without a
        // session) gets a fresh secret.
        let (secret, hash) = match saved {
            Some((_, Some(hash))) => (session.to_string(), hash),
            _ => {
                let secret = strata_security::new_session();
                let hash = TokenHash::of(&secret);
                (secret, hash)
            }
        };
        if let Some(c) = credential
            && indices.by_credential.get(c).copied().unwrap_or(0) >= self.slots_per_credential
        {
            return Err(JoinError::CredentialFull { slots: self.slots_per_credential });
        }
        let own = saved.map(|(index, _)| index);
        let index = match (requested, own) {
            (Some(r), _) if r >= self.capacity => {
                return Err(JoinError::IndexOutOfRange { requested: r, capacity: self.capacity });
            }
            (Some(r), Some(own)) if r != own => return Err(JoinError::IndexChanged { id, index: own, requested: r }),
            (_, Some(own)) => own,
            (Some(r), None) => {
                if indices.holder(r).is_some_and(|h| !self.release_if_gone(&mut indices, &h)) {
                    return Err(JoinError::IndexTaken { index: r });
                }
                r
            }
            (None, None) => match indices.lowest_free() {
                Some(i) => i,
                None => {
                    self.release_longest_gone(&mut indices);
                    indices.lowest_free().ok_or(JoinError::Full { capacity: self.capacity })?
                }
            },
        };
        indices.take(index, id);
        let credential: Option<Arc<str>> = credential.map(Arc::from);
        if let Some(c) = &credential {
            *indices.by_credential.entry(Arc::clone(c)).or_default() += 1;
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        let host = host.map(|h| Arc::clone(&self.hosts.entry(h).or_insert_with(|| Arc::new(Host::new()))));
        if let Some(host) = &host {
            // A host joining clients is alive: clients it joined a while ago stay available.
            host.touch();
        }
        self.clients.insert(
            id,
            ClientEntry {
                index,
                session: hash,
                capabilities: Capabilities::default(),
                mailbox: watch::channel(None).0,
                last_seen: Instant::now(),
                missed_deadline: false,
                misses_in_a_row: 0,
                benched_until: 0,
                told_finish: false,
                polls_waiting: 0,
                downloads_open: 0,
                host,
                credential,
                gave_up: None,
                collected: None,
            },
        );
        drop(indices);
        self.joined.send_replace(self.clients.len());
        Ok((index, secret))
    }

    pub fn joined_count(&self) -> usize {
        self.clients.len()
    }

    pub fn info(&self, id: &Uuid) -> Option<ClientInfo> {
        self.clients.get(id).map(|e| ClientInfo { id: *id, index: e.index })
    }

    /// Records a poll: the client is alive, and may report its capabilities.
    pub fn touch(&self, id: &Uuid, capabilities: Option<Capabilities>) {
        if let Some(mut entry) = self.clients.get_mut(id) {
            entry.last_seen = Instant::now();
            entry.missed_deadline = false;
            if let Some(c) = capabilities {
                entry.capabilities = c;
            }
        }
    }

    /// Records what a client said about itself when it joined (not yet a sign that it works).
    pub fn set_capabilities(&self, id: &Uuid, capabilities: Capabilities) {
        if let Some(mut entry) = self.clients.get_mut(id) {
            entry.capabilities = capabilities;
        }
    }

    /// Gives away the slot of `holder` if it is gone; whether it did.
    fn release_if_gone(&self, indices: &mut Indices, holder: &Uuid) -> bool {
        let gone = self.clients.get(holder).is_some_and(|e| e.is_gone(self.patience));
        if gone && let Some((_, entry)) = self.clients.remove(holder) {
            indices.release(entry.index);
            if let Some(c) = &entry.credential
                && let Some(count) = indices.by_credential.get_mut(c)
            {
                *count = count.saturating_sub(1);
            }
            self.generation.fetch_add(1, Ordering::Relaxed);
            self.joined.send_replace(self.clients.len());
            let silent_secs = entry.last_seen.elapsed().as_secs();
            tracing::warn!(index = entry.index, silent_secs, "gave a gone client's slot to a client that joined");
        }
        gone
    }

    /// Gives away the slot of the client gone the longest, if any (when the federation is
    /// full): one, so that a client away for a while loses its slot only to a newcomer.
    fn release_longest_gone(&self, indices: &mut Indices) {
        let longest =
            self.clients.iter().filter(|e| e.is_gone(self.patience)).min_by_key(|e| e.last_seen).map(|e| *e.key());
        if let Some(id) = longest {
            self.release_if_gone(indices, &id);
        }
    }

    /// Checks a client's dataset fingerprint against the federation's (the server's own, or
    /// else the first one reported, if it has the form of one).
    pub fn check_fingerprint(&self, fingerprint: &str) -> Result<(), FingerprintError> {
        if fingerprint.is_empty() {
            return Ok(());
        }
        let shown = || strata_proto::text::clip(fingerprint, MAX_FINGERPRINT_CHARS);
        if fingerprint.chars().count() > MAX_FINGERPRINT_CHARS || fingerprint.chars().any(char::is_control) {
            return Err(FingerprintError::Malformed { got: shown() });
        }
        let mut reference = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
        match reference.as_deref() {
            Some(r) if r != fingerprint => Err(FingerprintError::Mismatch {
                expected: strata_proto::text::clip(r, MAX_FINGERPRINT_CHARS),
                got: shown(),
            }),
            Some(_) => Ok(()),
            None => {
                *reference = Some(fingerprint.to_string());
                Ok(())
            }
        }
    }

    /// Records that the client was told the run is over.
    pub fn mark_finished(&self, id: &Uuid) {
        if let Some(mut entry) = self.clients.get_mut(id) {
            entry.told_finish = true;
        }
    }

    /// Clients that poll for themselves and hosts that were not yet told the run is over.
    pub fn not_told_finish(&self) -> usize {
        let clients = self.clients.iter().filter(|e| e.host.is_none() && !e.told_finish).count();
        clients + self.hosts.iter().filter(|h| !h.told_finish.load(Ordering::Relaxed)).count()
    }

    /// Tells every host the run is over, from its next poll on; returns the clients that poll
    /// for themselves, which need a FINISH task each.
    pub fn finish_hosts(&self) -> Vec<ClientInfo> {
        for host in self.hosts.iter() {
            host.finishing.store(true, Ordering::Relaxed);
            host.posted.notify_one();
        }
        self.snapshot(|e| e.host.is_none())
    }

    /// Whether client `id` joined through host `host`.
    pub fn is_host_of(&self, id: &Uuid, host: &Uuid) -> bool {
        let Some(host) = self.hosts.get(host).map(|h| Arc::clone(h.value())) else { return false };
        self.clients.get(id).is_some_and(|e| e.host.as_ref().is_some_and(|h| Arc::ptr_eq(h, &host)))
    }

    /// A host's long poll: the tasks posted to its clients (at most `max`), waiting up to
    /// `wait` for one; `None` for a host nobody joined through.
    pub async fn poll_host(&self, host: &Uuid, wait: Duration, max: usize) -> Option<HostPoll> {
        let host = Arc::clone(self.hosts.get(host)?.value());
        host.touch();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let posted = host.posted.notified();
            let poll = self.collect_host(&host, max.max(1));
            if !poll.tasks.is_empty() || poll.finished {
                host.touch();
                return Some(poll);
            }
            if tokio::time::timeout_at(deadline, posted).await.is_err() {
                host.touch();
                return Some(HostPoll::default());
            }
        }
    }

    fn collect_host(&self, host: &Host, max: usize) -> HostPoll {
        // The ids are taken under the queue's lock and looked up after it is released: `post`
        // queues while it holds its client's shard, so a shard locked under the queue's lock
        // could deadlock against it.
        let (ids, more) = {
            let mut pending = host.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (mut ids, mut seen) = (Vec::new(), HashSet::new());
            while ids.len() < max {
                let Some(id) = pending.pop_front() else { break };
                if seen.insert(id) {
                    ids.push(id);
                }
            }
            (ids, !pending.is_empty())
        };
        if more {
            // Another poll (or this host's next one) takes the rest at once.
            host.posted.notify_one();
        }
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(mut entry) = self.clients.get_mut(&id) else { continue };
            let task = entry.mailbox.borrow().clone();
            if let Some(task) = task {
                entry.collected = Some(task.task_id.clone());
                tasks.push((id, task));
            }
        }
        let finished = !more && tasks.is_empty() && host.finishing.load(Ordering::Relaxed);
        if finished {
            host.told_finish.store(true, Ordering::Relaxed);
        }
        HostPoll { tasks, finished }
    }

    pub fn capabilities(&self, id: &Uuid) -> Option<Capabilities> {
        self.clients.get(id).map(|e| e.capabilities.clone())
    }

    /// The client missed the current round's deadline: not picked again until it polls, and,
    /// after its k-th miss in a row, not in the next 2^(k−1) − 1 rounds.
    pub fn mark_missed(&self, id: &Uuid) {
        let round = self.round.load(Ordering::Relaxed);
        if let Some(mut entry) = self.clients.get_mut(id) {
            entry.missed_deadline = true;
            entry.misses_in_a_row = entry.misses_in_a_row.saturating_add(1);
            let k = entry.misses_in_a_row.min(6);
            entry.benched_until = if k >= 2 { round.saturating_add(1u64 << (k - 1)) } else { 0 };
        }
    }

    /// The client delivered a result: its misses are forgiven.
    pub fn mark_delivered(&self, id: &Uuid) {
        if let Some(mut entry) = self.clients.get_mut(id) {
            entry.misses_in_a_row = 0;
            entry.benched_until = 0;
        }
    }

    /// The round being drawn and run: who sat out enough rounds is available again.
    pub fn begin_round(&self, round: u64) {
        self.round.store(round, Ordering::Relaxed);
    }

    /// Clients that may be picked: those that did not miss the last deadline without polling
    /// since, and were heard from within `patience` (a poll, a heartbeat, a result).
    pub fn available(&self, patience: std::time::Duration) -> Vec<ClientInfo> {
        let round = self.round.load(Ordering::Relaxed);
        self.snapshot(|e| e.is_available(patience, round))
    }

    /// `n` available clients drawn uniformly with `rng`, in index order (fewer when fewer are
    /// available). Candidates are drawn among all indices and kept while available, so the
    /// cost follows `n` when most clients are available; only when too few of the candidates
    /// are does it fall back to listing every available client.
    pub fn sample_available(&self, n: usize, patience: Duration, rng: &mut impl rand::Rng) -> Vec<ClientInfo> {
        if n == 0 {
            return Vec::new();
        }
        let (candidates, every_index) = {
            let indices = self.lock_indices();
            let capacity = indices.holders.len();
            let draws = capacity.min(2 * n + 64);
            let drawn: Vec<(u32, Uuid)> = rand::seq::index::sample(rng, capacity, draws)
                .into_iter()
                .filter_map(|i| Some((i as u32, indices.holders[i]?)))
                .collect();
            (drawn, draws == capacity)
        };
        // The first `n` available in a uniformly random order are a uniform sample of them.
        let round = self.round.load(Ordering::Relaxed);
        let mut picked: Vec<ClientInfo> = candidates
            .into_iter()
            .filter(|(_, id)| self.clients.get(id).is_some_and(|e| e.is_available(patience, round)))
            .take(n)
            .map(|(index, id)| ClientInfo { id, index })
            .collect();
        if picked.len() < n && !every_index {
            let all = self.available(patience);
            picked = rand::seq::index::sample(rng, all.len(), n.min(all.len())).into_iter().map(|i| all[i]).collect();
        }
        picked.sort_by_key(|c| c.index);
        picked
    }

    /// Poisson sampling (`[privacy]`): every slot of the federation is drawn independently
    /// with probability `rate`, and the drawn clients that are available train. A client's
    /// chance is `rate` or less (0 while unavailable), never more, as the accountant assumes;
    /// the draw is a binomial count of uniformly chosen slots, so it costs what the cohort costs.
    pub fn sample_poisson(&self, rate: f64, patience: Duration, rng: &mut impl rand::Rng) -> Vec<ClientInfo> {
        let drawn: Vec<(u32, Uuid)> = {
            let indices = self.lock_indices();
            let slots = indices.holders.len();
            let count = rand_distr::Binomial::new(slots as u64, rate.clamp(0.0, 1.0))
                .map(|b| rng.sample(b) as usize)
                .unwrap_or(0);
            rand::seq::index::sample(rng, slots, count.min(slots))
                .into_iter()
                .filter_map(|i| Some((i as u32, indices.holders[i]?)))
                .collect()
        };
        let round = self.round.load(Ordering::Relaxed);
        let mut picked: Vec<ClientInfo> = drawn
            .into_iter()
            .filter(|(_, id)| self.clients.get(id).is_some_and(|e| e.is_available(patience, round)))
            .map(|(index, id)| ClientInfo { id, index })
            .collect();
        picked.sort_by_key(|c| c.index);
        picked
    }

    /// Counts a long poll of the client as waiting until the returned guard is dropped (the
    /// poll answered, or its call dropped when the client went away); `None` if it left.
    pub fn begin_poll(&self, id: &Uuid) -> Option<Counted> {
        self.count(id, Count::PollsWaiting, u32::MAX)
    }

    /// Counts a download of the client as open until the returned guard is dropped; `None`
    /// when it already has `limit` open (or left).
    pub fn begin_download(&self, id: &Uuid, limit: u32) -> Option<Counted> {
        self.count(id, Count::DownloadsOpen, limit)
    }

    fn count(&self, id: &Uuid, count: Count, limit: u32) -> Option<Counted> {
        let mut entry = self.clients.get_mut(id)?;
        let n = count.of(&mut entry);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Counted { registry: self.clone(), id: *id, count })
    }

    /// Clients heard from within `patience`, and the rest: joined ones gone silent and those
    /// of a resumed run not back yet.
    pub fn liveness(&self, patience: std::time::Duration) -> (usize, usize) {
        let online = self.clients.iter().filter(|e| e.seen().elapsed() <= patience).count();
        let waiting = self.lock_indices().reserved.len();
        (online, self.clients.len() - online + waiting)
    }

    /// Whether the client was last heard from longer than `patience` ago (or left).
    /// Records that client `id` is done with task `task_id` without a result to come, if that
    /// is its current task (a poll for the task after it, a host joining it again after it
    /// failed).
    pub fn give_up(&self, id: &Uuid, task_id: &str) {
        if let Some(mut entry) = self.clients.get_mut(id) {
            entry.give_up(task_id);
        }
    }

    /// Whether client `id` ended task `task_id` without a result to come ([`Registry::give_up`]).
    pub fn gave_up(&self, id: &Uuid, task_id: &str) -> bool {
        self.clients.get(id).is_some_and(|e| e.gave_up.as_deref() == Some(task_id))
    }

    pub fn is_offline(&self, id: &Uuid, patience: std::time::Duration) -> bool {
        self.clients.get(id).is_none_or(|e| e.seen().elapsed() > patience)
    }

    fn snapshot(&self, keep: impl Fn(&ClientEntry) -> bool) -> Vec<ClientInfo> {
        let mut v: Vec<ClientInfo> = self
            .clients
            .iter()
            .filter(|e| keep(e.value()))
            .map(|e| ClientInfo { id: *e.key(), index: e.index })
            .collect();
        v.sort_by_key(|c| c.index);
        v
    }

    /// Puts a task in the client's mailbox, replacing any older one.
    pub fn post(&self, id: &Uuid, assignment: Arc<Assignment>) {
        if let Some(entry) = self.clients.get(id) {
            entry.mailbox.send_replace(Some(assignment));
            if let Some(host) = &entry.host {
                host.push(*id);
            }
        }
    }

    pub fn subscribe(&self, id: &Uuid) -> Option<watch::Receiver<Option<Arc<Assignment>>>> {
        self.clients.get(id).map(|e| e.mailbox.subscribe())
    }

    /// The client's current task, if any.
    pub fn current(&self, id: &Uuid) -> Option<Arc<Assignment>> {
        self.clients.get(id).and_then(|e| e.mailbox.borrow().clone())
    }

    /// Waits until at least `n` clients have joined.
    pub async fn wait_for(&self, n: usize) {
        let mut rx = self.joined.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we hold it.
        let _ = rx.wait_for(|&count| count >= n).await;
    }
}

/// What a [`Counted`] guard counts in its client's entry.
#[derive(Clone, Copy, Debug)]
enum Count {
    PollsWaiting,
    DownloadsOpen,
}

impl Count {
    fn of(self, entry: &mut ClientEntry) -> &mut u32 {
        match self {
            Count::PollsWaiting => &mut entry.polls_waiting,
            Count::DownloadsOpen => &mut entry.downloads_open,
        }
    }
}

/// A call in progress, counted in its client's entry until dropped, however the call ends.
pub struct Counted {
    registry: Registry,
    id: Uuid,
    count: Count,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(mut entry) = self.registry.clients.get_mut(&self.id) {
            let n = self.count.of(&mut entry);
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    thread_local! {
        /// The session each test client was given, per registry, so that joining again works.
        static SESSIONS: std::cell::RefCell<HashMap<(usize, Uuid), String>> = Default::default();
    }

    /// Joins as a well-behaved client does: with the session it was given, if it has one.
    fn join(registry: &Registry, id: Uuid, requested: Option<u32>, host: Option<Uuid>) -> Result<u32, JoinError> {
        let key = (Arc::as_ptr(&registry.clients) as usize, id);
        let session = SESSIONS.with(|s| s.borrow().get(&key).cloned().unwrap_or_default());
        let (index, session) = registry.join(id, requested, host, &session)?;
        SESSIONS.with(|s| s.borrow_mut().insert(key, session));
        Ok(index)
    }

    /// Over 4,000 draws at rate 0.3 from 10 slots, 8 of them joined and one of those missed a
    /// deadline: each available client is drawn in 30 % of the draws (within 5 standard
    /// errors), the unavailable and empty slots never, and cohort sizes vary as a binomial's.
    #[test]
    fn poisson_sampling_draws_each_available_client_with_the_rate() {
        let registry = Registry::new(10);
        let ids: Vec<Uuid> = (1..=8).map(Uuid::from_u128).collect();
        for id in &ids {
            join(&registry, *id, None, None).unwrap();
        }
        registry.mark_missed(&ids[0]);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
        let (draws, rate) = (4000, 0.3);
        let mut counts = [0u32; 10];
        let mut sizes = std::collections::BTreeSet::new();
        for _ in 0..draws {
            let cohort = registry.sample_poisson(rate, Duration::from_secs(60), &mut rng);
            sizes.insert(cohort.len());
            for c in cohort {
                counts[c.index as usize] += 1;
            }
        }
        let se = (rate * (1.0 - rate) / draws as f64).sqrt();
        assert_eq!(counts[0], 0, "a client that missed its deadline is not available");
        for (index, &n) in counts.iter().enumerate().take(8).skip(1) {
            let share = n as f64 / draws as f64;
            assert!((share - rate).abs() < 5.0 * se, "client {index}: {share}");
        }
        assert_eq!(counts[8..], [0, 0], "empty slots draw nobody");
        assert!(sizes.contains(&0) && sizes.len() >= 5, "{sizes:?}");
    }

    #[test]
    fn indices_are_assigned_lowest_first_and_kept_on_rejoin() {
        let registry = Registry::new(3);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(join(&registry, a, None, None), Ok(0));
        assert_eq!(join(&registry, b, Some(2), None), Ok(2));
        assert_eq!(join(&registry, a, None, None), Ok(0));
        assert_eq!(join(&registry, Uuid::from_u128(3), None, None), Ok(1));
        assert_eq!(join(&registry, Uuid::from_u128(4), None, None), Err(JoinError::Full { capacity: 3 }));
        assert_eq!(registry.joined_count(), 3);
    }

    #[test]
    fn a_resumed_registry_keeps_each_saved_client_its_index() {
        let (a, b, stranger) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let registry = Registry::resumed(3, &[(a, 2, None), (b, 0, None)], Some("fp".into()));
        assert_eq!(join(&registry, stranger, None, None), Ok(1), "the free index, not a reserved one");
        assert!(matches!(
            join(&registry, Uuid::from_u128(4), Some(2), None),
            Err(JoinError::IndexTaken { index: 2, .. })
        ));
        assert_eq!(join(&registry, a, None, None), Ok(2));
        assert!(matches!(join(&registry, b, Some(1), None), Err(JoinError::IndexChanged { index: 0, .. })));
        assert_eq!(join(&registry, b, Some(0), None), Ok(0));
        let identities: Vec<_> = registry.identities().into_iter().map(|(id, index, _)| (id, index)).collect();
        assert_eq!(identities, vec![(b, 0), (stranger, 1), (a, 2)]);
        assert!(registry.check_fingerprint("other").is_err(), "the saved fingerprint still holds");
    }

    #[test]
    fn a_client_id_alone_authorizes_nothing() {
        let registry = Registry::new(3);
        let (victim, thief) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let (index, session) = registry.join(victim, None, None, "").unwrap();
        assert_eq!(session.len(), 32, "128 bits in hex");
        assert_eq!(registry.authorize(&victim, &session), Ok(()));
        assert_eq!(registry.authorize(&victim, ""), Err(Unauthorized::WrongSession));
        assert_eq!(registry.authorize(&victim, &"0".repeat(32)), Err(Unauthorized::WrongSession));
        assert_eq!(registry.authorize(&thief, &session), Err(Unauthorized::NotJoined));
        // Joining under the victim's id without its session takes nothing.
        assert_eq!(registry.join(victim, None, None, ""), Err(JoinError::NotYourSession { id: victim }));
        assert_eq!(registry.join(victim, None, None, &"f".repeat(32)), Err(JoinError::NotYourSession { id: victim }));
        // With it, the client joins again as itself.
        assert_eq!(registry.join(victim, None, None, &session), Ok((index, session.clone())));
        // A taken index does not name its holder.
        let e = registry.join(thief, Some(index), None, "").unwrap_err().to_string();
        assert!(!e.contains(&victim.to_string()), "{e}");
        // Another client gets another secret.
        let (_, other) = registry.join(thief, None, None, "").unwrap();
        assert_ne!(other, session);
    }

    #[test]
    fn misses_in_a_row_bench_a_client_for_doubling_rounds_and_a_result_forgives_them() {
        let registry = Registry::new(2);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        join(&registry, a, None, None).unwrap();
        join(&registry, b, None, None).unwrap();
        let patience = Duration::from_secs(60);
        let available_in = |round: u64| {
            registry.begin_round(round);
            registry.touch(&a, None); // it polls again at once, as a squatter does
            registry.available(patience).len()
        };
        registry.begin_round(0);
        registry.mark_missed(&a); // first miss: sits out nothing beyond its next poll
        assert_eq!(available_in(1), 2);
        registry.mark_missed(&a); // second in a row (round 1): rounds 2 and 3 without it
        assert_eq!((available_in(2), available_in(3), available_in(4)), (1, 2, 2));
        registry.mark_missed(&a); // third (round 4): rounds 5 to 7 without it, back at 8
        assert_eq!((available_in(5), available_in(7), available_in(8)), (1, 1, 2));
        registry.mark_delivered(&a);
        registry.mark_missed(&a); // a result in between: the next miss is a first one again
        assert_eq!(available_in(9), 2);
    }

    #[test]
    fn reported_sample_counts_are_bounded() {
        use SampleKind::{Test, Training};
        let said =
            |train: u64, test: u64| Capabilities { train_samples: train, test_samples: test, ..Default::default() };
        let sizes = ShareSizes { train: vec![40, 70], test: vec![14, 24] };
        let known = Registry::new(2).with_sample_bounds(SampleBounds::Known(Arc::new(sizes)));
        assert_eq!(known.check_capabilities(1, &said(70, 24)), Ok(()));
        assert_eq!(
            known.check_capabilities(1, &said(71, 24)),
            Err(CapabilityError::NotItsShare { what: Training, index: 1, reported: 71, known: 70 })
        );
        assert_eq!(
            known.check_capabilities(1, &said(70, u64::MAX)),
            Err(CapabilityError::NotItsShare { what: Test, index: 1, reported: u64::MAX, known: 24 })
        );
        assert_eq!(known.check_capabilities(0, &said(0, 0)), Ok(()), "nothing said yet");
        let capped = Registry::new(2).with_sample_bounds(SampleBounds::AtMost(100));
        assert_eq!(capped.check_capabilities(0, &said(100, 100)), Ok(()));
        assert_eq!(
            capped.check_capabilities(0, &said(u64::MAX, 1)),
            Err(CapabilityError::TooMany { what: Training, reported: u64::MAX, max: 100 })
        );
        assert_eq!(
            capped.check_capabilities(0, &said(1, 101)),
            Err(CapabilityError::TooMany { what: Test, reported: 101, max: 100 })
        );
        let unbounded = Registry::new(1);
        assert_eq!(
            unbounded.check_capabilities(0, &said(u64::MAX, u64::MAX)),
            Ok(()),
            "unbounded without data or a cap"
        );
    }

    #[test]
    fn a_saved_session_is_needed_to_take_a_saved_slot_back() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let secret = strata_security::new_session();
        let saved = [(a, 0, Some(TokenHash::of(&secret))), (b, 1, None)];
        let registry = Registry::resumed(2, &saved, None);
        assert_eq!(registry.join(a, None, None, "guess"), Err(JoinError::NotYourSession { id: a }));
        assert_eq!(registry.join(a, None, None, &secret), Ok((0, secret.clone())));
        // A client saved before sessions gets a fresh one.
        let (index, fresh) = registry.join(b, None, None, "").unwrap();
        assert_eq!(index, 1);
        assert_eq!(registry.authorize(&b, &fresh), Ok(()));
        let saved_again: Vec<_> = registry.identities().into_iter().map(|(id, _, s)| (id, s.is_some())).collect();
        assert_eq!(saved_again, vec![(a, true), (b, true)]);
    }

    #[test]
    fn taken_and_out_of_range_indices_are_refused() {
        let registry = Registry::new(2);
        join(&registry, Uuid::from_u128(1), Some(1), None).unwrap();
        assert!(matches!(
            join(&registry, Uuid::from_u128(2), Some(1), None),
            Err(JoinError::IndexTaken { index: 1, .. })
        ));
        assert!(matches!(join(&registry, Uuid::from_u128(2), Some(5), None), Err(JoinError::IndexOutOfRange { .. })));
        assert!(matches!(join(&registry, Uuid::from_u128(1), Some(0), None), Err(JoinError::IndexChanged { .. })));
    }

    #[test]
    fn clients_must_load_the_same_data() {
        let registry = Registry::new(2);
        assert!(registry.check_fingerprint("").is_ok());
        assert!(registry.check_fingerprint("fmnist/70000/abc").is_ok());
        assert!(registry.check_fingerprint("fmnist/70000/abc").is_ok());
        assert!(registry.check_fingerprint("fmnist/69999/xyz").unwrap_err().to_string().contains("fmnist/70000/abc"));
        // What cannot be a fingerprint never becomes the federation's, nor is echoed whole.
        let fresh = Registry::new(1);
        for junk in ["x".repeat(1 << 20), "fmnist\nINFO forged".to_string()] {
            let err = fresh.check_fingerprint(&junk).unwrap_err();
            assert!(matches!(err, FingerprintError::Malformed { .. }), "{err}");
            assert!(err.to_string().len() < 1000 && !err.to_string().contains('\n'), "{err}");
        }
        assert_eq!(fresh.fingerprint(), None);
    }

    #[test]
    fn a_client_that_missed_a_deadline_is_not_available_until_it_polls() {
        let registry = Registry::new(2);
        let a = Uuid::from_u128(1);
        join(&registry, a, None, None).unwrap();
        registry.mark_missed(&a);
        assert!(registry.available(std::time::Duration::from_secs(60)).is_empty());
        assert_eq!(registry.joined_count(), 1);
        registry.touch(&a, None);
        assert_eq!(registry.available(std::time::Duration::from_secs(60)).len(), 1);
    }

    #[test]
    fn polls_and_downloads_count_until_their_guard_drops() {
        let registry = Registry::new(2);
        let a = Uuid::from_u128(1);
        join(&registry, a, None, None).unwrap();
        registry.mark_missed(&a);
        let patience = std::time::Duration::from_secs(60);
        {
            // A poll waiting: the client is alive even though it missed the last deadline.
            let _poll = registry.begin_poll(&a).unwrap();
            assert_eq!(registry.available(patience).len(), 1);
        }
        // The poll's call was dropped (the client went away): it no longer counts.
        assert!(registry.available(patience).is_empty());
        let first = registry.begin_download(&a, 2).unwrap();
        let _second = registry.begin_download(&a, 2).unwrap();
        assert!(registry.begin_download(&a, 2).is_none(), "a third download over the limit");
        drop(first);
        assert!(registry.begin_download(&a, 2).is_some());
        assert!(registry.begin_poll(&Uuid::from_u128(9)).is_none(), "an unknown client");
    }

    #[tokio::test]
    async fn a_host_collects_its_clients_tasks_and_keeps_them_alive() {
        let registry = Registry::new(4);
        let (host, other_host) = (Uuid::from_u128(100), Uuid::from_u128(101));
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(join(&registry, a, Some(0), Some(host)), Ok(0));
        assert_eq!(join(&registry, b, Some(1), Some(host)), Ok(1));
        assert_eq!(join(&registry, c, Some(2), Some(other_host)), Ok(2));
        assert_eq!(join(&registry, a, Some(0), None), Err(JoinError::HostChanged { id: a }));
        let wait = Duration::from_millis(20);
        assert!(registry.poll_host(&Uuid::from_u128(7), wait, 10).await.is_none(), "an unknown host");
        let idle = registry.poll_host(&host, wait, 10).await.unwrap();
        assert!(idle.tasks.is_empty() && !idle.finished);

        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let task = |i| Arc::new(Assignment::new(0, crate::assignment::TaskKind::Train, i, deadline));
        registry.post(&a, task(0));
        registry.post(&b, task(1));
        registry.post(&a, task(0));
        registry.post(&c, task(2));
        let first = registry.poll_host(&host, wait, 1).await.unwrap();
        assert_eq!(first.tasks.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![a], "at most max_tasks");
        let rest = registry.poll_host(&host, wait, 10).await.unwrap();
        assert_eq!(rest.tasks.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![b, a]);
        assert!(registry.poll_host(&host, wait, 10).await.unwrap().tasks.is_empty(), "each post is served once");

        // Hosted clients that never poll themselves stay available while their host polls; one
        // that missed a deadline comes back when its host joins it again.
        registry.mark_missed(&a);
        assert_eq!(registry.available(Duration::from_secs(60)).len(), 2);
        registry.poll_host(&host, Duration::ZERO, 10).await.unwrap();
        assert_eq!(registry.available(Duration::from_secs(60)).len(), 2, "a poll alone does not bring it back");
        assert_eq!(join(&registry, a, Some(0), Some(host)), Ok(0));
        assert_eq!(registry.available(Duration::from_secs(60)).len(), 3);
        std::thread::sleep(Duration::from_millis(30));
        registry.poll_host(&host, Duration::ZERO, 10).await.unwrap();
        let fresh = registry.available(Duration::from_millis(25));
        assert_eq!(fresh.iter().map(|c| c.id).collect::<Vec<_>>(), vec![a, b], "the silent host's client is not");

        assert_eq!(registry.not_told_finish(), 2);
        assert!(registry.finish_hosts().is_empty(), "no client polls for itself");
        let done = registry.poll_host(&other_host, wait, 10).await.unwrap();
        assert!(!done.finished && done.tasks.len() == 1, "queued tasks go out before the end");
        assert!(registry.poll_host(&other_host, wait, 10).await.unwrap().finished);
        assert!(registry.poll_host(&host, wait, 10).await.unwrap().finished);
        assert_eq!(registry.not_told_finish(), 0);
    }

    /// A population joins its first client twice (once for the config, once with its
    /// capabilities); when the first round's task is posted between the two, the second join
    /// must not end a task the host never collected. A join after collecting it does.
    #[tokio::test]
    async fn a_hosts_join_gives_up_only_a_task_it_collected() {
        let registry = Registry::new(2);
        let (host, a) = (Uuid::from_u128(100), Uuid::from_u128(1));
        assert_eq!(join(&registry, a, Some(0), Some(host)), Ok(0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let task = Arc::new(Assignment::new(0, crate::assignment::TaskKind::Train, 0, deadline));
        registry.post(&a, Arc::clone(&task));
        assert_eq!(join(&registry, a, Some(0), Some(host)), Ok(0));
        assert!(!registry.gave_up(&a, &task.task_id), "a task posted but not yet collected goes on");
        let polled = registry.poll_host(&host, Duration::ZERO, 10).await.unwrap();
        assert_eq!(polled.tasks.len(), 1);
        assert!(!registry.gave_up(&a, &task.task_id), "collecting a task does not end it");
        assert_eq!(join(&registry, a, Some(0), Some(host)), Ok(0));
        assert!(registry.gave_up(&a, &task.task_id), "joining again after collecting it ends it");
    }

    /// Posting (which queues under its client's shard) and a host's collecting (which marks
    /// what it collected) run at once from two threads without deadlocking each other.
    #[test]
    fn posting_and_collecting_at_once_do_not_deadlock() {
        let registry = Arc::new(Registry::new(64));
        let host = Uuid::from_u128(100);
        let ids: Vec<Uuid> = (0..64).map(|i| Uuid::from_u128(i + 1)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(join(&registry, *id, Some(i as u32), Some(host)), Ok(i as u32));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (done, finished) = std::sync::mpsc::channel();
        let poster = {
            let (registry, ids, done) = (Arc::clone(&registry), ids.clone(), done.clone());
            std::thread::spawn(move || {
                for round in 0..20_000u64 {
                    let id = &ids[round as usize % ids.len()];
                    registry
                        .post(id, Arc::new(Assignment::new(round, crate::assignment::TaskKind::Train, 0, deadline)));
                }
                let _ = done.send(());
            })
        };
        let collector = {
            let registry = Arc::clone(&registry);
            std::thread::spawn(move || {
                let entry = Arc::clone(registry.hosts.get(&host).expect("the host joined").value());
                for _ in 0..20_000 {
                    registry.collect_host(&entry, 8);
                }
                let _ = done.send(());
            })
        };
        for _ in 0..2 {
            finished.recv_timeout(Duration::from_secs(30)).expect("posting and collecting finish (no deadlock)");
        }
        poster.join().expect("poster");
        collector.join().expect("collector");
    }

    #[test]
    fn joining_a_large_federation_costs_the_same_per_client() {
        // Every index taken in turn: quadratic index searches would take minutes here.
        let registry = Registry::new(200_000);
        for i in 0..200_000u128 {
            join(&registry, Uuid::from_u128(i + 1), None, None).unwrap();
        }
        assert_eq!(join(&registry, Uuid::from_u128(0), None, None), Err(JoinError::Full { capacity: 200_000 }));
        assert_eq!(registry.identities().len(), 200_000);
    }

    #[test]
    fn a_slot_held_by_a_gone_client_is_given_away_longest_gone_first() {
        let registry = Registry::new(2).with_patience(Duration::from_millis(50));
        let (squatter, worker, newcomer) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        join(&registry, squatter, Some(0), None).unwrap();
        join(&registry, worker, Some(1), None).unwrap();
        registry.set_capabilities(&squatter, Capabilities { train_samples: 5, ..Default::default() });
        assert_eq!(join(&registry, newcomer, None, None), Err(JoinError::Full { capacity: 2 }), "not yet silent long");
        std::thread::sleep(Duration::from_millis(80));
        registry.touch(&worker, None);
        std::thread::sleep(Duration::from_millis(80));
        // Both are silent past their patience; the squatter longer (never heard from), so it goes
        // first, and only it.
        assert_eq!(join(&registry, newcomer, None, None), Ok(0));
        assert!(registry.info(&squatter).is_none() && registry.info(&worker).is_some());
        assert_eq!(registry.joined_count(), 2);
        // A client heard from once and silent since goes too, for the next one that needs a slot.
        let late = Uuid::from_u128(4);
        assert_eq!(join(&registry, late, None, None), Ok(1));
        assert!(registry.info(&worker).is_none());
        // A client with a long poll open is not silent, however long the poll.
        let _waiting = registry.begin_poll(&late).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        registry.touch(&newcomer, None);
        assert_eq!(join(&registry, Uuid::from_u128(5), None, None), Err(JoinError::Full { capacity: 2 }));
        // A requested index held by a squatter is given away too.
        let other = Registry::new(1).with_patience(Duration::ZERO);
        join(&other, squatter, Some(0), None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(join(&other, newcomer, Some(0), None), Ok(0));
    }
}
