//! Who is in the federation: clients by UUID, their partition index, what they reported
//! about themselves, and each one's mailbox for tasks.
//!
//! A cheap-clone handle over a concurrent map, shared by the gRPC service (which joins and
//! polls) and the round loop (which picks and posts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::watch;
use uuid::Uuid;

use crate::assignment::Assignment;
use crate::strategy::ClientInfo;

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
    pub capabilities: Capabilities,
    /// The client's current task; a long poll waits for it to change.
    pub mailbox: watch::Sender<Option<Arc<Assignment>>>,
    pub last_seen: Instant,
    /// Set when the client missed a round's deadline; cleared by its next poll, so a client
    /// that died is not picked again (and waited for) until it comes back.
    pub missed_deadline: bool,
    /// Whether the client has received the FINISH task.
    pub told_finish: bool,
    /// Long polls of this client waiting right now: a client waiting for a task is alive even
    /// if it missed the last deadline (its poll began before the deadline marked it).
    pub polls_waiting: u32,
    /// Parameter downloads of this client open right now.
    pub downloads_open: u32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JoinError {
    #[error("client index {requested} is out of range: the federation has {capacity} clients (0..{capacity})")]
    IndexOutOfRange { requested: u32, capacity: u32 },
    #[error("client index {index} is already taken by client {holder}")]
    IndexTaken { index: u32, holder: Uuid },
    #[error("the federation is full: all {capacity} client indices are taken")]
    Full { capacity: u32 },
    #[error("client {id} already joined with index {index}, not {requested}")]
    IndexChanged { id: Uuid, index: u32, requested: u32 },
}

#[derive(Clone, Debug)]
pub struct Registry {
    clients: Arc<DashMap<Uuid, ClientEntry>>,
    capacity: u32,
    /// Serializes index allocation so two joins cannot take the same index.
    join_lock: Arc<Mutex<()>>,
    /// Count of joined clients, for the round loop to wait on.
    joined: watch::Sender<usize>,
    /// The dataset fingerprint the first client reported; every other client must match it,
    /// so that nobody trains on different data than the split assumes.
    fingerprint: Arc<Mutex<Option<String>>>,
    /// Indices held for clients of a resumed run until they rejoin with their UUID.
    reserved: Arc<Mutex<HashMap<u32, Uuid>>>,
}

impl Registry {
    pub fn new(capacity: u32) -> Self {
        Self {
            clients: Arc::new(DashMap::new()),
            capacity,
            join_lock: Arc::new(Mutex::new(())),
            joined: watch::channel(0).0,
            fingerprint: Arc::new(Mutex::new(None)),
            reserved: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A resumed run's registry: each saved client keeps its index for its UUID, and the
    /// dataset fingerprint stays the one the run started with.
    pub fn resumed(capacity: u32, clients: &[(Uuid, u32)], fingerprint: Option<String>) -> Self {
        let registry = Self::new(capacity);
        *registry.reserved.lock().unwrap_or_else(|e| e.into_inner()) =
            clients.iter().map(|&(id, index)| (index, id)).collect();
        *registry.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint;
        registry
    }

    /// Every joined client's UUID and index, and the reserved ones not back yet.
    pub fn identities(&self) -> Vec<(Uuid, u32)> {
        let mut all: HashMap<u32, Uuid> = self.reserved.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.extend(self.clients.iter().map(|e| (e.index, *e.key())));
        let mut v: Vec<(Uuid, u32)> = all.into_iter().map(|(index, id)| (id, index)).collect();
        v.sort_by_key(|&(_, index)| index);
        v
    }

    pub fn fingerprint(&self) -> Option<String> {
        self.fingerprint.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Admits a client, or re-admits one with the same UUID at its old index.
    pub fn join(&self, id: Uuid, requested: Option<u32>) -> Result<u32, JoinError> {
        let _guard = self.join_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut entry) = self.clients.get_mut(&id) {
            if let Some(r) = requested.filter(|&r| r != entry.index) {
                return Err(JoinError::IndexChanged { id, index: entry.index, requested: r });
            }
            entry.last_seen = Instant::now();
            entry.missed_deadline = false;
            return Ok(entry.index);
        }
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let own = reserved.iter().find(|(_, holder)| **holder == id).map(|(&index, _)| index);
        let index = match (requested, own) {
            (Some(r), _) if r >= self.capacity => {
                return Err(JoinError::IndexOutOfRange { requested: r, capacity: self.capacity });
            }
            (Some(r), Some(own)) if r != own => return Err(JoinError::IndexChanged { id, index: own, requested: r }),
            (_, Some(own)) => own,
            (Some(r), None) => {
                if let Some(holder) = self.clients.iter().find(|e| e.index == r) {
                    return Err(JoinError::IndexTaken { index: r, holder: *holder.key() });
                }
                if let Some(holder) = reserved.get(&r) {
                    return Err(JoinError::IndexTaken { index: r, holder: *holder });
                }
                r
            }
            (None, None) => {
                let taken: std::collections::HashSet<u32> =
                    self.clients.iter().map(|e| e.index).chain(reserved.keys().copied()).collect();
                (0..self.capacity).find(|i| !taken.contains(i)).ok_or(JoinError::Full { capacity: self.capacity })?
            }
        };
        reserved.remove(&index);
        drop(reserved);
        self.clients.insert(
            id,
            ClientEntry {
                index,
                capabilities: Capabilities::default(),
                mailbox: watch::channel(None).0,
                last_seen: Instant::now(),
                missed_deadline: false,
                told_finish: false,
                polls_waiting: 0,
                downloads_open: 0,
            },
        );
        self.joined.send_replace(self.clients.len());
        Ok(index)
    }

    pub fn joined_count(&self) -> usize {
        self.clients.len()
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.clients.contains_key(id)
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

    /// Checks a client's dataset fingerprint against the federation's (the first one reported).
    pub fn check_fingerprint(&self, fingerprint: &str) -> Result<(), String> {
        if fingerprint.is_empty() {
            return Ok(());
        }
        let mut reference = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
        match reference.as_deref() {
            Some(r) if r != fingerprint => Err(format!(
                "this client loaded dataset `{fingerprint}`, but the federation trains on `{r}`: check --data-path"
            )),
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

    /// How many clients were told the run is over.
    pub fn finished_count(&self) -> usize {
        self.clients.iter().filter(|e| e.told_finish).count()
    }

    pub fn capabilities(&self, id: &Uuid) -> Option<Capabilities> {
        self.clients.get(id).map(|e| e.capabilities.clone())
    }

    pub fn mark_missed(&self, id: &Uuid) {
        if let Some(mut entry) = self.clients.get_mut(id) {
            entry.missed_deadline = true;
        }
    }

    /// Every client, by index.
    pub fn all(&self) -> Vec<ClientInfo> {
        self.snapshot(|_| true)
    }

    /// Clients that may be picked: those that did not miss the last deadline without polling
    /// since, and were heard from within `patience` (a poll, a heartbeat, a result).
    pub fn available(&self, patience: std::time::Duration) -> Vec<ClientInfo> {
        self.snapshot(|e| (!e.missed_deadline || e.polls_waiting > 0) && e.last_seen.elapsed() <= patience)
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
        let online = self.clients.iter().filter(|e| e.last_seen.elapsed() <= patience).count();
        let waiting = self.reserved.lock().unwrap_or_else(|e| e.into_inner()).len();
        (online, self.clients.len() - online + waiting)
    }

    /// Whether the client was last heard from longer than `patience` ago (or left).
    pub fn is_offline(&self, id: &Uuid, patience: std::time::Duration) -> bool {
        self.clients.get(id).is_none_or(|e| e.last_seen.elapsed() > patience)
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

    #[test]
    fn indices_are_assigned_lowest_first_and_kept_on_rejoin() {
        let registry = Registry::new(3);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(registry.join(a, None), Ok(0));
        assert_eq!(registry.join(b, Some(2)), Ok(2));
        assert_eq!(registry.join(a, None), Ok(0));
        assert_eq!(registry.join(Uuid::from_u128(3), None), Ok(1));
        assert_eq!(registry.join(Uuid::from_u128(4), None), Err(JoinError::Full { capacity: 3 }));
        assert_eq!(registry.joined_count(), 3);
    }

    #[test]
    fn a_resumed_registry_keeps_each_saved_client_its_index() {
        let (a, b, stranger) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let registry = Registry::resumed(3, &[(a, 2), (b, 0)], Some("fp".into()));
        assert_eq!(registry.join(stranger, None), Ok(1), "the free index, not a reserved one");
        assert!(matches!(registry.join(Uuid::from_u128(4), Some(2)), Err(JoinError::IndexTaken { index: 2, .. })));
        assert_eq!(registry.join(a, None), Ok(2));
        assert!(matches!(registry.join(b, Some(1)), Err(JoinError::IndexChanged { index: 0, .. })));
        assert_eq!(registry.join(b, Some(0)), Ok(0));
        assert_eq!(registry.identities(), vec![(b, 0), (stranger, 1), (a, 2)]);
        assert!(registry.check_fingerprint("other").is_err(), "the saved fingerprint still holds");
    }

    #[test]
    fn taken_and_out_of_range_indices_are_refused() {
        let registry = Registry::new(2);
        registry.join(Uuid::from_u128(1), Some(1)).unwrap();
        assert!(matches!(registry.join(Uuid::from_u128(2), Some(1)), Err(JoinError::IndexTaken { index: 1, .. })));
        assert!(matches!(registry.join(Uuid::from_u128(2), Some(5)), Err(JoinError::IndexOutOfRange { .. })));
        assert!(matches!(registry.join(Uuid::from_u128(1), Some(0)), Err(JoinError::IndexChanged { .. })));
    }

    #[test]
    fn clients_must_load_the_same_data() {
        let registry = Registry::new(2);
        assert!(registry.check_fingerprint("").is_ok());
        assert!(registry.check_fingerprint("fmnist/70000/abc").is_ok());
        assert!(registry.check_fingerprint("fmnist/70000/abc").is_ok());
        assert!(registry.check_fingerprint("fmnist/69999/xyz").unwrap_err().contains("fmnist/70000/abc"));
    }

    #[test]
    fn a_client_that_missed_a_deadline_is_not_available_until_it_polls() {
        let registry = Registry::new(2);
        let a = Uuid::from_u128(1);
        registry.join(a, None).unwrap();
        registry.mark_missed(&a);
        assert!(registry.available(std::time::Duration::from_secs(60)).is_empty());
        assert_eq!(registry.all().len(), 1);
        registry.touch(&a, None);
        assert_eq!(registry.available(std::time::Duration::from_secs(60)).len(), 1);
    }

    #[test]
    fn polls_and_downloads_count_until_their_guard_drops() {
        let registry = Registry::new(2);
        let a = Uuid::from_u128(1);
        registry.join(a, None).unwrap();
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
}
