//! One module per subcommand: each holds its clap `Args` and a `run` that wires libraries.

mod bench;
mod certs;
mod client;
mod client_tls;
mod health;
mod partition;
mod run_args;
mod server;
mod simulate;
mod token;

pub use run_args::RunArgs;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Run the aggregation server.
    Server(server::Args),
    /// Run a client daemon that joins a server.
    Client(client::Args),
    /// Run a server and N clients in one process, over loopback gRPC.
    Simulate(simulate::Args),
    /// Run every cell (method × split × seed) of a bench spec, resumably, and tabulate them.
    Bench(bench::Args),
    /// Print how a split assigns labels to clients, and draw it as a heatmap.
    Partition(partition::Args),
    /// Make a CA, a server certificate and client certificates for a local deployment.
    Certs(certs::Args),
    /// Make client tokens for a server's --tokens file.
    Token(token::Args),
    /// Probe a server's or client's health (gRPC health service or HTTP /healthz); exits 0 when serving.
    Health(health::Args),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Command {
    /// A simulation on a terminal shows progress bars; info logs would tear them.
    pub fn quiet_by_default(&self) -> bool {
        use std::io::IsTerminal;
        matches!(self, Command::Simulate(_) | Command::Bench(_)) && std::io::stderr().is_terminal()
    }
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => server::run(args).await,
        Command::Client(args) => client::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Partition(args) => partition::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Token(args) => token::run(args),
        Command::Health(args) => health::run(args).await,
    }
}

/// Reads a PEM file named by a flag, saying which flag if it cannot.
fn read_pem(path: &std::path::Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
}

pub fn init_tracing(format: LogFormat, quiet: bool) {
    let default = if quiet { "warn" } else { "info,h2=warn,tonic=warn,hyper=warn,tower=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
