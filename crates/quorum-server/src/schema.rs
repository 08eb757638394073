//! OpenAPI schemas of the product's words that answers carry: a string,
//! one of the word's values, listed from its `VARIANTS` through its one
//! string form (strum's), never by a second list.
//!
//! quorum-core knows no HTTP, so its words (child states, event and job
//! kinds, ops) cannot derive `utoipa::ToSchema`; each gets a type of the
//! same name here, used as `#[schema(value_type = crate::schema::NAME)]`
//! on the fields that hold one. [`Binary`] is the volume's raw bytes.

use std::borrow::Cow;

use strum::VariantArray;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A string schema whose values are `words`.
fn word_enum(words: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(words))
        .into()
}

/// Raw bytes (the volume's data): OpenAPI 3.1 spells them as a string
/// of `contentMediaType` `application/octet-stream`.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

macro_rules! word_schemas {
    ($($(#[$doc:meta])* $name:ident = $word:ty;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                word_enum(<$word as VariantArray>::VARIANTS.iter().map(|&w| w.into()))
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    )*};
}

word_schemas! {
    /// A child's state ([`quorum_core::ChildState`]).
    ChildState = quorum_core::ChildState;
    /// The name of an event ([`quorum_core::EventKind`]).
    EventKind = quorum_core::EventKind;
    /// The kind of a job ([`quorum_core::JobKind`]).
    JobKind = quorum_core::JobKind;
    /// Whether a job runs or how it ended ([`quorum_core::JobState`]).
    JobState = quorum_core::JobState;
    /// A kind of request ([`quorum_core::Op`]).
    Op = quorum_core::Op;
    /// Whether a volume serves or holds its requests
    /// ([`crate::suspend::VolumeState`]).
    VolumeState = crate::suspend::VolumeState;
    /// What a volume does when a request fails its quorum
    /// ([`crate::suspend::ErrorPolicy`]).
    ErrorPolicy = crate::suspend::ErrorPolicy;
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    /// A word's schema lists exactly the strings its answers carry.
    #[test]
    fn a_word_schema_lists_every_value_as_serde_writes_it() {
        let schema = serde_json::to_value(ChildState::schema()).expect("serialize a schema");
        let listed = schema["enum"].as_array().expect("an enum").clone();
        let written: Vec<serde_json::Value> = quorum_core::ChildState::VARIANTS
            .iter()
            .map(|s| serde_json::to_value(s).expect("serialize a state"))
            .collect();
        assert_eq!(listed, written);
        assert_eq!(schema["type"], "string");
    }
}
