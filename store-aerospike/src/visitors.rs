//! Unique visitors of the named counters on Aerospike, and the day's secrets
//! they are hashed with (`page_visitors`, `visitor_salts`).
//!
//! A counter-day's visitors take storage in proportion to their number until a
//! dense HyperLogLog is the smaller form: first an exact, ordered list of the
//! keyed hashes (bin `hashes`), which answers its size, then, once the list
//! would outgrow [`EXACT_VISITORS_MAX`], the HyperLogLog (bin `visitors`) fed
//! the list and the new hashes, with the list removed. Every write of a
//! counter-day is one of four guarded steps ([`Step`]), so batches of any
//! gateway may land on the same counter-day at once, the switch included,
//! and no hash is lost: the list grows only while there is no HyperLogLog and
//! room left (a filter expression), the HyperLogLog grows only where it
//! exists, and the switch holds only if the record did not change since its
//! list was read (its generation). A record written before the list existed
//! holds a HyperLogLog and keeps it.
//!
//! Visitor records expire `VISITOR_RETENTION` after their last write (a record
//! TTL, which needs `nsup-period` in the namespace, as page hit records do).
//!
//! The first gateway to need a day's secret creates it (create-only, so every
//! gateway ends up with the winner's), and the one that creates a day's secret
//! deletes those of the days before the day before. Secrets have no TTL: they
//! are deleted, not left to expire.

use aerospike::expressions::{self as exp, lists as exp_lists};
use aerospike::operations::exp::{ExpReadFlags, read_exp};
use aerospike::operations::hll::{self, HllPolicy};
use aerospike::operations::lists::{self, ListOrderType, ListPolicy, ListWriteFlags};
use aerospike::{
    BatchOperation, BatchPolicy, BatchReadPolicy, BatchWritePolicy, Bin, Bins, Client,
    GenerationPolicy, Key, ReadPolicy, RecordExistsAction, ResultCode, Value, WritePolicy,
    operations,
};
use counter_api::{Day, PageKey};
use counter_store::StoreError;
use counter_store::numbering::PageBatchCounts;
use counter_store::pages::{HLL_INDEX_BITS, VisitorSalt};
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{
    Backoff, FORGET_TIMEOUT_MS, Retry, millis_until, row_failure, unavailable_or_failed,
};
use crate::layout::*;

/// A new day's secret deletes those of the days from two back to this many back,
/// so a gateway down for weeks still leaves none behind.
const FORGET_SALTS_DAYS: u32 = 30;

/// The most hashes a counter-day keeps as an exact list. A dense HyperLogLog
/// holds 2^[`HLL_INDEX_BITS`] registers of 6 bits (12,288 B at 14 bits, plus a
/// few bytes of header); a hash in an ordered list is a msgpack int64, 9 B. At
/// 1,365 hashes the list reaches the HyperLogLog's size, so past this the
/// HyperLogLog is the smaller form.
pub(crate) const EXACT_VISITORS_MAX: usize = (1 << HLL_INDEX_BITS) * 6 / 8 / 9;

/// The exact list: ordered, so the server finds a repeat by binary search, and
/// each hash in it once; a hash already there is skipped, not refused, and the
/// rest of the batch's still go in.
const EXACT_LIST: ListPolicy = ListPolicy::new(
    ListOrderType::Ordered,
    ListWriteFlags::from_bits(
        ListWriteFlags::ADD_UNIQUE.bits()
            | ListWriteFlags::NO_FAIL.bits()
            | ListWriteFlags::PARTIAL.bits(),
    ),
);

/// Rounds of guarded steps one batch may take for its visitors. A counter-day
/// needs at most four (list refused, HyperLogLog refused, read, switch) unless
/// other gateways keep winning the switch; each lost race ends in the
/// HyperLogLog, so a few more rounds always suffice in practice.
const MAX_ROUNDS: usize = 12;

/// The next guarded write of one counter-day's visitors.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Add the hashes to the exact list, if the record holds no HyperLogLog
    /// and the list has room for all of them (or there is no record yet).
    Exact,
    /// Add the hashes to the HyperLogLog, if the record holds one (or there is
    /// no record yet: more hashes than a list may hold).
    Estimate,
    /// Read the list and the record's generation, for the switch.
    Read,
    /// Write the HyperLogLog of `listed` and the new hashes and remove the
    /// list, if the record is still at `generation`.
    Switch { generation: u32, listed: Vec<Value> },
}

/// One counter-day's hashes of a batch, on their way into the store.
struct CounterDay {
    record: Key,
    key: PageKey,
    day: Day,
    hashes: Vec<Value>,
    step: Step,
}

impl CounterDay {
    /// Where a counter-day starts: the list, unless the batch alone brings
    /// more hashes than a list may hold.
    fn first_step(&self) -> Step {
        if self.hashes.len() <= EXACT_VISITORS_MAX {
            Step::Exact
        } else {
            Step::Estimate
        }
    }
}

/// A counter-day's number of visitors as one read: the list's size while it
/// is exact, the HyperLogLog's estimate once it is not, answered in bin
/// `visitors`.
pub(crate) fn visitor_count() -> operations::Operation {
    read_exp(
        VISITORS_BIN,
        exp::cond(vec![
            exp::bin_exists(VISITORS_BIN),
            exp::hll::get_count(exp::hll_bin(VISITORS_BIN)),
            listed_hashes(),
        ]),
        ExpReadFlags::DEFAULT,
    )
}

/// The exact list's size, 0 without a list: the size of a missing bin
/// would fail the whole expression.
fn listed_hashes() -> exp::Expression {
    exp::cond(vec![
        exp::bin_exists(HASHES_BIN),
        exp_lists::size(exp::list_bin(HASHES_BIN), &[]),
        exp::int_val(0),
    ])
}

/// The hashes as the bins hold them. The HyperLogLog has always been fed
/// them as signed integers: records written before the list was there keep
/// counting each visitor once.
fn stored_hashes(visitors: &[counter_store::pages::VisitorHash]) -> Vec<Value> {
    let mut hashes: Vec<i64> = visitors.iter().map(|v| v.0 as i64).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes.into_iter().map(Value::Int).collect()
}

impl AerospikeStore {
    /// The visitors of each counter and day of the batch, best effort: a
    /// counter-day that fails is a write fault, logged and counted, and the
    /// hits stay answered (an estimate stays an estimate). All counter-days of
    /// the batch take each step together, one batch call per round.
    pub(crate) async fn add_visitors(
        &self,
        client: &Client,
        counts: &PageBatchCounts,
        deadline: Instant,
    ) {
        let mut pending: Vec<CounterDay> = Vec::new();
        for ((key, day), visitors) in &counts.visitors {
            let Ok(record) = self.key(PAGE_VISITORS_SET, &visitors_key(key, *day)) else {
                continue;
            };
            let mut counter_day = CounterDay {
                record,
                key: key.clone(),
                day: *day,
                hashes: stored_hashes(visitors),
                step: Step::Exact,
            };
            counter_day.step = counter_day.first_step();
            pending.push(counter_day);
        }
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                return;
            }
            let mut rows: Vec<BatchOperation> =
                pending.iter().map(|cd| self.visitor_row(cd)).collect();
            self.send_rows(client, &mut rows, Retry::IfNotApplied, deadline)
                .await;
            let mut next = Vec::new();
            for (mut counter_day, row) in pending.into_iter().zip(&rows) {
                match self.after(&counter_day, row) {
                    Ok(None) => {}
                    Ok(Some(step)) => {
                        counter_day.step = step;
                        next.push(counter_day);
                    }
                    Err(error) => self.visitors_not_written(&counter_day, &error),
                }
            }
            pending = next;
        }
        for counter_day in &pending {
            let error = StoreError::Unavailable(format!(
                "the switch to a HyperLogLog lost {MAX_ROUNDS} races in a row"
            ));
            self.visitors_not_written(counter_day, &error);
        }
    }

    /// The batch row of a counter-day's next step.
    fn visitor_row(&self, counter_day: &CounterDay) -> BatchOperation {
        let record = counter_day.record.clone();
        // The key is not stored: it would add a third to a record of a few
        // visitors (10: 208 B with it, 176 B without), and the key
        // `<counter>@<day>` is what a reader already knows to find it.
        let write = |filter: Option<exp::Expression>| BatchWritePolicy {
            send_key: false,
            expiration: self.visitor_expiration(),
            filter_expression: filter,
            ..BatchWritePolicy::default()
        };
        let hashes = || counter_day.hashes.clone();
        match &counter_day.step {
            Step::Exact => {
                // A filter does not apply to a record that does not exist:
                // the first hashes of a counter-day create it with its list.
                let room = (EXACT_VISITORS_MAX - counter_day.hashes.len()) as i64;
                let filter = exp::and(vec![
                    exp::not(exp::bin_exists(VISITORS_BIN)),
                    exp::le(listed_hashes(), exp::int_val(room)),
                ]);
                BatchOperation::write(
                    &write(Some(filter)),
                    record,
                    [lists::append_items(&EXACT_LIST, HASHES_BIN, hashes())],
                )
            }
            Step::Estimate => BatchOperation::write(
                &write(Some(exp::bin_exists(VISITORS_BIN))),
                record,
                [add_to_hll(hashes())],
            ),
            Step::Read => BatchOperation::read(
                &BatchReadPolicy::default(),
                record,
                Bins::from([HASHES_BIN, VISITORS_BIN]),
            ),
            Step::Switch { generation, listed } => {
                let policy = BatchWritePolicy {
                    generation_policy: GenerationPolicy::ExpectGenEqual,
                    generation: *generation,
                    ..write(None)
                };
                let mut all = listed.clone();
                all.extend(hashes());
                BatchOperation::write(
                    &policy,
                    record,
                    [
                        add_to_hll(all),
                        // A nil bin is a removed bin.
                        operations::put(&Bin::new(HASHES_BIN, Value::Nil)),
                    ],
                )
            }
        }
    }

    /// What a counter-day's row answered means: done (`None`), the next step,
    /// or a failure to report.
    fn after(
        &self,
        counter_day: &CounterDay,
        row: &BatchOperation,
    ) -> Result<Option<Step>, StoreError> {
        let code = row.result_code();
        match (&counter_day.step, code) {
            (Step::Read, Some(ResultCode::Ok)) => {
                let bins = row.record().map(|r| (&r.bins, r.generation));
                let Some((bins, generation)) = bins else {
                    return Err(row_failure(row));
                };
                if bins.contains_key(VISITORS_BIN) {
                    return Ok(Some(Step::Estimate));
                }
                let listed = match bins.get(HASHES_BIN) {
                    Some(Value::List(listed)) => listed.clone(),
                    Some(other) => {
                        return Err(StoreError::Failed(format!(
                            "a visitor record's {HASHES_BIN:?} is not a list but {other}"
                        )));
                    }
                    None => Vec::new(),
                };
                Ok(Some(Step::Switch { generation, listed }))
            }
            // Gone since (expired): a new record, made by the first step.
            (Step::Read, Some(ResultCode::KeyNotFoundError)) => Ok(Some(counter_day.first_step())),
            (_, Some(ResultCode::Ok)) => Ok(None),
            (Step::Exact, Some(ResultCode::FilteredOut)) => Ok(Some(Step::Estimate)),
            (Step::Estimate, Some(ResultCode::FilteredOut)) => Ok(Some(Step::Read)),
            // Another batch changed the record since its list was read:
            // start over from what it holds now.
            (Step::Switch { .. }, Some(ResultCode::GenerationError)) => {
                Ok(Some(counter_day.first_step()))
            }
            _ => Err(row_failure(row)),
        }
    }

    fn visitors_not_written(&self, counter_day: &CounterDay, error: &StoreError) {
        tracing::warn!(key = %counter_day.key, day = %counter_day.day, step = ?counter_day.step,
            %error, "visitors of a page hit batch not written");
        self.inner.faults.record(PAGE_VISITORS_SET, error);
    }

    /// The day's secret: read it, or make it if no gateway has yet. A create-only
    /// write decides between gateways racing to make it; the loser reads the
    /// winner's. A write whose outcome is unknown answers 503: the secret it
    /// sent may or may not be the day's.
    pub(crate) async fn day_salt(
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
                    let salt = VisitorSalt::random()?;
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
            if Retry::IfNotApplied.allows(&error) && backoff.wait(deadline).await {
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

    /// Deletes records of `set` as one batch (a record already gone is fine):
    /// records written but not counted, or secrets past their day. What cannot be
    /// deleted is logged as `why`. Has a deadline of its own: it runs when the
    /// caller's may be spent.
    async fn forget_records(
        &self,
        client: &Client,
        set: &str,
        keys: impl IntoIterator<Item = String>,
        why: &str,
    ) {
        let row_policy = aerospike::BatchDeletePolicy::default();
        let mut rows: Vec<BatchOperation> = keys
            .into_iter()
            .filter_map(|key| self.key(set, &key).ok())
            .map(|key| BatchOperation::delete(&row_policy, key))
            .collect();
        if rows.is_empty() {
            return;
        }
        let mut policy = BatchPolicy::write_default();
        policy.base_policy.total_timeout = FORGET_TIMEOUT_MS;
        if let Err(error) = client.batch(&policy, &mut rows).await {
            tracing::debug!(%error, set, "batch delete failed on a node");
        }
        for row in &rows {
            if let Some(error) = row.error()
                && !error.matches(&[ResultCode::KeyNotFoundError])
            {
                let key = row.batch_record().key.user_key().map(ToString::to_string);
                tracing::error!(set, ?key, %error, "{why}");
            }
        }
    }
}

/// Adds hashes to the dense HyperLogLog, creating it if the bin is missing.
fn add_to_hll(hashes: Vec<Value>) -> operations::Operation {
    hll::add_with_index_and_min_hash(
        &HllPolicy::default(),
        VISITORS_BIN,
        hashes,
        i64::from(HLL_INDEX_BITS),
        0,
    )
}

pub(crate) fn visitors_key(key: &PageKey, day: Day) -> String {
    format!("{key}@{day}")
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
    fn the_list_stops_where_the_hyperloglog_is_smaller() {
        assert_eq!(EXACT_VISITORS_MAX, 1_365);
        const { assert!(EXACT_VISITORS_MAX * 9 <= (1 << HLL_INDEX_BITS) * 6 / 8) };
    }

    #[test]
    fn hashes_are_stored_once_each_as_the_hyperloglog_was_fed_them() {
        let visitors = [u64::MAX, 3, 3, 1 << 63].map(counter_store::pages::VisitorHash);
        assert_eq!(
            stored_hashes(&visitors),
            [Value::Int(i64::MIN), Value::Int(-1), Value::Int(3)]
        );
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
