//! Step 4 of [`once`](super): the release of counted batches, in rounds.

use aerospike::expressions as exp;
use aerospike::{
    BatchDeletePolicy, BatchOperation, BatchWritePolicy, Bin, Client, RecordExistsAction,
    ResultCode, Value, operations,
};
use counter_api::HitId;
use counter_store::numbering::HasHitId;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use super::{BatchId, Claim, Kind};
use crate::AerospikeStore;
use crate::client::Retry;
use crate::layout::{BATCHES_SET, MARKER_BIN};

/// Most batches one release round takes on.
const MAX_RELEASES_PER_ROUND: usize = 64;
/// Counted batches waiting for their release, at most.
pub(crate) const RELEASE_QUEUE: usize = 4096;
/// The least time the release step gets, after the hits were answered.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// A counted batch waiting for step 4: the hit records it owns, in `set`
/// (`hits`, or `page_hits` for a batch of page hits).
pub(crate) struct Release {
    pub(crate) set: &'static str,
    pub(crate) batch: BatchId,
    pub(crate) owned_ids: Vec<HitId>,
    /// Whether the records' markers are cleared (the tutorial's, so `aql`
    /// shows its two bins) or stay (page hits: the intent's absence says the
    /// same, for one write less per hit).
    pub(crate) clear_markers: bool,
}

impl Release {
    /// The release of `batch` of kind `K`, which owns the hits `claims` say.
    pub(crate) fn of<K: Kind>(batch: &BatchId, hits: &[&K::Hit], claims: &[Claim]) -> Self {
        Release {
            set: K::RECORDS_SET,
            batch: batch.clone(),
            owned_ids: hits
                .iter()
                .zip(claims)
                .filter(|(_, claim)| **claim == Claim::Owned)
                .map(|(hit, _)| hit.hit_id())
                .collect(),
            clear_markers: K::CLEAR_MARKERS,
        }
    }
}

impl AerospikeStore {
    /// Step 4 for several batches at once: one batch call clears the markers of
    /// all their hit records (each only where it still names its batch), and a
    /// second deletes the intents of the batches whose markers are all gone.
    /// Answers, per batch, whether it is released.
    pub(crate) async fn release_all(&self, client: &Client, releases: &[Release]) -> Vec<bool> {
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
            self.send_rows(client, &mut rows, Retry::IfNotApplied, deadline)
                .await;
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
            self.send_rows(client, &mut deletes, Retry::IfNotApplied, deadline)
                .await;
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
    pub(crate) async fn release_forever(self, mut counted: mpsc::Receiver<Release>) {
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
}
