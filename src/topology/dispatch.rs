//! The dispatcher: `outage.actions` → the sinks, in lanes by customer,
//! with quiet-hours holds; any number run in one consumer group, and the
//! once-only state moves with the partitions (`sinks::handover`).

use super::TopologyError;
use crate::config::Config;
use crate::kafka::Broker;
use crate::model::{Action, ActionKind, Channel};
use crate::runtime::{Clock, Shutdown, Stats};
use crate::sinks::deliveries::DeliveryLog;
use crate::sinks::handover::{Handover, Taken};
use crate::sinks::held::HeldNotices;
use crate::sinks::{ActionSink, Delivery, SinkError};
use crate::sources::kafka::KafkaSource;
use crate::sources::AlarmSource as _;
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The actions topic → sinks stage. Any number of these may run in one
/// consumer group; actions are keyed by customer.
///
/// A batch is split into `concurrency` lanes by customer; the lanes run at
/// once, each delivering its actions in topic order (so one customer's
/// "down" is settled before their "restored"). The batch is acknowledged
/// when every lane is done and the sink is flushed.
///
/// Held actions (SMS in quiet hours, data revokes until restoration +
/// grace): an action whose `not_before` is still ahead is parked in
/// [`HeldNotices`] (recorded as `held`) and released through the same lanes
/// when due, ahead of the batch it is released with; a "restored" or
/// "cancelled" for a thread still held withdraws it (`withdrawn_while_held`).
///
/// Partitions move between dispatchers (a rebalance, a crash, scaling out
/// or in): when its partitions change, a dispatcher lets go of the held
/// and parked notices of customers no longer its own, and for each
/// partition it is given reads that partition of the deliveries topic from
/// the start: what went out there is a repeat here, and what was waiting
/// (held, parked) is read back from the actions topic at the offsets its
/// records carry and waits here ([`Dispatcher::take_over`]).
pub struct Dispatcher<A: ActionSink> {
    source: KafkaSource,
    /// For reading the deliveries and actions topics on a takeover.
    broker: Broker,
    actions_topic: String,
    deliveries_topic: String,
    /// The actions topic's partitions (which customer is whose).
    partition_count: usize,
    sink: A,
    lanes: usize,
    held: HeldNotices,
    log: Arc<DeliveryLog>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    /// The partitions the sink was last told it owns (`ActionSink::assigned`).
    assigned: Option<Vec<i32>>,
}

/// Held notices released per round, so a morning's backlog does not make
/// one batch wait for all of it.
const RELEASE_PER_ROUND: usize = 2000;

impl<A: ActionSink> Dispatcher<A> {
    pub fn new(
        broker: &Broker,
        cfg: &Config,
        sink: A,
        log: Arc<DeliveryLog>,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
    ) -> Result<Self, TopologyError> {
        let group = format!("{}-dispatch", cfg.kafka.group_id);
        let source = KafkaSource::subscribe(broker, &group, &cfg.kafka.topics.actions)?.with_stage("actions");
        let held = HeldNotices::open(&cfg.sinks.outbox_dir)?;
        stats.actions_waiting.store(held.len() as u64, Relaxed);
        let topics = &cfg.kafka.topics;
        let partition_count = broker.partitions(&topics.actions)?;
        let deliveries = broker.partitions(&topics.deliveries)?;
        if deliveries != partition_count {
            // Partition p of one must hold the customers of partition p of
            // the other, or a takeover reads the wrong records.
            return Err(crate::runtime::InvalidSetting {
                key: "kafka.topics.deliveries".into(),
                message: format!(
                    "topic {} has {deliveries} partitions and {} has {partition_count}: they must have as many (both keyed by customer)",
                    topics.deliveries, topics.actions
                ),
            }
            .into());
        }
        Ok(Dispatcher {
            source,
            broker: broker.clone(),
            actions_topic: topics.actions.clone(),
            deliveries_topic: topics.deliveries.clone(),
            partition_count,
            sink,
            lanes: cfg.sinks.concurrency.max(1),
            held,
            log,
            clock,
            stats,
            assigned: None,
        })
    }

    /// Report the actions consumer's broker connections on `Stats` (what
    /// `/readyz` reads): for a process whose only consumer this is
    /// (`--role dispatcher`); `on` false leaves it as it is.
    pub fn reporting_health(self, on: bool) -> Self {
        if !on {
            return self;
        }
        let stats = self.stats.clone();
        Dispatcher { source: self.source.reporting_to(stats), ..self }
    }

    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<(), TopologyError> {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::FixedState::with_seed(0);
        loop {
            let batch = tokio::select! {
                _ = shutdown.requested() => {
                    self.source.commit()?;
                    self.source.leave().await;
                    return Ok(());
                }
                b = self.source.next_batch(2000, Duration::from_millis(200)) => b?,
            };
            // A new assignment (start, rebalance): per-customer state is
            // rebuilt for the partitions now ours before their actions run.
            let mut parts: Vec<i32> = self.source.assigned().into_iter().map(|(_, p)| p).collect();
            parts.sort_unstable();
            if self.assigned.as_ref() != Some(&parts) && (!parts.is_empty() || !batch.is_empty()) {
                self.take_over(&parts).await?;
                self.assigned = Some(parts);
            }
            let now = self.clock.now();
            let mut lanes: Vec<Vec<Action>> = (0..self.lanes).map(|_| Vec::new()).collect();
            let n = self.lanes as u64;
            let lane_of = |a: &Action| (hasher.hash_one(&a.customer_id) % n) as usize;
            // Due held notices first: they are older than anything in the batch.
            let released = self.held.take_due(now, RELEASE_PER_ROUND);
            for a in &released {
                lanes[lane_of(a)].push(a.clone());
            }
            let actions: Vec<_> =
                batch.iter().map(|rec| (rec, serde_json::from_slice::<Action>(&rec.payload))).collect();
            // A held or parked record carries its action's offset.
            self.log.positions(
                actions.iter().filter_map(|(rec, a)| Some((a.as_ref().ok()?.action_id.clone(), rec.offset))),
            );
            for (rec, a) in actions {
                match a {
                    Ok(a) => {
                        if let Some(reason) = crate::sinks::notify::planned_skip(&a) {
                            self.skipped(&a, reason, now)?;
                            continue;
                        }
                        if self.park(&a, now)? {
                            continue;
                        }
                        lanes[lane_of(&a)].push(a)
                    }
                    // The payload holds contacts: log the position, not the bytes.
                    Err(e) => {
                        tracing::error!(partition = rec.partition, offset = rec.offset, error = %e, "undecodable action skipped")
                    }
                }
            }
            let (sink, stats, clock) = (&self.sink, &*self.stats, &*self.clock);
            let work = lanes.into_iter().filter(|l| !l.is_empty()).map(|lane| async move {
                for a in &lane {
                    let done = sink.deliver(a).await;
                    count(stats, a, done, clock.now())?;
                }
                Ok::<_, TopologyError>(())
            });
            futures::future::try_join_all(work).await?;
            self.sink.flush().await?;
            self.log.flush().await?;
            self.held.done(released.iter().map(|a| a.action_id.as_str()))?;
            self.held.flush()?;
            self.source.ack(&batch)?;
            self.stats.actions_waiting.store(self.held.len() as u64, Relaxed);
            self.stats.actions_dispatched.fetch_add(batch.len() as u64, Relaxed);
        }
    }

    /// The partitions are now `parts`: let go of the customers of the
    /// others, and take over those just given (all of them at the start):
    /// read their deliveries from the start ([`Taken`]), read what was
    /// waiting back from the actions topic, hold what was held, and give
    /// the sinks the rest ([`ActionSink::assigned`]).
    async fn take_over(&mut self, parts: &[i32]) -> Result<(), TopologyError> {
        let started = Instant::now();
        let given: Vec<i32> = match &self.assigned {
            Some(before) => parts.iter().copied().filter(|p| !before.contains(p)).collect(),
            None => parts.to_vec(),
        };
        let mut h = Handover::of(parts.to_vec(), self.partition_count);
        let let_go = self.held.retain(|c| h.owns(c))?;
        let (mut held, mut lost, mut records) = (0, 0, 0);
        if !given.is_empty() {
            let (broker, deliveries, actions) =
                (self.broker.clone(), self.deliveries_topic.clone(), self.actions_topic.clone());
            let read = given.clone();
            let (taken, waiting) =
                tokio::task::spawn_blocking(move || read_back(&broker, &deliveries, &actions, &read)).await??;
            records = taken.records;
            lost = taken.waiting.len().saturating_sub(waiting.len());
            for a in waiting {
                match taken.waiting.get(&a.action_id).map(|w| w.parked_at) {
                    Some(Some(parked_at)) => h.parked.push((a, parked_at)),
                    Some(None) => held += usize::from(self.held.hold(&a)?.is_some()),
                    None => {}
                }
            }
            h.sent = taken.sent;
            h.grants = taken.grants;
        }
        self.held.flush()?;
        self.stats.actions_waiting.store(self.held.len() as u64, Relaxed);
        let parked = h.parked.len();
        self.sink.assigned(&h).await?;
        tracing::info!(
            partitions = ?parts,
            given = ?given,
            records,
            sent = h.sent.len(),
            held,
            parked,
            let_go,
            ms = started.elapsed().as_millis() as u64,
            "took over the partitions' delivery state"
        );
        if lost > 0 {
            tracing::error!(
                lost,
                partitions = ?given,
                "actions waiting on the partitions taken over could not be read back from the actions topic (gone by retention, or recorded by a version that did not note offsets): unless this dispatcher's own journals still hold them, they are not sent"
            );
        }
        Ok(())
    }

    /// Hold `a` for quiet hours, or withdraw the held notices it makes
    /// moot. True when `a` is settled here (held, or skipped with them).
    fn park(&mut self, a: &Action, now: DateTime<Utc>) -> Result<bool, TopologyError> {
        use crate::sinks::deliveries::{DeliveryOutcome, DeliveryRecord};
        if matches!(a.kind, ActionKind::Restored | ActionKind::Cancelled) {
            let mut withdrawn = self.held.withdraw(&a.incident_id.0, &a.customer_id, a.channel)?;
            // The thread's "down" may be another incident's (one thread per
            // customer): a held one of those is as moot.
            if let Some((opener, ..)) = a.follows.as_deref().and_then(Action::parse_key) {
                if opener != a.incident_id.0 {
                    withdrawn.extend(self.held.withdraw(&opener, &a.customer_id, a.channel)?);
                }
            }
            for w in &withdrawn {
                self.log
                    .record(&DeliveryRecord::of(w, "", 0, DeliveryOutcome::Skipped).because("withdrawn_while_held"))?;
                count(&self.stats, w, Ok(Delivery::Skipped("withdrawn_while_held")), now)?;
            }
            if withdrawn.iter().any(|w| w.kind == ActionKind::Down) {
                // Nobody woke them for the "down": no follow-up either.
                self.log.record(&DeliveryRecord::of(a, "", 0, DeliveryOutcome::Skipped).because("not_told_down"))?;
                count(&self.stats, a, Ok(Delivery::Skipped("not_told_down")), now)?;
                return Ok(true);
            }
        }
        if !self.held.must_wait(a, now) {
            return Ok(false);
        }
        if let Some(until) = self.held.hold(a)? {
            self.log
                .record(&DeliveryRecord::of(a, "", 0, DeliveryOutcome::Held).because(format!("held until {until}")))?;
            self.stats.actions_held.fetch_add(1, Relaxed);
        }
        Ok(true)
    }
}

impl<A: ActionSink> Dispatcher<A> {
    /// Record a notice that is not sent (no contact, opted out) as skipped.
    fn skipped(&self, a: &Action, reason: &'static str, now: DateTime<Utc>) -> Result<(), TopologyError> {
        use crate::sinks::deliveries::{DeliveryOutcome, DeliveryRecord};
        self.log.record(&DeliveryRecord::of(a, "", 0, DeliveryOutcome::Skipped).because(reason))?;
        count(&self.stats, a, Ok(Delivery::Skipped(reason)), now)
    }
}

/// What partitions `parts` of the deliveries topic say (folded), and the
/// waiting actions read back from the actions topic.
fn read_back(
    broker: &Broker,
    deliveries: &str,
    actions: &str,
    parts: &[i32],
) -> Result<(Taken, Vec<Action>), crate::kafka::BrokerError> {
    use crate::sinks::deliveries::DeliveryRecord;
    use std::collections::{BTreeMap, HashSet};
    let settle = Duration::from_millis(300);
    let mut taken = Taken::default();
    let from: BTreeMap<i32, i64> = parts.iter().map(|&p| (p, 0)).collect();
    crate::kafka::read_from(broker, deliveries, Some(&from), settle, |partition, offset, bytes| {
        match serde_json::from_slice::<DeliveryRecord>(bytes) {
            Ok(r) => taken.apply(partition, r),
            Err(e) => tracing::error!(partition, offset, error = %e, "undecodable delivery record skipped"),
        }
    })?;
    let taken = taken.finish();
    let wanted: HashSet<(i32, i64)> = taken.waiting.values().filter_map(|w| Some((w.partition, w.offset?))).collect();
    let from: BTreeMap<i32, i64> = taken.to_read().into_iter().map(|(p, (first, _))| (p, first)).collect();
    let mut waiting = Vec::new();
    crate::kafka::read_from(broker, actions, Some(&from), settle, |partition, offset, bytes| {
        if wanted.contains(&(partition, offset)) {
            match serde_json::from_slice::<Action>(bytes) {
                Ok(a) if taken.waiting.contains_key(&a.action_id) => waiting.push(a),
                Ok(_) => tracing::error!(partition, offset, "the action at a waiting record's offset is another one"),
                Err(e) => tracing::error!(partition, offset, error = %e, "undecodable action skipped"),
            }
        }
    })?;
    Ok((taken, waiting))
}

/// Count what the sink did with one action; an invalid action is logged
/// and skipped, any other sink error stops the dispatcher.
pub(super) fn count(
    stats: &Stats,
    a: &Action,
    d: Result<Delivery, SinkError>,
    now: DateTime<Utc>,
) -> Result<(), TopologyError> {
    match d {
        Ok(Delivery::Done) => {
            let i = Channel::ALL.iter().position(|c| *c == a.channel).unwrap_or(0);
            stats.delivered[i].fetch_add(1, Relaxed);
            if a.channel == Channel::Sms {
                let _ = stats.first_sms.set(Instant::now());
            }
            if a.kind == ActionKind::Down && matches!(a.channel, Channel::Sms | Channel::Email) {
                let first =
                    stats.awaiting_first_notice.lock().unwrap_or_else(|p| p.into_inner()).remove(&a.incident_id);
                if let Some(opened) = first {
                    stats.first_alarm_to_first_notice.observe(now - opened);
                }
            }
        }
        Ok(Delivery::Duplicate) => {
            stats.duplicates.fetch_add(1, Relaxed);
        }
        // Counted by the park queue's gauges; settled later.
        Ok(Delivery::Parked) => {}
        Ok(Delivery::Failed) => {
            stats.notices_failed.fetch_add(1, Relaxed);
        }
        Ok(Delivery::Skipped(reason)) => {
            *stats.notices_skipped.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
        }
        Err(SinkError::Invalid { action_id, message }) => {
            tracing::error!(%action_id, %message, "invalid action skipped");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
