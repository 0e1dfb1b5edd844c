//! Group commit: hits that arrive together are written together.
//!
//! Every hit increments the same hot record (`summary/total_hits`). Written one by
//! one, hits would queue on that record's lock (and Aerospike answers KEY_BUSY past
//! a few pending writes per record), so the counter would stop scaling however
//! many web replicas run. Instead one task owns the store's write path: it takes
//! every hit waiting in the queue, writes them as one batch (one +k increment per
//! counter), and answers each hit with its own N. Batching is driven by load, not a
//! timer: an idle gateway writes a lone hit at once, and under load the next batch
//! gathers in the queue while the previous write is in flight.

use std::sync::Arc;
use std::time::Duration;

use counter_api::{Hit, Recorded};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError};

/// Hits waiting beyond this are refused with 503 rather than queued without bound.
const QUEUE_CAPACITY: usize = 65_536;

struct PendingHit {
    hit: Hit,
    answer: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// The handle request handlers use to record a hit; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<PendingHit>,
    timeout: Duration,
}

impl Recorder {
    /// Starts the task that writes batches of up to `max_batch` hits to `store`.
    pub fn start<S: Store>(store: Arc<S>, max_batch: usize, timeout: Duration) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(store, pending, max_batch));
        Self { queue, timeout }
    }

    /// Records one hit; answers once the batch that counts it is durable.
    pub async fn record(&self, hit: Hit) -> Result<Recorded, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .try_send(PendingHit { hit, answer })
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

async fn write_batches<S: Store>(
    store: Arc<S>,
    mut pending: mpsc::Receiver<PendingHit>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while pending.recv_many(&mut batch, max_batch).await > 0 {
        let (hits, answers): (Vec<Hit>, Vec<_>) =
            batch.drain(..).map(|p| (p.hit, p.answer)).unzip();
        let size = hits.len();
        let results = store.record_hits(hits).await;
        tracing::trace!(size, "group commit");
        for (answer, result) in answers.into_iter().zip(results) {
            // The requester may have given up; the hit is counted all the same.
            let _ = answer.send(result);
        }
    }
}
