//! The production [`AlarmSource`] (and the dispatchers' reader of
//! `outage.actions`): a group consumer on one topic that
//! commits only offsets the topology acknowledged (auto-commit of stored
//! offsets, `enable.auto.offset.store=false`), and warns when a partition's
//! offsets jump (the mock cluster silently drops old batches beyond its
//! size limit; DESIGN.md).
//!
//! It outlives the brokers: a transient error from the consumer (all
//! brokers down, a transport failure, a timeout; `kafka::is_transient`)
//! is counted (`kafka::note_retry`, stage `alarms` or `actions`) and the
//! source keeps polling while librdkafka reconnects with its own backoff;
//! an offset that cannot be stored because the partition went to another
//! member (or back to this one, rejoining after the outage) is left
//! unstored, so its records are read again. Only a permanent error ends
//! the source.

use super::{AlarmSource, Health, SourceError, SourceRecord};
use crate::kafka::{is_transient, note_retry, Broker};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Statistics};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

pub struct KafkaSource {
    consumer: StreamConsumer<LagContext>,
    pub positions: Positions,
    /// Records taken from the consumer for the batch being gathered. They
    /// live here, not in the `next_batch` future, so that a call dropped
    /// mid-batch (the pipeline's `select!` also waits on its log writer)
    /// loses nothing: the next call returns them.
    taken: Vec<SourceRecord>,
    /// What retries are counted as (`alarms`, `actions`).
    stage: &'static str,
}

/// Reads the source's health out of librdkafka's statistics (every
/// [`STATS_EVERY_MS`]): the consumer lag (records on the broker past the
/// offsets we stored, summed over the assigned partitions) and how many
/// brokers the client is connected to; -1 until known.
pub struct LagContext {
    lag: AtomicI64,
    brokers_up: AtomicI64,
    /// Where each report also goes at once (the daemon's `/readyz` and
    /// `outage_brokers_up`), so they follow the brokers even while the
    /// pipeline waits on a write the outage holds up.
    report: std::sync::OnceLock<std::sync::Arc<crate::runtime::Stats>>,
    /// The partitions assigned to us, as the last rebalance left them
    /// (eager protocol: an assignment replaces the last); `None` while a
    /// group member waits for one (before the first, after a revocation).
    assigned: std::sync::Mutex<Option<Vec<(String, i32)>>>,
}

/// How long a group member stopping mid-rebalance waits for its
/// assignment before it leaves anyway: the session timeout (6 s) and a
/// join's round trips.
pub const SETTLE_BEFORE_LEAVING: Duration = Duration::from_secs(10);

/// Keep serving `consumer`'s group protocol (polling; what it delivers is
/// dropped, its offsets never stored) until `settled` says the member has
/// its assignment, for at most [`SETTLE_BEFORE_LEAVING`]. Every group
/// member calls it before it leaves: Tansu 0.6 keeps a member that leaves
/// a forming group as the group's leader, and the others then wait for
/// its assignments for good (BENCHMARKS.md).
pub async fn settle_before_leaving<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    settled: impl Fn() -> bool,
    stage: &str,
) {
    if settled() {
        return;
    }
    tracing::info!(stage, "waiting for the rebalance in progress before leaving the group");
    let t = std::time::Instant::now();
    while !settled() {
        if t.elapsed() >= SETTLE_BEFORE_LEAVING {
            tracing::warn!(stage, waited_s = t.elapsed().as_secs(), "leaving the group mid-rebalance");
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
    }
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
        if let Some(stats) = self.report.get() {
            let health = Health {
                lag: u64::try_from(self.lag.load(Relaxed)).ok(),
                brokers_up: u64::try_from(self.brokers_up.load(Relaxed)).ok(),
            };
            *stats.source.lock().unwrap_or_else(|p| p.into_inner()) = health;
        }
    }
}

impl ConsumerContext for LagContext {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        use rdkafka::consumer::Rebalance;
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => {
                *assigned = Some(tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect());
            }
            Rebalance::Revoke(_) => *assigned = None,
            Rebalance::Error(_) => {}
        }
    }
}

/// Next offset we expect per partition, to detect jumps.
#[derive(Debug, Default)]
pub struct Positions {
    next: HashMap<i32, i64>,
    /// Offset jumps seen (records lost before we read them).
    pub gaps: u64,
}

impl KafkaSource {
    pub fn subscribe(broker: &Broker, group: &str, topic: &str) -> Result<Self, SourceError> {
        let context = LagContext {
            lag: AtomicI64::new(-1),
            brokers_up: AtomicI64::new(-1),
            report: std::sync::OnceLock::new(),
            assigned: Default::default(),
        };
        let consumer: StreamConsumer<LagContext> =
            broker.consumer_config(group).set("statistics.interval.ms", STATS_EVERY_MS).create_with_context(context)?;
        consumer.subscribe(&[topic])?;
        Ok(KafkaSource { consumer, positions: Positions::default(), taken: Vec::new(), stage: "consume" })
    }

    /// Every partition of `topic`, each from the offset after `after`'s
    /// (the beginning where `after` has none), outside any consumer group
    /// and never committed: a reader that follows a whole topic (the NOC
    /// API's read model on an `--role api` process) rather than sharing it.
    pub fn tail(broker: &Broker, topic: &str, after: &HashMap<i32, i64>) -> Result<Self, SourceError> {
        use rdkafka::{Offset, TopicPartitionList};
        let context = LagContext {
            lag: AtomicI64::new(-1),
            brokers_up: AtomicI64::new(-1),
            report: std::sync::OnceLock::new(),
            // No group: never waits for an assignment (none comes).
            assigned: std::sync::Mutex::new(Some(Vec::new())),
        };
        let consumer: StreamConsumer<LagContext> = broker
            .consumer_config("outage-follow")
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", STATS_EVERY_MS)
            .create_with_context(context)?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for p in md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())) {
            let from = after.get(&p).map_or(Offset::Beginning, |&o| Offset::Offset(o + 1));
            tpl.add_partition_offset(topic, p, from)?;
        }
        consumer.assign(&tpl)?;
        Ok(KafkaSource { consumer, positions: Positions::default(), taken: Vec::new(), stage: "follow" })
    }

    /// Count retries as `stage` (`alarms`, `actions`).
    pub fn with_stage(mut self, stage: &'static str) -> Self {
        self.stage = stage;
        self
    }

    /// Publish the health to `stats.source` whenever librdkafka reports it
    /// (every 2 s), not only when the pipeline steps.
    pub fn reporting_to(self, stats: std::sync::Arc<crate::runtime::Stats>) -> Self {
        let _ = self.consumer.context().report.set(stats);
        self
    }

    /// Keep a record (true), or count a transient error (false; logged,
    /// rate-limited); a permanent error is the source's error.
    fn take_owned(&mut self, r: Result<SourceRecord, KafkaError>) -> Result<bool, SourceError> {
        match r {
            Ok(rec) => {
                self.taken.push(rec);
                Ok(true)
            }
            Err(e) if is_transient(&e) => {
                note_retry(self.stage, &e);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
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
    /// See [`AlarmSource::next_batch`]. Cancel-safe: what a dropped call
    /// had taken is kept in `taken` and returned by the next call.
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<SourceRecord>, SourceError> {
        if self.taken.is_empty() {
            // A transient error is an empty batch: the caller's idle work
            // (timers, commands) goes on while librdkafka reconnects.
            match tokio::time::timeout(wait, self.consumer.recv()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(r) => {
                    let r = r.map(|m| self.positions.take(&m));
                    self.take_owned(r)?;
                    if self.taken.is_empty() {
                        return Ok(Vec::new());
                    }
                }
            }
        }
        while self.taken.len() < max {
            // Records already fetched are taken without arming a timer.
            use futures::FutureExt;
            if let Some(r) = self.consumer.recv().now_or_never() {
                let r = r.map(|m| self.positions.take(&m));
                if !self.take_owned(r)? {
                    break;
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_millis(2), self.consumer.recv()).await {
                Ok(r) => {
                    let r = r.map(|m| self.positions.take(&m));
                    if !self.take_owned(r)? {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Ok(std::mem::take(&mut self.taken))
    }

    /// Store the offsets of `records` for the next auto-commit.
    pub fn ack(&mut self, records: &[SourceRecord]) -> Result<(), SourceError> {
        let mut last: HashMap<(&str, i32), i64> = HashMap::new();
        for r in records {
            let e = last.entry((r.topic.as_str(), r.partition)).or_insert(r.offset);
            *e = (*e).max(r.offset);
        }
        for ((t, p), o) in last {
            match self.consumer.store_offset(t, p, o) {
                Ok(()) => {}
                // Not assigned to us (any more, or not yet again after a
                // rejoin): nothing stored, the records will be read again
                // by whoever has the partition; their effects are idempotent.
                Err(KafkaError::StoreOffset(RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition)) => {
                    tracing::warn!(topic = t, partition = p, offset = o, "offset not stored: the partition is not assigned to this consumer now; its records will be read again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl KafkaSource {
    /// A group member's last step before it is dropped (and leaves the
    /// group): [`settle_before_leaving`], so that a dispatcher scaled in, or
    /// a correlator handing over, mid-rebalance does not stall the group.
    /// Records received meanwhile are dropped unacknowledged: their offsets
    /// are not stored, so the partition's next owner reads them.
    pub async fn leave(&mut self) {
        if self.consumer.subscription().map_or(true, |s| s.count() == 0) {
            return;
        }
        settle_before_leaving(&self.consumer, || !self.awaiting_assignment(), self.stage).await;
    }

    /// Commit the stored offsets synchronously (shutdown); nothing stored
    /// since the last commit is not an error.
    pub fn commit(&mut self) -> Result<(), SourceError> {
        match self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) | Ok(()) => {
                Ok(())
            }
            // Shutting down without the brokers: what is not committed is
            // read again on the next start (offsets after effects holds).
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "offsets not committed at shutdown (Kafka unavailable); they will be read again");
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

    fn leave(&mut self) -> impl std::future::Future<Output = ()> + Send {
        KafkaSource::leave(self)
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

    fn assigned(&self) -> Vec<(String, i32)> {
        // From the rebalance callback: asking librdkafka (`assignment`)
        // is a blocking round trip through its group thread.
        self.consumer.context().assigned.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
    }

    fn awaiting_assignment(&self) -> bool {
        self.consumer.context().assigned.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaConfig;
    use std::collections::BTreeSet;

    /// `next_batch` dropped again and again mid-batch (as the pipeline's
    /// `select!` does when its log writer answers first) while records
    /// trickle in: every record still comes out exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_next_batch_loses_no_record() {
        let cfg = KafkaConfig { partitions: 3, ..Default::default() };
        let broker = Broker::connect(&cfg).await.unwrap();
        let topic = cfg.topics.alarms.clone();
        let mut source = KafkaSource::subscribe(&broker, "cancel-safety", &topic).unwrap();
        let producer = broker.producer().unwrap();
        const N: usize = 600;
        let trickle = tokio::spawn(async move {
            for i in 0..N {
                let (key, body) = (format!("k{}", i % 7), format!("r{i}"));
                let rec = rdkafka::producer::FutureRecord::to(&topic).key(&key).payload(&body);
                producer.send(rec, Duration::from_secs(5)).await.unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let mut seen: Vec<(i32, i64, Vec<u8>)> = Vec::new();
        let take = |seen: &mut Vec<_>, batch: Vec<SourceRecord>| {
            seen.extend(batch.into_iter().map(|r| (r.partition, r.offset, r.payload)));
        };
        // Phase 1: every call is given less time than its 2 ms wait for
        // more records, so a batch that runs dry is dropped mid-way.
        let mut dropped = 0;
        while !trickle.is_finished() {
            match tokio::time::timeout(Duration::from_micros(500), source.next_batch(50, Duration::from_secs(1))).await
            {
                Ok(b) => take(&mut seen, b.unwrap()),
                Err(_) => dropped += 1,
            }
        }
        trickle.await.unwrap();
        // Phase 2: drain until the feed is idle.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < N && std::time::Instant::now() < deadline {
            take(&mut seen, source.next_batch(50, Duration::from_millis(500)).await.unwrap());
        }
        assert!(dropped > 0, "the test dropped no call mid-way");
        let unique: BTreeSet<_> = seen.iter().map(|(p, o, _)| (*p, *o)).collect();
        assert_eq!(unique.len(), seen.len(), "a record came out twice");
        let bodies: BTreeSet<_> = seen.iter().map(|(_, _, b)| String::from_utf8(b.clone()).unwrap()).collect();
        assert_eq!(bodies, (0..N).map(|i| format!("r{i}")).collect(), "{dropped} calls dropped");
        assert_eq!(source.positions.gaps, 0);
    }
}
