//! A call to a method this server does not have gets `UNIMPLEMENTED` from tonic with an empty
//! message; this says what the server serves instead, so that a client written from the proto
//! against another version reads why.

use tonic::codegen::http::{HeaderValue, Response};

/// What an `UNIMPLEMENTED` without a message says.
const SERVES: &str = "no such method on this server: it serves strata.v1.Federation (see proto/strata/v1) \
                      and grpc.health.v1.Health";

/// Adds [`SERVES`] to an `UNIMPLEMENTED` response that carries no message; leaves others alone.
pub(crate) fn explain<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let unimplemented = headers.get("grpc-status").is_some_and(|s| s == "12");
    if unimplemented && headers.get("grpc-message").is_none_or(|m| m.is_empty()) {
        headers.insert("grpc-message", HeaderValue::from_static(SERVES));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_unimplemented_gets_the_explanation() {
        let with = |status: &'static str, message: Option<&'static str>| {
            let mut r = Response::new(());
            r.headers_mut().insert("grpc-status", HeaderValue::from_static(status));
            if let Some(m) = message {
                r.headers_mut().insert("grpc-message", HeaderValue::from_static(m));
            }
            explain(r).headers().get("grpc-message").map(|m| m.to_str().unwrap_or_default().to_string())
        };
        assert_eq!(with("12", None).as_deref(), Some(SERVES));
        assert_eq!(with("12", Some("")).as_deref(), Some(SERVES));
        assert_eq!(with("12", Some("its own")).as_deref(), Some("its own"));
        assert_eq!(with("3", None), None);
    }
}
