//! The upload budget: how many bytes of results the server holds at once, across clients.
//!
//! Each training upload reserves its declared size before the server allocates room for it and
//! keeps it until the strategy has absorbed the update, so that a round of many large models
//! costs the server a bounded amount of memory: uploads beyond the budget wait (their streams
//! are not read, and HTTP/2 flow control holds the clients back) until earlier ones are folded in.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::Status;

/// Reservations are counted in units of this many bytes (a semaphore takes u32 counts).
const UNIT: u64 = 64 << 10;

#[derive(Clone, Debug)]
pub struct UploadBudget {
    permits: Arc<Semaphore>,
    units: u32,
}

impl UploadBudget {
    pub fn new(bytes: u64) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, u64::from(u32::MAX)) as u32;
        Self { permits: Arc::new(Semaphore::new(units as usize)), units }
    }

    /// The default: room for two models' uploads at once, and at least 256 MiB, so that small
    /// models never wait and a 1 GB model costs the server a few models' worth of memory.
    pub fn for_model(model_bytes: u64) -> Self {
        Self::new((2 * model_bytes).max(256 << 20))
    }

    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Waits for room for `bytes` until `deadline`. An upload larger than the whole budget
    /// waits for all of it and then goes alone.
    pub async fn reserve(&self, bytes: u64, deadline: Instant) -> Result<Option<OwnedSemaphorePermit>, Status> {
        if bytes == 0 {
            return Ok(None);
        }
        let units = bytes.div_ceil(UNIT).min(u64::from(self.units)) as u32;
        match tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_)) => Err(Status::unavailable("the server is shutting down")),
            Err(_) => Err(Status::resource_exhausted(format!(
                "the round's deadline passed while this upload of {bytes} bytes waited for room in the \
                 server's upload budget ({} bytes)",
                self.bytes()
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn uploads_beyond_the_budget_wait_for_room() {
        let budget = UploadBudget::new(10 * UNIT);
        let soon = || Instant::now() + Duration::from_millis(50);
        let first = budget.reserve(6 * UNIT, soon()).await.unwrap();
        let second = budget.reserve(4 * UNIT, soon()).await.unwrap();
        let refused = budget.reserve(1, soon()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("upload budget"), "{}", refused.message());
        drop(first);
        // Larger than the budget: waits for all of it, then goes.
        assert!(budget.reserve(100 * UNIT, soon()).await.is_err(), "the second still holds 4 units");
        drop(second);
        assert!(budget.reserve(100 * UNIT, soon()).await.unwrap().is_some());
        assert!(budget.reserve(0, soon()).await.unwrap().is_none());
    }

    #[test]
    fn the_default_holds_two_models_and_at_least_256_mib() {
        assert_eq!(UploadBudget::for_model(1 << 20).bytes(), 256 << 20);
        assert_eq!(UploadBudget::for_model(1 << 30).bytes(), 2 << 30);
    }
}
