//! How this store talks to Aerospike: keys and policies, the one way a failed
//! write is tried again ([`Retry`], [`retrying`] for one record,
//! [`send_rows`] for a batch call), and what the client's errors mean to the
//! gateway's callers.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aerospike::errors::Error as AsError;
use aerospike::query::{PartitionFilter, Statement};
use std::collections::BTreeMap;

use aerospike::{
    BatchOperation, BatchPolicy, Bins, Client, ErrorKind, IndexMap, Key, QueryPolicy, ResultCode,
    Value, WritePolicy,
};
use counter_api::Day;
use counter_store::{Events, StoreError};
use futures::StreamExt;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::layout::TOTAL_BIN;

impl AerospikeStore {
    pub(crate) fn client(&self) -> Result<&Client, StoreError> {
        self.inner.client.get().ok_or_else(|| {
            StoreError::Unavailable(format!(
                "not connected to the Aerospike cluster at {} yet",
                self.inner.seeds
            ))
        })
    }

    pub(crate) fn key(&self, set: &str, key: &str) -> Result<Key, StoreError> {
        Key::new(
            self.inner.namespace.as_str(),
            set,
            Value::from(key.to_owned()),
        )
        .map_err(|e| failed(&e))
    }

    /// [`send_rows`] with this store's events.
    pub(crate) async fn send_rows(
        &self,
        client: &Client,
        rows: &mut [BatchOperation],
        retry: Retry,
        deadline: Instant,
    ) -> bool {
        send_rows(client, &self.inner.events, rows, retry, deadline).await
    }

    pub(crate) fn write_policy(&self, deadline: Instant) -> WritePolicy {
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
    pub(crate) async fn scan(
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
}

/// How far a write that failed may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A write that must not apply twice: only when the server answered without
    /// applying it, or the request never left the client.
    ///
    /// The client marks a write in doubt once it was sent, even when the
    /// server's answer, found in the error's cause chain, says it was not
    /// applied.
    IfNotApplied,
    /// An idempotent step (the exactly-once steps of [`once`](crate::once)):
    /// anything short of a refusal that will not change (a bad request, a
    /// record too big, ...).
    Idempotent,
}

impl Retry {
    pub(crate) fn allows(self, error: &AsError) -> bool {
        match self {
            Retry::IfNotApplied => {
                error.matches(&NOT_APPLIED) || (!error.in_doubt() && connection_trouble(error))
            }
            Retry::Idempotent => {
                error.in_doubt()
                    || matches!(unavailable_or_failed(error), StoreError::Unavailable(_))
            }
        }
    }

    /// The metrics' name for why a write is tried again: `in_doubt` for an
    /// idempotent write repeated because its outcome was unknown.
    fn cause(self, error: &AsError) -> &'static str {
        if self == Retry::Idempotent && error.in_doubt() && !error.matches(&NOT_APPLIED) {
            "in_doubt"
        } else {
            retry_cause(error)
        }
    }
}

/// Runs `attempt` (one request to one record: `what`, for the log) until it
/// answers, fails in a way `retry` does not allow, or the next try would not
/// end before `deadline`; every retry waits its [`Backoff`] and is reported to
/// `events`.
pub(crate) async fn retrying<T, F>(
    events: &Events,
    retry: Retry,
    what: &str,
    deadline: Instant,
    mut attempt: impl FnMut() -> F,
) -> Result<T, AsError>
where
    F: Future<Output = Result<T, AsError>>,
{
    let mut backoff = Backoff::new();
    loop {
        let error = match attempt().await {
            Ok(answer) => return Ok(answer),
            Err(error) => error,
        };
        if !retry.allows(&error) || !backoff.wait(deadline).await {
            return Err(error);
        }
        events.retried(retry.cause(&error));
        tracing::debug!(%error, "retrying {what}");
    }
}

/// Sends `rows` as one batch call, then again for the rows whose failure
/// `retry` allows, with backoff, until every row has an outcome to keep (each
/// row then holds its own answer: applied, or an error the caller reads, such
/// as KEY_EXISTS or FILTERED_OUT) or the deadline comes. Answers whether every
/// row has such an outcome. Reads and writes may mix.
pub(crate) async fn send_rows(
    client: &Client,
    events: &Events,
    rows: &mut [BatchOperation],
    retry: Retry,
    deadline: Instant,
) -> bool {
    let mut backoff = Backoff::new();
    let mut pending: Vec<usize> = (0..rows.len()).collect();
    loop {
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
        pending.retain(|&i| unanswered(&rows[i], retry));
        if pending.is_empty() {
            return true;
        }
        if !backoff.wait(deadline).await {
            return false;
        }
        for &i in &pending {
            if let Some(error) = rows[i].error() {
                events.retried(retry.cause(error));
            }
        }
        tracing::debug!(
            rows = pending.len(),
            "retrying batch rows without an outcome"
        );
    }
}

/// A row that has no outcome to keep yet: no answer at all, or a failure
/// `retry` allows trying again.
pub(crate) fn unanswered(row: &BatchOperation, retry: Retry) -> bool {
    match row.result_code() {
        Some(ResultCode::Ok) => false,
        _ => match row.error() {
            Some(error) => retry.allows(error),
            None => row.result_code().is_none(),
        },
    }
}

/// How long a clean-up of uncounted records may take, once the caller's deadline
/// is spent.
pub(crate) const FORGET_TIMEOUT_MS: u32 = 1_000;

/// The least time a retry must have left before the deadline. A write cut off by
/// the client's timeout is in doubt, and a hit whose count is in doubt is lost
/// (its record stays, so a retry is a duplicate); a write refused KEY_BUSY is
/// surely not applied, and its hit can be retried. So the last try must have
/// time to hear the server's answer.
pub(crate) const LAST_TRY: Duration = Duration::from_millis(100);

/// Waits between tries of a write that surely did not apply: from 0.5 ms,
/// doubling up to 50 ms, with jitter.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(Duration::from_micros(500))
    }

    /// Sleeps before the next try; false, at once, when the try would not have
    /// [`LAST_TRY`] left before the deadline.
    pub(crate) async fn wait(&mut self, deadline: Instant) -> bool {
        if Instant::now() + self.0 * 2 + LAST_TRY >= deadline {
            return false;
        }
        tokio::time::sleep(jitter(self.0)).await;
        self.0 = (self.0 * 2).min(Duration::from_millis(50));
        true
    }
}

/// Why a batch row has no result. A row the server answered KEY_NOT_FOUND is
/// not a failure here: callers read it as an empty record first.
pub(crate) fn row_failure(row: &BatchOperation) -> StoreError {
    match row.error() {
        Some(error) => unavailable_or_failed(error),
        None => StoreError::Unavailable("Aerospike did not answer for a record".into()),
    }
}

/// `total` as written by `add`: an integer, or the `[nil, total]` pair an
/// `operate(add, get)` answers.
pub(crate) fn counter_value(bins: &aerospike::IndexMap<String, Value>) -> Option<u64> {
    match bins.get(TOTAL_BIN)? {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::MultiResult(values) | Value::List(values) => match values.last()? {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Queries retry the partitions that did not answer (a node leaving, partitions
/// migrating) until their total timeout, not for a fixed number of rounds: the
/// client's default of 5 quick rounds gives up in the middle of a migration.
pub(crate) fn query_policy() -> QueryPolicy {
    let mut policy = QueryPolicy::default();
    policy.base_policy.max_retries = 0;
    policy.base_policy.sleep_between_retries = 100;
    policy
}

pub(crate) fn millis_until(deadline: Instant) -> u32 {
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

/// The metrics' name for why a write is tried again.
pub(crate) fn retry_cause(error: &AsError) -> &'static str {
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

pub(crate) fn unavailable_or_failed(error: &AsError) -> StoreError {
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

pub(crate) fn failed(error: &AsError) -> StoreError {
    StoreError::Failed(format!("Aerospike: {error}"))
}

/// The last answer for `bin`: an operate answers once per op on the bin.
pub(crate) fn last_value<'a>(bins: &'a IndexMap<String, Value>, bin: &str) -> Option<&'a Value> {
    match bins.get(bin)? {
        Value::MultiResult(values) => values.last(),
        value => Some(value),
    }
}

pub(crate) fn count(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::MultiResult(values) | Value::List(values) => count(values.last()),
        _ => None,
    }
}

/// The entries of a map answer, whichever form the client decoded it to.
pub(crate) fn map_entries(value: &Value) -> Vec<(&Value, &Value)> {
    match value {
        Value::SortedMap(map) => map.iter().collect(),
        Value::OrderedMap(map) => map.iter().collect(),
        Value::HashMap(map) => map.iter().collect(),
        Value::KeyValueList(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    }
}

/// `days` entries as counts per day; entries another writer left malformed are
/// skipped.
pub(crate) fn day_counts(value: &Value) -> BTreeMap<Day, u64> {
    map_entries(value)
        .into_iter()
        .filter_map(|(day, hits)| match day {
            Value::String(day) => Some((day.parse().ok()?, count(Some(hits))?)),
            _ => None,
        })
        .collect()
}

/// The record does not exist (or lacks the bin read): it reads as zeros.
pub(crate) fn absent(row: &BatchOperation) -> bool {
    row.error()
        .is_some_and(|e| e.matches(&[ResultCode::KeyNotFoundError, ResultCode::BinNotFound]))
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tops::top_entries;

    #[test]
    fn map_answers_decode_in_every_form() {
        let days = Value::KeyValueList(vec![
            (Value::from("2025-11-24"), Value::Int(3)),
            (Value::from("not a day"), Value::Int(1)),
            (Value::from("2025-11-25"), Value::Int(2)),
        ]);
        let counts: Vec<(String, u64)> = day_counts(&days)
            .into_iter()
            .map(|(d, n)| (d.to_string(), n))
            .collect();
        assert_eq!(counts, [("2025-11-24".into(), 3), ("2025-11-25".into(), 2)]);
        let top = Value::SortedMap(BTreeMap::from([
            (Value::from("blog/a"), Value::Int(-5)),
            (Value::from("a b"), Value::Int(-9)),
            (Value::from("blog/b"), Value::Int(3)),
        ]));
        assert_eq!(top_entries(&top), [("blog/a".parse().unwrap(), 5)]);
        let answers = IndexMap::from([(
            TOTAL_BIN.to_owned(),
            Value::MultiResult(vec![Value::Nil, Value::Int(7)]),
        )]);
        assert_eq!(count(last_value(&answers, TOTAL_BIN)), Some(7));
    }
}
