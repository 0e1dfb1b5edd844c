//! What the gateway does about a split cluster.
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
//!   the tutorial's counters, then the named counters' days and day totals over
//!   the days whose page hit records are all kept. It needs a moment with no
//!   hits being counted (no intent in `batches`, the counters unchanged across
//!   the recount), and tries again every few seconds until it gets one.

use std::collections::BTreeMap;
use std::time::Duration;

use aerospike::{Bin, Bins, Client, ResultCode, Value, operations};
use futures::StreamExt;
use tokio::time::Instant;

use super::batches::BATCHES_SET;
use super::{
    AerospikeStore, SUMMARY_SET, StoreError, TOTAL_BIN, counter_value, query_policy,
    unavailable_or_failed,
};
use crate::metrics::METRICS;
use crate::reconcile;
use crate::store::pages::{audit_window, compare_pages};
use crate::store::{Retention, Store};
use counter_api::PageDrift;

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
pub(super) struct ClusterView {
    /// Polls in a row that saw more than one cluster.
    streak: u32,
    /// While split: which nodes are in which cluster, for messages.
    pub split: Option<String>,
    /// The counters may disagree with the hit records: a repair is due.
    pub repair_due: bool,
    /// What the last repair attempt found, for the audit.
    pub last_repair: Option<String>,
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
    pub(super) fn refuse_if_split(&self) -> Result<(), StoreError> {
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
    pub(super) async fn wait_while_split_suspected(
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
    pub(super) fn repair_needed(&self) {
        self.view().repair_due = true;
    }

    /// What is wrong now, in words, for the audit.
    pub(super) async fn store_findings(&self) -> Vec<String> {
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
            match self.unfinished_batches(client).await {
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
    pub(super) async fn watch_forever(self) {
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
                            Some("hits were being counted; waiting for a pause".into());
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
            let answer = tokio::time::timeout(INFO_TIMEOUT, info(address, "statistics")).await;
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
            METRICS.cluster_splits.inc();
            view.split = Some(split);
        } else if view.streak == 0
            && let Some(split) = view.split.take()
        {
            tracing::warn!(%split, "the Aerospike cluster is whole again: counters will be checked against the hit records");
            view.repair_due = true;
            view.last_repair = None;
        }
    }

    /// Intents in `batches`: batches being counted now, or left for the sweeper.
    pub(super) async fn unfinished_batches(&self, client: &Client) -> Result<usize, StoreError> {
        let mut policy = query_policy();
        policy.base_policy.total_timeout = self.inner.timeout.as_millis() as u32;
        let mut stream = self.scan(client, &policy, BATCHES_SET, Bins::None).await?;
        let mut n = 0;
        while let Some(record) = stream.next().await {
            record?;
            n += 1;
        }
        Ok(n)
    }

    /// One repair attempt, of the tutorial's counters and then of the named
    /// counters: `Ok(None)` if hits were being counted meanwhile.
    async fn repair(&self, client: &Client) -> Result<Option<String>, StoreError> {
        let Some(tutorial) = self.repair_summary(client).await? else {
            return Ok(None);
        };
        let Some(pages) = self.repair_pages(client).await? else {
            return Ok(None);
        };
        Ok(Some(format!("{tutorial}; {pages}")))
    }

    /// The named counters' counts, over the days whose page hit records are
    /// all kept, set to those records: each with a write that applies only if
    /// the count has not moved since it was read. The counters are read before
    /// the records (`read_page_tallies`), with no batch unfinished before or
    /// after, so a count read off its records is off for good.
    async fn repair_pages(&self, client: &Client) -> Result<Option<String>, StoreError> {
        let since = audit_window(self.page_hit_retention(), std::time::SystemTime::now());
        if self.unfinished_batches(client).await? > 0 {
            return Ok(None);
        }
        let tallies = self.read_page_tallies(since).await?;
        if self.unfinished_batches(client).await? > 0 {
            return Ok(None);
        }
        let audit = compare_pages(&tallies);
        if audit.drift.is_empty() {
            return Ok(Some(
                "the named counters match their page hit records".into(),
            ));
        }
        let mut done = Vec::new();
        for drift in &audit.drift {
            if !self.set_page_count(client, drift).await? {
                return Ok(None);
            }
            let delta = drift.hit_records as i64 - drift.counted as i64;
            METRICS.repaired_hits.inc_by(delta.unsigned_abs());
            let what = match &drift.key {
                Some(key) => format!("{key} on {}", drift.day),
                None => format!("all counters on {}", drift.day),
            };
            done.push(format!(
                "{what} {} -> {} ({delta:+})",
                drift.counted, drift.hit_records
            ));
        }
        let shown = done.len().min(10);
        Ok(Some(format!(
            "named counters set to their page hit records: {}{}",
            done[..shown].join(", "),
            if done.len() > shown {
                format!(" and {} more", done.len() - shown)
            } else {
                String::new()
            }
        )))
    }

    /// One count of a named counter (its `days[day]` and `total` together) or
    /// a day total, set from `drift.counted` to `drift.hit_records` only if it
    /// still holds `drift.counted`; false if it moved.
    async fn set_page_count(&self, client: &Client, drift: &PageDrift) -> Result<bool, StoreError> {
        use aerospike::expressions::{self as exp, ExpType};
        use aerospike::{MapReturnType, operations::maps};
        let delta = drift.hit_records as i64 - drift.counted as i64;
        let day = drift.day.to_string();
        let (record, bin_holds, ops) = match &drift.key {
            Some(key) => {
                let in_days = |returns| {
                    exp::maps::get_by_key(
                        returns,
                        ExpType::Int,
                        exp::string_val(day.clone()),
                        exp::map_bin(super::pages::DAYS_BIN.to_owned()),
                        &[],
                    )
                };
                let holds = if drift.counted == 0 {
                    exp::or(vec![
                        exp::not(exp::bin_exists(super::pages::DAYS_BIN.to_owned())),
                        exp::eq(in_days(MapReturnType::COUNT), exp::int_val(0)),
                    ])
                } else {
                    exp::eq(
                        in_days(MapReturnType::VALUE),
                        exp::int_val(drift.counted as i64),
                    )
                };
                let ops = vec![
                    operations::add(&Bin::new(TOTAL_BIN, Value::from(delta))),
                    maps::increment_value(
                        &super::pages::KEY_ORDERED,
                        super::pages::DAYS_BIN,
                        Value::from(day.clone()),
                        Value::from(delta),
                    ),
                ];
                (self.key(super::pages::PAGES_SET, key.as_str())?, holds, ops)
            }
            None => {
                let hits = super::pages::HITS_BIN;
                let holds = if drift.counted == 0 {
                    exp::not(exp::bin_exists(hits.to_owned()))
                } else {
                    exp::eq(
                        exp::int_bin(hits.to_owned()),
                        exp::int_val(drift.counted as i64),
                    )
                };
                let ops = vec![
                    operations::put(&Bin::new(super::pages::DAY_BIN, Value::from(day.clone()))),
                    operations::add(&Bin::new(hits, Value::from(delta))),
                ];
                (self.key(super::pages::PAGE_DAYS_SET, &day)?, holds, ops)
            }
        };
        let deadline = Instant::now() + self.inner.timeout;
        let mut policy = self.write_policy(deadline);
        policy.base_policy.filter_expression = Some(bin_holds);
        match client.operate(&policy, &record, &ops).await {
            Ok(_) => Ok(true),
            Err(error) if error.matches(&[ResultCode::FilteredOut]) => Ok(false),
            Err(error) => Err(unavailable_or_failed(&error)),
        }
    }

    /// The tutorial's counters set to the hit records: `Ok(None)` if hits were
    /// being counted meanwhile.
    async fn repair_summary(&self, client: &Client) -> Result<Option<String>, StoreError> {
        if self.hit_retention() != Retention::FOREVER {
            return Ok(Some(
                "not repaired: hit records expire (HIT_RETENTION), so they no longer prove the counters"
                    .into(),
            ));
        }
        let before = self.summary().await?;
        if self.unfinished_batches(client).await? > 0 {
            return Ok(None);
        }
        let records = self.count_hit_records().await?;
        let after = self.summary().await?;
        if before != after || self.unfinished_batches(client).await? > 0 {
            return Ok(None);
        }
        let differences = reconcile::compare(&after, &records);
        if differences.is_empty() {
            return Ok(Some("the counters match the hit records".into()));
        }
        let mut done = Vec::new();
        for difference in &differences {
            if !self
                .add_if_unchanged(
                    client,
                    &difference.key,
                    difference.counter,
                    difference.delta(),
                )
                .await?
            {
                return Ok(None);
            }
            METRICS
                .repaired_hits
                .inc_by(difference.delta().unsigned_abs());
            done.push(format!(
                "{} {} -> {} ({:+})",
                difference.key,
                difference.counter,
                difference.hit_records,
                difference.delta()
            ));
        }
        Ok(Some(format!("set to the hit records: {}", done.join(", "))))
    }

    /// Adds `delta` to a `summary` counter only if it still holds `expected`.
    async fn add_if_unchanged(
        &self,
        client: &Client,
        key: &str,
        expected: u64,
        delta: i64,
    ) -> Result<bool, StoreError> {
        use aerospike::expressions as exp;
        let key = self.key(SUMMARY_SET, key)?;
        let deadline = Instant::now() + self.inner.timeout;
        let mut policy = self.write_policy(deadline);
        policy.base_policy.filter_expression = Some(exp::or(vec![
            exp::not(exp::bin_exists(TOTAL_BIN)),
            exp::eq(exp::int_bin(TOTAL_BIN), exp::int_val(expected as i64)),
        ]));
        let add = Bin::new(TOTAL_BIN, Value::from(delta));
        let ops = [operations::add(&add), operations::get_bin(TOTAL_BIN)];
        match client.operate(&policy, &key, &ops).await {
            Ok(record) => Ok(counter_value(&record.bins).is_some()),
            Err(error) if error.matches(&[ResultCode::FilteredOut]) => Ok(false),
            Err(error) => Err(unavailable_or_failed(&error)),
        }
    }
}

/// One info command over a connection of its own to the node at `address`
/// (`host:port`): a header (version 2, type 1, 48-bit length) and the
/// command's name, answered `name\tvalue\n`.
async fn info(address: &str, command: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let body = format!("{command}\n");
    let header = (2_u64 << 56) | (1_u64 << 48) | body.len() as u64;
    stream.write_all(&header.to_be_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut header = [0_u8; 8];
    stream.read_exact(&mut header).await?;
    let length = (u64::from_be_bytes(header) & 0xffff_ffff_ffff) as usize;
    let mut answer = vec![0_u8; length];
    stream.read_exact(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    Ok(answer
        .split_once('\t')
        .map_or("", |(_, value)| value)
        .trim_end()
        .to_owned())
}
