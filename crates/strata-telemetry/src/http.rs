//! The operators' HTTP listener: `GET /metrics` (Prometheus text) and `GET /healthz`, and a
//! one-request HTTP client for probes (`strata health --http`) and tests, so that neither
//! needs curl in an image.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use prometheus_client::registry::Registry;

use crate::ListenError;
use crate::exposition::{Collect, registry, render};

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Serves `/metrics` from `source` and `/healthz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Collect>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(|| async { "strata: /metrics (Prometheus), /healthz\n" }))
        .with_state(Arc::new(registry(source)));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, PROMETHEUS_TEXT)], render(&registry))
}

/// Binds `addr` and serves it in the background; the listener stops when `shutdown` resolves.
/// Binding happens here so that a taken port is an error at start, not a log line later.
pub async fn spawn(
    addr: &str,
    source: Arc<dyn Collect>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<std::net::SocketAddr, ListenError> {
    let what = "metrics";
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ListenError::Bind { addr: addr.to_string(), what, source })?;
    let local = listener.local_addr().map_err(|source| ListenError::LocalAddr { what, source })?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, source, shutdown).await {
            tracing::warn!("metrics endpoint stopped: {e}");
        }
    });
    tracing::info!(addr = %local, "metrics on http://{local}/metrics");
    Ok(local)
}

/// A GET answered: the status code and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Why a probe's GET got no response.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("`{url}` is not an http:// URL")]
    NotHttp { url: String },
    #[error("cannot connect to {authority}: {source}")]
    Connect { authority: String, source: std::io::Error },
    /// Connected, then sending the request or reading the response failed.
    #[error("the exchange with {authority} failed: {source}")]
    Exchange { authority: String, source: std::io::Error },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered with a bad HTTP response: {source}")]
    Response { url: String, source: ResponseError },
}

/// What is wrong with an HTTP/1.1 response's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the response has no header end")]
    NoHeaderEnd,
    /// The status line, as received.
    #[error("bad status line `{0}`")]
    StatusLine(String),
    #[error("truncated chunked body")]
    TruncatedBody,
    #[error("bad chunk size `{size}`: {source}")]
    ChunkSize { size: String, source: std::num::ParseIntError },
    #[error("truncated chunk")]
    TruncatedChunk,
    #[error("chunk without its line end")]
    ChunkLineEnd,
}

/// `GET url` (plain `http://HOST:PORT/PATH` only), with a deadline over the whole exchange.
pub async fn get_once(url: &str, timeout: Duration) -> Result<Response, GetError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| GetError::NotHttp { url: url.to_string() })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream = TcpStream::connect(authority)
            .await
            .map_err(|source| GetError::Connect { authority: authority.to_string(), source })?;
        let failed = |source| GetError::Exchange { authority: authority.to_string(), source };
        let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(failed)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(failed)?;
        parse_response(&raw).map_err(|source| GetError::Response { url: url.to_string(), source })
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| GetError::Timeout { url: url.to_string(), timeout })?
}

/// Status line and body of an HTTP/1.1 response (plain or chunked body).
fn parse_response(raw: &[u8]) -> Result<Response, ResponseError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(ResponseError::NoHeaderEnd)?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ResponseError::StatusLine(status_line.to_string()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok(Response { status, body })
}

fn dechunk(mut body: &str) -> Result<String, ResponseError> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or(ResponseError::TruncatedBody)?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|source| ResponseError::ChunkSize { size: size.to_string(), source })?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or(ResponseError::TruncatedChunk)?;
        out.push_str(chunk);
        body = rest.get(size..).and_then(|r| r.strip_prefix("\r\n")).ok_or(ResponseError::ChunkLineEnd)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::exposition::{Counter, Exposition, find_sample};

    struct Rounds(Counter);

    impl Collect for Rounds {
        fn collect(&self, out: &mut Exposition<'_>) {
            out.counter("strata_rounds_completed_total", "Rounds completed.", self.0.get());
        }
    }

    #[tokio::test]
    async fn metrics_and_health_are_served() {
        let source = Arc::new(Rounds(Counter::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let addr = spawn("127.0.0.1:0", source.clone(), async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        let timeout = Duration::from_secs(5);
        let health = get_once(&format!("http://{addr}/healthz"), timeout).await.unwrap();
        assert_eq!(health, Response { status: 200, body: "ok\n".into() });
        source.0.add(2.0);
        let scraped = get_once(&format!("http://{addr}/metrics"), timeout).await.unwrap();
        assert_eq!(scraped.status, 200);
        assert_eq!(find_sample(&scraped.body, "strata_rounds_completed_total", &[]), Some(2.0));
        assert_eq!(get_once(&format!("http://{addr}/nothing"), timeout).await.unwrap().status, 404);
        let _ = stop_tx.send(());
    }

    #[tokio::test]
    async fn probes_say_what_went_wrong() {
        let e = get_once("https://localhost/healthz", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, GetError::NotHttp { .. }), "{e}");
        assert!(e.to_string().contains("not an http:// URL"), "{e}");
        // A port nobody listens on: bind one and drop it.
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let e = get_once(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, GetError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("cannot connect"), "{e}");
        // A listener that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz", silent.local_addr().unwrap());
        let e = get_once(&url, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, GetError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("did not answer"), "{e}");
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_at_start() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = spawn(&addr, Arc::new(Rounds(Counter::default())), std::future::pending()).await.unwrap_err();
        assert!(matches!(&e, ListenError::Bind { what: "metrics", .. }), "{e}");
        assert!(e.to_string().contains(&format!("cannot listen on {addr} for metrics")), "{e}");
    }

    #[test]
    fn malformed_responses_say_what_is_wrong() {
        let parsed = |raw: &[u8]| parse_response(raw).unwrap_err();
        assert_eq!(parsed(b"HTTP/1.1 200 OK\r\n"), ResponseError::NoHeaderEnd);
        assert_eq!(parsed(b"HTTP/1.1 OK\r\n\r\n"), ResponseError::StatusLine("HTTP/1.1 OK".into()));
        let chunked =
            |body: &str| parsed(format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{body}").as_bytes());
        assert_eq!(chunked("3"), ResponseError::TruncatedBody);
        let e = chunked("xyz\r\nabc\r\n0\r\n\r\n");
        assert!(matches!(&e, ResponseError::ChunkSize { size, .. } if size == "xyz"), "{e}");
        assert_eq!(chunked("9\r\nabc\r\n"), ResponseError::TruncatedChunk);
        assert_eq!(chunked("3\r\nabcde"), ResponseError::ChunkLineEnd);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), Response { status: 200, body: "abcde".into() });
    }
}
