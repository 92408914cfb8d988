//! The open round, as the gRPC handlers see it: which client may send which result, and
//! which results are already in. The round loop opens and closes it; handlers ask it before
//! reading a single tensor byte.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::assignment::Assignment;
use crate::validate::{Refusal, RefusalCode};

#[derive(Debug, Default)]
pub struct RoundGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    open: Option<OpenRound>,
    /// The tasks answered in the last closed round or phase, by client, so that a late copy
    /// of an accepted result is called a duplicate rather than merely late.
    closed: HashMap<Uuid, String>,
}

#[derive(Debug)]
struct OpenRound {
    round: u64,
    tasks: HashMap<Uuid, Arc<Assignment>>,
    in_flight: HashSet<Uuid>,
    received: HashSet<Uuid>,
}

impl RoundGate {
    pub fn open(&self, round: u64, tasks: HashMap<Uuid, Arc<Assignment>>) {
        self.lock().open = Some(OpenRound { round, tasks, in_flight: HashSet::new(), received: HashSet::new() });
    }

    pub fn close(&self) {
        let mut state = self.lock();
        if let Some(open) = state.open.take() {
            state.closed = open
                .received
                .into_iter()
                .filter_map(|id| open.tasks.get(&id).map(|t| (id, t.task_id.clone())))
                .collect();
        }
    }

    /// Admits the start of a result stream; the caller must later `accept` or `release`.
    pub fn admit(&self, client: Uuid, round: u64, task_id: &str) -> Result<Arc<Assignment>, Refusal> {
        let mut guard = self.lock();
        if guard.closed.get(&client).is_some_and(|t| t == task_id) {
            return Err(duplicate(round));
        }
        let open = guard.open.as_mut().ok_or_else(|| {
            Refusal::precondition(format!(
                "result for round {round} arrived while no round is open (late, or the run is over)"
            ))
        })?;
        if round != open.round {
            return Err(Refusal::precondition(format!(
                "result is for round {round}, but the server is at round {}",
                open.round
            )));
        }
        let task = open.tasks.get(&client).ok_or_else(|| Refusal {
            code: RefusalCode::PermissionDenied,
            message: format!("this client was not given a task in round {round}"),
        })?;
        if task.task_id != task_id {
            return Err(Refusal::precondition(format!(
                "result is for task `{}`, but this client's task in round {round} is `{}`",
                strata_proto::text::shown(task_id),
                task.task_id
            )));
        }
        if open.received.contains(&client) {
            return Err(duplicate(round));
        }
        if !open.in_flight.insert(client) {
            // Not sent yet: one is on its way, and a second stream would be a second copy.
            return Err(Refusal {
                code: RefusalCode::AlreadyExists,
                message: format!(
                    "this client's result for round {round} is already being received; \
                     it can be sent again if that upload fails or is cancelled"
                ),
            });
        }
        Ok(Arc::clone(task))
    }

    /// Records a complete, valid result; refuses it if the round closed meanwhile.
    pub fn accept(&self, client: Uuid, round: u64) -> Result<(), Refusal> {
        let mut guard = self.lock();
        match guard.open.as_mut() {
            Some(open) if open.round == round => {
                open.in_flight.remove(&client);
                open.received.insert(client);
                Ok(())
            }
            _ => Err(Refusal::precondition(format!(
                "round {round} closed (deadline passed) before the result was complete"
            ))),
        }
    }

    /// Whether one of the client's result streams is being received now.
    pub fn receiving(&self, client: Uuid) -> bool {
        self.lock().open.as_ref().is_some_and(|o| o.in_flight.contains(&client))
    }

    /// Frees the client's slot after a refused or broken stream, so it may try again.
    pub fn release(&self, client: Uuid, round: u64) {
        if let Some(open) = self.lock().open.as_mut().filter(|o| o.round == round) {
            open.in_flight.remove(&client);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // A poisoned lock only means a handler panicked mid-update of plain sets; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn duplicate(round: u64) -> Refusal {
    Refusal {
        code: RefusalCode::AlreadyExists,
        message: format!("this client already sent its result for round {round}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::assignment::TaskKind;

    fn gate_with(client: Uuid) -> RoundGate {
        let gate = RoundGate::default();
        let task = Arc::new(Assignment::new(3, TaskKind::Train, 0, tokio::time::Instant::now()));
        gate.open(3, HashMap::from([(client, task)]));
        gate
    }

    #[test]
    fn wrong_round_unknown_client_and_duplicates_are_refused() {
        let client = Uuid::from_u128(7);
        let gate = gate_with(client);
        assert_eq!(gate.admit(client, 2, "r3-train-c0").unwrap_err().code, RefusalCode::FailedPrecondition);
        assert_eq!(gate.admit(Uuid::from_u128(8), 3, "r3-train-c0").unwrap_err().code, RefusalCode::PermissionDenied);
        assert_eq!(gate.admit(client, 3, "r2-train-c0").unwrap_err().code, RefusalCode::FailedPrecondition);
        gate.admit(client, 3, "r3-train-c0").unwrap();
        let in_flight = gate.admit(client, 3, "r3-train-c0").unwrap_err();
        assert_eq!(in_flight.code, RefusalCode::AlreadyExists);
        assert!(in_flight.message.contains("already being received"), "{}", in_flight.message);
        gate.accept(client, 3).unwrap();
        let sent = gate.admit(client, 3, "r3-train-c0").unwrap_err();
        assert_eq!(sent.code, RefusalCode::AlreadyExists);
        assert!(sent.message.contains("already sent"), "{}", sent.message);
    }

    #[test]
    fn a_released_client_may_retry_and_a_closed_round_refuses() {
        let client = Uuid::from_u128(7);
        let gate = gate_with(client);
        gate.admit(client, 3, "r3-train-c0").unwrap();
        gate.release(client, 3);
        gate.admit(client, 3, "r3-train-c0").unwrap();
        gate.close();
        assert!(gate.accept(client, 3).is_err());
    }

    #[test]
    fn a_copy_of_an_accepted_result_is_a_duplicate_even_after_the_round_closed() {
        let client = Uuid::from_u128(7);
        let gate = gate_with(client);
        gate.admit(client, 3, "r3-train-c0").unwrap();
        gate.accept(client, 3).unwrap();
        gate.close();
        assert_eq!(gate.admit(client, 3, "r3-train-c0").unwrap_err().code, RefusalCode::AlreadyExists);
        assert_eq!(gate.admit(Uuid::from_u128(8), 3, "r3-train-c0").unwrap_err().code, RefusalCode::FailedPrecondition);
    }
}
