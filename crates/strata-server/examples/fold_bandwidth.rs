//! How close FedAvg's fold comes to the machine's memory bandwidth: a STREAM-like triad
//! (`a = b + s·c` over f64 arrays, 24 bytes a value) and the same in place (`a += s·b`), on all
//! threads, the better of the two as the yardstick; then folding one update
//! into the running f64 sums (`RunningMean::add`: read a sum, read the f32 value, write the sum,
//! 20 bytes a value) as the server does for each arriving update, and the same fold as one
//! plain loop on one thread (how it ran before). Each is the best of several passes.
//!
//! Run: `cargo run --release -p strata-server --example fold_bandwidth [parameters] [passes]`
//! (defaults 50,000,000 and 7: a 200 MB update, 400 MB of sums).

use std::time::Instant;

use strata_core::parallel;
use strata_core::tensor::{NamedTensor, TensorSet};
use strata_methods::aggregate::RunningMean;

fn best_of(passes: usize, mut pass: impl FnMut()) -> f64 {
    (0..passes)
        .map(|_| {
            let started = Instant::now();
            pass();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50_000_000);
    let passes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(7);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    println!("values: {n}, passes: {passes} (best kept), threads: {threads}");

    let b: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let c: Vec<f64> = (0..n).map(|i| (n - i) as f64).collect();
    let mut a = vec![0f64; n];
    let triad = best_of(passes, || {
        parallel::for_chunks(&mut a, 1 << 18, |offset, a| {
            for ((x, &y), &z) in a.iter_mut().zip(&b[offset..]).zip(&c[offset..]) {
                *x = y + 3.0 * z;
            }
        });
    });
    let triad_rate = 24.0 * n as f64 / triad / 1e9;
    println!("triad a = b + s·c (f64, 24 B a value): {triad:.3} s, {triad_rate:.1} GB/s");
    // In place, as the fold is: no line of `a` is read only to be overwritten.
    let axpy = best_of(passes, || {
        parallel::for_chunks(&mut a, 1 << 18, |offset, a| {
            for (x, &y) in a.iter_mut().zip(&b[offset..]) {
                *x += 3.0 * y;
            }
        });
    });
    let axpy_rate = 24.0 * n as f64 / axpy / 1e9;
    println!("in place a += s·b (f64, 24 B a value): {axpy:.3} s, {axpy_rate:.1} GB/s");
    let triad_rate = triad_rate.max(axpy_rate);
    drop((a, b, c));

    let values: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 1e-3).collect();
    let update = TensorSet::new(vec![NamedTensor::new("w", vec![n], values)?])?;
    let mut mean = RunningMean::new(&update, 1.0);
    let fold = best_of(passes, || mean.add(&update, 2.0));
    let fold_rate = 20.0 * n as f64 / fold / 1e9;
    println!(
        "fold RunningMean::add (20 B a value): {fold:.3} s, {fold_rate:.1} GB/s, {:.0} % of the yardstick",
        100.0 * fold_rate / triad_rate
    );
    drop(mean);

    let mut sums = vec![0f64; n];
    let values = update.tensors()[0].values();
    let plain = best_of(passes, || {
        for (s, &v) in sums.iter_mut().zip(values) {
            *s += f64::from(v) * 2.0;
        }
    });
    let plain_rate = 20.0 * n as f64 / plain / 1e9;
    println!(
        "fold as one plain loop on one thread: {plain:.3} s, {plain_rate:.1} GB/s, {:.0} % of the yardstick",
        100.0 * plain_rate / triad_rate
    );
    std::hint::black_box(&sums);
    Ok(())
}
