//! What a store tells the service about its own work: retries, faults, sweeps,
//! repairs and how long its steps took. The service turns these into metrics
//! and spans; a store only sees this small interface, handed to it when it is
//! built, so no store depends on the service or on a global.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The receiving side, implemented by the service (its `/metrics`). Every
/// method has a default that ignores the event.
pub trait StoreEvents: Send + Sync + 'static {
    /// A write was tried again (`key_busy`, `timeout`, `connection`, `other`),
    /// or its outcome stayed unknown for a while (`in_doubt`).
    fn retried(&self, _cause: &'static str) {}
    /// A write of a counter failed and no retry made it; `failed`: no retry can
    /// mend it (a record too big).
    fn write_fault(&self, _set: &str, _failed: bool) {}
    /// A batch a gateway left unfinished was finished by a sweeper.
    fn swept_batch(&self) {}
    /// The cluster was seen split in two.
    fn cluster_split(&self) {}
    /// A repair added `hits` to counters (negative: took them away).
    fn repaired_hits(&self, _hits: i64) {}
    /// A step of the store took `elapsed`.
    fn step_took(&self, _step: &'static str, _elapsed: Duration) {}
}

/// A store's handle on its [`StoreEvents`]: cheap to clone, and
/// [`Events::none`] for stores built without a service around them.
#[derive(Clone)]
pub struct Events(Arc<dyn StoreEvents>);

/// The target of the spans a store opens around its steps: the one the
/// service exports.
pub const SPANS: &str = "gateway_spans";

struct Ignored;
impl StoreEvents for Ignored {}

impl Events {
    pub fn new(events: Arc<dyn StoreEvents>) -> Self {
        Self(events)
    }

    /// Events nobody listens to: for tests and one-off tools.
    pub fn none() -> Self {
        Self(Arc::new(Ignored))
    }

    /// Runs a step of the store in its own span (exported when tracing is on)
    /// and reports how long it took.
    pub async fn timed<T>(&self, step: &'static str, work: impl Future<Output = T>) -> T {
        let span = tracing::info_span!(
            target: SPANS,
            "store operation",
            otel.name = format!("store {step}"),
            otel.kind = "client",
            db.operation.name = step,
        );
        let started = Instant::now();
        let result = tracing::Instrument::instrument(work, span).await;
        self.0.step_took(step, started.elapsed());
        result
    }
}

impl std::ops::Deref for Events {
    type Target = dyn StoreEvents;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
