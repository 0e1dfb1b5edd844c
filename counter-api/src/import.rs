//! A counter's starting count, brought from another service: set once per
//! counter, exactly once under retries, and kept apart from the hits, so the
//! counter's history says which part of its total was imported.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{EpochMillis, HitId, PageKey};

/// The count an import starts a counter at: 1 to [`BaseCount::MAX`]. Zero is
/// refused because it would use up the counter's one import for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct BaseCount(u64);

impl BaseCount {
    /// A quadrillion: more than any page was ever viewed, and far from u64's end,
    /// so the total a base starts never overflows as hits add to it.
    pub const MAX: u64 = 1_000_000_000_000_000;

    pub fn new(count: u64) -> Result<Self, InvalidBase> {
        if (1..=Self::MAX).contains(&count) {
            Ok(Self(count))
        } else {
            Err(InvalidBase(count))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// A count outside 1 to [`BaseCount::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "count {0} is out of range: an import's count is a whole number from 1 to {max}",
    max = BaseCount::MAX
)]
pub struct InvalidBase(pub u64);

impl<'de> Deserialize<'de> for BaseCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let count = u64::deserialize(deserializer)?;
        Self::new(count).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for BaseCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `POST /v1/page-imports`: start the counter `key` at `count`. `id` is the
/// client's `Idempotency-Key`: the same import sent again is answered as a
/// duplicate, never added twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageImport {
    pub id: HitId,
    pub key: PageKey,
    pub count: BaseCount,
    pub ts: EpochMillis,
}

/// A counter's imported base, as its history keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageBase {
    pub count: u64,
    /// When it was imported.
    pub ts: EpochMillis,
}

/// The gateway's answer to an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageImported {
    pub key: PageKey,
    pub base: u64,
    /// The counter's total with the base: the number its next hit follows.
    pub total: u64,
    /// This import (its id) had already been made: nothing was added again.
    pub duplicate: bool,
}

/// What a store answers an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported(PageImported),
    /// The counter already has a base from another import: a counter's start is
    /// set once.
    AlreadyImported {
        base: PageBase,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_from_one_to_a_quadrillion() {
        let parse = |json: &str| serde_json::from_str::<BaseCount>(json).map(BaseCount::get);
        assert_eq!(parse("1").unwrap(), 1);
        assert_eq!(parse("1000000000000000").unwrap(), BaseCount::MAX);
        for bad in ["0", "1000000000000001", "-1", "1.5", "\"5\""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let message = parse("0").unwrap_err().to_string();
        assert!(message.contains("from 1 to 1000000000000000"), "{message}");
    }
}
