//! Sources bring alarms in. Owns the bytes → alarm step ([`decode`]), the
//! network element → site step ([`elements`]), the dead-letter record for
//! what cannot be decoded or placed, and the [`AlarmSource`]
//! boundary the topology reads from ([`kafka::KafkaSource`] in production,
//! a vector in unit tests).

pub mod decode;
pub mod dlr;
pub mod elements;
#[cfg(test)]
mod feed_fixtures;
pub mod kafka;
pub mod tmf642;
pub mod ves;

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// What the alarm source refuses before correlation (to the dead-letter
/// topic, with the reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Larger records are dead-lettered unread. Default 1 MiB.
    pub max_record_bytes: usize,
    /// Alarms whose event time is further ahead of the clock are
    /// dead-lettered. Default 5m.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// `[[ingest.elements]]`: rules that find the site in a network
    /// element's name, per input format, tried in order after the element
    /// table (`sources::elements`). Default none.
    pub elements: Vec<crate::sources::elements::ElementRule>,
    /// How far out of event-time order alarms may arrive and still be
    /// applied in order (`transforms::order`): an alarm is applied once
    /// every assigned partition has shown an alarm this much later, so
    /// the incidents do not depend on batching or partition interleaving.
    /// Later arrivals are applied at once, in arrival order, and counted
    /// (`outage_alarms_late_total`). It delays declarations and
    /// resolutions by as much (wall clock; event-time latencies are unchanged).
    /// Default 30s ([`IngestConfig::DEFAULT_LATENESS`]): above the delivery
    /// jitter of NMS feeds (the simulator's is 20 s).
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// A partition that delivered nothing for this long (wall clock) no
    /// longer holds the watermark back; when every partition is that idle,
    /// the watermark follows the wall clock minus `lateness`, so timers
    /// still run on an idle feed. Default 10s ([`IngestConfig::DEFAULT_IDLE_AFTER`]).
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
}

impl IngestConfig {
    pub const DEFAULT_LATENESS: Duration = Duration::from_secs(30);
    pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(10);
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_record_bytes: 1 << 20,
            max_future: Duration::from_secs(300),
            elements: Vec::new(),
            lateness: Self::DEFAULT_LATENESS,
            idle_after: Self::DEFAULT_IDLE_AFTER,
        }
    }
}

impl IngestConfig {
    pub fn limits(&self) -> crate::sources::decode::Limits {
        crate::sources::decode::Limits {
            max_bytes: self.max_record_bytes,
            max_future: chrono::Duration::from_std(self.max_future).unwrap_or(chrono::Duration::MAX),
        }
    }
}

/// One raw record as the feed delivered it, with its position so it can be
/// acknowledged, and dead-lettered by reference.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("alarm source: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Where alarms come from. `ack` is called only after the effect of every
/// record up to and including the acknowledged ones is durable downstream.
pub trait AlarmSource: Send {
    /// Up to `max` records; waits at most `wait` for the first one and
    /// returns an empty batch when the feed is idle. Must be cancel-safe:
    /// the pipeline drops this future when its log writer answers first,
    /// and a record taken from the feed by a dropped call must come back
    /// in the next one, or its alarm is lost (and its offset later stored
    /// past by the records after it).
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<SourceRecord>, SourceError>> + Send;

    /// Mark these records done (their offsets may be committed).
    fn ack(&mut self, records: &[SourceRecord]) -> Result<(), SourceError>;

    /// Commit what was acknowledged now (on shutdown).
    fn commit(&mut self) -> Result<(), SourceError>;

    /// Before the reader is dropped on shutdown (after `commit`): a group
    /// consumer mid-rebalance first waits, boundedly, for its assignment,
    /// so that it leaves a settled group (see `KafkaSource::leave`).
    fn leave(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The `(topic, partition)`s assigned to this reader now: one that has
    /// delivered nothing yet holds the watermark back for a while
    /// (`transforms::order`). Empty when not known.
    fn assigned(&self) -> Vec<(String, i32)> {
        Vec::new()
    }

    /// Whether the reader waits for its partitions: a group consumer before
    /// its first assignment, or between a revocation and the next. Which
    /// partitions it will read, and how old their backlog is, is unknown
    /// then, so the watermark stays where it is (`transforms::order`).
    fn awaiting_assignment(&self) -> bool {
        false
    }

    /// What the source knows of its feed (`/metrics`, `/readyz`).
    fn health(&self) -> Health {
        Health::default()
    }
}

/// A source's view of its feed (published on [`crate::runtime::Stats`]).
pub use crate::runtime::stats::Health;
