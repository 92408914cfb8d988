//! Shamir's secret sharing of the two 32-byte secrets (blahaj, over GF(256), one polynomial
//! per byte). Share `p` (0-based, the neighbour's position in the sorted neighbourhood) is
//! the polynomial at x = p + 1; a share whose x is not its holder's is dropped, so a lying
//! holder cannot make two shares count as one point.

use blahaj::{Share, Sharks};

use crate::params::MAX_SHARES;

/// Splits `secret` into `count` shares, any `threshold` of which rebuild it.
pub(crate) fn split(secret: &[u8; 32], threshold: usize, count: usize) -> Vec<Vec<u8>> {
    debug_assert!(threshold >= 2 && threshold <= count && count <= MAX_SHARES as usize);
    Sharks(threshold as u8).dealer(secret).take(count).map(|s| Vec::from(&s)).collect()
}

/// Rebuilds a secret from `(position, share)` pairs; `None` with fewer than `threshold`
/// shares that are well formed and sit at their holder's point.
pub(crate) fn combine(shares: &[(usize, Vec<u8>)], threshold: usize) -> Option<[u8; 32]> {
    let points: Vec<Share> = shares
        .iter()
        .filter(|(position, bytes)| bytes.len() == 33 && usize::from(bytes[0]) == position + 1)
        .filter_map(|(_, bytes)| Share::try_from(bytes.as_slice()).ok())
        .collect();
    let secret = Sharks(threshold as u8).recover(&points).ok()?;
    secret.try_into().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn any_t_of_k_shares_rebuild_the_secret_and_t_minus_one_do_not() {
        let secret: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        let (t, k) = (4, 7);
        let shares: Vec<(usize, Vec<u8>)> = split(&secret, t, k).into_iter().enumerate().collect();
        // Every subset of size t (35 of them) rebuilds it; every subset of size t - 1 is refused.
        for mask in 0u32..(1 << k) {
            let subset: Vec<(usize, Vec<u8>)> = shares.iter().filter(|(p, _)| mask & (1 << p) != 0).cloned().collect();
            match subset.len() {
                n if n >= t => assert_eq!(combine(&subset, t), Some(secret), "subset {mask:b}"),
                _ => assert_eq!(combine(&subset, t), None, "subset {mask:b}"),
            }
        }
    }

    #[test]
    fn t_minus_one_shares_say_nothing_a_guess_could_check() {
        // With t - 1 shares fixed, every secret is equally consistent: interpolating them with
        // a made-up t-th share gives a different secret for each made-up value.
        let secret = [42u8; 32];
        let shares: Vec<(usize, Vec<u8>)> = split(&secret, 3, 5).into_iter().enumerate().collect();
        let known = &shares[..2];
        let mut rebuilt = std::collections::HashSet::new();
        for guess in 0..=255u8 {
            let mut fake = shares[2].1.clone();
            fake[1..].fill(guess);
            let mut with_guess = known.to_vec();
            with_guess.push((2, fake));
            rebuilt.insert(combine(&with_guess, 3).unwrap()[0]);
        }
        assert_eq!(rebuilt.len(), 256, "each guess of the third share gives another first byte");
    }

    #[test]
    fn a_share_at_the_wrong_point_is_dropped() {
        let secret = [9u8; 32];
        let shares: Vec<(usize, Vec<u8>)> = split(&secret, 2, 3).into_iter().enumerate().collect();
        // Holder 1 hands in holder 0's share as its own: only one point remains.
        let lying = vec![shares[0].clone(), (1, shares[0].1.clone())];
        assert_eq!(combine(&lying, 2), None);
        assert_eq!(combine(&shares[1..], 2), Some(secret));
    }
}
