use std::sync::{Arc, LazyLock};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// Which store the gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh redb file per test.
    Embedded,
    /// The cluster named by `AEROSPIKE_HOSTS`, shared by every test.
    Aerospike,
}

impl Backend {
    /// The seed hosts of the Aerospike cluster under test.
    pub fn aerospike_hosts() -> Option<String> {
        std::env::var("AEROSPIKE_HOSTS")
            .ok()
            .filter(|h| !h.trim().is_empty())
    }

    /// Tests on Aerospike share one `total_hits`, so they take turns: a test that
    /// checks "N concurrent hits answer exactly base+1..base+N" must be alone.
    pub async fn exclusive(self) -> Option<OwnedMutexGuard<()>> {
        static TURN: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));
        match self {
            Backend::Embedded => None,
            Backend::Aerospike => Some(TURN.clone().lock_owned().await),
        }
    }
}
