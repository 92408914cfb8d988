//! The round loop: the only code that waits on clients.
//!
//! Each round it picks clients, asks the strategy what each one gets, posts the tasks, waits
//! for results until every task is answered or the deadline passes, and hands the valid
//! updates to the strategy. Which clients evaluate, when and how often follows `[evaluation]`:
//! by default the cohort measures the model it receives, so a round costs what its cohort
//! costs. A last evaluation-only round measures the final model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_core::backend::ModelBackend;
use strata_core::config::RunConfig;
use strata_core::evaluation::EvalClients;
use strata_core::liveness::RoundCloses;
use strata_core::parts::ModelParts;
use strata_core::privacy::PrivacyReport;
use strata_core::records::{ClientRoundRecord, DefenseReport, PhaseSeconds, RoundRecord, metric};
use strata_core::tensor::{TensorSet, TensorSpec};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::assignment::{Assignment, TaskKind};
use crate::client_info::ClientInfo;
use crate::events::ServerEvent;
use crate::gate::RoundGate;
use crate::output::RunOutput;
use crate::privacy::PrivacyLedger;
use crate::registry::Registry;
use crate::service::Report;
use crate::state::{self, SavedClient};
use crate::strategy::{Aggregated, Instruction, Snapshot, Strategy, expected_upload};

pub struct RoundLoop {
    pub config: RunConfig,
    pub registry: Registry,
    pub gate: Arc<RoundGate>,
    pub reports: mpsc::Receiver<Report>,
    pub strategy: Box<dyn Strategy>,
    pub model_spec: Vec<TensorSpec>,
    /// The model's head and normalization layers, by name.
    pub parts: ModelParts,
    /// Retrains the classifier when calibrating.
    pub backend: Arc<dyn ModelBackend>,
    pub events: broadcast::Sender<ServerEvent>,
    pub output: RunOutput,
    pub run_id: String,
    /// The first round to run: 0, or where a resumed run left off.
    pub start_round: u64,
    /// The registry's generation whose identities the last saved state refers to, and their file.
    pub clients_saved: Option<(u64, String)>,
    /// Unique to this server process, in every task id: a client that took task `r2-train-c0`
    /// from a server that then died must not mistake the resumed server's round 2 for it.
    pub session: String,
    /// ε spent so far, when the run is differentially private (`[privacy]`).
    pub privacy: Option<PrivacyLedger>,
    /// The current round's time folding updates into the strategy.
    pub aggregation_time: Duration,
    /// The state still being written for `--resume`, while the next round runs.
    pub saving: Option<JoinHandle<StateWritten>>,
}

/// What `--resume` needs after a round, taken from the strategy and the registry.
struct StateToWrite {
    next_round: u64,
    generation: u64,
    clients: state::ClientList,
    fingerprint: Option<String>,
    snapshot: Snapshot,
}

/// How writing a [`StateToWrite`] went: the round it resumes at, the registry generation of its
/// identities, the clients file it refers to, and how long the writing took.
pub struct StateWritten {
    next_round: u64,
    generation: u64,
    file: Result<String, state::StateError>,
    seconds: f64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Interrupted,
    /// `liveness.start_deadline_secs` passed with fewer than `min_clients` joined.
    NeverStarted {
        joined: usize,
        needed: usize,
    },
}

impl RoundLoop {
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> (Ending, RunOutput) {
        tokio::pin!(shutdown);
        let min_clients = self.config.min_clients as usize;
        info!(min_clients, "waiting for clients");
        let deadline = self.config.liveness.start_deadline_secs.map(Duration::from_secs);
        let start_deadline = async {
            match deadline {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.registry.wait_for(min_clients) => {}
            _ = start_deadline => {
                let joined = self.registry.joined_count();
                warn!(joined, min_clients, "the start deadline passed before enough clients joined");
                self.finish().await;
                return (Ending::NeverStarted { joined, needed: min_clients }, self.output);
            }
            _ = &mut shutdown => return (Ending::Interrupted, self.output),
        }
        let mut last_row = self.config.rounds;
        for round in self.start_round..=self.config.rounds {
            let mut evaluation_only = round == self.config.rounds;
            let over_budget =
                if evaluation_only { None } else { self.privacy.as_ref().and_then(|l| l.next_round_exceeds()) };
            if let Some(next) = over_budget {
                let target = self.privacy.as_ref().and_then(PrivacyLedger::target).unwrap_or_default();
                warn!(
                    round,
                    next_epsilon = next,
                    target,
                    "another round would exceed the privacy budget; training stops"
                );
                (evaluation_only, last_row) = (true, round);
            }
            tokio::select! {
                _ = self.round(round, evaluation_only, over_budget.is_some()) => {}
                _ = &mut shutdown => {
                    self.gate.close();
                    self.state_written().await;
                    return (Ending::Interrupted, self.output);
                }
            }
            let calibrate = if evaluation_only {
                !self.config.calibration.is_off()
            } else {
                self.config.calibration.evaluates_after(round, self.config.rounds)
            };
            if calibrate {
                // Row `round + 1` is the model after this round's aggregation; the final row is `rounds`.
                let row = if evaluation_only { round } else { round + 1 };
                tokio::select! {
                    _ = self.calibrate(row) => {}
                    _ = &mut shutdown => {
                        self.gate.close();
                        self.state_written().await;
                        return (Ending::Interrupted, self.output);
                    }
                }
            }
            if evaluation_only {
                break;
            }
        }
        self.state_written().await;
        self.save_global("model.safetensors", self.strategy.global().as_deref(), last_row);
        self.finish().await;
        (Ending::Completed, self.output)
    }

    /// One round; `budget_spent`: an evaluation-only round that ends training early because
    /// another would exceed the privacy budget.
    async fn round(&mut self, round: u64, evaluation_only: bool, budget_spent: bool) {
        self.registry.begin_round(round);
        let started = Instant::now();
        let picked = if evaluation_only { Vec::new() } else { self.cohort(round).await };
        let (others, evaluating) = self.evaluators(round, &picked, evaluation_only);
        let train = self.strategy.configure_train(round, &picked);
        let evaluate = self.strategy.configure_evaluate(round, &others);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.config.round_timeout_secs);
        let moment = self.config.evaluation.moment;
        let mut tasks = HashMap::new();
        let instructions = train.into_iter().map(|i| (i, TaskKind::Train));
        for (instruction, kind) in instructions.chain(evaluate.into_iter().map(|i| (i, TaskKind::Evaluate))) {
            let id = instruction.client.id;
            let evaluates = evaluating(&instruction.client);
            let mut assignment = self.assignment(round, kind, instruction, deadline);
            if kind == TaskKind::Train {
                assignment.evaluate_received = evaluates && moment.merged();
                assignment.evaluate_trained = evaluates && moment.trained();
            }
            tasks.insert(id, assignment);
        }
        let n_train = tasks.values().filter(|a| a.kind == TaskKind::Train).count();
        info!(round, training = n_train, evaluating = tasks.len() - n_train, "round started");
        let _ =
            self.events.send(ServerEvent::RoundStarted { round, training: n_train, evaluating: tasks.len() - n_train });
        let secure_config = self.config.secure_aggregation.clone().filter(|_| n_train > 0);
        let (tasks, mut reports, mut secure) = match &secure_config {
            Some(config) => {
                let (tasks, reports, outcome) = self.secure_dispatch(round, tasks, deadline, config).await;
                (tasks, reports, Some(outcome))
            }
            None => {
                let tasks: HashMap<_, _> = tasks.into_iter().map(|(id, a)| (id, Arc::new(a))).collect();
                let reports = self.dispatch(round, &tasks, deadline).await;
                (tasks, reports, None)
            }
        };

        let rows = self.records(round, &tasks, &reports);
        // The results are in: what was sent is no longer needed, and its memory can take the
        // next models.
        for task in tasks.values() {
            task.release_parameters();
        }
        let aggregating = Instant::now();
        let (aggregated, defense, privacy) = if evaluation_only {
            (false, None, None)
        } else if let Some(outcome) = &mut secure {
            // A private round releases whoever answered (skipping would tell); else the sum
            // must hold enough clients.
            let needed = if self.privacy.is_some() { 0 } else { self.config.results_needed(n_train) as u32 };
            if outcome.record.recovered && outcome.record.summed < needed {
                let summed = outcome.record.summed;
                warn!(round, summed, needed, "too few results in the secure sum: keeping the previous model");
                outcome.sum = None;
            }
            match outcome.sum.take() {
                Some((layout, sum)) => {
                    let aggregated = off_the_runtime(|| self.strategy.apply_secure_sum(round, &layout, &sum));
                    self.settle(round, aggregated)
                }
                // The protocol failed: a private round still releases, with noise alone.
                None if self.privacy.is_some() => {
                    let aggregated = off_the_runtime(|| self.strategy.aggregate_train(round, Vec::new()));
                    self.settle(round, aggregated)
                }
                None => {
                    self.strategy.abandon(round);
                    (false, None, None)
                }
            }
        } else {
            // What the strategy did not absorb on arrival (FedCAC keeps every client's model).
            let updates: Vec<_> = reports.values_mut().filter_map(|r| r.update.take()).collect();
            let received = reports.values().filter(|r| r.trained).count();
            // A private round releases a noised model whoever answered: skipping would tell.
            let needed = if self.privacy.is_some() { 0 } else { self.config.results_needed(n_train) };
            if received < needed {
                warn!(round, received, needed, "too few results: keeping the previous model");
                self.strategy.abandon(round);
                (false, None, None)
            } else {
                let aggregated = off_the_runtime(|| self.strategy.aggregate_train(round, updates));
                self.settle(round, aggregated)
            }
        };

        self.aggregation_time += aggregating.elapsed();
        let snapshotting = Instant::now();
        let state = self.take_state(round + 1).await;
        let phases = PhaseSeconds {
            snapshot: snapshotting.elapsed().as_secs_f64(),
            download: tasks.values().map(|t| t.download_seconds()).sum(),
            train: rows.iter().map(|r| r.train_seconds).sum(),
            upload: reports.values().map(|r| r.upload_seconds).sum(),
            validation: reports.values().map(|r| r.validation_seconds).sum(),
            aggregation: std::mem::take(&mut self.aggregation_time).as_secs_f64(),
        };
        let record = RoundRecord {
            defense,
            privacy,
            budget_spent,
            secure_aggregation: secure.map(|s| s.record),
            phases: Some(phases),
            ..RoundRecord::from_clients(round, n_train as u32, aggregated, started.elapsed().as_secs_f64(), &rows)
        };
        if let Err(e) = self.output.append(&rows, &record) {
            warn!(round, "cannot write metrics: {e}");
        }
        self.write_state(state);
        info!(
            round,
            global = ?record.global_accuracy,
            personalized = ?record.personalized_accuracy,
            epsilon = ?record.privacy.as_ref().and_then(|p| p.epsilon),
            seconds = record.seconds,
            "round finished"
        );
        let _ = self.events.send(ServerEvent::RoundFinished(Box::new(record)));
    }

    /// What a round's aggregation did, for its record: whether the state moved, the robust
    /// rule's report, and the privacy release's, with the ε spent so far.
    fn settle(&mut self, round: u64, aggregated: Aggregated) -> (bool, Option<DefenseReport>, Option<PrivacyReport>) {
        match aggregated {
            Aggregated::Updated { defense, privacy } => {
                let privacy = privacy.map(|mut r| {
                    if let Some(ledger) = &mut self.privacy {
                        r.epsilon = Some(ledger.record_release()).filter(|e| e.is_finite());
                    }
                    r
                });
                (true, defense, privacy)
            }
            Aggregated::Skipped { reason } => {
                warn!(round, %reason, "aggregation skipped");
                (false, None, None)
            }
        }
    }

    /// Posts the tasks, opens the gate to their results, and collects them until every task
    /// is answered or the deadline passes; clients that did not answer are marked as missed.
    pub(crate) async fn dispatch(
        &mut self,
        round: u64,
        tasks: &HashMap<uuid::Uuid, Arc<Assignment>>,
        deadline: tokio::time::Instant,
    ) -> HashMap<uuid::Uuid, Report> {
        self.gate.open(round, tasks.clone());
        for (id, task) in tasks {
            self.registry.post(id, Arc::clone(task));
        }
        let reports = self.collect(round, tasks, deadline).await;
        self.gate.close();
        for id in reports.keys() {
            self.registry.mark_delivered(id);
        }
        for id in tasks.keys().filter(|id| !reports.contains_key(*id)) {
            let index = self.registry.info(id).map(|c| c.index);
            warn!(round, client = index, "client missed the round's deadline; dropped from this round");
            self.registry.mark_missed(id);
        }
        reports
    }

    /// The round's cohort, waiting while nobody is available: a round that nobody could
    /// train in is not run and not counted (the run can still be stopped meanwhile).
    async fn cohort(&mut self, round: u64) -> Vec<ClientInfo> {
        let mut half_seconds = 0u64;
        loop {
            let picked = self.pick(round);
            // Under Poisson sampling an empty draw is a round like any other (it releases noise).
            if !picked.is_empty() || (self.privacy.is_some() && self.anyone_available(round)) {
                return picked;
            }
            // Clients sitting out rounds for missed deadlines do so only while others can train.
            self.registry.begin_round(u64::MAX);
            let picked = self.pick(round);
            self.registry.begin_round(round);
            if !picked.is_empty() {
                return picked;
            }
            if half_seconds.is_multiple_of(60) {
                warn!(round, waited_secs = half_seconds / 2, "no client is available to train; waiting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            half_seconds += 1;
        }
    }

    /// Picks the cohort, `ceil(fraction * n)` of the `n` joined clients, drawn among those
    /// available, seeded by round. Clients that missed a deadline and have not polled since
    /// are not available, so a dead client costs one deadline, not one per round. Drawing
    /// costs what the cohort costs, not what the population does.
    ///
    /// Under `[privacy]`, each client is drawn independently with probability `fraction`
    /// (Poisson sampling, what the accountant assumes), so the cohort's size varies, and
    /// the draw is not reproducible from the seed.
    fn pick(&self, round: u64) -> Vec<ClientInfo> {
        if self.privacy.is_some() {
            // Drawn from the OS, not the run's seed, which every client knows: the privacy
            // amplification by sampling holds only if nobody can tell who was drawn.
            let mut rng = strata_methods::dp::secure_rng();
            return self.registry.sample_poisson(self.config.fraction, self.patience(), &mut rng);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let wanted = self.config.cohort_size(self.registry.joined_count());
        self.registry.sample_available(wanted, self.patience(), &mut rng)
    }

    /// Whether any client could train now.
    fn anyone_available(&self, round: u64) -> bool {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ round);
        !self.registry.sample_available(1, self.patience(), &mut rng).is_empty()
    }

    /// Who reports an evaluation this round (`[evaluation]`): the clients that evaluate without
    /// training, and which of the training ones evaluate. The cohort, everyone available, or
    /// a sample drawn apart from the cohort; in the final evaluation, the cohort is a sample
    /// of the cohort's size. Nobody in a round that `every` skips.
    fn evaluators(
        &self,
        round: u64,
        picked: &[ClientInfo],
        evaluation_only: bool,
    ) -> (Vec<ClientInfo>, impl Fn(&ClientInfo) -> bool + use<>) {
        let evaluation = &self.config.evaluation;
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ round.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0xE7A1);
        let joined = self.registry.joined_count();
        let training: HashSet<uuid::Uuid> = picked.iter().map(|c| c.id).collect();
        let (others, chosen): (Vec<ClientInfo>, Option<HashSet<uuid::Uuid>>) =
            if !evaluation.evaluates_in(round, self.config.rounds) {
                (Vec::new(), Some(HashSet::new()))
            } else {
                match evaluation.clients {
                    EvalClients::All => {
                        let all = self.registry.available(self.patience());
                        (all.into_iter().filter(|c| !training.contains(&c.id)).collect(), None)
                    }
                    EvalClients::Cohort if evaluation_only => {
                        let n = self.config.cohort_size(joined);
                        (self.registry.sample_available(n, self.patience(), &mut rng), None)
                    }
                    EvalClients::Cohort => (Vec::new(), None),
                    EvalClients::Fraction(f) => {
                        let n = ((f * joined as f64).ceil() as usize).min(joined);
                        let drawn = self.registry.sample_available(n, self.patience(), &mut rng);
                        let set: HashSet<uuid::Uuid> = drawn.iter().map(|c| c.id).collect();
                        (drawn.into_iter().filter(|c| !training.contains(&c.id)).collect(), Some(set))
                    }
                }
            };
        (others, move |c: &ClientInfo| chosen.as_ref().is_none_or(|set| set.contains(&c.id)))
    }

    fn assignment(&self, round: u64, kind: TaskKind, i: Instruction, deadline: tokio::time::Instant) -> Assignment {
        let mut a = Assignment::in_phase(round, &self.session, kind, i.client.index, deadline);
        if kind == TaskKind::Train {
            let upload = expected_upload(&self.model_spec, &i.upload);
            a.mask_bits = i
                .mask_over
                .as_ref()
                .map(|over| upload.iter().filter(|s| over.matches(&s.name)).map(|s| s.numel()).sum());
            a.expected_upload = Arc::new(upload);
            a.mask_over = i.mask_over;
            a.upload = i.upload;
            a.clip_norm = i.clip_norm;
        }
        a.set_parameters(i.parameters);
        a.parameters_are_global = i.parameters_are_global;
        a
    }

    /// How long a client may stay silent before it counts as offline.
    pub(crate) fn patience(&self) -> Duration {
        Duration::from_secs(self.config.liveness.offline_after_secs)
    }

    /// Whether the round can close before its deadline: every task answered except those
    /// whose client went offline, or, under `min-results`, enough training results.
    fn can_close(&self, tasks: &HashMap<uuid::Uuid, Arc<Assignment>>, reports: &HashMap<uuid::Uuid, Report>) -> bool {
        let trained = reports.values().filter(|r| r.trained).count();
        let training = tasks.values().filter(|t| t.kind == TaskKind::Train).count();
        if self.config.liveness.round_closes == RoundCloses::MinResults
            && training > 0
            && trained >= self.config.results_needed(training)
        {
            return true;
        }
        let patience = self.patience();
        tasks.iter().all(|(id, task)| {
            reports.contains_key(id)
                || self.registry.is_offline(id, patience)
                || self.registry.gave_up(id, &task.task_id)
        })
    }

    async fn collect(
        &mut self,
        round: u64,
        tasks: &HashMap<uuid::Uuid, Arc<Assignment>>,
        deadline: tokio::time::Instant,
    ) -> HashMap<uuid::Uuid, Report> {
        let mut reports = HashMap::new();
        let mut check = tokio::time::interval(Duration::from_millis(500));
        while !self.can_close(tasks, &reports) {
            tokio::select! {
                _ = check.tick() => {}
                report = self.reports.recv() => {
                    let Some(report) = report else { break };
                    self.take_report(round, tasks, report, &mut reports);
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // A result is queued before its client hears it was accepted, so a client that has
        // since asked for its next task (which lets the round close) has its result here.
        while let Ok(report) = self.reports.try_recv() {
            self.take_report(round, tasks, report, &mut reports);
        }
        reports
    }

    /// Keeps a result of this round's tasks (folded into the strategy at once when it can).
    fn take_report(
        &mut self,
        round: u64,
        tasks: &HashMap<uuid::Uuid, Arc<Assignment>>,
        mut report: Report,
        reports: &mut HashMap<uuid::Uuid, Report>,
    ) {
        // A result accepted just before an earlier phase closed is not this one's.
        if report.round != round || tasks.get(&report.client.id).is_none_or(|t| t.task_id != report.task_id) {
            return;
        }
        let _ = self.events.send(ServerEvent::ResultAccepted { round, client: report.client.index });
        // Folded in now, so that a strategy with running sums holds no client's copy.
        if let Some(update) = report.update.take() {
            let folding = Instant::now();
            report.update = self.strategy.absorb(round, update);
            self.aggregation_time += folding.elapsed();
        }
        report.upload_permit = None;
        reports.insert(report.client.id, report);
    }

    pub(crate) fn records(
        &self,
        round: u64,
        tasks: &HashMap<uuid::Uuid, Arc<Assignment>>,
        reports: &HashMap<uuid::Uuid, Report>,
    ) -> Vec<ClientRoundRecord> {
        let mut rows: Vec<ClientRoundRecord> = reports
            .iter()
            .map(|(id, r)| {
                let m = |name: &str| r.metrics.get(name).copied();
                let trained = r.trained;
                ClientRoundRecord {
                    round,
                    client: r.client.index,
                    trained,
                    train_samples: m(metric::TRAIN_SAMPLES).unwrap_or(0.0) as u64,
                    test_samples: m(metric::TEST_SAMPLES).unwrap_or(0.0) as u64,
                    train_loss: m(metric::TRAIN_LOSS).filter(|_| trained),
                    accuracy: m(metric::ACCURACY),
                    accuracy_trained: m(metric::ACCURACY_TRAINED).filter(|_| trained),
                    global_accuracy: m(metric::GLOBAL_ACCURACY),
                    bytes_up: r.bytes_up,
                    bytes_down: tasks.get(id).map(|t| t.bytes_down()).unwrap_or(0),
                    train_seconds: m(metric::TRAIN_SECONDS).unwrap_or(0.0),
                    device: self.registry.capabilities(id).map(|c| c.device).filter(|d| !d.is_empty()),
                    dp_sgd_epsilon: m(metric::DP_SGD_EPSILON).filter(|_| trained),
                    secagg_seconds: m(metric::SECAGG_SECONDS).filter(|_| trained),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.client);
        rows
    }

    /// Takes what `--resume` needs to go on at `next_round` (FedCAC's snapshot gathers every
    /// client's critical entries: most of a second at 100 clients × 10M), after the previous
    /// state has been written: states are written in order, one at a time.
    async fn take_state(&mut self, next_round: u64) -> StateToWrite {
        self.state_written().await;
        let snapshot = off_the_runtime(|| self.strategy.snapshot());
        // The identities are written again only when someone joined since the last save.
        let generation = self.registry.generation();
        let clients = match &self.clients_saved {
            Some((saved, file)) if *saved == generation => state::ClientList::Written(file.clone()),
            _ => {
                let clients = self.registry.identities().into_iter().map(SavedClient::of).collect();
                state::ClientList::New { generation, clients }
            }
        };
        StateToWrite { next_round, generation, clients, fingerprint: self.registry.fingerprint(), snapshot }
    }

    /// Writes a taken state on a blocking thread while the next round runs (2 GB of FedCAC
    /// state take seconds to write). A crash meanwhile resumes from the previous state and runs
    /// this round again, as a crash between a round's records and its state always did: the
    /// state written is whole either way.
    fn write_state(&mut self, state: StateToWrite) {
        let (dir, run_id) = (self.output.dir().to_path_buf(), self.run_id.clone());
        self.saving = Some(tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let StateToWrite { next_round, generation, clients, fingerprint, snapshot } = state;
            let file = state::save(&dir, &run_id, next_round, clients, fingerprint, &snapshot);
            StateWritten { next_round, generation, file, seconds: started.elapsed().as_secs_f64() }
        }));
    }

    /// Waits for the state being written, if any; a failure is logged, not fatal (the run goes
    /// on; only resumability suffers).
    pub(crate) async fn state_written(&mut self) {
        let Some(writing) = self.saving.take() else {
            return;
        };
        match writing.await {
            Ok(StateWritten { next_round, generation, file: Ok(file), seconds }) => {
                debug!(next_round, seconds, "server state written");
                self.clients_saved = Some((generation, file));
            }
            Ok(StateWritten { next_round, file: Err(e), .. }) => warn!(next_round, "cannot save the server state: {e}"),
            Err(e) => warn!("saving the server state panicked: {e}"),
        }
    }

    /// Writes a global model into the run's directory, for methods whose global model is the
    /// whole model (the others' is a part, or a mean nobody evaluates).
    pub(crate) fn save_global(&self, file: &str, global: Option<&TensorSet>, row: u64) {
        let Some(global) = global.filter(|_| self.config.method.has_global_model()) else {
            return;
        };
        let metadata = BTreeMap::from([
            ("method".to_string(), self.config.method.to_string()),
            ("model".to_string(), self.config.model.name.clone()),
            ("round".to_string(), row.to_string()),
            ("seed".to_string(), self.config.seed.to_string()),
        ]);
        let path = self.output.dir().join(file);
        match strata_core::safetensors::write(&path, global, &metadata) {
            Ok(()) => info!(path = %path.display(), "global model saved"),
            Err(e) => warn!("cannot save the global model: {e}"),
        }
    }

    /// Tells every client (and every host of virtual clients) the run is over and gives them
    /// a moment to hear it.
    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for c in &self.registry.finish_hosts() {
            let finish =
                Assignment::in_phase(self.config.rounds + 2, &self.session, TaskKind::Finish, c.index, deadline);
            self.registry.post(&c.id, Arc::new(finish));
        }
        info!("run finished; telling clients to stop");
        while tokio::time::Instant::now() < deadline && self.registry.not_told_finish() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.events.send(ServerEvent::RunFinished);
    }
}

/// Runs CPU-heavy work from the round loop (FedCAC's aggregation and snapshot take seconds
/// with 100 clients of 10M parameters) without holding up the tasks queued on this worker thread, such
/// as heartbeats and uploads: on a multi-threaded runtime they move to another thread first.
fn off_the_runtime<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
