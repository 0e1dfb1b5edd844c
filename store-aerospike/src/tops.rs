//! The named counters' top lists on Aerospike: the all-time one in
//! `page_tops` and one per day in `page_days`.
//!
//! A top list is a map counter key → minus its hits, trimmed to the
//! [`TOP_KEPT`] lowest ranks: the server ranks equal values by key, so rank
//! order is the overview's order (most hits first, ties by key). It is kept
//! exact with no record holding every counter ([`TopList`] says why): each
//! batch offers the counters whose exact new count (read back when it counts
//! them) could enter, and an offer only ever raises a count (an expression:
//! put if lower), so offers from concurrent batches may land in any order.
//! Which counters are offered is cut down by the list's last entry as the
//! gateway last read it: entries only move up, so that is a lower bound.

use std::collections::{BTreeMap, HashMap};

use aerospike::expressions::{self as exp, ExpType};
use aerospike::operations::exp::{ExpWriteFlags, write_exp};
use aerospike::operations::maps::{self, MapOrder};
use aerospike::{
    BatchOperation, BatchWritePolicy, Bin, Bins, Client, MapPolicy, MapReturnType, MapWriteFlags,
    ReadPolicy, ResultCode, Value, operations,
};
use counter_api::{Day, PageKey};
use counter_store::StoreError;
use counter_store::numbering::PageBatchCounts;
use counter_store::tops::{TOP_KEPT, TopList, ranks_before};
use futures::StreamExt;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{
    Retry, count, last_value, map_entries, query_policy, row_failure, unavailable_or_failed,
};
use crate::layout::*;
use crate::once::KEY_ORDERED;
use crate::once::pages::KeyAfter;

/// Adds a counter to a top list only if it is not there yet.
const PUT_IF_ABSENT: MapPolicy = MapPolicy::new(
    MapOrder::KeyOrdered,
    MapWriteFlags::from_bits(MapWriteFlags::CREATE_ONLY.bits() | MapWriteFlags::NO_FAIL.bits()),
);

/// What a batch adds to one day's top list: its counters with their counts
/// that day after it.
type DayOffer<'a> = Vec<(&'a PageKey, u64)>;

impl AerospikeStore {
    /// Offers the batch's counters, with their exact counts after it (`known`:
    /// total, and count on each day of the batch), to the all-time and the
    /// day's top lists. Offers only ever raise a count, so a repeat (by the
    /// sweeper) or a late one changes nothing; a row that fails is a write
    /// fault.
    pub(crate) async fn offer_to_tops(
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
    pub(crate) async fn write_best_effort(
        &self,
        client: &Client,
        mut rows: Vec<BatchOperation>,
        deadline: Instant,
    ) {
        if rows.is_empty() {
            return;
        }
        self.send_rows(client, &mut rows, Retry::IfNotApplied, deadline)
            .await;
        for row in &rows {
            let record = &row.batch_record().key;
            match row.record() {
                Some(answer) => {
                    let list = match record.user_key() {
                        Some(Value::String(list)) => list.clone(),
                        _ => continue,
                    };
                    self.learn_top_cut(list, last_value(&answer.bins, TOP_BIN));
                }
                None => {
                    let error = row_failure(row);
                    tracing::warn!(set = record.set_name(), key = ?record.user_key(), %error,
                        "top list of a page hit batch not written");
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

    /// A cluster from before the top lists gets its all-time list once, from a
    /// query of `pages` (bin `total` only), when a gateway connects and finds
    /// no list. Hits counted meanwhile offer themselves as usual: an offer only
    /// raises a count, so the two cannot undo each other.
    pub(crate) async fn build_all_time_top(&self, client: &Client) -> Result<(), StoreError> {
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
}

/// A top list's entries (counter key → minus its hits) as counts per key.
pub(crate) fn top_entries(value: &Value) -> Vec<(PageKey, u64)> {
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
