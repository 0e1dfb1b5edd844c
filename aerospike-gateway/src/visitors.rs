//! Unique visitors without storing anyone.
//!
//! A visitor is the client address and User-Agent of a page hit. Before a hit is
//! queued, the gateway replaces them with a keyed BLAKE3 hash of (counter key,
//! address, User-Agent) under the day's secret, and only that hash reaches the
//! store, which feeds it to the day's HyperLogLog and keeps nothing else. The
//! secret is random, shared by every gateway through the store, and deleted once
//! the day is over: after that, not even the gateways can tell whether a given
//! person was among a day's visitors. The counter key is part of the hash, so one
//! person's visits to two counters cannot be linked either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use counter_api::{Day, EpochMillis, PageHit};

use counter_store::pages::{PageHitToCount, VisitorHash, VisitorSalt};
use counter_store::{StoreError, VisitorSalts};

pub struct VisitorHasher<S> {
    store: Arc<S>,
    salts: Mutex<HashMap<Day, VisitorSalt>>,
}

impl<S: VisitorSalts> VisitorHasher<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self {
            store,
            salts: Mutex::new(HashMap::new()),
        }
    }

    /// The hit as the store counts it: its visitor, if any, hashed with the
    /// secret of the hit's day. A hit stamped outside yesterday..tomorrow (by the
    /// gateway's clock) is counted, but not as a visitor: its day's secret is gone
    /// or not due, and making one would keep a secret longer than a day.
    pub async fn prepare(&self, hit: PageHit, today: Day) -> Result<PageHitToCount, StoreError> {
        let day = Day::of(hit.ts);
        let recent = day >= today.minus(1) && day <= today.plus(1);
        let visitor = match hit.visitor {
            Some(visitor) if recent => {
                let salt = self.salt(day, today).await?;
                Some(VisitorHash::of(&salt, &hit.key, &visitor))
            }
            _ => None,
        };
        Ok(PageHitToCount {
            id: hit.id,
            key: hit.key,
            ts: hit.ts,
            visitor,
        })
    }

    async fn salt(&self, day: Day, today: Day) -> Result<VisitorSalt, StoreError> {
        if let Some(salt) = self.salts.lock().expect("salt cache").get(&day) {
            return Ok(*salt);
        }
        let salt = self.store.visitor_salt(day, today.minus(1)).await?;
        let mut salts = self.salts.lock().expect("salt cache");
        salts.retain(|d, _| *d >= today.minus(1));
        salts.insert(day, salt);
        Ok(salt)
    }
}

/// Today by the gateway's clock.
pub fn today() -> Day {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Day::of(EpochMillis::new(millis as i128).expect("the gateway's clock is between 2001 and 2100"))
}
