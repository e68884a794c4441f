//! The production [`AlarmSource`] (and the dispatchers' reader of
//! `outage.actions`): a group consumer on one topic that
//! commits only offsets the topology acknowledged (auto-commit of stored
//! offsets, `enable.auto.offset.store=false`), and warns when a partition's
//! offsets jump (the mock cluster silently drops old batches beyond its
//! size limit; DESIGN.md).

use super::{AlarmSource, Health, SourceError, SourceRecord};
use crate::kafka::Broker;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{ClientContext, Message, Statistics};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

pub struct KafkaSource {
    consumer: StreamConsumer<LagContext>,
    pub positions: Positions,
}

/// Reads the source's health out of librdkafka's statistics (every
/// [`STATS_EVERY_MS`]): the consumer lag (records on the broker past the
/// offsets we stored, summed over the assigned partitions) and how many
/// brokers the client is connected to; -1 until known.
pub struct LagContext {
    lag: AtomicI64,
    brokers_up: AtomicI64,
}

/// How often librdkafka reports statistics (the lag's freshness).
const STATS_EVERY_MS: &str = "2000";

impl ClientContext for LagContext {
    fn stats(&self, s: Statistics) {
        // Partition -1 is librdkafka's internal "unassigned" one; a lag of
        // -1 means not known yet.
        let lags = s.topics.values().flat_map(|t| t.partitions.iter()).filter(|(p, _)| **p >= 0);
        let known: Vec<i64> = lags.map(|(_, p)| p.consumer_lag_stored).filter(|l| *l >= 0).collect();
        if !known.is_empty() {
            self.lag.store(known.iter().sum(), Relaxed);
        }
        // Bootstrap entries have node id -1; the cluster's brokers do not.
        let up = s.brokers.values().filter(|b| b.nodeid >= 0 && b.state == "UP").count();
        self.brokers_up.store(up as i64, Relaxed);
    }
}

impl ConsumerContext for LagContext {}

/// Next offset we expect per partition, to detect jumps.
#[derive(Debug, Default)]
pub struct Positions {
    next: HashMap<i32, i64>,
    /// Offset jumps seen (records lost before we read them).
    pub gaps: u64,
}

impl KafkaSource {
    pub fn subscribe(broker: &Broker, group: &str, topic: &str) -> Result<Self, SourceError> {
        let consumer: StreamConsumer<LagContext> = broker
            .consumer_config(group)
            .set("statistics.interval.ms", STATS_EVERY_MS)
            .create_with_context(LagContext { lag: AtomicI64::new(-1), brokers_up: AtomicI64::new(-1) })?;
        consumer.subscribe(&[topic])?;
        Ok(KafkaSource { consumer, positions: Positions::default() })
    }

    /// The lag and broker connections, as far as librdkafka knows.
    pub fn health(&self) -> Health {
        let c = self.consumer.context();
        Health {
            lag: u64::try_from(c.lag.load(Relaxed)).ok(),
            brokers_up: u64::try_from(c.brokers_up.load(Relaxed)).ok(),
        }
    }
}

impl Positions {
    fn take(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> SourceRecord {
        let (p, o) = (m.partition(), m.offset());
        if let Some(&want) = self.next.get(&p) {
            if o > want {
                self.gaps += 1;
                tracing::warn!(partition = p, expected = want, got = o, "alarm offsets jumped: records were lost");
            }
        }
        self.next.insert(p, o + 1);
        SourceRecord {
            topic: m.topic().to_string(),
            partition: p,
            offset: o,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

impl KafkaSource {
    /// See [`AlarmSource::next_batch`].
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<SourceRecord>, SourceError> {
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(r) => r?,
        };
        let rec = self.positions.take(&first);
        drop(first);
        out.push(rec);
        while out.len() < max {
            // Records already fetched are taken without arming a timer.
            use futures::FutureExt;
            if let Some(r) = self.consumer.recv().now_or_never() {
                out.push(self.positions.take(&r?));
                continue;
            }
            match tokio::time::timeout(Duration::from_millis(2), self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    let rec = self.positions.take(&m);
                    out.push(rec);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Store the offsets of `records` for the next auto-commit.
    pub fn ack(&mut self, records: &[SourceRecord]) -> Result<(), SourceError> {
        let mut last: HashMap<(&str, i32), i64> = HashMap::new();
        for r in records {
            let e = last.entry((r.topic.as_str(), r.partition)).or_insert(r.offset);
            *e = (*e).max(r.offset);
        }
        for ((t, p), o) in last {
            self.consumer.store_offset(t, p, o)?;
        }
        Ok(())
    }
}

impl KafkaSource {
    /// Commit the stored offsets synchronously (shutdown); nothing stored
    /// since the last commit is not an error.
    pub fn commit(&mut self) -> Result<(), SourceError> {
        match self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) | Ok(()) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl AlarmSource for KafkaSource {
    fn commit(&mut self) -> Result<(), SourceError> {
        KafkaSource::commit(self)
    }

    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<SourceRecord>, SourceError> {
        KafkaSource::next_batch(self, max, wait).await
    }

    fn ack(&mut self, records: &[SourceRecord]) -> Result<(), SourceError> {
        KafkaSource::ack(self, records)
    }

    fn health(&self) -> Health {
        KafkaSource::health(self)
    }
}
