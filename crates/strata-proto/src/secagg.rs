//! Secure aggregation's messages between the wire and `strata-secagg`'s types, and the checks
//! on what a client sends at each stage: every key 32 bytes, every sealed message and share
//! the exact size the protocol makes, no more entries than a neighbourhood holds. A message
//! that fails names the field and what is wrong.

use std::collections::BTreeMap;

use strata_secagg::{PublicKeys, RoundParams, SEALED_BYTES, SHARE_BYTES, SealedShares, UnmaskReply, UnmaskRequest};

use crate::pb;

/// A secure-aggregation message that does not fit the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecAggWireError {
    #[error("secure aggregation: {field} holds {got} bytes, where the protocol sends {expected}")]
    Length { field: &'static str, got: usize, expected: usize },
    #[error("secure aggregation: {field} lists {got} entries, more than a neighbourhood of {limit} holds")]
    TooMany { field: &'static str, got: usize, limit: usize },
    #[error("secure aggregation: {field} names client {client} twice")]
    Repeated { field: &'static str, client: u32 },
    #[error("secure aggregation: the round's parameters are missing")]
    NoParams,
}

fn key(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], SecAggWireError> {
    bytes.try_into().map_err(|_| SecAggWireError::Length { field, got: bytes.len(), expected: 32 })
}

fn sized(field: &'static str, bytes: &[u8], expected: usize) -> Result<Vec<u8>, SecAggWireError> {
    if bytes.len() != expected {
        return Err(SecAggWireError::Length { field, got: bytes.len(), expected });
    }
    Ok(bytes.to_vec())
}

fn at_most(field: &'static str, got: usize, limit: usize) -> Result<(), SecAggWireError> {
    if got > limit {
        return Err(SecAggWireError::TooMany { field, got, limit });
    }
    Ok(())
}

/// Entries keyed by client, each at most once.
fn distinct<T>(field: &'static str, entries: impl Iterator<Item = (u32, T)>) -> Result<Vec<(u32, T)>, SecAggWireError> {
    let mut seen = std::collections::BTreeSet::new();
    entries
        .map(|(client, value)| {
            if !seen.insert(client) {
                return Err(SecAggWireError::Repeated { field, client });
            }
            Ok((client, value))
        })
        .collect()
}

pub fn params_to_wire(p: &RoundParams) -> pb::SecAggParams {
    pb::SecAggParams {
        clients: p.clients as u32,
        neighbours: p.neighbours as u32,
        threshold: p.threshold as u32,
        clipping_range: p.clipping_range,
        quantization_range: p.quantization_range,
        modulus: p.modulus,
        max_weight: p.max_weight,
        uniform_weights: p.uniform_weights,
        tail: p.tail as u32,
    }
}

/// The parameters as sent; the client checks them ([`RoundParams::check`]) before use.
pub fn params_from_wire(p: Option<&pb::SecAggParams>) -> Result<RoundParams, SecAggWireError> {
    let p = p.ok_or(SecAggWireError::NoParams)?;
    Ok(RoundParams {
        clients: p.clients as usize,
        neighbours: p.neighbours as usize,
        threshold: p.threshold as usize,
        clipping_range: p.clipping_range,
        quantization_range: p.quantization_range,
        modulus: p.modulus,
        max_weight: p.max_weight,
        uniform_weights: p.uniform_weights,
        tail: p.tail as usize,
    })
}

pub fn peer_to_wire(client: u32, keys: &PublicKeys) -> pb::SecAggPeer {
    pb::SecAggPeer { client, mask_key: keys.mask.to_vec(), shares_key: keys.shares.to_vec() }
}

pub fn peer_from_wire(peer: &pb::SecAggPeer) -> Result<(u32, PublicKeys), SecAggWireError> {
    Ok((
        peer.client,
        PublicKeys { mask: key("mask_key", &peer.mask_key)?, shares: key("shares_key", &peer.shares_key)? },
    ))
}

/// A neighbourhood's keys (the server's share-keys message), at most `k` of them.
pub fn neighbours_from_wire(peers: &[pb::SecAggPeer], k: usize) -> Result<BTreeMap<u32, PublicKeys>, SecAggWireError> {
    at_most("neighbours", peers.len(), k)?;
    let parsed = peers.iter().map(peer_from_wire).collect::<Result<Vec<_>, _>>()?;
    Ok(distinct("neighbours", parsed.into_iter())?.into_iter().collect())
}

pub fn sharing_to_wire(s: &SealedShares) -> pb::SecAggSharing {
    pb::SecAggSharing { commitment: s.commitment.to_vec(), sealed: sealed_to_wire(&s.to) }
}

/// A client's share-keys answer, with at most `k − 1` sealed messages.
pub fn sharing_from_wire(s: &pb::SecAggSharing, k: usize) -> Result<SealedShares, SecAggWireError> {
    Ok(SealedShares {
        commitment: key("commitment", &s.commitment)?,
        to: sealed_from_wire("sealed", &s.sealed, k.saturating_sub(1))?,
    })
}

pub fn sealed_to_wire(sealed: &[(u32, Vec<u8>)]) -> Vec<pb::SecAggSealed> {
    sealed.iter().map(|(peer, c)| pb::SecAggSealed { peer: *peer, ciphertext: c.clone() }).collect()
}

/// Sealed messages (to or from `peer`), at most `limit`, each of the protocol's size.
pub fn sealed_from_wire(
    field: &'static str,
    sealed: &[pb::SecAggSealed],
    limit: usize,
) -> Result<Vec<(u32, Vec<u8>)>, SecAggWireError> {
    at_most(field, sealed.len(), limit)?;
    let parsed = sealed
        .iter()
        .map(|s| Ok((s.peer, sized("ciphertext", &s.ciphertext, SEALED_BYTES)?)))
        .collect::<Result<Vec<_>, SecAggWireError>>()?;
    distinct(field, parsed.into_iter())
}

pub fn unmask_request_from_wire(active: &[u32], dead: &[u32], k: usize) -> Result<UnmaskRequest, SecAggWireError> {
    at_most("active", active.len(), k)?;
    at_most("dead", dead.len(), k)?;
    // Repeats and overlaps are the client's to refuse (`SecAggClient::unmask` names them).
    Ok(UnmaskRequest { active: active.to_vec(), dead: dead.to_vec() })
}

pub fn unmask_to_wire(r: &UnmaskReply) -> pb::SecAggUnmask {
    let shares = |list: &[(u32, Vec<u8>)]| {
        list.iter().map(|(owner, share)| pb::SecAggShare { owner: *owner, share: share.clone() }).collect()
    };
    pb::SecAggUnmask { self_mask: shares(&r.self_mask), mask_key: shares(&r.mask_key) }
}

/// A client's unmask answer: at most `k` shares of each kind, each of the protocol's size.
pub fn unmask_from_wire(u: &pb::SecAggUnmask, k: usize) -> Result<UnmaskReply, SecAggWireError> {
    let shares = |field: &'static str, list: &[pb::SecAggShare]| {
        at_most(field, list.len(), k)?;
        let parsed = list
            .iter()
            .map(|s| Ok((s.owner, sized("share", &s.share, SHARE_BYTES)?)))
            .collect::<Result<Vec<_>, SecAggWireError>>()?;
        distinct(field, parsed.into_iter())
    };
    Ok(UnmaskReply { self_mask: shares("self_mask", &u.self_mask)?, mask_key: shares("mask_key", &u.mask_key)? })
}

/// The answer a secure-aggregation stage expects of a client, and the bounds it is checked by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Setup: the client's two public keys.
    Keys,
    /// Share-keys: one sealed message for each of at most `neighbours − 1` others.
    Sharing { neighbours: usize },
    /// Masking: a vector of `values` elements in 0..`modulus`, after the header.
    Masked { values: usize, modulus: u64 },
    /// Unmask: at most `neighbours` shares of each kind.
    Unmask { neighbours: usize },
}

/// A client's answer to one stage, checked against its [`Expect`].
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Keys(PublicKeys),
    Sharing(SealedShares),
    /// The vector itself arrives after the header ([`crate::masked::MaskedAssembler`]).
    Masked(Vec<u32>),
    Unmask(UnmaskReply),
}

/// Why a stage's answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("this task expects a secure-aggregation answer ({expected}), and the result has none")]
    Missing { expected: &'static str },
    #[error("this task expects a secure-aggregation answer of kind {expected}, not {got}")]
    OtherKind { expected: &'static str, got: &'static str },
    #[error("this task takes no secure-aggregation answer")]
    Unexpected,
    #[error("the masked vector has {got} values, where this round's have {expected}")]
    Length { got: u64, expected: usize },
    #[error(transparent)]
    Wire(#[from] SecAggWireError),
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Expect::Keys => "keys",
            Expect::Sharing { .. } => "sharing",
            Expect::Masked { .. } => "masked_values",
            Expect::Unmask { .. } => "unmask",
        }
    }
}

fn answer_name(a: &pb::sec_agg_answer::Answer) -> &'static str {
    use pb::sec_agg_answer::Answer as A;
    match a {
        A::Keys(_) => "keys",
        A::Sharing(_) => "sharing",
        A::MaskedValues(_) => "masked_values",
        A::Unmask(_) => "unmask",
    }
}

/// Checks a result header's answer against the stage. A masked answer comes back empty: its
/// values follow the header.
pub fn answer_from_wire(
    expect: Option<Expect>,
    answer: Option<&pb::SecAggAnswer>,
) -> Result<Option<Answer>, AnswerError> {
    use pb::sec_agg_answer::Answer as A;
    let answer = answer.and_then(|a| a.answer.as_ref());
    let (expect, answer) = match (expect, answer) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Err(AnswerError::Unexpected),
        (Some(e), None) => return Err(AnswerError::Missing { expected: e.name() }),
        (Some(e), Some(a)) => (e, a),
    };
    Ok(Some(match (expect, answer) {
        (Expect::Keys, A::Keys(peer)) => Answer::Keys(peer_from_wire(peer)?.1),
        (Expect::Sharing { neighbours }, A::Sharing(s)) => Answer::Sharing(sharing_from_wire(s, neighbours)?),
        (Expect::Masked { values, .. }, A::MaskedValues(n)) => {
            if *n != values as u64 {
                return Err(AnswerError::Length { got: *n, expected: values });
            }
            Answer::Masked(Vec::new())
        }
        (Expect::Unmask { neighbours }, A::Unmask(u)) => Answer::Unmask(unmask_from_wire(u, neighbours)?),
        (e, a) => return Err(AnswerError::OtherKind { expected: e.name(), got: answer_name(a) }),
    }))
}

/// A client's answer as the wire carries it (a masked vector's values go in slices).
pub fn answer_to_wire(answer: &Answer) -> pb::SecAggAnswer {
    use pb::sec_agg_answer::Answer as A;
    let answer = match answer {
        // The server knows who sent it: the peer id is the sender's own index.
        Answer::Keys(keys) => A::Keys(peer_to_wire(0, keys)),
        Answer::Sharing(s) => A::Sharing(sharing_to_wire(s)),
        Answer::Masked(values) => A::MaskedValues(values.len() as u64),
        Answer::Unmask(u) => A::Unmask(unmask_to_wire(u)),
    };
    pb::SecAggAnswer { answer: Some(answer) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_secagg::{CountOrFraction, Resolve, SecAggClient, SecAggConfig, SecAggServer};

    use super::*;

    /// Three clients through setup and share-keys, every message through the wire.
    #[test]
    fn a_round_survives_the_wire_and_malformed_messages_are_named() {
        let config = SecAggConfig {
            num_shares: CountOrFraction::Count(3),
            reconstruction_threshold: CountOrFraction::Count(2),
            ..SecAggConfig::default()
        };
        let params = params_from_wire(Some(&params_to_wire(&config.resolve(3).unwrap()))).unwrap();
        params.check().unwrap();
        let mut server = SecAggServer::new(params.clone(), b"ctx", &[0, 1, 2], &mut rand::rng()).unwrap();
        let mut clients = Vec::new();
        for id in 0..3 {
            let (client, keys) = SecAggClient::setup(id, b"ctx", params.clone()).unwrap();
            let (from, keys) = peer_from_wire(&peer_to_wire(id, &keys)).unwrap();
            server.add_keys(from, keys).unwrap();
            clients.push(client);
        }
        server.close_keys().unwrap();
        for (id, client) in clients.iter_mut().enumerate() {
            let wire: Vec<pb::SecAggPeer> =
                server.neighbour_keys(id as u32).unwrap().iter().map(|(c, k)| peer_to_wire(*c, k)).collect();
            let sealed = client.share_keys(neighbours_from_wire(&wire, 3).unwrap()).unwrap();
            let back = sharing_from_wire(&sharing_to_wire(&sealed), 3).unwrap();
            assert_eq!(back, sealed);
            server.add_shares(id as u32, back).unwrap();
        }
        server.close_shares().unwrap();

        // Malformed: a short key, a long ciphertext, a repeated destination, too many shares.
        let mut peer = peer_to_wire(0, &PublicKeys { mask: [1; 32], shares: [2; 32] });
        peer.mask_key.pop();
        assert_eq!(
            peer_from_wire(&peer).unwrap_err(),
            SecAggWireError::Length { field: "mask_key", got: 31, expected: 32 }
        );
        let good = pb::SecAggSealed { peer: 1, ciphertext: vec![0; SEALED_BYTES] };
        let long = pb::SecAggSealed { peer: 2, ciphertext: vec![0; SEALED_BYTES + 1] };
        assert!(matches!(sealed_from_wire("sealed", &[long], 2), Err(SecAggWireError::Length { .. })));
        assert_eq!(
            sealed_from_wire("sealed", &[good.clone(), good.clone()], 2).unwrap_err(),
            SecAggWireError::Repeated { field: "sealed", client: 1 }
        );
        let share = |owner| pb::SecAggShare { owner, share: vec![1; SHARE_BYTES] };
        let many = pb::SecAggUnmask { self_mask: (0..4).map(share).collect(), mask_key: vec![] };
        assert!(matches!(unmask_from_wire(&many, 3), Err(SecAggWireError::TooMany { got: 4, limit: 3, .. })));
        let reply = UnmaskReply { self_mask: vec![(0, vec![7; SHARE_BYTES])], mask_key: vec![] };
        assert_eq!(unmask_from_wire(&unmask_to_wire(&reply), 3).unwrap(), reply);
        assert_eq!(params_from_wire(None).unwrap_err(), SecAggWireError::NoParams);
        // User-level DP's flags travel too.
        let private = config.resolve(3).unwrap().private(true);
        assert_eq!(params_from_wire(Some(&params_to_wire(&private))).unwrap(), private);
    }
}
