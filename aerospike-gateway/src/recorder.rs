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

use std::future::Future;
use std::time::Duration;

use counter_api::{PageRecorded, Recorded};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Kind, METRICS};
use crate::store::StoreError;

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
}

/// The handle request handlers use to record a hit of kind `H` (a tutorial hit
/// or a page hit), answered with `A`; cheap to clone.
pub struct Recorder<H, A> {
    queue: mpsc::Sender<Pending<H, A>>,
    timeout: Duration,
}

impl<H, A> Clone for Recorder<H, A> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            timeout: self.timeout,
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
        Self { queue, timeout }
    }

    /// Records one hit; answers once the batch that counts it is durable.
    pub async fn record(&self, hit: H) -> Result<A, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.queue.try_send(Pending { hit, answer }).map_err(|_| {
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
        let (hits, answers): (Vec<H>, Vec<_>) = batch.drain(..).map(|p| (p.hit, p.answer)).unzip();
        let size = hits.len();
        METRICS.batch_size.get_or_create(&kind).observe(size as f64);
        let results = METRICS.timed(operation, write(hits)).await;
        tracing::trace!(size, "group commit");
        for result in &results {
            let counter = match result {
                Ok(answer) if answer.duplicate() => &METRICS.duplicates,
                Ok(_) => &METRICS.hits_recorded,
                Err(_) => &METRICS.hits_failed,
            };
            counter.get_or_create(&kind).inc();
        }
        for (answer, result) in answers.into_iter().zip(results) {
            // The requester may have given up; the hit is counted all the same.
            let _ = answer.send(result);
        }
    }
}
