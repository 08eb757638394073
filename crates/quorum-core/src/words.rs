//! Serde for the product's words (child states, event and job kinds, ops):
//! through their one string form (strum's), never by a second rule.

use crate::{ChildState, EventKind, JobKind, JobState, Op, ResumedBy};

macro_rules! serde_as_str {
    ($($word:ty),* $(,)?) => {$(
        impl serde::Serialize for $word {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $word {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "unknown {} {text:?}",
                        stringify!($word)
                    ))
                })
            }
        }
    )*};
}

serde_as_str!(ChildState, EventKind, JobKind, JobState, Op, ResumedBy);
