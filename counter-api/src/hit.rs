use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TOTAL_HITS_KEY;

/// Why a field of a hit was refused; the message is meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    #[error("hit id {0:?} is not a UUID (expected e.g. \"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e\")")]
    HitIdNotUuid(String),
    #[error("hit id must not be the nil UUID")]
    HitIdNil,
    #[error("server id must not be empty")]
    ServerIdEmpty,
    #[error("server id is {0} characters long; at most {max} are allowed", max = ServerId::MAX_CHARS)]
    ServerIdTooLong(usize),
    #[error("server id must not contain control characters (found U+{0:04X})")]
    ServerIdControl(u32),
    #[error("server id must not start or end with whitespace")]
    ServerIdPadded,
    #[error("server id {TOTAL_HITS_KEY:?} is reserved for the grand total")]
    ServerIdReserved,
    #[error(
        "timestamp {0} is out of range: expected milliseconds since the Unix epoch between {min} and {max}",
        min = EpochMillis::MIN,
        max = EpochMillis::MAX
    )]
    TimestampOutOfRange(i128),
}

/// The id of one page hit: a UUID, always written in its lowercase hyphenated form.
///
/// Parsing canonicalises, so `{0190D5E1-...}` and `0190d5e1-...` are the same hit;
/// that is what makes a retried hit land on the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HitId(Uuid);

impl HitId {
    /// Any UUID but the nil one, which only ever appears by mistake.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, InvalidField> {
        if uuid.is_nil() {
            return Err(InvalidField::HitIdNil);
        }
        Ok(Self(uuid))
    }

    /// The id stored as a 128-bit integer, the embedded store's key form.
    pub fn from_u128(id: u128) -> Result<Self, InvalidField> {
        Self::from_uuid(Uuid::from_u128(id))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl FromStr for HitId {
    type Err = InvalidField;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uuid = Uuid::try_parse(s).map_err(|_| InvalidField::HitIdNotUuid(truncated(s)))?;
        Self::from_uuid(uuid)
    }
}

impl fmt::Display for HitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The id of the app server (web replica) that served a hit.
///
/// It becomes a record key in the `summary` set next to [`TOTAL_HITS_KEY`], and is
/// shown on the stats page, so it is short, printable and never that key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(String);

impl ServerId {
    /// Long enough for any DNS name label set or container id, short enough for a key.
    pub const MAX_CHARS: usize = 128;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ServerId {
    type Err = InvalidField;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidField::ServerIdEmpty);
        }
        let chars = s.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(InvalidField::ServerIdTooLong(chars));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(InvalidField::ServerIdControl(c.into()));
        }
        if s.trim() != s {
            return Err(InvalidField::ServerIdPadded);
        }
        if s == TOTAL_HITS_KEY {
            return Err(InvalidField::ServerIdReserved);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a hit happened, in milliseconds since the Unix epoch.
///
/// The range refuses the usual mistakes: seconds sent instead of milliseconds
/// (too small), microseconds or nanoseconds (too large), and negative numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpochMillis(u64);

impl EpochMillis {
    /// 2001-09-09T01:46:40Z: any real hit is later; a timestamp in seconds is earlier.
    pub const MIN: u64 = 1_000_000_000_000;
    /// 2100-01-01T00:00:00Z.
    pub const MAX: u64 = 4_102_444_800_000;

    pub fn new(millis: i128) -> Result<Self, InvalidField> {
        match u64::try_from(millis) {
            Ok(ms) if (Self::MIN..=Self::MAX).contains(&ms) => Ok(Self(ms)),
            _ => Err(InvalidField::TimestampOutOfRange(millis)),
        }
    }

    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

/// One page hit, as the tutorial stores it in `test.hits`: its id, the server that
/// served it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub id: HitId,
    pub server: ServerId,
    pub ts: EpochMillis,
}

/// Keep echoed input short enough to quote in an error message.
fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

// Serde goes through the parsers above, so JSON cannot smuggle in an invalid value,
// and serde_json reports the parser's message together with the position.

impl Serialize for HitId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HitId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for ServerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for EpochMillis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for EpochMillis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Millis;
        impl serde::de::Visitor<'_> for Millis {
            type Value = EpochMillis;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("milliseconds since the Unix epoch, as a whole number")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EpochMillis, E> {
                EpochMillis::new(v.into()).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EpochMillis, E> {
                EpochMillis::new(v.into()).map_err(E::custom)
            }

            // JSON parsers hand over integers beyond 64 bits as floats.
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<EpochMillis, E> {
                if v.fract() != 0.0 || !v.is_finite() {
                    return Err(E::custom(format!(
                        "timestamp {v} is not a whole number of milliseconds"
                    )));
                }
                EpochMillis::new(v as i128).map_err(E::custom)
            }
        }
        d.deserialize_any(Millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_id_is_canonicalised() {
        let upper: HitId = "{0190D5E1-7C3A-7B41-9D1E-3F4A5B6C7D8E}".parse().unwrap();
        let lower: HitId = "0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e".parse().unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.to_string(), "0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e");
    }

    #[test]
    fn hit_id_refuses_non_uuids_and_nil() {
        assert!(matches!(
            "42".parse::<HitId>(),
            Err(InvalidField::HitIdNotUuid(_))
        ));
        assert!(matches!(
            "".parse::<HitId>(),
            Err(InvalidField::HitIdNotUuid(_))
        ));
        assert_eq!(
            "00000000-0000-0000-0000-000000000000".parse::<HitId>(),
            Err(InvalidField::HitIdNil)
        );
        let long = "x".repeat(10_000);
        let message = long.parse::<HitId>().unwrap_err().to_string();
        assert!(
            message.len() < 200,
            "error echoes too much input: {message}"
        );
    }

    #[test]
    fn server_id_rules() {
        assert_eq!("web-1".parse::<ServerId>().unwrap().as_str(), "web-1");
        assert_eq!("10.0.0.5".parse::<ServerId>().unwrap().as_str(), "10.0.0.5");
        assert_eq!("".parse::<ServerId>(), Err(InvalidField::ServerIdEmpty));
        assert_eq!(
            "a".repeat(129).parse::<ServerId>(),
            Err(InvalidField::ServerIdTooLong(129))
        );
        assert!("é".repeat(128).parse::<ServerId>().is_ok());
        assert_eq!(
            "web\u{7}1".parse::<ServerId>(),
            Err(InvalidField::ServerIdControl(7))
        );
        assert_eq!(
            " web".parse::<ServerId>(),
            Err(InvalidField::ServerIdPadded)
        );
        assert_eq!(
            "total_hits".parse::<ServerId>(),
            Err(InvalidField::ServerIdReserved)
        );
    }

    #[test]
    fn timestamp_range() {
        assert!(EpochMillis::new(1_732_000_000_000).is_ok());
        for bad in [
            -1,
            0,
            1_732_000_000,
            1_732_000_000_000_000,
            i128::from(u64::MAX) + 1,
        ] {
            assert_eq!(
                EpochMillis::new(bad),
                Err(InvalidField::TimestampOutOfRange(bad))
            );
        }
    }

    #[test]
    fn json_goes_through_the_parsers() {
        let ok: Hit = serde_json::from_str(
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","server":"web-1","ts":1732000000000}"#,
        )
        .unwrap();
        assert_eq!(ok.server.as_str(), "web-1");

        let err = serde_json::from_str::<Hit>(
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","server":"web\u0000","ts":1732000000000}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("control characters"), "{err}");

        let fractional = r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","server":"w","ts":1.5}"#;
        let err = serde_json::from_str::<Hit>(fractional).unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
        let huge = r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","server":"w","ts":100000000000000000000}"#;
        let err = serde_json::from_str::<Hit>(huge).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");

        let err = serde_json::from_str::<Hit>(
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","ts":1732000000000}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing field `server`"), "{err}");
    }
}
