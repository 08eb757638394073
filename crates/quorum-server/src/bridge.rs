//! The one bridge between tokio and the synchronous engine.
//!
//! A volume request blocks its caller until every child has answered (the
//! children work on their own worker threads). Handlers must never block a
//! tokio worker, so every engine call goes through [`blocking`], which runs
//! it on tokio's blocking pool (`spawn_blocking`): those threads are kept and
//! reused, so no thread is created per request in the steady state, and the
//! async workers stay free to accept and parse. A blocking call cannot be
//! cancelled: if the client goes away, the request still completes, so an
//! acknowledged-or-not write is never left half-issued.

use crate::error::ApiError;

/// Runs `f` (an engine call) off the async workers and returns its result.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("an engine call panicked or was cancelled: {e}")))
}
