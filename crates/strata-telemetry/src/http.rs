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
) -> Result<std::net::SocketAddr, String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
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

/// `GET url` (plain `http://HOST:PORT/PATH` only), with a deadline over the whole exchange.
pub async fn get_once(url: &str, timeout: Duration) -> Result<Response, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream =
            TcpStream::connect(authority).await.map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        parse_response(&raw)
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("{url} did not answer within {timeout:?}"))?
}

/// Status line and body of an HTTP/1.1 response (plain or chunked body).
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("the response has no header end")?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok(Response { status, body })
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("truncated chunked body")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|e| format!("bad chunk size `{size}`: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        out.push_str(chunk);
        body = rest.get(size..).and_then(|r| r.strip_prefix("\r\n")).ok_or("chunk without its line end")?;
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
        assert!(e.contains("not an http:// URL"), "{e}");
        // A port nobody listens on: bind one and drop it.
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let e = get_once(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(2)).await.unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), Response { status: 200, body: "abcde".into() });
    }
}
