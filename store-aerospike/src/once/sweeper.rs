//! The sweeper of [`once`](super): finishes the batches a gateway left (it
//! died, froze, or ran out of time), whichever gateway started them.

use std::time::Duration;

use aerospike::expressions as exp;
use aerospike::query::{PartitionFilter, Statement};
use aerospike::{Bins, Client, Value};
use futures::StreamExt;
use tokio::time::Instant;

use super::pages::PageHits;
use super::tutorial::TutorialHits;
use super::{BatchId, Kind};
use crate::AerospikeStore;
use crate::client::query_policy;
use crate::layout::BATCHES_SET;

/// How often the sweeper looks for unfinished batches.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// An intent the server has not seen updated for this long (beyond the store
/// deadline) belongs to a batch its writer gave up on, or to a dead writer.
pub(crate) fn sweep_age(store_timeout: Duration) -> Duration {
    store_timeout * 2 + Duration::from_secs(2)
}

impl AerospikeStore {
    /// Runs the sweeper until the process ends.
    pub(crate) async fn sweep_forever(self) {
        let age = sweep_age(self.inner.timeout);
        loop {
            tokio::time::sleep(SWEEP_INTERVAL).await;
            if let Ok(client) = self.client() {
                self.sweep(client, age).await;
            }
        }
    }

    /// Finishes every batch whose intent is older than `age`.
    async fn sweep(&self, client: &Client, age: Duration) {
        let mut policy = query_policy();
        policy.base_policy.total_timeout = self.inner.timeout.as_millis() as u32;
        policy.base_policy.filter_expression = Some(exp::gt(
            exp::since_update(),
            exp::int_val(age.as_millis() as i64),
        ));
        let statement = Statement::new(
            self.inner.namespace.as_str(),
            BATCHES_SET,
            Bins::from([TutorialHits::INTENT_BIN, PageHits::INTENT_BIN]),
        );
        let records = match client
            .query(&policy, PartitionFilter::all(), statement)
            .await
        {
            Ok(records) => records,
            Err(error) => {
                tracing::debug!(%error, "cannot look for unfinished batches");
                return;
            }
        };
        let mut found = Vec::new();
        let mut stream = records.into_stream();
        while let Some(record) = stream.next().await {
            match record {
                Ok(record) => found.push(record),
                Err(error) => {
                    tracing::debug!(%error, "looking for unfinished batches");
                    break;
                }
            }
        }
        for record in found {
            let Some(Value::String(key)) = record.key.as_ref().and_then(|k| k.user_key().cloned())
            else {
                continue;
            };
            let Some(batch) = BatchId::parse(&key) else {
                tracing::warn!(%key, "an intent with a key this gateway did not write; left alone");
                continue;
            };
            let deadline = Instant::now() + self.inner.timeout;
            let finished = if record.bins.contains_key(PageHits::INTENT_BIN) {
                self.finish::<PageHits>(client, &batch, &record.bins, deadline)
                    .await
            } else {
                self.finish::<TutorialHits>(client, &batch, &record.bins, deadline)
                    .await
            };
            match finished {
                Ok(release) => {
                    let counted = release.owned_ids.len();
                    if self
                        .release_all(client, std::slice::from_ref(&release))
                        .await[0]
                    {
                        self.inner.events.swept_batch();
                        tracing::info!(%batch, set = release.set, counted,
                            "finished a batch its gateway left unfinished");
                    }
                }
                Err(error) => {
                    tracing::warn!(%batch, %error, "cannot finish a left batch yet; trying again")
                }
            }
        }
    }
}
