//! Client tokens on every call: a tonic interceptor that wants `authorization: Bearer <token>`
//! and checks it against the tokens file (`strata_security::TokenStore`, re-read on change).
//!
//! It runs before the handler, once per call (streams included), so a revoked token is
//! refused at its next call, whatever the call is.

use std::sync::Arc;

use strata_security::{Refusal, TokenStore};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The label of the token a call came with, for handlers that want to log who called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLabel(pub String);

/// Checks tokens when the server has a tokens file; lets every call through otherwise.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenCheck {
    store: Option<Arc<TokenStore>>,
}

impl TokenCheck {
    pub(crate) fn new(store: Option<Arc<TokenStore>>) -> Self {
        Self { store }
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(store) = &self.store else { return Ok(request) };
        let token = bearer_token(&request)?;
        match store.check(token) {
            Ok(label) => {
                request.extensions_mut().insert(TokenLabel(label));
                Ok(request)
            }
            Err(refusal @ Refusal::Unknown) => {
                Err(Status::unauthenticated(format!("{refusal}: ask the server's operator for a valid token")))
            }
            Err(refusal @ Refusal::FileUnusable) => Err(Status::unauthenticated(refusal.to_string())),
        }
    }
}

/// Off loopback, a server that checks neither tokens nor client certificates lets anyone who
/// reaches its port join the federation and send updates.
pub(crate) fn open_door_warning(addr: std::net::SocketAddr, tokens: bool, mutual_tls: bool) -> Option<String> {
    (!tokens && !mutual_tls && !addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr} WITHOUT client authentication: anyone who reaches this port can join \
             and send updates; pass --tokens (`strata token new`) and/or --tls-client-ca"
        )
    })
}

/// The token of an `authorization: Bearer <token>` header, with errors a person can act on.
fn bearer_token<T>(request: &Request<T>) -> Result<&str, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Err(Status::unauthenticated(
            "this server requires a client token: send `authorization: Bearer <token>` \
             (strata client --token-file PATH)",
        ));
    };
    let malformed = || Status::unauthenticated("the `authorization` header must be `Bearer <token>`");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_security::token_file::line_for;
    use tonic::Code;

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn checks_the_bearer_token_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let token = strata_security::new_token();
        std::fs::write(&path, line_for(&token, "alice")).unwrap();
        let mut check = TokenCheck::new(Some(Arc::new(TokenStore::open(&path).unwrap())));

        let ok = check.call(request(Some(&format!("Bearer {token}")))).unwrap();
        assert_eq!(ok.extensions().get::<TokenLabel>(), Some(&TokenLabel("alice".into())));
        assert!(check.call(request(Some(&format!("bearer  {token}")))).is_ok());

        for (header, needle) in [
            (None, "requires a client token"),
            (Some(token.clone()), "must be `Bearer <token>`"),
            (Some(format!("Basic {token}")), "must be `Bearer <token>`"),
            (Some("Bearer ".to_string()), "must be `Bearer <token>`"),
            (Some("Bearer strata_0000".to_string()), "not in the server's tokens file"),
        ] {
            let status = check.call(request(header.as_deref())).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
            assert!(status.message().contains(needle), "{header:?}: {}", status.message());
            assert!(!status.message().contains(&token[7..]), "a refusal must not echo the token");
        }
    }

    #[test]
    fn warns_when_nobody_is_authenticated_off_loopback() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(open_door_warning(addr("127.0.0.1:1"), false, false).is_none());
        assert!(open_door_warning(addr("0.0.0.0:1"), true, false).is_none());
        assert!(open_door_warning(addr("0.0.0.0:1"), false, true).is_none());
        let warning = open_door_warning(addr("0.0.0.0:1"), false, false).unwrap();
        assert!(warning.contains("--tokens") && warning.contains("--tls-client-ca"), "{warning}");
    }

    #[test]
    fn without_a_tokens_file_every_call_passes() {
        let mut check = TokenCheck::new(None);
        assert!(check.call(request(None)).is_ok());
    }
}
