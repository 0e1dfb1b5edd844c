//! Group commit: hits that arrive together are written together.
//!
//! Every hit increments the same hot record (`summary/total_hits`). Written one by
//! one, hits would queue on that record's lock (and Aerospike answers KEY_BUSY past
//! a few pending writes per record), so the counter would stop scaling however
//! many web replicas run. Instead one task owns the store's write path: it takes
//! every hit waiting in the queue, writes them as one batch (one +k increment per
//! counter), and answers each hit with its own N. Batching is driven by load, not a
//! timer: an idle gateway writes a lone hit at once, and under load the next batch
//! gathers in the queue while the previous write is in flight. Page hits (named
//! counters) have a queue and a writer of their own, of the same shape.
//!
//! Traced, a hit's wait is a `record hit` span in the caller's trace, and the
//! write a `group commit` span with the batch's size and counts. A commit serves
//! many hits from many traces: it is a child of the first hit's span (so a lone
//! hit's trace holds the whole write), linked to every other hit's span, and each
//! of those links back to it.

use std::future::Future;
use std::time::Duration;

use counter_api::{PageRecorded, Recorded};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{Kind, METRICS};
use crate::telemetry::{CallerTrace, SPANS, span_context};
use counter_store::StoreError;

/// What a recorded hit was answered with, as far as the metrics care.
pub trait Answer {
    fn duplicate(&self) -> bool;
}

impl Answer for Recorded {
    fn duplicate(&self) -> bool {
        self.duplicate
    }
}

impl Answer for PageRecorded {
    fn duplicate(&self) -> bool {
        self.duplicate
    }
}

/// Hits waiting beyond this are refused with 503 rather than queued without bound.
const QUEUE_CAPACITY: usize = 65_536;

struct Pending<H, A> {
    hit: H,
    answer: oneshot::Sender<Result<A, StoreError>>,
    /// The hit's `record hit` span (disabled unless tracing is on).
    span: tracing::Span,
}

/// The handle request handlers use to record a hit of kind `H` (a tutorial hit
/// or a page hit), answered with `A`; cheap to clone.
pub struct Recorder<H, A> {
    queue: mpsc::Sender<Pending<H, A>>,
    timeout: Duration,
    kind: &'static str,
}

impl<H, A> Clone for Recorder<H, A> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            timeout: self.timeout,
            kind: self.kind,
        }
    }
}

impl<H: Send + 'static, A: Answer + Send + 'static> Recorder<H, A> {
    /// Starts the task that hands batches of up to `max_batch` hits to `write`,
    /// one batch at a time; `write` answers, in order, each hit's outcome.
    /// `kind` names the hits in the metrics (`tutorial` or `page`).
    pub fn start<W, F>(kind: &'static str, write: W, max_batch: usize, timeout: Duration) -> Self
    where
        W: Fn(Vec<H>) -> F + Send + 'static,
        F: Future<Output = Vec<Result<A, StoreError>>> + Send + 'static,
    {
        let (queue, pending) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(kind, write, pending, max_batch));
        Self {
            queue,
            timeout,
            kind,
        }
    }

    /// Records one hit; answers once the batch that counts it is durable. Its span
    /// is in the request's trace, or in `caller`'s if given.
    pub async fn record(&self, hit: H, caller: Option<CallerTrace>) -> Result<A, StoreError> {
        let span = tracing::info_span!(target: SPANS, "record hit", counter.kind = self.kind);
        if let Some(caller) = caller {
            caller.adopt(&span);
        }
        self.wait_for_commit(hit, span.clone())
            .instrument(span)
            .await
    }

    async fn wait_for_commit(&self, hit: H, span: tracing::Span) -> Result<A, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .try_send(Pending { hit, answer, span })
            .map_err(|_| {
                StoreError::Unavailable("too many hits are waiting to be written".into())
            })?;
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Failed("the batch writer stopped".into())),
            // The hit stays queued and may still be counted; the caller only learns
            // that it was not confirmed in time.
            Err(_) => Err(StoreError::Unavailable(format!(
                "the hit was not confirmed within {:?}",
                self.timeout
            ))),
        }
    }
}

async fn write_batches<H, A: Answer, W, F>(
    kind: &'static str,
    write: W,
    mut pending: mpsc::Receiver<Pending<H, A>>,
    max_batch: usize,
) where
    W: Fn(Vec<H>) -> F,
    F: Future<Output = Vec<Result<A, StoreError>>>,
{
    let operation = if kind == "page" {
        "record_page_hits"
    } else {
        "record_hits"
    };
    let kind = Kind { kind };
    let mut batch = Vec::with_capacity(max_batch);
    while pending.recv_many(&mut batch, max_batch).await > 0 {
        METRICS
            .queue_depth
            .get_or_create(&kind)
            .set(pending.len() as i64);
        let size = batch.len();
        let commit = commit_span(&kind, &batch);
        let mut hits = Vec::with_capacity(size);
        let mut answers = Vec::with_capacity(size);
        for pending in batch.drain(..) {
            hits.push(pending.hit);
            answers.push(pending.answer);
        }
        METRICS.batch_size.get_or_create(&kind).observe(size as f64);
        let results = METRICS
            .timed(operation, write(hits))
            .instrument(commit.clone())
            .await;
        tracing::trace!(size, "group commit");
        let (mut counted, mut duplicates, mut failed) = (0u64, 0u64, 0u64);
        for result in &results {
            let (counter, tally) = match result {
                Ok(answer) if answer.duplicate() => (&METRICS.duplicates, &mut duplicates),
                Ok(_) => (&METRICS.hits_recorded, &mut counted),
                Err(_) => (&METRICS.hits_failed, &mut failed),
            };
            counter.get_or_create(&kind).inc();
            *tally += 1;
        }
        commit.record("hits.counted", counted);
        commit.record("hits.duplicate", duplicates);
        commit.record("hits.failed", failed);
        if failed > 0 {
            commit.record("otel.status_code", "ERROR");
        }
        for (answer, result) in answers.into_iter().zip(results) {
            // The requester may have given up; the hit is counted all the same.
            let _ = answer.send(result);
        }
    }
}

/// The span of one group commit: a child of its first hit's span, linked both
/// ways with the others'. Disabled (and nothing looked at) when tracing is off.
fn commit_span<H, A>(kind: &Kind, batch: &[Pending<H, A>]) -> tracing::Span {
    let Some((first, others)) = batch.split_first() else {
        return tracing::Span::none();
    };
    let commit = tracing::info_span!(
        target: SPANS,
        parent: &first.span,
        "group commit",
        counter.kind = kind.kind,
        batch.size = batch.len(),
        hits.counted = tracing::field::Empty,
        hits.duplicate = tracing::field::Empty,
        hits.failed = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(commit_context) = span_context(&commit) {
        for pending in others {
            if let Some(hit_context) = span_context(&pending.span) {
                commit.add_link(hit_context);
                pending.span.add_link(commit_context.clone());
            }
        }
    }
    commit
}
