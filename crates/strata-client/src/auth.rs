//! The client's token, sent as `authorization: Bearer <token>` metadata on every call.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::TokenError;

/// Adds the token to each call; without a token, calls go out as they are.
#[derive(Clone, Default)]
pub(crate) struct Bearer {
    value: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer").field("token", &self.value.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl Bearer {
    pub(crate) fn new(token: Option<&str>) -> Result<Self, TokenError> {
        let Some(token) = token else { return Ok(Self::default()) };
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(TokenError::NotMetadata)?;
        // Keeps the token out of HTTP/2 header compression tables, as for any credential.
        value.set_sensitive(true);
        Ok(Self { value: Some(value) })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.value {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_the_token_as_a_bearer_header() {
        let mut bearer = Bearer::new(Some("  strata_abc\n")).unwrap();
        let request = bearer.call(Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap().to_str().unwrap(), "Bearer strata_abc");
        assert!(!format!("{bearer:?}").contains("strata_abc"));

        let mut none = Bearer::new(None).unwrap();
        assert!(none.call(Request::new(())).unwrap().metadata().get("authorization").is_none());
    }

    #[test]
    fn unsendable_tokens_are_refused_up_front() {
        for token in ["", "   \n", "two words", "tökén"] {
            let err = Bearer::new(Some(token)).unwrap_err();
            let expected = if token.trim().is_empty() { "is empty" } else { "printable ASCII" };
            assert!(matches!(err, TokenError::Empty | TokenError::NotPrintable), "{token:?}: {err}");
            assert!(err.to_string().contains("client token") && err.to_string().contains(expected), "{token:?}: {err}");
        }
    }
}
