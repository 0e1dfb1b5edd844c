//! Exactly-once counting on a store without multi-record transactions: one
//! engine for both kinds of hit, the tutorial's ([`tutorial`]) and the named
//! counters' ([`pages`]), each a [`Kind`].
//!
//! A group commit touches several records: one hit record per hit and the
//! counters its hits count into. Any of those writes can time out after the
//! server applied it (a node leaving, a partition), and a gateway can die or
//! freeze between them. So every step is written to be repeated, by the
//! gateway that started the batch or by any other, until it is known to have
//! happened exactly once:
//!
//! 1. **The intent.** Before anything else, the batch's hits (`[id, what it
//!    counts into, ts]` each) are written to one record of set `batches`, keyed
//!    by the batch id `<writer>:<seq>`, in the kind's bin ([`Kind::INTENT_BIN`]).
//!    While it exists, the batch may be unfinished.
//! 2. **The hit records**, create-only, each with a bin `batch` naming the batch
//!    that created it. A record that already exists belongs to the batch its
//!    `batch` bin names; with no `batch` bin it was counted long ago; with
//!    another batch's marker it is a retry of a hit that batch counts, answered
//!    `duplicate` once that batch is known to be counted ([`Claim::Pending`])
//!    and 503 until then, so "duplicate" is only ever said of a counted hit.
//!    Whoever repeats this step learns which hits the batch owns, and the
//!    answer never changes until the counters are written.
//! 3. **The counters** ([`Kind::write_counters`]), each one `operate` that adds
//!    the batch's hits and records `applied["<writer>:<seq>"]` = the counter
//!    after it (and, for further values, `applied["<writer>:<seq>|<what>"]`) in
//!    a map bin of that same record, atomically, under a filter that lets it
//!    through only while the batch (or a later one of the same writer) is not
//!    in the map ([`BatchId::not_counted_yet`]). A repeat is filtered out and
//!    reads its numbers from the map: an in-doubt increment is retried until
//!    its outcome is known, never applied twice. A failure no retry can mend is
//!    a write fault, and the batch is left to the sweeper.
//! 4. **The release** ([`release`]), after the hits are answered, in rounds
//!    for every batch counted since the last round: the markers are removed
//!    where the kind clears them ([`Kind::CLEAR_MARKERS`]: the tutorial's, so
//!    `aql` shows `test.hits` as the tutorial does; a page hit record keeps its
//!    marker, since a marker whose intent is gone means "counted"), then the
//!    intent is deleted.
//!
//! A writer (one per gateway process and kind, renewed every ten minutes)
//! finishes its batches in order, so per writer the map holds only its latest
//! batch. A batch a writer cannot finish within the store deadline is left to
//! the sweeper and the writer takes a new id, so nothing it writes later can be
//! mistaken for that batch.
//!
//! The **sweeper** ([`sweeper`]) in every gateway looks, every second, for
//! intents the server has not seen updated for a while (the server's clock,
//! not the gateways'), and finishes them with steps 2 to 4 of their kind,
//! creating any hit record that is missing, so that a late write of the frozen
//! gateway finds it there. Two gateways finishing the same batch, or a frozen
//! gateway waking up in the middle of one, repeat the same idempotent steps
//! and agree.

mod batch;
pub(crate) mod pages;
pub(crate) mod release;
pub(crate) mod sweeper;
pub(crate) mod tutorial;

use std::future::Future;

use aerospike::operations::maps;
use aerospike::{
    BatchOperation, BatchReadPolicy, BatchWritePolicy, Bin, Bins, Client, IndexMap, MapReturnType,
    RecordExistsAction, ResultCode, Value, operations,
};
use counter_api::{EpochMillis, HitId};
use counter_store::StoreError;
use counter_store::numbering::{HasHitId, back_to_batch, first_occurrences, first_only};
use tokio::time::Instant;

pub(crate) use self::batch::{BatchId, KEY_ORDERED, Writer, applied_entry};
use self::release::Release;
use crate::AerospikeStore;
use crate::client::{Backoff, Retry, millis_until, unavailable_or_failed};
use crate::layout::{APPLIED_BIN, BATCHES_SET, MARKER_BIN};

/// A kind of hit the engine counts: what its intent lists, which records its
/// hits claim, and how a batch becomes counter writes and numbers.
pub(crate) trait Kind: Sized + Send + Sync + 'static {
    /// A hit as this kind counts it.
    type Hit: HasHitId + Send + Sync;
    /// What step 3 answers: the counters after the batch.
    type Counted: Send;

    /// The bin of the intent that lists this kind's hits: the sweeper tells
    /// the kinds apart by it.
    const INTENT_BIN: &'static str;
    /// Where this kind's hit records live.
    const RECORDS_SET: &'static str;
    /// Whether the release clears the hit records' markers.
    const CLEAR_MARKERS: bool;

    /// The writer that names this kind's batches in this process.
    fn writer(store: &AerospikeStore) -> &std::sync::Mutex<Writer>;

    /// The hit's entry in the intent.
    fn intent_entry(hit: &Self::Hit) -> Value;

    /// The hits an intent lists, as [`Kind::intent_entry`] wrote them; entries
    /// another writer left malformed are skipped.
    fn from_intent(intent: &IndexMap<String, Value>) -> Vec<Self::Hit>;

    /// The records the batch's hits claim in step 2.
    fn hit_records(store: &AerospikeStore, hits: &[&Self::Hit]) -> HitRecords;

    /// Step 3: the counters the batch's owned hits count into, written once for
    /// `batch` however often this runs. `None`: a later batch of the same
    /// writer was counted into them already, so this one was too, but its
    /// numbers are gone.
    fn write_counters(
        store: &AerospikeStore,
        client: &Client,
        batch: &BatchId,
        hits: &[&Self::Hit],
        claims: &[Claim],
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<Self::Counted>, StoreError>> + Send;

    /// What the sweeper does once it counted a batch a gateway left, beside
    /// the release (the named counters offer the counts to their top lists).
    fn swept(
        _store: &AerospikeStore,
        _client: &Client,
        _hits: &[&Self::Hit],
        _counted: Self::Counted,
        _deadline: Instant,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What a group commit of one kind counted.
pub(crate) struct Committed<K: Kind> {
    pub(crate) batch: BatchId,
    /// Per hit of the batch, in order: what the batch made of it (a later
    /// occurrence of an id in the batch is [`Claim::Counted`]).
    pub(crate) claims: Vec<Claim>,
    /// Which hits the batch counted, one flag per hit.
    pub(crate) owned: Vec<bool>,
    pub(crate) counted: K::Counted,
}

impl AerospikeStore {
    /// Counts a group commit of `hits` of kind `K` (ids may repeat: a later
    /// occurrence is a duplicate) exactly once, steps 1 to 3, then hands step 4
    /// to the releaser. Answers only once every counter is written.
    pub(crate) async fn commit<K: Kind>(
        &self,
        hits: &[K::Hit],
    ) -> Result<Committed<K>, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        let client = self.client()?;
        self.wait_while_split_suspected(deadline).await?;
        let firsts = first_occurrences(hits);
        let batch = K::writer(self)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_batch();
        let (claims, counted) = self
            .count::<K>(client, &batch, &first_only(hits, &firsts), deadline)
            .await
            .map_err(|unfinished| unfinished.answer(K::writer(self), &batch))?;
        let claims = back_to_batch(&firsts, claims, || Claim::Counted);
        let owned = Claim::owned(&claims);
        Ok(Committed {
            batch,
            claims,
            owned,
            counted,
        })
    }

    /// Steps 1 to 3 for `hits` (distinct ids) as batch `batch`, then step 4 is
    /// left to the releaser.
    async fn count<K: Kind>(
        &self,
        client: &Client,
        batch: &BatchId,
        hits: &[&K::Hit],
        deadline: Instant,
    ) -> Result<(Vec<Claim>, K::Counted), Unfinished> {
        let list = hits.iter().map(|hit| K::intent_entry(hit)).collect();
        self.write_intent(client, batch, K::INTENT_BIN, list, deadline)
            .await?;
        let started = |error| Unfinished {
            error,
            started: true,
        };
        let records = K::hit_records(self, hits);
        let claims = self
            .inner
            .events
            .timed(
                "batch_hit_records",
                self.claim_hit_records(client, batch, &records, deadline),
            )
            .await
            .map_err(started)?;
        let counted = self
            .inner
            .events
            .timed(
                "batch_counters",
                K::write_counters(self, client, batch, hits, &claims, deadline),
            )
            .await
            .map_err(started)?
            .ok_or_else(|| {
                started(StoreError::Unavailable(format!(
                    "batch {batch} was counted by another gateway meanwhile"
                )))
            })?;
        // Left to the releaser; if it cannot take it (too far behind) or never
        // gets to it (the process ends), the sweeper will.
        let _ = self
            .inner
            .releases
            .try_send(Release::of::<K>(batch, hits, &claims));
        Ok((claims, counted))
    }

    /// Steps 2 and 3 of a batch of kind `K` found in `intent`, for the
    /// sweeper: answers the release it is ready for.
    pub(crate) async fn finish<K: Kind>(
        &self,
        client: &Client,
        batch: &BatchId,
        intent: &IndexMap<String, Value>,
        deadline: Instant,
    ) -> Result<Release, StoreError> {
        let hits = K::from_intent(intent);
        let hits: Vec<&K::Hit> = hits.iter().collect();
        let records = K::hit_records(self, &hits);
        let claims = self
            .claim_hit_records(client, batch, &records, deadline)
            .await?;
        if let Some(counted) =
            K::write_counters(self, client, batch, &hits, &claims, deadline).await?
        {
            K::swept(self, client, &hits, counted, deadline).await;
        }
        Ok(Release::of::<K>(batch, &hits, &claims))
    }

    /// Step 1: the batch's hits, as `list` in bin `bin` of its intent.
    /// Repeating the write is harmless, so it is retried until the deadline,
    /// whatever the failure.
    async fn write_intent(
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
        let maybe_written = std::sync::atomic::AtomicBool::new(false);
        let policy = self.write_policy(deadline);
        crate::client::retrying(
            &self.inner.events,
            Retry::Idempotent,
            "a batch intent",
            deadline,
            || async {
                let put = client.put(&policy, &key, &bins).await;
                if put.as_ref().is_err_and(|error| error.in_doubt()) {
                    maybe_written.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                put
            },
        )
        .await
        .map_err(|error| Unfinished {
            error: unavailable_or_failed(&error),
            started: maybe_written.into_inner(),
        })
    }

    /// Step 2: creates the hit records that do not exist yet, each with its
    /// bins and the batch's marker, and answers, per hit, what the batch makes
    /// of it (a pending claim is settled if its batch is known to be counted).
    /// Every row is tried until its answer is known or the deadline comes.
    async fn claim_hit_records(
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
        let mut claims: Vec<Option<Claim>> = vec![None; ids.len()];
        let mut backoff = Backoff::new();
        // A record found existing whose marker cannot be read yet is claimed
        // again (and found existing again) on the next round.
        loop {
            let pending: Vec<usize> = (0..ids.len()).filter(|&i| claims[i].is_none()).collect();
            let mut tried: Vec<BatchOperation> = pending.iter().map(|&i| rows[i].clone()).collect();
            let answered = self
                .send_rows(client, &mut tried, Retry::Idempotent, deadline)
                .await;
            let mut existing = Vec::new();
            for (&i, row) in pending.iter().zip(&tried) {
                match row.result_code() {
                    Some(ResultCode::Ok) => claims[i] = Some(Claim::Owned),
                    Some(ResultCode::KeyExistsError) => existing.push(i),
                    _ => match row.error() {
                        Some(error) if !Retry::Idempotent.allows(error) => {
                            return Err(unavailable_or_failed(error));
                        }
                        _ => {}
                    },
                }
            }
            if !existing.is_empty() {
                let markers = self
                    .read_markers(client, set, existing.iter().map(|&i| ids[i]), deadline)
                    .await;
                for (i, found) in existing.into_iter().zip(markers) {
                    claims[i] = found.map(|found| match found {
                        None => Claim::Counted,
                        Some(other) if other == marker => Claim::Owned,
                        Some(other) => {
                            BatchId::parse(&other).map_or(Claim::Unreadable, Claim::Pending)
                        }
                    });
                }
            }
            if claims.iter().all(Option::is_some) {
                let mut claims: Vec<Claim> = claims.into_iter().flatten().collect();
                self.settle_pending(client, &mut claims, &records.counters, deadline)
                    .await;
                return Ok(claims);
            }
            if !answered || !backoff.wait(deadline).await {
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
            let (Claim::Pending(other), Ok(counter)) = (claim, &counters[i]) else {
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
        self.send_rows(client, &mut rows, Retry::IfNotApplied, deadline)
            .await;
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
}

/// What a batch learns of one of its hits' records in step 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The batch created it: the hit is the batch's to count.
    Owned,
    /// It was there already with no `batch` bin: counted long ago.
    Counted,
    /// It was there already, created by another batch (named) not yet
    /// released: the hit is, or will be (by the sweeper), counted by that
    /// batch. `settle_pending` tells which; a hit not counted
    /// yet is answered 503, so that "duplicate" is only ever said of a hit that
    /// is counted.
    Pending(BatchId),
    /// It was there already with a marker no gateway writes (a record edited
    /// by hand): answered as a pending hit whose batch cannot be read.
    Unreadable,
}

impl Claim {
    /// Which of `claims` the batch counted.
    pub(crate) fn owned(claims: &[Claim]) -> Vec<bool> {
        claims.iter().map(|claim| *claim == Claim::Owned).collect()
    }

    /// A hit's answer as far as its claim decides it: counted by this batch
    /// (`true`), counted before (`false`), or not known to be counted yet.
    pub(crate) fn answer(&self) -> Result<bool, StoreError> {
        match self {
            Claim::Owned => Ok(true),
            Claim::Counted => Ok(false),
            Claim::Pending(_) | Claim::Unreadable => Err(Self::pending_error()),
        }
    }

    /// Whether another batch may still count the hit.
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self, Claim::Pending(_) | Claim::Unreadable)
    }

    /// What a hit is answered when this batch did not count it.
    pub(crate) fn pending_error() -> StoreError {
        StoreError::Unavailable(
            "this hit is still being counted by an earlier try of it; retry in a few seconds"
                .into(),
        )
    }
}

/// A step that did not finish. `started`: the batch may have left something in
/// the store (its intent was, or may have been, written), so it must be finished
/// by the sweeper; otherwise nothing of it was written.
pub(crate) struct Unfinished {
    pub error: StoreError,
    pub started: bool,
}

impl Unfinished {
    /// What the hits of `batch` are answered. A batch that may have left
    /// something in the store is left to the sweeper, and `writer` takes a new
    /// id, so that nothing it writes later can be mistaken for that batch.
    pub(crate) fn answer(self, writer: &std::sync::Mutex<Writer>, batch: &BatchId) -> StoreError {
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

/// The hit records a batch claims in step 2: in `set`, each hit's id with its
/// bins, and the key of the counter each hit counts into (to settle a pending
/// claim).
pub(crate) struct HitRecords {
    pub(crate) set: &'static str,
    pub(crate) expiration: aerospike::Expiration,
    pub(crate) bins: Vec<(HitId, Vec<Bin>)>,
    pub(crate) counters: Vec<Result<aerospike::Key, StoreError>>,
}

/// A timestamp as the records hold it: integer milliseconds.
pub(crate) fn ts_value(ts: EpochMillis) -> Value {
    Value::from(i64::try_from(ts.as_u64()).expect("EpochMillis fits in i64"))
}

/// One entry of an intent's list: `[id, what the hit counts into, ts]` (a
/// server for the tutorial's hits, a counter key for page hits).
pub(crate) fn intent_entry(id: HitId, counts_into: &str, ts: EpochMillis) -> Value {
    Value::List(vec![
        Value::from(id.to_string()),
        Value::from(counts_into.to_owned()),
        ts_value(ts),
    ])
}

/// The entries of an intent's list in `bin`, as [`intent_entry`] wrote them;
/// entries another writer left malformed are skipped.
pub(crate) fn intent_entries<'a>(
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
