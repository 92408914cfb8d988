//! Secure aggregation: the server learns the sum of the clients' vectors, never one of them.
//!
//! SecAgg+ (Bell et al., CCS 2020; Bonawitz et al., CCS 2017 for the complete graph), as
//! Flower implements it, with what `shared/methods/secagg-plus.md` found wrong there fixed:
//! a CSPRNG keyed with the full 32-byte seed for the masks, dropouts tolerated at every
//! stage (Bonawitz's nested sets), the modulus no larger than 2^32 and a sum that could wrap
//! refused, and clients that refuse an unmask request which could reveal both secrets of one
//! of their neighbours. No I/O here: `strata-proto` carries the messages, the server's round
//! loop and the client drive the two halves.
//!
//! A round: [`layout::Layout`] lays the shared tensors' changes out as one vector and
//! [`layout::context`] binds everything to the round; [`SecAggServer::new`] draws the graph; each client answers
//! [`SecAggClient::setup`] with its keys, [`SecAggClient::share_keys`] with its sealed
//! shares, [`SecAggClient::mask`] with its masked vector (from [`encoding::encode`]), and
//! [`SecAggClient::unmask`] with the shares that remove the masks;
//! [`SecAggServer::finish`] returns the plain sum, which [`encoding::decode`] turns into
//! the weighted mean.
//!
//! Threat model: an honest-but-curious server, and clients that may drop out at any stage.
//! Without signed keys and Bonawitz's consistency round, a malicious server could tell
//! different neighbours of one client different stories; the client-side checks bound what
//! one request can reveal, not what a sequence of lies to different clients can.

pub mod client;
pub mod encoding;
pub mod error;
pub mod graph;
mod keys;
pub mod layout;
pub mod messages;
pub mod params;
mod prg;
pub mod server;
mod shamir;

/// A Shamir share of a 32-byte secret: its point x, then one byte per secret byte.
pub const SHARE_BYTES: usize = 33;
/// One sealed message of two shares: their length prefix, both shares, the AEAD tag.
pub const SEALED_BYTES: usize = 2 + 2 * SHARE_BYTES + 16;

pub use client::SecAggClient;
pub use error::SecAggError;
pub use keys::PublicKeys;
pub use messages::{SealedShares, UnmaskReply, UnmaskRequest};
pub use params::{CountOrFraction, Resolve, RoundParams, SecAggConfig};
pub use server::{Dropouts, SecAggServer};

#[cfg(test)]
mod round_tests;
