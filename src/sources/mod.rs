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

use std::future::Future;
use std::time::Duration;

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

    /// The `(topic, partition)`s assigned to this reader now: one that has
    /// delivered nothing yet holds the watermark back for a while
    /// (`transforms::order`). Empty when not known.
    fn assigned(&self) -> Vec<(String, i32)> {
        Vec::new()
    }

    /// What the source knows of its feed (`/metrics`, `/readyz`).
    fn health(&self) -> Health {
        Health::default()
    }
}

/// A source's view of its feed (published on [`crate::runtime::Stats`]).
pub use crate::runtime::stats::Health;
