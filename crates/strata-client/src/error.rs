//! Why a client stopped: one variant per cause, with the typed error underneath where there
//! is one, so that a caller tells causes apart by matching, never by reading the message.

use strata_core::config_error::ConfigError;
use strata_proto::WireError;
use tonic::metadata::errors::InvalidMetadataValue;

use crate::data_cache::DataLoadError;
use crate::persist::PersistError;
use crate::personal_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server {server} unreachable after {seconds} s: {}", crate::tls::error_chain(.source))]
    Unreachable { server: String, seconds: u64, source: tonic::transport::Error },
    /// The server refused, in its own words: the status's message and the transport's causes.
    /// Kept as text because it is the server's message for a person; a program acts on the
    /// status's `ErrorReason` (see `strata_proto::reason`), never on this text.
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server runs another run than the one this client (or population) joined.
    #[error("the server now runs `{now}`, not the run `{joined}` this client joined")]
    RunChanged { now: String, joined: String },
    /// Shutdown came first: `before connecting`, `before joining`, `while joining`.
    #[error("stopped {0}")]
    Stopped(&'static str),
    /// Settings that cannot work.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The TLS handshake failed: a certificate the other side does not accept, or a wrong name.
    /// `reason` is text because it comes from rustls or, after the handshake, from an
    /// `io::Error` of which h2 keeps only the kind and the text.
    #[error("TLS with {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("gRPC call failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// What the server sent does not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("data: {0}")]
    Data(#[from] DataLoadError),
    /// The run's partition has no share for this client's index.
    #[error("data: the partition has {clients} clients, no index {index}")]
    NoShare { index: usize, clients: usize },
    /// The state directory (`--state-dir`) cannot be read or written.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// A population's personal states, kept in memory and spilled to disk.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Work on a blocking thread or a spawned task panicked (`what` names the work).
    #[error("{what} panicked: {source}")]
    Panicked { what: &'static str, source: tokio::task::JoinError },
    /// A semaphore the client waits on was closed (`what` names it): the process is ending.
    #[error("{what} closed")]
    Closed { what: &'static str, source: tokio::sync::AcquireError },
    #[error(transparent)]
    Torch(#[from] strata_torch::TorchError),
    /// A secure-aggregation stage this client could not (or would not) answer.
    #[error(transparent)]
    Secure(#[from] crate::secure::SecureError),
}

/// Settings that cannot work: fixed by changing the command line or the files it names.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("bad server URL `{server}`: {source}")]
    ServerUrl { server: String, source: tonic::transport::Error },
    #[error("`{server}` is https: give the CA that signed the server's certificate (--tls-ca)")]
    HttpsWithoutCa { server: String },
    #[error("TLS settings were given but `{server}` is not https: use https://")]
    TlsWithoutHttps { server: String },
    /// The CA, certificate or key cannot be used.
    #[error("TLS settings: {}", crate::tls::error_chain(.0))]
    Tls(#[source] tonic::transport::Error),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the state directory holds client index {saved}, not the {requested} asked for")]
    StateIndex { saved: u32, requested: u32 },
    #[error("a population needs at least one client")]
    NoClients,
    #[error(
        "the server's federation has {clients} clients (indices 0..{clients}); this population would take indices {first}..{last}"
    )]
    PopulationRange { clients: u32, first: u32, last: u64 },
    #[error("cannot make a personal-state directory: {0}")]
    PersonalDir(#[source] std::io::Error),
}

/// Why the client token cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the client token is empty")]
    Empty,
    #[error("the client token must be printable ASCII without spaces (as `strata token new` prints it)")]
    NotPrintable,
    #[error("the client token cannot be sent as gRPC metadata")]
    NotMetadata(#[source] InvalidMetadataValue),
}

/// What the server sent that does not follow the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("empty parameter stream")]
    EmptyStream,
    #[error("parameter stream did not start with its header")]
    NoHeader,
    #[error("unexpected part in a parameter stream")]
    UnexpectedPart,
    #[error("a resumed download's header differs from the interrupted one's")]
    ResumedHeaderChanged,
    #[error("parameter header: {0}")]
    ParameterHeader(#[source] WireError),
    #[error("parameters: {0}")]
    Parameters(#[source] WireError),
    /// The run's config, as the join reply carries it.
    #[error("server config: {0}")]
    ServerConfig(#[source] ConfigError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::{ClientOptions, PopulationOptions};

    /// A server URL nobody listens on: a port bound and let go.
    fn absent_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn settings_that_cannot_work_are_refused_before_dialling() {
        let err = crate::connect("not a url", None, None, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, ClientError::Settings(SettingsError::ServerUrl { .. })), "{err}");
        assert!(err.to_string().contains("bad server URL `not a url`"), "{err}");
        let err = crate::connect(&absent_server(), None, Some(" "), Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, ClientError::Settings(SettingsError::Token(TokenError::Empty))), "{err}");
        let none = PopulationOptions::new(absent_server(), 0);
        let err = crate::run_population(none, std::future::pending()).await.unwrap_err();
        assert!(matches!(err, ClientError::Settings(SettingsError::NoClients)), "{err}");
    }

    #[tokio::test]
    async fn a_state_directory_that_does_not_fit_is_refused_before_dialling() {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::persist::Identity {
            client_id: Uuid::from_u128(1),
            index: 3,
            run_id: "run".into(),
            session: String::new(),
            example_ledger: Default::default(),
        };
        std::fs::write(dir.path().join("client.json"), serde_json::to_vec(&identity).unwrap()).unwrap();
        let mut options = ClientOptions::new(absent_server());
        options.state_dir = Some(dir.path().to_path_buf());
        options.requested_index = Some(4);
        let err = crate::run(options, std::future::pending()).await.unwrap_err();
        assert!(matches!(err, ClientError::Settings(SettingsError::StateIndex { saved: 3, requested: 4 })), "{err}");
        assert!(err.to_string().contains("client index 3"), "{err}");

        std::fs::write(dir.path().join("client.json"), "{").unwrap();
        let mut options = ClientOptions::new(absent_server());
        options.state_dir = Some(dir.path().to_path_buf());
        let err = crate::run(options, std::future::pending()).await.unwrap_err();
        assert!(matches!(err, ClientError::Persist(PersistError::NotState { .. })), "{err}");
        assert!(err.to_string().contains("not a Strata client state"), "{err}");
    }

    #[tokio::test]
    async fn a_shutdown_or_an_absent_server_ends_connecting() {
        let err = crate::run(ClientOptions::new(absent_server()), async {}).await.unwrap_err();
        assert!(matches!(err, ClientError::Stopped("before connecting")), "{err}");
        let err = crate::connect(&absent_server(), None, None, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        // The transport's causes are in the message, not only tonic's "transport error".
        assert!(err.to_string().contains("unreachable after 0 s: transport error: "), "{err}");
    }

    #[test]
    fn messages_keep_their_category() {
        let err = ClientError::from(ProtocolError::NoHeader);
        assert_eq!(err.to_string(), "protocol error: parameter stream did not start with its header");
        let err = ClientError::NoShare { index: 7, clients: 5 };
        assert_eq!(err.to_string(), "data: the partition has 5 clients, no index 7");
    }
}
