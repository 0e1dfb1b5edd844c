//! The tutorial's sets outside the exactly-once steps: its hits counted and
//! numbered, `summary` read and adjusted, the newest hits, the recount.

use std::time::{SystemTime, UNIX_EPOCH};

use aerospike::errors::Error as AsError;
use aerospike::query::{Filter, PartitionFilter, Statement};
use aerospike::{Bin, Bins, Client, QueryPolicy, ReadPolicy, ResultCode, Value, operations};
use counter_api::{
    EpochMillis, Hit, HitId, Recorded, ServerId, ServerTotal, Summary, TOTAL_HITS_KEY,
};
use counter_store::StoreError;
use counter_store::numbering::{number_batch, summary_from_counts};
use futures::StreamExt;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{
    Retry, counter_value, millis_until, query_policy, retrying, unavailable_or_failed,
};
use crate::layout::{HITS_SET, SERVER_BIN, SUMMARY_SET, TOTAL_BIN, TS_BIN};
use crate::once::tutorial::TutorialHits;

impl AerospikeStore {
    /// Counts a group commit of the tutorial's hits exactly once
    /// ([`once`](crate::once)) and numbers them: each counted hit its own
    /// `total_hits` and server count.
    pub(crate) async fn record_tutorial_hits(
        &self,
        hits: &[Hit],
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        let committed = self.commit::<TutorialHits>(hits).await?;
        let (total_after, server_after) = &committed.counted;
        Ok(
            number_batch(hits, &committed.owned, *total_after, server_after)
                .into_iter()
                .zip(&committed.claims)
                .map(|(recorded, claim)| claim.answer().map(|_| recorded))
                .collect(),
        )
    }

    /// A plain `operate(add delta, get)` on a counter, not idempotent: for the
    /// operator's reconcile and for reads (`delta = 0`, as a batch whose hits are
    /// all duplicates does). Batches count through [`once`](crate::once). KEY_BUSY and
    /// other failures that surely did not apply are retried with backoff until the
    /// deadline.
    pub(crate) async fn add_to_counter(
        &self,
        client: &Client,
        key: &str,
        delta: i64,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let key = self.key(SUMMARY_SET, key)?;
        let total = retrying(
            &self.inner.events,
            Retry::IfNotApplied,
            deadline,
            || async {
                if delta == 0 {
                    let mut policy = ReadPolicy::default();
                    policy.base_policy.total_timeout = millis_until(deadline);
                    client
                        .get(&policy, &key, Bins::from([TOTAL_BIN]))
                        .await
                        .map(|record| counter_value(&record.bins))
                        .or_else(|e| {
                            if e.matches(&[ResultCode::KeyNotFoundError]) {
                                Ok(Some(0))
                            } else {
                                Err(e)
                            }
                        })
                } else {
                    let add = Bin::new(TOTAL_BIN, Value::from(delta));
                    let ops = [operations::add(&add), operations::get_bin(TOTAL_BIN)];
                    client
                        .operate(&self.write_policy(deadline), &key, &ops)
                        .await
                        .map(|record| counter_value(&record.bins))
                }
            },
        )
        .await
        .map_err(|error| unavailable_or_failed(&error))?;
        total.ok_or_else(|| {
            StoreError::Failed(format!(
                "summary record {key} has no integer bin {TOTAL_BIN:?}"
            ))
        })
    }

    /// The grand total and every server's total, servers sorted by id.
    pub(crate) async fn read_summary(&self) -> Result<Summary, StoreError> {
        let client = self.client()?;
        let mut policy = query_policy();
        policy.base_policy.total_timeout = self.inner.timeout.as_millis() as u32;
        let mut stream = self
            .scan(client, &policy, SUMMARY_SET, Bins::from([TOTAL_BIN]))
            .await?;
        let mut summary = Summary::default();
        while let Some(record) = stream.next().await {
            let record = record?;
            let Some(Value::String(key)) = record.key.as_ref().and_then(|k| k.user_key().cloned())
            else {
                tracing::warn!(
                    "a summary record has no stored key; was it written without send_key?"
                );
                continue;
            };
            let total = counter_value(&record.bins).unwrap_or(0);
            if key == TOTAL_HITS_KEY {
                summary.total_hits = total;
            } else if let Ok(server) = key.parse::<ServerId>() {
                summary.servers.push(ServerTotal { server, total });
            }
        }
        summary.servers.sort_by(|a, b| a.server.cmp(&b.server));
        Ok(summary)
    }

    /// Counts the hit records themselves, per server.
    pub(crate) async fn count_records(&self) -> Result<Summary, StoreError> {
        let client = self.client()?;
        let mut policy = query_policy();
        // A full scan takes as long as it takes, but not forever.
        policy.base_policy.total_timeout = 120_000;
        let mut stream = self
            .scan(client, &policy, HITS_SET, Bins::from([SERVER_BIN]))
            .await?;
        let mut counts = std::collections::BTreeMap::new();
        while let Some(record) = stream.next().await {
            let record = record?;
            if let Some(Value::String(server)) = record.bins.get(SERVER_BIN)
                && let Ok(server) = server.parse::<ServerId>()
            {
                *counts.entry(server).or_insert(0) += 1;
            }
        }
        Ok(summary_from_counts(counts))
    }

    /// The newest `limit` hits: a query on the `ts` index over a time window that
    /// is widened until it holds enough hits, and narrowed again when it holds more
    /// than one query should stream; the whole set if the index is missing.
    /// All probes share one deadline, so a slow search answers 503, never a hang.
    pub(crate) async fn latest(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
        /// Records one window query may stream before it counts as too wide.
        const WINDOW_CAP: usize = 20_000;
        const MAX_WINDOW_MS: i64 = 366 * 86_400_000;
        let client = self.client()?;
        let deadline = Instant::now() + self.inner.timeout;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut policy = query_policy();
        // The widest window known to hold fewer than `limit` hits, and the next try.
        let (mut short, mut window) = (0_i64, 10_000_i64);
        for _ in 0..32 {
            policy.base_policy.total_timeout = millis_until(deadline);
            let mut statement = Statement::new(self.inner.namespace.as_str(), HITS_SET, Bins::All);
            statement.set_filter(Filter::range(TS_BIN, now - window, i64::MAX));
            match self
                .query_hits(client, &policy, statement, limit, WINDOW_CAP)
                .await
            {
                // Too many to stream: its newest need not be among what came back.
                Ok((_, true)) if window - short > 1 => window = short + (window - short) / 2,
                Ok((hits, truncated)) if truncated || hits.len() >= limit => return Ok(hits),
                Ok(_) if window >= MAX_WINDOW_MS => break,
                Ok(_) => {
                    short = window;
                    window = (window * 30).min(MAX_WINDOW_MS);
                }
                Err(error)
                    if error
                        .matches(&[ResultCode::IndexNotFound, ResultCode::IndexNotReadable]) =>
                {
                    break;
                }
                Err(error) => return Err(unavailable_or_failed(&error)),
            }
        }
        policy.base_policy.total_timeout = millis_until(deadline);
        let statement = Statement::new(self.inner.namespace.as_str(), HITS_SET, Bins::All);
        self.query_hits(client, &policy, statement, limit, usize::MAX)
            .await
            .map(|(hits, _)| hits)
            .map_err(|e| unavailable_or_failed(&e))
    }

    /// The newest `limit` hits of a query that streams at most `cap` records, and
    /// whether it stopped at the cap.
    async fn query_hits(
        &self,
        client: &Client,
        policy: &QueryPolicy,
        statement: Statement,
        limit: usize,
        cap: usize,
    ) -> Result<(Vec<Hit>, bool), AsError> {
        let records = client
            .query(policy, PartitionFilter::all(), statement)
            .await?;
        let mut stream = records.clone().into_stream();
        // Keep only the newest `limit`: a min-heap on ts.
        let mut newest = std::collections::BinaryHeap::with_capacity(limit + 1);
        let mut streamed = 0;
        while let Some(record) = stream.next().await {
            let record = record?;
            streamed += 1;
            if let Some(hit) = hit_from(&record) {
                newest.push(std::cmp::Reverse((hit.ts, hit.id, hit.server)));
                if newest.len() > limit {
                    newest.pop();
                }
            }
            if streamed >= cap {
                records.close();
                break;
            }
        }
        let mut hits: Vec<Hit> = newest
            .into_iter()
            .map(|std::cmp::Reverse((ts, id, server))| Hit { id, server, ts })
            .collect();
        hits.sort_by_key(|hit| std::cmp::Reverse((hit.ts, hit.id)));
        Ok((hits, streamed >= cap))
    }
}

/// A `hits` record as a [`Hit`]; records another writer left malformed are skipped.
fn hit_from(record: &aerospike::Record) -> Option<Hit> {
    let Some(Value::String(id)) = record.key.as_ref()?.user_key() else {
        return None;
    };
    let Value::String(server) = record.bins.get(SERVER_BIN)? else {
        return None;
    };
    let Value::Int(ts) = record.bins.get(TS_BIN)? else {
        return None;
    };
    Some(Hit {
        id: id.parse::<HitId>().ok()?,
        server: server.parse().ok()?,
        ts: EpochMillis::new(i128::from(*ts)).ok()?,
    })
}
