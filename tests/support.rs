//! Helpers for end-to-end tests: a real server on a loopback port, real clients, and a raw
//! gRPC client that sends what a real one never would.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_core::config::{DatasetKind, RunConfig, SyntheticConfig};
use strata_core::partition_spec::PartitionSpec;
use strata_core::tensor::{NamedTensor, TensorSet};
use strata_proto::assemble::AssemblyLimits;
use strata_proto::{Assembler, Decoding, Encoded, TensorSlices, pb, tensor_specs};
use strata_server::ServerEvent;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// A small, fast federation: FedProx's synthetic data, an MLP, `clients` clients, IID split.
pub fn synthetic_config(clients: u32, rounds: u64) -> RunConfig {
    let mut c = RunConfig::reference_fmnist();
    c.clients = clients;
    c.min_clients = clients;
    c.rounds = rounds;
    c.round_timeout_secs = 60;
    c.data.dataset = DatasetKind::Synthetic;
    c.data.split = PartitionSpec::Iid;
    c.data.synthetic = SyntheticConfig { samples: 1500, ..SyntheticConfig::default() };
    c.model.name = "mlp".into();
    c.train.lr = 0.05;
    c.train.batch_size = 20;
    c
}

/// The backend `strata server` gives the server: libtorch's, for the initial model and CCVR.
pub fn torch_backend() -> Arc<dyn strata_core::backend::ModelBackend> {
    Arc::new(strata_torch::backend::TorchBackend)
}

/// Sends the server's and clients' warnings (or what `RUST_LOG` asks for) to the test's
/// captured output, so that a test failing in CI says what the processes saw.
pub fn capture_warnings() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A server running on `127.0.0.1:0`; `url` is where clients reach it.
pub struct TestServer {
    pub url: String,
    pub handle: JoinHandle<Result<strata_server::RunOutcome, strata_server::ServerError>>,
    pub events: broadcast::Sender<strata_server::ServerEvent>,
}

pub async fn start_server(config: RunConfig, out: &Path) -> TestServer {
    capture_warnings();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let (events, _) = broadcast::channel(4096);
    let mut options = strata_server::ServerOptions::new(config, out.to_path_buf(), torch_backend());
    options.events = Some(events.clone());
    let handle = tokio::spawn(strata_server::run(options, listener, std::future::pending()));
    TestServer { url, handle, events }
}

pub type ClientHandle = JoinHandle<Result<strata_client::ClientOutcome, strata_client::ClientError>>;

/// A real client daemon's options for partition index `index`, on the CPU.
pub fn client_options(url: &str, index: u32, cache: &Arc<strata_client::DataCache>) -> strata_client::ClientOptions {
    let mut options = strata_client::ClientOptions::new(url);
    options.requested_index = Some(index);
    options.device = "cpu".into();
    options.data_cache = Arc::clone(cache);
    options
}

/// Runs `config` to its end with three client daemons, every client evaluating as merged and
/// after training; returns the per-client rows and the outcome.
pub async fn run_three_clients(
    mut config: RunConfig,
) -> (Vec<strata_core::records::ClientRoundRecord>, strata_server::RunOutcome) {
    config.evaluation = strata_core::evaluation::EvaluationConfig::every_client();
    let out = tempfile::tempdir().expect("tempdir");
    let server = start_server(config, out.path()).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let clients: Vec<_> = (0..3).map(|i| spawn_client(&server.url, i, &cache)).collect();
    let outcome = server.handle.await.expect("server task").expect("run completes");
    for c in clients {
        c.await.expect("client task").expect("client ends cleanly");
    }
    (read_jsonl(&out.path().join("metrics.jsonl")), outcome)
}

/// Spawns a real client daemon for partition index `index`.
pub fn spawn_client(url: &str, index: u32, cache: &Arc<strata_client::DataCache>) -> ClientHandle {
    tokio::spawn(strata_client::run(client_options(url, index, cache), std::future::pending()))
}

/// Waits for the first server event that `pick` maps to something.
pub async fn next_event<T>(
    events: &mut broadcast::Receiver<ServerEvent>,
    mut pick: impl FnMut(&ServerEvent) -> Option<T>,
) -> T {
    loop {
        match events.recv().await {
            Ok(event) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => panic!("the server's events ended"),
        }
    }
}

pub type Rpc = pb::federation_client::FederationClient<tonic::transport::Channel>;

/// A client that speaks raw gRPC: it joins, polls and downloads like a real one, and sends
/// whatever result a test builds.
pub struct RawClient {
    pub rpc: Rpc,
    pub run_id: String,
    pub client_id: String,
    /// The session secret its join returned, sent with every call.
    pub session: String,
    /// Sent with every poll, as a real client does once its data is loaded; `None` says nothing.
    pub capabilities: Option<pb::ClientCapabilities>,
    /// The last task received: a poll waits for another one.
    last_task_id: String,
}

impl RawClient {
    /// Joins the server at `url` as partition index `index`.
    pub async fn join(url: &str, index: u32) -> Self {
        let mut rpc = Rpc::connect(url.to_string()).await.expect("connect");
        let client_id = uuid::Uuid::new_v4().to_string();
        let join = pb::JoinRequest {
            client_id: client_id.clone(),
            capabilities: None,
            requested_index: Some(index),
            host_id: String::new(),
            session: String::new(),
        };
        let reply = rpc.join(join).await.expect("join").into_inner();
        let (run_id, session) = (reply.run_id, reply.session);
        Self { rpc, run_id, client_id, session, capabilities: None, last_task_id: String::new() }
    }

    /// Polls until a task of `kind` arrives. Evaluation tasks on the way are answered (with no
    /// tensors, which is a valid evaluation result) so that the server does not wait on them.
    pub async fn wait_for(&mut self, kind: pb::TaskKind) -> pb::Task {
        loop {
            let poll = pb::PullTaskRequest {
                run_id: self.run_id.clone(),
                client_id: self.client_id.clone(),
                session: self.session.clone(),
                last_task_id: self.last_task_id.clone(),
                wait_ms: 1000,
                capabilities: self.capabilities.clone(),
            };
            let task = self.rpc.pull_task(poll).await.expect("poll").into_inner();
            if !task.task_id.is_empty() {
                self.last_task_id = task.task_id.clone();
            }
            if task.kind == kind as i32 {
                return task;
            }
            if task.kind == pb::TaskKind::Evaluate as i32 {
                let answer = result_parts(self.header(&task), TensorSet::default());
                self.push(answer).await.expect("an evaluation result is accepted");
            }
        }
    }

    /// A result header for `task` from this client, with no tensors yet.
    pub fn header(&self, task: &pb::Task) -> pb::ResultHeader {
        pb::ResultHeader {
            run_id: self.run_id.clone(),
            round: task.round,
            task_id: task.task_id.clone(),
            client_id: self.client_id.clone(),
            session: self.session.clone(),
            ..Default::default()
        }
    }

    /// Downloads the task's parameters (sent as f32).
    pub async fn download(&mut self, task_id: &str) -> TensorSet {
        self.download_decoded(task_id, Decoding::default()).await
    }

    /// Downloads the task's parameters, taking the encodings `decoding` allows.
    pub async fn download_decoded(&mut self, task_id: &str, decoding: Decoding) -> TensorSet {
        let request = pb::DownloadRequest {
            run_id: self.run_id.clone(),
            client_id: self.client_id.clone(),
            task_id: task_id.to_string(),
            session: self.session.clone(),
            resume_from_part: 0,
        };
        let mut stream = self.rpc.download_parameters(request).await.expect("download").into_inner();
        let Some(pb::ParameterPart { part: Some(pb::parameter_part::Part::Header(h)) }) =
            stream.message().await.expect("part")
        else {
            panic!("no header first");
        };
        let mut asm =
            Assembler::reusing(&h.tensors, h.total_bytes, AssemblyLimits::default(), None, decoding).expect("header");
        while let Some(part) = stream.message().await.expect("part") {
            let Some(pb::parameter_part::Part::Tensor(slice)) = part.part else { panic!("unexpected part") };
            asm.push(&slice).expect("slice");
        }
        asm.finish().expect("complete")
    }

    /// Sends one result stream; returns the server's verdict.
    pub async fn push(&mut self, parts: Vec<pb::ResultPart>) -> Result<pb::PushAck, tonic::Status> {
        self.rpc.push_result(tokio_stream::iter(parts)).await.map(tonic::Response::into_inner)
    }

    pub async fn heartbeat(&mut self) {
        self.try_heartbeat().await.expect("heartbeat");
    }

    async fn try_heartbeat(&mut self) -> Result<(), tonic::Status> {
        let beat = pb::HeartbeatRequest {
            run_id: self.run_id.clone(),
            client_id: self.client_id.clone(),
            session: self.session.clone(),
        };
        self.rpc.heartbeat(beat).await.map(drop)
    }

    /// Waits for `until`, heartbeating meanwhile so that the server does not take it for gone.
    /// A heartbeat that fails is not the test's concern: the server may stop between two
    /// checks of `until` (its run over), and `until` says how the run went.
    pub async fn alive_until<T>(&mut self, until: impl Future<Output = T>) -> T {
        tokio::pin!(until);
        loop {
            tokio::select! {
                out = &mut until => return out,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    let _ = self.try_heartbeat().await;
                }
            }
        }
    }
}

/// A copy of `set` with its tensors edited (renamed, reshaped, reordered, values changed).
pub fn edit_tensors(set: &TensorSet, edit: impl FnOnce(&mut Vec<NamedTensor>)) -> TensorSet {
    let mut tensors = set.clone().into_tensors();
    edit(&mut tensors);
    TensorSet::new(tensors).expect("distinct names")
}

/// A result stream: `header` (with the specs and size of `tensors` filled in), then the
/// tensors in slices of 16 KiB.
pub fn result_parts(mut header: pb::ResultHeader, tensors: TensorSet) -> Vec<pb::ResultPart> {
    header.tensors = tensor_specs(&tensors);
    header.total_bytes = tensors.byte_len() as u64;
    let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) };
    let slices = TensorSlices::new(Arc::new(tensors), 1 << 14)
        .map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Tensor(s)) });
    std::iter::once(first).chain(slices).collect()
}

/// A result stream: `header` (with `encoded`'s specs and size filled in), then its slices.
pub fn encoded_result_parts(mut header: pb::ResultHeader, encoded: Encoded) -> Vec<pb::ResultPart> {
    header.tensors = encoded.specs();
    header.total_bytes = encoded.total_bytes();
    let first = pb::ResultPart { part: Some(pb::result_part::Part::Header(header)) };
    let slices = TensorSlices::encoded(encoded, 1 << 14)
        .map(|s| pb::ResultPart { part: Some(pb::result_part::Part::Tensor(s)) });
    std::iter::once(first).chain(slices).collect()
}

/// A TCP proxy in front of a server, whose open connections a test can cut as a failing link
/// does (the sockets closed under both ends, mid-stream); connections made after a cut pass.
pub struct CutProxy {
    /// Where clients dial the server through the proxy.
    pub url: String,
    cuts: tokio::sync::watch::Sender<u64>,
    /// Bytes forwarded to the server and back, over every connection.
    pub upstream_bytes: Arc<AtomicU64>,
    pub downstream_bytes: Arc<AtomicU64>,
}

/// When a [`CutProxy`] cuts on its own: once, when the bytes forwarded one way reach this.
#[derive(Clone, Copy, Debug, Default)]
pub struct CutAt {
    pub upstream: Option<u64>,
    pub downstream: Option<u64>,
}

impl CutProxy {
    /// Proxies to `server_url` (`http://host:port`), cutting once as `at` says.
    pub async fn start(server_url: &str, at: CutAt) -> Self {
        let target = server_url.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let proxy =
            Self { url, cuts: cuts.clone(), upstream_bytes: Arc::clone(&up), downstream_bytes: Arc::clone(&down) };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                let mut cut = cuts.subscribe();
                let generation = *cut.borrow_and_update();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let upstream = pump(client_read, server_write, Arc::clone(&up), at.upstream, cuts.clone());
                let downstream = pump(server_read, client_write, Arc::clone(&down), at.downstream, cuts.clone());
                tokio::spawn(async move {
                    // Either side closing, or a cut after this connection opened, ends both.
                    tokio::select! {
                        _ = upstream => {}
                        _ = downstream => {}
                        _ = cut.wait_for(|g| *g > generation) => {}
                    }
                });
            }
        });
        proxy
    }

    /// Cuts every connection open now.
    pub fn cut(&self) {
        self.cuts.send_modify(|g| *g += 1);
    }
}

/// Copies one way, counting; the first time the count reaches `cut_at`, cuts (if nothing has).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: Arc<AtomicU64>,
    cut_at: Option<u64>,
    cuts: tokio::sync::watch::Sender<u64>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        let total = counted.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if cut_at.is_some_and(|at| total >= at) && *cuts.borrow() == 0 {
            cuts.send_replace(1);
        }
    }
}

/// Reads a JSON-lines file of records.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .expect("records file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// Writes a tiny MNIST-like IDX dataset (28×28, 10 classes) whose label is readable from the
/// image: class c lights up row 2c.
pub fn write_tiny_idx(dir: &Path, train: usize, test: usize) {
    fn write(dir: &Path, name: &str, n: usize, offset: usize) {
        let mut images = vec![0, 0, 8, 3];
        let mut labels = vec![0, 0, 8, 1];
        for header in [&mut images, &mut labels] {
            header.extend_from_slice(&(n as u32).to_be_bytes());
        }
        images.extend_from_slice(&28u32.to_be_bytes());
        images.extend_from_slice(&28u32.to_be_bytes());
        for i in 0..n {
            let class = (i + offset) % 10;
            let mut pixels = [0u8; 784];
            for col in 0..28 {
                pixels[2 * class * 28 + col] = 255;
                pixels[(i * 7 + col * 13) % 784] = pixels[(i * 7 + col * 13) % 784].max(60);
            }
            images.extend_from_slice(&pixels);
            labels.push(class as u8);
        }
        std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), images).expect("write images");
        std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), labels).expect("write labels");
    }
    write(dir, "train", train, 0);
    write(dir, "t10k", test, 3);
}
