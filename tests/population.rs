//! A population of virtual clients against a real server on loopback: only the round's
//! cohort trains, downloads and holds a model; personal state that spills to disk comes back
//! bit for bit; `--fraction` is not overridden by `min_clients`, and settings that contradict
//! each other stop the run at start.

use std::collections::BTreeSet;

use strata_core::method::Method;
use strata_core::records::{ClientRoundRecord, RoundRecord};
use strata_tests::{read_jsonl, start_server, synthetic_config};

/// Round, client, accuracy as merged, training loss, and bytes uploaded when it trained.
type Measured = (u64, u32, Option<f64>, Option<f64>, Option<u64>);

async fn run(
    config: strata_core::config::RunConfig,
    personal_memory_bytes: u64,
) -> (tempfile::TempDir, strata_server::RunOutcome, strata_client::PopulationOutcome) {
    let out = tempfile::tempdir().expect("tempdir");
    let server = start_server(config.clone(), out.path()).await;
    let mut options = strata_client::PopulationOptions::new(server.url.clone(), config.clients);
    options.device = "cpu".into();
    // One at a time: results arrive in a fixed order, so two runs can be compared bit for bit.
    options.parallel = 1;
    options.personal_memory_bytes = personal_memory_bytes;
    let population = tokio::spawn(strata_client::run_population(options, std::future::pending()));
    let outcome = server.handle.await.expect("server task").expect("run completes");
    let population = population.await.expect("population task").expect("population ends cleanly");
    (out, outcome, population)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_cohort_trains_downloads_and_holds_a_model() {
    // min_clients stays at all 20 (everyone must join), yet 0.2 of them train: 4 a round.
    let mut config = synthetic_config(20, 3);
    config.fraction = 0.2;
    let (out, outcome, population) = run(config, 1 << 30).await;
    assert_eq!(outcome.summary.rounds_completed, 3);
    assert_eq!(population.joined, 20);
    assert_eq!(population.tasks_failed, 0, "{:?}", population.failures);
    assert_eq!(population.tasks_done, 4 * 3 + 4, "4 a round, and a sample of 4 in the final evaluation");
    assert!(population.peak_materialized <= 2, "at most 2 × parallel clients hold a model: {population:?}");
    assert_eq!(population.personal.in_memory, 0, "FedAvg keeps no personal state");

    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    let rows: Vec<ClientRoundRecord> = read_jsonl(&out.path().join("metrics.jsonl"));
    let mut picked_sets = BTreeSet::new();
    for round in 0..3 {
        let these: Vec<&ClientRoundRecord> = rows.iter().filter(|r| r.round == round).collect();
        assert_eq!(these.len(), 4, "only the cohort reports in round {round}");
        assert!(these.iter().all(|r| r.trained && r.bytes_down > 0 && r.accuracy.is_some()));
        assert!(these.iter().all(|r| r.accuracy_trained.is_none()), "evaluated as merged only, by default");
        assert_eq!(rounds[round as usize].picked, 4);
        picked_sets.insert(these.iter().map(|r| r.client).collect::<Vec<_>>());
    }
    assert!(picked_sets.len() > 1, "each round draws its own cohort");
    let last: Vec<&ClientRoundRecord> = rows.iter().filter(|r| r.round == 3).collect();
    assert_eq!(last.len(), 4, "the final evaluation samples a cohort's worth");
    assert!(last.iter().all(|r| !r.trained && r.global_accuracy.is_some()));
    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report");
    assert!(report.contains("the round's training cohort evaluates the model as received"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn personal_state_spilled_to_disk_comes_back_bit_for_bit() {
    let mut config = synthetic_config(6, 4);
    config.method = Method::FedPer;
    config.fraction = 0.5;
    let (spilled_out, _, spilled) = run(config.clone(), 0).await;
    let (kept_out, _, kept) = run(config, 1 << 30).await;
    assert!(spilled.personal.spilled > 0 && spilled.personal.reloaded > 0, "{spilled:?}");
    assert_eq!(spilled.personal.in_memory, 0);
    assert_eq!((kept.personal.spilled, kept.personal.on_disk), (0, 0), "{kept:?}");
    assert!(kept.personal.in_memory >= 3);

    // Same clients, same numbers: a state read back from disk is the state that was written.
    let strip = |rows: Vec<ClientRoundRecord>| -> Vec<Measured> {
        rows.into_iter()
            .map(|r| (r.round, r.client, r.accuracy, r.train_loss, r.trained.then_some(r.bytes_up)))
            .collect()
    };
    let a = strip(read_jsonl(&spilled_out.path().join("metrics.jsonl")));
    let b = strip(read_jsonl(&kept_out.path().join("metrics.jsonl")));
    assert_eq!(a, b);
    let reclients: BTreeSet<u32> = a.iter().filter(|r| r.0 > 0).map(|r| r.1).collect();
    assert!(reclients.len() > 3, "some clients came back after a round away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_settings_stop_the_run_at_start() {
    let mut config = synthetic_config(10, 2);
    config.fraction = 0.3;
    config.min_results = Some(5);
    let out = tempfile::tempdir().expect("tempdir");
    let server = start_server(config, out.path()).await;
    let err = server.handle.await.expect("server task").expect_err("min_results above the cohort");
    let text = err.to_string();
    assert!(text.contains("min_results (5)") && text.contains("trains 3"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn virtual_clients_send_ccvr_statistics_and_evaluate_the_calibrated_model() {
    let mut config = synthetic_config(8, 2);
    config.fraction = 0.5;
    config.calibration.method = strata_core::calibration::CalibrationMethod::Ccvr;
    let (out, outcome, population) = run(config, 1 << 30).await;
    assert_eq!(population.tasks_failed, 0, "{:?}", population.failures);
    let records: Vec<strata_core::records::CalibrationRecord> = read_jsonl(&out.path().join("calibration.jsonl"));
    let last = records.last().expect("a calibration after the last round");
    assert_eq!(last.clients_pooled, 8, "every available client sends its statistics");
    assert!(last.global_accuracy.is_some_and(|a| a > 0.3), "{last:?}");
    assert!(outcome.summary.calibration.is_some());
}
