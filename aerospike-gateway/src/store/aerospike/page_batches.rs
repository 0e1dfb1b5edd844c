//! Exactly-once counting of page hits (named counters): the steps of
//! [`batches`](super::batches), applied to the sets of [`pages`](super::pages).
//!
//! 1. **The intent**: the batch's page hits (`[id, key, ts]` each) in bin
//!    `pages` of its record in `batches`, beside the tutorial's intents, so the
//!    same sweeper finds both.
//! 2. **The page hit records**, create-only, each with the `batch` marker. A
//!    record that exists with another batch's marker is a retry of a hit that
//!    batch has not finished: it is answered 503 until the batch (or the sweeper)
//!    has counted it, so a retry answered `duplicate: true` always names a hit
//!    that is counted.
//! 3. **The counters**, one batch call: per counter key one operate that adds
//!    to `total` and to `days[day]` and records in the record's `applied` map the
//!    total after the batch and each of its days' counts after it; per day one
//!    operate on `page_days` that adds the batch's hits on all counters and
//!    records the day total after it. Every row carries the filter of
//!    [`BatchId::not_counted_yet`], so a row whose write is in doubt is sent
//!    again until its outcome is known, and one already applied is filtered out
//!    and read from the map: never applied twice. A row that fails and cannot
//!    be retried leaves the batch to the sweeper.
//! 4. **The release**, in the releaser's rounds: the intent is deleted. The
//!    markers stay: a page hit record whose batch has no intent left was
//!    counted (see [`AerospikeStore::settle_pending`]), so clearing them would
//!    cost a second write of every page hit record for nothing; unlike the
//!    tutorial's `hits`, no one expects `page_hits` to look a certain way.
//!
//! What stays best effort, after step 3: the visitors' HyperLogLogs (an
//! estimate; adding a hash twice is harmless anyway) and the top lists (offers
//! are idempotent and only ever raise a count, so the sweeper offers again
//! what it finishes).

use std::collections::{BTreeMap, HashMap};

use aerospike::expressions::{self as exp, ExpType};
use aerospike::operations::maps;
use aerospike::{
    BatchOperation, BatchReadPolicy, BatchWritePolicy, Bin, Client, IndexMap, MapReturnType,
    ResultCode, Value, operations,
};
use counter_api::{Day, HitId, PageKey};
use tokio::time::Instant;

use super::batches::{
    APPLIED_BIN, BatchId, Claim, HitRecords, Release, Unfinished, intent_entries, intent_entry,
    transient, ts_value,
};
use super::pages::{
    DAY_BIN, DAYS_BIN, HITS_BIN, KEEP_BIN, KeyAfter, KeyPlan, PAGE_BIN, PAGE_DAYS_SET,
    PAGE_HITS_SET, PAGES_SET, TS_BIN, key_after, map_entries,
};
use super::{AerospikeStore, Backoff, StoreError, TOTAL_BIN, millis_until, unavailable_or_failed};
use crate::metrics::METRICS;
use crate::store::Store;
use crate::store::pages::{PageBatchCounts, PageHitToCount};

/// In an intent: the batch's page hits, each `[id, key, ts]`.
pub(super) const INTENT_PAGE_HITS_BIN: &str = "pages";

/// What steps 1 to 3 made of a batch of distinct page hits.
pub(super) struct PageCounted {
    /// Per hit: `Ok(true)` counted by this batch, `Ok(false)` counted before,
    /// or why it is not known to be counted (a retry of a hit another batch
    /// has not finished).
    pub claims: Vec<Result<bool, StoreError>>,
    /// Each counter key's counts after the batch, for the keys they are known
    /// of; the others' hits are answered with the error.
    pub after: HashMap<PageKey, Result<KeyAfter, StoreError>>,
}

impl AerospikeStore {
    /// Counts `hits` (distinct ids) as batch `batch`, steps 1 to 3, then hands
    /// step 4 to the releaser. Answers only once every counter is written.
    pub(super) async fn count_page_batch(
        &self,
        client: &Client,
        batch: &BatchId,
        hits: &[&PageHitToCount],
        deadline: Instant,
    ) -> Result<PageCounted, Unfinished> {
        let list = hits
            .iter()
            .map(|hit| intent_entry(hit.id, hit.key.as_str(), hit.ts))
            .collect();
        self.write_intent(client, batch, INTENT_PAGE_HITS_BIN, list, deadline)
            .await?;
        let started = |error| Unfinished {
            error,
            started: true,
        };
        let claims = METRICS
            .timed(
                "page_batch_hit_records",
                self.claim_hit_records(client, batch, &page_hit_records(self, hits), deadline),
            )
            .await
            .map_err(started)?;
        let counted = METRICS
            .timed(
                "page_batch_counters",
                self.write_page_counters(client, batch, hits, &claims, deadline),
            )
            .await
            .map_err(started)?;
        // Only the intent goes: the markers stay (see the module's step 4).
        let _ = self.inner.releases.try_send(Release {
            set: PAGE_HITS_SET,
            batch: batch.clone(),
            owned_ids: owned_ids(hits, &claims),
            clear_markers: false,
        });
        Ok(counted)
    }

    /// Steps 2 and 3 of a batch of page hits found in `intent`, for the
    /// sweeper, which then offers the counts to the top lists.
    pub(super) async fn finish_page_batch(
        &self,
        client: &Client,
        batch: &BatchId,
        intent: &IndexMap<String, Value>,
        deadline: Instant,
    ) -> Result<Release, StoreError> {
        let hits = intent_page_hits(intent);
        let hits: Vec<&PageHitToCount> = hits.iter().collect();
        let claims = self
            .claim_hit_records(client, batch, &page_hit_records(self, &hits), deadline)
            .await?;
        let counted = self
            .write_page_counters(client, batch, &hits, &claims, deadline)
            .await?;
        let owned: Vec<bool> = claims.iter().map(|c| *c == Claim::Owned).collect();
        let counts = PageBatchCounts::of(hits.iter().copied(), &owned);
        let known: HashMap<PageKey, KeyAfter> = counted
            .after
            .into_iter()
            .filter_map(|(key, after)| Some((key, after.ok()?)))
            .collect();
        self.offer_to_tops(client, &counts, &known, deadline).await;
        Ok(Release {
            set: PAGE_HITS_SET,
            batch: batch.clone(),
            owned_ids: owned_ids(&hits, &claims),
            clear_markers: false,
        })
    }

    /// Step 3: the counters of every key of the batch and the day totals,
    /// written once for `batch` however often this runs. Keys with only hits
    /// counted before are read, for their answers.
    async fn write_page_counters(
        &self,
        client: &Client,
        batch: &BatchId,
        hits: &[&PageHitToCount],
        claims: &[Claim],
        deadline: Instant,
    ) -> Result<PageCounted, StoreError> {
        let owned: Vec<bool> = claims.iter().map(|c| *c == Claim::Owned).collect();
        let counts = PageBatchCounts::of(hits.iter().copied(), &owned);
        let plans = plan_keys(hits, claims, &counts);
        let write = BatchWritePolicy {
            send_key: true,
            filter_expression: Some(batch.not_counted_yet()),
            ..BatchWritePolicy::default()
        };
        let read = BatchReadPolicy::default();
        let mut rows = Vec::with_capacity(plans.len() + counts.per_day.len());
        for plan in &plans {
            let key = self.key(PAGES_SET, plan.key.as_str())?;
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
            let mut entries = vec![(batch.key(), exp::int_bin(TOTAL_BIN))];
            for (day, &added) in plan.days.iter().filter(|(_, n)| **n > 0) {
                let day = day.to_string();
                ops.push(maps::increment_value(
                    &super::pages::KEY_ORDERED,
                    DAYS_BIN,
                    Value::from(day.clone()),
                    Value::from(added as i64),
                ));
                entries.push((
                    batch.entry_for(&day),
                    exp::maps::get_by_key(
                        MapReturnType::VALUE,
                        ExpType::Int,
                        exp::string_val(day),
                        exp::map_bin(DAYS_BIN),
                        &[],
                    ),
                ));
            }
            ops.extend(batch.record_applied(entries));
            ops.extend(read_back);
            rows.push(BatchOperation::write(&write, key, ops));
        }
        let days: BTreeMap<Day, u64> = counts.per_day.iter().map(|(d, n)| (*d, *n)).collect();
        for (day, added) in &days {
            let key = self.key(PAGE_DAYS_SET, &day.to_string())?;
            let mut ops = vec![
                operations::put(&Bin::new(DAY_BIN, Value::from(day.to_string()))),
                operations::add(&Bin::new(HITS_BIN, Value::from(*added as i64))),
            ];
            ops.extend(batch.record_applied([(batch.key(), exp::int_bin(HITS_BIN))]));
            ops.push(self.keep_shortest_retention());
            rows.push(BatchOperation::write(&write, key, ops));
        }

        let filtered = self.write_until_known(client, &mut rows, deadline).await?;
        // Rows another run of this batch applied already: their counts after
        // the batch are in the `applied` map.
        let mut earlier: HashMap<usize, Option<KeyAfter>> = HashMap::new();
        let key_rows: Vec<usize> = filtered.into_iter().filter(|&i| i < plans.len()).collect();
        if !key_rows.is_empty() {
            let entries = self
                .applied_entries(
                    client,
                    batch,
                    key_rows.iter().map(|&i| plans[i].key),
                    deadline,
                )
                .await?;
            for (i, entries) in key_rows.into_iter().zip(entries) {
                earlier.insert(i, after_from_entries(batch, &plans[i], &entries));
            }
        }
        let mut after = HashMap::with_capacity(plans.len());
        for (i, plan) in plans.iter().enumerate() {
            let known = match earlier.remove(&i) {
                Some(Some(counts)) => Ok(counts),
                // This batch was counted, but its numbers are gone (a later
                // batch of the writer replaced them) or were never kept (a
                // day it only read).
                Some(None) => Err(StoreError::Unavailable(format!(
                    "batch {batch} was counted, but its numbers are no longer known; \
                     the retry of a hit will answer it as counted"
                ))),
                None => key_after(plan, &rows[i]),
            };
            after.insert(plan.key.clone(), known);
        }
        Ok(PageCounted {
            claims: claims
                .iter()
                .map(|claim| match claim {
                    Claim::Owned => Ok(true),
                    Claim::Counted => Ok(false),
                    Claim::Pending(_) => Err(Claim::pending_error()),
                })
                .collect(),
            after,
        })
    }

    /// Lowers the day's `keep` to this gateway's page hit retention if that
    /// is shorter: the audit compares a day only while the shortest-lived
    /// records written for it must still be there, so a gateway configured
    /// with a shorter retention (a rolling change of `PAGE_HIT_RETENTION`)
    /// cannot make the others take expired records for lost ones.
    fn keep_shortest_retention(&self) -> operations::Operation {
        let mine = match self.page_hit_retention().0 {
            Some(window) => window.as_secs() as i64,
            None => i64::MAX,
        };
        let keep = || exp::int_bin(KEEP_BIN.to_owned());
        operations::exp::write_exp(
            KEEP_BIN,
            exp::cond(vec![
                exp::and(vec![
                    exp::bin_exists(KEEP_BIN.to_owned()),
                    exp::lt(keep(), exp::int_val(mine)),
                ]),
                keep(),
                exp::int_val(mine),
            ]),
            operations::exp::ExpWriteFlags::DEFAULT,
        )
    }

    /// The entries of `batch` in the `applied` maps of the counters `keys`.
    async fn applied_entries<'k>(
        &self,
        client: &Client,
        batch: &BatchId,
        keys: impl Iterator<Item = &'k PageKey>,
        deadline: Instant,
    ) -> Result<Vec<BTreeMap<String, u64>>, StoreError> {
        let (from, to) = batch.own_entries();
        let read = BatchReadPolicy::default();
        let mut rows = keys
            .map(|key| {
                let record = self.key(PAGES_SET, key.as_str())?;
                Ok(BatchOperation::read_ops(
                    &read,
                    record,
                    [maps::get_by_key_range(
                        APPLIED_BIN,
                        Value::from(from.clone()),
                        Value::from(to.clone()),
                        MapReturnType::KEY_VALUE,
                    )],
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write_until_known(client, &mut rows, deadline).await?;
        Ok(rows
            .iter()
            .map(|row| {
                row.record()
                    .and_then(|record| record.bins.get(APPLIED_BIN))
                    .map(|value| {
                        map_entries(value)
                            .into_iter()
                            .filter_map(|(k, v)| match (k, v) {
                                (Value::String(k), Value::Int(v)) => {
                                    Some((k.clone(), u64::try_from(*v).ok()?))
                                }
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }
}

impl AerospikeStore {
    /// Sends `rows` until each has an outcome: applied, or filtered out (answered
    /// by index), retrying every failure that may change (KEY_BUSY, a timeout, a
    /// write in doubt: the rows are idempotent) with backoff until the deadline.
    /// A failure no retry mends (a write fault, recorded as such), or the
    /// deadline, fails the whole call.
    async fn write_until_known(
        &self,
        client: &Client,
        rows: &mut [BatchOperation],
        deadline: Instant,
    ) -> Result<Vec<usize>, StoreError> {
        let mut backoff = Backoff::new();
        let mut pending: Vec<usize> = (0..rows.len()).collect();
        let mut filtered = Vec::new();
        loop {
            let mut policy = aerospike::BatchPolicy::write_default();
            policy.base_policy.total_timeout = millis_until(deadline);
            let mut batch: Vec<BatchOperation> = pending.iter().map(|&i| rows[i].clone()).collect();
            if let Err(error) = client.batch(&policy, &mut batch).await {
                tracing::debug!(%error, "a batch of page counters failed on a node");
            }
            let mut again = Vec::new();
            for (i, row) in pending.into_iter().zip(batch) {
                match row.result_code() {
                    Some(ResultCode::Ok) => {}
                    // A read of a counter never written, or of a map bin missing.
                    Some(ResultCode::KeyNotFoundError | ResultCode::BinNotFound)
                        if !row.batch_record().has_write() => {}
                    Some(ResultCode::FilteredOut) => filtered.push(i),
                    _ => match row.error() {
                        Some(error) if !transient(error) => {
                            let error = unavailable_or_failed(error);
                            self.inner
                                .faults
                                .record(row.batch_record().key.set_name(), &error);
                            return Err(error);
                        }
                        Some(error) => {
                            METRICS.retried(if error.in_doubt() {
                                "in_doubt"
                            } else {
                                super::retry_cause(error)
                            });
                            again.push(i);
                        }
                        None => again.push(i),
                    },
                }
                rows[i] = row;
            }
            if again.is_empty() {
                return Ok(filtered);
            }
            if !backoff.wait(deadline).await {
                return Err(StoreError::Unavailable(
                    "not every page counter could be written in time".into(),
                ));
            }
            pending = again;
        }
    }
}

/// A counter's counts after `batch`, from the batch's entries in its
/// `applied` map; `None` once a later batch of the writer replaced them.
fn after_from_entries(
    batch: &BatchId,
    plan: &KeyPlan<'_>,
    entries: &BTreeMap<String, u64>,
) -> Option<KeyAfter> {
    let total = *entries.get(&batch.key())?;
    // A day the batch only read (its hits on it were duplicates) has no entry:
    // its count then is not known, and the counter's hits are answered 503.
    let days = plan
        .days
        .keys()
        .map(|day| {
            let n = entries.get(&batch.entry_for(&day.to_string()))?;
            Some((*day, *n))
        })
        .collect::<Option<BTreeMap<Day, u64>>>()?;
    Some((total, days))
}

/// The distinct keys of the batch, in the order they first appear, with what
/// the batch adds to each in all and per day; a key with only hits counted
/// before is read (added 0), one with only hits still pending is left out.
fn plan_keys<'a>(
    hits: &[&'a PageHitToCount],
    claims: &[Claim],
    counts: &PageBatchCounts,
) -> Vec<KeyPlan<'a>> {
    let mut plans: Vec<KeyPlan<'a>> = Vec::new();
    let mut index: HashMap<&PageKey, usize> = HashMap::new();
    for (hit, _) in hits
        .iter()
        .zip(claims)
        .filter(|(_, c)| !matches!(c, Claim::Pending(_)))
    {
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

fn owned_ids(hits: &[&PageHitToCount], claims: &[Claim]) -> Vec<HitId> {
    hits.iter()
        .zip(claims)
        .filter(|(_, c)| **c == Claim::Owned)
        .map(|(hit, _)| hit.id)
        .collect()
}

/// The page hits an intent lists (without visitors, which stay best effort).
fn intent_page_hits(bins: &IndexMap<String, Value>) -> Vec<PageHitToCount> {
    intent_entries(bins, INTENT_PAGE_HITS_BIN)
        .filter_map(|(id, key, ts)| {
            Some(PageHitToCount {
                id,
                key: key.parse().ok()?,
                ts,
                visitor: None,
            })
        })
        .collect()
}

/// The page hit records of a batch; each hit counts into its counter.
fn page_hit_records(store: &AerospikeStore, hits: &[&PageHitToCount]) -> HitRecords {
    HitRecords {
        set: PAGE_HITS_SET,
        expiration: store.page_hit_expiration(),
        bins: hits
            .iter()
            .map(|hit| {
                let bins = vec![
                    Bin::new(PAGE_BIN, Value::from(hit.key.as_str().to_owned())),
                    Bin::new(TS_BIN, ts_value(hit.ts)),
                ];
                (hit.id, bins)
            })
            .collect(),
        counters: hits
            .iter()
            .map(|hit| store.key(PAGES_SET, hit.key.as_str()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pages::test_hit as hit;

    #[test]
    fn an_intent_lists_what_the_sweeper_counts() {
        let hits = [
            hit(1, "blog/a", 1_764_028_799_000),
            hit(2, "b", 1_764_028_800_000),
        ];
        let refs: Vec<&PageHitToCount> = hits.iter().collect();
        let list = refs
            .iter()
            .map(|hit| intent_entry(hit.id, hit.key.as_str(), hit.ts))
            .collect();
        let bins = IndexMap::from([(INTENT_PAGE_HITS_BIN.to_owned(), Value::List(list))]);
        assert_eq!(intent_page_hits(&bins), hits);
    }

    #[test]
    fn plans_leave_out_keys_with_only_pending_hits() {
        let (day1, day2) = (1_764_028_799_000, 1_764_028_800_000);
        let hits = [
            hit(1, "a", day1),
            hit(2, "b", day2),
            hit(3, "a", day2),
            hit(4, "c", day2),
        ];
        let refs: Vec<&PageHitToCount> = hits.iter().collect();
        let claims = [
            Claim::Owned,
            Claim::Counted,
            Claim::Owned,
            Claim::Pending("another".into()),
        ];
        let owned: Vec<bool> = claims.iter().map(|c| *c == Claim::Owned).collect();
        let counts = PageBatchCounts::of(refs.iter().copied(), &owned);
        let view: Vec<String> = plan_keys(&refs, &claims, &counts)
            .iter()
            .map(|p| {
                let days: Vec<String> = p.days.iter().map(|(d, n)| format!("{d}+{n}")).collect();
                format!("{} +{}: {}", p.key, p.added, days.join(" "))
            })
            .collect();
        assert_eq!(
            view,
            ["a +2: 2025-11-24+1 2025-11-25+1", "b +0: 2025-11-25+0"]
        );
    }

    #[test]
    fn numbers_come_back_from_the_applied_entries() {
        let batch = BatchId::parse("0193a1b2c3d4e5f60718293a4b5c6d7e:000000000042").unwrap();
        let hits = [hit(1, "a", 1_764_028_800_000)];
        let refs: Vec<&PageHitToCount> = hits.iter().collect();
        let counts = PageBatchCounts::of(refs.iter().copied(), &[true]);
        let plans = plan_keys(&refs, &[Claim::Owned], &counts);
        let entries = BTreeMap::from([(batch.key(), 17), (batch.entry_for("2025-11-25"), 5)]);
        let (total, days) = after_from_entries(&batch, &plans[0], &entries).unwrap();
        assert_eq!(total, 17);
        assert_eq!(days.values().copied().collect::<Vec<_>>(), [5]);
        assert_eq!(
            after_from_entries(&batch, &plans[0], &BTreeMap::new()),
            None
        );
        // The batch's own entries sort inside its range, its writer's next
        // batch outside it.
        let (from, to) = batch.own_entries();
        let day_entry = batch.entry_for("2025-11-25");
        assert!(from <= day_entry && day_entry < to);
        let next = BatchId::parse("0193a1b2c3d4e5f60718293a4b5c6d7e:000000000043").unwrap();
        assert!(to <= next.key());
    }
}
