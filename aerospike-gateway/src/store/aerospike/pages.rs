//! Named counters on Aerospike, beside the tutorial's `hits` and `summary` and
//! laid out so `aql` reads them (every key is sent with its record):
//!
//! - set `page_hits`: key = the hit id, bins `page` (the counter key) and `ts`
//!   (integer milliseconds). An existing record marks a retried hit.
//! - set `pages`: key = the counter key, bins `total` (integer) and `days` (a
//!   K-ordered map `"YYYY-MM-DD"` → hits that day). Both change in one operate,
//!   so a key's days always sum to its total.
//! - set `page_visitors`: key = `"<counter key>@<YYYY-MM-DD>"` (`@` cannot occur
//!   in a counter key), bins `page`, `day` and `visitors`, a HyperLogLog with
//!   [`HLL_INDEX_BITS`] index bits and no min-hash bits fed the day's visitor
//!   hashes.
//! - set `page_days`: key = `"YYYY-MM-DD"`, bins `day`, `hits` (all counters
//!   together that day) and `top`, the day's top list: the overview's daily
//!   chart and today's top keys.
//! - set `page_tops`: key `all-time`, bin `top`: the all-time top list.
//!
//! A top list is a map counter key → minus its hits, trimmed to the
//! [`TOP_KEPT`] lowest ranks: the server ranks equal values by key, so rank
//! order is the overview's order (most hits first, ties by key). It is kept
//! exact with no record holding every counter ([`TopList`] says why): each
//! batch offers the counters whose exact new count (read back in step 2) could
//! enter, and an offer only ever raises a count (an expression: put if lower),
//! so offers from concurrent batches may land in any order. Which counters are
//! offered is cut down by the list's last entry as the gateway last read it:
//! entries only move up, so that is a lower bound.
//! - set `visitor_salts`: key = `"YYYY-MM-DD"`, bins `day` and `salt` (32 random
//!   bytes): the day's secret for visitor hashes. The first gateway to need it
//!   creates it (create-only, so every gateway ends up with the winner's), and
//!   the one that creates a day's secret deletes those of the days before the
//!   day before. No record TTLs: a namespace without nsup refuses them.
//!
//! A batch of page hits takes three round trips (each one batch call, which the
//! client splits per node):
//! 1. the `page_hits` records, one create-only batch write, as for the tutorial's
//!    hits;
//! 2. one batch operate over the batch's distinct counter keys: per key
//!    `add total k`, `increment days[day] by k_day` for each day (a batch can
//!    straddle midnight), then read back `total` and those days. Keys with only
//!    duplicates are read, not written. Rows answered KEY_BUSY or otherwise
//!    surely not applied are sent again with backoff until the deadline. If a
//!    key surely failed, its just-created `page_hits` records are deleted again
//!    (one batch) and its hits answered with the error; if its outcome is in
//!    doubt, they stay and the hits are answered 503 (a retry is then a
//!    duplicate: at most once, as on the tutorial path);
//! 3. one batch operate over the `page_visitors` records (`hll add`), the
//!    `page_days` records of the batch and `page_tops`: not atomic with the
//!    totals. A row that fails is not retried past the deadline and does not
//!    fail the hits; it is logged and counted as a write fault (`/metrics`,
//!    `/readyz`, the audit's findings).
//!
//! Reading one counter is one operate on `pages` in parallel with one batch
//! read of its `page_visitors` days; the overview is one batch read of the
//! range's `page_days` and `page_tops`: its cost does not grow with the number
//! of counters.

use std::collections::{BTreeMap, HashMap, HashSet};

use aerospike::expressions::{self as exp, ExpType};
use aerospike::operations::exp::{ExpWriteFlags, write_exp};
use aerospike::operations::hll::{self, HllPolicy};
use aerospike::operations::maps::{self, MapOrder};
use aerospike::query::{PartitionFilter, Statement};
use aerospike::{
    BatchOperation, BatchReadPolicy, BatchWritePolicy, Bin, Bins, Client, IndexMap, MapPolicy,
    MapReturnType, MapWriteFlags, ReadPolicy, RecordExistsAction, ResultCode, Value, WritePolicy,
    operations,
};
use counter_api::{
    Day, DayCount, DayHits, PageKey, PageRecorded, PageStats, PageTotal, PagesOverview,
};
use futures::StreamExt;
use tokio::time::Instant;

use crate::metrics::METRICS;

use super::super::pages::{
    DayRange, HLL_INDEX_BITS, PageBatchCounts, PageHitToCount, TOP_KEPT, TopList, VisitorSalt,
    first_page_occurrences, number_page_batch, ranks_before,
};
use super::{
    AerospikeStore, Backoff, CounterFailure, StoreError, TOTAL_BIN, answers, batch_with_retries,
    millis_until, query_policy, retryable, row_failure, unavailable_or_failed,
};

const PAGE_HITS_SET: &str = "page_hits";
const PAGES_SET: &str = "pages";
const PAGE_VISITORS_SET: &str = "page_visitors";
const PAGE_DAYS_SET: &str = "page_days";
const PAGE_TOPS_SET: &str = "page_tops";
/// The `page_tops` record of the all-time top list.
const ALL_TIME_KEY: &str = "all-time";
const VISITOR_SALTS_SET: &str = "visitor_salts";

const PAGE_BIN: &str = "page";
const TS_BIN: &str = "ts";
const DAYS_BIN: &str = "days";
const DAY_BIN: &str = "day";
const VISITORS_BIN: &str = "visitors";
const HITS_BIN: &str = "hits";
/// The unbounded map of every counter of a day that `page_days` records held
/// before the top lists: deleted by the next write of the day.
const OLD_PAGES_BIN: &str = "pages";
const TOP_BIN: &str = "top";
const SALT_BIN: &str = "salt";

/// A new day's secret deletes those of the days from two back to this many back,
/// so a gateway down for weeks still leaves none behind.
const FORGET_SALTS_DAYS: u32 = 30;

/// Adds a counter to a top list only if it is not there yet.
const PUT_IF_ABSENT: MapPolicy = MapPolicy::new(
    MapOrder::KeyOrdered,
    MapWriteFlags::from_bits(MapWriteFlags::CREATE_ONLY.bits() | MapWriteFlags::NO_FAIL.bits()),
);

/// The maps of `days` and `page_days.pages`: ordered by key, so an increment
/// finds its entry by binary search and `days` reads back in date order.
const KEY_ORDERED: MapPolicy = MapPolicy::new(MapOrder::KeyOrdered, MapWriteFlags::DEFAULT);

/// One counter key of a batch: what the batch adds to it, in all and per day.
struct KeyPlan<'a> {
    key: &'a PageKey,
    added: u64,
    /// Every day the batch has hits on the key for, with the hits it adds that
    /// day (0 for a day with duplicates only).
    days: BTreeMap<Day, u64>,
}

/// A key's counters after the batch: its total and the batch's days.
type KeyAfter = (u64, BTreeMap<Day, u64>);

/// What a batch adds to one day: its hits, and its counters with their
/// counts that day after it.
#[derive(Default)]
struct DayOffer<'a> {
    hits: u64,
    counters: Vec<(&'a PageKey, u64)>,
}

/// What step 2 left for step 3: what the batch added, the keys that surely
/// failed, and every key's counts after the batch.
struct Tallies<'a> {
    counts: &'a PageBatchCounts,
    surely_failed: &'a HashSet<&'a PageKey>,
    /// Keys whose counts after the batch are not known (the update failed or
    /// is in doubt): never offered to a top list, which holds exact counts only.
    unread: &'a HashMap<&'a PageKey, StoreError>,
    total_after: &'a HashMap<PageKey, u64>,
    day_after: &'a HashMap<(PageKey, Day), u64>,
}

impl AerospikeStore {
    pub(super) async fn record_page_batch(
        &self,
        hits: &[PageHitToCount],
    ) -> Result<Vec<Result<PageRecorded, StoreError>>, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;

        // 1. The hit records: which hits are new.
        let firsts = first_page_occurrences(hits);
        let records = hits.iter().zip(&firsts).map(|(hit, &first)| {
            first.then(|| {
                let ts = i64::try_from(hit.ts.as_u64()).expect("EpochMillis fits in i64");
                let bins = vec![
                    Bin::new(PAGE_BIN, Value::from(hit.key.as_str().to_owned())),
                    Bin::new(TS_BIN, Value::from(ts)),
                ];
                (hit.id.to_string(), bins)
            })
        });
        // Each step is timed on its own (`store_operation_seconds`), so
        // `/metrics` shows where a batch's time goes.
        let created = METRICS
            .timed(
                "page_batch_hit_records",
                self.create_records(
                    client,
                    PAGE_HITS_SET,
                    records,
                    self.page_hit_expiration(),
                    deadline,
                ),
            )
            .await?;
        let counted: Vec<bool> = created.iter().map(|c| matches!(c, Ok(true))).collect();
        let counts = PageBatchCounts::of(hits, &counted);

        // 2. The totals and days of every key of the batch.
        let plans = plan_keys(hits, &created, &counts);
        let outcomes = METRICS
            .timed(
                "page_batch_counters",
                self.add_to_pages(client, &plans, deadline),
            )
            .await;
        let mut total_after = HashMap::new();
        let mut day_after = HashMap::new();
        let mut key_errors: HashMap<&PageKey, StoreError> = HashMap::new();
        let mut surely_failed: HashSet<&PageKey> = HashSet::new();
        for (plan, outcome) in plans.iter().zip(outcomes) {
            let (total, days) = match outcome {
                Ok(after) => after,
                Err(failure) => {
                    if matches!(failure.error, StoreError::Failed(_)) {
                        self.inner.faults.record(PAGES_SET, &failure.error);
                    }
                    if failure.in_doubt {
                        tracing::error!(key = %plan.key, hits = plan.added, error = %failure.error,
                            "page total update in doubt; its page hit records stay");
                    } else if plan.added > 0 {
                        tracing::warn!(key = %plan.key, hits = plan.added, error = %failure.error,
                            "page total not updated; its page hits are taken back");
                        surely_failed.insert(plan.key);
                    } else {
                        tracing::warn!(key = %plan.key, error = %failure.error,
                            "page total not read back for duplicate hits");
                    }
                    key_errors.insert(plan.key, failure.error);
                    // Stand-ins the numbering can count down from; these hits
                    // are answered with the error.
                    (plan.added, plan.days.clone())
                }
            };
            total_after.insert(plan.key.clone(), total);
            for (day, hits) in days {
                day_after.insert((plan.key.clone(), day), hits);
            }
        }
        // The hit records of keys that surely failed go again (their hits are
        // answered with the error, so a retry counts them), while
        // 3. visitors and all counters' days are added, best effort.
        let uncounted = hits
            .iter()
            .zip(&counted)
            .filter(|(hit, c)| **c && surely_failed.contains(&hit.key))
            .map(|(hit, _)| hit.id.to_string());
        let why = "page hit record written but not counted";
        let tallies = Tallies {
            counts: &counts,
            surely_failed: &surely_failed,
            unread: &key_errors,
            total_after: &total_after,
            day_after: &day_after,
        };
        tokio::join!(
            self.forget_records(client, PAGE_HITS_SET, uncounted, why),
            METRICS.timed(
                "page_batch_days_and_tops",
                self.add_visitors_days_and_tops(client, &tallies, deadline),
            ),
        );

        let numbered = number_page_batch(hits, &counted, &counts, &total_after, &day_after);
        Ok(answers(hits, created, numbered, &key_errors, |hit| {
            &hit.key
        }))
    }

    /// Step 2: one batch operate over the keys, answering each key's counters
    /// after the batch, in the order of `plans`.
    async fn add_to_pages(
        &self,
        client: &Client,
        plans: &[KeyPlan<'_>],
        deadline: Instant,
    ) -> Vec<Result<KeyAfter, CounterFailure>> {
        let write = BatchWritePolicy {
            send_key: true,
            ..BatchWritePolicy::default()
        };
        let read = BatchReadPolicy::default();
        let mut rows = Vec::with_capacity(plans.len());
        for plan in plans {
            let key = match self.key(PAGES_SET, plan.key.as_str()) {
                Ok(key) => key,
                Err(error) => {
                    return plans
                        .iter()
                        .map(|_| Err(CounterFailure::surely(error.clone())))
                        .collect();
                }
            };
            let read_back = [
                operations::get_bin(TOTAL_BIN),
                maps::get_by_key_list(
                    DAYS_BIN,
                    plan.days
                        .keys()
                        .map(|day| Value::from(day.to_string()))
                        .collect(),
                    MapReturnType::KEY_VALUE,
                ),
            ];
            if plan.added == 0 {
                rows.push(BatchOperation::read_ops(&read, key, read_back));
                continue;
            }
            let mut ops = vec![operations::add(&Bin::new(
                TOTAL_BIN,
                Value::from(plan.added as i64),
            ))];
            for (day, &added) in plan.days.iter().filter(|(_, n)| **n > 0) {
                ops.push(maps::increment_value(
                    &KEY_ORDERED,
                    DAYS_BIN,
                    Value::from(day.to_string()),
                    Value::from(added as i64),
                ));
            }
            ops.extend(read_back);
            rows.push(BatchOperation::write(&write, key, ops));
        }
        batch_with_retries(client, &mut rows, deadline).await;
        plans
            .iter()
            .zip(&rows)
            .map(|(plan, row)| key_after(plan, row))
            .collect()
    }

    /// Step 3: the visitors of each key and day, each day's hits on all keys and
    /// the top lists, for the keys whose totals did not surely fail. A row that
    /// fails is a write fault: logged and counted, the hits stay answered.
    async fn add_visitors_days_and_tops(
        &self,
        client: &Client,
        tallies: &Tallies<'_>,
        deadline: Instant,
    ) {
        let policy = BatchWritePolicy {
            send_key: true,
            ..BatchWritePolicy::default()
        };
        let counted = |key: &PageKey| !tallies.surely_failed.contains(key);
        let known = |key: &PageKey| !tallies.unread.contains_key(key);
        let mut rows = Vec::new();
        for ((key, day), visitors) in &tallies.counts.visitors {
            if !counted(key) {
                continue;
            }
            let Ok(record) = self.key(PAGE_VISITORS_SET, &visitors_key(key, *day)) else {
                continue;
            };
            let mut hashes: Vec<u64> = visitors.iter().map(|v| v.0).collect();
            hashes.sort_unstable();
            hashes.dedup();
            let ops = [
                operations::put(&Bin::new(PAGE_BIN, Value::from(key.as_str().to_owned()))),
                operations::put(&Bin::new(DAY_BIN, Value::from(day.to_string()))),
                // Creates the HyperLogLog if the bin is missing.
                hll::add_with_index_and_min_hash(
                    &HllPolicy::default(),
                    VISITORS_BIN,
                    hashes.into_iter().map(|h| Value::Int(h as i64)).collect(),
                    i64::from(HLL_INDEX_BITS),
                    0,
                ),
            ];
            rows.push(BatchOperation::write(&policy, record, ops));
        }
        // Per day: the hits the batch adds, and its counters with their counts.
        let mut per_day: BTreeMap<Day, DayOffer<'_>> = BTreeMap::new();
        for ((key, day), &hits) in &tallies.counts.per_key_day {
            if counted(key) {
                let day_offer = per_day.entry(*day).or_default();
                day_offer.hits += hits;
                if known(key) {
                    day_offer
                        .counters
                        .push((key, tallies.day_after[&(key.clone(), *day)]));
                }
            }
        }
        for (
            day,
            DayOffer {
                hits,
                counters: offered,
            },
        ) in per_day
        {
            let Ok(record) = self.key(PAGE_DAYS_SET, &day.to_string()) else {
                continue;
            };
            let mut ops = vec![
                operations::put(&Bin::new(DAY_BIN, Value::from(day.to_string()))),
                operations::add(&Bin::new(HITS_BIN, Value::from(hits as i64))),
                operations::put(&Bin::new(OLD_PAGES_BIN, Value::Nil)),
            ];
            ops.extend(self.offers(&day.to_string(), offered));
            rows.push(BatchOperation::write(&policy, record, ops));
        }
        let all_time: Vec<(&PageKey, u64)> = tallies
            .counts
            .per_key
            .keys()
            .filter(|key| known(key))
            .map(|key| (key, tallies.total_after[key]))
            .collect();
        let offers = self.offers(ALL_TIME_KEY, all_time);
        if !offers.is_empty()
            && let Ok(record) = self.key(PAGE_TOPS_SET, ALL_TIME_KEY)
        {
            rows.push(BatchOperation::write(&policy, record, offers));
        }
        if rows.is_empty() {
            return;
        }
        batch_with_retries(client, &mut rows, deadline).await;
        for row in &rows {
            let record = &row.batch_record().key;
            match row.record() {
                Some(answer) if record.set_name() != PAGE_VISITORS_SET => {
                    let list = match record.user_key() {
                        Some(Value::String(list)) => list.clone(),
                        _ => continue,
                    };
                    self.learn_top_cut(list, last_value(&answer.bins, TOP_BIN));
                }
                Some(_) => {}
                None => {
                    let error = row_failure(row).error;
                    tracing::warn!(set = record.set_name(), key = ?record.user_key(), %error,
                        "visitors, day totals or top list of a page hit batch not counted");
                    self.inner.faults.record(record.set_name(), &error);
                }
            }
        }
    }

    /// The ops that offer counters with their counts now to the top list `list`
    /// (a day, or [`ALL_TIME_KEY`]), then trim it and read back its last entry;
    /// none if no counter can enter it.
    fn offers<'k>(
        &self,
        list: &str,
        offered: impl IntoIterator<Item = (&'k PageKey, u64)>,
    ) -> Vec<aerospike::operations::Operation> {
        let cut = self.top_cut(list);
        let mut ops = Vec::new();
        for (key, hits) in offered {
            if let Some((cut_hits, cut_key)) = &cut
                && !ranks_before(hits, key.as_str(), *cut_hits, cut_key.as_str())
            {
                continue;
            }
            let stored = -(hits as i64);
            let name = || exp::string_val(key.as_str().to_owned());
            ops.push(maps::put(
                &PUT_IF_ABSENT,
                TOP_BIN,
                Value::from(key.as_str().to_owned()),
                Value::from(stored),
            ));
            // Lowers the stored value (raises the count) only: an offer from an
            // older batch may land after a newer one.
            ops.push(write_exp(
                TOP_BIN,
                exp::cond(vec![
                    exp::lt(
                        exp::int_val(stored),
                        exp::maps::get_by_key(
                            MapReturnType::VALUE,
                            ExpType::Int,
                            name(),
                            exp::map_bin(TOP_BIN),
                            &[],
                        ),
                    ),
                    exp::maps::put(
                        &KEY_ORDERED,
                        name(),
                        exp::int_val(stored),
                        exp::map_bin(TOP_BIN),
                        &[],
                    ),
                    exp::map_bin(TOP_BIN),
                ]),
                ExpWriteFlags::DEFAULT,
            ));
        }
        if !ops.is_empty() {
            ops.push(maps::remove_by_rank_range_from(
                TOP_BIN,
                TOP_KEPT as i64,
                MapReturnType::NONE,
            ));
            ops.push(maps::get_by_rank_range_from(
                TOP_BIN,
                TOP_KEPT as i64 - 1,
                MapReturnType::KEY_VALUE,
            ));
        }
        ops
    }

    /// The last entry of the top list `list` as this gateway last saw it, once
    /// the list is full: a counter that does not rank before it cannot enter.
    fn top_cut(&self, list: &str) -> Option<(u64, PageKey)> {
        self.inner
            .top_cuts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(list)
            .cloned()
    }

    /// Keeps the last entry a top list answered (the read after its trim).
    fn learn_top_cut(&self, list: String, answer: Option<&Value>) {
        let Some(last) = answer.map(top_entries).and_then(|e| e.into_iter().next()) else {
            return;
        };
        let mut cuts = self
            .inner
            .top_cuts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One cut per day is kept for a few days only.
        if cuts.len() > 8 {
            let mut days: Vec<String> = cuts
                .keys()
                .filter(|k| *k != ALL_TIME_KEY)
                .cloned()
                .collect();
            days.sort();
            for day in &days[..days.len().saturating_sub(4)] {
                cuts.remove(day);
            }
        }
        let newer = cuts
            .get(&list)
            .is_none_or(|(hits, key)| ranks_before(last.1, last.0.as_str(), *hits, key.as_str()));
        if newer {
            cuts.insert(list, (last.1, last.0));
        }
    }

    pub(super) async fn read_page_stats(
        &self,
        key: &PageKey,
        range: DayRange,
    ) -> Result<PageStats, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;
        let days: Vec<Day> = range.days().collect();
        let record_key = self.key(PAGES_SET, key.as_str())?;
        let ops = [
            operations::get_bin(TOTAL_BIN),
            // `end` is exclusive: the day after the range.
            maps::get_by_key_range(
                DAYS_BIN,
                Value::from(range.first.to_string()),
                Value::from(range.last.plus(1).to_string()),
                MapReturnType::KEY_VALUE,
            ),
        ];
        let mut policy = WritePolicy::default();
        policy.base_policy.total_timeout = millis_until(deadline);
        let read = BatchReadPolicy::default();
        let mut visitor_rows = days
            .iter()
            .map(|day| {
                let record = self.key(PAGE_VISITORS_SET, &visitors_key(key, *day))?;
                Ok(BatchOperation::read_ops(
                    &read,
                    record,
                    [hll::get_count(VISITORS_BIN)],
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (page, ()) = tokio::join!(
            client.operate(&policy, &record_key, &ops),
            batch_with_retries(client, &mut visitor_rows, deadline),
        );
        let (total, hits_on) = match page {
            Ok(record) => (
                count(last_value(&record.bins, TOTAL_BIN)).unwrap_or(0),
                last_value(&record.bins, DAYS_BIN).map_or_else(BTreeMap::new, day_counts),
            ),
            Err(error) if error.matches(&[ResultCode::KeyNotFoundError]) => (0, BTreeMap::new()),
            Err(error) => return Err(unavailable_or_failed(&error)),
        };
        let mut counts = Vec::with_capacity(days.len());
        for (day, row) in days.into_iter().zip(&visitor_rows) {
            let visitors = match row.record() {
                Some(record) => count(last_value(&record.bins, VISITORS_BIN)).unwrap_or(0),
                None if absent(row) => 0,
                None => return Err(row_failure(row).error),
            };
            counts.push(DayCount {
                day,
                hits: hits_on.get(&day).copied().unwrap_or(0),
                visitors,
            });
        }
        Ok(PageStats {
            key: key.clone(),
            total,
            today: *counts.last().expect("a range holds at least its last day"),
            days: counts,
        })
    }

    pub(super) async fn read_pages_overview(
        &self,
        limit: usize,
        range: DayRange,
    ) -> Result<PagesOverview, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;
        let days: Vec<Day> = range.days().collect();
        let read = BatchReadPolicy::default();
        let mut rows = days
            .iter()
            .map(|day| {
                let record = self.key(PAGE_DAYS_SET, &day.to_string())?;
                let bins = if *day == range.last {
                    Bins::from([HITS_BIN, TOP_BIN])
                } else {
                    Bins::from([HITS_BIN])
                };
                Ok(BatchOperation::read(&read, record, bins))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        rows.push(BatchOperation::read(
            &read,
            self.key(PAGE_TOPS_SET, ALL_TIME_KEY)?,
            Bins::from([TOP_BIN]),
        ));
        batch_with_retries(client, &mut rows, deadline).await;
        let list_of = |row: &BatchOperation| match row.record() {
            Some(record) => Ok((
                count(record.bins.get(HITS_BIN)).unwrap_or(0),
                record
                    .bins
                    .get(TOP_BIN)
                    .map(top_entries)
                    .unwrap_or_default(),
            )),
            None if absent(row) => Ok((0, Vec::new())),
            None => Err(row_failure(row).error),
        };
        let (_, all_time) = list_of(rows.last().expect("the all-time row is there"))?;
        let mut per_day = Vec::with_capacity(days.len());
        let mut today = Vec::new();
        for (day, row) in days.into_iter().zip(&rows) {
            let (hits, top) = list_of(row)?;
            if day == range.last {
                today = top;
            }
            per_day.push(DayHits { day, hits });
        }
        let totals = |entries: Vec<(PageKey, u64)>| {
            TopList::from_entries(entries)
                .top(limit)
                .into_iter()
                .map(|(key, hits)| PageTotal { key, hits })
                .collect()
        };
        Ok(PagesOverview {
            top_all_time: totals(all_time),
            top_today: totals(today),
            days: per_day,
        })
    }

    /// A cluster from before the top lists gets its all-time list once, from a
    /// query of `pages` (bin `total` only), when a gateway connects and finds
    /// no list. Hits counted meanwhile offer themselves as usual: an offer only
    /// raises a count, so the two cannot undo each other.
    pub(super) async fn build_all_time_top(&self, client: &Client) -> Result<(), StoreError> {
        let record = self.key(PAGE_TOPS_SET, ALL_TIME_KEY)?;
        match client
            .get(&ReadPolicy::default(), &record, Bins::from([TOP_BIN]))
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if error.matches(&[ResultCode::KeyNotFoundError]) => {}
            Err(error) => return Err(unavailable_or_failed(&error)),
        }
        let mut policy = query_policy();
        policy.base_policy.total_timeout = 120_000;
        let statement = Statement::new(
            self.inner.namespace.as_str(),
            PAGES_SET,
            Bins::from([TOTAL_BIN]),
        );
        let records = client
            .query(&policy, PartitionFilter::all(), statement)
            .await
            .map_err(|e| unavailable_or_failed(&e))?;
        let mut stream = records.into_stream();
        let mut best = TopList::default();
        let mut counters = 0_u64;
        while let Some(record) = stream.next().await {
            let record = record.map_err(|e| unavailable_or_failed(&e))?;
            let Some(Value::String(key)) = record.key.as_ref().and_then(|k| k.user_key()) else {
                continue;
            };
            if let Ok(key) = key.parse::<PageKey>() {
                counters += 1;
                best.offer(&key, count(record.bins.get(TOTAL_BIN)).unwrap_or(0));
            }
        }
        let entries = best.top(TOP_KEPT);
        if entries.is_empty() {
            return Ok(());
        }
        let ops = self.offers(ALL_TIME_KEY, entries.iter().map(|(k, n)| (k, *n)));
        let deadline = Instant::now() + self.inner.timeout;
        let mut write = self.write_policy(deadline);
        write.base_policy.max_retries = 2;
        client
            .operate(&write, &record, &ops)
            .await
            .map_err(|e| unavailable_or_failed(&e))?;
        tracing::info!(counters, "built the all-time top list from every counter");
        Ok(())
    }

    /// The day's secret: read it, or make it if no gateway has yet. A create-only
    /// write decides between gateways racing to make it; the loser reads the
    /// winner's. A write whose outcome is unknown answers 503: the secret it
    /// sent may or may not be the day's.
    pub(super) async fn day_salt(
        &self,
        day: Day,
        forget_before: Day,
    ) -> Result<VisitorSalt, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;
        let key = self.key(VISITOR_SALTS_SET, &day.to_string())?;
        let mut backoff = Backoff::new();
        let mut lost_race = false;
        loop {
            let mut policy = ReadPolicy::default();
            policy.base_policy.total_timeout = millis_until(deadline);
            let error = match client.get(&policy, &key, Bins::from([SALT_BIN])).await {
                Ok(record) => return stored_salt(record.bins.get(SALT_BIN)),
                Err(error) if error.matches(&[ResultCode::KeyNotFoundError]) && !lost_race => {
                    let salt = new_salt()?;
                    let policy = WritePolicy {
                        record_exists_action: RecordExistsAction::CreateOnly,
                        ..self.write_policy(deadline)
                    };
                    let bins = [
                        Bin::new(DAY_BIN, Value::from(day.to_string())),
                        Bin::new(SALT_BIN, Value::Blob(salt.0.to_vec())),
                    ];
                    match client.put(&policy, &key, &bins).await {
                        Ok(()) => {
                            tracing::info!(%day, "made the day's visitor secret");
                            self.forget_old_salts(client, forget_before).await;
                            return Ok(salt);
                        }
                        Err(error) if error.matches(&[ResultCode::KeyExistsError]) => {
                            lost_race = true;
                            continue;
                        }
                        Err(error) => error,
                    }
                }
                Err(error) => error,
            };
            if retryable(&error) && backoff.wait(deadline).await {
                continue;
            }
            return Err(unavailable_or_failed(&error));
        }
    }

    /// Deletes the secrets of the [`FORGET_SALTS_DAYS`] days before
    /// `forget_before`: nobody can recompute those days' visitor hashes
    /// afterwards.
    async fn forget_old_salts(&self, client: &Client, forget_before: Day) {
        let days = (1..=FORGET_SALTS_DAYS).map(|n| forget_before.minus(n).to_string());
        self.forget_records(
            client,
            VISITOR_SALTS_SET,
            days,
            "an old visitor secret was not deleted; the next day's new secret tries again",
        )
        .await;
    }
}

/// The distinct keys of the batch whose hits are new or duplicates (not failed),
/// in the order they first appear.
fn plan_keys<'a>(
    hits: &'a [PageHitToCount],
    created: &[Result<bool, StoreError>],
    counts: &PageBatchCounts,
) -> Vec<KeyPlan<'a>> {
    let mut plans: Vec<KeyPlan<'a>> = Vec::new();
    let mut index: HashMap<&PageKey, usize> = HashMap::new();
    for (hit, _) in hits.iter().zip(created).filter(|(_, c)| c.is_ok()) {
        let at = *index.entry(&hit.key).or_insert_with(|| {
            plans.push(KeyPlan {
                key: &hit.key,
                added: counts.per_key.get(&hit.key).copied().unwrap_or(0),
                days: BTreeMap::new(),
            });
            plans.len() - 1
        });
        let day = hit.day();
        let added = counts
            .per_key_day
            .get(&(hit.key.clone(), day))
            .copied()
            .unwrap_or(0);
        plans[at].days.insert(day, added);
    }
    plans
}

/// A key's counters after its row of step 2, checked against what the batch
/// added (a row that applied but reads back less than it added is answered as
/// an error, and its hit records are kept).
fn key_after(plan: &KeyPlan<'_>, row: &BatchOperation) -> Result<KeyAfter, CounterFailure> {
    let Some(record) = row.record() else {
        // Only a key with duplicates alone is read rather than written, and it
        // may never have been counted (its hits were counted by a batch whose
        // total then failed for sure).
        if plan.added == 0 && absent(row) {
            return Ok((0, plan.days.keys().map(|day| (*day, 0)).collect()));
        }
        return Err(row_failure(row));
    };
    let total = count(last_value(&record.bins, TOTAL_BIN));
    let stored = last_value(&record.bins, DAYS_BIN).map_or_else(BTreeMap::new, day_counts);
    let days: BTreeMap<Day, u64> = plan
        .days
        .keys()
        .map(|day| (*day, stored.get(day).copied().unwrap_or(0)))
        .collect();
    let consistent = total.is_some_and(|total| total >= plan.added)
        && plan.days.iter().all(|(day, added)| days[day] >= *added);
    match total {
        Some(total) if consistent => Ok((total, days)),
        _ => Err(CounterFailure {
            in_doubt: true,
            error: StoreError::Failed(format!(
                "pages record {} reads back less than was added to it",
                plan.key
            )),
        }),
    }
}

/// The record does not exist (or lacks the bin read): it reads as zeros.
fn absent(row: &BatchOperation) -> bool {
    row.error()
        .is_some_and(|e| e.matches(&[ResultCode::KeyNotFoundError, ResultCode::BinNotFound]))
}

fn visitors_key(key: &PageKey, day: Day) -> String {
    format!("{key}@{day}")
}

/// The last answer for `bin`: an operate answers once per op on the bin.
fn last_value<'a>(bins: &'a IndexMap<String, Value>, bin: &str) -> Option<&'a Value> {
    match bins.get(bin)? {
        Value::MultiResult(values) => values.last(),
        value => Some(value),
    }
}

fn count(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::MultiResult(values) | Value::List(values) => count(values.last()),
        _ => None,
    }
}

/// The entries of a map answer, whichever form the client decoded it to.
fn map_entries(value: &Value) -> Vec<(&Value, &Value)> {
    match value {
        Value::SortedMap(map) => map.iter().collect(),
        Value::OrderedMap(map) => map.iter().collect(),
        Value::HashMap(map) => map.iter().collect(),
        Value::KeyValueList(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    }
}

/// `days` entries as counts per day; entries another writer left malformed are
/// skipped.
fn day_counts(value: &Value) -> BTreeMap<Day, u64> {
    map_entries(value)
        .into_iter()
        .filter_map(|(day, hits)| match day {
            Value::String(day) => Some((day.parse().ok()?, count(Some(hits))?)),
            _ => None,
        })
        .collect()
}

/// A top list's entries (counter key → minus its hits) as counts per key.
fn top_entries(value: &Value) -> Vec<(PageKey, u64)> {
    map_entries(value)
        .into_iter()
        .filter_map(|(key, hits)| match (key, hits) {
            (Value::String(key), Value::Int(minus)) => {
                Some((key.parse().ok()?, u64::try_from(minus.checked_neg()?).ok()?))
            }
            _ => None,
        })
        .collect()
}

fn new_salt() -> Result<VisitorSalt, StoreError> {
    let mut salt = [0; 32];
    getrandom::fill(&mut salt)
        .map_err(|e| StoreError::Failed(format!("no randomness for the visitor secret: {e}")))?;
    Ok(VisitorSalt(salt))
}

fn stored_salt(value: Option<&Value>) -> Result<VisitorSalt, StoreError> {
    match value {
        Some(Value::Blob(bytes)) => bytes.as_slice().try_into().ok().map(VisitorSalt),
        _ => None,
    }
    .ok_or_else(|| StoreError::Failed("Aerospike holds a damaged visitor secret".into()))
}

#[cfg(test)]
mod tests {
    use super::super::super::pages::test_hit as hit;
    use super::*;

    #[test]
    fn plans_cover_every_key_and_day_of_the_batch() {
        let (day1, day2) = (1_764_028_799_000, 1_764_028_800_000); // either side of midnight
        let hits = [
            hit(1, "a", day1),
            hit(2, "b", day2),
            hit(1, "a", day1),
            hit(3, "a", day2),
            hit(4, "c", day2),
            hit(5, "d", day2),
        ];
        let created = vec![
            Ok(true),
            Ok(false), // b: a duplicate only, still read back
            Ok(false),
            Ok(true),
            Err(StoreError::Unavailable("x".into())), // c: failed, not planned
            Ok(true),
        ];
        let counted: Vec<bool> = created.iter().map(|c| matches!(c, Ok(true))).collect();
        let counts = PageBatchCounts::of(&hits, &counted);
        let plans = plan_keys(&hits, &created, &counts);
        let view: Vec<String> = plans
            .iter()
            .map(|p| {
                let days: Vec<String> = p.days.iter().map(|(d, n)| format!("{d}+{n}")).collect();
                format!("{} +{}: {}", p.key, p.added, days.join(" "))
            })
            .collect();
        assert_eq!(
            view,
            [
                "a +2: 2025-11-24+1 2025-11-25+1",
                "b +0: 2025-11-25+0",
                "d +1: 2025-11-25+1",
            ]
        );
    }

    #[test]
    fn map_answers_decode_in_every_form() {
        let days = Value::KeyValueList(vec![
            (Value::from("2025-11-24"), Value::Int(3)),
            (Value::from("not a day"), Value::Int(1)),
            (Value::from("2025-11-25"), Value::Int(2)),
        ]);
        let counts: Vec<(String, u64)> = day_counts(&days)
            .into_iter()
            .map(|(d, n)| (d.to_string(), n))
            .collect();
        assert_eq!(counts, [("2025-11-24".into(), 3), ("2025-11-25".into(), 2)]);
        let top = Value::SortedMap(BTreeMap::from([
            (Value::from("blog/a"), Value::Int(-5)),
            (Value::from("a b"), Value::Int(-9)),
            (Value::from("blog/b"), Value::Int(3)),
        ]));
        assert_eq!(top_entries(&top), [("blog/a".parse().unwrap(), 5)]);
        let answers = IndexMap::from([(
            TOTAL_BIN.to_owned(),
            Value::MultiResult(vec![Value::Nil, Value::Int(7)]),
        )]);
        assert_eq!(count(last_value(&answers, TOTAL_BIN)), Some(7));
    }

    #[test]
    fn only_a_whole_secret_is_a_secret() {
        assert_eq!(
            stored_salt(Some(&Value::Blob(vec![7; 32]))).unwrap(),
            VisitorSalt([7; 32])
        );
        assert!(stored_salt(Some(&Value::Blob(vec![7; 31]))).is_err());
        assert!(stored_salt(None).is_err());
    }
}
