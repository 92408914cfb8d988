//! The gRPC service: converts requests, asks the registry and the round gate, and maps every
//! refusal to a status a person can act on. Handlers never touch strategy state: valid results
//! go to the round loop over a channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use strata_core::compression::CompressionConfig;
use strata_methods::ccvr::ClassStats;
use strata_proto::assemble::AssemblyLimits;
use strata_proto::receive::{Expected, ResultReceiver};
use strata_proto::secagg::Answer;
use strata_proto::text::shown;
use strata_proto::{Encoded, TensorSlices, pb, reason, scalar};
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{info, warn};
use uuid::Uuid;

use crate::assignment::{Assignment, TaskKind};
use crate::budget::UploadBudget;
use crate::events::ServerEvent;
use crate::gate::RoundGate;
use crate::registry::{Capabilities, FingerprintError, JoinError, Registry, Unauthorized};
use crate::validate::{self, ValidUpdate};

type RpcResult<T> = Result<Response<T>, Status>;

/// A result that passed validation, on its way to the round loop.
#[derive(Debug)]
pub struct Report {
    pub client: crate::client_info::ClientInfo,
    pub round: u64,
    pub task_id: String,
    pub update: Option<ValidUpdate>,
    /// Whether the result is a training update (which the strategy may already have absorbed).
    pub trained: bool,
    /// The share of the upload budget the update holds until the strategy has absorbed it.
    pub upload_permit: Option<OwnedSemaphorePermit>,
    /// Per-class feature statistics (CCVR), checked for shape and finiteness.
    pub stats: Option<Vec<ClassStats>>,
    pub metrics: HashMap<String, f64>,
    /// Encoded size of every message of the upload.
    pub bytes_up: u64,
    /// A secure-aggregation stage's answer (checked for sizes and bounds, not yet by the protocol).
    pub secagg: Option<Answer>,
    /// Receiving the result, header to last part (waiting for upload budget excluded).
    pub upload_seconds: f64,
    /// Checking the update before it may reach the strategy.
    pub validation_seconds: f64,
}

pub struct FederationService {
    pub run_id: String,
    pub config_toml: String,
    pub registry: Registry,
    pub gate: Arc<RoundGate>,
    pub reports: mpsc::Sender<Report>,
    pub events: broadcast::Sender<ServerEvent>,
    pub chunk_bytes: usize,
    pub limits: AssemblyLimits,
    /// The largest magnitude a value of an update may have (`defense.max_abs_value`).
    pub max_abs_value: f64,
    /// Bytes of uploads held at once, across clients.
    pub upload_budget: UploadBudget,
    /// Longest a poll is held open before answering WAIT.
    pub max_poll_wait: Duration,
    /// How tensors travel each way (`[compression]`), and the seed of int8's rounding.
    pub compression: CompressionConfig,
    pub seed: u64,
    /// Uploads whose stream was cut, kept until their task's deadline for resuming.
    pub parked: ParkedUploads,
}

/// Downloads one client may have open at once.
const MAX_DOWNLOADS_PER_CLIENT: u32 = 2;

/// Tasks one host poll returns at most (a few hundred bytes each, well under gRPC's 4 MiB).
const MAX_TASKS_PER_HOST_POLL: usize = 1000;

/// What a call proves about its sender beyond its session: its token (by label), or else its
/// client certificate (by fingerprint); `None` on a server that checks neither.
fn credential_of<T>(request: &Request<T>) -> Option<String> {
    if let Some(label) = request.extensions().get::<crate::auth::TokenLabel>() {
        return Some(format!("token:{}", label.0));
    }
    let certs = request.peer_certs()?;
    certs.first().map(|leaf| strata_security::certificate_fingerprint(leaf.as_ref()))
}

fn parse_client_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|e| Status::invalid_argument(format!("client_id `{}` is not a UUID: {e}", shown(id))))
}

impl From<JoinError> for Status {
    fn from(e: JoinError) -> Self {
        match e {
            JoinError::Full { .. } => {
                reason::status(Code::ResourceExhausted, e.to_string(), pb::ErrorReason::FederationFull)
            }
            JoinError::IndexTaken { .. } => Status::already_exists(e.to_string()),
            JoinError::NotYourSession { .. } | JoinError::OtherCredential { .. } | JoinError::CredentialFull { .. } => {
                Status::permission_denied(e.to_string())
            }
            JoinError::IndexOutOfRange { .. } | JoinError::IndexChanged { .. } | JoinError::HostChanged { .. } => {
                Status::invalid_argument(e.to_string())
            }
        }
    }
}

impl From<FingerprintError> for Status {
    fn from(e: FingerprintError) -> Self {
        match e {
            FingerprintError::Mismatch { .. } => Status::failed_precondition(e.to_string()),
            FingerprintError::Malformed { .. } => Status::invalid_argument(e.to_string()),
        }
    }
}

impl FederationService {
    fn check_run(&self, run_id: &str) -> Result<(), Status> {
        if run_id != self.run_id {
            return Err(Status::failed_precondition(format!(
                "message is for run `{}`, but this server runs `{}`: rejoin",
                shown(run_id),
                self.run_id
            )));
        }
        Ok(())
    }

    /// The client a call speaks for, if it carries that client's session.
    fn known_client(&self, id: &str, session: &str) -> Result<Uuid, Status> {
        let id = parse_client_id(id)?;
        match self.registry.authorize(&id, session) {
            Ok(()) => Ok(id),
            Err(Unauthorized::NotJoined) => {
                let message = format!("client {id} has not joined this run");
                Err(reason::status(Code::PermissionDenied, message, pb::ErrorReason::NotJoined))
            }
            // Says nothing of the client: the caller may not be it.
            Err(Unauthorized::WrongSession) => {
                Err(Status::permission_denied("this call does not carry the session of the client it names"))
            }
        }
    }

    fn refused(&self, client: Option<u32>, status: Status) -> Status {
        warn!(client, code = ?status.code(), "refused result: {}", status.message());
        let _ = self.events.send(ServerEvent::ResultRefused { client, reason: status.message().to_string() });
        status
    }

    /// Checks a result's header against its task and reserves its room in the upload budget:
    /// the start of an upload, before any of its data is read.
    async fn begin_upload(
        &self,
        client: Uuid,
        header: pb::ResultHeader,
        task: &Assignment,
        bytes_up: u64,
    ) -> Result<Partial, Status> {
        // A masked update carries its vector, not the tensors it was made of.
        let upload: &[_] = if task.secagg.is_some() { &[] } else { &task.expected_upload };
        // What the task sent: a compressed update is its change from these.
        let sent = task.parameters();
        let expected = Expected {
            upload,
            training: task.kind == TaskKind::Train,
            train_samples: self.registry.capabilities(&client).map(|c| c.train_samples),
            test_samples: self.registry.capabilities(&client).map(|c| c.test_samples),
            mask_bits: task.mask_bits,
            // Under secure aggregation the statistics come masked, as the vector.
            feature_stats: task.feature_stats.filter(|_| task.secagg.is_none()),
            secagg: task.secagg.as_ref().map(|s| s.expect),
            limits: self.limits,
            compression: self.compression.up,
            sent: sent.as_ref(),
        };
        let receiver = ResultReceiver::new(&header, expected)?;
        drop(sent);
        // Room in the upload budget before reading the data (the assembler's zeros are lazy
        // pages): what the update takes once decoded, not what travels.
        let upload_permit = self.upload_budget.reserve(receiver.assembled_bytes(), task.deadline).await?;
        Ok(Partial { header, receiver, upload_permit, parts: 0, bytes_up, upload_seconds: 0.0 })
    }

    /// Takes back the upload a cut stream left, to go on from `header.resume_from_part`.
    fn resume_upload(&self, client: Uuid, mut header: pb::ResultHeader, bytes_up: u64) -> Result<Partial, Status> {
        let from = std::mem::take(&mut header.resume_from_part);
        let key = (client, header.task_id.clone());
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let found = parked.get(&key).map(|p| (p.parts, p.header == header));
        match found {
            Some((parts, true)) if parts == from => {
                let mut partial = parked.remove(&key).expect("looked up under the lock");
                if let Some(index) = self.registry.info(&client).map(|c| c.index) {
                    info!(client = index, task = %key.1, from_part = from, bytes_held = partial.bytes_up, "upload resumed");
                    let resumed =
                        ServerEvent::UploadResumed { client: index, from_part: from, bytes_held: partial.bytes_up };
                    let _ = self.events.send(resumed);
                }
                partial.bytes_up += bytes_up;
                Ok(partial)
            }
            Some((parts, true)) => Err(Status::failed_precondition(format!(
                "this upload resumes from part {from}, but the server holds {parts} parts of it: ask UploadOffset"
            ))),
            Some((_, false)) => Err(Status::invalid_argument(
                "a resumed upload's header must be the interrupted one's (but for resume_from_part)",
            )),
            None => Err(Status::failed_precondition(format!(
                "the server holds no interrupted upload of task `{}` (it expired, or was never cut): send it \
                 from the start",
                shown(&header.task_id)
            ))),
        }
    }

    /// Reads a result stream to its end, checking it part by part; a stream cut by the
    /// transport leaves what arrived, to be resumed.
    async fn receive_result(
        &self,
        client: Uuid,
        header: pb::ResultHeader,
        task: &Assignment,
        stream: &mut Streaming<pb::ResultPart>,
        bytes_first: u64,
    ) -> Result<Report, Failure> {
        let info = self.registry.info(&client).ok_or_else(|| Status::permission_denied("client left the registry"))?;
        let mut partial = match header.resume_from_part {
            0 => {
                // A fresh start replaces whatever a cut stream left.
                self.parked.lock().unwrap_or_else(|e| e.into_inner()).remove(&(client, header.task_id.clone()));
                self.begin_upload(client, header, task, bytes_first).await?
            }
            _ => self.resume_upload(client, header, bytes_first)?,
        };
        let receiving = std::time::Instant::now();
        loop {
            match stream.message().await {
                Ok(Some(part)) => {
                    partial.bytes_up += part.encoded_len() as u64;
                    partial.receiver.push(&part)?;
                    partial.parts += 1;
                }
                Ok(None) => break,
                Err(status) => {
                    partial.upload_seconds += receiving.elapsed().as_secs_f64();
                    return Err(Failure::Cut(Box::new(partial), status));
                }
            }
        }
        let Partial { header, receiver, upload_permit, bytes_up, upload_seconds, .. } = partial;
        let received = receiver.finish()?;
        let upload_seconds = upload_seconds + receiving.elapsed().as_secs_f64();
        let validating = std::time::Instant::now();
        let update = match task.kind {
            // A masked update is summed, never seen: its vector is the answer.
            TaskKind::Train if task.secagg.is_some() => None,
            TaskKind::Train => {
                let update = validate::update(
                    info,
                    received.num_samples,
                    received.parameters,
                    received.mask,
                    self.max_abs_value,
                )?;
                Some(match (task.clip_norm, task.parameters()) {
                    (Some(bound), Some(sent)) => validate::clipped_by_client(update, &sent, bound, &received.metrics)?,
                    _ => update,
                })
            }
            _ => None,
        };
        let masked = matches!(received.secagg, Some(Answer::Masked(_)));
        Ok(Report {
            client: info,
            round: header.round,
            task_id: header.task_id,
            trained: update.is_some() || masked,
            secagg: received.secagg,
            upload_permit,
            update,
            stats: received.stats,
            metrics: received.metrics,
            bytes_up,
            upload_seconds,
            validation_seconds: validating.elapsed().as_secs_f64(),
        })
    }

    /// Keeps what a cut upload delivered until its task's deadline, for the client to resume.
    fn park(&self, client: Uuid, partial: Partial, deadline: tokio::time::Instant) {
        let key = (client, partial.header.task_id.clone());
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), partial);
        let parked = Arc::clone(&self.parked);
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            // Past the deadline nothing can complete it; its budget share goes back.
            parked.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        });
    }
}

/// An upload under way, or cut and kept for resuming: its header (without `resume_from_part`),
/// what arrived of it, and its share of the upload budget.
#[derive(Debug)]
pub struct Partial {
    header: pb::ResultHeader,
    receiver: ResultReceiver,
    upload_permit: Option<OwnedSemaphorePermit>,
    /// Parts after the header received whole, and every byte of every stream of it.
    parts: u64,
    bytes_up: u64,
    upload_seconds: f64,
}

/// Interrupted uploads by client and task.
pub type ParkedUploads = Arc<Mutex<HashMap<(Uuid, String), Partial>>>;

/// Why a result did not arrive: refused (it was wrong), or cut by the transport (what arrived
/// is kept for resuming).
enum Failure {
    Refused(Status),
    Cut(Box<Partial>, Status),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Refused(status)
    }
}

impl From<strata_proto::receive::Refusal> for Failure {
    fn from(refusal: strata_proto::receive::Refusal) -> Self {
        Failure::Refused(refusal.into())
    }
}

#[tonic::async_trait]
impl pb::federation_server::Federation for FederationService {
    async fn join(&self, request: Request<pb::JoinRequest>) -> RpcResult<pb::JoinReply> {
        // Which token joined as which client: the audit trail for revoking one.
        let token = request.extensions().get::<crate::auth::TokenLabel>().map(|l| l.0.clone());
        let credential = credential_of(&request);
        let req = request.into_inner();
        let id = parse_client_id(&req.client_id)?;
        let host = match req.host_id.as_str() {
            "" => None,
            h => Some(
                Uuid::parse_str(h)
                    .map_err(|e| Status::invalid_argument(format!("host_id `{}` is not a UUID: {e}", shown(h))))?,
            ),
        };
        if let Some(c) = &req.capabilities {
            self.registry.check_fingerprint(&c.dataset_fingerprint)?;
        }
        let (index, session) =
            self.registry.join_as(credential.as_deref(), id, req.requested_index, host, &req.session)?;
        if let Some(c) = req.capabilities {
            let capabilities = capabilities_from_wire(c);
            // Refused capabilities are not recorded: the client stays joined, unable to train.
            self.registry
                .check_capabilities(index, &capabilities)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.registry.set_capabilities(&id, capabilities);
        }
        if host.is_some() {
            // A population joins by the thousand: one line per virtual client would drown the log.
            tracing::debug!(client = index, %id, token = token.as_deref(), "virtual client joined");
        } else {
            info!(client = index, %id, token = token.as_deref(), "client joined");
        }
        let _ = self.events.send(ServerEvent::ClientJoined { index, joined: self.registry.joined_count() });
        Ok(Response::new(pb::JoinReply {
            run_id: self.run_id.clone(),
            client_index: index,
            config_toml: self.config_toml.clone(),
            session,
        }))
    }

    async fn pull_task(&self, request: Request<pb::PullTaskRequest>) -> RpcResult<pb::Task> {
        let req = request.into_inner();
        self.check_run(&req.run_id)?;
        let id = self.known_client(&req.client_id, &req.session)?;
        if let Some(c) = &req.capabilities {
            self.registry.check_fingerprint(&c.dataset_fingerprint)?;
        }
        let capabilities = req.capabilities.map(capabilities_from_wire);
        if let (Some(c), Some(info)) = (&capabilities, self.registry.info(&id)) {
            self.registry.check_capabilities(info.index, c).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        self.registry.touch(&id, capabilities);
        // Asking for the task after its current one: the client has ended that one, with a
        // result or (refused, failed) without, and the round need not wait for it.
        if !req.last_task_id.is_empty() {
            self.registry.give_up(&id, &req.last_task_id);
        }
        let mut mailbox =
            self.registry.subscribe(&id).ok_or_else(|| Status::permission_denied("client left the registry"))?;
        let wait = Duration::from_millis(req.wait_ms.into()).min(self.max_poll_wait);
        let fresh = |a: &Option<Arc<Assignment>>| a.as_ref().is_some_and(|a| a.task_id != req.last_task_id);
        let waiting = self.registry.begin_poll(&id);
        let waited = tokio::time::timeout(wait, mailbox.wait_for(fresh)).await;
        drop(waiting);
        let task = match waited {
            Ok(Ok(current)) => current.clone(),
            // Timed out, or the server is shutting down: tell the client to poll again.
            _ => None,
        };
        if task.as_ref().is_some_and(|a| a.kind == TaskKind::Finish) {
            self.registry.mark_finished(&id);
        }
        Ok(Response::new(match task {
            Some(a) => task_to_wire(&self.run_id, &a),
            None => pb::Task { run_id: self.run_id.clone(), kind: pb::TaskKind::Wait as i32, ..Default::default() },
        }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> RpcResult<pb::HeartbeatReply> {
        let req = request.into_inner();
        self.check_run(&req.run_id)?;
        let id = self.known_client(&req.client_id, &req.session)?;
        self.registry.touch(&id, None);
        Ok(Response::new(pb::HeartbeatReply {}))
    }

    async fn pull_host_tasks(&self, request: Request<pb::HostPollRequest>) -> RpcResult<pb::HostTasks> {
        let req = request.into_inner();
        self.check_run(&req.run_id)?;
        let host = Uuid::parse_str(&req.host_id)
            .map_err(|e| Status::invalid_argument(format!("host_id `{}` is not a UUID: {e}", shown(&req.host_id))))?;
        // Whoever polls a host takes its tasks: only a host that holds one of its clients'
        // sessions may.
        let voucher = self.known_client(&req.client_id, &req.session)?;
        if !self.registry.is_host_of(&voucher, &host) {
            return Err(Status::permission_denied(format!(
                "client {voucher} did not join through host {host}: a host polls with one of its own clients' sessions"
            )));
        }
        let wait = Duration::from_millis(req.wait_ms.into()).min(self.max_poll_wait);
        let max = (req.max_tasks as usize).clamp(1, MAX_TASKS_PER_HOST_POLL);
        let poll =
            self.registry.poll_host(&host, wait, max).await.ok_or_else(|| {
                Status::permission_denied(format!("no client has joined this run through host {host}"))
            })?;
        let tasks = poll
            .tasks
            .iter()
            .map(|(id, a)| pb::HostTask { client_id: id.to_string(), task: Some(task_to_wire(&self.run_id, a)) })
            .collect();
        Ok(Response::new(pb::HostTasks { tasks, finished: poll.finished }))
    }

    async fn upload_offset(&self, request: Request<pb::UploadOffsetRequest>) -> RpcResult<pb::UploadOffsetReply> {
        let req = request.into_inner();
        self.check_run(&req.run_id)?;
        let id = self.known_client(&req.client_id, &req.session)?;
        let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = parked.get(&(id, req.task_id.clone())) {
            return Ok(Response::new(pb::UploadOffsetReply { parts_received: p.parts, bytes_received: p.bytes_up }));
        }
        drop(parked);
        if self.gate.receiving(id) {
            // The client saw its connection fail before this server did.
            return Err(Status::unavailable(
                "this client's upload is still open on the server (its cut has not reached it yet): ask again shortly",
            ));
        }
        Ok(Response::new(pb::UploadOffsetReply { parts_received: 0, bytes_received: 0 }))
    }

    type DownloadParametersStream = ReceiverStream<Result<pb::ParameterPart, Status>>;

    async fn download_parameters(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> RpcResult<Self::DownloadParametersStream> {
        let req = request.into_inner();
        self.check_run(&req.run_id)?;
        let id = self.known_client(&req.client_id, &req.session)?;
        let task = self.registry.current(&id).filter(|a| a.task_id == req.task_id).ok_or_else(|| {
            Status::failed_precondition(format!("task `{}` is not this client's current task", shown(&req.task_id)))
        })?;
        let parameters = task.parameters().ok_or_else(|| {
            Status::failed_precondition(format!(
                "task `{}` carries no parameters, or its round is over",
                shown(&req.task_id)
            ))
        })?;
        // A client needs one download per task; a few at once leave room for a retry.
        let stream_slot = self.registry.begin_download(&id, MAX_DOWNLOADS_PER_CLIENT).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "this client already has {MAX_DOWNLOADS_PER_CLIENT} downloads open; finish or cancel one first"
            ))
        })?;
        // Each download rounds on its own draws (int8): the clients' errors average out.
        let seed = self.seed ^ task_seed(&task.task_id);
        let encoded = Encoded::new(parameters, None, self.compression.down, &mut None, seed);
        let header = pb::ParameterHeader {
            run_id: self.run_id.clone(),
            round: task.round,
            task_id: task.task_id.clone(),
            tensors: encoded.specs(),
            total_bytes: encoded.total_bytes(),
            mask: None,
        };
        // A bounded channel fed by a task: the stream holds a few slices at most, and a failed
        // send tells us the client has gone.
        let (tx, rx) = mpsc::channel(4);
        let (chunk_bytes, resume_from) = (self.chunk_bytes, req.resume_from_part);
        tokio::spawn(async move {
            let _slot = stream_slot;
            let streaming = std::time::Instant::now();
            let first = pb::ParameterPart { part: Some(pb::parameter_part::Part::Header(header)) };
            task.add_bytes_down(first.encoded_len() as u64);
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            // A resumed download skips what its client holds; the same seed cuts the same slices.
            let skip = usize::try_from(resume_from).unwrap_or(usize::MAX);
            for slice in TensorSlices::encoded(encoded, chunk_bytes).skip(skip) {
                let part = pb::ParameterPart { part: Some(pb::parameter_part::Part::Tensor(slice)) };
                task.add_bytes_down(part.encoded_len() as u64);
                if tx.send(Ok(part)).await.is_err() {
                    warn!(task = %task.task_id, "client left during download");
                    return;
                }
            }
            task.add_download_time(streaming.elapsed());
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn push_result(&self, request: Request<Streaming<pb::ResultPart>>) -> RpcResult<pb::PushAck> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty result stream"))?;
        let bytes_first = first.encoded_len() as u64;
        let Some(pb::result_part::Part::Header(header)) = first.part else {
            return Err(Status::invalid_argument("a result stream must start with its header"));
        };
        self.check_run(&header.run_id)?;
        let id = self.known_client(&header.client_id, &header.session)?;
        self.registry.touch(&id, None);
        let index = self.registry.info(&id).map(|c| c.index);
        let round = header.round;
        let task = self.gate.admit(id, round, &header.task_id).map_err(|r| self.refused(index, r.into()))?;
        // A stream that stalls gives up its budget when the round's deadline passes.
        let received =
            tokio::time::timeout_at(task.deadline, self.receive_result(id, header, &task, &mut stream, bytes_first))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::Refused(Status::deadline_exceeded(
                        "the round's deadline passed before the result was complete",
                    )))
                });
        let report = match received {
            Ok(report) => report,
            Err(Failure::Refused(status)) => {
                self.gate.release(id, round);
                return Err(self.refused(index, status));
            }
            Err(Failure::Cut(partial, status)) => {
                warn!(
                    client = index,
                    task = %task.task_id,
                    parts = partial.parts,
                    "upload cut ({}); what arrived is kept for resuming until the round's deadline",
                    status.message()
                );
                self.park(id, *partial, task.deadline);
                self.gate.release(id, round);
                return Err(status);
            }
        };
        self.gate.accept(id, round).map_err(|r| self.refused(index, r.into()))?;
        let bytes_received = report.bytes_up;
        self.reports.send(report).await.map_err(|_| Status::unavailable("the server is shutting down"))?;
        Ok(Response::new(pb::PushAck { bytes_received }))
    }
}

/// A task id's bits for seeding its download's rounding (FNV-1a: stable across builds).
fn task_seed(task_id: &str) -> u64 {
    task_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// What a client says about itself, its text cut and escaped: the device goes into every
/// round's records.
fn capabilities_from_wire(c: pb::ClientCapabilities) -> Capabilities {
    Capabilities {
        device: shown(&c.device),
        train_samples: c.train_samples,
        test_samples: c.test_samples,
        dataset_fingerprint: c.dataset_fingerprint,
        partition: shown(&c.partition),
    }
}

fn task_to_wire(run_id: &str, a: &Assignment) -> pb::Task {
    let kind = match a.kind {
        TaskKind::Train => pb::TaskKind::Train,
        TaskKind::Evaluate => pb::TaskKind::Evaluate,
        TaskKind::Finish => pb::TaskKind::Finish,
        TaskKind::FeatureStats => pb::TaskKind::FeatureStats,
        TaskKind::SecAggSetup => pb::TaskKind::SecaggSetup,
        TaskKind::SecAggShareKeys => pb::TaskKind::SecaggShareKeys,
        TaskKind::SecAggUnmask => pb::TaskKind::SecaggUnmask,
    };
    let parameters =
        a.parameters().map(|p| pb::ParameterSetInfo { num_tensors: p.len() as u32, total_bytes: p.byte_len() as u64 });
    pb::Task {
        run_id: run_id.to_string(),
        round: a.round,
        kind: kind as i32,
        task_id: a.task_id.clone(),
        parameters,
        upload: Some(scalar::selection_to_wire(&a.upload)),
        parameters_are_global: a.parameters_are_global,
        mask: a.mask_over.as_ref().map(scalar::selection_to_wire),
        deadline_ms: a.deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64,
        evaluate_received: a.evaluate_received,
        evaluate_trained: a.evaluate_trained,
        clip_norm: a.clip_norm.unwrap_or(0.0),
        secagg: a.secagg.as_ref().map(|s| s.stage.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strata_core::selection::Selector;
    use strata_core::tensor::{NamedTensor, TensorSet};
    use strata_proto::{Assembler, tensor_specs};
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;

    /// Deterministic, finite values with varied bit patterns (signs, exponents, mantissas).
    fn big_set(numel: [usize; 3]) -> TensorSet {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let tensors = numel
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let values = (0..n)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        f32::from_bits((state as u32) & 0xBF7F_FFFF) // clear the top exponent bit: always finite
                    })
                    .collect();
                NamedTensor::new(format!("t{i}"), vec![n], values).expect("shape")
            })
            .collect();
        TensorSet::new(tensors).expect("names")
    }

    fn same_bits(a: &TensorSet, b: &TensorSet) -> bool {
        a.len() == b.len()
            && a.tensors().iter().zip(b.tensors()).all(|(x, y)| {
                x.name() == y.name()
                    && x.shape() == y.shape()
                    && x.values().iter().zip(y.values()).all(|(p, q)| p.to_bits() == q.to_bits())
            })
    }

    /// A few hundred MB of parameters go down and back up through real gRPC, in slices under
    /// the default 4 MiB message limit, and arrive bit for bit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_300_mb_tensor_set_round_trips_bit_exact() {
        let set = Arc::new(big_set([50_000_000, 25_000_000, 3]));
        let registry = Registry::new(1);
        let id = Uuid::new_v4();
        let (_, session) = registry.join(id, Some(0), None, "").expect("join");
        registry.set_capabilities(&id, Capabilities { train_samples: 1, ..Default::default() });
        let mut task = Assignment::new(0, TaskKind::Train, 0, tokio::time::Instant::now() + Duration::from_secs(600));
        task.set_parameters(Arc::clone(&set));
        task.upload = Selector::all();
        task.expected_upload = Arc::new(set.specs());
        let task = Arc::new(task);
        let gate = Arc::new(RoundGate::default());
        gate.open(0, HashMap::from([(id, Arc::clone(&task))]));
        registry.post(&id, Arc::clone(&task));
        let (reports_tx, mut reports_rx) = mpsc::channel(1);
        let service = FederationService {
            run_id: "run".into(),
            config_toml: String::new(),
            registry,
            gate,
            reports: reports_tx,
            events: broadcast::channel(16).0,
            chunk_bytes: strata_proto::DEFAULT_CHUNK_BYTES,
            limits: AssemblyLimits::default(),
            max_abs_value: 1e6,
            upload_budget: UploadBudget::for_model(set.byte_len() as u64),
            max_poll_wait: Duration::from_secs(1),
            compression: Default::default(),
            seed: 0,
            parked: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::federation_server::FederationServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        let mut rpc = pb::federation_client::FederationClient::connect(url).await.expect("connect");
        let request = pb::DownloadRequest {
            run_id: "run".into(),
            client_id: id.to_string(),
            task_id: task.task_id.clone(),
            session: session.clone(),
            resume_from_part: 0,
        };
        let mut stream = rpc.download_parameters(request).await.expect("download").into_inner();
        let Some(pb::parameter_part::Part::Header(header)) =
            stream.message().await.expect("header").and_then(|p| p.part)
        else {
            panic!("the stream must start with its header");
        };
        let mut assembler =
            Assembler::new(&header.tensors, header.total_bytes, AssemblyLimits::default()).expect("header");
        while let Some(part) = stream.message().await.expect("slice") {
            let Some(pb::parameter_part::Part::Tensor(slice)) = part.part else { panic!("unexpected part") };
            assembler.push(&slice).expect("in-order slice");
        }
        let downloaded = assembler.finish().expect("complete");
        assert!(same_bits(&downloaded, &set), "download is not bit-exact");
        assert!(task.bytes_down() > set.byte_len() as u64);

        let header = pb::ResultHeader {
            run_id: "run".into(),
            round: 0,
            task_id: task.task_id.clone(),
            client_id: id.to_string(),
            session: session.clone(),
            num_samples: 1,
            tensors: tensor_specs(&downloaded),
            total_bytes: downloaded.byte_len() as u64,
            ..Default::default()
        };
        let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) };
        let slices = TensorSlices::new(Arc::new(downloaded), strata_proto::MAX_CHUNK_BYTES)
            .map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Tensor(s)) });
        rpc.push_result(tokio_stream::iter(std::iter::once(first).chain(slices))).await.expect("upload accepted");
        let report = reports_rx.recv().await.expect("a report");
        let update = report.update.expect("a training update");
        assert!(same_bits(update.parameters(), &set), "upload is not bit-exact");
    }
}
