//! What an audit compares: the counters against the hit records they count,
//! for the tutorial's `summary` and for the named counters, and the operator's
//! recount that brings the `summary` counters back in line.
//!
//! The hit records are the truth: one per counted hit. On the embedded store a
//! batch is one transaction, so the two always agree. On Aerospike every batch is
//! counted exactly once through faults, and after a split cluster the store
//! repairs the counters by itself (with [`compare`] and [`compare_pages`]); what
//! is left for [`differences`] and [`apply`] is the operator's manual recount,
//! for a store edited by hand: `GET /v1/audit` shows the difference,
//! `aerospike-gateway reconcile --apply` removes it. Run that while no hits flow
//! (web tier scaled to 0): a hit whose record is written but not yet counted
//! would otherwise be counted twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use counter_api::{Day, EpochMillis, PageDrift, PageKey, PagesAudit, Summary, TOTAL_HITS_KEY};

use crate::{Audit, Reads, Retention, StoreError};

/// What a store holds of the named counters over the days an audit
/// compares, beside their page hit records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageTallies {
    /// Each counter's hits per day, as its `days` hold them.
    pub counted: HashMap<(PageKey, Day), u64>,
    /// The page hit records per counter and day (the day of their `ts`).
    pub records: HashMap<(PageKey, Day), u64>,
    /// Each day's hits on all counters, as the day totals hold them.
    pub day_totals: BTreeMap<Day, u64>,
    /// Counters, over all days, whose total is not their imported base plus
    /// the sum of their days.
    pub totals_off_days: u64,
}

/// How long before a day's records may expire the audit stops comparing it:
/// a hit's `ts` and the moment its record was written differ by a little.
const RECORD_CLOCK_SLACK_MS: u64 = 5 * 60 * 1000;

/// The first day whose page hit records are all still kept at `now`, with
/// records kept for `retention`: every day for records kept forever.
pub fn audit_window(retention: Retention, now: std::time::SystemTime) -> Day {
    match retention.0 {
        None => Day::of(EpochMillis::new(EpochMillis::MIN.into()).expect("MIN is a time")),
        Some(window) => {
            let now = now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let cutoff = now
                .saturating_sub(window.as_millis() as u64)
                .saturating_add(RECORD_CLOCK_SLACK_MS)
                .clamp(EpochMillis::MIN, EpochMillis::MAX);
            // The day the cutoff falls in has lost some of its records.
            Day::of(EpochMillis::new(cutoff.into()).expect("a time")).plus(1)
        }
    }
}

/// The audit of the named counters: every counter's hits on a day against its
/// records of that day, and every day total against all records of the day.
/// Lists every difference (the audit's answer keeps the first
/// [`PagesAudit::MAX_DRIFT`]).
pub fn compare_pages(tallies: &PageTallies) -> PagesAudit {
    let mut records_per_day: BTreeMap<Day, u64> = BTreeMap::new();
    for ((_, day), n) in &tallies.records {
        *records_per_day.entry(*day).or_default() += n;
    }
    let pairs: BTreeSet<(Day, &PageKey)> = tallies
        .counted
        .keys()
        .chain(tallies.records.keys())
        .map(|(key, day)| (*day, key))
        .collect();
    let mut drift = Vec::new();
    let mut off = 0_u64;
    for (day, key) in &pairs {
        let id = ((*key).clone(), *day);
        let counted = tallies.counted.get(&id).copied().unwrap_or(0);
        let hit_records = tallies.records.get(&id).copied().unwrap_or(0);
        if counted != hit_records {
            off += 1;
            drift.push(PageDrift {
                key: Some((*key).clone()),
                day: *day,
                counted,
                hit_records,
            });
        }
    }
    let days: BTreeSet<Day> = pairs
        .iter()
        .map(|(day, _)| *day)
        .chain(tallies.day_totals.keys().copied())
        .collect();
    for day in &days {
        let counted = tallies.day_totals.get(day).copied().unwrap_or(0);
        let hit_records = records_per_day.get(day).copied().unwrap_or(0);
        if counted != hit_records {
            off += 1;
            drift.push(PageDrift {
                key: None,
                day: *day,
                counted,
                hit_records,
            });
        }
    }
    let counters: BTreeSet<&PageKey> = pairs.iter().map(|(_, key)| *key).collect();
    PagesAudit {
        days: days.into_iter().collect(),
        counters: counters.len() as u64,
        counted: tallies.counted.values().sum(),
        hit_records: tallies.records.values().sum(),
        day_totals: tallies.day_totals.values().sum(),
        totals_off_days: tallies.totals_off_days,
        consistent: off == 0 && tallies.totals_off_days == 0,
        drift,
    }
}

/// A `summary` counter that does not match the hit records it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `total_hits` or a server id.
    pub key: String,
    pub counter: u64,
    pub hit_records: u64,
}

impl Difference {
    pub fn delta(&self) -> i64 {
        self.hit_records as i64 - self.counter as i64
    }
}

/// Every counter that differs from its hit records.
pub async fn differences<S: Audit + Reads>(store: &S) -> Result<Vec<Difference>, StoreError> {
    let hit_records = store.count_hit_records().await?;
    let summary = store.summary().await?;
    Ok(compare(&summary, &hit_records))
}

/// Adds each difference to its counter; answers the counters' new values.
pub async fn apply<S: Audit + Reads>(
    store: &S,
    differences: &[Difference],
) -> Result<Vec<u64>, StoreError> {
    let mut after = Vec::with_capacity(differences.len());
    for difference in differences {
        after.push(
            store
                .adjust_counter(&difference.key, difference.delta())
                .await?,
        );
    }
    Ok(after)
}

/// The counters of `summary` that differ from `hit_records`.
pub fn compare(summary: &Summary, hit_records: &Summary) -> Vec<Difference> {
    let mut keys: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    keys.insert(
        TOTAL_HITS_KEY.to_owned(),
        (summary.total_hits, hit_records.total_hits),
    );
    for server in &summary.servers {
        keys.entry(server.server.to_string()).or_default().0 = server.total;
    }
    for server in &hit_records.servers {
        keys.entry(server.server.to_string()).or_default().1 = server.total;
    }
    keys.into_iter()
        .filter(|(_, (counter, records))| counter != records)
        .map(|(key, (counter, hit_records))| Difference {
            key,
            counter,
            hit_records,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::test_hit as hit;

    #[test]
    fn the_audit_finds_every_count_off_its_records() {
        let key = |k: &str| -> PageKey { k.parse().unwrap() };
        let (d1, d2) = (
            hit(1, "a", 1_764_028_799_000).day(),
            hit(1, "a", 1_764_028_800_000).day(),
        );
        let mut tallies = PageTallies {
            counted: HashMap::from([
                ((key("a"), d1), 3),
                ((key("a"), d2), 2),
                ((key("b"), d2), 1),
            ]),
            records: HashMap::from([
                ((key("a"), d1), 3),
                ((key("a"), d2), 2),
                ((key("b"), d2), 1),
            ]),
            day_totals: BTreeMap::from([(d1, 3), (d2, 3)]),
            totals_off_days: 0,
        };
        let audit = compare_pages(&tallies);
        assert!(audit.consistent, "{audit:?}");
        assert_eq!(
            (
                audit.counters,
                audit.counted,
                audit.hit_records,
                audit.day_totals
            ),
            (2, 6, 6, 6)
        );
        assert_eq!(audit.days, [d1, d2]);

        // A counter short of its records on one day, a record with no count,
        // and a day total off.
        tallies.counted.insert((key("a"), d2), 1);
        tallies.records.insert((key("c"), d1), 1);
        tallies.day_totals.insert(d1, 5);
        let audit = compare_pages(&tallies);
        assert!(!audit.consistent);
        let view: Vec<(Option<String>, Day, u64, u64)> = audit
            .drift
            .iter()
            .map(|d| {
                (
                    d.key.as_ref().map(ToString::to_string),
                    d.day,
                    d.counted,
                    d.hit_records,
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                (Some("c".into()), d1, 0, 1),
                (Some("a".into()), d2, 1, 2),
                (None, d1, 5, 4),
            ]
        );
    }

    #[test]
    fn the_audit_window_leaves_out_days_that_lost_records() {
        // 2025-11-25 12:00
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_072_000_000);
        let week = Retention(Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(audit_window(week, now).to_string(), "2025-11-19");
        assert_eq!(
            audit_window(Retention::FOREVER, now).to_string(),
            "2001-09-09"
        );
    }
}
