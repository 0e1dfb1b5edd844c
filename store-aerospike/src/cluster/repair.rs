//! The repair of counters a split cluster or a hand edit left off their hit
//! records: see [the watch](super) for when it runs.
//!
//! The tutorial's counters are set to a recount of their hit records in a
//! pause of tutorial hits (no tutorial intent in `batches`, the counters
//! unchanged across the recount): page hits flowing do not hold it up.
//!
//! The named counters are repaired while hits keep flowing, one counter (or
//! day total) and day at a time, from the drift the audit names
//! ([`read_page_audit`](AerospikeStore::read_page_audit)):
//!
//! 1. Read the counter's record: `days[d]`, its `applied` map and its
//!    `repairs` bin (absent = 0), at a moment T.
//! 2. Then read that counter-day's page hit records (a server-side filtered
//!    scan: `page` and `ts` within the day) with their `batch` marker, and
//!    keep those counted into the record as of T: their batch, or a later
//!    one of its writer, is in the `applied` map read at T, or their writer
//!    is so old its entries may have been dropped
//!    ([`BatchId::counted_in`]). A batch's records all exist before it is
//!    counted (step 2 before step 3 of [the engine](crate::once)), so a
//!    batch counted at T has every record in the read; a batch not counted
//!    at T is left out whether its records are there yet or not.
//! 3. delta = those records − `days[d]`: both sides as of T. A batch counted
//!    after T adds its hits to `days[d]` and as many records of its own, so
//!    the delta is the same at any later moment: the repair adds it
//!    (`+delta` to `days[d]` and `total`, in one operate), never sets a
//!    value, which would drop the hits counted since T.
//! 4. The operate applies only if `repairs` still holds what step 1 read,
//!    and adds 1 to it: of two gateways repairing the same count from the
//!    same reads, one applies and the other is filtered out, reads again and
//!    finds nothing left to add. Filtered out, the whole read is done again.
//!
//! Day totals (`page_days`, `hits` and its own `applied` and `repairs`)
//! are repaired the same way from all records of the day. A difference the
//! audit saw while a batch was in flight reads delta 0 here, and is left.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use aerospike::expressions as exp;
use aerospike::operations::maps;
use aerospike::{
    BatchOperation, BatchReadPolicy, Bin, Bins, Client, MapReturnType, ResultCode, Value,
    operations,
};
use counter_api::{Day, PageDrift, PageKey};
use counter_store::audit::{self as reconcile, audit_window};
use counter_store::{Audit, Reads, Retention, StoreError};
use futures::StreamExt;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::audit::day_start_ms;
use crate::client::{
    Retry, absent, counter_value, map_entries, query_policy, row_failure, unavailable_or_failed,
};
use crate::layout::*;
use crate::once::BatchId;

/// How often one count is read again when another repair (or a hand edit)
/// moved it between the read and the guarded write.
const MAX_TRIES: usize = 5;

/// A count to repair: a counter's day, or a day's total.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Count {
    Counter(PageKey, Day),
    DayTotal(Day),
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Counter(key, day) => write!(f, "{key} on {day}"),
            Count::DayTotal(day) => write!(f, "all counters on {day}"),
        }
    }
}

impl Count {
    fn day(&self) -> Day {
        match self {
            Count::Counter(_, day) | Count::DayTotal(day) => *day,
        }
    }

    /// The bin of its record that holds it (a counter's day is an entry of
    /// its `days` map).
    fn bin(&self) -> &'static str {
        match self {
            Count::Counter(..) => DAYS_BIN,
            Count::DayTotal(_) => HITS_BIN,
        }
    }
}

/// A count's record as step 1 read it.
struct CountRead {
    hits: u64,
    applied: BTreeSet<String>,
    repairs: u64,
    at: SystemTime,
}

impl AerospikeStore {
    /// One repair attempt, of the tutorial's counters and of the named
    /// counters: `Ok(None)` if tutorial hits were being counted meanwhile
    /// (the named counters are repaired regardless).
    pub(super) async fn repair(&self, client: &Client) -> Result<Option<String>, StoreError> {
        let tutorial = self.repair_summary(client).await?;
        let pages = self.repair_pages(client).await?;
        Ok(tutorial.map(|tutorial| format!("{tutorial}; {pages}")))
    }

    /// The named counters' counts, over the days whose page hit records are
    /// all kept, brought to those records (see the module doc).
    /// Starts from the drift the audit that asked for the repair found, if
    /// any: each count is read afresh, so a stale one costs a read, and
    /// auditing a big store again would cost seconds.
    async fn repair_pages(&self, client: &Client) -> Result<String, StoreError> {
        let mut drift = self.take_drift_seen();
        if drift.is_empty() {
            let since = audit_window(self.page_hit_retention(), SystemTime::now());
            let audit = self.read_page_audit(since).await?;
            self.take_drift_seen();
            if audit.consistent {
                return Ok("the named counters match their page hit records".into());
            }
            drift = audit.drift;
        }
        let counts: BTreeSet<Count> = drift
            .iter()
            .map(|drift: &PageDrift| match &drift.key {
                Some(key) => Count::Counter(key.clone(), drift.day),
                None => Count::DayTotal(drift.day),
            })
            .collect();
        let mut done = Vec::new();
        for count in &counts {
            let delta = self.repair_count(client, count).await?;
            if delta != 0 {
                self.inner.events.repaired_hits(delta);
                done.push(format!("{count} ({delta:+})"));
            }
        }
        if done.is_empty() {
            return Ok(format!(
                "the {} difference(s) the audit saw were hits being counted",
                counts.len()
            ));
        }
        let shown = done.len().min(10);
        Ok(format!(
            "named counters brought to their page hit records: {}{}",
            done[..shown].join(", "),
            if done.len() > shown {
                format!(" and {} more", done.len() - shown)
            } else {
                String::new()
            }
        ))
    }

    /// Steps 1 to 4 of the module doc for one count, until its guarded write
    /// holds: the delta added (0: the count matched).
    async fn repair_count(&self, client: &Client, count: &Count) -> Result<i64, StoreError> {
        for _ in 0..MAX_TRIES {
            let read = self.read_count(client, count).await?;
            let counted = self.counted_records(client, count, &read).await?;
            let delta = counted as i64 - read.hits as i64;
            if delta == 0 {
                return Ok(0);
            }
            if self.add_to_count(client, count, &read, delta).await? {
                tracing::info!(%count, before = read.hits, delta, "repaired a named count");
                return Ok(delta);
            }
        }
        Err(StoreError::Unavailable(format!(
            "{count} moved under {MAX_TRIES} repairs in a row; trying again later"
        )))
    }

    /// Step 1: the count, its record's `applied` keys and `repairs`.
    async fn read_count(&self, client: &Client, count: &Count) -> Result<CountRead, StoreError> {
        let hits = match count {
            Count::Counter(_, day) => {
                maps::get_by_key(DAYS_BIN, Value::from(day.to_string()), MapReturnType::VALUE)
            }
            Count::DayTotal(_) => operations::get_bin(HITS_BIN),
        };
        let record = self.count_record(count)?;
        let ops = vec![
            hits,
            operations::get_bin(APPLIED_BIN),
            operations::get_bin(REPAIRS_BIN),
        ];
        let read = BatchReadPolicy::default();
        let mut rows = [BatchOperation::read_ops(&read, record, ops)];
        let at = SystemTime::now();
        let deadline = Instant::now() + self.inner.timeout;
        self.send_rows(client, &mut rows, Retry::IfNotApplied, deadline)
            .await;
        let row = &rows[0];
        let Some(record) = row.record() else {
            if absent(row) {
                return Ok(CountRead {
                    hits: 0,
                    applied: BTreeSet::new(),
                    repairs: 0,
                    at,
                });
            }
            return Err(row_failure(row));
        };
        let applied = record
            .bins
            .get(APPLIED_BIN)
            .map(|map| {
                map_entries(map)
                    .into_iter()
                    .filter_map(|(key, _)| match key {
                        Value::String(key) => Some(key.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(CountRead {
            hits: crate::client::count(record.bins.get(count.bin())).unwrap_or(0),
            applied,
            repairs: crate::client::count(record.bins.get(REPAIRS_BIN)).unwrap_or(0),
            at,
        })
    }

    /// Step 2: the count's page hit records counted into its record as read.
    async fn counted_records(
        &self,
        client: &Client,
        count: &Count,
        read: &CountRead,
    ) -> Result<u64, StoreError> {
        let day = count.day();
        let ts = || exp::int_bin(TS_BIN.to_owned());
        let mut filters = vec![
            exp::ge(ts(), exp::int_val(day_start_ms(day))),
            exp::lt(ts(), exp::int_val(day_start_ms(day.plus(1)))),
        ];
        if let Count::Counter(key, _) = count {
            filters.push(exp::eq(
                exp::string_bin(PAGE_BIN.to_owned()),
                exp::string_val(key.as_str().to_owned()),
            ));
        }
        let mut policy = query_policy();
        policy.base_policy.total_timeout = 120_000;
        policy.base_policy.filter_expression = Some(exp::and(filters));
        let mut stream = self
            .scan(client, &policy, PAGE_HITS_SET, Bins::from([MARKER_BIN]))
            .await?;
        // A day's records come from a few batches each: classify each once.
        let mut per_batch: HashMap<Option<String>, u64> = HashMap::new();
        while let Some(record) = stream.next().await {
            let record = record?;
            let marker = match record.bins.get(MARKER_BIN) {
                Some(Value::String(batch)) => Some(batch.clone()),
                _ => None,
            };
            *per_batch.entry(marker).or_default() += 1;
        }
        Ok(per_batch
            .into_iter()
            .filter(|(marker, _)| match marker.as_deref().map(BatchId::parse) {
                Some(Some(batch)) => batch.counted_in(&read.applied, read.at),
                // No marker, or none this engine wrote: counted long ago.
                _ => true,
            })
            .map(|(_, n)| n)
            .sum())
    }

    /// The record that holds a count: the counter's `pages` record, or the
    /// day's `page_days` record.
    fn count_record(&self, count: &Count) -> Result<aerospike::Key, StoreError> {
        match count {
            Count::Counter(key, _) => self.key(PAGES_SET, key.as_str()),
            Count::DayTotal(day) => self.key(PAGE_DAYS_SET, &day.to_string()),
        }
    }

    /// Steps 3 and 4: adds `delta` to the count, and 1 to its record's
    /// `repairs`, only if `repairs` still holds what [`Self::read_count`]
    /// read; false if it moved.
    async fn add_to_count(
        &self,
        client: &Client,
        count: &Count,
        read: &CountRead,
        delta: i64,
    ) -> Result<bool, StoreError> {
        let unchanged = if read.repairs == 0 {
            exp::not(exp::bin_exists(REPAIRS_BIN.to_owned()))
        } else {
            exp::eq(
                exp::int_bin(REPAIRS_BIN.to_owned()),
                exp::int_val(read.repairs as i64),
            )
        };
        let bump = operations::add(&Bin::new(REPAIRS_BIN, Value::from(1)));
        let record = self.count_record(count)?;
        let ops = match count {
            Count::Counter(_, day) => vec![
                operations::add(&Bin::new(TOTAL_BIN, Value::from(delta))),
                maps::increment_value(
                    &crate::once::KEY_ORDERED,
                    DAYS_BIN,
                    Value::from(day.to_string()),
                    Value::from(delta),
                ),
                bump,
            ],
            Count::DayTotal(day) => vec![
                operations::put(&Bin::new(DAY_BIN, Value::from(day.to_string()))),
                operations::add(&Bin::new(HITS_BIN, Value::from(delta))),
                bump,
            ],
        };
        let deadline = Instant::now() + self.inner.timeout;
        let mut policy = self.write_policy(deadline);
        policy.base_policy.filter_expression = Some(unchanged);
        match client.operate(&policy, &record, &ops).await {
            Ok(_) => Ok(true),
            Err(error) if error.matches(&[ResultCode::FilteredOut]) => Ok(false),
            Err(error) => Err(unavailable_or_failed(&error)),
        }
    }

    /// The tutorial's counters set to the hit records: `Ok(None)` if hits were
    /// being counted meanwhile.
    async fn repair_summary(&self, client: &Client) -> Result<Option<String>, StoreError> {
        if self.hit_retention() != Retention::FOREVER {
            return Ok(Some(
                "not repaired: hit records expire (HIT_RETENTION), so they no longer prove the counters"
                    .into(),
            ));
        }
        let before = self.summary().await?;
        // Only the tutorial's own batches: page hits flowing do not move
        // these counters.
        let tutorial_batches = Some(INTENT_HITS_BIN);
        if self.unfinished_batches(client, tutorial_batches).await? > 0 {
            return Ok(None);
        }
        let records = self.count_hit_records().await?;
        let after = self.summary().await?;
        if before != after || self.unfinished_batches(client, tutorial_batches).await? > 0 {
            return Ok(None);
        }
        let differences = reconcile::compare(&after, &records);
        if differences.is_empty() {
            return Ok(Some("the counters match the hit records".into()));
        }
        let mut done = Vec::new();
        for difference in &differences {
            if !self
                .add_if_unchanged(
                    client,
                    &difference.key,
                    difference.counter,
                    difference.delta(),
                )
                .await?
            {
                return Ok(None);
            }
            self.inner.events.repaired_hits(difference.delta());
            done.push(format!(
                "{} {} -> {} ({:+})",
                difference.key,
                difference.counter,
                difference.hit_records,
                difference.delta()
            ));
        }
        Ok(Some(format!("set to the hit records: {}", done.join(", "))))
    }

    /// Adds `delta` to a `summary` counter only if it still holds `expected`.
    async fn add_if_unchanged(
        &self,
        client: &Client,
        key: &str,
        expected: u64,
        delta: i64,
    ) -> Result<bool, StoreError> {
        let key = self.key(SUMMARY_SET, key)?;
        let deadline = Instant::now() + self.inner.timeout;
        let mut policy = self.write_policy(deadline);
        policy.base_policy.filter_expression = Some(exp::or(vec![
            exp::not(exp::bin_exists(TOTAL_BIN)),
            exp::eq(exp::int_bin(TOTAL_BIN), exp::int_val(expected as i64)),
        ]));
        let add = Bin::new(TOTAL_BIN, Value::from(delta));
        let ops = [operations::add(&add), operations::get_bin(TOTAL_BIN)];
        match client.operate(&policy, &key, &ops).await {
            Ok(record) => Ok(counter_value(&record.bins).is_some()),
            Err(error) if error.matches(&[ResultCode::FilteredOut]) => Ok(false),
            Err(error) => Err(unavailable_or_failed(&error)),
        }
    }
}
