//! Refusals the other side must act on, with their reason in the status details
//! (google.rpc.ErrorInfo), not in the message a person reads.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::pb::ErrorReason;

/// The ErrorInfo domain of Strata's reasons.
pub const DOMAIN: &str = "strata.v1";

/// A status with `code` and `message` that carries `reason` for programs.
pub fn status(code: Code, message: impl Into<String>, reason: ErrorReason) -> Status {
    let details = ErrorDetails::with_error_info(reason.as_str_name(), DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
}

/// The reason a status carries, if it carries one of Strata's.
pub fn of(status: &Status) -> Option<ErrorReason> {
    let info = status.get_details_error_info()?;
    if info.domain != DOMAIN {
        return None;
    }
    ErrorReason::from_str_name(&info.reason).filter(|r| *r != ErrorReason::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_survives_the_status_and_the_message_does_not_matter() {
        let s = status(Code::PermissionDenied, "anything at all", ErrorReason::NotJoined);
        assert_eq!(of(&s), Some(ErrorReason::NotJoined));
        assert_eq!(s.message(), "anything at all");
        // Through the wire form (grpc-status-details-bin) and back.
        let http = s.into_http::<tonic::body::Body>();
        let back = Status::from_header_map(http.headers()).expect("a status");
        assert_eq!(of(&back), Some(ErrorReason::NotJoined));
    }

    #[test]
    fn a_plain_status_or_another_domain_has_no_reason() {
        assert_eq!(of(&Status::permission_denied("client x has not joined this run")), None);
        let other =
            ErrorDetails::with_error_info("ERROR_REASON_NOT_JOINED", "elsewhere", std::collections::HashMap::new());
        assert_eq!(of(&Status::with_error_details(Code::PermissionDenied, "m", other)), None);
    }
}
