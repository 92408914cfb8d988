//! Robust aggregation end to end: real client daemons on loopback, one of them hostile
//! (`simulate --attack`'s client side), and the server's rule keeping it out of the global
//! model, as each round's record in `rounds.jsonl` shows; every rule with every method that
//! takes one, and every attack.

use std::path::Path;
use std::sync::Arc;

use strata_client::attack::Attack;
use strata_core::config::RunConfig;
use strata_core::method::Method;
use strata_core::records::RoundRecord;
use strata_tests::{client_options, read_jsonl, start_server, synthetic_config, torch_backend};

const HOSTILE: u32 = 4;

/// Five clients for two rounds; client 4 mounts `attack`; the server combines with `rule`.
async fn run(method: Method, rule: &str, attack: Attack, out: &Path) -> Vec<RoundRecord> {
    let mut config: RunConfig = synthetic_config(5, 2);
    config.method = method;
    run_config(config, rule, attack, out).await
}

/// [`run`] with a config of its own (five clients).
async fn run_config(mut config: RunConfig, rule: &str, attack: Attack, out: &Path) -> Vec<RoundRecord> {
    config.defense.rule = rule.parse().expect("a rule");
    let server = start_server(config, out).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let mut options = client_options(&server.url, i, &cache);
            options.attack = (i == HOSTILE).then_some(attack);
            tokio::spawn(strata_client::run(options, std::future::pending()))
        })
        .collect();
    let outcome = server.handle.await.expect("server task").expect("the run completes");
    for c in clients {
        c.await.expect("client task").expect("clients end cleanly");
    }
    assert_eq!(outcome.summary.rounds_completed, 2);
    read_jsonl(&out.join("rounds.jsonl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn krum_never_picks_the_scaled_client_and_a_norm_bound_clips_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rounds = run(Method::FedAvg, "krum:1", Attack::Scale(-50.0), &dir.path().join("krum")).await;
    assert_eq!(rounds.iter().filter(|r| r.aggregated).count(), 2, "{rounds:?}");
    for r in rounds.iter().filter(|r| r.aggregated) {
        let d = r.defense.as_ref().expect("every aggregated round records its rule");
        let selected = d.selected.as_ref().expect("krum says whom it picked");
        assert!(r.aggregated && d.rule == "krum" && selected.len() == 1 && selected[0] != HOSTILE, "{r:?}");
    }
    // FedPer: only the body is shared, and the bound is the median of the round's norms.
    let rounds = run(Method::FedPer, "norm-bound:median", Attack::Scale(100.0), &dir.path().join("norm")).await;
    assert_eq!(rounds.iter().filter(|r| r.aggregated).count(), 2, "{rounds:?}");
    for r in rounds.iter().filter(|r| r.aggregated) {
        let d = r.defense.as_ref().expect("every aggregated round records its rule");
        assert!(d.clipped.contains(&HOSTILE) && d.bound.is_some_and(|b| b > 0.0), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn free_riders_leave_the_model_where_it_was() {
    // Four free riders and one honest client, median: the median of each coordinate is the
    // model they were all sent, round after round.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config: RunConfig = synthetic_config(5, 2);
    config.defense.rule = "median".parse().expect("a rule");
    let server = start_server(config.clone(), dir.path()).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let mut options = client_options(&server.url, i, &cache);
            options.attack = (i != 0).then_some(Attack::FreeRider);
            tokio::spawn(strata_client::run(options, std::future::pending()))
        })
        .collect();
    server.handle.await.expect("server task").expect("the run completes");
    for c in clients {
        c.await.expect("client task").expect("clients end cleanly");
    }
    let (model, _) = strata_core::safetensors::read(&dir.path().join("model.safetensors")).expect("final model");
    let initial = torch_backend().initial_model(&config).expect("initial model");
    assert_eq!(model, initial, "the median of four unchanged models and one trained is the unchanged one");
}

/// A population whose hostile virtual client sends values beyond `max_abs_value`: each of its
/// results is refused, its host joins it again, and the round closes with the others' results
/// instead of waiting out its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_virtual_client_does_not_hold_its_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config: RunConfig = synthetic_config(5, 2);
    config.min_results = Some(4);
    config.round_timeout_secs = 600;
    let server = start_server(config.clone(), dir.path()).await;
    let mut options = strata_client::PopulationOptions::new(server.url.clone(), config.clients);
    options.device = "cpu".into();
    options.attacks = [(HOSTILE, Attack::Scale(1e12))].into();
    let population = tokio::spawn(strata_client::run_population(options, std::future::pending()));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(120), server.handle)
        .await
        .expect("no round waited for the refused client's deadline")
        .expect("server task")
        .expect("the run completes");
    population.await.expect("population task").expect("the population ends cleanly");
    assert_eq!(outcome.summary.rounds_completed, 2);
    let rounds: Vec<RoundRecord> = read_jsonl(&dir.path().join("rounds.jsonl"));
    assert!(rounds.iter().filter(|r| r.aggregated).all(|r| r.reported == 4), "{rounds:?}");
}

/// The rules beyond Krum and the median bound, on every method that takes one, and the
/// attacks beyond scaling: each round records its rule, and what each rule can show of the
/// hostile client (clipped, left out) it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rule_composes_with_the_methods_that_take_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);
    let scaled = Attack::Scale(100.0);
    let defended = |rounds: &[RoundRecord], rule: &str| -> Vec<strata_core::records::DefenseReport> {
        assert_eq!(rounds.iter().filter(|r| r.aggregated).count(), 2, "{rule}: {rounds:?}");
        let reports: Vec<_> = rounds.iter().filter(|r| r.aggregated).filter_map(|r| r.defense.clone()).collect();
        assert!(reports.len() == 2 && reports.iter().all(|d| rule.starts_with(&d.rule)), "{rule}: {rounds:?}");
        reports
    };
    // Multi-Krum keeps the n − f best scores: never the scaled client's.
    for (method, rule) in
        [(Method::FedProx, "multi-krum:1"), (Method::FedRep, "multi-krum:1:uniform"), (Method::Ditto, "multi-krum:1")]
    {
        let rounds = run(method, rule, scaled, &out(&format!("{method}-{rule}"))).await;
        for d in defended(&rounds, rule) {
            let selected = d.selected.expect("multi-krum says whom it kept");
            assert!(selected.len() == 4 && !selected.contains(&HOSTILE), "{method} {rule}: {selected:?}");
        }
    }
    // The median bound clips the scaled client, and a noisy one (σ = 1 on every value), in
    // the methods that average what they share and in FedCAC's per-client models.
    for (method, attack) in [(Method::FedCac, scaled), (Method::FedAvg, Attack::Noise(1.0))] {
        let rounds = run(method, "norm-bound:median", attack, &out(&format!("{method}-norm"))).await;
        for d in defended(&rounds, "norm-bound") {
            assert!(d.clipped.contains(&HOSTILE), "{method}: {d:?}");
        }
    }
    let data = tempfile::tempdir().expect("tempdir");
    strata_tests::write_tiny_idx(data.path(), 400, 100);
    let mut fedbn = synthetic_config(5, 2);
    fedbn.method = Method::FedBn;
    fedbn.model.name = "cnn-bn".into();
    fedbn.data.dataset = strata_core::config::DatasetKind::Idx;
    fedbn.data.path = Some(data.path().to_path_buf());
    let rounds = run_config(fedbn, "norm-bound:median", scaled, &out("fedbn-norm")).await;
    for d in defended(&rounds, "norm-bound") {
        assert!(d.clipped.contains(&HOSTILE), "fedbn: {d:?}");
    }
    // Sign flips and flipped labels under the median and the trimmed mean: the rounds aggregate.
    defended(&run(Method::FedAvg, "median", Attack::LabelFlip, &out("label-flip")).await, "median");
    defended(&run(Method::FedPer, "trimmed-mean:0.2", Attack::SignFlip, &out("sign-flip")).await, "trimmed-mean");

    // The trimmed mean drops each coordinate's extremes: the scaled client's change (100 times
    // an honest one) moves the model far less than it moves the plain mean.
    let moved = |dir: &Path| {
        let config = synthetic_config(5, 2);
        let initial = torch_backend().initial_model(&config).expect("initial model");
        let (model, _) = strata_core::safetensors::read(&dir.join("model.safetensors")).expect("final model");
        model
            .tensors()
            .iter()
            .zip(initial.tensors())
            .flat_map(|(a, b)| a.values().iter().zip(b.values()).map(|(x, y)| f64::from(x - y).powi(2)))
            .sum::<f64>()
            .sqrt()
    };
    run(Method::FedAvg, "none", scaled, &out("plain")).await;
    let trimmed = run(Method::FedAvg, "trimmed-mean:0.2", scaled, &out("trimmed")).await;
    defended(&trimmed, "trimmed-mean");
    let (plain, trimmed) = (moved(&out("plain")), moved(&out("trimmed")));
    assert!(trimmed * 5.0 < plain, "the trimmed mean moved the model {trimmed}, the plain mean {plain}");
}
