//! Picks CCVR's retraining defaults: calibrates a finished run's global model with every
//! combination of virtual features per class (M_c), epochs and learning rate, through the
//! server's own code (`strata_server::ccvr::calibrate`), and prints the global accuracy
//! on the union of the clients' test splits for each, as a Markdown table.
//!
//! The client statistics are computed once, as clients compute them (`head_inputs` +
//! `client_stats` over each client's training split under the global model); only the
//! classifier changes between combinations, so each is evaluated on the test features directly.
//!
//! ```text
//! cargo run --release -p strata-cli --example ccvr_sweep -- RUN_DIR [--seeds 3]
//! ```
//! RUN_DIR holds `config.toml` and `model.safetensors` (any run of a method with a global
//! model writes them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use strata_core::calibration::{CalibrationConfig, CalibrationMethod};
use strata_core::config::RunConfig;
use strata_core::tensor::TensorSet;
use strata_methods::ccvr::{ClassStats, client_stats};
use strata_torch::backend::TorchBackend;
use strata_torch::classifier::head_inputs;
use strata_torch::{ClientTensors, LocalModel, set_threads};

#[derive(Parser)]
struct Cli {
    /// A finished run's directory.
    run: PathBuf,
    /// Sampling seeds averaged per combination.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 200, 500, 2000])]
    samples: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 5, 10])]
    epochs: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_values_t = [0.001f64, 0.01, 0.1])]
    lr: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    set_threads(1);
    let config_path = cli.run.join("config.toml");
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let config = RunConfig::from_toml(&text).with_context(|| format!("in {}", config_path.display()))?;
    let (global, _) = strata_core::safetensors::read(&cli.run.join("model.safetensors"))?;

    let started = Instant::now();
    let (dataset, partition) = strata_client::DataCache::default().get(&config).map_err(anyhow::Error::msg)?;
    let mut model = LocalModel::build(&config.model, &dataset.shape, tch::Device::Cpu, config.seed)?;
    model.import(&global)?;
    let mut stats: Vec<Vec<ClassStats>> = Vec::new();
    let (mut test_features, mut test_labels, mut dim) = (Vec::new(), Vec::new(), 0);
    for share in &partition.clients {
        let data = ClientTensors::from_share(&dataset, share, tch::Device::Cpu)?;
        let labels = |t: &tch::Tensor| -> anyhow::Result<Vec<i64>> { Ok(Vec::<i64>::try_from(t)?) };
        let (features, d) = head_inputs(&model, &data.train_x, 100);
        let train_labels: Vec<u32> = labels(&data.train_y)?.into_iter().map(|l| l as u32).collect();
        stats.push(client_stats(&features, &train_labels, d));
        let (features, d) = head_inputs(&model, &data.test_x, 100);
        test_features.extend(features);
        test_labels.extend(labels(&data.test_y)?);
        dim = d;
    }
    eprintln!("statistics of {} clients in {:.1} s", stats.len(), started.elapsed().as_secs_f64());
    // Pooled once: every setting below calibrates from the same classes.
    let pooled = strata_methods::ccvr::pool(&stats.concat(), dim)?;
    let accuracy = |params: &TensorSet| -> f64 {
        let w = params.get("head.weight").expect("head.weight").values();
        let b = params.get("head.bias").expect("head.bias").values();
        let classes = b.len();
        let hits = test_labels
            .iter()
            .enumerate()
            .filter(|&(i, &label)| {
                let z = &test_features[i * dim..(i + 1) * dim];
                let score = |k: usize| b[k] + w[k * dim..(k + 1) * dim].iter().zip(z).map(|(a, x)| a * x).sum::<f32>();
                (0..classes).max_by(|&p, &q| score(p).total_cmp(&score(q))) == Some(label as usize)
            })
            .count();
        hits as f64 / test_labels.len().max(1) as f64
    };
    println!("# CCVR retraining sweep\n");
    println!(
        "Run `{}` ({} on {}, split {}, {} clients, seed {}); global accuracy on the union of the clients' \
         test splits, mean over {} sampling seeds. Uncalibrated: **{:.2} %**.\n",
        cli.run.display(),
        config.method,
        config.data.dataset,
        config.data.split,
        config.clients,
        config.seed,
        cli.seeds,
        100.0 * accuracy(&global)
    );
    println!("| M_c | epochs | lr | calibrated % | min % | max % | seconds |\n|---:|---:|---:|---:|---:|---:|---:|");
    let mut best: BTreeMap<String, f64> = BTreeMap::new();
    for &samples_per_class in &cli.samples {
        for &epochs in &cli.epochs {
            for &lr in &cli.lr {
                let calib = CalibrationConfig {
                    method: CalibrationMethod::Ccvr,
                    samples_per_class,
                    epochs,
                    lr,
                    ..CalibrationConfig::default()
                };
                let t = Instant::now();
                let accs: Vec<f64> = (0..cli.seeds)
                    .map(|seed| {
                        strata_server::ccvr::calibrate(&global, model.parts(), &pooled, &calib, seed, &TorchBackend)
                            .map(|c| accuracy(&c.parameters))
                            .map_err(anyhow::Error::msg)
                    })
                    .collect::<anyhow::Result<_>>()?;
                let mean = accs.iter().sum::<f64>() / accs.len() as f64;
                let (min, max) = accs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                println!(
                    "| {samples_per_class} | {epochs} | {lr} | {:.2} | {:.2} | {:.2} | {:.1} |",
                    100.0 * mean,
                    100.0 * min,
                    100.0 * max,
                    t.elapsed().as_secs_f64() / cli.seeds as f64
                );
                best.insert(format!("M_c={samples_per_class} epochs={epochs} lr={lr}"), mean);
            }
        }
    }
    if let Some((k, v)) = best.iter().max_by(|a, b| a.1.total_cmp(b.1)) {
        println!("\nBest: {k} ({:.2} %).", 100.0 * v);
    }
    Ok(())
}
