//! The hit counter's store on Aerospike, laid out exactly as the tutorial's app
//! lays out its data, so `aql> select * from test.hits` and `select * from
//! test.summary` read the same ([`layout`] lists every set and bin).
//!
//! One [`Client`] per gateway process, built from the seed hosts at start-up; it
//! discovers the rest of the cluster and follows nodes joining and leaving. (The
//! tutorial built a client per request.) If the cluster is not up yet, the gateway
//! serves anyway, answers 503 and keeps trying to connect in the background.
//!
//! Where to look:
//!
//! - [`once`]: every batch, of the tutorial's hits or of page hits, is counted
//!   exactly once through faults by one engine: the four steps, the releaser
//!   and the sweeper;
//! - [`hits`]: the tutorial's hits numbered, `summary` and the newest hits read;
//! - [`pages`]: the named counters numbered and read, and the audit's tallies;
//!   [`imports`] a counter's base, set once;
//!   [`tops`] their top lists, [`visitors`] their unique visitors and the day's
//!   secrets;
//! - [`cluster`]: the split watch, and the repair of what a split or a hand
//!   edit left;
//! - [`client`]: policies, the one retry helper, what errors mean.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aerospike::{
    Client, ClientPolicy, CollectionIndexType, Expiration, IndexType, ResultCode, ToHosts,
};
use anyhow::Context;
use counter_api::{
    Day, Hit, ImportOutcome, PageImport, PageKey, PageRecorded, PageStats, PagesOverview, Recorded,
    Summary,
};
use counter_store::audit::PageTallies;
use counter_store::pages::{DayRange, PageHitToCount, VisitorSalt};
use counter_store::{
    Audit, Counts, Events, Reads, Retention, Store, StoreError, VisitorSalts, WriteFaults,
};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use self::cluster::ClusterView;
use self::layout::{HITS_SET, TS_BIN, TS_INDEX};
use self::once::Writer;
use self::once::release::{RELEASE_QUEUE, Release};

mod audit;
mod client;
mod cluster;
mod hits;
mod imports;
pub mod info;
pub mod layout;
mod once;
mod pages;
mod tops;
mod visitors;

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
    /// ([`tops`]).
    top_cuts: std::sync::Mutex<HashMap<String, (u64, PageKey)>>,
    faults: WriteFaults,
    /// Where retries, faults, sweeps and repairs are reported.
    events: Events,
    /// The TTL of page hit records, in seconds; 0: the namespace's default
    /// (forever, as shipped).
    page_hit_ttl: std::sync::atomic::AtomicU32,
    /// The same for the tutorial's hit records (0 unless the operator opted in).
    hit_ttl: std::sync::atomic::AtomicU32,
    /// The same for `page_visitors` records, from their last write.
    visitor_ttl: std::sync::atomic::AtomicU32,
    /// Counted batches, to the releaser (step 4 of [`once`]).
    releases: tokio::sync::mpsc::Sender<Release>,
}

impl AerospikeStore {
    /// Checks the seed list and starts connecting in the background; the store
    /// answers [`StoreError::Unavailable`] until the cluster is reached.
    pub fn connect(
        seeds: &[String],
        namespace: &str,
        timeout: Duration,
        events: Events,
    ) -> anyhow::Result<Self> {
        let seeds = seeds.join(",");
        seeds
            .to_hosts()
            .with_context(|| format!("AEROSPIKE_HOSTS={seeds:?} is not a list of host:port"))?;
        let (releases, counted) = tokio::sync::mpsc::channel(RELEASE_QUEUE);
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
                faults: WriteFaults::new(events.clone()),
                events,
                page_hit_ttl: std::sync::atomic::AtomicU32::new(0),
                hit_ttl: std::sync::atomic::AtomicU32::new(0),
                visitor_ttl: std::sync::atomic::AtomicU32::new(0),
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
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.inner.page_hit_ttl.store(ttl_secs(page_hits), relaxed);
        self.inner.hit_ttl.store(ttl_secs(hits), relaxed);
        self
    }

    /// A counter-day's unique-visitor figures expire `visitors` after its last
    /// visitor was added (a record TTL, as for page hit records); totals and
    /// days of hits stay.
    pub fn keeping_visitors(self, visitors: Retention) -> Self {
        self.inner
            .visitor_ttl
            .store(ttl_secs(visitors), std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// The expiration of a `page_visitors` record, from this write on.
    pub(crate) fn visitor_expiration(&self) -> Expiration {
        expiration(&self.inner.visitor_ttl)
    }

    /// The expiration of a new page hit record.
    pub(crate) fn page_hit_expiration(&self) -> Expiration {
        expiration(&self.inner.page_hit_ttl)
    }

    /// The expiration of a new hit record of the tutorial's.
    pub(crate) fn hit_expiration(&self) -> Expiration {
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
                TS_BIN,
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
}

impl Counts for AerospikeStore {
    async fn record_hits(&self, hits: Vec<Hit>) -> Vec<Result<Recorded, StoreError>> {
        match self.record_tutorial_hits(&hits).await {
            Ok(results) => results,
            Err(error) => vec![Err(error); hits.len()],
        }
    }

    async fn record_page_hits(
        &self,
        hits: Vec<PageHitToCount>,
    ) -> Vec<Result<PageRecorded, StoreError>> {
        match self.record_page_hit_batch(&hits).await {
            Ok(results) => results,
            Err(error) => vec![Err(error); hits.len()],
        }
    }

    async fn import_page_base(&self, import: PageImport) -> Result<ImportOutcome, StoreError> {
        self.import_base(&import).await
    }
}

impl Reads for AerospikeStore {
    async fn summary(&self) -> Result<Summary, StoreError> {
        self.read_summary().await
    }

    async fn latest_hits(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
        self.latest(limit).await
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
}

impl Audit for AerospikeStore {
    async fn count_hit_records(&self) -> Result<Summary, StoreError> {
        self.count_records().await
    }

    async fn adjust_counter(&self, key: &str, delta: i64) -> Result<u64, StoreError> {
        let deadline = Instant::now() + self.inner.timeout;
        self.add_to_counter(self.client()?, key, delta, deadline)
            .await
    }

    async fn page_tallies(&self, since: Day) -> Result<PageTallies, StoreError> {
        self.read_page_tallies(since).await
    }

    async fn page_audit(&self, since: Day) -> Result<counter_api::PagesAudit, StoreError> {
        self.read_page_audit(since).await
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

    async fn findings(&self) -> Vec<String> {
        let mut findings = self.store_findings().await;
        findings.extend(self.inner.faults.findings());
        findings
    }

    fn suspect_drift(&self) {
        self.repair_needed();
    }
}

impl VisitorSalts for AerospikeStore {
    async fn visitor_salt(&self, day: Day, forget_before: Day) -> Result<VisitorSalt, StoreError> {
        self.day_salt(day, forget_before).await
    }
}

impl Store for AerospikeStore {
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

/// A retention as a TTL in seconds; 0: the namespace's default (forever, as
/// shipped).
fn ttl_secs(retention: Retention) -> u32 {
    retention
        .0
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1))
}

/// A TTL in seconds as an expiration; 0: the namespace's default.
fn expiration(ttl: &std::sync::atomic::AtomicU32) -> Expiration {
    match ttl.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Expiration::NamespaceDefault,
        secs => Expiration::Seconds(secs),
    }
}
