//! The server-wide budget of buffered request bytes (`max_buffered_bytes`).
//!
//! Memory is otherwise concurrency × `max_request_bytes`: 64 uploads of
//! 64 MiB would hold 4 GiB. Every request body and every read buffer takes
//! its bytes from this budget before it is filled and gives them back when
//! it is dropped; a request that finds no room waits for it until its
//! deadline (`body_timeout`), then gets 503 `busy`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::ApiError;

/// Bytes are counted in units of this size (a semaphore takes at most
/// `u32::MAX` permits at once).
const UNIT: u64 = 1024;

/// The bytes that requests may buffer at once.
#[derive(Debug, Clone)]
pub struct Budget {
    room: Arc<Semaphore>,
    total: u64,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Budget {
        let units = usize::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            room: Arc::new(Semaphore::new(units)),
            total: bytes,
        }
    }

    /// Takes `bytes`, waiting for room until `deadline`.
    ///
    /// # Errors
    /// [`ApiError::Busy`] when there is no room by then.
    pub async fn reserve(&self, bytes: u64, deadline: Instant) -> Result<Reservation, ApiError> {
        let mut reservation = Reservation { permit: None };
        self.grow(&mut reservation, bytes, deadline).await?;
        Ok(reservation)
    }

    /// Adds `bytes` to `reservation`, waiting for room until `deadline`.
    ///
    /// # Errors
    /// [`ApiError::Busy`] when there is no room by then.
    pub async fn grow(
        &self,
        reservation: &mut Reservation,
        bytes: u64,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        if bytes == 0 {
            return Ok(());
        }
        let units = u32::try_from(bytes.div_ceil(UNIT)).map_err(|_| self.busy(bytes))?;
        let acquired =
            tokio::time::timeout_at(deadline, self.room.clone().acquire_many_owned(units))
                .await
                .map_err(|_| self.busy(bytes))?
                .map_err(|_| ApiError::Internal("the request budget is closed".into()))?;
        match &mut reservation.permit {
            Some(permit) => permit.merge(acquired),
            None => reservation.permit = Some(acquired),
        }
        Ok(())
    }

    fn busy(&self, bytes: u64) -> ApiError {
        ApiError::Busy(format!(
            "the server is buffering its limit of {} bytes (max_buffered_bytes) and found no room for {bytes} more in time; try again",
            self.total
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn room_is_given_back_and_waiting_is_bounded() {
        let budget = Budget::new(8 * UNIT);
        let soon = || Instant::now() + Duration::from_millis(50);
        let mut first = budget.reserve(5 * UNIT, soon()).await.expect("room");
        budget
            .grow(&mut first, 3 * UNIT, soon())
            .await
            .expect("room");
        let refused = budget.reserve(1, soon()).await.expect_err("no room");
        assert!(matches!(refused, ApiError::Busy(_)), "{refused}");
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move {
                budget
                    .reserve(4 * UNIT, Instant::now() + Duration::from_secs(5))
                    .await
            }
        });
        // On this single-threaded runtime, yielding runs the task until it
        // waits for room; it cannot have any yet.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "it got room that was taken");
        drop(first);
        waiting.await.expect("join").expect("room after the drop");
    }
}
