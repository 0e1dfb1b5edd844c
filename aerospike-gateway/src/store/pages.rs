//! What both stores share for named counters: the hit as a store counts it, and
//! how a group commit numbers the page hits it counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use counter_api::{Day, EpochMillis, HitId, PageDrift, PageKey, PageRecorded, PagesAudit};

use super::Retention;

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

/// Marks the first occurrence of each hit id in a batch.
pub fn first_page_occurrences(hits: &[PageHitToCount]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(hits.len());
    hits.iter().map(|hit| seen.insert(hit.id)).collect()
}

/// What a batch adds, per counter and per counter and day.
#[derive(Debug, Default)]
pub struct PageBatchCounts {
    pub per_key: HashMap<PageKey, u64>,
    pub per_key_day: HashMap<(PageKey, Day), u64>,
    pub per_day: HashMap<Day, u64>,
    /// The visitor hashes of the counted hits, per counter and day.
    pub visitors: HashMap<(PageKey, Day), Vec<VisitorHash>>,
}

impl PageBatchCounts {
    pub fn of<'a>(hits: impl IntoIterator<Item = &'a PageHitToCount>, counted: &[bool]) -> Self {
        let mut counts = Self::default();
        for (hit, _) in hits.into_iter().zip(counted).filter(|(_, c)| **c) {
            let day = hit.day();
            *counts.per_key.entry(hit.key.clone()).or_insert(0) += 1;
            *counts
                .per_key_day
                .entry((hit.key.clone(), day))
                .or_insert(0) += 1;
            *counts.per_day.entry(day).or_insert(0) += 1;
            if let Some(visitor) = hit.visitor {
                counts
                    .visitors
                    .entry((hit.key.clone(), day))
                    .or_default()
                    .push(visitor);
            }
        }
        counts
    }
}

/// Gives each page hit of a group commit its own numbers.
///
/// `total_after` and `day_after` are the counters once the whole batch was added
/// (they must hold every key, and every key and day, of the batch). Counted hits
/// on a key are numbered in batch order, so the last one sees `total_after`;
/// duplicates see the counters after the batch.
pub fn number_page_batch(
    hits: &[PageHitToCount],
    counted: &[bool],
    counts: &PageBatchCounts,
    total_after: &HashMap<PageKey, u64>,
    day_after: &HashMap<(PageKey, Day), u64>,
) -> Vec<PageRecorded> {
    let mut total: HashMap<&PageKey, u64> = counts
        .per_key
        .iter()
        .map(|(key, added)| (key, total_after[key] - added))
        .collect();
    let mut today: HashMap<(&PageKey, Day), u64> = counts
        .per_key_day
        .iter()
        .map(|((key, day), added)| ((key, *day), day_after[&(key.clone(), *day)] - added))
        .collect();
    hits.iter()
        .zip(counted)
        .map(|(hit, &counted)| {
            let day = hit.day();
            if counted {
                let total = total
                    .get_mut(&hit.key)
                    .expect("counted keys are in per_key");
                let today = today
                    .get_mut(&(&hit.key, day))
                    .expect("counted days are in per_key_day");
                *total += 1;
                *today += 1;
                PageRecorded {
                    key: hit.key.clone(),
                    total: *total,
                    today: *today,
                    duplicate: false,
                }
            } else {
                PageRecorded {
                    key: hit.key.clone(),
                    total: total_after.get(&hit.key).copied().unwrap_or(0),
                    today: day_after.get(&(hit.key.clone(), day)).copied().unwrap_or(0),
                    duplicate: true,
                }
            }
        })
        .collect()
}

/// How many counters each maintained top list keeps (the day's and the all-time
/// one): the longest list an overview shows.
pub const TOP_KEPT: usize = 100;

/// Whether `(key, hits)` goes before `(other_key, other_hits)` in a top list:
/// more hits first, ties by key.
pub fn ranks_before(hits: u64, key: &str, other_hits: u64, other_key: &str) -> bool {
    hits > other_hits || (hits == other_hits && key < other_key)
}

/// A maintained top list: the [`TOP_KEPT`] counters with the most hits (ties by
/// key), each with its exact count.
///
/// It stays exact however many counters there are because counts only grow: a
/// counter outside the list can only enter it when it gets a hit, and then it is
/// offered with its exact new count; one that drops out had at least
/// `TOP_KEPT` others ahead of it, which stay ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopList {
    entries: HashMap<PageKey, u64>,
}

impl TopList {
    pub fn from_entries(entries: impl IntoIterator<Item = (PageKey, u64)>) -> Self {
        let mut list = Self::default();
        for (key, hits) in entries {
            list.offer(&key, hits);
        }
        list
    }

    /// Offers a counter with its count now; answers whether the list changed.
    /// A count lower than the one listed (an older read) changes nothing.
    pub fn offer(&mut self, key: &PageKey, hits: u64) -> bool {
        if hits == 0 {
            return false;
        }
        if let Some(listed) = self.entries.get_mut(key) {
            if hits <= *listed {
                return false;
            }
            *listed = hits;
            return true;
        }
        if self.entries.len() >= TOP_KEPT {
            let (last_key, last_hits) = self.last().expect("a full list has a last entry");
            if !ranks_before(hits, key.as_str(), last_hits, last_key.as_str()) {
                return false;
            }
            let last_key = last_key.clone();
            self.entries.remove(&last_key);
        }
        self.entries.insert(key.clone(), hits);
        true
    }

    /// The entry a newcomer must beat, once the list is full.
    fn last(&self) -> Option<(&PageKey, u64)> {
        self.entries
            .iter()
            .map(|(key, hits)| (key, *hits))
            .reduce(|a, b| {
                if ranks_before(a.1, a.0.as_str(), b.1, b.0.as_str()) {
                    b
                } else {
                    a
                }
            })
    }

    pub fn get(&self, key: &PageKey) -> Option<u64> {
        self.entries.get(key).copied()
    }

    /// The first `limit` entries, in order.
    pub fn top(&self, limit: usize) -> Vec<(PageKey, u64)> {
        top(self.entries.iter().map(|(k, n)| (k.clone(), *n)), limit)
    }
}

/// The `limit` largest `(key, hits)` pairs, largest first, ties by key.
pub fn top(entries: impl IntoIterator<Item = (PageKey, u64)>, limit: usize) -> Vec<(PageKey, u64)> {
    let mut heap = std::collections::BinaryHeap::with_capacity(limit + 1);
    for (key, hits) in entries {
        if hits == 0 {
            continue;
        }
        heap.push(std::cmp::Reverse((hits, std::cmp::Reverse(key))));
        if heap.len() > limit {
            heap.pop();
        }
    }
    let mut top: Vec<(PageKey, u64)> = heap
        .into_iter()
        .map(|std::cmp::Reverse((hits, std::cmp::Reverse(key)))| (key, hits))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top
}

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
    /// Counters, over all days, whose total is not the sum of their days.
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

/// A page hit for tests: id `id` on `key` at `ts`, no visitor.
#[cfg(test)]
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
    use super::test_hit as hit;
    use super::*;

    #[test]
    fn numbering_per_key_and_day() {
        let day1 = 1_764_028_799_000; // 2025-11-24 23:59:59
        let day2 = 1_764_028_800_000; // 2025-11-25 00:00:00
        let hits = [
            hit(1, "a", day1),
            hit(2, "b", day2),
            hit(1, "a", day1),
            hit(3, "a", day2),
            hit(4, "a", day2),
        ];
        let mut counted = first_page_occurrences(&hits);
        assert_eq!(counted, [true, true, false, true, true]);
        counted[4] = false; // already in the store
        let counts = PageBatchCounts::of(&hits, &counted);
        let a: PageKey = "a".parse().unwrap();
        let b: PageKey = "b".parse().unwrap();
        let (d1, d2) = (hits[0].day(), hits[1].day());
        // Before: a had 10 (3 of them on day 2), b had 0.
        let total_after = HashMap::from([(a.clone(), 12), (b.clone(), 1)]);
        let day_after = HashMap::from([
            ((a.clone(), d1), 8),
            ((a.clone(), d2), 4),
            ((b.clone(), d2), 1),
        ]);
        let view: Vec<(u64, u64, bool)> =
            number_page_batch(&hits, &counted, &counts, &total_after, &day_after)
                .iter()
                .map(|r| (r.total, r.today, r.duplicate))
                .collect();
        assert_eq!(
            view,
            [
                (11, 8, false),
                (1, 1, false),
                (12, 8, true),
                (12, 4, false),
                (12, 4, true)
            ]
        );
    }

    #[test]
    fn a_top_list_stays_exact_as_counts_grow() {
        let key = |i: u32| -> PageKey { format!("k{i:06}").parse().unwrap() };
        // Every count of every counter is offered as it grows, in any order of
        // counters: the list matches the top of the final counts.
        let mut counts: HashMap<PageKey, u64> = HashMap::new();
        let mut list = TopList::default();
        let mut seed = 7_u64;
        for _ in 0..50_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // A few hot counters, many cold ones.
            let i = if seed >> 60 < 4 {
                (seed >> 33) % 20
            } else {
                (seed >> 33) % 5_000
            };
            let k = key(i as u32);
            let n = counts.entry(k.clone()).or_insert(0);
            *n += 1;
            list.offer(&k, *n);
            // An older, lower read of the same counter changes nothing.
            assert!(!list.offer(&k, *n - 1));
        }
        assert_eq!(list.top(TOP_KEPT), top(counts, TOP_KEPT));
    }

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

    #[test]
    fn top_keeps_the_largest() {
        let entries = [("a", 5), ("b", 9), ("c", 5), ("d", 1), ("e", 0)]
            .map(|(k, n)| (k.parse().unwrap(), n));
        let top: Vec<(String, u64)> = top(entries, 3)
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        assert_eq!(top, [("b".into(), 9), ("a".into(), 5), ("c".into(), 5)]);
    }
}
