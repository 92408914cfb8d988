//! Every registered method runs two rounds with a real server and three real clients, and
//! each sends exactly the parameters it is meant to share: the bytes on the wire show it.

use strata_core::config::RunConfig;
use strata_core::method::Method;
use strata_core::records::ClientRoundRecord;
use strata_tests::{synthetic_config, write_tiny_idx};

/// Runs `config` with three clients; returns the per-client rows and the summary.
async fn run(config: RunConfig) -> (Vec<ClientRoundRecord>, strata_server::RunOutcome) {
    strata_tests::run_three_clients(config).await
}

/// Values of the MLP on FedProx's synthetic data (60 inputs, 10 classes).
const BODY: u64 = 200 * 60 + 200 + 200 * 200 + 200;
const HEAD: u64 = 10 * 200 + 10;

/// Checks that every training upload carries `values` f32 values plus at most `extra` bytes.
fn assert_upload(method: &str, rows: &[ClientRoundRecord], values: u64, extra: u64) {
    let trained: Vec<_> = rows.iter().filter(|r| r.trained).collect();
    assert_eq!(trained.len(), 6, "{method}: 3 clients × 2 rounds trained");
    for r in trained {
        let payload = 4 * values;
        assert!(
            r.bytes_up >= payload && r.bytes_up <= payload + extra + 2048,
            "{method}: client {} round {} uploaded {} bytes, expected {payload} + framing",
            r.client,
            r.round,
            r.bytes_up
        );
        assert!(r.bytes_down >= payload, "{method}: downloaded {} bytes, expected at least {payload}", r.bytes_down);
        assert!(r.accuracy_trained.is_some() && r.train_loss.is_some_and(f64::is_finite));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_method_trains_and_shares_what_it_should() {
    let cases: [(&str, u64, u64, bool); 7] = [
        ("fedavg", BODY + HEAD, 0, true),
        ("fedprox", BODY + HEAD, 0, true),
        ("ditto", BODY + HEAD, 0, true),
        ("fedper", BODY, 0, false),
        ("fedrep", BODY, 0, false),
        ("local", 0, 0, false),
        // FedCAC: every parameter plus a one-bit-per-parameter mask.
        ("fedcac", BODY + HEAD, (BODY + HEAD).div_ceil(8), false),
    ];
    for (method, values, extra, has_global) in cases {
        let mut config = synthetic_config(3, 2);
        config.method = method.parse().expect("a method");
        let (rows, outcome) = run(config).await;
        assert_eq!(outcome.summary.rounds_completed, 2, "{method}");
        assert_upload(method, &rows, values, extra);
        let last: Vec<_> = rows.iter().filter(|r| r.round == 2).collect();
        assert_eq!(last.len(), 3, "{method}: the final evaluation reaches every client");
        assert_eq!(last.iter().all(|r| r.global_accuracy.is_some()), has_global, "{method}: global accuracy");
        assert!(
            last.iter().all(|r| r.accuracy.is_some_and(|a| a > 0.2)),
            "{method}: personalized accuracy after 2 rounds: {last:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedbn_keeps_normalization_layers_local() {
    let data = tempfile::tempdir().expect("tempdir");
    write_tiny_idx(data.path(), 240, 60);
    let mut config = synthetic_config(3, 2);
    config.method = Method::FedBn;
    config.model.name = "cnn-bn".into();
    config.data.dataset = strata_core::config::DatasetKind::Idx;
    config.data.path = Some(data.path().to_path_buf());
    let (rows, _) = run(config).await;
    // FedAvgCNN with BatchNorm: everything but body.bn1/bn2 (weight, bias, running stats).
    let all = 32 * 25 + 32 + 64 * 32 * 25 + 64 + 512 * 1024 + 512 + 10 * 512 + 10;
    assert_upload("fedbn", &rows, all, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feature_normalization_composes_with_a_method() {
    use strata_core::config::FeatureNorm;
    for (method, norm) in
        [("fedavg", FeatureNorm::SqrtD), ("fedprox", FeatureNorm::Unit), ("fedavg", FeatureNorm::LayerNorm)]
    {
        let mut config = synthetic_config(3, 2);
        config.method = method.parse().expect("a method");
        config.model.feature_norm = norm;
        let (rows, outcome) = run(config).await;
        assert_eq!(outcome.summary.rounds_completed, 2);
        // FN and LN add no parameter: the same bytes travel as without them.
        assert_upload(method, &rows, BODY + HEAD, 0);
        let last = outcome.summary.final_eval.global_accuracy.expect("a global model");
        assert!(last > 0.3, "{norm:?}: final global accuracy {last}");
    }
}
