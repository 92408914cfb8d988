//! What the two halves send each other, stage by stage (the server's side of each exchange
//! is its method's arguments): plain data, for `strata-proto` to carry.

use serde::{Deserialize, Serialize};

/// Stage 1, client → server: the commitment to its self-mask seed and one sealed share
/// message for each other neighbour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealedShares {
    pub commitment: [u8; 32],
    /// (destination, ciphertext); the server routes each to its destination.
    pub to: Vec<(u32, Vec<u8>)>,
}

/// Stage 3, server → client: which of its neighbours sent a masked vector and which did not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    pub active: Vec<u32>,
    pub dead: Vec<u32>,
}

/// Stage 3, client → server: self-mask shares of the active, mask-key shares of the dead.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnmaskReply {
    /// (owner, share of its self-mask seed)
    pub self_mask: Vec<(u32, Vec<u8>)>,
    /// (owner, share of its mask secret key)
    pub mask_key: Vec<(u32, Vec<u8>)>,
}
