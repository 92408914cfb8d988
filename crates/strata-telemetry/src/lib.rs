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
