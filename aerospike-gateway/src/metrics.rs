//! What the gateway counts about itself, served at `GET /metrics` in the
//! Prometheus (OpenMetrics) text format through the Prometheus project's own
//! Rust client.
//!
//! One process-wide registry: the recorder and the API report to it, and the
//! stores through the [`StoreEvents`] they are built with
//! ([`store_events`]), so that no store depends on the service.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use counter_store::{Events, StoreEvents};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which counter a hit is for: the tutorial's (`tutorial`) or a named one (`page`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

/// A store operation, e.g. `record_hits` or `page_stats`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

/// Why a store write was tried again, or left undecided.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cause {
    pub cause: &'static str,
}

/// A set whose writes failed, and whether a retry could mend such a failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteFault {
    pub set: String,
    pub failed: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Hits counted for the first time.
    pub hits_recorded: Family<Kind, Counter>,
    /// Hits whose id had been recorded already: answered, not counted again.
    pub duplicates: Family<Kind, Counter>,
    /// Hits answered with an error (the store was unavailable or failed).
    pub hits_failed: Family<Kind, Counter>,
    /// Hits per group commit.
    pub batch_size: Family<Kind, Histogram>,
    /// Hits per web-tier call (`POST /v1/hits/batch`, `/v1/page-hits/batch`):
    /// what the web replicas' own batching achieves.
    pub hits_per_call: Family<Kind, Histogram>,
    /// Hits waiting for the next group commit.
    pub queue_depth: Family<Kind, Gauge>,
    /// How long each store operation took, retries included.
    pub store_seconds: Family<Operation, Histogram>,
    /// Store writes tried again (`key_busy`, `timeout`, `connection`, `other`),
    /// and writes whose outcome stayed unknown (`in_doubt`).
    pub store_retries: Family<Cause, Counter>,
    /// The tutorial's `total_hits` minus the number of hit records, as the last
    /// `GET /v1/audit` found them: 0 when they agree.
    pub audit_drift: Gauge,
    /// The named counters' counts (per counter and day, and day totals) that
    /// differ from their page hit records, as the last audit found them.
    pub audit_page_drift: Gauge,
    /// Batches a gateway left unfinished (it died, froze, or ran out of time)
    /// that a sweeper finished.
    pub swept_batches: Counter,
    /// Splits of the Aerospike cluster the gateway saw (hits refused meanwhile).
    pub cluster_splits: Counter,
    /// Hits added to (or taken from) counters by repairs after a split.
    pub repaired_hits: Counter,
    /// Writes of counters that failed and were not retried, by set; `failed`
    /// is `true` for failures no retry can mend (a record too big).
    pub write_faults: Family<WriteFault, Counter>,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let hits_recorded = Family::default();
        registry.register("hits_recorded", "Hits counted", hits_recorded.clone());
        let duplicates = Family::default();
        registry.register(
            "duplicate_hits",
            "Retried hits answered without counting them again",
            duplicates.clone(),
        );
        let hits_failed = Family::default();
        registry.register(
            "failed_hits",
            "Hits answered with an error",
            hits_failed.clone(),
        );
        let batch_size = Family::<Kind, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 11))
        });
        registry.register(
            "batch_size_hits",
            "Hits per group commit",
            batch_size.clone(),
        );
        let hits_per_call = Family::<Kind, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 9))
        });
        registry.register(
            "hits_per_call",
            "Hits per batch call from the web tier",
            hits_per_call.clone(),
        );
        let queue_depth = Family::default();
        registry.register(
            "queue_depth_hits",
            "Hits waiting for the next group commit",
            queue_depth.clone(),
        );
        let store_seconds = Family::<Operation, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "store_operation_seconds",
            "Time per store operation, retries included",
            store_seconds.clone(),
        );
        let store_retries = Family::default();
        registry.register(
            "store_retries",
            "Store writes tried again, by cause; in_doubt: outcome unknown",
            store_retries.clone(),
        );
        let audit_drift = Gauge::default();
        registry.register(
            "audit_drift_hits",
            "total_hits minus the hit records, at the last audit",
            audit_drift.clone(),
        );
        let audit_page_drift = Gauge::default();
        registry.register(
            "audit_page_drift_counts",
            "Named counters' counts per day that differ from their page hit records, at the last audit",
            audit_page_drift.clone(),
        );
        let swept_batches = Counter::default();
        registry.register(
            "swept_batches",
            "Unfinished batches of hits finished by the sweeper",
            swept_batches.clone(),
        );
        let cluster_splits = Counter::default();
        registry.register(
            "cluster_splits",
            "Splits of the Aerospike cluster seen; hits are refused while split",
            cluster_splits.clone(),
        );
        let repaired_hits = Counter::default();
        registry.register(
            "repaired_hits",
            "Hits added to or taken from counters to match the hit records after a split",
            repaired_hits.clone(),
        );
        let write_faults = Family::default();
        registry.register(
            "store_write_faults",
            "Writes of counters that failed and were not retried, by set",
            write_faults.clone(),
        );
        // Every series exists from the start: a scrape tells zero from unknown.
        for kind in ["tutorial", "page"] {
            let kind = Kind { kind };
            for family in [&hits_recorded, &duplicates, &hits_failed] {
                let _ = family.get_or_create(&kind);
            }
            let _ = queue_depth.get_or_create(&kind);
        }
        for cause in ["key_busy", "timeout", "connection", "other", "in_doubt"] {
            let _ = store_retries.get_or_create(&Cause { cause });
        }
        Self {
            registry,
            hits_recorded,
            duplicates,
            hits_failed,
            batch_size,
            hits_per_call,
            queue_depth,
            store_seconds,
            store_retries,
            audit_drift,
            audit_page_drift,
            swept_batches,
            cluster_splits,
            repaired_hits,
            write_faults,
        }
    }

    /// The text a Prometheus scrape reads.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Runs a store operation, in its own span when tracing is on, and records how
    /// long it took, as the stores' own steps are.
    pub async fn timed<T>(&self, operation: &'static str, work: impl Future<Output = T>) -> T {
        STORE_EVENTS.timed(operation, work).await
    }

    pub fn write_fault(&self, set: &str, failed: bool) {
        self.write_faults
            .get_or_create(&WriteFault {
                set: set.to_owned(),
                failed: if failed { "true" } else { "false" },
            })
            .inc();
    }

    /// One batch call from the web tier carried `hits` hits of `kind`.
    pub fn call_carried(&self, kind: &'static str, hits: usize) {
        self.hits_per_call
            .get_or_create(&Kind { kind })
            .observe(hits as f64);
    }

    pub fn retried(&self, cause: &'static str) {
        self.store_retries.get_or_create(&Cause { cause }).inc();
    }
}

/// What the stores report, into [`METRICS`].
struct StoreMetrics;

impl StoreEvents for StoreMetrics {
    fn retried(&self, cause: &'static str) {
        METRICS.retried(cause);
    }

    fn write_fault(&self, set: &str, failed: bool) {
        METRICS.write_fault(set, failed);
    }

    fn swept_batch(&self) {
        METRICS.swept_batches.inc();
    }

    fn cluster_split(&self) {
        METRICS.cluster_splits.inc();
    }

    fn repaired_hits(&self, hits: i64) {
        METRICS.repaired_hits.inc_by(hits.unsigned_abs());
    }

    fn step_took(&self, step: &'static str, elapsed: Duration) {
        METRICS
            .store_seconds
            .get_or_create(&Operation { operation: step })
            .observe(elapsed.as_secs_f64());
    }
}

static STORE_EVENTS: LazyLock<Events> = LazyLock::new(|| Events::new(Arc::new(StoreMetrics)));

/// The handle a store is built with, to report into `/metrics`.
pub fn store_events() -> Events {
    STORE_EVENTS.clone()
}
