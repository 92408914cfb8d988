//! What can go wrong in a round of secure aggregation.

/// An error of either half of the protocol. `Refused` is an honest party declining a request
/// that would weaken the protection (or that breaks the protocol); `TooFewShares` and
/// `TooFewNeighbours` end a round whose sum can no longer be recovered.
#[derive(Debug, thiserror::Error)]
pub enum SecAggError {
    #[error("secure aggregation: {0}")]
    Config(String),
    #[error("secure aggregation needs at least 2 clients in a round, not {n}")]
    TooFewClients { n: usize },
    #[error("refused: {0}")]
    Refused(String),
    #[error("stage {stage} called out of order (the protocol is at {at})")]
    OutOfOrder { stage: &'static str, at: &'static str },
    #[error("client {client} has {live} live neighbours at {stage}, below the threshold {threshold}")]
    TooFewNeighbours { client: u32, live: usize, threshold: usize, stage: &'static str },
    #[error(
        "only {got} shares of client {owner}'s {secret} came back, {threshold} are needed: the sum cannot be recovered"
    )]
    TooFewShares { owner: u32, secret: &'static str, got: usize, threshold: usize },
    #[error("client {owner}'s {secret} rebuilt from its shares does not match its commitment: a share is corrupt")]
    BadReconstruction { owner: u32, secret: &'static str },
    #[error("client {client}: {what}")]
    BadMessage { client: u32, what: String },
}
