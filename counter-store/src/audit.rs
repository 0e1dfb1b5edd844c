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

use counter_api::{
    Day, EpochMillis, PageDrift, PageKey, PagesAudit, PagesAuditCoverage, Summary, TOTAL_HITS_KEY,
};

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
        coverage: PagesAuditCoverage {
            method: "exact".into(),
            counters_read: counters.len() as u64,
            hit_records_read: tallies.records.values().sum(),
            ..PagesAuditCoverage::default()
        },
    }
}

/// How many hashed groups a grouped audit sums each day's counters into: its
/// memory is this many [`GroupTally`]s per day and side, whatever the number
/// of counters, and a drifted counter is looked for among about 1/`GROUPS` of
/// the counters.
pub const GROUPS: usize = 4096;

/// The most (group, day) pairs a grouped audit reads again to name drift:
/// past that, naming would cost as much as an exact audit, and the answer
/// lists at most [`PagesAudit::MAX_DRIFT`] entries anyway.
pub const MAX_GROUPS_NAMED: usize = 64;

/// One side of one group on one day: the hits, and a fingerprint of which
/// counters hold them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupTally {
    pub hits: u64,
    /// The sum of `n` × (an odd hash of the counter and day) over the group's
    /// counts: the same however the counts are read or in which order, and
    /// different when hits moved from one counter to another even though the
    /// sum stayed (a single counter off by any n changes it too, the hash
    /// being odd).
    pub fingerprint: u64,
}

impl GroupTally {
    fn add(&mut self, hash: u64, n: u64) {
        self.hits += n;
        self.fingerprint = self.fingerprint.wrapping_add(hash.wrapping_mul(n));
    }
}

/// The group a counter falls in: the same on every day, so the counter's
/// records and its counts meet in it.
pub fn group_of(key: &str) -> usize {
    (fnv1a(key.as_bytes(), FNV_OFFSET) >> 52) as usize % GROUPS
}

/// The fingerprint's hash of a counter on a day: odd, so that n × hash is
/// never 0 for an n > 0 and differs for different n.
fn counter_day_hash(key: &str, day: Day) -> u64 {
    let h = fnv1a(key.as_bytes(), FNV_OFFSET);
    mix(fnv1a(&day.days_since_epoch().to_le_bytes(), h)) | 1
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: stable across processes and releases (unlike the standard
/// hasher), and plenty for spreading keys.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A finaliser (splitmix64's): FNV's low bits mix poorly.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The named counters and their records of the audited days, summed into
/// [`GROUPS`] groups a day: what a grouped audit holds, whatever the number
/// of counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupedTallies {
    /// Per day, per group: the counters' hits.
    pub counted: BTreeMap<Day, Vec<GroupTally>>,
    /// Per day, per group: the page hit records.
    pub records: BTreeMap<Day, Vec<GroupTally>>,
    /// Each day's hits on all counters, as the day totals hold them.
    pub day_totals: BTreeMap<Day, u64>,
    /// Counters read whose total is not their base plus their days.
    pub totals_off_days: u64,
    /// Counters read with hits on the audited days.
    pub counters: u64,
    /// Counter records read.
    pub counters_read: u64,
    /// Page hit records read.
    pub records_read: u64,
}

impl GroupedTallies {
    /// A counter's `n` hits on `day`, as it holds them. Keys are taken as
    /// the store spells them, unparsed: the audit reads millions.
    pub fn count(&mut self, key: &str, day: Day, n: u64) {
        Self::side(&mut self.counted, day)[group_of(key)].add(counter_day_hash(key, day), n);
    }

    /// One page hit record of `key` on `day`.
    pub fn record(&mut self, key: &str, day: Day) {
        self.records_read += 1;
        Self::side(&mut self.records, day)[group_of(key)].add(counter_day_hash(key, day), 1);
    }

    fn side(side: &mut BTreeMap<Day, Vec<GroupTally>>, day: Day) -> &mut [GroupTally] {
        side.entry(day)
            .or_insert_with(|| vec![GroupTally::default(); GROUPS])
    }

    /// Adds what another part of the same read summed.
    pub fn merge(&mut self, other: GroupedTallies) {
        for (mine, theirs) in [
            (&mut self.counted, other.counted),
            (&mut self.records, other.records),
        ] {
            for (day, groups) in theirs {
                for (into, from) in Self::side(mine, day).iter_mut().zip(groups) {
                    into.hits += from.hits;
                    into.fingerprint = into.fingerprint.wrapping_add(from.fingerprint);
                }
            }
        }
        for (day, hits) in other.day_totals {
            *self.day_totals.entry(day).or_default() += hits;
        }
        self.totals_off_days += other.totals_off_days;
        self.counters += other.counters;
        self.counters_read += other.counters_read;
        self.records_read += other.records_read;
    }

    /// Forgets a day (whose records may have expired).
    pub fn forget(&mut self, day: Day) {
        self.counted.remove(&day);
        self.records.remove(&day);
        self.day_totals.remove(&day);
    }

    /// Every day either side holds, oldest first.
    pub fn days(&self) -> BTreeSet<Day> {
        self.counted
            .keys()
            .chain(self.records.keys())
            .copied()
            .collect()
    }

    /// The (day, group) pairs whose sides differ, oldest day first.
    pub fn differing(&self) -> Vec<(Day, usize)> {
        let none = vec![GroupTally::default(); GROUPS];
        let mut off = Vec::new();
        for day in self.days() {
            let counted = self.counted.get(&day).unwrap_or(&none);
            let records = self.records.get(&day).unwrap_or(&none);
            for (group, (c, r)) in counted.iter().zip(records).enumerate() {
                if c != r {
                    off.push((day, group));
                }
            }
        }
        off
    }
}

impl GroupedTallies {
    /// The first `most` of `differing` to read again, those no batch in
    /// flight can explain first. Counters are read before records, so a batch
    /// counted meanwhile only ever adds records: a group whose counters hold
    /// more hits than its records, or as many held by other counters (the
    /// fingerprint), is off for good; one with more records may be a batch
    /// being counted.
    pub fn to_name(&self, differing: &[(Day, usize)], most: usize) -> Vec<(Day, usize)> {
        let hits = |side: &BTreeMap<Day, Vec<GroupTally>>, (day, group): (Day, usize)| {
            side.get(&day).map_or(0, |groups| groups[group].hits)
        };
        let mut pairs = differing.to_vec();
        pairs.sort_by_key(|pair| hits(&self.counted, *pair) < hits(&self.records, *pair));
        pairs.truncate(most);
        pairs.sort_unstable();
        pairs
    }
}

/// The audit of the named counters from [`GroupedTallies`] and, for the
/// (day, group) pairs `named` (a part of [`GroupedTallies::differing`]), the
/// exact tallies of those groups' counters on those days (`exact`, read
/// after the groups): the day totals and the sums as [`compare_pages`] gives
/// them, and the drift of every named counter. A pair that differs with no
/// counter in it found off (hits counted between the two reads) still makes
/// the audit inconsistent.
pub fn compare_grouped(
    grouped: &GroupedTallies,
    named: &[(Day, usize)],
    exact: &PageTallies,
) -> PagesAudit {
    let differing = grouped.differing();
    let named: BTreeSet<(Day, usize)> = named.iter().copied().collect();
    let in_named = |(key, day): &(PageKey, Day)| named.contains(&(*day, group_of(key.as_str())));
    let subset = PageTallies {
        counted: exact
            .counted
            .iter()
            .filter(|(id, _)| in_named(id))
            .map(|(id, n)| (id.clone(), *n))
            .collect(),
        records: exact
            .records
            .iter()
            .filter(|(id, _)| in_named(id))
            .map(|(id, n)| (id.clone(), *n))
            .collect(),
        ..PageTallies::default()
    };
    let mut drift: Vec<PageDrift> = compare_pages(&subset)
        .drift
        .into_iter()
        .filter(|d| d.key.is_some())
        .collect();
    let sum = |side: &BTreeMap<Day, Vec<GroupTally>>, day: &Day| -> u64 {
        side.get(day)
            .map_or(0, |groups| groups.iter().map(|g| g.hits).sum())
    };
    let days: BTreeSet<Day> = grouped
        .days()
        .into_iter()
        .chain(grouped.day_totals.keys().copied())
        .collect();
    let mut day_totals_off = false;
    for day in &days {
        let counted = grouped.day_totals.get(day).copied().unwrap_or(0);
        let hit_records = sum(&grouped.records, day);
        if counted != hit_records {
            day_totals_off = true;
            drift.push(PageDrift {
                key: None,
                day: *day,
                counted,
                hit_records,
            });
        }
    }
    let groups = grouped.days().len() * GROUPS;
    PagesAudit {
        counters: grouped.counters,
        counted: days.iter().map(|day| sum(&grouped.counted, day)).sum(),
        hit_records: days.iter().map(|day| sum(&grouped.records, day)).sum(),
        day_totals: grouped.day_totals.values().sum(),
        totals_off_days: grouped.totals_off_days,
        consistent: differing.is_empty() && !day_totals_off && grouped.totals_off_days == 0,
        days: days.into_iter().collect(),
        drift,
        coverage: PagesAuditCoverage {
            method: "grouped".into(),
            counters_read: grouped.counters_read,
            hit_records_read: grouped.records_read,
            groups: groups as u64,
            groups_differing: differing.len() as u64,
            groups_named: named.len() as u64,
        },
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

    /// Grouped tallies of exact ones, as a store reading them would sum them.
    fn into_groups(tallies: &PageTallies) -> GroupedTallies {
        let mut grouped = GroupedTallies {
            day_totals: tallies.day_totals.clone(),
            counters: tallies.counted.len() as u64,
            ..GroupedTallies::default()
        };
        for ((key, day), n) in &tallies.counted {
            grouped.count(key.as_str(), *day, *n);
        }
        for ((key, day), n) in &tallies.records {
            for _ in 0..*n {
                grouped.record(key.as_str(), *day);
            }
        }
        grouped
    }

    #[test]
    fn the_grouped_audit_finds_a_drifted_counter_and_names_it() {
        let key = |k: &str| -> PageKey { k.parse().unwrap() };
        let day = hit(1, "a", 1_764_028_800_000).day();
        let mut tallies = PageTallies::default();
        for i in 0..10_000 {
            tallies
                .counted
                .insert((key(&format!("c{i}")), day), 1 + i % 3);
            tallies
                .records
                .insert((key(&format!("c{i}")), day), 1 + i % 3);
        }
        tallies
            .day_totals
            .insert(day, tallies.records.values().sum());
        let agreeing = into_groups(&tallies);
        assert!(agreeing.differing().is_empty());
        let audit = compare_grouped(&agreeing, &[], &PageTallies::default());
        assert!(audit.consistent, "{audit:?}");
        assert_eq!(
            (audit.counted, audit.hit_records, audit.day_totals),
            (19_999, 19_999, 19_999)
        );
        assert_eq!(audit.coverage.groups, GROUPS as u64);

        // One counter edited by hand: its group differs, and reading that
        // group again names it, and nothing else.
        *tallies.counted.get_mut(&(key("c42"), day)).unwrap() += 5;
        let off = into_groups(&tallies);
        let differing = off.differing();
        assert_eq!(differing, [(day, group_of("c42"))]);
        let audit = compare_grouped(&off, &differing, &tallies);
        assert!(!audit.consistent);
        assert_eq!(
            audit.drift,
            [PageDrift {
                key: Some(key("c42")),
                day,
                counted: 6,
                hit_records: 1
            }]
        );
        assert_eq!(
            (audit.coverage.groups_differing, audit.coverage.groups_named),
            (1, 1)
        );
    }

    #[test]
    fn the_grouped_audit_sees_hits_moved_between_counters_of_a_group() {
        let key = |k: &str| -> PageKey { k.parse().unwrap() };
        let day = hit(1, "a", 1_764_028_800_000).day();
        // Two counters of one group: one holds a hit the other's record
        // proves, so the group's and the day's sums agree.
        let a = key("a");
        let b = (0..)
            .map(|i| key(&format!("b{i}")))
            .find(|b| group_of(b.as_str()) == group_of("a"))
            .unwrap();
        let tallies = PageTallies {
            counted: HashMap::from([((a.clone(), day), 3), ((b.clone(), day), 1)]),
            records: HashMap::from([((a.clone(), day), 2), ((b.clone(), day), 2)]),
            day_totals: BTreeMap::from([(day, 4)]),
            totals_off_days: 0,
        };
        let grouped = into_groups(&tallies);
        let differing = grouped.differing();
        assert_eq!(differing, [(day, group_of("a"))], "the fingerprint differs");
        let audit = compare_grouped(&grouped, &differing, &tallies);
        assert!(!audit.consistent);
        let named: BTreeSet<String> = audit
            .drift
            .iter()
            .filter_map(|d| d.key.as_ref().map(ToString::to_string))
            .collect();
        assert_eq!(named, BTreeSet::from([a.to_string(), b.to_string()]));
        // A counter's hit counted on one day but recorded on another is
        // drift on both days.
        let other_day = day.plus(1);
        let moved = PageTallies {
            counted: HashMap::from([((a.clone(), day), 1)]),
            records: HashMap::from([((a.clone(), other_day), 1)]),
            day_totals: BTreeMap::from([(day, 1), (other_day, 1)]),
            totals_off_days: 0,
        };
        assert_eq!(into_groups(&moved).differing().len(), 2);
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
