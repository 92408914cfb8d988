//! Rounds of updates built from plain numbers, for the rules' tests.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_core::tensor::{NamedTensor, TensorSet};

use super::Contribution;

/// Every value of a set, tensors concatenated in order.
pub(super) fn flat(set: &TensorSet) -> Vec<f32> {
    set.tensors().iter().flat_map(|t| t.values().iter().copied()).collect()
}

/// Client i's Δ as f64, flattened.
pub(super) fn flat_delta(c: &Contribution) -> Vec<f64> {
    flat(c.update).iter().zip(flat(c.reference)).map(|(&x, r)| x as f64 - r as f64).collect()
}

/// A round: one reference and the clients' updates (client, update, weight).
pub(super) struct Round {
    pub shapes: Vec<(&'static str, Vec<usize>)>,
    pub reference: TensorSet,
    pub updates: Vec<(u32, TensorSet, f64)>,
}

impl Round {
    /// A round over tensors of these names and shapes; `reference` holds their values, flattened.
    pub fn new(shapes: &[(&'static str, Vec<usize>)], reference: &[f32]) -> Self {
        let shapes = shapes.to_vec();
        Self { reference: build(&shapes, reference), shapes, updates: Vec::new() }
    }

    /// Adds the client's update: the reference plus `delta` (flattened), in f32.
    pub fn push(&mut self, client: u32, weight: f64, delta: &[f32]) {
        let values: Vec<f32> = flat(&self.reference).iter().zip(delta).map(|(r, d)| r + d).collect();
        self.updates.push((client, build(&self.shapes, &values), weight));
    }

    pub fn contributions(&self) -> Vec<Contribution<'_>> {
        self.updates
            .iter()
            .map(|(client, update, weight)| Contribution {
                client: *client,
                reference: &self.reference,
                update,
                weight: *weight,
            })
            .collect()
    }

    /// `n` clients, ids shuffled, uniform values in [-1, 1] and weights in [1, 100).
    pub fn random(seed: u64, n: usize, shapes: &[(&'static str, Vec<usize>)]) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let numel: usize = shapes.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum();
        let mut uniform = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
        let mut round = Round::new(shapes, &uniform(numel));
        let deltas: Vec<Vec<f32>> = (0..n).map(|_| uniform(numel)).collect();
        let mut clients: Vec<u32> = (0..n as u32).collect();
        clients.shuffle(&mut rng);
        for ((i, delta), client) in deltas.iter().enumerate().zip(clients) {
            round.push(client, 1.0 + i as f64 * 10.0 % 99.0, delta);
        }
        round
    }

    /// `n_honest` clients whose Δs scatter ±0.05 around one direction, then one client whose
    /// Δ is an honest one times `scale` (the last, with the largest weight).
    pub fn honest_with_scaled_attacker(n_honest: u32, scale: f32) -> Self {
        let shapes = vec![("body.w", vec![4, 5]), ("body.b", vec![5])];
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let direction: Vec<f32> = (0..25).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut round = Round::new(&shapes, &[0.5; 25]);
        let mut last = direction.clone();
        for client in 0..n_honest {
            last = direction.iter().map(|d| d + rng.random_range(-0.05f32..0.05)).collect();
            round.push(client, 50.0, &last);
        }
        let attack: Vec<f32> = last.iter().map(|d| d * scale).collect();
        round.push(n_honest, 500.0, &attack);
        round
    }

    /// The unweighted mean Δ of these updates, flattened.
    pub fn mean_delta(updates: &[Contribution]) -> Vec<f64> {
        let deltas: Vec<Vec<f64>> = updates.iter().map(flat_delta).collect();
        let len = deltas.first().map_or(0, Vec::len);
        (0..len).map(|k| deltas.iter().map(|d| d[k]).sum::<f64>() / deltas.len() as f64).collect()
    }
}

fn build(shapes: &[(&'static str, Vec<usize>)], values: &[f32]) -> TensorSet {
    let mut rest = values;
    let tensors = shapes
        .iter()
        .map(|(name, shape)| {
            let (head, tail) = rest.split_at(shape.iter().product());
            rest = tail;
            NamedTensor::new(*name, shape.clone(), head.to_vec()).unwrap()
        })
        .collect();
    TensorSet::new(tensors).unwrap()
}
