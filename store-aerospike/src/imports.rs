//! Imports: a counter's base, written once into its `pages` record, beside
//! `total` and `days`.
//!
//! One `operate` adds the count to `total` and writes `base`, `base_id` and
//! `base_ts`, atomically, behind a filter that lets it through only while the
//! record has no `base`. So a write whose outcome is in doubt is simply sent
//! again: a repeat is filtered out, and the record's `base_id` then says whether
//! it was this import. `days` are untouched: the audit reads `total` as `base`
//! plus the days, and the repair ([`cluster`](crate::cluster)), which moves a
//! day and `total` together, never touches the base. The all-time top list
//! takes the new total with the counter's next hit.

use std::sync::atomic::{AtomicBool, Ordering};

use aerospike::expressions as exp;
use aerospike::{Bin, Bins, ReadPolicy, ResultCode, Value, operations};
use counter_api::{EpochMillis, ImportOutcome, PageBase, PageImport, PageImported};
use counter_store::StoreError;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{Retry, count, last_value, millis_until, retrying, unavailable_or_failed};
use crate::layout::{BASE_BIN, BASE_ID_BIN, BASE_TS_BIN, PAGES_SET, TOTAL_BIN};

impl AerospikeStore {
    pub(crate) async fn import_base(
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
        let added = Value::from(import.count.get() as i64);
        let ops = [
            operations::add(&Bin::new(TOTAL_BIN, added.clone())),
            operations::put(&Bin::new(BASE_BIN, added)),
            operations::put(&Bin::new(BASE_ID_BIN, Value::from(id.clone()))),
            operations::put(&Bin::new(
                BASE_TS_BIN,
                Value::from(import.ts.as_u64() as i64),
            )),
            operations::get_bin(TOTAL_BIN),
        ];
        // Whether an earlier try may have applied: finding this import's id is
        // then this request's own write, not a repeat of an earlier request.
        let in_doubt = AtomicBool::new(false);
        // The filter makes the write idempotent: a repeat of one that applied
        // is filtered out.
        let answer = retrying(
            &self.inner.events,
            Retry::Idempotent,
            "an import",
            deadline,
            || {
                let mut policy = self.write_policy(deadline);
                policy.base_policy.filter_expression =
                    Some(exp::not(exp::bin_exists(BASE_BIN.to_owned())));
                let (client, record, ops, in_doubt) = (&client, &record, &ops, &in_doubt);
                async move {
                    let answer = client.operate(&policy, record, ops).await;
                    if let Err(error) = &answer {
                        in_doubt.fetch_or(error.in_doubt(), Ordering::Relaxed);
                    }
                    answer
                }
            },
        )
        .await;
        match answer {
            Ok(answer) => Ok(ImportOutcome::Imported(PageImported {
                key: import.key.clone(),
                base: import.count.get(),
                total: count(last_value(&answer.bins, TOTAL_BIN)).unwrap_or(0),
                duplicate: false,
            })),
            Err(error) if error.matches(&[ResultCode::FilteredOut]) => {
                self.imported_already(import, &id, in_doubt.into_inner(), deadline)
                    .await
            }
            Err(error) => Err(unavailable_or_failed(&error)),
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
fn stored_ts(value: Option<&Value>) -> Result<EpochMillis, StoreError> {
    count(value)
        .and_then(|ms| EpochMillis::new(ms.into()).ok())
        .ok_or_else(|| StoreError::Failed(format!("a pages record's {BASE_TS_BIN} is not a time")))
}

/// The base a `pages` record read with [`BASE_BIN`] and [`BASE_TS_BIN`] holds,
/// if any.
pub(crate) fn base_of(
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
