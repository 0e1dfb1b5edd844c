//! Named counters on Aerospike, beside the tutorial's `hits` and `summary` and
//! laid out so `aql` reads them (every key is sent with its record):
//!
//! - set `page_hits`: key = the hit id, bins `page` (the counter key) and `ts`
//!   (integer milliseconds), and while its batch is not released `batch`. An
//!   existing record marks a retried hit. Kept `PAGE_HIT_RETENTION`.
//! - set `pages`: key = the counter key, bins `total` (integer), `days` (a
//!   K-ordered map `"YYYY-MM-DD"` → hits that day) and `applied` (the batches
//!   counted into it lately, see [`page_batches`](super::page_batches)). All
//!   change in one operate, so a key's days always sum to its total.
//! - set `page_visitors`: key = `"<counter key>@<YYYY-MM-DD>"` (`@` cannot occur
//!   in a counter key), bins `page`, `day` and `visitors`, a HyperLogLog with
//!   [`HLL_INDEX_BITS`] index bits and no min-hash bits fed the day's visitor
//!   hashes.
//! - set `page_days`: key = `"YYYY-MM-DD"`, bins `day`, `hits` (all counters
//!   together that day, with its own `applied` map) and `top`, the day's top
//!   list: the overview's daily chart and today's top keys.
//! - set `page_tops`: key `all-time`, bin `top`: the all-time top list.
//!
//! A top list is a map counter key → minus its hits, trimmed to the
//! [`TOP_KEPT`] lowest ranks: the server ranks equal values by key, so rank
//! order is the overview's order (most hits first, ties by key). It is kept
//! exact with no record holding every counter ([`TopList`] says why): each
//! batch offers the counters whose exact new count (read back when it counts
//! them) could enter, and an offer only ever raises a count (an expression: put if lower),
//! so offers from concurrent batches may land in any order. Which counters are
//! offered is cut down by the list's last entry as the gateway last read it:
//! entries only move up, so that is a lower bound.
//! - set `visitor_salts`: key = `"YYYY-MM-DD"`, bins `day` and `salt` (32 random
//!   bytes): the day's secret for visitor hashes. The first gateway to need it
//!   creates it (create-only, so every gateway ends up with the winner's), and
//!   the one that creates a day's secret deletes those of the days before the
//!   day before. No record TTLs: a namespace without nsup refuses them.
//!
//! A batch of page hits is counted exactly once through faults by the steps
//! of [`page_batches`](super::page_batches): an intent, the `page_hits`
//! records, then `pages` and the `page_days` totals in one batch call, each row
//! idempotent. After that, best effort and beside each other: the
//! `page_visitors` HyperLogLogs (`hll add`) and the offers to the top lists. A
//! row of those that fails does not fail the hits; it is logged and counted as
//! a write fault (`/metrics`, `/readyz`, the audit's findings).
//!
//! `GET /v1/audit` compares `pages` and `page_days` with the `page_hits`
//! records of the days they all still cover ([`AerospikeStore::read_page_tallies`]),
//! and the repair of `split.rs` sets proven drift back.
//!
//! Reading one counter is one operate on `pages` in parallel with one batch
//! read of its `page_visitors` days; the overview is one batch read of the
//! range's `page_days` and `page_tops`: its cost does not grow with the number
//! of counters.

use std::collections::{BTreeMap, HashMap};

use aerospike::expressions::{self as exp, ExpType};
use aerospike::operations::exp::{ExpWriteFlags, write_exp};
use aerospike::operations::hll::{self, HllPolicy};
use aerospike::operations::maps::{self, MapOrder};
use aerospike::{
    BatchOperation, BatchReadPolicy, BatchWritePolicy, Bin, Bins, Client, IndexMap, MapPolicy,
    MapReturnType, MapWriteFlags, ReadPolicy, RecordExistsAction, ResultCode, Value, WritePolicy,
    operations,
};
use counter_api::{
    Day, DayCount, DayHits, EpochMillis, PageKey, PageRecorded, PageStats, PageTotal, PagesOverview,
};
use futures::StreamExt;
use tokio::time::Instant;

use crate::metrics::METRICS;

use super::super::pages::{
    DayRange, HLL_INDEX_BITS, PageBatchCounts, PageHitToCount, PageTallies, TOP_KEPT, TopList,
    VisitorSalt, audit_window, first_page_occurrences, number_page_batch, ranks_before,
};
use super::batches::{back_to_batch, first_only};
use super::{
    AerospikeStore, Backoff, StoreError, TOTAL_BIN, answers, batch_with_retries, millis_until,
    query_policy, retryable, row_failure, unavailable_or_failed,
};

pub(super) const PAGE_HITS_SET: &str = "page_hits";
pub(super) const PAGES_SET: &str = "pages";
const PAGE_VISITORS_SET: &str = "page_visitors";
pub(super) const PAGE_DAYS_SET: &str = "page_days";
const PAGE_TOPS_SET: &str = "page_tops";
/// The `page_tops` record of the all-time top list.
const ALL_TIME_KEY: &str = "all-time";
const VISITOR_SALTS_SET: &str = "visitor_salts";

pub(super) const PAGE_BIN: &str = "page";
pub(super) const TS_BIN: &str = "ts";
pub(super) const DAYS_BIN: &str = "days";
pub(super) const DAY_BIN: &str = "day";
const VISITORS_BIN: &str = "visitors";
pub(super) const HITS_BIN: &str = "hits";
/// In a `page_days` record: the shortest page hit retention, in seconds, of
/// any gateway that counted hits of that day (`i64::MAX`: forever).
pub(super) const KEEP_BIN: &str = "keep";
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
pub(super) const KEY_ORDERED: MapPolicy =
    MapPolicy::new(MapOrder::KeyOrdered, MapWriteFlags::DEFAULT);

/// One counter key of a batch: what the batch adds to it, in all and per day.
pub(super) struct KeyPlan<'a> {
    pub key: &'a PageKey,
    pub added: u64,
    /// Every day the batch has hits on the key for, with the hits it adds that
    /// day (0 for a day with duplicates only).
    pub days: BTreeMap<Day, u64>,
}

/// A key's counters after the batch: its total and the batch's days.
pub(super) type KeyAfter = (u64, BTreeMap<Day, u64>);

/// What a batch adds to one day's top list: its counters with their counts
/// that day after it.
type DayOffer<'a> = Vec<(&'a PageKey, u64)>;

impl AerospikeStore {
    /// Counts a batch of page hits exactly once ([`page_batches`](super::page_batches)),
    /// then adds its visitors and offers its counts to the top lists.
    pub(super) async fn record_page_batch(
        &self,
        hits: &[PageHitToCount],
    ) -> Result<Vec<Result<PageRecorded, StoreError>>, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;
        self.wait_while_split_suspected(deadline).await?;
        let firsts = first_page_occurrences(hits);
        let batch = self.page_writer().next_batch();
        let counted = self
            .count_page_batch(client, &batch, &first_only(hits, &firsts), deadline)
            .await
            .map_err(|unfinished| unfinished.answer(&self.inner.page_writer, &batch))?;
        // A later occurrence of an id is a duplicate.
        let created = back_to_batch(&firsts, counted.claims, || Ok(false));
        let is_counted: Vec<bool> = created.iter().map(|c| matches!(c, Ok(true))).collect();
        let counts = PageBatchCounts::of(hits, &is_counted);
        let mut known = HashMap::new();
        let mut key_errors = HashMap::new();
        for (key, after) in counted.after {
            match after {
                Ok(after) => {
                    known.insert(key, after);
                }
                Err(error) => {
                    tracing::warn!(%key, %batch, %error, "a page counter was counted, but its numbers are not known");
                    key_errors.insert(key, error);
                }
            }
        }
        tokio::join!(
            METRICS.timed(
                "page_batch_visitors",
                self.add_visitors(client, &counts, deadline)
            ),
            METRICS.timed(
                "page_batch_tops",
                self.offer_to_tops(client, &counts, &known, deadline)
            ),
        );

        let mut total_after = HashMap::new();
        let mut day_after = HashMap::new();
        for (key, (total, days)) in known {
            for (day, n) in days {
                day_after.insert((key.clone(), day), n);
            }
            total_after.insert(key, total);
        }
        // Stand-ins the numbering can count down from, for the keys whose
        // numbers are not known: their hits are answered with the error.
        for (key, added) in &counts.per_key {
            total_after.entry(key.clone()).or_insert(*added);
        }
        for (key_day, added) in &counts.per_key_day {
            day_after.entry(key_day.clone()).or_insert(*added);
        }
        let numbered = number_page_batch(hits, &is_counted, &counts, &total_after, &day_after);
        Ok(answers(hits, created, numbered, &key_errors, |hit| {
            &hit.key
        }))
    }

    /// The visitors of each counter and day of the batch, best effort: a row
    /// that fails is a write fault, logged and counted, and the hits stay
    /// answered (an estimate stays an estimate).
    async fn add_visitors(&self, client: &Client, counts: &PageBatchCounts, deadline: Instant) {
        let policy = BatchWritePolicy {
            send_key: true,
            ..BatchWritePolicy::default()
        };
        let mut rows = Vec::new();
        for ((key, day), visitors) in &counts.visitors {
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
        self.write_best_effort(client, rows, deadline).await;
    }

    /// Offers the batch's counters, with their exact counts after it (`known`:
    /// total, and count on each day of the batch), to the all-time and the
    /// day's top lists. Offers only ever raise a count, so a repeat (by the
    /// sweeper) or a late one changes nothing; a row that fails is a write
    /// fault.
    pub(super) async fn offer_to_tops(
        &self,
        client: &Client,
        counts: &PageBatchCounts,
        known: &HashMap<PageKey, KeyAfter>,
        deadline: Instant,
    ) {
        let policy = BatchWritePolicy {
            send_key: true,
            ..BatchWritePolicy::default()
        };
        let mut rows = Vec::new();
        let mut per_day: BTreeMap<Day, DayOffer<'_>> = BTreeMap::new();
        for (key, day) in counts.per_key_day.keys() {
            let Some(n) = known.get(key).and_then(|(_, days)| days.get(day)) else {
                continue;
            };
            per_day.entry(*day).or_default().push((key, *n));
        }
        for (day, offered) in per_day {
            let Ok(record) = self.key(PAGE_DAYS_SET, &day.to_string()) else {
                continue;
            };
            let mut ops = vec![operations::put(&Bin::new(OLD_PAGES_BIN, Value::Nil))];
            ops.extend(self.offers(&day.to_string(), offered));
            rows.push(BatchOperation::write(&policy, record, ops));
        }
        let all_time: Vec<(&PageKey, u64)> = counts
            .per_key
            .keys()
            .filter_map(|key| Some((key, known.get(key)?.0)))
            .collect();
        let offers = self.offers(ALL_TIME_KEY, all_time);
        if !offers.is_empty()
            && let Ok(record) = self.key(PAGE_TOPS_SET, ALL_TIME_KEY)
        {
            rows.push(BatchOperation::write(&policy, record, offers));
        }
        self.write_best_effort(client, rows, deadline).await;
    }

    /// Writes `rows` as one batch call (with retries of what surely did not
    /// apply); a row that fails is logged and counted as a write fault. Top
    /// lists' answers teach the gateway their last entries.
    async fn write_best_effort(
        &self,
        client: &Client,
        mut rows: Vec<BatchOperation>,
        deadline: Instant,
    ) {
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
                    let error = row_failure(row);
                    tracing::warn!(set = record.set_name(), key = ?record.user_key(), %error,
                        "visitors or top list of a page hit batch not written");
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
            operations::get_bin(super::imports::BASE_BINS[0]),
            operations::get_bin(super::imports::BASE_BINS[1]),
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
        let (total, base, hits_on) = match page {
            Ok(record) => (
                count(last_value(&record.bins, TOTAL_BIN)).unwrap_or(0),
                super::imports::base_of(&record.bins)?,
                last_value(&record.bins, DAYS_BIN).map_or_else(BTreeMap::new, day_counts),
            ),
            Err(error) if error.matches(&[ResultCode::KeyNotFoundError]) => {
                (0, None, BTreeMap::new())
            }
            Err(error) => return Err(unavailable_or_failed(&error)),
        };
        let mut counts = Vec::with_capacity(days.len());
        for (day, row) in days.into_iter().zip(&visitor_rows) {
            let visitors = match row.record() {
                Some(record) => count(last_value(&record.bins, VISITORS_BIN)).unwrap_or(0),
                None if absent(row) => 0,
                None => return Err(row_failure(row)),
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
            base,
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
            None => Err(row_failure(row)),
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

    /// What the audit compares, read in this order (the counters first, then
    /// the records): a batch counted meanwhile can then only make a counter
    /// read older than the records, never the records older than a counter,
    /// and the repair's guarded writes refuse a counter that moved.
    pub(super) async fn read_page_tallies(&self, since: Day) -> Result<PageTallies, StoreError> {
        let client = self.client()?;
        let mut tallies = PageTallies::default();
        let since_ms = i64::from(since.days_since_epoch()) * 86_400_000;
        let mut policy = query_policy();
        // A full scan takes as long as it takes, but not forever.
        policy.base_policy.total_timeout = 120_000;
        let mut stream = self
            .scan(
                client,
                &policy,
                PAGES_SET,
                Bins::from([TOTAL_BIN, DAYS_BIN, super::imports::BASE_BIN]),
            )
            .await?;
        while let Some(record) = stream.next().await {
            let record = record?;
            let Some(Value::String(key)) = record.key.as_ref().and_then(|k| k.user_key()) else {
                continue;
            };
            let Ok(key) = key.parse::<PageKey>() else {
                continue;
            };
            let days = record
                .bins
                .get(DAYS_BIN)
                .map_or_else(BTreeMap::new, day_counts);
            // An imported base is in the total and in no day.
            let base = count(record.bins.get(super::imports::BASE_BIN)).unwrap_or(0);
            if count(record.bins.get(TOTAL_BIN)).unwrap_or(0) != base + days.values().sum::<u64>() {
                tallies.totals_off_days += 1;
            }
            for (day, hits) in days.range(since..) {
                if *hits > 0 {
                    tallies.counted.insert((key.clone(), *day), *hits);
                }
            }
        }
        let mut days: Vec<Day> = tallies.counted.keys().map(|(_, day)| *day).collect();
        days.sort_unstable();
        days.dedup();
        // The records: only those from `since` on leave the server.
        policy.base_policy.filter_expression = Some(exp::ge(
            exp::int_bin(TS_BIN.to_owned()),
            exp::int_val(since_ms),
        ));
        let mut stream = self
            .scan(
                client,
                &policy,
                PAGE_HITS_SET,
                Bins::from([PAGE_BIN, TS_BIN]),
            )
            .await?;
        while let Some(record) = stream.next().await {
            let record = record?;
            let (Some(Value::String(key)), Some(Value::Int(ts))) =
                (record.bins.get(PAGE_BIN), record.bins.get(TS_BIN))
            else {
                continue;
            };
            let (Ok(key), Ok(ts)) = (key.parse::<PageKey>(), EpochMillis::new(i128::from(*ts)))
            else {
                continue;
            };
            *tallies.records.entry((key, Day::of(ts))).or_default() += 1;
        }
        days.extend(tallies.records.keys().map(|(_, day)| *day));
        days.sort_unstable();
        days.dedup();
        let read = BatchReadPolicy::default();
        let mut rows = days
            .iter()
            .map(|day| {
                let record = self.key(PAGE_DAYS_SET, &day.to_string())?;
                Ok(BatchOperation::read(
                    &read,
                    record,
                    Bins::from([HITS_BIN, KEEP_BIN]),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let deadline = Instant::now() + self.inner.timeout;
        batch_with_retries(client, &mut rows, deadline).await;
        let now = std::time::SystemTime::now();
        for (day, row) in days.into_iter().zip(&rows) {
            let (hits, keep) = match row.record() {
                Some(record) => (
                    count(record.bins.get(HITS_BIN)).unwrap_or(0),
                    count(record.bins.get(KEEP_BIN)),
                ),
                None if absent(row) => (0, None),
                None => return Err(row_failure(row)),
            };
            // Some gateway wrote records of this day that may have expired.
            let kept = keep.filter(|secs| *secs < i64::MAX as u64).map(|secs| {
                audit_window(
                    crate::store::Retention(Some(std::time::Duration::from_secs(secs))),
                    now,
                )
            });
            if kept.is_some_and(|first| day < first) {
                tallies.counted.retain(|(_, d), _| *d != day);
                tallies.records.retain(|(_, d), _| *d != day);
                continue;
            }
            tallies.day_totals.insert(day, hits);
        }
        Ok(tallies)
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
        let mut stream = self
            .scan(client, &policy, PAGES_SET, Bins::from([TOTAL_BIN]))
            .await?;
        let mut best = TopList::default();
        let mut counters = 0_u64;
        while let Some(record) = stream.next().await {
            let record = record?;
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

/// A key's counters after its row of step 3 (`page_batches`), checked against
/// what the batch added (a row that applied but reads back less than it added
/// is answered as an error).
pub(super) fn key_after(plan: &KeyPlan<'_>, row: &BatchOperation) -> Result<KeyAfter, StoreError> {
    let Some(record) = row.record() else {
        // Only a key with duplicates alone is read rather than written, and it
        // may have no record (an older gateway took back the total of a hit
        // whose record stayed).
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
        _ => Err(StoreError::Failed(format!(
            "pages record {} reads back less than was added to it",
            plan.key
        ))),
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
pub(super) fn last_value<'a>(bins: &'a IndexMap<String, Value>, bin: &str) -> Option<&'a Value> {
    match bins.get(bin)? {
        Value::MultiResult(values) => values.last(),
        value => Some(value),
    }
}

pub(super) fn count(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::MultiResult(values) | Value::List(values) => count(values.last()),
        _ => None,
    }
}

/// The entries of a map answer, whichever form the client decoded it to.
pub(super) fn map_entries(value: &Value) -> Vec<(&Value, &Value)> {
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
    use super::*;

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
