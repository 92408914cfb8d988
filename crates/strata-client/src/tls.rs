//! The client's TLS settings (rustls through tonic) and telling a TLS failure from a server
//! that is not up yet.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{ClientError, SettingsError};

/// PEM files' contents, as the client was given them.
#[derive(Clone)]
pub struct ClientTls {
    /// The CA that signed the server's certificate; the only one trusted.
    pub ca_pem: Vec<u8>,
    /// The client's own certificate and key, for a server that requires mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server's certificate against (default: the URL's host).
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Applies `tls` to the endpoint for `server`; the URL's scheme must agree with it, since
/// tonic would otherwise silently dial plain TCP (http) or fail late (https without TLS).
/// Also what `strata health --grpc` dials with.
pub fn configure(endpoint: Endpoint, server: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    let https = endpoint.uri().scheme_str() == Some("https");
    match (tls, https) {
        (None, false) => Ok(endpoint),
        (None, true) => Err(SettingsError::HttpsWithoutCa { server: server.to_string() }.into()),
        (Some(_), false) => Err(SettingsError::TlsWithoutHttps { server: server.to_string() }.into()),
        (Some(tls), true) => {
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &tls.domain {
                config = config.domain_name(domain.clone());
            }
            Ok(endpoint.tls_config(config).map_err(SettingsError::Tls)?)
        }
    }
}

/// The TLS failure in an error's causes, if any: a certificate problem does not go away by
/// retrying, unlike a server that is still starting. Only meaningful on a TLS connection.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // tokio-rustls wraps rustls' error in an io::Error, whose `source` skips it.
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(tls.to_string());
            }
            // An alert that arrives after the handshake (a TLS 1.3 server checks the client's
            // certificate then) reaches us through h2, which keeps only the io::Error's kind
            // and text. On a TLS connection, invalid data at that level is TLS.
            if io.kind() == std::io::ErrorKind::InvalidData {
                return Some(io.to_string());
            }
        }
        next = e.source();
    }
    None
}

/// An error and its causes on one line (tonic's own message alone says "transport error").
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let cause = e.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> ClientTls {
        ClientTls { ca_pem: b"-----BEGIN CERTIFICATE-----\n".to_vec(), identity: None, domain: None }
    }

    #[test]
    fn the_scheme_must_agree_with_the_settings() {
        let endpoint = |url: &'static str| Endpoint::from_static(url);
        assert!(configure(endpoint("http://127.0.0.1:1"), "http://127.0.0.1:1", None).is_ok());
        let err = configure(endpoint("https://localhost:1"), "https://localhost:1", None).unwrap_err();
        assert!(matches!(err, ClientError::Settings(SettingsError::HttpsWithoutCa { .. })), "{err}");
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        let err = configure(endpoint("http://localhost:1"), "http://localhost:1", Some(&tls())).unwrap_err();
        assert!(matches!(err, ClientError::Settings(SettingsError::TlsWithoutHttps { .. })), "{err}");
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn finds_a_rustls_error_behind_an_io_error() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(tls_failure(&io).is_some());
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert!(tls_failure(&refused).is_none());
        let alert = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: DecryptError");
        assert_eq!(tls_failure(&alert).as_deref(), Some("received fatal alert: DecryptError"));
    }
}
