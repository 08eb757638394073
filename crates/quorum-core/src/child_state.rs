//! The state of a child, as the API, metrics and events name it.

use strum::{Display, EnumString, IntoStaticStr, VariantArray};

/// What an operator sees of a child. Its one string form (`healthy`, ...)
/// is the API's, the metrics' label and the events'.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum ChildState {
    /// Its last request succeeded.
    Healthy,
    /// Its last request failed.
    Failed,
    /// It missed writes that a resync has not copied yet; those ranges are
    /// not read from it.
    Stale,
    /// It joined the volume and its copy is being made; what is not copied
    /// yet is neither read from it nor counted in votes.
    Syncing,
}

impl ChildState {
    /// The string form: `healthy`, `failed`, `stale` or `syncing`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_form_goes_both_ways() {
        for state in ChildState::VARIANTS {
            assert_eq!(state.as_str().parse::<ChildState>().ok(), Some(*state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(ChildState::Syncing.as_str(), "syncing");
    }
}
