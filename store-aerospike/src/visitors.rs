//! Unique visitors of the named counters on Aerospike, and the day's secrets
//! they are hashed with (`page_visitors`, `visitor_salts`).
//!
//! The first gateway to need a day's secret creates it (create-only, so every
//! gateway ends up with the winner's), and the one that creates a day's secret
//! deletes those of the days before the day before. No record TTLs: a
//! namespace without nsup refuses them.

use aerospike::operations::hll::{self, HllPolicy};
use aerospike::{
    BatchOperation, BatchPolicy, BatchWritePolicy, Bin, Bins, Client, ReadPolicy,
    RecordExistsAction, ResultCode, Value, WritePolicy, operations,
};
use counter_api::{Day, PageKey};
use counter_store::StoreError;
use counter_store::numbering::PageBatchCounts;
use counter_store::pages::{HLL_INDEX_BITS, VisitorSalt};
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{Backoff, FORGET_TIMEOUT_MS, Retry, millis_until, unavailable_or_failed};
use crate::layout::*;

/// A new day's secret deletes those of the days from two back to this many back,
/// so a gateway down for weeks still leaves none behind.
const FORGET_SALTS_DAYS: u32 = 30;

impl AerospikeStore {
    /// The visitors of each counter and day of the batch, best effort: a row
    /// that fails is a write fault, logged and counted, and the hits stay
    /// answered (an estimate stays an estimate).
    pub(crate) async fn add_visitors(
        &self,
        client: &Client,
        counts: &PageBatchCounts,
        deadline: Instant,
    ) {
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
    fn only_a_whole_secret_is_a_secret() {
        assert_eq!(
            stored_salt(Some(&Value::Blob(vec![7; 32]))).unwrap(),
            VisitorSalt([7; 32])
        );
        assert!(stored_salt(Some(&Value::Blob(vec![7; 31]))).is_err());
        assert!(stored_salt(None).is_err());
    }
}
