//! Batch ids and the `applied` maps: how a counter record remembers which
//! batches were counted into it, so that a repeated write is filtered out.

use std::time::Duration;

use aerospike::expressions as exp;
use aerospike::operations::maps::{self, MapOrder};
use aerospike::{Client, MapPolicy, MapReturnType, MapWriteFlags, Value, WritePolicy, operations};
use tokio::time::Instant;

use crate::client::millis_until;
use crate::layout::APPLIED_BIN;

/// How long one writer id is used. Entries of writers older than
/// [`APPLIED_RETENTION`] are dropped from the counters' maps, so a live writer
/// must never get that old.
const WRITER_LIFETIME: Duration = Duration::from_secs(600);

/// How long a writer's entry stays in a counter's `applied` map. A batch must be
/// finished well within this (the sweeper finishes any batch within seconds), or
/// a very late repeat of it could count it again.
const APPLIED_RETENTION: Duration = Duration::from_secs(3600);

/// The maps this module writes: ordered by key, so a writer's entries sit
/// together and expired writers are one range at the front.
pub(crate) const KEY_ORDERED: MapPolicy =
    MapPolicy::new(MapOrder::KeyOrdered, MapWriteFlags::DEFAULT);

/// Names one gateway's batches, in the order it counts them.
pub(crate) struct Writer {
    /// A UUID v7 in simple form: its first 12 hex digits are its birth in ms,
    /// which is what lets counters drop the entries of expired writers.
    id: String,
    born: std::time::Instant,
    next: u64,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self {
            id: uuid::Uuid::now_v7().simple().to_string(),
            born: std::time::Instant::now(),
            next: 1,
        }
    }

    pub(crate) fn next_batch(&mut self) -> BatchId {
        if self.born.elapsed() >= WRITER_LIFETIME {
            *self = Self::new();
        }
        let batch = BatchId {
            writer: self.id.clone(),
            seq: self.next,
        };
        self.next += 1;
        batch
    }

    /// The last batch is left to the sweeper: later batches must not look like
    /// they come after it, or the sweeper would take it for counted.
    pub(crate) fn abandon(&mut self) {
        *self = Self::new();
    }
}

/// `<writer>:<seq>`, with `seq` zero-padded so that key order is batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchId {
    writer: String,
    seq: u64,
}

impl BatchId {
    pub(crate) fn parse(key: &str) -> Option<Self> {
        let (writer, seq) = key.split_once(':')?;
        let valid = writer.len() == 32 && writer.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then_some(())?;
        Some(Self {
            writer: writer.to_owned(),
            seq: seq.parse().ok()?,
        })
    }

    pub(crate) fn key(&self) -> String {
        format!("{}:{:012}", self.writer, self.seq)
    }

    /// The `applied` keys of this batch and of the writer's later batches.
    pub(crate) fn this_and_later(&self) -> (String, String) {
        (self.key(), format!("{};", self.writer))
    }

    /// The `applied` keys of the writer's earlier batches.
    fn earlier(&self) -> (String, String) {
        (format!("{}:", self.writer), self.key())
    }

    /// The `applied` key of a further value the batch keeps beside its own
    /// entry (a day's count after it, say): it sorts right after the batch's
    /// own entry, before the writer's next batch, so both ranges above cover it.
    pub(crate) fn entry_for(&self, what: &str) -> String {
        format!("{}|{what}", self.key())
    }

    /// The `applied` keys of this batch: its own entry and those of
    /// [`BatchId::entry_for`].
    pub(crate) fn own_entries(&self) -> (String, String) {
        (self.key(), format!("{}}}", self.key()))
    }

    /// Whether this batch is in a counter whose `applied` map held the keys
    /// `applied` when it was read at `read_at`: its entry, or a later batch of
    /// its writer (which replaced it, and comes only after it is counted), is
    /// there; or its writer is old enough that some gateway may have dropped
    /// its entries, every batch of it being finished long before (a writer
    /// lives [`WRITER_LIFETIME`], its batches are finished within seconds).
    /// A young writer's missing batch was not counted there as of the read.
    pub(crate) fn counted_in(
        &self,
        applied: &std::collections::BTreeSet<String>,
        read_at: std::time::SystemTime,
    ) -> bool {
        let (from, to) = self.this_and_later();
        if applied.range(from..to).next().is_some() {
            return true;
        }
        // Entries are dropped by the clock of whichever gateway writes the
        // counter next: half the retention leaves room for clocks apart.
        let surely_kept_since = read_at
            .checked_sub(APPLIED_RETENTION / 2)
            .unwrap_or(std::time::UNIX_EPOCH);
        self.writer_born()
            .is_none_or(|born| born < surely_kept_since)
    }

    /// When the writer was born: its id's first 12 hex digits, in ms.
    fn writer_born(&self) -> Option<std::time::SystemTime> {
        let ms = u64::from_str_radix(self.writer.get(..12)?, 16).ok()?;
        Some(std::time::UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// The filter that lets a counter's write through only while neither this
    /// batch nor a later one of its writer is in the record's `applied` map.
    pub(crate) fn not_counted_yet(&self) -> exp::Expression {
        let (from, to) = self.this_and_later();
        exp::or(vec![
            exp::not(exp::bin_exists(APPLIED_BIN)),
            exp::eq(
                exp::maps::get_by_key_range(
                    MapReturnType::COUNT,
                    Some(exp::string_val(from)),
                    Some(exp::string_val(to)),
                    exp::map_bin(APPLIED_BIN),
                    &[],
                ),
                exp::int_val(0),
            ),
        ])
    }

    /// The ops, after the counter's own, that record this batch in the
    /// record's `applied` map: each `(entry, value)` (the value an expression
    /// read after the counter's ops, such as the total they left), then the
    /// writer's earlier entries and those of expired writers go (neither range
    /// holds this batch's entries).
    pub(crate) fn record_applied(
        &self,
        entries: impl IntoIterator<Item = (String, exp::Expression)>,
    ) -> Vec<operations::Operation> {
        let mut entries = entries.into_iter().peekable();
        let mut ops = Vec::new();
        if let Some((first, _)) = entries.peek() {
            // A put first: it creates the map if the bin is missing, which an
            // expression cannot.
            ops.push(maps::put(
                &KEY_ORDERED,
                APPLIED_BIN,
                Value::from(first.clone()),
                Value::from(0),
            ));
        }
        for (entry, value) in entries {
            ops.push(operations::exp::write_exp(
                APPLIED_BIN,
                exp::maps::put(
                    &KEY_ORDERED,
                    exp::string_val(entry),
                    value,
                    exp::map_bin(APPLIED_BIN),
                    &[],
                ),
                operations::exp::ExpWriteFlags::DEFAULT,
            ));
        }
        let (earlier_from, earlier_to) = self.earlier();
        ops.push(maps::remove_by_key_range(
            APPLIED_BIN,
            Value::Nil,
            Value::from(expired_writers_below()),
            MapReturnType::NONE,
        ));
        ops.push(maps::remove_by_key_range(
            APPLIED_BIN,
            Value::from(earlier_from),
            Value::from(earlier_to),
            MapReturnType::NONE,
        ));
        ops
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// The `applied` keys of writers born before the retention window: every key
/// below this one. Writer ids start with their birth in ms, in hex.
fn expired_writers_below() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let cutoff = now.saturating_sub(APPLIED_RETENTION).as_millis();
    format!("{cutoff:012x}")
}

/// The entry `entry` of the `applied` map of the counter at `key`: the
/// counter after the batch that wrote it, or `None` once a later batch of the
/// writer has replaced it.
pub(crate) async fn applied_entry(
    client: &Client,
    key: &aerospike::Key,
    entry: &str,
    deadline: Instant,
) -> Result<Option<u64>, aerospike::errors::Error> {
    let ops = [maps::get_by_key(
        APPLIED_BIN,
        Value::from(entry.to_owned()),
        MapReturnType::VALUE,
    )];
    let mut policy = WritePolicy::default();
    policy.base_policy.total_timeout = millis_until(deadline);
    let record = client.operate(&policy, key, &ops).await?;
    Ok(match record.bins.get(APPLIED_BIN) {
        Some(Value::Int(after)) => u64::try_from(*after).ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_order_by_writer_then_seq() {
        let batch = BatchId {
            writer: "0193a1b2c3d4e5f60718293a4b5c6d7e".into(),
            seq: 42,
        };
        assert_eq!(batch.key(), "0193a1b2c3d4e5f60718293a4b5c6d7e:000000000042");
        assert_eq!(BatchId::parse(&batch.key()), Some(batch.clone()));
        let (from, to) = batch.this_and_later();
        let later = BatchId {
            seq: 1000,
            ..batch.clone()
        }
        .key();
        assert!(from <= later && later < to);
        let (from, to) = batch.earlier();
        let earlier = BatchId {
            seq: 7,
            ..batch.clone()
        }
        .key();
        assert!(from <= earlier && earlier < to && to == batch.key());
        assert_eq!(BatchId::parse("not-a-writer:1"), None);
    }

    #[test]
    fn a_batch_is_counted_where_it_or_a_later_one_of_its_writer_is_applied() {
        let now = std::time::SystemTime::now();
        let batch = Writer::new().next_batch();
        let later = BatchId {
            seq: batch.seq + 1,
            ..batch.clone()
        };
        let set = |keys: &[String]| keys.iter().cloned().collect();
        assert!(batch.counted_in(&set(&[batch.key()]), now));
        assert!(batch.counted_in(&set(&[later.entry_for("2025-11-25")]), now));
        assert!(!batch.counted_in(&set(&[]), now), "a young writer's batch");
        let earlier = BatchId {
            seq: batch.seq.saturating_sub(1),
            ..batch.clone()
        };
        assert!(!later.counted_in(&set(&[earlier.key()]), now));
        // A writer born two hours ago: its entries may be gone, its batches
        // are long counted.
        let old = BatchId::parse(&format!(
            "{:012x}{}:000000000001",
            (now - Duration::from_secs(7200))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            "0".repeat(20)
        ))
        .unwrap();
        assert!(old.counted_in(&set(&[]), now));
    }

    #[test]
    fn expired_writers_sort_below_live_ones() {
        let live = Writer::new().next_batch().key();
        assert!(expired_writers_below() < live);
    }
}
