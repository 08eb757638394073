//! The one bridge between tokio and the synchronous engine.
//!
//! Handlers must never block a tokio worker. An engine call that blocks
//! its caller until every child has answered goes through [`blocking`],
//! which runs it on tokio's blocking pool (`spawn_blocking`): those threads
//! are kept and reused, so no thread is created per request in the steady
//! state, and the async workers stay free to accept and parse. A blocking
//! call cannot be cancelled: if the client goes away, the request still
//! completes, so an acknowledged-or-not write is never left half-issued.
//!
//! Reads and writes go through [`started`] first: the engine starts them
//! without blocking ([`Volume::start_read`], [`Volume::start_write`]) and
//! the last child's answer completes them on the engine's own thread,
//! which fills a oneshot channel that the handler awaits. No thread of the
//! blocking pool is parked on such a request, and it costs one wake-up
//! fewer each way. When the engine says the rest of a request may block (a
//! repair, stale marks and their journal), that rest runs on the blocking
//! pool, as a blocking call would; when it cannot start without waiting
//! (an overlapping request holds its range, a journal record must come
//! first, a membership change holds the gate), the request is made as a
//! blocking call instead. The membership gate is held from the start to
//! the end either way, and a started request is no more cancellable than a
//! blocking one: it ends on the engine's threads whether anybody awaits it
//! or not.

use std::sync::Arc;

use quorum_core::{Completion, Volume, VolumeError, WouldBlock};

use crate::error::ApiError;
use crate::membership::VolumeEntry;

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

/// What a started engine request calls once with its completion.
pub type Done<T> = Box<dyn FnOnce(Completion<T>) + Send>;

/// How an engine request may be started without a blocking thread
/// ([`Volume::start_read`], [`Volume::start_write`]), given the volume and
/// the callback of its completion. It may be called more than once (a
/// request held by a suspension is started again after the resume).
pub type Start<'a, T> = &'a (dyn Fn(&Arc<Volume>, Done<T>) -> Result<(), WouldBlock> + Sync);

/// Runs an engine request on `entry`'s volume: started with `start`
/// (given the volume and the callback of its completion) without a
/// blocking thread where the engine can, else as the blocking `call` on
/// the blocking pool (see the module's documentation).
pub async fn started<T, B>(
    entry: &Arc<VolumeEntry>,
    start: Start<'_, T>,
    call: B,
) -> Result<Result<T, VolumeError>, ApiError>
where
    T: Send + 'static,
    B: FnOnce(&Volume) -> Result<T, VolumeError> + Send + 'static,
{
    if let Some(gate) = entry.try_gate_owned() {
        let volume = entry.volume();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let done: Done<T> = Box::new(move |completion| match completion {
            Completion::Done(result) => {
                drop(gate);
                let _ = tx.send(result);
            }
            Completion::Blocking(rest) => {
                runtime.spawn_blocking(move || {
                    let result = rest.run();
                    drop(gate);
                    let _ = tx.send(result);
                });
            }
        });
        if start(&volume, done).is_ok() {
            return rx.await.map_err(|_| {
                ApiError::Internal("an engine request ended without an answer".into())
            });
        }
    }
    let entry = entry.clone();
    blocking(move || entry.run(call)).await
}
