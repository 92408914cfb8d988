//! Times FedCAC's server-side collaboration step at scale: the overlap matrix, the threshold
//! and the collaborator sets among 100 clients with 10M-bit critical masks (density 0.5, as
//! with τ = 0.5), through the same function the strategy calls
//! ([`strata_methods::fedcac::collaboration`]).
//!
//! Run: `cargo run --release -p strata-server --example fedcac_overlap [clients] [bits]`

mod common;

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_core::mask::BitMask;
use strata_methods::fedcac;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let bits: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000_000);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let masks: Vec<BitMask> = (0..clients).map(|_| common::random_mask(&mut rng, bits)).collect();
    let generated = started.elapsed().as_secs_f64();
    let refs: Vec<&BitMask> = masks.iter().collect();
    let density = masks[0].count_ones() as f64 / bits as f64;
    println!("clients: {clients}, bits per mask: {bits}, density of mask 0: {density:.4}, threads: {threads}");
    println!("generating masks: {generated:.2} s");

    for run in 1..=3 {
        let started = Instant::now();
        let collab = fedcac::collaboration(&refs, 0, 100.0)?;
        let seconds = started.elapsed().as_secs_f64();
        let pairs = clients * clients.saturating_sub(1) / 2;
        let words = bits.div_ceil(64);
        println!(
            "run {run}: overlap matrix + threshold + collaborator sets: {seconds:.3} s \
             ({pairs} popcount passes of {words} words, {:.2} Gword/s; theta = {:.5}, \
             mean |C_i| = {:.2})",
            (pairs * words) as f64 / seconds / 1e9,
            collab.theta,
            collab.collaborators.iter().map(Vec::len).sum::<usize>() as f64 / clients.max(1) as f64,
        );
    }
    Ok(())
}
