//! The Aerospike store, laid out exactly as the tutorial's app lays out its data,
//! so `aql> select * from test.hits` and `select * from test.summary` read the same:
//!
//! - set `hits`: key = the hit id as a string (sent with the record), bins `server`
//!   (string) and `ts` (integer milliseconds);
//! - set `summary`: keys `total_hits` and each server id, bin `total` (integer).
//!
//! One [`Client`] per gateway process, built from the seed hosts at start-up; it
//! discovers the rest of the cluster and follows nodes joining and leaving. (The
//! tutorial built a client per request.) If the cluster is not up yet, the gateway
//! serves anyway, answers 503 and keeps trying to connect in the background.
//!
//! A batch of hits is counted exactly once, whatever fails, by the steps in
//! [`batches`]: an intent record, the hit records (create-only: a record that
//! already exists marks a retried hit, which is not counted again), then
//! `total_hits` and each server's counter, each one idempotent `operate(add k,
//! get)`, so each hit of the batch gets its own N from a single atomic increment.
//! Two transient additions make that hold without transactions: a `batch` bin on
//! a hit record until it is counted, and an `applied` map bin on each counter.
//!
//! The named counters (page hits) have sets of their own, described in [`pages`],
//! and are counted by the same scheme ([`page_batches`]), with the same sweeper.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aerospike::errors::Error as AsError;
use aerospike::operations;
use aerospike::query::{Filter, PartitionFilter, Statement};
use aerospike::{
    BatchOperation, BatchPolicy, Bin, Bins, Client, ClientPolicy, CollectionIndexType, ErrorKind,
    Expiration, IndexType, Key, QueryPolicy, ReadPolicy, ResultCode, ToHosts, Value, WritePolicy,
};
use anyhow::Context;
use counter_api::{
    EpochMillis, Hit, HitId, Recorded, ServerId, ServerTotal, Summary, TOTAL_HITS_KEY,
};
use futures::StreamExt;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use counter_api::{
    Day, ImportOutcome, PageImport, PageKey, PageRecorded, PageStats, PagesOverview,
};

use self::batches::{Claim, Writer, back_to_batch, first_only};
use self::split::ClusterView;
use super::pages::{DayRange, PageHitToCount, PageTallies, VisitorSalt};
use super::{
    Retention, Store, StoreError, WriteFaults, first_occurrences, number_batch, summary_from_counts,
};
use crate::metrics::METRICS;

mod batches;
mod imports;
mod page_batches;
mod pages;
mod split;

const HITS_SET: &str = "hits";
const SUMMARY_SET: &str = "summary";
const TOTAL_BIN: &str = "total";
/// The secondary index that lets the latest-hits view read a time window of `hits`
/// instead of scanning the whole set.
const TS_INDEX: &str = "hits_ts";

#[derive(Clone)]
pub struct AerospikeStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: OnceCell<Client>,
    seeds: String,
    namespace: String,
    timeout: Duration,
    /// Names the tutorial's batches, in the order this gateway counts them.
    writer: std::sync::Mutex<Writer>,
    /// The same for batches of page hits.
    page_writer: std::sync::Mutex<Writer>,
    /// What the split watch has seen of the cluster.
    cluster: std::sync::Mutex<ClusterView>,
    /// The last entry of each top list as this gateway last read it
    /// (`pages.rs`).
    top_cuts: std::sync::Mutex<HashMap<String, (u64, PageKey)>>,
    faults: WriteFaults,
    /// The TTL of page hit records, in seconds; 0: the namespace's default
    /// (forever, as shipped).
    page_hit_ttl: std::sync::atomic::AtomicU32,
    /// The same for the tutorial's hit records (0 unless the operator opted in).
    hit_ttl: std::sync::atomic::AtomicU32,
    /// Counted batches, to the releaser (step 4 of `batches`).
    releases: tokio::sync::mpsc::Sender<batches::Release>,
}

impl AerospikeStore {
    /// Checks the seed list and starts connecting in the background; the store
    /// answers [`StoreError::Unavailable`] until the cluster is reached.
    pub fn connect(seeds: &[String], namespace: &str, timeout: Duration) -> anyhow::Result<Self> {
        let seeds = seeds.join(",");
        seeds
            .to_hosts()
            .with_context(|| format!("AEROSPIKE_HOSTS={seeds:?} is not a list of host:port"))?;
        let (releases, counted) = tokio::sync::mpsc::channel(batches::RELEASE_QUEUE);
        let store = Self {
            inner: Arc::new(Inner {
                client: OnceCell::new(),
                seeds,
                namespace: namespace.to_owned(),
                timeout,
                writer: std::sync::Mutex::new(Writer::new()),
                page_writer: std::sync::Mutex::new(Writer::new()),
                cluster: std::sync::Mutex::default(),
                top_cuts: std::sync::Mutex::default(),
                faults: WriteFaults::default(),
                page_hit_ttl: std::sync::atomic::AtomicU32::new(0),
                hit_ttl: std::sync::atomic::AtomicU32::new(0),
                releases,
            }),
        };
        tokio::spawn(store.clone().keep_connecting());
        tokio::spawn(store.clone().release_forever(counted));
        Ok(store)
    }

    /// Page hit records expire `page_hits` after they are written, the
    /// tutorial's hit records `hits` after: record TTLs, which the namespace
    /// refuses unless `nsup-period` is set.
    pub fn retaining(self, page_hits: Retention, hits: Retention) -> Self {
        let secs = |retention: Retention| {
            retention
                .0
                .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1))
        };
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.inner.page_hit_ttl.store(secs(page_hits), relaxed);
        self.inner.hit_ttl.store(secs(hits), relaxed);
        self
    }

    /// The expiration of a new page hit record.
    fn page_hit_expiration(&self) -> Expiration {
        expiration(&self.inner.page_hit_ttl)
    }

    /// The expiration of a new hit record of the tutorial's.
    fn hit_expiration(&self) -> Expiration {
        expiration(&self.inner.hit_ttl)
    }

    async fn keep_connecting(self) {
        let policy = ClientPolicy {
            timeout: 3_000,
            connect_timeout: 1_000,
            // The client learns the new partition map a tend after the cluster
            // changes; writes to a departed node's partitions wait until then.
            // 250 ms is the client's minimum (default 1 s).
            tend_interval: 250,
            ..ClientPolicy::default()
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match Client::new(&policy, &self.inner.seeds).await {
                Ok(client) => {
                    tracing::info!(
                        nodes = client.nodes().len(),
                        "connected to the Aerospike cluster"
                    );
                    self.prepare_indexes(&client).await;
                    if let Err(error) = self.build_all_time_top(&client).await {
                        tracing::warn!(%error, "could not build the all-time top list; the next start tries again");
                    }
                    let _ = self.inner.client.set(client);
                    tokio::spawn(self.clone().sweep_forever());
                    tokio::spawn(self.watch_forever());
                    return;
                }
                Err(error) => {
                    tracing::warn!(seeds = %self.inner.seeds, %error, retry_in = ?backoff, "cannot reach Aerospike yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Best effort: without the index the latest-hits view falls back to a scan.
    async fn prepare_indexes(&self, client: &Client) {
        let policy = aerospike::policy::AdminPolicy::default();
        let created = client
            .create_index_on_bin(
                &policy,
                &self.inner.namespace,
                HITS_SET,
                "ts",
                TS_INDEX,
                IndexType::Numeric,
                CollectionIndexType::Default,
                None,
            )
            .await;
        match created {
            Ok(_) => tracing::info!(index = TS_INDEX, "secondary index on hits.ts requested"),
            Err(e) if e.matches(&[ResultCode::IndexFound]) => {}
            Err(error) => {
                tracing::warn!(%error, "could not create the hits.ts index; latest hits will scan the set")
            }
        }
    }

    fn client(&self) -> Result<&Client, StoreError> {
        self.inner.client.get().ok_or_else(|| {
            StoreError::Unavailable(format!(
                "not connected to the Aerospike cluster at {} yet",
                self.inner.seeds
            ))
        })
    }

    fn key(&self, set: &str, key: &str) -> Result<Key, StoreError> {
        Key::new(
            self.inner.namespace.as_str(),
            set,
            Value::from(key.to_owned()),
        )
        .map_err(|e| failed(&e))
    }

    fn write_policy(&self, deadline: Instant) -> WritePolicy {
        WritePolicy {
            send_key: true,
            base_policy: aerospike::policy::BasePolicy {
                total_timeout: millis_until(deadline),
                // Retries are ours (below): only a write that surely did not apply
                // is retried.
                max_retries: 0,
                ..Default::default()
            },
            ..WritePolicy::default()
        }
    }

    /// Every record of `set` (its `bins`) that passes `policy`'s filter, as
    /// a stream whose failures are the store's.
    async fn scan(
        &self,
        client: &Client,
        policy: &QueryPolicy,
        set: &str,
        bins: Bins,
    ) -> Result<
        impl futures::Stream<Item = Result<aerospike::Record, StoreError>> + use<>,
        StoreError,
    > {
        let statement = Statement::new(self.inner.namespace.as_str(), set, bins);
        let records = client
            .query(policy, PartitionFilter::all(), statement)
            .await
            .map_err(|e| unavailable_or_failed(&e))?;
        Ok(records
            .into_stream()
            .map(|record| record.map_err(|e| unavailable_or_failed(&e))))
    }

    /// A plain `operate(add delta, get)` on a counter, not idempotent: for the
    /// operator's reconcile and for reads (`delta = 0`, as a batch whose hits are
    /// all duplicates does). Batches count through [`batches`]. KEY_BUSY and
    /// other failures that surely did not apply are retried with backoff until the
    /// deadline.
    async fn add_to_counter(
        &self,
        client: &Client,
        key: &str,
        delta: i64,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let key = self.key(SUMMARY_SET, key)?;
        let mut backoff = Backoff::new();
        loop {
            let result = if delta == 0 {
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
            };
            let error = match result {
                Ok(Some(total)) => return Ok(total),
                Ok(None) => {
                    return Err(StoreError::Failed(format!(
                        "summary record {key} has no integer bin {TOTAL_BIN:?}"
                    )));
                }
                Err(error) => error,
            };
            if retryable(&error) && backoff.wait(deadline).await {
                METRICS.retried(retry_cause(&error));
                tracing::debug!(%error, "retrying a counter update");
                continue;
            }
            return Err(unavailable_or_failed(&error));
        }
    }

    async fn record_batch(
        &self,
        hits: &[Hit],
    ) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;
        self.wait_while_split_suspected(deadline).await?;
        let firsts = first_occurrences(hits);
        let batch = self.writer().next_batch();
        let counted = self
            .count_batch(client, &batch, &first_only(hits, &firsts), deadline)
            .await
            .map_err(|unfinished| unfinished.answer(&self.inner.writer, &batch))?;
        // A later occurrence of an id is a duplicate.
        let claims = back_to_batch(&firsts, counted.claims, || Claim::Counted);
        let counted_hits: Vec<bool> = claims.iter().map(|c| *c == Claim::Owned).collect();
        Ok(number_batch(
            hits,
            &counted_hits,
            counted.total_after,
            &counted.server_after,
        )
        .into_iter()
        .zip(claims)
        .map(|(recorded, claim)| match claim {
            Claim::Pending(_) => Err(Claim::pending_error()),
            Claim::Owned | Claim::Counted => Ok(recorded),
        })
        .collect())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn page_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.inner
            .page_writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// The newest `limit` hits: a query on the `ts` index over a time window that
    /// is widened until it holds enough hits, and narrowed again when it holds more
    /// than one query should stream; the whole set if the index is missing.
    /// All probes share one deadline, so a slow search answers 503, never a hang.
    async fn latest(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
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
            statement.set_filter(Filter::range("ts", now - window, i64::MAX));
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

impl Store for AerospikeStore {
    async fn record_hits(&self, hits: Vec<Hit>) -> Vec<Result<Recorded, StoreError>> {
        match self.record_batch(&hits).await {
            Ok(results) => results,
            Err(error) => vec![Err(error); hits.len()],
        }
    }

    async fn summary(&self) -> Result<Summary, StoreError> {
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

    async fn latest_hits(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
        self.latest(limit).await
    }

    async fn count_hit_records(&self) -> Result<Summary, StoreError> {
        let client = self.client()?;
        let mut policy = query_policy();
        // A full scan takes as long as it takes, but not forever.
        policy.base_policy.total_timeout = 120_000;
        let mut stream = self
            .scan(client, &policy, HITS_SET, Bins::from(["server"]))
            .await?;
        let mut counts = std::collections::BTreeMap::new();
        while let Some(record) = stream.next().await {
            let record = record?;
            if let Some(Value::String(server)) = record.bins.get("server")
                && let Ok(server) = server.parse::<ServerId>()
            {
                *counts.entry(server).or_insert(0) += 1;
            }
        }
        Ok(summary_from_counts(counts))
    }

    async fn adjust_counter(&self, key: &str, delta: i64) -> Result<u64, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        self.add_to_counter(self.client()?, key, delta, deadline)
            .await
    }

    async fn import_page_base(&self, import: PageImport) -> Result<ImportOutcome, StoreError> {
        self.import_base(&import).await
    }

    async fn findings(&self) -> Vec<String> {
        let mut findings = self.store_findings().await;
        findings.extend(self.inner.faults.findings());
        findings
    }

    fn suspect_drift(&self) {
        self.repair_needed();
    }

    fn hit_retention(&self) -> Retention {
        match self
            .inner
            .hit_ttl
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => Retention::FOREVER,
            secs => Retention(Some(Duration::from_secs(secs.into()))),
        }
    }

    async fn page_tallies(&self, since: Day) -> Result<PageTallies, StoreError> {
        self.read_page_tallies(since).await
    }

    fn page_hit_retention(&self) -> Retention {
        match self
            .inner
            .page_hit_ttl
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => Retention::FOREVER,
            secs => Retention(Some(Duration::from_secs(secs.into()))),
        }
    }

    async fn record_page_hits(
        &self,
        hits: Vec<PageHitToCount>,
    ) -> Vec<Result<PageRecorded, StoreError>> {
        match self.record_page_batch(&hits).await {
            Ok(results) => results,
            Err(error) => vec![Err(error); hits.len()],
        }
    }

    async fn page_stats(&self, key: &PageKey, days: DayRange) -> Result<PageStats, StoreError> {
        self.read_page_stats(key, days).await
    }

    async fn pages_overview(
        &self,
        limit: usize,
        days: DayRange,
    ) -> Result<PagesOverview, StoreError> {
        self.read_pages_overview(limit, days).await
    }

    async fn visitor_salt(&self, day: Day, forget_before: Day) -> Result<VisitorSalt, StoreError> {
        self.day_salt(day, forget_before).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let client = self.client()?;
        self.refuse_if_split()?;
        self.inner.faults.check()?;
        if client.is_connected() && !client.nodes().is_empty() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "no Aerospike node of the cluster at {} is reachable",
                self.inner.seeds
            )))
        }
    }
}

/// A TTL in seconds as an expiration; 0: the namespace's default.
fn expiration(ttl: &std::sync::atomic::AtomicU32) -> Expiration {
    match ttl.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Expiration::NamespaceDefault,
        secs => Expiration::Seconds(secs),
    }
}

/// How long a clean-up of uncounted records may take, once the caller's deadline
/// is spent.
const FORGET_TIMEOUT_MS: u32 = 1_000;

/// The least time a retry must have left before the deadline. A write cut off by
/// the client's timeout is in doubt, and a hit whose count is in doubt is lost
/// (its record stays, so a retry is a duplicate); a write refused KEY_BUSY is
/// surely not applied, and its hit can be retried. So the last try must have
/// time to hear the server's answer.
const LAST_TRY: Duration = Duration::from_millis(100);

/// Waits between tries of a write that surely did not apply: from 0.5 ms,
/// doubling up to 50 ms, with jitter.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_micros(500))
    }

    /// Sleeps before the next try; false, at once, when the try would not have
    /// [`LAST_TRY`] left before the deadline.
    async fn wait(&mut self, deadline: Instant) -> bool {
        if Instant::now() + self.0 * 2 + LAST_TRY >= deadline {
            return false;
        }
        tokio::time::sleep(jitter(self.0)).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
        true
    }
}

/// Runs `rows` as one batch call, then again for the rows that surely did not
/// apply (KEY_BUSY and the like, see [`retryable`]), with backoff, until every row
/// has an outcome worth keeping or the deadline comes. Reads and writes may mix.
async fn batch_with_retries(client: &Client, rows: &mut [BatchOperation], deadline: Instant) {
    let mut backoff = Backoff::new();
    let mut pending: Vec<usize> = (0..rows.len()).collect();
    while !pending.is_empty() {
        let mut policy = BatchPolicy::write_default();
        policy.base_policy.total_timeout = millis_until(deadline);
        let mut batch: Vec<BatchOperation> = pending.iter().map(|&i| rows[i].clone()).collect();
        if let Err(error) = client.batch(&policy, &mut batch).await {
            // Rows still carry their own outcomes.
            tracing::debug!(%error, "a batch failed on a node");
        }
        for (&i, row) in pending.iter().zip(batch) {
            rows[i] = row;
        }
        pending.retain(|&i| rows[i].error().is_some_and(retryable));
        if pending.is_empty() || !backoff.wait(deadline).await {
            return;
        }
        for &i in &pending {
            if let Some(error) = rows[i].error() {
                METRICS.retried(retry_cause(error));
            }
        }
        tracing::debug!(
            rows = pending.len(),
            "retrying batch rows that were not applied"
        );
    }
}

/// Why a batch row has no result. A row the server answered KEY_NOT_FOUND is
/// not a failure here: callers read it as an empty record first.
fn row_failure(row: &BatchOperation) -> StoreError {
    match row.error() {
        Some(error) => unavailable_or_failed(error),
        None => StoreError::Unavailable("Aerospike did not answer for a record".into()),
    }
}

/// `total` as written by `add`: an integer, or the `[nil, total]` pair an
/// `operate(add, get)` answers.
fn counter_value(bins: &aerospike::IndexMap<String, Value>) -> Option<u64> {
    match bins.get(TOTAL_BIN)? {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::MultiResult(values) | Value::List(values) => match values.last()? {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A `hits` record as a [`Hit`]; records another writer left malformed are skipped.
fn hit_from(record: &aerospike::Record) -> Option<Hit> {
    let Some(Value::String(id)) = record.key.as_ref()?.user_key() else {
        return None;
    };
    let Value::String(server) = record.bins.get("server")? else {
        return None;
    };
    let Value::Int(ts) = record.bins.get("ts")? else {
        return None;
    };
    Some(Hit {
        id: id.parse::<HitId>().ok()?,
        server: server.parse().ok()?,
        ts: EpochMillis::new(i128::from(*ts)).ok()?,
    })
}

/// Queries retry the partitions that did not answer (a node leaving, partitions
/// migrating) until their total timeout, not for a fixed number of rounds: the
/// client's default of 5 quick rounds gives up in the middle of a migration.
fn query_policy() -> QueryPolicy {
    let mut policy = QueryPolicy::default();
    policy.base_policy.max_retries = 0;
    policy.base_policy.sleep_between_retries = 100;
    policy
}

fn millis_until(deadline: Instant) -> u32 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .max(1) as u32
}

/// Spread retries of many gateways on one hot record.
fn jitter(backoff: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    backoff + backoff * (nanos % 100) / 100
}

/// What the server answers when it did not apply a write that may succeed later.
const NOT_APPLIED: [ResultCode; 3] = [
    ResultCode::KeyBusy,
    ResultCode::DeviceOverload,
    ResultCode::PartitionUnavailable,
];

/// Each hit's answer: its record's failure, else its counter's failure (found by
/// `counter_of`), else its number.
fn answers<H, R, K, Q>(
    hits: &[H],
    created: Vec<Result<bool, StoreError>>,
    numbered: Vec<R>,
    counter_errors: &HashMap<K, StoreError>,
    counter_of: impl Fn(&H) -> &Q,
) -> Vec<Result<R, StoreError>>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    hits.iter()
        .zip(created)
        .zip(numbered)
        .map(|((hit, created), recorded)| {
            created?;
            match counter_errors.get(counter_of(hit)) {
                Some(error) => Err(error.clone()),
                None => Ok(recorded),
            }
        })
        .collect()
}

/// The metrics' name for why a write is tried again.
fn retry_cause(error: &AsError) -> &'static str {
    if error.matches(&[ResultCode::KeyBusy]) {
        "key_busy"
    } else if error.matches(&[ResultCode::Timeout]) || matches!(error.kind(), ErrorKind::Timeout) {
        "timeout"
    } else if connection_trouble(error) {
        "connection"
    } else {
        "other"
    }
}

/// The client could not reach a node, or gave up waiting for one.
fn connection_trouble(error: &AsError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Connection
            | ErrorKind::ConnectionPoolEmpty
            | ErrorKind::NoMoreConnections
            | ErrorKind::InvalidNode
            | ErrorKind::Timeout
    )
}

/// Worth another try: the server answered without applying the write, or the
/// request never left the client.
///
/// The client marks a write in doubt once it was sent, even when the server's
/// answer, found in the error's cause chain, says it was not applied.
fn retryable(error: &AsError) -> bool {
    error.matches(&NOT_APPLIED) || (!error.in_doubt() && connection_trouble(error))
}

fn unavailable_or_failed(error: &AsError) -> StoreError {
    let transient = error.matches(&NOT_APPLIED)
        || error.matches(&[ResultCode::Timeout, ResultCode::QueryTimeout])
        || connection_trouble(error)
        || matches!(error.kind(), ErrorKind::MaxErrorRate | ErrorKind::Io(_));
    if transient {
        StoreError::Unavailable(format!("Aerospike: {error}"))
    } else {
        failed(error)
    }
}

fn failed(error: &AsError) -> StoreError {
    StoreError::Failed(format!("Aerospike: {error}"))
}
