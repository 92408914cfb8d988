//! Compressed transfers (`[compression]`) with a real server and real clients: fewer bytes on
//! the wire each way, a model that learns as the f32 run's does, and compressed results a
//! hostile client sends checked like any other.

use std::sync::Arc;

use strata_core::compression::{Compression, CompressionConfig};
use strata_core::method::Method;
use strata_core::records::RoundRecord;
use strata_proto::{Encoded, pb};
use strata_tests::{RawClient, encoded_result_parts, run_three_clients, spawn_client, start_server, synthetic_config};
use tonic::Code;

/// Runs three client daemons to the end; returns the round records.
async fn run(method: Method, compression: &str) -> Vec<RoundRecord> {
    let mut config = synthetic_config(3, 4);
    config.method = method;
    config.compression = compression.parse().expect("a --compress spec");
    run_three_clients(config).await.1.rounds
}

/// Bytes each way over the training rounds, and the last global accuracy.
fn traffic(rounds: &[RoundRecord]) -> (u64, u64, f64) {
    let training = rounds.iter().filter(|r| r.aggregated);
    let (up, down) = training.fold((0, 0), |(u, d), r| (u + r.bytes_up, d + r.bytes_down));
    let last = rounds.iter().rev().find_map(|r| r.global_accuracy.or(r.personalized_accuracy));
    (up, down, last.expect("an accuracy"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressed_runs_move_fewer_bytes_and_learn_as_the_f32_run_does() {
    let (up, down, accuracy) = traffic(&run(Method::FedAvg, "none").await);
    assert!(accuracy > 0.5, "the f32 run learns: {accuracy}");
    // (setting, largest share of f32's upload bytes, of its download bytes). The model is
    // small, so the headers' names and specs weigh a few percent on top of the values.
    for (spec, up_share, down_share) in
        [("up=int8,down=fp16", 0.30, 0.55), ("bf16", 0.55, 0.55), ("up=topk:0.1", 0.25, 1.0)]
    {
        let (u, d, a) = traffic(&run(Method::FedAvg, spec).await);
        let (us, ds) = (u as f64 / up as f64, d as f64 / down as f64);
        assert!(us < up_share && ds <= down_share, "{spec}: {us:.3} of the upload bytes, {ds:.3} of the download's");
        assert!((a - accuracy).abs() < 0.05, "{spec}: accuracy {a} against {accuracy} in f32");
    }
    // A personalized method: only the body travels, compressed, and the error feedback of
    // top-k keeps what it leaves out for the next round.
    let (up, _, accuracy) = traffic(&run(Method::FedPer, "none").await);
    let (u, _, a) = traffic(&run(Method::FedPer, "up=topk:0.1").await);
    assert!((u as f64) < 0.25 * up as f64, "fedper top-k: {u} of {up} bytes up");
    assert!((a - accuracy).abs() < 0.05, "fedper top-k: accuracy {a} against {accuracy} in f32");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressed_results_are_checked_like_any_other() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 1);
    config.min_clients = 3;
    config.round_timeout_secs = 20;
    config.compression = CompressionConfig { up: Compression::Int8, down: Compression::None };
    let server = start_server(config, out.path()).await;
    let mut rogue = RawClient::join(&server.url, 2).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();
    rogue.capabilities = Some(pb::ClientCapabilities { train_samples: 100, test_samples: 30, ..Default::default() });
    let task = rogue.wait_for(pb::TaskKind::Train).await;
    let sent = Arc::new(rogue.download(&task.task_id).await);
    let header = pb::ResultHeader { num_samples: 100, ..rogue.header(&task) };
    let encode = |compression| Encoded::new(Arc::clone(&sent), Some(Arc::clone(&sent)), compression, &mut None, 1);

    // Another compression than the run's.
    let parts = encoded_result_parts(header.clone(), encode(Compression::F16));
    let status = rogue.push(parts).await.expect_err("fp16 in an int8 run");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("travels as fp16 change, but this run's compression here is int8"), "{status:?}");
    let parts = encoded_result_parts(header.clone(), encode(Compression::TopK { ratio: 0.5 }));
    assert_eq!(rogue.push(parts).await.expect_err("top-k in an int8 run").code(), Code::InvalidArgument);

    // A scale that is not one, and one that decodes past the largest value allowed.
    let mut parts = encoded_result_parts(header.clone(), encode(Compression::Int8));
    let Some(pb::result_part::Part::Header(h)) = &mut parts[0].part else { panic!("header first") };
    h.tensors[0].scale = f32::NAN;
    let status = rogue.push(parts.clone()).await.expect_err("NaN scale");
    assert!(status.message().contains("scale NaN"), "{status:?}");
    let Some(pb::result_part::Part::Header(h)) = &mut parts[0].part else { panic!("header first") };
    h.tensors[0].scale = 1e30;
    // The change from the sent model is 0, so the values must have moved: make them.
    for part in &mut parts[1..] {
        if let Some(pb::result_part::Part::Tensor(slice)) = &mut part.part {
            slice.data.fill(100);
        }
    }
    let status = rogue.push(parts).await.expect_err("1e32 everywhere");
    assert!(status.message().contains("max_abs_value") || status.message().contains("non-finite"), "{status:?}");

    // The run's own compression is taken: the rogue's int8 update counts like an honest one.
    let parts = encoded_result_parts(header.clone(), encode(Compression::Int8));
    rogue.push(parts).await.expect("an int8 change from what was sent");
    let rounds: Vec<RoundRecord> = rogue
        .alive_until(async {
            let outcome = server.handle.await.expect("server task").expect("run completes");
            outcome.rounds
        })
        .await;
    assert_eq!(rounds.iter().find(|r| r.round == 0).map(|r| r.reported), Some(3), "{rounds:?}");
    for c in good {
        c.await.expect("client task").expect("client ends cleanly");
    }
}
