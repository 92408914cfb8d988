//! Secure aggregation end to end: real client daemons (and a population) on loopback, the
//! server running SecAgg+'s four stages around each training round and moving the global model
//! by the unmasked mean, as `rounds.jsonl` and the saved model show. A scripted client that
//! takes part in the protocol and then vanishes shows dropouts repaired.

use std::path::Path;
use std::sync::Arc;

use strata_core::config::RunConfig;
use strata_core::method::Method;
use strata_core::partition_spec::PartitionSpec;
use strata_core::privacy::ClipPlacement;
use strata_core::records::{ClientRoundRecord, RoundRecord};
use strata_core::secure_aggregation::{CountOrFraction, SecAggConfig, SecAggRecord};
use strata_core::tensor::TensorSet;
use strata_proto::pb;
use strata_proto::secagg::{Answer, answer_to_wire, neighbours_from_wire, params_from_wire};
use strata_secagg::SecAggClient;
use strata_tests::{RawClient, client_options, read_jsonl, start_server, synthetic_config};

/// `config` with four daemons at indices 0-3 and, with `quitter`, at index 4 a scripted
/// client that answers setup and share-keys (when `secagg`) and then never trains. Returns
/// the final global model.
async fn run_clients(config: RunConfig, out: &Path, quitter: bool) -> TensorSet {
    let secagg = config.secure_aggregation.is_some();
    let server = start_server(config, out).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let daemons: Vec<_> = (0..4)
        .map(|i| tokio::spawn(strata_client::run(client_options(&server.url, i, &cache), std::future::pending())))
        .collect();
    if quitter {
        quit_after_sharing_keys(&server.url, secagg).await;
    }
    server.handle.await.expect("server task").expect("the run completes");
    for d in daemons {
        d.await.expect("client task").expect("clients end cleanly");
    }
    strata_core::safetensors::read(&out.join("model.safetensors")).expect("the final model").0
}

/// Client 4: shares its keys (when `secagg`), never trains, and polls on until the end.
async fn quit_after_sharing_keys(url: &str, secagg: bool) {
    let mut quitter = RawClient::join(url, 4).await;
    if secagg {
        let setup = quitter.wait_for(pb::TaskKind::SecaggSetup).await;
        let stage = setup.secagg.clone().expect("a setup task carries its stage");
        let params = params_from_wire(stage.params.as_ref()).expect("parameters");
        let (mut client, keys) = SecAggClient::setup(4, &stage.context, params.clone()).expect("setup");
        let answer = pb::ResultHeader { secagg: Some(answer_to_wire(&Answer::Keys(keys))), ..quitter.header(&setup) };
        quitter.push(vec![header_part(answer)]).await.expect("keys accepted");
        let share = quitter.wait_for(pb::TaskKind::SecaggShareKeys).await;
        let stage = share.secagg.clone().expect("stage");
        let neighbours = neighbours_from_wire(&stage.neighbours, params.neighbours).expect("neighbours");
        let sharing = Answer::Sharing(client.share_keys(neighbours).expect("shares"));
        let answer = pb::ResultHeader { secagg: Some(answer_to_wire(&sharing)), ..quitter.header(&share) };
        quitter.push(vec![header_part(answer)]).await.expect("shares accepted");
    }
    // Polls on without answering its training task (answering evaluations), until the end.
    quitter.wait_for(pb::TaskKind::Finish).await;
}

/// `config` with one population host of virtual clients, none of whose tasks may fail.
async fn run_population(config: RunConfig, out: &Path) -> strata_server::RunOutcome {
    let server = start_server(config.clone(), out).await;
    let mut options = strata_client::PopulationOptions::new(server.url.clone(), config.clients);
    options.device = "cpu".into();
    let population = tokio::spawn(strata_client::run_population(options, std::future::pending()));
    let outcome = server.handle.await.expect("server task").expect("run completes");
    let population = population.await.expect("population task").expect("population ends cleanly");
    assert_eq!(population.tasks_failed, 0, "{:?}", population.failures);
    outcome
}

fn header_part(header: pb::ResultHeader) -> pb::ResultPart {
    pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) }
}

fn max_difference(a: &TensorSet, b: &TensorSet) -> f64 {
    assert_eq!(a.specs(), b.specs());
    a.tensors()
        .iter()
        .zip(b.tensors())
        .flat_map(|(x, y)| x.values().iter().zip(y.values()).map(|(p, q)| f64::from((p - q).abs())))
        .fold(0.0, f64::max)
}

/// The summed model is plain FedAvg's within the quantization error, with a client that
/// dropped out after sharing its keys: its pairwise masks are rebuilt from its neighbours'
/// shares and removed, and the record says who dropped where. The clients hold different
/// numbers of samples, so the sample weighting is what is compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_unmasked_sum_is_fedavgs_within_the_quantization_error_despite_a_dropout() {
    let mut config = RunConfig { min_results: Some(4), ..synthetic_config(5, 1) };
    config.data.split = PartitionSpec::Pathological { classes_per_client: 4 };
    let plain_dir = tempfile::tempdir().expect("tempdir");
    let plain = run_clients(config.clone(), plain_dir.path(), true).await;

    let secagg = SecAggConfig { reconstruction_threshold: CountOrFraction::Count(3), ..SecAggConfig::default() };
    let secure_dir = tempfile::tempdir().expect("tempdir");
    let secure =
        run_clients(RunConfig { secure_aggregation: Some(secagg.clone()), ..config }, secure_dir.path(), true).await;

    let rounds: Vec<RoundRecord> = read_jsonl(&secure_dir.path().join("rounds.jsonl"));
    let record: &SecAggRecord = rounds[0].secure_aggregation.as_ref().expect("round 0 records the protocol");
    assert!(record.recovered && rounds[0].aggregated, "{record:?}");
    assert_eq!((record.clients, record.neighbours, record.threshold, record.summed), (5, 5, 3, 4));
    assert_eq!(record.dropped_masking, [4], "{record:?}");
    assert!(
        record.dropped_setup.is_empty() && record.dropped_share_keys.is_empty() && record.dropped_unmask.is_empty()
    );
    assert!(record.protocol_bytes > 0 && record.protocol_seconds > 0.0);
    assert!(rounds[1].secure_aggregation.is_none(), "the evaluation round runs no protocol");
    let rows: Vec<ClientRoundRecord> = read_jsonl(&secure_dir.path().join("metrics.jsonl"));
    let masked: Vec<_> = rows.iter().filter(|r| r.round == 0 && r.trained).collect();
    assert_eq!(masked.len(), 4);
    assert!(masked.iter().all(|r| r.secagg_seconds.is_some_and(|s| s > 0.0)), "each reports its masking time");

    // Each of the 4 clients rounds each weighted value to one of Q levels over [−c, c]: at most
    // 2c/Q off; the sum of 4 over the total weight Σw = Σ nᵢ / max nᵢ. Each quantized weight is
    // off by at most 1/(2Q), which moves the mean of changes within ±c by at most 4·c/(Q·Σw);
    // f32 adds a rounding of the values (≤ 1).
    let samples: Vec<f64> = masked.iter().map(|r| r.train_samples as f64).collect();
    assert!(samples.iter().any(|&n| n != samples[0]), "the clients' weights differ: {samples:?}");
    let total_weight = samples.iter().sum::<f64>() / samples.iter().copied().fold(0.0, f64::max);
    let (q, c) = (f64::from(secagg.quantization_range), secagg.clipping_range);
    let bound = 4.0 * 2.0 * c / q / total_weight + 4.0 * c / q / total_weight + 2.0 * f64::from(f32::EPSILON);
    let difference = max_difference(&plain, &secure);
    assert!(difference <= bound, "secure aggregation moved the model {difference} from FedAvg's (bound {bound})");
    assert!(difference > 0.0, "quantization leaves some trace: an identical model would mean no masking ran");
}

/// FedPer through a population of virtual clients: only the body is masked and summed; every
/// round recovers its sum and the personalized accuracy is FedPer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedper_in_a_population_sums_the_body_only() {
    let mut config = synthetic_config(8, 2);
    config.method = Method::FedPer;
    config.fraction = 0.75;
    config.secure_aggregation = Some(SecAggConfig::default());
    let out = tempfile::tempdir().expect("tempdir");
    let outcome = run_population(config, out.path()).await;
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    for r in rounds.iter().filter(|r| r.round < 2) {
        let s = r.secure_aggregation.as_ref().expect("a training round records the protocol");
        assert!(s.recovered && r.aggregated && s.summed == 6, "{s:?}");
        assert_eq!((s.clients, s.neighbours, s.threshold), (6, 6, 5), "k = n when num_shares ≥ n");
    }
    let accuracy = outcome.summary.final_eval.personalized_accuracy.expect("measured");
    assert!(accuracy > 0.5, "FedPer's personalized accuracy after 2 rounds: {accuracy}");
}

/// FedAvg with CCVR through a population: the virtual clients mask their class statistics on
/// the host's blocking threads, and the calibration pools the securely summed totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_population_calibrates_from_securely_summed_statistics() {
    let mut config = synthetic_config(6, 1);
    config.data.split = PartitionSpec::Pathological { classes_per_client: 4 };
    config.calibration.method = strata_core::calibration::CalibrationMethod::Ccvr;
    let secagg = SecAggConfig { reconstruction_threshold: CountOrFraction::Count(3), ..SecAggConfig::default() };
    config.secure_aggregation = Some(secagg);
    let out = tempfile::tempdir().expect("tempdir");
    run_population(config, out.path()).await;
    let records: Vec<strata_core::records::CalibrationRecord> = read_jsonl(&out.path().join("calibration.jsonl"));
    let last = records.last().expect("calibrated after the last round");
    let protocol = last.secure_aggregation.as_ref().expect("the statistics went through the protocol");
    assert!(protocol.recovered && protocol.summed == 6 && protocol.statistics_clipped == Some(0), "{protocol:?}");
    assert!(last.classes >= 2 && last.global_accuracy.is_some_and(|a| a > 0.0), "{last:?}");
}

/// With a threshold no dropout can meet (t = n), a client that vanishes after sharing its keys
/// leaves its neighbours' masks beyond repair: the round fails safely, keeping the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_dropouts_than_the_threshold_allows_keep_the_previous_model() {
    let mut config = RunConfig { min_results: Some(4), ..synthetic_config(5, 1) };
    let secagg = SecAggConfig { reconstruction_threshold: CountOrFraction::Count(5), ..SecAggConfig::default() };
    config.secure_aggregation = Some(secagg);
    let dir = tempfile::tempdir().expect("tempdir");
    let after = run_clients(config, dir.path(), true).await;
    let rounds: Vec<RoundRecord> = read_jsonl(&dir.path().join("rounds.jsonl"));
    let record = rounds[0].secure_aggregation.as_ref().expect("recorded");
    assert!(!record.recovered && !rounds[0].aggregated, "{record:?}");
    assert_eq!(record.dropped_masking, [4]);
    let failure = record.failure.as_deref().unwrap_or_default();
    assert!(failure.contains("below the threshold 5"), "{failure}");
    // Nothing moved: the final model is the initial one every client started from.
    let initial = strata_tests::torch_backend().initial_model(&synthetic_config(5, 1)).expect("initial model");
    assert_eq!(max_difference(&initial, &after), 0.0);
}

/// User-level DP over secure aggregation: clients clip to the DP bound less what rounding can
/// add, weigh 1 each, and hide their adaptive-clipping bit inside the masked vector; the server
/// noises the decoded sum over the expected cohort. With z = 0 the release is client-clipped
/// DP-FedAvg's, within twice the rounding slack per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_round_releases_the_clipped_sum_within_the_rounding_slack() {
    let mut config = synthetic_config(4, 1);
    config.privacy.noise_multiplier = Some(0.0);
    config.privacy.placement = ClipPlacement::Client;
    config.privacy.clipping_norm = 0.05;
    config.privacy.target_quantile = Some(0.5);
    let plain_dir = tempfile::tempdir().expect("tempdir");
    let plain = run_clients(config.clone(), plain_dir.path(), false).await;
    let secagg = SecAggConfig { reconstruction_threshold: CountOrFraction::Count(3), ..SecAggConfig::default() };
    let secure_dir = tempfile::tempdir().expect("tempdir");
    let secure =
        run_clients(RunConfig { secure_aggregation: Some(secagg.clone()), ..config }, secure_dir.path(), false).await;

    let rounds: Vec<RoundRecord> = read_jsonl(&secure_dir.path().join("rounds.jsonl"));
    let record = rounds[0].secure_aggregation.as_ref().expect("round 0 records the protocol");
    assert!(record.recovered && record.summed == 4, "{record:?}");
    let release = rounds[0].privacy.as_ref().expect("round 0 releases");
    assert_eq!(release.clipping_norm, 0.05, "the report names the DP bound, not the clients' tighter one");
    assert!(release.unclipped_share.is_some() && release.next_clipping_norm.is_some(), "the bits were summed");

    // Each client's decoded change is within s of its change clipped to C − s, which is within
    // s of its change clipped to C: 4 clients over the expected 4 move the release by ≤ 2s.
    let d: usize = secure.tensors().iter().map(|t| t.numel()).sum();
    let slack = (d as f64).sqrt() * 2.0 * secagg.clipping_range / f64::from(secagg.quantization_range);
    let bound = 2.0 * slack + 4.0 * f64::from(f32::EPSILON);
    let difference = max_difference(&plain, &secure);
    assert!(difference <= bound, "the secure release is {difference} from the plain one (bound {bound})");
    assert!(difference > 0.0, "quantization leaves some trace: an identical model would mean no masking ran");
}
