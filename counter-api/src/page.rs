//! Named counters: one counter per page (or repository, or anything a badge sits
//! on), with its own exact numbering, daily history and unique visitors.
//!
//! Apart from the tutorial's `GET /` counter: page hits never touch `total_hits`
//! or the per-server totals.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{EpochMillis, HitId};

/// Why a page key, day or visitor was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPage {
    #[error("a counter key must not be empty; {RULES}")]
    KeyEmpty,
    #[error("the counter key is {0} characters long; at most {max} are allowed", max = PageKey::MAX_LEN)]
    KeyTooLong(usize),
    #[error("the counter key contains {0:?}, which is not allowed; {RULES}")]
    KeyCharacter(char),
    #[error("the counter key {0:?} has an empty, \".\" or \"..\" segment; {RULES}")]
    KeySegment(String),
    #[error("{0:?} is not a day: expected YYYY-MM-DD between 2001-09-09 and 2099-12-31")]
    Day(String),
    #[error("the User-Agent is {0} bytes long; at most {max} are accepted", max = UserAgent::MAX_BYTES)]
    UserAgentTooLong(usize),
}

const RULES: &str = "a key is 1 to 200 characters of A-Z a-z 0-9 - _ . ~ and /, \
    made of /-separated segments that are not empty, \".\" or \"..\" \
    (for example github.com/owner/repo or blog/2026/hello)";

/// The name of one counter, e.g. `github.com/owner/repo` or `blog/2026/hello`.
///
/// Only URL-safe characters (RFC 3986 unreserved, plus `/`), so a key is its own
/// path in every URL, needs no escaping in HTML, SVG or a log line, and can be
/// an Aerospike key as it is. Case matters: `Blog` and `blog` are two counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageKey(String);

impl PageKey {
    pub const MAX_LEN: usize = 200;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PageKey {
    type Err = InvalidPage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidPage::KeyEmpty);
        }
        let chars = s.chars().count();
        if chars > Self::MAX_LEN {
            return Err(InvalidPage::KeyTooLong(chars));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '/')))
        {
            return Err(InvalidPage::KeyCharacter(c));
        }
        if s.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
            return Err(InvalidPage::KeySegment(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for PageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A UTC calendar day, the unit of a counter's history.
///
/// Held as days since 1970-01-01 and written `YYYY-MM-DD`, which also sorts by date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(u32);

impl Day {
    const MILLIS: u64 = 86_400_000;

    /// The day a hit happened on.
    pub fn of(ts: EpochMillis) -> Self {
        Self((ts.as_u64() / Self::MILLIS) as u32)
    }

    pub fn from_days_since_epoch(days: u32) -> Result<Self, InvalidPage> {
        let day = Self(days);
        let first = Self::of(EpochMillis::new(EpochMillis::MIN.into()).expect("MIN is valid"));
        let last = Self::of(EpochMillis::new(EpochMillis::MAX.into()).expect("MAX is valid"));
        if day < first || day > last {
            return Err(InvalidPage::Day(days.to_string()));
        }
        Ok(day)
    }

    pub fn days_since_epoch(self) -> u32 {
        self.0
    }

    /// The day `n` days before this one (saturating at the epoch).
    pub fn minus(self, n: u32) -> Self {
        Self(self.0.saturating_sub(n))
    }

    /// The day `n` days after this one.
    pub fn plus(self, n: u32) -> Self {
        Self(self.0.saturating_add(n))
    }

    /// `(year, month, day)` by Howard Hinnant's days-to-civil algorithm.
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(month <= 2), month, day)
    }

    /// The inverse of [`Day::ymd`] (Hinnant's days-from-civil).
    fn from_ymd(year: i64, month: u32, day: u32) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Day {
    type Err = InvalidPage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPage::Day(s.chars().take(32).collect());
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| {
            s.get(r)
                .filter(|p| p.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
        };
        let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
            return Err(bad());
        };
        if !(1..=12).contains(&m) || d == 0 {
            return Err(bad());
        }
        let days = Self::from_ymd(y.into(), m, d);
        let day = u32::try_from(days)
            .ok()
            .and_then(|days| Self::from_days_since_epoch(days).ok())
            .ok_or_else(bad)?;
        // 2026-02-30 would land in March: refuse it rather than move it.
        if day.ymd() != (y.into(), m, d) {
            return Err(bad());
        }
        Ok(day)
    }
}

/// A browser's User-Agent header, only ever used as an input to the daily
/// visitor hash. Longer ones are not worth hashing in full; the web tier cuts
/// them to this length.
#[derive(Clone, PartialEq, Eq)]
pub struct UserAgent(String);

impl UserAgent {
    pub const MAX_BYTES: usize = 512;

    /// Cuts `header` to [`UserAgent::MAX_BYTES`] at a character boundary.
    pub fn truncating(header: &str) -> Self {
        let mut end = header.len().min(Self::MAX_BYTES);
        while !header.is_char_boundary(end) {
            end -= 1;
        }
        Self(header[..end].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserAgent {
    type Err = InvalidPage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > Self::MAX_BYTES {
            return Err(InvalidPage::UserAgentTooLong(s.len()));
        }
        Ok(Self(s.to_owned()))
    }
}

/// Who made a hit, as far as unique-visitor counting needs to know: the client
/// address and User-Agent. The gateway turns it into a keyed hash with a secret
/// that changes every day and never writes either part anywhere.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visitor {
    pub addr: IpAddr,
    pub user_agent: UserAgent,
}

/// Visitors are personal data: keep them out of logs and panics.
impl fmt::Debug for Visitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Visitor(<redacted>)")
    }
}

/// One counted view of a page, as the web tier sends it to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageHit {
    pub id: HitId,
    pub key: PageKey,
    pub ts: EpochMillis,
    /// Absent when the web tier does not know the client's address; the hit is
    /// counted, but not as a visitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<Visitor>,
}

/// The gateway's answer to a page hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRecorded {
    pub key: PageKey,
    /// The key's total right after this hit: its own number, distinct for every
    /// counted hit on the key.
    pub total: u64,
    /// The day's count right after this hit (the hit's own UTC day).
    pub today: u64,
    /// A hit with this id was already counted: nothing was counted again, and the
    /// numbers are the key's current ones.
    pub duplicate: bool,
}

/// One day of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCount {
    pub day: Day,
    pub hits: u64,
    /// Estimated distinct visitors that day (HyperLogLog; about ±1% from
    /// thousands of visitors up).
    pub visitors: u64,
}

/// One counter, read without counting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageStats {
    pub key: PageKey,
    /// The counter's hits, plus its imported base if it has one: its days add up
    /// to `total` less `base`.
    pub total: u64,
    /// The count it was started at by an import, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<crate::PageBase>,
    pub today: DayCount,
    /// The requested days, oldest first, one entry for every day (zero days too),
    /// ending with today.
    pub days: Vec<DayCount>,
}

/// A counter's total over some period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageTotal {
    pub key: PageKey,
    pub hits: u64,
}

/// Hits on all counters together on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayHits {
    pub day: Day,
    pub hits: u64,
}

/// Every counter at a glance: the most viewed, and all hits per day.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PagesOverview {
    /// The counters with the highest totals, highest first.
    pub top_all_time: Vec<PageTotal>,
    /// The counters with the most hits today (UTC), highest first.
    pub top_today: Vec<PageTotal>,
    /// Hits on all counters per day, oldest first, ending with today.
    pub days: Vec<DayHits>,
}

// Serde goes through the parsers, as for the hit types.

macro_rules! serde_via_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_via_str!(PageKey, Day);

impl fmt::Display for UserAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

serde_via_str!(UserAgent);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_key_rules() {
        for good in [
            "github.com/owner/repo",
            "blog/2026/hello",
            "a",
            "A-b_c.d~e",
            "x.svg",
            &"k".repeat(200),
        ] {
            assert_eq!(good.parse::<PageKey>().unwrap().as_str(), good);
        }
        assert_eq!("".parse::<PageKey>(), Err(InvalidPage::KeyEmpty));
        assert_eq!(
            "k".repeat(201).parse::<PageKey>(),
            Err(InvalidPage::KeyTooLong(201))
        );
        for (bad, c) in [
            ("a b", ' '),
            ("<svg>", '<'),
            ("é", 'é'),
            ("a?b", '?'),
            ("a%20", '%'),
        ] {
            assert_eq!(bad.parse::<PageKey>(), Err(InvalidPage::KeyCharacter(c)));
        }
        for bad in ["/a", "a/", "a//b", "a/../b", "./a", ".."] {
            assert!(
                matches!(bad.parse::<PageKey>(), Err(InvalidPage::KeySegment(_))),
                "{bad}"
            );
        }
        let message = "a b".parse::<PageKey>().unwrap_err().to_string();
        assert!(message.contains("A-Z a-z 0-9"), "{message}");
    }

    #[test]
    fn days_round_trip_and_refuse_impossible_dates() {
        let ts = EpochMillis::new(1_764_028_800_000).unwrap(); // 2025-11-25T00:00:00Z
        let day = Day::of(ts);
        assert_eq!(day.to_string(), "2025-11-25");
        assert_eq!("2025-11-25".parse::<Day>(), Ok(day));
        assert_eq!(day.minus(25).to_string(), "2025-10-31");
        for s in ["2024-02-29", "2001-09-09", "2099-12-31", "2030-01-01"] {
            assert_eq!(s.parse::<Day>().unwrap().to_string(), s);
        }
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "2025-00-10",
            "2025-1-1",
            "1970-01-01",
            "2100-01-02",
            "+025-01-01",
            "today",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
    }

    #[test]
    fn visitors_never_print() {
        let hit: PageHit = serde_json::from_str(
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","key":"blog/x","ts":1732000000000,
                "visitor":{"addr":"203.0.113.9","user_agent":"Secret/1.0"}}"#,
        )
        .unwrap();
        let debug = format!("{hit:?}");
        assert!(
            !debug.contains("203.0.113.9") && !debug.contains("Secret"),
            "{debug}"
        );
        let err = serde_json::from_str::<PageHit>(
            r#"{"id":"0190d5e1-7c3a-7b41-9d1e-3f4a5b6c7d8e","key":"a b","ts":1732000000000}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    }

    #[test]
    fn user_agents_are_cut_at_a_char_boundary() {
        let long = "é".repeat(400);
        let ua = UserAgent::truncating(&long);
        assert!(ua.as_str().len() <= UserAgent::MAX_BYTES);
        assert!(long.parse::<UserAgent>().is_err());
    }
}
