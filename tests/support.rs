//! Helpers for end-to-end tests: a real server on a loopback port and real clients.

use std::path::Path;
use std::sync::Arc;

use strata_core::config::{DatasetKind, RunConfig, SyntheticConfig};
use strata_core::partition::PartitionSpec;
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

/// A server running on `127.0.0.1:0`; `url` is where clients reach it.
pub struct TestServer {
    pub url: String,
    pub handle: JoinHandle<Result<strata_server::RunOutcome, strata_server::ServerError>>,
    pub events: broadcast::Sender<strata_server::ServerEvent>,
}

pub async fn start_server(config: RunConfig, out: &Path) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let (events, _) = broadcast::channel(4096);
    let mut options = strata_server::ServerOptions::new(config, out.to_path_buf());
    options.events = Some(events.clone());
    let handle = tokio::spawn(strata_server::run(options, listener, std::future::pending()));
    TestServer { url, handle, events }
}

/// Spawns a real client daemon for partition index `index`.
pub fn spawn_client(
    url: &str,
    index: u32,
    cache: &Arc<strata_client::DataCache>,
) -> JoinHandle<Result<strata_client::ClientOutcome, strata_client::ClientError>> {
    let mut options = strata_client::ClientOptions::new(url);
    options.requested_index = Some(index);
    options.device = "cpu".into();
    options.data_cache = Arc::clone(cache);
    tokio::spawn(strata_client::run(options, std::future::pending()))
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
