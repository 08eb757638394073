//! The state of a child, as the API, metrics and events name it.

use strum::{Display, EnumString, IntoStaticStr, VariantArray};

/// What an operator sees of a child. Its one string form (`healthy`, ...)
/// is the API's, the metrics' label and the events'.
///
/// A child can be several of these at once (a stale child may also hold
/// damaged ranges); it shows the first that holds, in this order:
/// `failed`, `syncing`, `stale`, `damaged`, `healthy`. The order is how
/// much of its copy the volume can use: none of a failed child's, not the
/// missed ranges of a syncing or stale one, every range of a damaged one
/// (its bad ranges are read and outvoted). The bytes behind each condition
/// are told apart elsewhere (`stale_bytes`, `damaged_bytes`), so a child
/// that is stale and damaged still counts in both gauges.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum ChildState {
    /// Its last request succeeded, and nothing is known bad on it.
    Healthy,
    /// Its last request failed.
    Failed,
    /// It missed writes that a resync has not copied yet; those ranges are
    /// not read from it.
    Stale,
    /// It joined the volume and its copy is being made; what is not copied
    /// yet is neither read from it nor counted in votes.
    Syncing,
    /// It holds ranges that lost a vote or could not be read, not repaired
    /// yet (see [`crate::Volume::damage`]). It still serves: its other
    /// ranges are good, and the vote outvotes the bad ones.
    Damaged,
}

impl ChildState {
    /// The string form: `healthy`, `failed`, `stale`, `syncing` or
    /// `damaged`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether a child in this state can take its part in every vote:
    /// `healthy` and `damaged` (whose bad ranges the vote outvotes), not a
    /// failed child nor one that misses writes.
    pub fn serves(self) -> bool {
        matches!(self, ChildState::Healthy | ChildState::Damaged)
    }

    /// Whether an operator must act on a child in this state: `failed` (it
    /// cannot be reached or answers errors) and `damaged` (a scrub with
    /// repair, a rewrite or a new replica makes it good). A `stale` or
    /// `syncing` child catches up by itself; a `healthy` one needs nothing.
    pub fn needs_operator(self) -> bool {
        matches!(self, ChildState::Failed | ChildState::Damaged)
    }

    /// The state a child shows when these conditions hold (see the order on
    /// [`ChildState`]).
    pub(crate) fn of(c: Conditions) -> ChildState {
        if c.failed {
            ChildState::Failed
        } else if c.stale && c.syncing {
            ChildState::Syncing
        } else if c.stale {
            ChildState::Stale
        } else if c.damaged {
            ChildState::Damaged
        } else {
            ChildState::Healthy
        }
    }
}

/// What is true of a child, from which its [`ChildState`] follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Conditions {
    /// Its last request failed.
    pub(crate) failed: bool,
    /// It is being copied after it joined.
    pub(crate) syncing: bool,
    /// It has stale ranges.
    pub(crate) stale: bool,
    /// It has damaged ranges.
    pub(crate) damaged: bool,
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
        assert_eq!(ChildState::Damaged.as_str(), "damaged");
    }

    #[test]
    fn the_first_condition_that_holds_wins() {
        let all = Conditions {
            failed: true,
            syncing: true,
            stale: true,
            damaged: true,
        };
        assert_eq!(ChildState::of(all), ChildState::Failed);
        let all = Conditions {
            failed: false,
            ..all
        };
        assert_eq!(ChildState::of(all), ChildState::Syncing);
        let all = Conditions {
            syncing: false,
            ..all
        };
        assert_eq!(ChildState::of(all), ChildState::Stale);
        let all = Conditions {
            stale: false,
            ..all
        };
        assert_eq!(ChildState::of(all), ChildState::Damaged);
        // Syncing without a stale range left is healthy: the copy is made.
        let synced = Conditions {
            syncing: true,
            ..Conditions::default()
        };
        assert_eq!(ChildState::of(synced), ChildState::Healthy);
        assert!(ChildState::Damaged.serves() && ChildState::Healthy.serves());
        assert!(!ChildState::Stale.serves() && !ChildState::Failed.serves());
        assert!(!ChildState::Syncing.serves());
        let operator: Vec<ChildState> = ChildState::VARIANTS
            .iter()
            .copied()
            .filter(|s| s.needs_operator())
            .collect();
        assert_eq!(operator, [ChildState::Failed, ChildState::Damaged]);
    }
}
