//! The gRPC health service (`grpc.health.v1`) and a probe for it (`strata health --grpc`).

use std::time::Duration;

pub use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
pub use tonic_health::server::HealthReporter;

use crate::ListenError;

/// The federation service's name, as health checks ask for it.
pub const FEDERATION: &str = "strata.v1.Federation";

/// A health service whose overall status ("") and `FEDERATION` start as NOT_SERVING.
pub async fn service() -> (HealthReporter, HealthServer<impl Health>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    set(&reporter, ServingStatus::NotServing).await;
    (reporter, service)
}

/// Sets both the overall status and the federation service's.
pub async fn set(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(FEDERATION, status).await;
}

/// Why a health probe got no status.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no health answer within {0:?}")]
    Timeout(Duration),
    /// The call failed: the service is unknown to the server (`NotFound`), or unreachable.
    #[error("health check failed: {:?}: {}", .0.code(), .0.message())]
    Failed(#[source] tonic::Status),
}

/// Asks a health service for `service`'s status ("" for the whole server) over `channel`.
pub async fn check(channel: tonic::transport::Channel, service: &str, timeout: Duration) -> Result<String, CheckError> {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest { service: service.to_string() });
    let reply = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| CheckError::Timeout(timeout))?
        .map_err(CheckError::Failed)?;
    let status = WireStatus::try_from(reply.into_inner().status).unwrap_or(WireStatus::Unknown);
    Ok(status.as_str_name().to_string())
}

/// Serves only the health service on `addr` (plain gRPC: for a daemon with no gRPC port of its
/// own, the client), in the background; binding fails here, not later.
pub async fn spawn(addr: &str) -> Result<(HealthReporter, std::net::SocketAddr), ListenError> {
    let what = "health";
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ListenError::Bind {
        addr: addr.to_string(),
        what,
        source,
    })?;
    let local = listener.local_addr().map_err(|source| ListenError::LocalAddr { what, source })?;
    let (reporter, service) = self::service().await;
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
            tracing::warn!("health service stopped: {e}");
        }
    });
    tracing::info!(addr = %local, "gRPC health service on {local}");
    Ok((reporter, local))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_probe_reads_what_the_reporter_sets() {
        let (reporter, addr) = spawn("127.0.0.1:0").await.unwrap();
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let timeout = Duration::from_secs(5);
        assert_eq!(check(channel.clone(), "", timeout).await.unwrap(), "NOT_SERVING");
        set(&reporter, ServingStatus::Serving).await;
        assert_eq!(check(channel.clone(), FEDERATION, timeout).await.unwrap(), "SERVING");
        let e = check(channel, "no.such.Service", timeout).await.unwrap_err();
        assert!(matches!(&e, CheckError::Failed(s) if s.code() == tonic::Code::NotFound), "{e}");
        assert!(e.to_string().contains("NotFound"), "{e}");
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_at_start() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = spawn(&addr).await.unwrap_err();
        assert!(matches!(&e, ListenError::Bind { what: "health", .. }), "{e}");
        assert!(e.to_string().contains(&format!("cannot listen on {addr} for health")), "{e}");
    }
}
