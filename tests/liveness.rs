//! Liveness: a client that goes silent is taken for offline after `offline_after_secs`, and
//! rounds stop waiting for it long before their deadline; under `round_closes = "min-results"`
//! a round closes as soon as it has `min_clients` training results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_core::liveness::{LivenessConfig, RoundCloses};
use strata_core::records::RoundRecord;
use strata_proto::pb;
use strata_server::ServerEvent;
use strata_tests::{read_jsonl, spawn_client, start_server, synthetic_config};

type Rpc = pb::federation_client::FederationClient<tonic::transport::Channel>;

/// Runs 3 rounds with two real clients and one that joins as index 2 and then says nothing.
async fn run_with_a_silent_client(liveness: LivenessConfig) -> (Vec<RoundRecord>, Duration) {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 3);
    config.min_clients = 2;
    config.round_timeout_secs = 120;
    config.liveness = liveness;
    let started = Instant::now();
    let server = start_server(config, out.path()).await;
    let mut events = server.events.subscribe();
    let cache = Arc::new(strata_client::DataCache::default());
    let good: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();
    // The silent one joins after the two live ones, so that every round has two live clients
    // (the round that picks it too, whether round 0 or round 1).
    loop {
        if let ServerEvent::ClientJoined { joined: 2, .. } = events.recv().await.expect("events") {
            break;
        }
    }
    let mut rpc = Rpc::connect(server.url.clone()).await.expect("connect");
    let join = pb::JoinRequest {
        client_id: uuid::Uuid::new_v4().to_string(),
        capabilities: None,
        requested_index: Some(2),
        host_id: String::new(),
        session: String::new(),
    };
    rpc.join(join).await.expect("join");
    let outcome = server.handle.await.expect("server task").expect("run completes");
    for c in good {
        c.await.expect("client task").expect("client ends cleanly");
    }
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!(outcome.summary.rounds_completed, 3, "{rounds:?}");
    (rounds, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_client_goes_offline_and_rounds_stop_waiting_for_it() {
    let liveness = LivenessConfig {
        heartbeat_secs: 1,
        offline_after_secs: 6,
        round_closes: RoundCloses::All,
        ..LivenessConfig::default()
    };
    let (rounds, took) = run_with_a_silent_client(liveness).await;
    // Without liveness the round that picked it would wait out its 120 s deadline.
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    // It was picked once (round 0 or 1) and that round closed without it; afterwards it is no
    // longer picked. The live clients, which heartbeat, always are.
    assert!(rounds.iter().any(|r| r.picked == 3 && r.reported == 2 && r.aggregated), "{rounds:?}");
    let last = rounds.iter().find(|r| r.round == 2).expect("round 2");
    assert_eq!((last.picked, last.reported), (2, 2), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_results_closes_a_round_once_enough_clients_reported() {
    // Patient enough that the silent client still counts as online when its round closes.
    let liveness = LivenessConfig {
        heartbeat_secs: 1,
        offline_after_secs: 600,
        round_closes: RoundCloses::MinResults,
        ..LivenessConfig::default()
    };
    let (rounds, took) = run_with_a_silent_client(liveness).await;
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    assert!(rounds.iter().any(|r| r.picked == 3 && r.reported == 2), "closed on two results of three: {rounds:?}");
    assert!(rounds.iter().filter(|r| r.round < 3).all(|r| r.aggregated && r.reported == 2), "{rounds:?}");
}

/// A round with nobody available to train waits for a client instead of running empty and
/// counting: the run's one client misses round 0's deadline, stays away, and comes back; round
/// 1 is then its round, not an empty one that already went by.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_with_nobody_available_waits_instead_of_counting() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(1, 2);
    config.round_timeout_secs = 2;
    config.liveness = LivenessConfig { heartbeat_secs: 1, offline_after_secs: 2, ..LivenessConfig::default() };
    let server = start_server(config, out.path()).await;
    let mut client = strata_tests::RawClient::join(&server.url, 0).await;
    // What a client says once its data is loaded: its training samples, its weight.
    client.capabilities = Some(pb::ClientCapabilities { train_samples: 10, ..Default::default() });
    let round0 = client.wait_for(pb::TaskKind::Train).await;
    assert_eq!(round0.round, 0);
    // Silent past round 0's deadline and past the point it counts as offline.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let back = tokio::time::timeout(Duration::from_secs(20), client.wait_for(pb::TaskKind::Train)).await;
    let round1 = back.expect("round 1 waited for the client instead of running without it");
    assert_eq!(round1.round, 1);
    let params = client.download(&round1.task_id).await;
    let header = pb::ResultHeader { num_samples: 10, ..client.header(&round1) };
    client.push(strata_tests::result_parts(header, params)).await.expect("round 1's result is accepted");
    tokio::time::timeout(Duration::from_secs(20), client.wait_for(pb::TaskKind::Finish)).await.expect("finish");

    let outcome = server.handle.await.expect("server task").expect("run completes");
    assert_eq!(outcome.summary.rounds_completed, 1, "round 1 aggregated; round 0 had no result");
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    let training: Vec<(u32, u32)> = rounds.iter().filter(|r| r.round < 2).map(|r| (r.picked, r.reported)).collect();
    assert_eq!(training, vec![(1, 0), (1, 1)], "no training round ran with nobody");
}

/// A client that joins and then never polls or heartbeats holds its slot only until it counts
/// as offline: an honest client told the federation is full retries, takes the slot, and the
/// run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_squatted_by_a_silent_join_goes_to_a_client_that_works() {
    squatted_slot_goes_to_a_client_that_works(false).await;
}

/// The same with a squatter that heartbeats once after joining and is silent from then on:
/// being heard from once does not hold a slot for the rest of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_squatted_by_a_join_heard_from_once_goes_to_a_client_that_works() {
    squatted_slot_goes_to_a_client_that_works(true).await;
}

async fn squatted_slot_goes_to_a_client_that_works(speaks_once: bool) {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(2, 2);
    config.liveness = LivenessConfig { heartbeat_secs: 1, offline_after_secs: 2, ..LivenessConfig::default() };
    let server = start_server(config, out.path()).await;
    let mut squatter = strata_tests::RawClient::join(&server.url, 0).await;
    if speaks_once {
        squatter.heartbeat().await;
    }
    // Silent past `offline_after` since it joined (or spoke).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let honest: Vec<_> = (0..2)
        .map(|i| {
            let mut options = strata_tests::client_options(&server.url, i, &cache);
            options.requested_index = None;
            tokio::spawn(strata_client::run(options, std::future::pending()))
        })
        .collect();
    let outcome = tokio::time::timeout(Duration::from_secs(60), server.handle)
        .await
        .expect("the run got its two working clients")
        .expect("server task")
        .expect("run completes");
    assert_eq!(outcome.ending, strata_server::Ending::Completed);
    for client in honest {
        let done = client.await.expect("client task");
        assert!(done.is_ok(), "an honest client failed: {done:?}");
    }
    // The run may start with the squatter and one honest client joined; by the last round the
    // two honest clients train and report.
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    let last_training = rounds.iter().rfind(|r| r.round < 2).expect("round 1");
    assert_eq!((last_training.picked, last_training.reported, last_training.aggregated), (2, 2, true));
}

/// Issue 14, item 7: a run that cannot reach `min_clients` does not wait forever or end as
/// "completed": past `liveness.start_deadline_secs` it ends with an error that says how many
/// clients came, and the client that did is told the run is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_short_of_clients_ends_at_its_start_deadline_saying_why() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 2);
    config.liveness.start_deadline_secs = Some(3);
    let server = start_server(config, out.path()).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let lone = spawn_client(&server.url, 0, &cache);
    let ended = tokio::time::timeout(Duration::from_secs(60), server.handle).await.expect("the deadline ends the run");
    let err = ended.expect("server task").expect_err("too few clients");
    assert!(matches!(err, strata_server::ServerError::NeverStarted { joined: 1, needed: 3, waited: 3 }), "{err}");
    assert!(err.to_string().contains("only 1 of the 3 clients"), "{err}");
    lone.await.expect("client task").expect("the lone client is told the run is over");
    assert!(out.path().join("summary.json").exists(), "the run's files are written");
}

/// Issue 14, item 7: a client that keeps polling but never delivers (it answers no task)
/// costs a round's deadline at first, then sits out more and more rounds (0, 1, 3, ... after
/// its 1st, 2nd, 3rd miss in a row) instead of holding up every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_polls_but_never_works_sits_out_more_and_more_rounds() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 6);
    config.min_results = Some(2);
    config.round_timeout_secs = 2;
    let server = start_server(config, out.path()).await;
    let mut rogue = strata_tests::RawClient::join(&server.url, 2).await;
    rogue.heartbeat().await;
    let cache = Arc::new(strata_client::DataCache::default());
    let honest: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();
    // Polls for ever and answers nothing.
    let squatting = tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let poll = pb::PullTaskRequest {
                run_id: rogue.run_id.clone(),
                client_id: rogue.client_id.clone(),
                session: rogue.session.clone(),
                last_task_id: last.clone(),
                wait_ms: 1000,
                capabilities: None,
            };
            match rogue.rpc.pull_task(poll).await {
                Ok(task) if !task.get_ref().task_id.is_empty() => last = task.into_inner().task_id,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let outcome = server.handle.await.expect("server task").expect("run completes");
    squatting.abort();
    for c in honest {
        c.await.expect("client task").expect("honest client ends cleanly");
    }
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    let picked: Vec<u32> = rounds.iter().filter(|r| r.round < 6).map(|r| r.picked).collect();
    assert_eq!(picked, vec![3, 3, 2, 3, 2, 2], "{rounds:?}");
    assert_eq!(outcome.summary.rounds_completed, 6, "every round aggregated the honest results: {rounds:?}");
}

/// A client whose result was refused, and that then asks for its next task, has ended the
/// round's task: the round closes with the others' results instead of waiting for its
/// deadline (a run where undefended FedAvg diverged once waited 600 s a round for honest
/// clients whose every result was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_whose_result_was_refused_does_not_hold_the_round() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut config = synthetic_config(3, 1);
    config.min_results = Some(2);
    config.round_timeout_secs = 600;
    let server = start_server(config, out.path()).await;
    let mut rogue = strata_tests::RawClient::join(&server.url, 2).await;
    rogue.capabilities = Some(pb::ClientCapabilities { train_samples: 100, test_samples: 30, ..Default::default() });
    let cache = Arc::new(strata_client::DataCache::default());
    let honest: Vec<_> = (0..2).map(|i| spawn_client(&server.url, i, &cache)).collect();
    let task = rogue.wait_for(pb::TaskKind::Train).await;
    let params = rogue.download(&task.task_id).await;
    let nan = strata_tests::edit_tensors(&params, |t| t[0].values_mut()[0] = f32::NAN);
    let header = pb::ResultHeader { num_samples: 100, ..rogue.header(&task) };
    rogue.push(strata_tests::result_parts(header, nan)).await.expect_err("a NaN is refused");
    // Its next poll says it is done with the task; it answers the final evaluation.
    let finishing = tokio::spawn(async move { rogue.wait_for(pb::TaskKind::Finish).await });
    let outcome = tokio::time::timeout(Duration::from_secs(120), server.handle)
        .await
        .expect("the round closed without waiting for the refused client's deadline")
        .expect("server task")
        .expect("run completes");
    for c in honest {
        c.await.expect("client task").expect("honest client ends cleanly");
    }
    finishing.await.expect("the rogue is told the run is over");
    let rounds: Vec<RoundRecord> = read_jsonl(&out.path().join("rounds.jsonl"));
    assert_eq!(outcome.summary.rounds_completed, 1);
    assert!(rounds[0].aggregated && rounds[0].reported == 2, "{rounds:?}");
}
