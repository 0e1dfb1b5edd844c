//! Imports on Aerospike: a counter's base, written once into its `pages`
//! record, beside `total` and `days`.
//!
//! One `operate` adds the count to `total` and writes `base`, `base_id` and
//! `base_ts`, atomically, behind a filter that lets it through only while the
//! record has no `base`. So a write whose outcome is in doubt is simply sent
//! again: a repeat is filtered out, and the record's `base_id` then says whether
//! it was this import. `days` are untouched: the audit reads `total` as
//! `base` plus the days, and the repair, which moves a day and `total`
//! together, never touches the base.

use aerospike::expressions as exp;
use aerospike::{Bin, Bins, ReadPolicy, ResultCode, Value, operations};
use counter_api::{EpochMillis, ImportOutcome, PageBase, PageImport, PageImported};
use tokio::time::Instant;

use super::pages::{PAGES_SET, count, last_value};
use super::{
    AerospikeStore, Backoff, StoreError, TOTAL_BIN, millis_until, retry_cause, retryable,
    unavailable_or_failed,
};
use crate::metrics::METRICS;

/// The imported count, in the counter's total and in none of its days.
pub(super) const BASE_BIN: &str = "base";
/// The import's id (its `Idempotency-Key`), which tells a repeat from another import.
const BASE_ID_BIN: &str = "base_id";
/// When it was imported, in milliseconds.
const BASE_TS_BIN: &str = "base_ts";

impl AerospikeStore {
    pub(super) async fn import_base(
        &self,
        import: &PageImport,
    ) -> Result<ImportOutcome, StoreError> {
        // Both sides of a split would each take the base, and the merge keeps
        // one side's total: wait for the cluster to be whole, as hits do.
        let deadline = Instant::now() + self.inner.timeout;
        self.wait_while_split_suspected(deadline).await?;
        let client = self.client()?;
        let record = self.key(PAGES_SET, import.key.as_str())?;
        let id = import.id.to_string();
        let added = import.count.get() as i64;
        let ops = [
            operations::add(&Bin::new(TOTAL_BIN, Value::from(added))),
            operations::put(&Bin::new(BASE_BIN, Value::from(added))),
            operations::put(&Bin::new(BASE_ID_BIN, Value::from(id.clone()))),
            operations::put(&Bin::new(
                BASE_TS_BIN,
                Value::from(import.ts.as_u64() as i64),
            )),
            operations::get_bin(TOTAL_BIN),
        ];
        let mut backoff = Backoff::new();
        // Whether an earlier try may have applied: then finding this import's
        // id is this request's own write, not a client's repeat.
        let mut in_doubt = false;
        loop {
            let mut policy = self.write_policy(deadline);
            policy.base_policy.filter_expression =
                Some(exp::not(exp::bin_exists(BASE_BIN.to_owned())));
            let error = match client.operate(&policy, &record, &ops).await {
                Ok(answer) => {
                    return Ok(ImportOutcome::Imported(PageImported {
                        key: import.key.clone(),
                        base: import.count.get(),
                        total: count(last_value(&answer.bins, TOTAL_BIN)).unwrap_or(0),
                        duplicate: false,
                    }));
                }
                Err(error) if error.matches(&[ResultCode::FilteredOut]) => {
                    return self.imported_already(import, &id, in_doubt, deadline).await;
                }
                Err(error) => error,
            };
            if retryable(&error) && backoff.wait(deadline).await {
                METRICS.retried(retry_cause(&error));
                in_doubt = true;
                continue;
            }
            return Err(unavailable_or_failed(&error));
        }
    }

    /// The counter has a base: this import's, or another's.
    async fn imported_already(
        &self,
        import: &PageImport,
        id: &str,
        in_doubt: bool,
        deadline: Instant,
    ) -> Result<ImportOutcome, StoreError> {
        let client = self.client()?;
        let record = self.key(PAGES_SET, import.key.as_str())?;
        let mut policy = ReadPolicy::default();
        policy.base_policy.total_timeout = millis_until(deadline);
        let bins = client
            .get(
                &policy,
                &record,
                Bins::from([TOTAL_BIN, BASE_BIN, BASE_ID_BIN, BASE_TS_BIN]),
            )
            .await
            .map_err(|e| unavailable_or_failed(&e))?
            .bins;
        let base = count(bins.get(BASE_BIN)).unwrap_or(0);
        if matches!(bins.get(BASE_ID_BIN), Some(Value::String(stored)) if stored == id) {
            return Ok(ImportOutcome::Imported(PageImported {
                key: import.key.clone(),
                base,
                total: count(bins.get(TOTAL_BIN)).unwrap_or(0),
                duplicate: !in_doubt,
            }));
        }
        Ok(ImportOutcome::AlreadyImported {
            base: PageBase {
                count: base,
                ts: stored_ts(bins.get(BASE_TS_BIN))?,
            },
        })
    }
}

/// A base's time as the record holds it.
pub(super) fn stored_ts(value: Option<&Value>) -> Result<EpochMillis, StoreError> {
    count(value)
        .and_then(|ms| EpochMillis::new(ms.into()).ok())
        .ok_or_else(|| StoreError::Failed(format!("a pages record's {BASE_TS_BIN} is not a time")))
}

/// The base a `pages` record read with [`BASE_BINS`] holds, if any.
pub(super) fn base_of(
    bins: &aerospike::IndexMap<String, Value>,
) -> Result<Option<PageBase>, StoreError> {
    match count(last_value(bins, BASE_BIN)) {
        None => Ok(None),
        Some(base) => Ok(Some(PageBase {
            count: base,
            ts: stored_ts(last_value(bins, BASE_TS_BIN))?,
        })),
    }
}

/// The bins [`base_of`] reads.
pub(super) const BASE_BINS: [&str; 2] = [BASE_BIN, BASE_TS_BIN];
