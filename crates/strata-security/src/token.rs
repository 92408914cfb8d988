//! Client tokens: random secrets that the server knows only by their SHA-256.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Marks a token, so that one pasted where its hash belongs is recognized.
pub const TOKEN_PREFIX: &str = "strata_";

/// A fresh token: `strata_` and 32 random bytes in hex (256 bits from the OS-seeded CSPRNG).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// A fresh session secret for a joined client: 16 random bytes in hex (128 bits from the
/// OS-seeded CSPRNG). The server keeps only its [`TokenHash`], as for tokens.
pub fn new_session() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    hex(&bytes)
}

/// The SHA-256 of a token (or of a session secret): what the server stores instead of it.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Compares in time that does not depend on where the hashes differ.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A client certificate's identity for binding slots to it: the SHA-256 of its DER bytes,
/// as `cert:sha256:<hex>` (what `openssl x509 -fingerprint -sha256` shows, without colons).
pub fn certificate_fingerprint(der: &[u8]) -> String {
    format!("cert:sha256:{}", hex(&Sha256::digest(der)))
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not a secret; printing it helps match a log line to a tokens-file line.
        write!(f, "sha256:{}", self.to_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]).collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_128_random_bits_in_hex() {
        let (a, b) = (new_session(), new_session());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(TokenHash::of(&a).ct_eq(&TokenHash::of(&a)) && !TokenHash::of(&a).ct_eq(&TokenHash::of(&b)));
    }

    #[test]
    fn hash_is_sha256_of_the_token_text() {
        // `printf %s abc | sha256sum`
        let known = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(TokenHash::of("abc").to_hex(), known);
        assert!(TokenHash::of("abc").ct_eq(&TokenHash::from_hex(known).unwrap()));
        assert!(TokenHash::of("abc").ct_eq(&TokenHash::from_hex(&known.to_uppercase()).unwrap()));
    }

    #[test]
    fn hex_parsing_refuses_wrong_lengths_and_digits() {
        assert!(TokenHash::from_hex("ab").is_none());
        assert!(TokenHash::from_hex(&"0".repeat(63)).is_none());
        assert!(TokenHash::from_hex(&format!("{}g", "0".repeat(63))).is_none());
        // Multi-byte characters must not be split into "digits".
        assert!(TokenHash::from_hex(&"é".repeat(32)).is_none());
    }

    #[test]
    fn constant_time_compare_tells_equal_from_different() {
        let a = TokenHash::of("one");
        assert!(a.ct_eq(&TokenHash::of("one")));
        assert!(!a.ct_eq(&TokenHash::of("two")));
        // Differing only in the last byte, or only in the first.
        let mut last = a;
        last.0[31] ^= 1;
        assert!(!a.ct_eq(&last));
        let mut first = a;
        first.0[0] ^= 0x80;
        assert!(!a.ct_eq(&first));
    }

    #[test]
    fn new_tokens_are_distinct_and_marked() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(a[TOKEN_PREFIX.len()..].bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
