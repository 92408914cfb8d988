//! `strata health`: a probe for containers and scripts. Exits 0 when the target is serving.

use std::time::Duration;

use anyhow::{Context, bail};

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
    // For an https:// URL.
    #[command(flatten)]
    tls: super::client_tls::ClientTlsArgs,
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
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad URL `{url}`"))?
        .connect_timeout(timeout);
    let endpoint = strata_client::configure_endpoint(endpoint, url, args.tls.load()?.as_ref())?;
    let channel = endpoint.connect().await.with_context(|| format!("cannot reach {url}"))?;
    let status = strata_telemetry::health::check(channel, &args.service, timeout).await.map_err(anyhow::Error::msg)?;
    println!("{status}");
    if status != "SERVING" {
        bail!("{url} is {status}");
    }
    Ok(())
}
