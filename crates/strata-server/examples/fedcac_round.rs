//! Times FedCAC's whole server-side round at scale: `FedCac::aggregate_train` (the weighted
//! average w̄, the overlaps and collaborator sets, every client's customized model) and then the
//! state a round leaves for `--resume` (`snapshot` and its safetensors file), for K clients with
//! P-parameter models and random critical masks of density 0.5 (τ = 0.5): the worst case for
//! the customized models, as every client has its own collaborator set of about K/2 clients.
//! Round 0 allocates every client's model; later rounds write into the previous ones, so they
//! show what a run's rounds cost.
//!
//! Run: `cargo run --release -p strata-server --example fedcac_round [clients] [parameters]
//! [rounds]` (defaults 100, 10,000,000 and 3: about 8 GB of memory at the peak).

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_core::tensor::{NamedTensor, TensorSet};
use strata_server::client_info::ClientInfo;
use strata_server::strategy::{Aggregated, FedCac, Strategy};
use strata_server::validate;

/// A model of P parameters in three tensors, roughly a CNN's proportions.
fn model(rng: &mut ChaCha8Rng, parameters: usize) -> TensorSet {
    let head = 10.min(parameters);
    let conv = (parameters - head) * 2 / 3;
    let fc = parameters - head - conv;
    let tensor = |rng: &mut ChaCha8Rng, name: &str, n: usize| {
        let values = (0..n).map(|_| rng.random_range(-0.1f32..0.1)).collect();
        NamedTensor::new(name, vec![n], values).expect("shape matches")
    };
    TensorSet::new(vec![
        tensor(rng, "conv.weight", conv),
        tensor(rng, "fc.weight", fc),
        tensor(rng, "head.weight", head),
    ])
    .expect("distinct names")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let parameters: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000_000);
    let rounds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("clients: {clients}, parameters per model: {parameters}, threads: {threads}");

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut strategy = FedCac::new(model(&mut rng, parameters), 0.5, 100.0);
    let ids: Vec<ClientInfo> =
        (0..clients).map(|i| ClientInfo { id: uuid::Uuid::from_u128(i as u128 + 1), index: i as u32 }).collect();
    for round in 0..rounds {
        let started = Instant::now();
        let updates = ids
            .iter()
            .map(|c| {
                let mask = common::random_mask(&mut rng, parameters);
                validate::update(*c, 100 + c.index as u64, model(&mut rng, parameters), Some(mask), f64::MAX)
            })
            .collect::<Result<Vec<_>, _>>()?;
        println!("round {round}: generating {clients} updates: {:.2} s", started.elapsed().as_secs_f64());
        let started = Instant::now();
        match strategy.aggregate_train(round, updates) {
            Aggregated::Updated { .. } => {}
            Aggregated::Skipped { reason } => return Err(reason.into()),
        }
        println!(
            "round {round}: aggregate_train (w̄, overlaps, collaborators, {clients} customized models): {:.2} s \
             (theta = {:.5})",
            started.elapsed().as_secs_f64(),
            strategy.last_threshold().unwrap_or(f64::NAN),
        );
    }

    let started = Instant::now();
    let snapshot = strategy.snapshot();
    let snapshotted = started.elapsed().as_secs_f64();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.safetensors");
    let started = Instant::now();
    strata_core::safetensors::write(&path, &snapshot.tensors, &BTreeMap::new())?;
    let written = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "state for --resume: snapshot {snapshotted:.2} s, writing {:.2} GB: {written:.2} s ({:.1} bytes per client parameter)",
        bytes as f64 / 1e9,
        bytes as f64 / (clients * parameters) as f64,
    );
    Ok(())
}
