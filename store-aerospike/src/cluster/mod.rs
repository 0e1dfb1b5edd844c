//! What the gateway does about a split cluster: the split watch here, the
//! repair in [`repair`].
//!
//! Community Edition runs in availability mode: when the network cuts a node off
//! from the others, each side forms a cluster of its own and both take writes.
//! A counter then has two copies that each count on, so hits on different sides
//! get the same N, and when the network heals the copies are merged by keeping
//! one of them: the other side's increments are lost, while the hit records (one
//! per key) all survive. The fault suite measures this.
//!
//! So the gateway watches for it and answers it:
//!
//! - **Detected:** every [`WATCH_INTERVAL`] it asks each node it knows for its
//!   cluster key, over a connection of its own: a node cut off from the others
//!   may leave the client's node list (no other node lists it as a peer), so
//!   every node seen in the last [`FORGET_NODE_AFTER`] is asked. Nodes that stay
//!   members of different clusters for [`SPLIT_AFTER`] polls in a row mean a
//!   split (a node joining or leaving moves every node to the new key within a
//!   moment, so it does not look like one).
//! - **Refused, not duplicated:** while split, hits are answered 503 (nothing is
//!   written) and `/readyz` is 503, so no further N is given twice. From the
//!   first poll that sees two clusters until the split is declared or gone,
//!   new batches wait (up to the store deadline), so the window in which both
//!   sides can count is at most one poll long.
//! - **Reported:** `GET /v1/audit` lists the split, the counters that disagree
//!   with the hit records, and the repair waiting, and the metrics count splits
//!   and repairs.
//! - **Repaired:** once the split heals (or an audit finds a difference), the
//!   gateway recounts the hit records and adds what each counter is missing, with
//!   a write that applies only if the counter has not moved since the recount:
//!   the tutorial's counters, in a moment with no tutorial hits being counted
//!   (no tutorial intent in `batches`, the counters unchanged across the
//!   recount), tried again every few seconds until it gets one; and the named
//!   counters' days and day totals over the days whose page hit records are all
//!   kept, one count at a time while hits keep flowing (see [`repair`]).

mod repair;

use std::collections::BTreeMap;
use std::time::Duration;

use aerospike::{Bins, Client};
use futures::StreamExt;
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::query_policy;
use crate::layout::BATCHES_SET;
use counter_store::StoreError;

const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a node the client no longer lists is still asked for its cluster.
const FORGET_NODE_AFTER: Duration = Duration::from_secs(120);
/// How long one node may take to answer the watch.
const INFO_TIMEOUT: Duration = Duration::from_millis(300);
/// How often a batch held by a suspected split looks again.
const SUSPECT_POLL: Duration = Duration::from_millis(10);
/// Polls in a row that must see two clusters before the gateway calls it a split.
const SPLIT_AFTER: u32 = 4;
/// How often a due repair is tried.
const REPAIR_INTERVAL: Duration = Duration::from_secs(3);

/// What the watch has seen of the cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterView {
    /// Polls in a row that saw more than one cluster.
    streak: u32,
    /// While split: which nodes are in which cluster, for messages.
    pub split: Option<String>,
    /// The counters may disagree with the hit records: a repair is due.
    pub repair_due: bool,
    /// What the last repair attempt found, for the audit.
    pub last_repair: Option<String>,
    /// The named counts the last inconsistent audit found off: the repair
    /// starts from them rather than auditing everything again.
    pub drift_seen: Vec<counter_api::PageDrift>,
    /// Every node address seen in the client's node list, and when last.
    known: BTreeMap<String, Instant>,
}

impl AerospikeStore {
    fn view(&self) -> std::sync::MutexGuard<'_, ClusterView> {
        self.inner
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err` while the cluster is split: writing now could give an N twice.
    pub(crate) fn refuse_if_split(&self) -> Result<(), StoreError> {
        match &self.view().split {
            Some(split) => Err(StoreError::Unavailable(format!(
                "the Aerospike cluster is split ({split}); hits wait until it heals, so that no N is given twice"
            ))),
            None => Ok(()),
        }
    }

    /// Waits while the last poll saw the nodes in more than one cluster but
    /// not yet for long enough to call it a split: a node joining or leaving
    /// passes in a poll or two, while a real split lets each side count
    /// alone, and every hit counted before the split is declared may get a
    /// number the other side gives too. `Err` once it is a split, or if the
    /// doubt outlasts `deadline`.
    pub(crate) async fn wait_while_split_suspected(
        &self,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        loop {
            self.refuse_if_split()?;
            if self.view().streak == 0 {
                return Ok(());
            }
            if Instant::now() + SUSPECT_POLL >= deadline {
                return Err(StoreError::Unavailable(
                    "the Aerospike cluster's nodes disagree on its membership; hits wait \
                     until they agree, so that no number is given twice"
                        .into(),
                ));
            }
            tokio::time::sleep(SUSPECT_POLL).await;
        }
    }

    /// Asks for a repair: an audit found the counters off.
    pub(crate) fn repair_needed(&self) {
        self.view().repair_due = true;
    }

    /// Keeps what an audit found off for the repair.
    pub(crate) fn saw_drift(&self, drift: &[counter_api::PageDrift]) {
        self.view().drift_seen = drift.to_vec();
    }

    /// What the last audit found off, once.
    pub(crate) fn take_drift_seen(&self) -> Vec<counter_api::PageDrift> {
        std::mem::take(&mut self.view().drift_seen)
    }

    /// What is wrong now, in words, for the audit.
    pub(crate) async fn store_findings(&self) -> Vec<String> {
        let mut findings = Vec::new();
        {
            let view = self.view();
            if let Some(split) = &view.split {
                findings.push(format!(
                    "the cluster is split ({split}): hits are refused until it heals"
                ));
            }
            if view.repair_due {
                findings.push(match &view.last_repair {
                    Some(last) => format!("a repair of the counters is due; last attempt: {last}"),
                    None => "a repair of the counters is due".to_owned(),
                });
            } else if let Some(last) = &view.last_repair {
                findings.push(format!("last repair: {last}"));
            }
        }
        if let Ok(client) = self.client() {
            match self.unfinished_batches(client, None).await {
                Ok(0) => {}
                Ok(n) => findings.push(format!(
                    "{n} batch(es) being counted or waiting for the sweeper (their hits may not be in the counters yet)"
                )),
                Err(error) => findings.push(format!("cannot count unfinished batches: {error}")),
            }
        }
        findings
    }

    /// Runs the watch and the repairs until the process ends.
    pub(crate) async fn watch_forever(self) {
        let mut last_repair_try = Instant::now();
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let Ok(client) = self.client() else { continue };
            self.watch(client).await;
            let due = {
                let view = self.view();
                view.repair_due && view.split.is_none()
            };
            if due && last_repair_try.elapsed() >= REPAIR_INTERVAL {
                last_repair_try = Instant::now();
                let outcome = self.repair(client).await;
                let mut view = self.view();
                match outcome {
                    Ok(Some(summary)) => {
                        view.repair_due = false;
                        tracing::info!(%summary, "counters repaired");
                        view.last_repair = Some(summary);
                    }
                    Ok(None) => {
                        view.last_repair =
                            Some("tutorial hits were being counted; waiting for a pause (the named counters were repaired)".into());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "repairing the counters failed; trying again");
                        view.last_repair = Some(format!("failed: {error}"));
                    }
                }
            }
        }
    }

    async fn watch(&self, client: &Client) {
        let addresses: Vec<String> = {
            let mut view = self.view();
            let now = Instant::now();
            for node in client.nodes() {
                view.known.insert(node.address().to_owned(), now);
            }
            view.known
                .retain(|_, seen| now.duration_since(*seen) < FORGET_NODE_AFTER);
            view.known.keys().cloned().collect()
        };
        let answers = futures::future::join_all(addresses.iter().map(|address| async move {
            let answer =
                tokio::time::timeout(INFO_TIMEOUT, crate::info::ask(address, "statistics")).await;
            (address, answer)
        }))
        .await;
        let mut clusters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (address, answer) in answers {
            let Ok(Ok(stats)) = answer else {
                continue;
            };
            let field = |name: &str| {
                stats
                    .split(';')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            if field("cluster_is_member") != Some("true") {
                continue;
            }
            if let Some(key) = field("cluster_key") {
                clusters
                    .entry(key.to_owned())
                    .or_default()
                    .push(address.clone());
            }
        }
        let mut view = self.view();
        if clusters.len() > 1 {
            view.streak += 1;
        } else {
            view.streak = 0;
        }
        if view.streak >= SPLIT_AFTER && view.split.is_none() {
            let sides: Vec<String> = clusters
                .values()
                .map(|nodes| format!("[{}]", nodes.join(", ")))
                .collect();
            let split = sides.join(" apart from ");
            tracing::error!(%split, "the Aerospike cluster is split: refusing hits until it heals");
            self.inner.events.cluster_split();
            view.split = Some(split);
        } else if view.streak == 0
            && let Some(split) = view.split.take()
        {
            tracing::warn!(%split, "the Aerospike cluster is whole again: counters will be checked against the hit records");
            view.repair_due = true;
            view.last_repair = None;
            // What the split did is found by an audit of everything.
            view.drift_seen.clear();
        }
    }

    /// Intents in `batches`: batches being counted now, or left for the
    /// sweeper; of one kind only if `kind` names its intent bin.
    pub(crate) async fn unfinished_batches(
        &self,
        client: &Client,
        kind: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut policy = query_policy();
        policy.base_policy.total_timeout = self.inner.timeout.as_millis() as u32;
        policy.base_policy.filter_expression =
            kind.map(|bin| aerospike::expressions::bin_exists(bin.to_owned()));
        let mut stream = self.scan(client, &policy, BATCHES_SET, Bins::None).await?;
        let mut n = 0;
        while let Some(record) = stream.next().await {
            record?;
            n += 1;
        }
        Ok(n)
    }
}
