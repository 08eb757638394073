//! Why a held request or a resume failed.

use std::sync::Arc;
use std::time::Duration;

use super::VolumeState;

/// A held request that failed before any resume.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unresumed {
    /// `suspend_timeout` passed.
    #[error(
        "volume {volume:?} was suspended after a quorum failure ({cause}) and not resumed within suspend_timeout ({}s): the requests held meanwhile fail",
        timeout.as_secs()
    )]
    Timeout {
        /// The volume.
        volume: String,
        /// The failure that suspended it.
        cause: Arc<str>,
        /// Its `suspend_timeout`.
        timeout: Duration,
    },
    /// The server is shutting down.
    #[error(
        "volume {volume:?} was suspended after a quorum failure ({cause}) and the server is shutting down: the requests held meanwhile fail"
    )]
    ShuttingDown {
        /// The volume.
        volume: String,
        /// The failure that suspended it.
        cause: Arc<str>,
    },
}

/// Why a resume was refused.
#[derive(Debug, thiserror::Error)]
#[error("volume {volume:?} is {state}, not suspended: there is nothing to resume")]
pub struct NotSuspended {
    /// The volume.
    pub volume: String,
    /// Its state.
    pub state: VolumeState,
}
