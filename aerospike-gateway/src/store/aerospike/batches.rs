//! Exactly-once counting of the tutorial's hits on a store without
//! multi-record transactions; the named counters' hits go through the same
//! steps ([`page_batches`](super::page_batches)).
//!
//! A group commit touches several records: one hit record per hit, `total_hits`
//! and one counter per server. Any of those writes can time out after the
//! server applied it (a node leaving, a partition), and a gateway can die or
//! freeze between them. So every step is written to be repeated, by the gateway
//! that started the batch or by any other, until it is known to have happened
//! exactly once:
//!
//! 1. **The intent.** Before anything else, the batch's hits (id, server, ts) are
//!    written to one record of set `batches`, keyed by the batch id
//!    `<writer>:<seq>`. While it exists, the batch may be unfinished.
//! 2. **The hit records**, create-only, each with a transient bin `batch` naming
//!    the batch that created it. A record that already exists belongs to the
//!    batch its `batch` bin names; with no `batch` bin it was counted long ago. So
//!    whoever repeats this step learns which hits the batch owns, and the answer
//!    never changes until the counters are written.
//! 3. **The counters**, each one `operate` that adds the batch's `k` and records
//!    `applied["<writer>:<seq>"] = total after` in a map bin of that same record,
//!    atomically, under a filter that lets it through only if the batch (or a
//!    later one of the same writer) is not in the map yet. A repeat is filtered
//!    out and reads its total from the map: an in-doubt increment is retried
//!    until its outcome is known, never applied twice.
//! 4. **The release**, after the hits are answered: the `batch` bins are removed
//!    (only after every counter is written: a cleared bin means "counted") and
//!    the intent is deleted. `aql` then shows `test.hits` as the tutorial does.
//!    A releaser task does this in rounds, for every batch counted since its
//!    last round at once: two batch calls a round, not two per group commit.
//!
//! A writer (one per gateway process and kind of hit, renewed every
//! [`WRITER_LIFETIME`]) finishes its batches in order, so per writer the map
//! holds only its latest batch. A batch a writer cannot finish within the store
//! deadline is left to the sweeper and the writer takes a new id, so nothing it
//! writes later can be mistaken for that batch.
//!
//! The **sweeper** in every gateway looks, every [`SWEEP_INTERVAL`], for intents
//! the server has not seen updated for [`SWEEP_AGE`] (the server's clock, not
//! the gateways'), and finishes them: steps 2 to 4, creating any hit record that
//! is missing, so that a late write of the frozen gateway finds it there. Two
//! gateways finishing the same batch, or a frozen gateway waking up in the
//! middle of one, repeat the same idempotent steps and agree.

use std::collections::HashMap;
use std::time::Duration;

use aerospike::expressions as exp;
use aerospike::operations::maps::{self, MapOrder};
use aerospike::query::{PartitionFilter, Statement};
use aerospike::{
    BatchDeletePolicy, BatchOperation, BatchReadPolicy, BatchWritePolicy, Bin, Bins, Client,
    MapPolicy, MapReturnType, MapWriteFlags, RecordExistsAction, ResultCode, Value, WritePolicy,
    operations,
};
use counter_api::{EpochMillis, Hit, HitId, ServerId, TOTAL_HITS_KEY};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    AerospikeStore, Backoff, HITS_SET, SUMMARY_SET, StoreError, TOTAL_BIN, batch_with_retries,
    counter_value, millis_until, query_policy, retry_cause, unavailable_or_failed,
};
use crate::metrics::METRICS;

/// The intents of unfinished batches.
pub(super) const BATCHES_SET: &str = "batches";
/// In an intent: the batch's hits, each `[id, server, ts]`.
const INTENT_HITS_BIN: &str = "hits";
/// In a hit record, until its batch is counted: the batch that created it.
const MARKER_BIN: &str = "batch";
/// In a counter record: the latest batch of each writer counted into it.
pub(super) const APPLIED_BIN: &str = "applied";

/// How long one writer id is used. Entries of writers older than
/// [`APPLIED_RETENTION`] are dropped from the counters' maps, so a live writer
/// must never get that old.
const WRITER_LIFETIME: Duration = Duration::from_secs(600);
/// How long a writer's entry stays in a counter's `applied` map. A batch must be
/// finished well within this (the sweeper finishes any batch within seconds), or
/// a very late repeat of it could count it again.
const APPLIED_RETENTION: Duration = Duration::from_secs(3600);
/// How often the sweeper looks for unfinished batches.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Most batches one release round takes on.
const MAX_RELEASES_PER_ROUND: usize = 64;
/// Counted batches waiting for their release, at most.
pub(super) const RELEASE_QUEUE: usize = 4096;
/// The least time the release step gets, after the hits were answered.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// An intent the server has not seen updated for this long (beyond the store
/// deadline) belongs to a batch its writer gave up on, or to a dead writer.
pub(super) fn sweep_age(store_timeout: Duration) -> Duration {
    store_timeout * 2 + Duration::from_secs(2)
}

/// The maps this module writes: ordered by key, so a writer's entries sit
/// together and expired writers are one range at the front.
const KEY_ORDERED: MapPolicy = MapPolicy::new(MapOrder::KeyOrdered, MapWriteFlags::DEFAULT);

/// Names one gateway's batches, in the order it counts them.
pub(super) struct Writer {
    /// A UUID v7 in simple form: its first 12 hex digits are its birth in ms,
    /// which is what lets counters drop the entries of expired writers.
    id: String,
    born: std::time::Instant,
    next: u64,
}

impl Writer {
    pub(super) fn new() -> Self {
        Self {
            id: uuid::Uuid::now_v7().simple().to_string(),
            born: std::time::Instant::now(),
            next: 1,
        }
    }

    pub(super) fn next_batch(&mut self) -> BatchId {
        if self.born.elapsed() >= WRITER_LIFETIME {
            *self = Self::new();
        }
        let batch = BatchId {
            writer: self.id.clone(),
            seq: self.next,
        };
        self.next += 1;
        batch
    }

    /// The last batch is left to the sweeper: later batches must not look like
    /// they come after it, or the sweeper would take it for counted.
    pub(super) fn abandon(&mut self) {
        *self = Self::new();
    }
}

/// `<writer>:<seq>`, with `seq` zero-padded so that key order is batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BatchId {
    writer: String,
    seq: u64,
}

impl BatchId {
    pub(super) fn parse(key: &str) -> Option<Self> {
        let (writer, seq) = key.split_once(':')?;
        let valid = writer.len() == 32 && writer.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then_some(())?;
        Some(Self {
            writer: writer.to_owned(),
            seq: seq.parse().ok()?,
        })
    }

    pub(super) fn key(&self) -> String {
        format!("{}:{:012}", self.writer, self.seq)
    }

    /// The `applied` keys of this batch and of the writer's later batches.
    fn this_and_later(&self) -> (String, String) {
        (self.key(), format!("{};", self.writer))
    }

    /// The `applied` keys of the writer's earlier batches.
    fn earlier(&self) -> (String, String) {
        (format!("{}:", self.writer), self.key())
    }

    /// The `applied` key of a further value the batch keeps beside its own
    /// entry (a day's count after it, say): it sorts right after the batch's
    /// own entry, before the writer's next batch, so both ranges above cover it.
    pub(super) fn entry_for(&self, what: &str) -> String {
        format!("{}|{what}", self.key())
    }

    /// The `applied` keys of this batch: its own entry and those of
    /// [`BatchId::entry_for`].
    pub(super) fn own_entries(&self) -> (String, String) {
        (self.key(), format!("{}}}", self.key()))
    }

    /// The filter that lets a counter's write through only while neither this
    /// batch nor a later one of its writer is in the record's `applied` map.
    pub(super) fn not_counted_yet(&self) -> exp::Expression {
        let (from, to) = self.this_and_later();
        exp::or(vec![
            exp::not(exp::bin_exists(APPLIED_BIN)),
            exp::eq(
                exp::maps::get_by_key_range(
                    MapReturnType::COUNT,
                    Some(exp::string_val(from)),
                    Some(exp::string_val(to)),
                    exp::map_bin(APPLIED_BIN),
                    &[],
                ),
                exp::int_val(0),
            ),
        ])
    }

    /// The ops, after the counter's own, that record this batch in the
    /// record's `applied` map: each `(entry, value)` (the value an expression
    /// read after the counter's ops, such as the total they left), then the
    /// writer's earlier entries and those of expired writers go (neither range
    /// holds this batch's entries).
    pub(super) fn record_applied(
        &self,
        entries: impl IntoIterator<Item = (String, exp::Expression)>,
    ) -> Vec<operations::Operation> {
        let mut entries = entries.into_iter().peekable();
        let mut ops = Vec::new();
        if let Some((first, _)) = entries.peek() {
            // A put first: it creates the map if the bin is missing, which an
            // expression cannot.
            ops.push(maps::put(
                &KEY_ORDERED,
                APPLIED_BIN,
                Value::from(first.clone()),
                Value::from(0),
            ));
        }
        for (entry, value) in entries {
            ops.push(operations::exp::write_exp(
                APPLIED_BIN,
                exp::maps::put(
                    &KEY_ORDERED,
                    exp::string_val(entry),
                    value,
                    exp::map_bin(APPLIED_BIN),
                    &[],
                ),
                operations::exp::ExpWriteFlags::DEFAULT,
            ));
        }
        let (earlier_from, earlier_to) = self.earlier();
        ops.push(maps::remove_by_key_range(
            APPLIED_BIN,
            Value::Nil,
            Value::from(expired_writers_below()),
            MapReturnType::NONE,
        ));
        ops.push(maps::remove_by_key_range(
            APPLIED_BIN,
            Value::from(earlier_from),
            Value::from(earlier_to),
            MapReturnType::NONE,
        ));
        ops
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// The `applied` keys of writers born before the retention window: every key
/// below this one. Writer ids start with their birth in ms, in hex.
fn expired_writers_below() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let cutoff = now.saturating_sub(APPLIED_RETENTION).as_millis();
    format!("{cutoff:012x}")
}

/// A counted batch waiting for step 4: the hit records it owns, in `set`
/// (`hits`, or `page_hits` for a batch of page hits).
pub(super) struct Release {
    pub set: &'static str,
    pub batch: BatchId,
    pub owned_ids: Vec<HitId>,
    /// Whether the records' markers are cleared (the tutorial's, so `aql`
    /// shows its two bins) or stay (page hits: the intent's absence says the
    /// same, for one write less per hit).
    pub clear_markers: bool,
}

/// What a batch learns of one of its hits' records in step 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// The batch created it: the hit is the batch's to count.
    Owned,
    /// It was there already with no `batch` bin: counted long ago.
    Counted,
    /// It was there already, created by another batch (named) not yet
    /// released: the hit is, or will be (by the sweeper), counted by that
    /// batch. [`AerospikeStore::settle_pending`] tells which; a hit not counted
    /// yet is answered 503, so that "duplicate" is only ever said of a hit that
    /// is counted.
    Pending(String),
}

impl Claim {
    /// What a hit is answered when this batch did not count it.
    pub(super) fn pending_error() -> StoreError {
        StoreError::Unavailable(
            "this hit is still being counted by an earlier try of it; retry in a few seconds"
                .into(),
        )
    }
}

/// What a batch counted: what it made of each of its hits, and the counters
/// after it.
pub(super) struct Counted {
    pub claims: Vec<Claim>,
    pub total_after: u64,
    pub server_after: HashMap<ServerId, u64>,
}

/// A step that did not finish. `started`: the batch may have left something in
/// the store (its intent was, or may have been, written), so it must be finished
/// by the sweeper; otherwise nothing of it was written.
pub(super) struct Unfinished {
    pub error: StoreError,
    pub started: bool,
}

impl Unfinished {
    /// What the hits of `batch` are answered. A batch that may have left
    /// something in the store is left to the sweeper, and `writer` takes a new
    /// id, so that nothing it writes later can be mistaken for that batch.
    pub(super) fn answer(self, writer: &std::sync::Mutex<Writer>, batch: &BatchId) -> StoreError {
        if self.started {
            writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .abandon();
            tracing::warn!(%batch, error = %self.error,
                "batch not finished in time; the sweeper will finish it");
        }
        self.error
    }
}

impl AerospikeStore {
    /// Counts `hits` (distinct ids) as batch `batch`, steps 1 to 3, then starts
    /// step 4 in the background. Answers only when every counter is written.
    pub(super) async fn count_batch(
        &self,
        client: &Client,
        batch: &BatchId,
        hits: &[&Hit],
        deadline: Instant,
    ) -> Result<Counted, Unfinished> {
        let list = hits
            .iter()
            .map(|hit| intent_entry(hit.id, hit.server.as_str(), hit.ts))
            .collect();
        self.write_intent(client, batch, INTENT_HITS_BIN, list, deadline)
            .await?;
        let started = |error| Unfinished {
            error,
            started: true,
        };
        let claims = self
            .claim_hit_records(client, batch, &HitRecords::of(self, hits), deadline)
            .await
            .map_err(started)?;
        let owned: Vec<bool> = claims.iter().map(|claim| *claim == Claim::Owned).collect();
        let (total_after, server_after) = self
            .write_counters(client, batch, hits, &owned, deadline)
            .await
            .map_err(started)?
            .ok_or_else(|| {
                started(StoreError::Unavailable(format!(
                    "batch {batch} was counted by another gateway meanwhile"
                )))
            })?;
        // Left to the releaser; if it cannot take it (too far behind) or never
        // gets to it (the process ends), the sweeper will.
        let _ = self.inner.releases.try_send(Release {
            set: HITS_SET,
            batch: batch.clone(),
            owned_ids: owned_ids(hits, &owned),
            clear_markers: true,
        });
        Ok(Counted {
            claims,
            total_after,
            server_after,
        })
    }

    /// Step 1: the batch's hits, as `list` in bin `bin` of its intent.
    /// Repeating the write is harmless, so it is retried until the deadline,
    /// whatever the failure.
    pub(super) async fn write_intent(
        &self,
        client: &Client,
        batch: &BatchId,
        bin: &str,
        list: Vec<Value>,
        deadline: Instant,
    ) -> Result<(), Unfinished> {
        let key = self
            .key(BATCHES_SET, &batch.key())
            .map_err(|error| Unfinished {
                error,
                started: false,
            })?;
        let bins = [Bin::new(bin, Value::List(list))];
        let mut backoff = Backoff::new();
        let mut maybe_written = false;
        loop {
            let policy = self.write_policy(deadline);
            let error = match client.put(&policy, &key, &bins).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            maybe_written |= error.in_doubt();
            if transient(&error) && backoff.wait(deadline).await {
                METRICS.retried(retry_cause(&error));
                continue;
            }
            return Err(Unfinished {
                error: unavailable_or_failed(&error),
                started: maybe_written,
            });
        }
    }

    /// Step 2: creates the hit records that do not exist yet, each with its
    /// bins and the batch's marker, and answers, per hit, what the batch makes
    /// of it (a pending claim is settled if its batch is known to be counted).
    /// Every row is tried until its answer is known or the deadline comes.
    pub(super) async fn claim_hit_records(
        &self,
        client: &Client,
        batch: &BatchId,
        records: &HitRecords,
        deadline: Instant,
    ) -> Result<Vec<Claim>, StoreError> {
        let set = records.set;
        let marker = batch.key();
        let row_policy = BatchWritePolicy {
            record_exists_action: RecordExistsAction::CreateOnly,
            expiration: records.expiration,
            send_key: true,
            ..BatchWritePolicy::default()
        };
        let mut rows = Vec::with_capacity(records.bins.len());
        let mut ids = Vec::with_capacity(records.bins.len());
        for (id, bins) in &records.bins {
            let mut bins = bins.clone();
            bins.push(Bin::new(MARKER_BIN, Value::from(marker.clone())));
            let key = self.key(set, &id.to_string())?;
            let ops: Vec<_> = bins.iter().map(operations::put).collect();
            rows.push(BatchOperation::write(&row_policy, key, ops));
            ids.push(*id);
        }
        let mut owned: Vec<Option<Claim>> = vec![None; ids.len()];
        let mut backoff = Backoff::new();
        loop {
            let pending: Vec<usize> = (0..ids.len()).filter(|&i| owned[i].is_none()).collect();
            let mut tried: Vec<BatchOperation> = pending.iter().map(|&i| rows[i].clone()).collect();
            let mut policy = aerospike::BatchPolicy::write_default();
            policy.base_policy.total_timeout = millis_until(deadline);
            if let Err(error) = client.batch(&policy, &mut tried).await {
                tracing::debug!(%error, "a batch of hit records failed on a node");
            }
            let mut existing = Vec::new();
            for (&i, row) in pending.iter().zip(&tried) {
                match row.result_code() {
                    Some(ResultCode::Ok) => owned[i] = Some(Claim::Owned),
                    Some(ResultCode::KeyExistsError) => existing.push(i),
                    _ => match row.error() {
                        Some(error) if !transient(error) => {
                            return Err(unavailable_or_failed(error));
                        }
                        Some(error) => METRICS.retried(retry_cause(error)),
                        None => {}
                    },
                }
            }
            if !existing.is_empty() {
                let markers = self
                    .read_markers(client, set, existing.iter().map(|&i| ids[i]), deadline)
                    .await;
                for (i, found) in existing.into_iter().zip(markers) {
                    owned[i] = found.map(|found| match found {
                        None => Claim::Counted,
                        Some(other) if other == marker => Claim::Owned,
                        Some(other) => Claim::Pending(other),
                    });
                }
            }
            if owned.iter().all(Option::is_some) {
                let mut claims: Vec<Claim> = owned.into_iter().flatten().collect();
                self.settle_pending(client, &mut claims, &records.counters, deadline)
                    .await;
                return Ok(claims);
            }
            if !backoff.wait(deadline).await {
                return Err(StoreError::Unavailable(
                    "not every hit record could be written in time".into(),
                ));
            }
        }
    }

    /// Turns each pending claim whose batch has been counted into
    /// [`Claim::Counted`]: its batch's intent is gone (released), or the batch,
    /// or a later one of its writer, is in the `applied` map of the counter the
    /// hit counts into (`counters[i]`, a record every batch owning hit `i`
    /// writes). Best effort: a claim whose batch cannot be read stays pending,
    /// and its hit is answered 503.
    async fn settle_pending(
        &self,
        client: &Client,
        claims: &mut [Claim],
        counters: &[Result<aerospike::Key, StoreError>],
        deadline: Instant,
    ) {
        let read = BatchReadPolicy::default();
        let mut rows = Vec::new();
        let mut which = Vec::new();
        for (i, claim) in claims.iter().enumerate() {
            let Claim::Pending(other) = claim else {
                continue;
            };
            let (Some(other), Ok(counter)) = (BatchId::parse(other), &counters[i]) else {
                continue;
            };
            let (from, to) = other.this_and_later();
            let Ok(intent) = self.key(BATCHES_SET, &other.key()) else {
                continue;
            };
            rows.push(BatchOperation::read(&read, intent, Bins::None));
            rows.push(BatchOperation::read_ops(
                &read,
                counter.clone(),
                [maps::get_by_key_range(
                    APPLIED_BIN,
                    Value::from(from),
                    Value::from(to),
                    MapReturnType::COUNT,
                )],
            ));
            which.push(i);
        }
        if rows.is_empty() {
            return;
        }
        super::batch_with_retries(client, &mut rows, deadline).await;
        for (i, rows) in which.into_iter().zip(rows.chunks(2)) {
            let [intent, counter] = rows else { continue };
            let released = intent.result_code() == Some(ResultCode::KeyNotFoundError);
            let applied = counter
                .record()
                .and_then(|record| record.bins.get(APPLIED_BIN))
                .is_some_and(|count| matches!(count, Value::Int(n) if *n > 0));
            if released || applied {
                claims[i] = Claim::Counted;
            }
        }
    }

    /// The `batch` bin of existing hit records: `Some(None)` for a record
    /// without one, `None` where the read failed (or the record vanished) and
    /// must be tried again.
    async fn read_markers(
        &self,
        client: &Client,
        set: &str,
        ids: impl Iterator<Item = HitId>,
        deadline: Instant,
    ) -> Vec<Option<Option<String>>> {
        let row_policy = BatchReadPolicy::default();
        let mut rows: Vec<BatchOperation> = ids
            .filter_map(|id| self.key(set, &id.to_string()).ok())
            .map(|key| BatchOperation::read(&row_policy, key, Bins::from([MARKER_BIN])))
            .collect();
        let mut policy = aerospike::BatchPolicy::default();
        policy.base_policy.total_timeout = millis_until(deadline);
        if let Err(error) = client.batch(&policy, &mut rows).await {
            tracing::debug!(%error, "reading hit records' batch failed on a node");
        }
        rows.iter()
            .map(|row| match (row.result_code(), row.record()) {
                (Some(ResultCode::Ok), Some(record)) => Some(match record.bins.get(MARKER_BIN) {
                    Some(Value::String(marker)) => Some(marker.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    /// Step 3: `total_hits` and each server's counter, concurrently. Answers the
    /// counters after the batch, or `None` if a later batch of the same writer
    /// was counted already (so this one was too).
    async fn write_counters(
        &self,
        client: &Client,
        batch: &BatchId,
        hits: &[&Hit],
        owned: &[bool],
        deadline: Instant,
    ) -> Result<Option<(u64, HashMap<ServerId, u64>)>, StoreError> {
        let added = owned.iter().filter(|&&o| o).count() as u64;
        let mut per_server: HashMap<&ServerId, u64> = HashMap::new();
        for (hit, &owned) in hits.iter().zip(owned) {
            *per_server.entry(&hit.server).or_default() += u64::from(owned);
        }
        let total = self.count_once(client, TOTAL_HITS_KEY, batch, added, deadline);
        let servers = futures::future::join_all(per_server.iter().map(|(server, &n)| async move {
            let after = self
                .count_once(client, server.as_str(), batch, n, deadline)
                .await;
            after.map(|after| after.map(|after| ((*server).clone(), after)))
        }));
        let (total, servers) = futures::join!(total, servers);
        let Some(total_after) = total? else {
            return Ok(None);
        };
        let mut server_after = HashMap::new();
        for server in servers {
            let Some((server, after)) = server? else {
                return Ok(None);
            };
            server_after.insert(server, after);
        }
        Ok(Some((total_after, server_after)))
    }

    /// Adds `delta` to the `summary` counter `key` once for `batch`, however
    /// often it is called: answers the counter right after the batch's addition,
    /// or `None` if a later batch of the writer has been counted into it.
    async fn count_once(
        &self,
        client: &Client,
        key: &str,
        batch: &BatchId,
        delta: u64,
        deadline: Instant,
    ) -> Result<Option<u64>, StoreError> {
        if delta == 0 {
            // Nothing to add; the batch's duplicates see the counter as it is.
            return self
                .add_to_counter(client, key, 0, deadline)
                .await
                .map(Some);
        }
        let key = self.key(SUMMARY_SET, key)?;
        let entry = batch.key();
        let not_counted_yet = batch.not_counted_yet();
        let add = Bin::new(TOTAL_BIN, Value::from(delta as i64));
        let mut ops = vec![operations::add(&add)];
        ops.extend(batch.record_applied([(entry.clone(), exp::int_bin(TOTAL_BIN))]));
        ops.push(operations::get_bin(TOTAL_BIN));
        let mut backoff = Backoff::new();
        loop {
            let mut policy: WritePolicy = self.write_policy(deadline);
            policy.base_policy.filter_expression = Some(not_counted_yet.clone());
            let error = match client.operate(&policy, &key, &ops).await {
                Ok(record) => {
                    return counter_value(&record.bins).map(Some).ok_or_else(|| {
                        StoreError::Failed(format!("{key} has no integer bin {TOTAL_BIN:?}"))
                    });
                }
                Err(error) if error.matches(&[ResultCode::FilteredOut]) => {
                    match self.counted_as(client, &key, &entry, deadline).await {
                        Ok(after) => return Ok(after),
                        Err(error) => error,
                    }
                }
                Err(error) => error,
            };
            if transient(&error) && backoff.wait(deadline).await {
                METRICS.retried(if error.in_doubt() {
                    "in_doubt"
                } else {
                    retry_cause(&error)
                });
                tracing::debug!(%error, %batch, "retrying a counter update");
                continue;
            }
            return Err(unavailable_or_failed(&error));
        }
    }

    /// A batch's entry in a counter's `applied` map: the counter after it, or
    /// `None` once a later batch of the writer has replaced it.
    async fn counted_as(
        &self,
        client: &Client,
        key: &aerospike::Key,
        entry: &str,
        deadline: Instant,
    ) -> Result<Option<u64>, aerospike::errors::Error> {
        let ops = [maps::get_by_key(
            APPLIED_BIN,
            Value::from(entry.to_owned()),
            MapReturnType::VALUE,
        )];
        let mut policy = WritePolicy::default();
        policy.base_policy.total_timeout = millis_until(deadline);
        let record = client.operate(&policy, key, &ops).await?;
        Ok(match record.bins.get(APPLIED_BIN) {
            Some(Value::Int(after)) => u64::try_from(*after).ok(),
            _ => None,
        })
    }

    /// Step 4 for several batches at once: one batch call clears the markers of
    /// all their hit records (each only where it still names its batch), and a
    /// second deletes the intents of the batches whose markers are all gone.
    /// Answers, per batch, whether it is released.
    async fn release_all(&self, client: &Client, releases: &[Release]) -> Vec<bool> {
        let deadline = Instant::now() + RELEASE_TIMEOUT.max(self.inner.timeout);
        let clear = operations::put(&Bin::new(MARKER_BIN, Value::Nil));
        let mut rows = Vec::new();
        let mut row_batch = Vec::new();
        for (i, release) in releases.iter().enumerate() {
            let row_policy = BatchWritePolicy {
                record_exists_action: RecordExistsAction::UpdateOnly,
                // A hit record that expires keeps the TTL it was created with.
                expiration: aerospike::Expiration::DontUpdate,
                filter_expression: Some(exp::eq(
                    exp::string_bin(MARKER_BIN),
                    exp::string_val(release.batch.key()),
                )),
                ..BatchWritePolicy::default()
            };
            if !release.clear_markers {
                continue;
            }
            for id in &release.owned_ids {
                if let Ok(key) = self.key(release.set, &id.to_string()) {
                    rows.push(BatchOperation::write(&row_policy, key, vec![clear.clone()]));
                    row_batch.push(i);
                }
            }
        }
        let mut released = vec![true; releases.len()];
        if !rows.is_empty() {
            batch_with_retries(client, &mut rows, deadline).await;
            for (row, &i) in rows.iter().zip(&row_batch) {
                if !matches!(
                    row.result_code(),
                    Some(ResultCode::Ok | ResultCode::FilteredOut | ResultCode::KeyNotFoundError)
                ) {
                    tracing::debug!(batch = %releases[i].batch, "some batch markers stay; the sweeper will clear them");
                    released[i] = false;
                }
            }
        }
        // The intents go last, each only once all its markers are gone.
        let delete_policy = BatchDeletePolicy::default();
        let mut deletes = Vec::new();
        let mut delete_batch = Vec::new();
        for (i, release) in releases.iter().enumerate() {
            if !released[i] {
                continue;
            }
            match self.key(BATCHES_SET, &release.batch.key()) {
                Ok(key) => {
                    deletes.push(BatchOperation::delete(&delete_policy, key));
                    delete_batch.push(i);
                }
                Err(_) => released[i] = false,
            }
        }
        if !deletes.is_empty() {
            batch_with_retries(client, &mut deletes, deadline).await;
            for (row, &i) in deletes.iter().zip(&delete_batch) {
                if !matches!(
                    row.result_code(),
                    Some(ResultCode::Ok | ResultCode::KeyNotFoundError)
                ) {
                    tracing::debug!(batch = %releases[i].batch, "deleting a batch intent failed");
                    released[i] = false;
                }
            }
        }
        released
    }

    /// Releases counted batches until the process ends, as many at a time as
    /// have been counted since the last round: under load a round carries the
    /// release of several group commits in two batch calls, instead of two
    /// calls each.
    pub(super) async fn release_forever(self, mut counted: mpsc::Receiver<Release>) {
        let mut releases = Vec::new();
        while counted
            .recv_many(&mut releases, MAX_RELEASES_PER_ROUND)
            .await
            > 0
        {
            if let Ok(client) = self.client() {
                self.release_all(client, &releases).await;
            }
            releases.clear();
        }
    }

    /// Runs the sweeper until the process ends.
    pub(super) async fn sweep_forever(self) {
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
            Bins::from([INTENT_HITS_BIN, super::page_batches::INTENT_PAGE_HITS_BIN]),
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
            let finished = if record
                .bins
                .contains_key(super::page_batches::INTENT_PAGE_HITS_BIN)
            {
                self.finish_page_batch(client, &batch, &record.bins, deadline)
                    .await
            } else {
                self.finish_batch(client, &batch, &record.bins, deadline)
                    .await
            };
            match finished {
                Ok(release) => {
                    let counted = release.owned_ids.len();
                    if self
                        .release_all(client, std::slice::from_ref(&release))
                        .await[0]
                    {
                        METRICS.swept_batches.inc();
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

impl AerospikeStore {
    /// Steps 2 and 3 of a batch of the tutorial's hits found in `intent`.
    async fn finish_batch(
        &self,
        client: &Client,
        batch: &BatchId,
        intent: &aerospike::IndexMap<String, Value>,
        deadline: Instant,
    ) -> Result<Release, StoreError> {
        let hits = intent_hits(intent);
        let hits: Vec<&Hit> = hits.iter().collect();
        let owned: Vec<bool> = self
            .claim_hit_records(client, batch, &HitRecords::of(self, &hits), deadline)
            .await?
            .into_iter()
            .map(|claim| claim == Claim::Owned)
            .collect();
        self.write_counters(client, batch, &hits, &owned, deadline)
            .await?;
        Ok(Release {
            set: HITS_SET,
            batch: batch.clone(),
            owned_ids: owned_ids(&hits, &owned),
            clear_markers: true,
        })
    }
}

fn owned_ids(hits: &[&Hit], owned: &[bool]) -> Vec<HitId> {
    hits.iter()
        .zip(owned)
        .filter(|(_, o)| **o)
        .map(|(hit, _)| hit.id)
        .collect()
}

/// The hit records a batch claims in step 2: in `set`, each hit's id with its
/// bins, and the key of the counter each hit counts into (to settle a pending
/// claim).
pub(super) struct HitRecords {
    pub set: &'static str,
    pub expiration: aerospike::Expiration,
    pub bins: Vec<(HitId, Vec<Bin>)>,
    pub counters: Vec<Result<aerospike::Key, StoreError>>,
}

impl HitRecords {
    /// The tutorial's hit records, as the tutorial writes them; each hit
    /// counts into its server's counter.
    fn of(store: &AerospikeStore, hits: &[&Hit]) -> Self {
        HitRecords {
            set: HITS_SET,
            expiration: store.hit_expiration(),
            bins: hits
                .iter()
                .map(|hit| {
                    let bins = vec![
                        Bin::new("server", Value::from(hit.server.as_str().to_owned())),
                        Bin::new("ts", ts_value(hit.ts)),
                    ];
                    (hit.id, bins)
                })
                .collect(),
            counters: hits
                .iter()
                .map(|hit| store.key(SUMMARY_SET, hit.server.as_str()))
                .collect(),
        }
    }
}

/// A timestamp as the records hold it: integer milliseconds.
pub(super) fn ts_value(ts: EpochMillis) -> Value {
    Value::from(i64::try_from(ts.as_u64()).expect("EpochMillis fits in i64"))
}

/// One entry of an intent's list: `[id, what the hit counts into, ts]` (a
/// server for the tutorial's hits, a counter key for page hits).
pub(super) fn intent_entry(id: HitId, counts_into: &str, ts: EpochMillis) -> Value {
    Value::List(vec![
        Value::from(id.to_string()),
        Value::from(counts_into.to_owned()),
        ts_value(ts),
    ])
}

/// The entries of an intent's list in `bin`, as [`intent_entry`] wrote them;
/// entries another writer left malformed are skipped.
pub(super) fn intent_entries<'a>(
    bins: &'a aerospike::IndexMap<String, Value>,
    bin: &str,
) -> impl Iterator<Item = (HitId, &'a str, EpochMillis)> + 'a {
    let entries = match bins.get(bin) {
        Some(Value::List(entries)) => entries.as_slice(),
        _ => &[],
    };
    entries.iter().filter_map(|entry| match entry {
        Value::List(fields) => match fields.as_slice() {
            [
                Value::String(id),
                Value::String(counts_into),
                Value::Int(ts),
            ] => Some((
                id.parse().ok()?,
                counts_into.as_str(),
                EpochMillis::new(i128::from(*ts)).ok()?,
            )),
            _ => None,
        },
        _ => None,
    })
}

/// The hits an intent lists.
fn intent_hits(bins: &aerospike::IndexMap<String, Value>) -> Vec<Hit> {
    intent_entries(bins, INTENT_HITS_BIN)
        .filter_map(|(id, server, ts)| {
            Some(Hit {
                id,
                server: server.parse().ok()?,
                ts,
            })
        })
        .collect()
}

/// The first occurrences of a batch's ids, in batch order: what a group
/// commit counts.
pub(super) fn first_only<'a, H>(hits: &'a [H], firsts: &[bool]) -> Vec<&'a H> {
    hits.iter()
        .zip(firsts)
        .filter_map(|(hit, &first)| first.then_some(hit))
        .collect()
}

/// Back from the first occurrences to the whole batch: each first
/// occurrence's value in order, `later` for an id seen before in the batch.
pub(super) fn back_to_batch<T>(firsts: &[bool], values: Vec<T>, later: impl Fn() -> T) -> Vec<T> {
    let mut values = values.into_iter();
    firsts
        .iter()
        .map(|&first| {
            if first {
                values.next().expect("a value per first occurrence")
            } else {
                later()
            }
        })
        .collect()
}

/// Worth trying again: for the idempotent steps here, anything short of a
/// refusal that will not change (a bad request, a record too big, ...).
pub(super) fn transient(error: &aerospike::errors::Error) -> bool {
    error.in_doubt() || matches!(unavailable_or_failed(error), StoreError::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_order_by_writer_then_seq() {
        let batch = BatchId {
            writer: "0193a1b2c3d4e5f60718293a4b5c6d7e".into(),
            seq: 42,
        };
        assert_eq!(batch.key(), "0193a1b2c3d4e5f60718293a4b5c6d7e:000000000042");
        assert_eq!(BatchId::parse(&batch.key()), Some(batch.clone()));
        let (from, to) = batch.this_and_later();
        let later = BatchId {
            seq: 1000,
            ..batch.clone()
        }
        .key();
        assert!(from <= later && later < to);
        let (from, to) = batch.earlier();
        let earlier = BatchId {
            seq: 7,
            ..batch.clone()
        }
        .key();
        assert!(from <= earlier && earlier < to && to == batch.key());
        assert_eq!(BatchId::parse("not-a-writer:1"), None);
    }

    #[test]
    fn expired_writers_sort_below_live_ones() {
        let live = Writer::new().next_batch().key();
        assert!(expired_writers_below() < live);
    }
}
