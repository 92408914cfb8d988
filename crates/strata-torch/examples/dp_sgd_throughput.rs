//! DP-SGD's training throughput beside plain SGD: FedAvgCNN on random 1×28×28 data
//! (Fashion-MNIST's shape), expected batch 10, one CPU thread, noise multiplier 1, per-sample
//! bound 1; `scripts/bench-dp-sgd.sh` runs Opacus on the same model, batch and data size.
//!
//! `cargo run --release -p strata-torch --example dp_sgd_throughput [-- SAMPLES [THREADS [Z]]]`

use std::time::Instant;

use strata_core::config::TrainConfig;
use strata_data::DataShape;
use strata_torch::{ClientTensors, DpSgd, LocalModel, TrainStats, set_threads, train_local, train_private};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map_or(Ok(3000), |s| s.parse())?;
    let threads: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    set_threads(threads);
    let batch = 10;
    let shape = DataShape { sample_shape: vec![1, 28, 28], num_classes: 10 };
    tch::manual_seed(0);
    let data = |n: i64| ClientTensors {
        train_x: Tensor::rand([n, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
        train_y: Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)),
        test_x: Tensor::zeros([0, 1, 28, 28], (Kind::Float, Device::Cpu)),
        test_y: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
    };
    let cfg = TrainConfig {
        lr: 0.005,
        batch_size: batch,
        local_epochs: 1,
        local_steps: None,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let z: f64 = args.next().map_or(Ok(1.0), |s| s.parse())?;
    let dp = DpSgd { noise_multiplier: z, clipping_norm: 1.0 };
    let (warm, timed) = (data(200), data(n));
    let report = |what: &str, stats: TrainStats, secs: f64| {
        println!(
            "{what}: fedavgcnn 1x28x28 expected batch {batch}, {threads} thread(s): {} samples in {} steps, {secs:.2} s = {:.0} samples/s",
            stats.samples,
            stats.steps,
            stats.samples as f64 / secs
        );
    };
    let mut model = LocalModel::new("cnn", &shape, Device::Cpu, 1)?;
    train_local(&mut model, &warm, &cfg, 0)?;
    let start = Instant::now();
    let stats = train_local(&mut model, &timed, &cfg, 1)?;
    report("strata sgd", stats, start.elapsed().as_secs_f64());
    let mut model = LocalModel::new("cnn", &shape, Device::Cpu, 1)?;
    train_private(&mut model, &warm, &cfg, dp, None)?;
    let start = Instant::now();
    let stats = train_private(&mut model, &timed, &cfg, dp, None)?;
    report("strata dp-sgd", stats, start.elapsed().as_secs_f64());
    Ok(())
}
