//! Key agreement and the keys derived from it: X25519, HKDF-SHA256 salted with the round's
//! context, and ChaCha20-Poly1305 for the shares, bound by associated data to their route.
//! Every key pair is fresh each round, and each derived share key encrypts one message.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

/// A client's two public keys for a round: one for the pairwise masks, one for its shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeys {
    pub mask: [u8; 32],
    pub shares: [u8; 32],
}

/// The secrets behind [`PublicKeys`]; zeroed when dropped.
pub(crate) struct Secrets {
    pub mask: StaticSecret,
    pub shares: StaticSecret,
}

impl Secrets {
    pub fn generate() -> Self {
        Self { mask: StaticSecret::from(random_32()), shares: StaticSecret::from(random_32()) }
    }

    pub fn public(&self) -> PublicKeys {
        PublicKeys { mask: PublicKey::from(&self.mask).to_bytes(), shares: PublicKey::from(&self.shares).to_bytes() }
    }
}

/// 32 bytes from the thread's CSPRNG (ChaCha, seeded from the OS).
pub(crate) fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// The public key of a mask secret given as raw bytes (a rebuilt one is checked against it).
pub(crate) fn public_of(secret: [u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(secret)).to_bytes()
}

/// The seed of the pairwise mask between the owner of `secret` and the owner of `public`:
/// both ends derive the same one.
pub(crate) fn mask_seed(secret: &StaticSecret, public: &[u8; 32], context: &[u8]) -> [u8; 32] {
    derive(secret, public, context, b"strata-secagg pairwise mask")
}

/// The key of the one message `src` sends `dst` (each direction has its own).
fn share_key(secret: &StaticSecret, public: &[u8; 32], context: &[u8], src: u32, dst: u32) -> [u8; 32] {
    let mut info = b"strata-secagg shares".to_vec();
    info.extend_from_slice(&src.to_be_bytes());
    info.extend_from_slice(&dst.to_be_bytes());
    derive(secret, public, context, &info)
}

fn derive(secret: &StaticSecret, public: &[u8; 32], context: &[u8], info: &[u8]) -> [u8; 32] {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 × 32.
    Hkdf::<Sha256>::new(Some(context), shared.as_bytes()).expand(info, &mut out).unwrap_or_default();
    out
}

fn route(context: &[u8], src: u32, dst: u32) -> Vec<u8> {
    let mut ad = context.to_vec();
    ad.extend_from_slice(&src.to_be_bytes());
    ad.extend_from_slice(&dst.to_be_bytes());
    ad
}

/// Encrypts `plain` from `src` (holding `secret`) to `dst` (holding `public`).
pub(crate) fn seal(
    secret: &StaticSecret,
    public: &[u8; 32],
    context: &[u8],
    src: u32,
    dst: u32,
    plain: &[u8],
) -> Vec<u8> {
    let key = share_key(secret, public, context, src, dst);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    // The key encrypts this one message, so a fixed nonce is never reused.
    cipher
        .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: plain, aad: &route(context, src, dst) })
        .unwrap_or_default()
}

/// Decrypts what `src` (holding `public`) sent `dst` (holding `secret`); `None` if it was not
/// sealed for this route in this round, or was altered.
pub(crate) fn open(
    secret: &StaticSecret,
    public: &[u8; 32],
    context: &[u8],
    src: u32,
    dst: u32,
    sealed: &[u8],
) -> Option<Vec<u8>> {
    let key = share_key(secret, public, context, src, dst);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    cipher.decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: sealed, aad: &route(context, src, dst) }).ok()
}

/// What a client commits to for its self-mask seed, so that a rebuilt seed can be checked.
pub(crate) fn commitment(context: &[u8], owner: u32, seed: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"strata-secagg self-mask commitment");
    h.update((context.len() as u64).to_be_bytes());
    h.update(context);
    h.update(owner.to_be_bytes());
    h.update(seed);
    h.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_agree_and_a_share_opens_only_on_its_route() {
        let (a, b) = (Secrets::generate(), Secrets::generate());
        let (pa, pb) = (a.public(), b.public());
        assert_eq!(mask_seed(&a.mask, &pb.mask, b"r1"), mask_seed(&b.mask, &pa.mask, b"r1"));
        assert_ne!(mask_seed(&a.mask, &pb.mask, b"r1"), mask_seed(&a.mask, &pb.mask, b"r2"));

        let sealed = seal(&a.shares, &pb.shares, b"r1", 1, 2, b"share");
        assert_eq!(open(&b.shares, &pa.shares, b"r1", 1, 2, &sealed).unwrap(), b"share");
        assert!(open(&b.shares, &pa.shares, b"r2", 1, 2, &sealed).is_none(), "another round");
        assert!(open(&b.shares, &pa.shares, b"r1", 3, 2, &sealed).is_none(), "another sender");
        assert!(open(&b.shares, &pa.shares, b"r1", 2, 1, &sealed).is_none(), "the other direction");
        let mut altered = sealed.clone();
        altered[0] ^= 1;
        assert!(open(&b.shares, &pa.shares, b"r1", 1, 2, &altered).is_none());
    }
}
