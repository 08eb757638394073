//! The background jobs of a volume (scrubs and the resync), as the API,
//! metrics and events name them.

use strum::{Display, EnumString, IntoStaticStr, VariantArray};

/// The kind of a job; its one string form is `scrub` or `resync`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    /// Reads the whole volume and votes, repairing if asked.
    Scrub,
    /// Copies the voted data onto stale and syncing children.
    Resync,
}

/// The state of a job; its one string form is `running`, `idle`, ...
/// (saved in the server's job file with the same form).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum JobState {
    /// Working (or waiting to resume after a restart).
    Running,
    /// Waiting for work (the resync, when nothing is stale).
    Idle,
    /// Went through the whole volume.
    Completed,
    /// Cancelled by a client.
    Cancelled,
    /// Stopped by an error (the volume could not be read).
    Failed,
}

impl JobKind {
    /// The string form.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl JobState {
    /// The string form.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_the_string_form_agree() {
        for state in JobState::VARIANTS {
            let json = serde_json::to_value(state).expect("serialize");
            assert_eq!(json, state.as_str());
            assert_eq!(state.as_str().parse::<JobState>().ok(), Some(*state));
        }
        for kind in JobKind::VARIANTS {
            assert_eq!(kind.as_str().parse::<JobKind>().ok(), Some(*kind));
        }
        let back: JobState = serde_json::from_str("\"cancelled\"").expect("deserialize");
        assert_eq!(back, JobState::Cancelled);
        assert!(serde_json::from_str::<JobState>("\"paused\"").is_err());
    }
}
