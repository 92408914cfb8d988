//! What the server tells observers (a progress bar, logs, tests) as a run goes: a closed
//! set of events, so every trigger is visible in one place.

use strata_core::records::RoundRecord;

#[derive(Clone, Debug)]
pub enum ServerEvent {
    ClientJoined {
        index: u32,
        joined: usize,
    },
    RoundStarted {
        round: u64,
        training: usize,
        evaluating: usize,
    },
    ResultAccepted {
        round: u64,
        client: u32,
    },
    ResultRefused {
        client: Option<u32>,
        reason: String,
    },
    /// A cut upload went on from the parts the server kept, with the bytes it already held.
    UploadResumed {
        client: u32,
        from_part: u64,
        bytes_held: u64,
    },
    // Boxed: a round record is far larger than the other events.
    RoundFinished(Box<RoundRecord>),
    RunFinished,
}
