//! The server's TLS settings (rustls through tonic), and the warning for plain TCP off loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A slow or silent peer gives up its handshake after this long (handshakes run concurrently).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// PEM files' contents, as the server was given them.
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// When set, clients must present a certificate signed by this CA (mutual TLS); others
    /// are refused during the handshake, before any RPC runs.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mutual", &self.client_ca_pem.is_some()).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Checks the PEMs hold what they should (tonic would skip a bad CA silently) and builds
    /// tonic's settings.
    pub(crate) fn to_tonic(&self) -> Result<ServerTlsConfig, TlsError> {
        expect_pem(&self.cert_pem, "CERTIFICATE", "the server certificate (--tls-cert)")?;
        expect_pem(&self.key_pem, "PRIVATE KEY", "the server key (--tls-key)")?;
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca_pem {
            expect_pem(ca, "CERTIFICATE", "the client CA (--tls-client-ca)")?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        Ok(config)
    }
}

/// Why the server's TLS settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file given for a certificate or key is not PEM of that kind.
    #[error("{what} is not PEM with a `{label}` block")]
    NotPem { what: &'static str, label: &'static str },
    /// rustls refused the certificate or key (the error and its causes on one line).
    #[error("TLS settings: {0}")]
    Rustls(String),
}

/// A file given for a certificate or key must at least be PEM of that kind.
fn expect_pem(pem: &[u8], label: &'static str, what: &'static str) -> Result<(), TlsError> {
    let text = String::from_utf8_lossy(pem);
    // "PRIVATE KEY" also matches "EC PRIVATE KEY" and "RSA PRIVATE KEY", which rustls reads.
    let found = text.lines().any(|l| l.starts_with("-----BEGIN ") && l.contains(label));
    if found { Ok(()) } else { Err(TlsError::NotPem { what, label }) }
}

/// Plain TCP is fine on loopback (tests, `strata simulate`); anywhere else it carries the
/// model and any tokens readable to the network.
pub(crate) fn plaintext_warning(addr: SocketAddr, tls: bool) -> Option<String> {
    (!tls && !addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr} WITHOUT TLS: parameters, results and client tokens cross the network \
             in clear text, and clients cannot tell this server from another; pass --tls-cert and --tls-key \
             (`strata certs` makes a local CA and certificates)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_for_plain_tcp_off_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(plaintext_warning(addr("127.0.0.1:50051"), false).is_none());
        assert!(plaintext_warning(addr("[::1]:50051"), false).is_none());
        assert!(plaintext_warning(addr("0.0.0.0:50051"), true).is_none());
        let warning = plaintext_warning(addr("0.0.0.0:50051"), false).unwrap();
        assert!(warning.contains("0.0.0.0:50051") && warning.contains("--tls-cert"), "{warning}");
        assert!(plaintext_warning(addr("[::]:50051"), false).is_some());
    }

    #[test]
    fn files_that_are_not_the_right_pem_are_named() {
        let pki = strata_security::certs::generate(&["localhost".into()], 0).unwrap();
        let good = ServerTls {
            cert_pem: pki.server.cert_pem.clone().into_bytes(),
            key_pem: pki.server.key_pem.clone().into_bytes(),
            client_ca_pem: Some(pki.ca.cert_pem.clone().into_bytes()),
        };
        assert!(good.to_tonic().is_ok());
        let swapped = ServerTls { cert_pem: good.key_pem.clone(), key_pem: good.cert_pem.clone(), ..good.clone() };
        assert!(swapped.to_tonic().unwrap_err().to_string().contains("--tls-cert"));
        let key_as_ca = ServerTls { client_ca_pem: Some(good.key_pem.clone()), ..good.clone() };
        assert!(key_as_ca.to_tonic().unwrap_err().to_string().contains("--tls-client-ca"));
        let empty_key = ServerTls { key_pem: Vec::new(), ..good };
        assert!(empty_key.to_tonic().unwrap_err().to_string().contains("--tls-key"));
    }
}
