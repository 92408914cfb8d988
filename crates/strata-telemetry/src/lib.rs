//! What operators watch: a Prometheus endpoint and a health check over plain HTTP, and the
//! gRPC health service (`grpc.health.v1`), for the server and the client daemons alike.
//!
//! # Layout
//! - [`exposition`]: metric values and the Prometheus text format they are written in.
//! - [`http`]: the HTTP listener (`/metrics`, `/healthz`) and a one-request client for probes.
//! - [`health`]: the gRPC health service and its probe.

pub mod exposition;
pub mod health;
pub mod http;

pub use exposition::{Collect, Counter, Exposition, Gauge};

/// Why a listener (`/metrics` and `/healthz`, or the gRPC health service) did not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind { addr: String, what: &'static str, source: std::io::Error },
    #[error("cannot read the address {what} listens on: {source}")]
    LocalAddr { what: &'static str, source: std::io::Error },
}
