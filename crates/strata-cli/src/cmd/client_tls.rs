//! The TLS flags of everything that dials a Strata server: `client` and `health --grpc`.

use std::path::PathBuf;

use super::read_pem;

#[derive(clap::Args)]
pub struct ClientTlsArgs {
    /// The CA that signed the server's certificate (PEM); the only one trusted.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that requires client certificates.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name to check the server's certificate against (default: the URL's host).
    #[arg(long, requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The files' contents; `None` without --tls-ca (plain TCP).
    pub fn load(&self) -> anyhow::Result<Option<strata_client::ClientTls>> {
        let Some(ca) = &self.tls_ca else { return Ok(None) };
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((read_pem(cert, "--tls-cert")?, read_pem(key, "--tls-key")?)),
            _ => None,
        };
        Ok(Some(strata_client::ClientTls {
            ca_pem: read_pem(ca, "--tls-ca")?,
            identity,
            domain: self.tls_server_name.clone(),
        }))
    }
}
