//! The write-fault registry: writes of counters that failed and that no retry
//! made, so that `/readyz`, `/metrics` and the audit can say so.

use crate::{Events, StoreError};

/// How long after a write failed for good the gateway answers `/readyz` with
/// that failure.
const FAULT_READY_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Writes of counters that failed and that no retry made, per set: logged,
/// and also counted in `/metrics` (`gateway_store_write_faults`), listed in the
/// audit's findings and, for a failure no retry can mend (a record too big,
/// say) in the last [`FAULT_READY_WINDOW`], answered by `/readyz`.
pub struct WriteFaults {
    by_set: std::sync::Mutex<std::collections::BTreeMap<String, Fault>>,
    events: Events,
}

struct Fault {
    count: u64,
    last_error: StoreError,
    last_at: std::time::SystemTime,
    last_failed_at: Option<std::time::Instant>,
}

impl WriteFaults {
    pub fn new(events: Events) -> Self {
        Self {
            by_set: std::sync::Mutex::default(),
            events,
        }
    }

    pub fn record(&self, set: &str, error: &StoreError) {
        let failed = matches!(error, StoreError::Failed(_));
        self.events.write_fault(set, failed);
        let mut by_set = self.lock();
        let fault = by_set.entry(set.to_owned()).or_insert_with(|| Fault {
            count: 0,
            last_error: error.clone(),
            last_at: std::time::SystemTime::now(),
            last_failed_at: None,
        });
        fault.count += 1;
        fault.last_error = error.clone();
        fault.last_at = std::time::SystemTime::now();
        if failed {
            fault.last_failed_at = Some(std::time::Instant::now());
        }
    }

    /// One line per set with faults since the gateway started.
    pub fn findings(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(set, fault)| {
                let ago = fault.last_at.elapsed().unwrap_or_default().as_secs();
                format!(
                    "{} write(s) to set {set} failed and were not retried (counts there may be short); the last, {ago} s ago: {}",
                    fault.count, fault.last_error
                )
            })
            .collect()
    }

    /// The last write that failed for good, if it was recent.
    pub fn check(&self) -> Result<(), StoreError> {
        let by_set = self.lock();
        match by_set.iter().find(|(_, fault)| {
            fault
                .last_failed_at
                .is_some_and(|at| at.elapsed() < FAULT_READY_WINDOW)
        }) {
            Some((set, fault)) => Err(StoreError::Failed(format!(
                "a write to set {set} failed and no retry can mend it: {}",
                fault.last_error
            ))),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Fault>> {
        self.by_set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
