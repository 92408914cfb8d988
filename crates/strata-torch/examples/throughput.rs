//! Local-training throughput of FedAvgCNN on random 1×28×28 data (Fashion-MNIST's shape),
//! batch 10 (PFLlib's default), one CPU thread.
//!
//! `cargo run --release -p strata-torch --example throughput [-- STEPS [THREADS [DEVICE [MODEL]]]]`
//!
//! MODEL is `cnn` (the default) or any model `--model` takes, such as
//! `torchscript:bench/models/fedavg-cnn-seed1.pt` (scripts/byo-model/fedavg_cnn.py's export).

use std::time::Instant;

use strata_core::config::TrainConfig;
use strata_data::DataShape;
use strata_torch::{ClientTensors, LocalModel, parse_device, set_threads, train_local};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map_or(Ok(300), |s| s.parse())?;
    let threads: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    let device = parse_device(&args.next().unwrap_or_else(|| "cpu".into()))?;
    let model_name = args.next().unwrap_or_else(|| "cnn".into());
    set_threads(threads);

    let batch = 10;
    let n = (steps * batch) as i64;
    let shape = DataShape { sample_shape: vec![1, 28, 28], num_classes: 10 };
    tch::manual_seed(0);
    let data = ClientTensors {
        train_x: Tensor::rand([n, 1, 28, 28], (Kind::Float, device)) * 2.0 - 1.0,
        train_y: Tensor::randint(10, [n], (Kind::Int64, device)),
        test_x: Tensor::zeros([0, 1, 28, 28], (Kind::Float, device)),
        test_y: Tensor::zeros([0], (Kind::Int64, device)),
    };
    let mut model = LocalModel::build(&strata_core::config::ModelConfig::named(&model_name), &shape, device, 1)?;
    let cfg = TrainConfig {
        lr: 0.005,
        batch_size: batch,
        local_epochs: 1,
        local_steps: None,
        momentum: 0.0,
        weight_decay: 0.0,
    };

    // Warm-up (allocator, kernels), then the timed epoch.
    let warm = ClientTensors {
        train_x: data.train_x.narrow(0, 0, 20 * batch as i64),
        train_y: data.train_y.narrow(0, 0, 20 * batch as i64),
        test_x: data.test_x.shallow_clone(),
        test_y: data.test_y.shallow_clone(),
    };
    train_local(&mut model, &warm, &cfg, 0)?;
    let start = Instant::now();
    let stats = train_local(&mut model, &data, &cfg, 1)?;
    if device != Device::Cpu {
        tch::Cuda::synchronize(0);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{model_name} 1x28x28 batch {batch} threads {threads} device {device:?}: {} steps in {secs:.2} s = {:.1} steps/s ({:.0} samples/s), loss {:.3}",
        stats.steps,
        stats.steps as f64 / secs,
        stats.samples as f64 / secs,
        stats.mean_loss
    );
    Ok(())
}
