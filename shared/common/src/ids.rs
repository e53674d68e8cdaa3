//! Newtypes for ids and parsed input, so a user id is never mistaken for a document id and a
//! source name is always safe to put in a subject.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Namespace for deterministic document ids: the same user, source and external id always
/// name the same document, so the gateway can answer with ids before ingest runs.
const DOCUMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2d4e_8a8b_4c36_9a1e_5b7d_0c3f_a210);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocumentId(pub Uuid);

impl DocumentId {
    pub fn derive(user: UserId, source: &Source, external_id: &str) -> Self {
        let key = format!("{}\n{}\n{}", user.0, source.as_str(), external_id);
        Self(Uuid::new_v5(&DOCUMENT_NAMESPACE, key.as_bytes()))
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A data source name (`gmail`, `hubspot`, `zendesk`...): lower-case letters, digits, `-` and
/// `_`, 1 to 40 characters, so it is always one NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Source(String);

/// Same rules for a document kind (`email`, `contact`, `note`...).
pub type Kind = Source;

impl Source {
    pub fn parse(value: &str) -> Result<Self, String> {
        let ok = !value.is_empty()
            && value.len() <= 40
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err("must be 1-40 characters of a-z, 0-9, '-' or '_'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Source {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Source> for String {
    fn from(value: Source) -> String {
        value.0
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_are_stable_and_distinct() {
        let user = UserId(Uuid::nil());
        let gmail = Source::parse("gmail").unwrap();
        let a = DocumentId::derive(user, &gmail, "m1");
        assert_eq!(a, DocumentId::derive(user, &gmail, "m1"));
        assert_ne!(a, DocumentId::derive(user, &gmail, "m2"));
        assert_ne!(
            a,
            DocumentId::derive(user, &Source::parse("slack").unwrap(), "m1")
        );
    }

    #[test]
    fn source_rejects_subject_breaking_names() {
        for bad in ["", "Gmail", "a.b", "a b", "a*", ">", &"x".repeat(41)] {
            assert!(Source::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Source::parse("google-calendar_2").is_ok());
    }
}
