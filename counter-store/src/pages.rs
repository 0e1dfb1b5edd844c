//! What both stores share for named counters: the page hit as a store counts
//! it, the days a read covers, and what a store ever sees of a visitor.

use counter_api::{Day, EpochMillis, HitId, PageKey, Visitor};

use crate::StoreError;

/// How many index bits the unique-visitor HyperLogLogs use: 2^14 registers give a
/// standard error of about 0.8%, so ±2% holds at 10,000 visitors with room to
/// spare, in 12 KiB per counter and day at most.
pub const HLL_INDEX_BITS: u8 = 14;

/// A visitor reduced to a keyed hash with the day's secret: all a store ever sees
/// of who made a hit, and all it feeds to the day's HyperLogLog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisitorHash(pub u64);

/// The day's random secret for visitor hashes, kept only while hits of that day
/// can still arrive.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VisitorSalt(pub [u8; 32]);

impl VisitorSalt {
    /// A new secret from the system's randomness.
    pub fn random() -> Result<Self, StoreError> {
        let mut salt = [0; 32];
        getrandom::fill(&mut salt).map_err(|e| {
            StoreError::Failed(format!("no randomness for the visitor secret: {e}"))
        })?;
        Ok(Self(salt))
    }
}

impl VisitorHash {
    /// The keyed hash of one visitor of one counter on one day.
    pub fn of(salt: &VisitorSalt, key: &PageKey, visitor: &Visitor) -> Self {
        let mut hasher = blake3::Hasher::new_keyed(&salt.0);
        hasher.update(key.as_str().as_bytes());
        hasher.update(&[0]);
        // One address, one spelling: an IPv4 address seen as IPv4-mapped IPv6 is
        // the same visitor.
        let addr = match visitor.addr.to_canonical() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        hasher.update(&addr.octets());
        hasher.update(visitor.user_agent.as_str().as_bytes());
        let digest = hasher.finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        Self(u64::from_le_bytes(first))
    }
}

impl std::fmt::Debug for VisitorSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorSalt(<secret>)")
    }
}

/// A page hit ready to be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageHitToCount {
    pub id: HitId,
    pub key: PageKey,
    pub ts: EpochMillis,
    pub visitor: Option<VisitorHash>,
}

impl PageHitToCount {
    pub fn day(&self) -> Day {
        Day::of(self.ts)
    }
}

/// The days a read covers: `first..=last`, `last` being today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub first: Day,
    pub last: Day,
}

impl DayRange {
    /// The `days` days that end with `last`.
    pub fn ending(last: Day, days: u32) -> Self {
        Self {
            first: last.minus(days.saturating_sub(1)),
            last,
        }
    }

    pub fn days(&self) -> impl Iterator<Item = Day> + use<> {
        let (first, last) = (self.first.days_since_epoch(), self.last.days_since_epoch());
        (first..=last).filter_map(|d| Day::from_days_since_epoch(d).ok())
    }
}

/// A page hit for tests: id `id` on `key` at `ts`, no visitor.
#[cfg(any(test, feature = "contract"))]
pub fn test_hit(id: u128, key: &str, ts: u64) -> PageHitToCount {
    PageHitToCount {
        id: HitId::from_u128(id).unwrap(),
        key: key.parse().unwrap(),
        ts: EpochMillis::new(ts.into()).unwrap(),
        visitor: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor(addr: &str, ua: &str) -> Visitor {
        Visitor {
            addr: addr.parse().unwrap(),
            user_agent: ua.parse().unwrap(),
        }
    }

    #[test]
    fn the_hash_depends_on_secret_key_address_and_agent() {
        let (a, b) = (VisitorSalt([1; 32]), VisitorSalt([2; 32]));
        let key: PageKey = "blog/x".parse().unwrap();
        let other: PageKey = "blog/y".parse().unwrap();
        let v = visitor("203.0.113.9", "Firefox");
        let h = VisitorHash::of(&a, &key, &v);
        assert_eq!(
            h,
            VisitorHash::of(&a, &key, &visitor("::ffff:203.0.113.9", "Firefox"))
        );
        assert_ne!(
            h,
            VisitorHash::of(&b, &key, &v),
            "a new day is a new visitor"
        );
        assert_ne!(
            h,
            VisitorHash::of(&a, &other, &v),
            "counters cannot be linked"
        );
        assert_ne!(
            h,
            VisitorHash::of(&a, &key, &visitor("203.0.113.10", "Firefox"))
        );
        assert_ne!(
            h,
            VisitorHash::of(&a, &key, &visitor("203.0.113.9", "Chrome"))
        );
    }
}
