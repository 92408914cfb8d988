//! Who shares masks and secrets with whom: SecAgg+'s ring (a Harary graph under a random
//! relabelling). The round's clients are shuffled onto a ring and each one's neighbourhood
//! is the k nodes centred on it, itself included; k ≥ n is the complete graph (SecAgg).

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;

/// Each client's neighbourhood (itself included), symmetric by construction.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    neighbours: BTreeMap<u32, BTreeSet<u32>>,
}

impl Graph {
    /// The ring over `clients` (distinct ids) with neighbourhoods of `k` (odd, or ≥ n),
    /// shuffled by `rng`: the server's, from the OS, so nobody can choose their neighbours.
    pub fn ring(clients: &[u32], k: usize, rng: &mut impl rand::Rng) -> Self {
        let mut ring = clients.to_vec();
        ring.shuffle(rng);
        let n = ring.len();
        let neighbours = if k >= n {
            let all: BTreeSet<u32> = ring.iter().copied().collect();
            ring.iter().map(|&c| (c, all.clone())).collect()
        } else {
            let half = k / 2;
            (0..n).map(|p| (ring[p], (0..=2 * half).map(|o| ring[(p + n - half + o) % n]).collect())).collect()
        };
        Self { neighbours }
    }

    /// Client `id`'s neighbourhood, itself included (empty for a stranger).
    pub fn of(&self, id: u32) -> BTreeSet<u32> {
        self.neighbours.get(&id).cloned().unwrap_or_default()
    }

    /// Client `id`'s neighbours among `live`, itself included if live.
    pub fn live(&self, id: u32, live: &BTreeSet<u32>) -> BTreeSet<u32> {
        self.neighbours.get(&id).map(|n| n.intersection(live).copied().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn neighbourhoods_have_k_members_and_are_symmetric() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let clients: Vec<u32> = (100..120).collect();
        let g = Graph::ring(&clients, 5, &mut rng);
        for &c in &clients {
            let n = g.of(c);
            assert_eq!(n.len(), 5);
            assert!(n.contains(&c));
            for &j in &n {
                assert!(g.of(j).contains(&c), "{c} ~ {j} both ways");
            }
        }
        let complete = Graph::ring(&clients, 25, &mut rng);
        assert!(clients.iter().all(|&c| complete.of(c).len() == 20));
        // Another shuffle, other neighbours.
        assert_ne!(g, Graph::ring(&clients, 5, &mut rng));
    }
}
