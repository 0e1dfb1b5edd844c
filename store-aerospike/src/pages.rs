//! The named counters on Aerospike: a batch of page hits counted exactly once
//! ([`PageHits`](crate::once::pages::PageHits) in the engine) and numbered,
//! then, best effort and beside each other, its visitors added
//! ([`visitors`](crate::visitors)) and its counts offered to the top lists
//! ([`tops`](crate::tops)): a row of those that fails does not fail the hits;
//! it is logged and counted as a write fault (`/metrics`, `/readyz`, the
//! audit's findings).
//!
//! Reading one counter is one operate on `pages` in parallel with one batch
//! read of its `page_visitors` days; the overview is one batch read of the
//! range's `page_days` and `page_tops`: its cost does not grow with the number
//! of counters.
//!
//! `GET /v1/audit` compares `pages` and `page_days` with the `page_hits`
//! records of the days they all still cover ([`AerospikeStore::read_page_tallies`]),
//! and the repair ([`cluster`](crate::cluster)) sets proven drift back.

use std::collections::{BTreeMap, HashMap};

use aerospike::expressions as exp;
use aerospike::operations::maps;
use aerospike::{
    BatchOperation, BatchReadPolicy, Bins, MapReturnType, ResultCode, Value, WritePolicy,
    operations,
};
use counter_api::{
    Day, DayCount, DayHits, PageKey, PageRecorded, PageStats, PageTotal, PagesOverview,
};
use counter_store::StoreError;
use counter_store::audit::PageTallies;
use counter_store::numbering::{PageBatchCounts, number_page_batch};
use counter_store::pages::{DayRange, PageHitToCount};
use counter_store::tops::TopList;
use futures::StreamExt;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{
    Retry, absent, count, day_counts, last_value, millis_until, query_policy, row_failure,
    unavailable_or_failed,
};
use crate::layout::*;
use crate::once::pages::PageHits;
use crate::tops::top_entries;
use crate::visitors::{visitor_count, visitors_key};

impl AerospikeStore {
    /// Counts a batch of page hits exactly once and numbers them, then adds
    /// its visitors and offers its counts to the top lists.
    pub(crate) async fn record_page_hit_batch(
        &self,
        hits: &[PageHitToCount],
    ) -> Result<Vec<Result<PageRecorded, StoreError>>, StoreError> {
        let committed = self.commit::<PageHits>(hits).await?;
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;
        let counts = PageBatchCounts::of(hits, &committed.owned);
        let batch = &committed.batch;
        let mut known = HashMap::new();
        let mut key_errors = HashMap::new();
        for (key, after) in committed.counted.after {
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
            self.inner.events.timed(
                "page_batch_visitors",
                self.add_visitors(client, &counts, deadline)
            ),
            self.inner.events.timed(
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
        let numbered = number_page_batch(hits, &committed.owned, &counts, &total_after, &day_after);
        Ok(hits
            .iter()
            .zip(&committed.claims)
            .zip(numbered)
            .map(|((hit, claim), recorded)| {
                claim.answer()?;
                match key_errors.get(&hit.key) {
                    Some(error) => Err(StoreError::clone(error)),
                    None => Ok(recorded),
                }
            })
            .collect())
    }

    pub(crate) async fn read_page_stats(
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
            operations::get_bin(BASE_BIN),
            operations::get_bin(BASE_TS_BIN),
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
                Ok(BatchOperation::read_ops(&read, record, [visitor_count()]))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (page, _) = tokio::join!(
            client.operate(&policy, &record_key, &ops),
            self.send_rows(client, &mut visitor_rows, Retry::IfNotApplied, deadline),
        );
        let (total, base, hits_on) = match page {
            Ok(record) => (
                count(last_value(&record.bins, TOTAL_BIN)).unwrap_or(0),
                crate::imports::base_of(&record.bins)?,
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

    pub(crate) async fn read_pages_overview(
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
        self.send_rows(client, &mut rows, Retry::IfNotApplied, deadline)
            .await;
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
    pub(crate) async fn read_page_tallies(&self, since: Day) -> Result<PageTallies, StoreError> {
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
                Bins::from([TOTAL_BIN, DAYS_BIN, BASE_BIN]),
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
            let base = count(record.bins.get(BASE_BIN)).unwrap_or(0);
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
            let Some((key, day)) = crate::audit::page_hit_day(&record.bins) else {
                continue;
            };
            let Ok(key) = key.parse::<PageKey>() else {
                continue;
            };
            *tallies.records.entry((key, day)).or_default() += 1;
        }
        days.extend(tallies.records.keys().map(|(_, day)| *day));
        days.sort_unstable();
        days.dedup();
        for (day, hits) in self.day_totals_kept(client, &days).await? {
            match hits {
                Some(hits) => {
                    tallies.day_totals.insert(day, hits);
                }
                None => {
                    tallies.counted.retain(|(_, d), _| *d != day);
                    tallies.records.retain(|(_, d), _| *d != day);
                }
            }
        }
        Ok(tallies)
    }
}
