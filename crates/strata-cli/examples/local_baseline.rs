//! The same clients' local training without the framework: no server, no gRPC, no tasks.
//!
//! Loads the data and partition exactly as a Strata client does (`DataCache::get`), builds each
//! client's tensors and model (same model name, same seed), and runs FedAvg in one thread:
//! every round, every client in turn imports the global model, evaluates it, trains, evaluates
//! again and exports, and the exports are averaged by training samples. It times
//!
//! - `train`: `train_local` alone (measure (a));
//! - `train_eval`: training plus the two evaluations a Strata client does per round (b);
//! - `fedavg`: (b) plus importing, exporting and averaging the parameters — an in-process
//!   FedAvg round, the least the framework could do;
//!
//! and prints each as one JSON line `{"measure": ..., "seconds": [round 0, round 1, ...]}`,
//! plus `setup` (loading and building, not in any round) and `accuracy` (weighted like
//! `rounds.jsonl`, to check the baseline computes what the simulation computes).
//!
//! ```text
//! cargo run --release -p strata-cli --example local_baseline -- \
//!   --clients 20 --split file:bench/fmnist-dir0.1-20clients-pfllib.json --rounds 2 --model cnn --seed 1
//! ```
//!
//! Flags are `strata simulate`'s run flags (same defaults: `RunConfig::reference_fmnist()`),
//! plus `--threads` (libtorch threads, default 1), `--device` (default cpu) and `--eval-batch`
//! (default 1000, as the client).

#[path = "../src/cmd/run_args.rs"]
mod run_args;

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use strata_core::config::RunConfig;
use strata_methods::aggregate::weighted_average;
use strata_torch::{ClientTensors, LocalModel, evaluate, parse_device, set_threads, train_local};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: run_args::RunArgs,
    /// libtorch threads (intra- and inter-op).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where the clients train: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Evaluation batch (1000 in `strata_client`'s `local.rs`).
    #[arg(long, default_value_t = 1000)]
    eval_batch: usize,
}

struct Client {
    model: LocalModel,
    data: ClientTensors,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.run.resolve()?;
    let device = parse_device(&cli.device)?;
    set_threads(cli.threads);

    let started = Instant::now();
    let (dataset, partition) = load(&config)?;
    let mut clients = Vec::with_capacity(partition.clients.len());
    for share in &partition.clients {
        let data = ClientTensors::from_share(&dataset, share, device)?;
        let model = LocalModel::new(&config.model.name, &dataset.shape, device, config.seed)?;
        clients.push(Client { model, data });
    }
    // The server's starting point: the same model and seed, on the CPU.
    let mut global = LocalModel::new(&config.model.name, &dataset.shape, parse_device("cpu")?, config.seed)?.export();
    let setup = started.elapsed().as_secs_f64();
    eprintln!("setup: {setup:.2} s, {} clients, {} threads, {device:?}", clients.len(), cli.threads);

    let rounds = usize::try_from(config.rounds)?;
    let (mut train, mut train_eval, mut fedavg) = (vec![0.0; rounds], vec![0.0; rounds], vec![0.0; rounds]);
    let (mut acc_merged, mut acc_trained) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..config.rounds {
        let r = usize::try_from(round)?;
        let round_started = Instant::now();
        let mut updates = Vec::with_capacity(clients.len());
        let (mut merged_sum, mut trained_sum, mut test_total) = (0.0, 0.0, 0u64);
        for (index, client) in clients.iter_mut().enumerate() {
            client.model.import(&global)?;
            let t0 = Instant::now();
            let merged = evaluate(&client.model, &client.data.test_x, &client.data.test_y, cli.eval_batch);
            let t1 = Instant::now();
            // The client's shuffling seed, as strata-client's `do_task` derives it.
            let seed = config.seed ^ ((index as u64) << 32) ^ round.wrapping_mul(0x9E37_79B9);
            train_local(&mut client.model, &client.data, &config.train, seed)?;
            let t2 = Instant::now();
            let trained = evaluate(&client.model, &client.data.test_x, &client.data.test_y, cli.eval_batch);
            let t3 = Instant::now();
            train[r] += (t2 - t1).as_secs_f64();
            train_eval[r] += (t3 - t0).as_secs_f64();
            updates.push((client.model.export(), client.data.train_len() as f64));
            let test = client.data.test_len() as u64;
            merged_sum += merged.accuracy() * test as f64;
            trained_sum += trained.accuracy() * test as f64;
            test_total += test;
        }
        global =
            weighted_average(updates.iter().map(|(set, w)| (set, *w))).context("no client has training samples")?;
        fedavg[r] = round_started.elapsed().as_secs_f64();
        let denom = test_total.max(1) as f64;
        acc_merged.push(merged_sum / denom);
        acc_trained.push(trained_sum / denom);
        eprintln!(
            "round {round}: train {:.2} s, train+eval {:.2} s, fedavg {:.2} s, accuracy {:.4} -> {:.4}",
            train[r], train_eval[r], fedavg[r], acc_merged[r], acc_trained[r]
        );
    }

    let common = serde_json::json!({
        "threads": cli.threads,
        "eval_batch": cli.eval_batch,
        "clients": clients.len(),
        "device": format!("{device:?}"),
    });
    let line = |measure: &str, value: serde_json::Value| {
        let mut object = serde_json::json!({"measure": measure});
        if let (Some(o), Some(v), Some(c)) = (object.as_object_mut(), value.as_object(), common.as_object()) {
            o.extend(v.clone());
            o.extend(c.clone());
        }
        println!("{object}");
    };
    line("setup", serde_json::json!({"seconds": setup}));
    line("train", serde_json::json!({"seconds": train}));
    line("train_eval", serde_json::json!({"seconds": train_eval}));
    line("fedavg", serde_json::json!({"seconds": fedavg}));
    line("accuracy", serde_json::json!({"personalized": acc_merged, "personalized_trained": acc_trained}));
    Ok(())
}

/// The run's dataset and partition, with the arguments `strata_client::DataCache::get` uses.
fn load(config: &RunConfig) -> anyhow::Result<(strata_data::Dataset, strata_data::partition::Partition)> {
    let dataset = strata_data::load(&config.data, config.seed)?;
    let partition = strata_data::partition::for_run(&config.data, config.clients as usize, config.seed, &dataset)?;
    Ok((dataset, partition))
}
