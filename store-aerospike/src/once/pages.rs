//! The named counters' page hits as a [`Kind`] of the engine: intents list
//! `[id, key, ts]`, each hit claims its record in `page_hits`, and a batch
//! counts, in one batch call, into each of its counters in `pages` (`total`
//! and `days[day]`, with the counts after it in `applied`) and into each of
//! its days' totals in `page_days`. A row that fails and cannot be retried
//! leaves the batch to the sweeper.

use std::collections::{BTreeMap, HashMap};

use aerospike::expressions::{self as exp, ExpType};
use aerospike::operations::maps;
use aerospike::{
    BatchOperation, BatchReadPolicy, BatchWritePolicy, Bin, Client, IndexMap, MapReturnType,
    ResultCode, Value, operations,
};
use counter_api::{Day, PageKey};
use counter_store::numbering::PageBatchCounts;
use counter_store::pages::PageHitToCount;
use counter_store::{Audit, StoreError};
use tokio::time::Instant;

use super::{
    BatchId, Claim, HitRecords, KEY_ORDERED, Kind, Writer, intent_entries, intent_entry, ts_value,
};
use crate::AerospikeStore;
use crate::client::{
    Retry, absent, count, day_counts, last_value, map_entries, row_failure, unavailable_or_failed,
};
use crate::layout::{
    APPLIED_BIN, DAY_BIN, DAYS_BIN, HITS_BIN, INTENT_PAGE_HITS_BIN, KEEP_BIN, PAGE_BIN,
    PAGE_DAYS_SET, PAGE_HITS_SET, PAGES_SET, TOTAL_BIN, TS_BIN,
};

pub(crate) struct PageHits;

/// What steps 1 to 3 made of a batch of distinct page hits.
pub(crate) struct PageCounted {
    /// Which hits the batch counted.
    pub(crate) owned: Vec<bool>,
    /// Each counter key's counts after the batch, for the keys they are known
    /// of; the others' hits are answered with the error.
    pub(crate) after: HashMap<PageKey, Result<KeyAfter, StoreError>>,
}

/// One counter key of a batch: what the batch adds to it, in all and per day.
pub(crate) struct KeyPlan<'a> {
    pub(crate) key: &'a PageKey,
    pub(crate) added: u64,
    /// Every day the batch has hits on the key for, with the hits it adds that
    /// day (0 for a day with duplicates only).
    pub(crate) days: BTreeMap<Day, u64>,
}

/// A key's counters after the batch: its total and the batch's days.
pub(crate) type KeyAfter = (u64, BTreeMap<Day, u64>);

impl Kind for PageHits {
    type Hit = PageHitToCount;
    type Counted = PageCounted;

    const INTENT_BIN: &'static str = INTENT_PAGE_HITS_BIN;
    const RECORDS_SET: &'static str = PAGE_HITS_SET;
    // A marker whose intent is gone says "counted" as well: clearing them
    // would cost a second write of every page hit record for nothing.
    const CLEAR_MARKERS: bool = false;

    fn writer(store: &AerospikeStore) -> &std::sync::Mutex<Writer> {
        &store.inner.page_writer
    }

    fn intent_entry(hit: &PageHitToCount) -> Value {
        intent_entry(hit.id, hit.key.as_str(), hit.ts)
    }

    /// The page hits an intent lists (without visitors, which stay best effort).
    fn from_intent(intent: &IndexMap<String, Value>) -> Vec<PageHitToCount> {
        intent_entries(intent, INTENT_PAGE_HITS_BIN)
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
    fn hit_records(store: &AerospikeStore, hits: &[&PageHitToCount]) -> HitRecords {
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

    /// Step 3: the counters of every key of the batch and the day totals,
    /// written once for `batch` however often this runs. Keys with only hits
    /// counted before are read, for their answers.
    async fn write_counters(
        store: &AerospikeStore,
        client: &Client,
        batch: &BatchId,
        hits: &[&PageHitToCount],
        claims: &[Claim],
        deadline: Instant,
    ) -> Result<Option<PageCounted>, StoreError> {
        let owned = Claim::owned(claims);
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
            let key = store.key(PAGES_SET, plan.key.as_str())?;
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
                    &KEY_ORDERED,
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
            let key = store.key(PAGE_DAYS_SET, &day.to_string())?;
            let mut ops = vec![
                operations::put(&Bin::new(DAY_BIN, Value::from(day.to_string()))),
                operations::add(&Bin::new(HITS_BIN, Value::from(*added as i64))),
            ];
            ops.extend(batch.record_applied([(batch.key(), exp::int_bin(HITS_BIN))]));
            ops.push(store.keep_shortest_retention());
            rows.push(BatchOperation::write(&write, key, ops));
        }

        let filtered = store.write_until_known(client, &mut rows, deadline).await?;
        // Rows another run of this batch applied already: their counts after
        // the batch are in the `applied` map.
        let mut earlier: HashMap<usize, Option<KeyAfter>> = HashMap::new();
        let key_rows: Vec<usize> = filtered.into_iter().filter(|&i| i < plans.len()).collect();
        if !key_rows.is_empty() {
            let entries = store
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
        Ok(Some(PageCounted { owned, after }))
    }

    /// Offers what the sweeper counted to the top lists (offers are idempotent
    /// and only ever raise a count, so a repeat changes nothing).
    async fn swept(
        store: &AerospikeStore,
        client: &Client,
        hits: &[&PageHitToCount],
        counted: PageCounted,
        deadline: Instant,
    ) {
        let counts = PageBatchCounts::of(hits.iter().copied(), &counted.owned);
        let known: HashMap<PageKey, KeyAfter> = counted
            .after
            .into_iter()
            .filter_map(|(key, after)| Some((key, after.ok()?)))
            .collect();
        store.offer_to_tops(client, &counts, &known, deadline).await;
    }
}

impl AerospikeStore {
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
        let answered = self
            .send_rows(client, rows, Retry::Idempotent, deadline)
            .await;
        let mut filtered = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match row.result_code() {
                Some(ResultCode::Ok) => {}
                // A read of a counter never written, or of a map bin missing.
                Some(ResultCode::KeyNotFoundError | ResultCode::BinNotFound)
                    if !row.batch_record().has_write() => {}
                Some(ResultCode::FilteredOut) => filtered.push(i),
                _ => {
                    if let Some(error) = row.error()
                        && !Retry::Idempotent.allows(error)
                    {
                        let error = unavailable_or_failed(error);
                        self.inner
                            .faults
                            .record(row.batch_record().key.set_name(), &error);
                        return Err(error);
                    }
                }
            }
        }
        if !answered {
            return Err(StoreError::Unavailable(
                "not every page counter could be written in time".into(),
            ));
        }
        Ok(filtered)
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
    for (hit, _) in hits.iter().zip(claims).filter(|(_, c)| !c.is_pending()) {
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

/// A key's counters after its row of step 3 (`page_batches`), checked against
/// what the batch added (a row that applied but reads back less than it added
/// is answered as an error).
pub(crate) fn key_after(plan: &KeyPlan<'_>, row: &BatchOperation) -> Result<KeyAfter, StoreError> {
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

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use counter_store::pages::test_hit as hit;

    #[test]
    fn an_intent_lists_what_the_sweeper_counts() {
        let hits = [
            hit(1, "blog/a", 1_764_028_799_000),
            hit(2, "b", 1_764_028_800_000),
        ];
        let refs: Vec<&PageHitToCount> = hits.iter().collect();
        let list = refs.iter().map(|hit| PageHits::intent_entry(hit)).collect();
        let bins = IndexMap::from([(INTENT_PAGE_HITS_BIN.to_owned(), Value::List(list))]);
        assert_eq!(PageHits::from_intent(&bins), hits);
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
            Claim::Pending(Writer::new().next_batch()),
        ];
        let counts = PageBatchCounts::of(refs.iter().copied(), &Claim::owned(&claims));
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
