//! The audit of the named counters on Aerospike (`GET /v1/audit`, and what
//! the repair starts from), in memory and time that follow the hits of the
//! audited days rather than the counters ever made:
//!
//! 1. **The groups.** The `pages` records changed since the first audited day
//!    (a server-side filter on the record's last update: a counter not hit
//!    since cannot hold hits of those days, so it never leaves the server)
//!    and that window's `page_hits` records are summed into
//!    [`GROUPS`](counter_store::audit::GROUPS) hashed groups a day
//!    ([`GroupedTallies`]), each with a fingerprint that tells which counters
//!    hold the hits; both sets are read in [`SCAN_PARTS`] partition ranges at
//!    once. Memory: a few MB whatever the number of counters.
//! 2. **The names.** Only the groups that differ (at most
//!    [`MAX_GROUPS_NAMED`]) are read again, counter by counter, to say which
//!    counter is off on which day: nothing more is read when nothing differs.
//!
//! The counters are read before the records in both passes: a batch counted
//! meanwhile can then only make a counter read older than the records (a
//! passing difference the repair tells apart, see
//! [`cluster`](crate::cluster)), never the other way round.

use std::collections::BTreeSet;

use aerospike::expressions as exp;
use aerospike::query::PartitionFilter;
use aerospike::{BatchOperation, BatchReadPolicy, Bins, Client, Statement, Value};
use counter_api::{Day, EpochMillis, PageKey, PagesAudit};
use counter_store::StoreError;
use counter_store::audit::{
    GroupedTallies, MAX_GROUPS_NAMED, PageTallies, audit_window, compare_grouped, group_of,
};
use futures::StreamExt;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{Retry, absent, count, map_entries, query_policy, row_failure};
use crate::layout::*;

/// Partition ranges read at once per set: enough to keep both cores of a
/// small gateway busy parsing while the server streams.
const SCAN_PARTS: usize = 4;
/// Aerospike's partitions.
const PARTITIONS: usize = 4096;
/// How long before the first audited day a counter may have been written
/// and still hold hits of it: a hit's `ts` may be a little ahead of the
/// server's clock.
const LAST_UPDATE_SLACK_MS: i64 = 86_400_000;
/// A full scan takes as long as it takes, but not forever.
const SCAN_TIMEOUT_MS: u32 = 120_000;

/// What the pages' scan keeps of a record: all of it, or only the counts of
/// the groups being named.
enum Keep<'a> {
    Groups(&'a mut GroupedTallies),
    Named(&'a BTreeSet<(Day, usize)>, &'a mut PageTallies),
}

impl AerospikeStore {
    /// The audit of the named counters over the days from `since` on, with
    /// every drift it names (the gateway's answer keeps the first
    /// [`PagesAudit::MAX_DRIFT`]).
    pub(crate) async fn read_page_audit(&self, since: Day) -> Result<PagesAudit, StoreError> {
        let started = Instant::now();
        let grouped = self.grouped_tallies(since).await?;
        let groups_read = started.elapsed();
        let differing = grouped.differing();
        let named = grouped.to_name(&differing, MAX_GROUPS_NAMED);
        let exact = if named.is_empty() {
            PageTallies::default()
        } else {
            self.named_tallies(since, &named).await?
        };
        let audit = compare_grouped(&grouped, &named, &exact);
        if !audit.consistent {
            self.saw_drift(&audit.drift);
        }
        tracing::info!(
            counters_read = grouped.counters_read,
            hit_records_read = grouped.records_read,
            groups_differing = differing.len(),
            groups_named = named.len(),
            groups_ms = groups_read.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "audited the named counters"
        );
        Ok(audit)
    }

    /// Pass 1: the counters changed since `since` and the records from
    /// `since` on, summed into groups, and the day totals.
    async fn grouped_tallies(&self, since: Day) -> Result<GroupedTallies, StoreError> {
        let client = self.client()?;
        let started = Instant::now();
        let mut grouped = self
            .in_parts(move |store, part| async move {
                let mut grouped = GroupedTallies::default();
                let client = store.client()?;
                store
                    .scan_pages(client, since, part, &mut Keep::Groups(&mut grouped))
                    .await?;
                Ok(grouped)
            })
            .await?;
        let counters_ms = started.elapsed().as_millis() as u64;
        let records = self
            .in_parts(move |store, part| async move {
                let mut grouped = GroupedTallies::default();
                let client = store.client()?;
                store
                    .scan_page_hits(client, since, None, part, |key, day| {
                        grouped.record(key, day)
                    })
                    .await?;
                Ok(grouped)
            })
            .await?;
        grouped.merge(records);
        tracing::debug!(
            counters_ms,
            records_ms = started.elapsed().as_millis() as u64 - counters_ms,
            "the audit's groups are read"
        );
        self.read_day_totals(client, &mut grouped).await?;
        Ok(grouped)
    }

    /// One scan task per partition range ([`SCAN_PARTS`]), each summing into
    /// groups of its own, merged once all are done: both cores parse while
    /// the server streams.
    async fn in_parts<F, Fut>(&self, scan: F) -> Result<GroupedTallies, StoreError>
    where
        F: Fn(AerospikeStore, usize) -> Fut,
        Fut: Future<Output = Result<GroupedTallies, StoreError>> + Send + 'static,
    {
        let parts = futures::future::try_join_all(
            (0..SCAN_PARTS).map(|part| tokio::spawn(scan(self.clone(), part))),
        )
        .await
        .map_err(|e| StoreError::Failed(format!("an audit scan task failed: {e}")))?;
        let mut grouped = GroupedTallies::default();
        for part in parts {
            grouped.merge(part?);
        }
        Ok(grouped)
    }

    /// Pass 2: the counters and the records of the (day, group) pairs
    /// `named`, one by one.
    async fn named_tallies(
        &self,
        since: Day,
        named: &[(Day, usize)],
    ) -> Result<PageTallies, StoreError> {
        let client = self.client()?;
        let wanted: BTreeSet<(Day, usize)> = named.iter().copied().collect();
        let days: BTreeSet<Day> = named.iter().map(|(day, _)| *day).collect();
        let mut exact = PageTallies::default();
        for part in 0..SCAN_PARTS {
            self.scan_pages(client, since, part, &mut Keep::Named(&wanted, &mut exact))
                .await?;
        }
        for part in 0..SCAN_PARTS {
            self.scan_page_hits(client, since, Some(&days), part, |key, day| {
                if wanted.contains(&(day, group_of(key)))
                    && let Ok(key) = key.parse::<PageKey>()
                {
                    *exact.records.entry((key, day)).or_default() += 1;
                }
            })
            .await?;
        }
        Ok(exact)
    }

    /// One partition range of the `pages` records changed since `since`.
    async fn scan_pages(
        &self,
        client: &Client,
        since: Day,
        part: usize,
        keep: &mut Keep<'_>,
    ) -> Result<(), StoreError> {
        let since_ms = day_start_ms(since);
        let mut policy = query_policy();
        policy.base_policy.total_timeout = SCAN_TIMEOUT_MS;
        policy.base_policy.filter_expression = Some(exp::ge(
            exp::last_update(),
            exp::int_val((since_ms - LAST_UPDATE_SLACK_MS) * 1_000_000),
        ));
        let bins = Bins::from([TOTAL_BIN, DAYS_BIN, BASE_BIN]);
        let mut stream = self
            .scan_part(client, &policy, PAGES_SET, bins, part)
            .await?;
        let since_str = since.to_string();
        while let Some(record) = stream.next().await {
            let record = record?;
            let Some(Value::String(key)) = record.key.as_ref().and_then(|k| k.user_key()) else {
                continue;
            };
            let entries = record
                .bins
                .get(DAYS_BIN)
                .map(map_entries)
                .unwrap_or_default();
            // "YYYY-MM-DD" sorts as the days do: only the audited days are
            // parsed.
            let audited = entries.iter().filter_map(|(day, hits)| match day {
                Value::String(day) if day.as_str() >= since_str.as_str() => {
                    Some((day.parse::<Day>().ok()?, count(Some(hits))?))
                }
                _ => None,
            });
            match keep {
                Keep::Groups(grouped) => {
                    grouped.counters_read += 1;
                    // An imported base is in the total and in no day.
                    let base = count(record.bins.get(BASE_BIN)).unwrap_or(0);
                    let total = count(record.bins.get(TOTAL_BIN)).unwrap_or(0);
                    let days: u64 = entries.iter().filter_map(|(_, n)| count(Some(n))).sum();
                    if total != base + days {
                        grouped.totals_off_days += 1;
                    }
                    let mut hit = false;
                    for (day, hits) in audited {
                        if hits > 0 {
                            grouped.count(key, day, hits);
                            hit = true;
                        }
                    }
                    grouped.counters += u64::from(hit);
                }
                Keep::Named(wanted, exact) => {
                    let group = group_of(key);
                    let Ok(key) = key.parse::<PageKey>() else {
                        continue;
                    };
                    for (day, hits) in audited {
                        if hits > 0 && wanted.contains(&(day, group)) {
                            exact.counted.insert((key.clone(), day), hits);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One partition range of the `page_hits` records from `since` on (of
    /// `days` only, if given), each handed to `each` with its day.
    async fn scan_page_hits(
        &self,
        client: &Client,
        since: Day,
        days: Option<&BTreeSet<Day>>,
        part: usize,
        mut each: impl FnMut(&str, Day),
    ) -> Result<(), StoreError> {
        let mut policy = query_policy();
        policy.base_policy.total_timeout = SCAN_TIMEOUT_MS;
        let ts = || exp::int_bin(TS_BIN.to_owned());
        // Only the records of the days wanted leave the server.
        policy.base_policy.filter_expression = Some(match days {
            None => exp::ge(ts(), exp::int_val(day_start_ms(since))),
            Some(days) => exp::or(
                days.iter()
                    .map(|day| {
                        exp::and(vec![
                            exp::ge(ts(), exp::int_val(day_start_ms(*day))),
                            exp::lt(ts(), exp::int_val(day_start_ms(day.plus(1)))),
                        ])
                    })
                    .chain([exp::bool_val(false)])
                    .collect(),
            ),
        });
        let bins = Bins::from([PAGE_BIN, TS_BIN]);
        let mut stream = self
            .scan_part(client, &policy, PAGE_HITS_SET, bins, part)
            .await?;
        while let Some(record) = stream.next().await {
            let record = record?;
            if let Some((key, day)) = page_hit_day(&record.bins) {
                each(key, day);
            }
        }
        Ok(())
    }

    /// The records of `set` in the `part`-th of [`SCAN_PARTS`] partition
    /// ranges that pass `policy`'s filter.
    async fn scan_part(
        &self,
        client: &Client,
        policy: &aerospike::QueryPolicy,
        set: &str,
        bins: Bins,
        part: usize,
    ) -> Result<
        impl futures::Stream<Item = Result<aerospike::Record, StoreError>> + use<>,
        StoreError,
    > {
        let per_part = PARTITIONS / SCAN_PARTS;
        let statement = Statement::new(self.inner.namespace.as_str(), set, bins);
        let records = client
            .query(
                policy,
                PartitionFilter::by_range(part * per_part, per_part),
                statement,
            )
            .await
            .map_err(|e| crate::client::unavailable_or_failed(&e))?;
        Ok(records
            .into_stream()
            .map(|record| record.map_err(|e| crate::client::unavailable_or_failed(&e))))
    }

    /// The day totals of every day the groups hold; a day some gateway keeps
    /// records of for less time than this one (its `keep`) may have lost
    /// records, so it leaves the audit.
    async fn read_day_totals(
        &self,
        client: &Client,
        grouped: &mut GroupedTallies,
    ) -> Result<(), StoreError> {
        let days: Vec<Day> = grouped.days().into_iter().collect();
        for (day, hits) in self.day_totals_kept(client, &days).await? {
            match hits {
                Some(hits) => {
                    grouped.day_totals.insert(day, hits);
                }
                None => grouped.forget(day),
            }
        }
        Ok(())
    }

    /// Each day's hits on all counters (`page_days`), or `None` for a day some
    /// gateway wrote records of that may have expired by now (its `keep` is
    /// shorter than the day's age): nothing proves that day's counts.
    pub(crate) async fn day_totals_kept(
        &self,
        client: &Client,
        days: &[Day],
    ) -> Result<Vec<(Day, Option<u64>)>, StoreError> {
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
        self.send_rows(client, &mut rows, Retry::IfNotApplied, deadline)
            .await;
        let now = std::time::SystemTime::now();
        let mut totals = Vec::with_capacity(days.len());
        for (day, row) in days.iter().zip(&rows) {
            let (hits, keep) = match row.record() {
                Some(record) => (
                    count(record.bins.get(HITS_BIN)).unwrap_or(0),
                    count(record.bins.get(KEEP_BIN)),
                ),
                None if absent(row) => (0, None),
                None => return Err(row_failure(row)),
            };
            let kept_from = keep.filter(|secs| *secs < i64::MAX as u64).map(|secs| {
                audit_window(
                    counter_store::Retention(Some(std::time::Duration::from_secs(secs))),
                    now,
                )
            });
            let proven = kept_from.is_none_or(|first| *day >= first);
            totals.push((*day, proven.then_some(hits)));
        }
        Ok(totals)
    }
}

/// A page hit record's counter key (unparsed: the groups hash the raw
/// string) and the day of its `ts`; `None` for a record that is not one.
pub(crate) fn page_hit_day(bins: &aerospike::IndexMap<String, Value>) -> Option<(&str, Day)> {
    let (Some(Value::String(key)), Some(Value::Int(ts))) = (bins.get(PAGE_BIN), bins.get(TS_BIN))
    else {
        return None;
    };
    let ts = EpochMillis::new(i128::from(*ts)).ok()?;
    Some((key, Day::of(ts)))
}

/// Midnight UTC of `day`, in epoch milliseconds.
pub(crate) fn day_start_ms(day: Day) -> i64 {
    i64::from(day.days_since_epoch()) * 86_400_000
}
