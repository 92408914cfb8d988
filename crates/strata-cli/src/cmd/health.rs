//! `strata health`: a probe for containers and scripts. Exits 0 when the target is serving.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use super::read_pem;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["grpc", "http"]))]
pub struct Args {
    /// Ask a gRPC health service (grpc.health.v1): the server's port, or a client's --health-listen.
    #[arg(long, value_name = "URL")]
    grpc: Option<String>,
    /// GET an HTTP health endpoint (a --metrics-listen address's /healthz).
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// The service to ask about over gRPC ("" for the whole process).
    #[arg(long, default_value = "")]
    service: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// The CA of the server's certificate (PEM), for an https:// URL.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), for a server that requires one.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name to check the server's certificate against (default: the URL's host).
    #[arg(long, requires = "tls_ca")]
    tls_server_name: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    if let Some(url) = &args.http {
        let response = strata_telemetry::http::get_once(url, timeout).await.map_err(anyhow::Error::msg)?;
        if response.status != 200 {
            bail!("{url} answered {}: {}", response.status, response.body.trim());
        }
        println!("{}", response.body.trim());
        return Ok(());
    }
    let url = args.grpc.as_deref().unwrap_or_default();
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad URL `{url}`"))?
        .connect_timeout(timeout);
    if let Some(ca) = &args.tls_ca {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read_pem(ca, "--tls-ca")?));
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read_pem(cert, "--tls-cert")?,
                read_pem(key, "--tls-key")?,
            ));
        }
        if let Some(name) = &args.tls_server_name {
            tls = tls.domain_name(name);
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("cannot reach {url}"))?;
    let status = strata_telemetry::health::check(channel, &args.service, timeout).await.map_err(anyhow::Error::msg)?;
    println!("{status}");
    if status != "SERVING" {
        bail!("{url} is {status}");
    }
    Ok(())
}
