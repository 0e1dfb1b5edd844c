//! The repair of counters a split cluster or a hand edit left off their hit
//! records: see [the watch](super) for when it runs.

use aerospike::{Bin, Client, ResultCode, Value, operations};
use counter_api::PageDrift;
use counter_store::audit::{self as reconcile, audit_window, compare_pages};
use counter_store::{Audit, Reads, Retention, StoreError};
use tokio::time::Instant;

use crate::AerospikeStore;
use crate::client::{counter_value, unavailable_or_failed};
use crate::layout::*;

impl AerospikeStore {
    /// One repair attempt, of the tutorial's counters and then of the named
    /// counters: `Ok(None)` if hits were being counted meanwhile.
    pub(super) async fn repair(&self, client: &Client) -> Result<Option<String>, StoreError> {
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
            self.inner.events.repaired_hits(delta);
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
                        exp::map_bin(DAYS_BIN.to_owned()),
                        &[],
                    )
                };
                let holds = if drift.counted == 0 {
                    exp::or(vec![
                        exp::not(exp::bin_exists(DAYS_BIN.to_owned())),
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
                        &crate::once::KEY_ORDERED,
                        DAYS_BIN,
                        Value::from(day.clone()),
                        Value::from(delta),
                    ),
                ];
                (self.key(PAGES_SET, key.as_str())?, holds, ops)
            }
            None => {
                let hits = HITS_BIN;
                let holds = if drift.counted == 0 {
                    exp::not(exp::bin_exists(hits.to_owned()))
                } else {
                    exp::eq(
                        exp::int_bin(hits.to_owned()),
                        exp::int_val(drift.counted as i64),
                    )
                };
                let ops = vec![
                    operations::put(&Bin::new(DAY_BIN, Value::from(day.clone()))),
                    operations::add(&Bin::new(hits, Value::from(delta))),
                ];
                (self.key(PAGE_DAYS_SET, &day)?, holds, ops)
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
            self.inner.events.repaired_hits(difference.delta());
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
