//! User-level differential privacy end to end: real client daemons on loopback, the server
//! clipping, noising and accounting every round, as `rounds.jsonl`, `summary.json` and
//! `report.md` show.

use std::path::Path;
use std::sync::Arc;

use strata_client::attack::Attack;
use strata_core::config::RunConfig;
use strata_core::method::Method;
use strata_core::privacy::ClipPlacement;
use strata_core::records::RoundRecord;
use strata_methods::accountant::{Neighbouring, RdpAccountant};
use strata_tests::{client_options, read_jsonl, start_server, synthetic_config};

/// ε after `steps` Poisson-sampled releases, from the accountant itself.
fn epsilon(q: f64, z: f64, steps: u64, delta: f64) -> f64 {
    let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
    accountant.compose_poisson(q, z, steps).expect("valid event");
    accountant.epsilon(delta).expect("valid delta").epsilon
}

/// Five daemons for `config`; client 4 mounts `attack` if given. Returns the run's outcome.
async fn run(config: RunConfig, attack: Option<Attack>, out: &Path) -> strata_server::RunOutcome {
    let server = start_server(config, out).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let mut options = client_options(&server.url, i, &cache);
            options.attack = if i == 4 { attack } else { None };
            tokio::spawn(strata_client::run(options, std::future::pending()))
        })
        .collect();
    let outcome = server.handle.await.expect("server task").expect("the run completes");
    for c in clients {
        c.await.expect("client task").expect("clients end cleanly");
    }
    outcome
}

fn private(method: Method, rounds: u64, z: f64) -> RunConfig {
    let mut config = synthetic_config(5, rounds);
    config.method = method;
    config.privacy.noise_multiplier = Some(z);
    config.privacy.clipping_norm = 0.5;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_round_releases_a_noised_model_and_reports_the_epsilon_spent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = run(private(Method::FedAvg, 3, 0.8), None, dir.path()).await;
    let rounds: Vec<RoundRecord> = read_jsonl(&dir.path().join("rounds.jsonl"));
    let released: Vec<&RoundRecord> = rounds.iter().filter(|r| r.privacy.is_some()).collect();
    assert_eq!(released.len(), 3, "{rounds:?}");
    for (i, r) in released.iter().enumerate() {
        let p = r.privacy.as_ref().expect("released");
        let expected = epsilon(1.0, 0.8, i as u64 + 1, 1e-5);
        let got = p.epsilon.expect("bounded");
        assert!((got - expected).abs() < 1e-9 * expected, "round {}: {got} vs {expected}", r.round);
        assert_eq!((p.noise_multiplier, p.clipping_norm, p.covers.as_str()), (0.8, 0.5, "the whole model"));
        assert!(r.aggregated && r.reported == 5, "{r:?}");
    }
    let summary = outcome.summary.privacy.expect("the summary carries the guarantee");
    assert_eq!((summary.releases, summary.epsilon), (3, released[2].privacy.as_ref().expect("released").epsilon));
    let report = std::fs::read_to_string(dir.path().join("report.md")).expect("report");
    assert!(report.contains("Differential privacy") && report.contains("| ε |"), "{report}");
    let summary_json = std::fs::read_to_string(dir.path().join("summary.json")).expect("summary");
    assert!(summary_json.contains("\"privacy\"") && summary_json.contains("\"epsilon\""));
}

/// Clients clip their own updates (FedPer: the body); a client that does not is refused, and
/// the rounds still release. The bound adapts from the clients' bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_clip_themselves_are_checked_and_one_that_does_not_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = private(Method::FedPer, 2, 0.5);
    config.privacy.placement = ClipPlacement::Client;
    config.privacy.target_quantile = Some(0.5);
    config.privacy.clipped_count_stddev = Some(1.0);
    let outcome = run(config, Some(Attack::Scale(100.0)), dir.path()).await;
    let rounds: Vec<RoundRecord> = read_jsonl(&dir.path().join("rounds.jsonl"));
    let released: Vec<&RoundRecord> = rounds.iter().filter(|r| r.privacy.is_some()).collect();
    assert_eq!(released.len(), 2, "{rounds:?}");
    for r in &released {
        let p = r.privacy.as_ref().expect("released");
        assert_eq!(r.reported, 4, "the scaled client's result is refused: {r:?}");
        assert!(p.covers.contains("shared tensors only"), "{}", p.covers);
        assert!(p.unclipped_share.is_some() && p.next_clipping_norm.is_some_and(|c| c > 0.0), "{p:?}");
    }
    let (first, second) = (released[0].privacy.as_ref().expect("r0"), released[1].privacy.as_ref().expect("r1"));
    assert_eq!(Some(second.clipping_norm), first.next_clipping_norm, "round 1 clips to what round 0 learned");
    assert!(outcome.summary.privacy.expect("summary").clipping.contains("adaptive"));
}

/// With a budget beside a fixed z, training stops before the round that would exceed it and
/// the final evaluation measures the model as it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn training_stops_at_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = private(Method::FedAvg, 6, 1.0);
    let (two, three) = (epsilon(1.0, 1.0, 2, 1e-5), epsilon(1.0, 1.0, 3, 1e-5));
    config.privacy.target_epsilon = Some((two + three) / 2.0);
    let outcome = run(config, None, dir.path()).await;
    let privacy = outcome.summary.privacy.as_ref().expect("summary");
    assert_eq!((privacy.releases, privacy.stopped_by_budget_at), (2, Some(2)), "{privacy:?}");
    assert!((privacy.epsilon.expect("bounded") - two).abs() < 1e-9 * two);
    assert_eq!(outcome.summary.final_eval.round, Some(2));
    assert_eq!(outcome.summary.rounds_completed, 2);
    let rounds: Vec<RoundRecord> = read_jsonl(&dir.path().join("rounds.jsonl"));
    let last = rounds.iter().max_by_key(|r| r.round).expect("rows");
    assert!(last.round == 2 && last.budget_spent && last.global_accuracy.is_some(), "{last:?}");
    let (_, metadata) =
        strata_core::safetensors::read(&dir.path().join("model.safetensors")).expect("the final model is saved");
    assert_eq!(metadata.get("round").map(String::as_str), Some("2"));
}

/// DP-SGD on every client, daemons and a population alike: each reports the ε its own
/// accountant gives for its data, growing round by round, and no training loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_training_with_dp_sgd_report_their_own_epsilon() {
    for population in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = synthetic_config(5, 2);
        config.method = Method::FedPer;
        config.dp_sgd.noise_multiplier = Some(1.1);
        config.dp_sgd.clipping_norm = 1.0;
        let outcome = if population {
            let server = start_server(config.clone(), dir.path()).await;
            let mut options = strata_client::PopulationOptions::new(server.url.clone(), config.clients);
            options.device = "cpu".into();
            let hosts = tokio::spawn(strata_client::run_population(options, std::future::pending()));
            let outcome = server.handle.await.expect("server task").expect("the run completes");
            hosts.await.expect("population task").expect("the population ends cleanly");
            outcome
        } else {
            run(config.clone(), None, dir.path()).await
        };
        let rows: Vec<strata_core::records::ClientRoundRecord> = read_jsonl(&dir.path().join("metrics.jsonl"));
        let trained: Vec<_> = rows.iter().filter(|r| r.trained).collect();
        assert_eq!(trained.len(), 10, "{rows:?}");
        for r in &trained {
            // Each client's rate is 1/⌈n/B⌉ and it takes ⌈n/B⌉ steps a round.
            let steps = r.train_samples.div_ceil(config.train.batch_size as u64);
            let expected = epsilon(1.0 / steps as f64, 1.1, steps * (r.round + 1), 1e-5);
            let got = r.dp_sgd_epsilon.expect("a DP-SGD client reports its ε");
            assert!(
                (got - expected).abs() < 1e-9 * expected,
                "client {} round {}: {got} vs {expected}",
                r.client,
                r.round
            );
            assert!(r.train_loss.is_none(), "the training loss stays on the client");
        }
        let summary = outcome.summary.dp_sgd.expect("the summary carries DP-SGD");
        assert_eq!(summary.clients, 5);
        assert!(summary.max_epsilon.is_some_and(|e| e > 0.0 && e.is_finite()));
    }
}

/// A client's own DP-SGD promise holds in a run whose config asks for none: it trains
/// privately and reports its ε; the others train as the run says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_keeps_its_own_dp_sgd_promise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = synthetic_config(3, 2);
    let server = start_server(config, dir.path()).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let mut options = client_options(&server.url, i, &cache);
            options.dp_sgd = (i == 0)
                .then(|| strata_core::privacy::DpSgdConfig { noise_multiplier: Some(1.0), ..Default::default() });
            tokio::spawn(strata_client::run(options, std::future::pending()))
        })
        .collect();
    server.handle.await.expect("server task").expect("the run completes");
    for c in clients {
        c.await.expect("client task").expect("clients end cleanly");
    }
    let rows: Vec<strata_core::records::ClientRoundRecord> = read_jsonl(&dir.path().join("metrics.jsonl"));
    for r in rows.iter().filter(|r| r.trained) {
        assert_eq!(r.dp_sgd_epsilon.is_some(), r.client == 0, "{r:?}");
        assert_eq!(r.train_loss.is_none(), r.client == 0, "{r:?}");
    }
}

/// Noise multiplier 0 (clipping alone) bounds nothing: the records say so (no ε) and stay
/// readable, as do the summary and report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clipping_without_noise_reports_no_epsilon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = run(private(Method::FedAvg, 2, 0.0), None, dir.path()).await;
    let rounds: Vec<RoundRecord> = read_jsonl(&dir.path().join("rounds.jsonl"));
    let released: Vec<_> = rounds.iter().filter_map(|r| r.privacy.as_ref()).collect();
    assert!(released.len() == 2 && released.iter().all(|p| p.epsilon.is_none()), "{released:?}");
    assert_eq!(outcome.summary.privacy.expect("summary").epsilon, None);
    let report = std::fs::read_to_string(dir.path().join("report.md")).expect("report");
    assert!(report.contains("(∞, "), "{report}");
}
