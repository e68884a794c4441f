//! One active correlator among the `--role correlator` processes: chosen
//! through Kafka, fenced in the incident log.
//!
//! **Election.** Every correlator-capable process joins the consumer group
//! `<kafka.group_id>-leader` on `outage.control` (a topic that holds no
//! records). The member the group assigns partition 0 leads; the group
//! protocol gives a partition to one member per generation. Which one:
//! brokers name a member `<client.id>-<uuid>`, the range assignor gives
//! partition 0 to the member whose name sorts first, and a member's
//! client id carries its join time (fixed width), so the oldest member
//! leads and a standby that joins does not move the leadership (hosts'
//! clocks apart by more than the members' age difference could move it
//! once; librdkafka's mock cluster names members otherwise). A member that
//! leaves (shutdown) hands over at once; one that dies or stalls is taken
//! out after `session.timeout.ms` (6 s), and the next member is assigned
//! partition 0. A member stops only in a settled group: if it is between
//! a revoke and the next assignment, it keeps polling until assigned (at
//! most 10 s) and then leaves, because Tansu 0.6 keeps a member that
//! leaves a forming group as that group's leader and the others then wait
//! for its assignments for good (BENCHMARKS.md has the experiment).
//!
//! **Deposed.** An assignment without partition 0 (it moved: the session
//! expired, or the group rebalanced it elsewhere) deposes the leader,
//! which stops (exits with [`super::TopologyError::Deposed`]; its
//! supervisor restarts it as a standby). So does a revoke that says the
//! assignment was lost (`assignment_lost`: the session expired under a
//! pause or a cut-off network), even if the group then hands partition 0
//! back: its successor may have marked the log meanwhile, and a leader
//! that went on would write only fenced events.
//!
//! **Fencing.** Election alone cannot stop a leader that was paused (a GC
//! stall, SIGSTOP, a partitioned network) from writing once it wakes,
//! before it learns it was deposed. So the incident log (one partition:
//! one total order) carries who wrote what. A new leader first appends a
//! mark, `{"leader":{"epoch":N,"member":"…"},"mark":true}`, with N one
//! above every mark in the log; then folds the log to its end (its mark
//! included); then stamps every event it writes with the same `leader`.
//! Every reader of the log — the leader's own fold, the standbys, the `api`
//! processes — applies one rule in log order ([`Fence`]): the current
//! leader is the first mark of the highest epoch seen; an event stamped by
//! anyone else is ignored; an unstamped event (`--role all`) counts only
//! before the first mark. A deposed leader's late events land after its
//! successor's mark and are ignored by every reader, the successor
//! included; everything before the mark the successor folded itself. The
//! leader reads the log too ([`superseded`]): a mark that supersedes its
//! own stops it, whatever the group says (a paused leader that wakes may
//! be handed partition 0 again as the oldest member). Two
//! claimants of one epoch: the first mark wins, and the other finds after
//! its fold that the log names someone else, and stops.
//!
//! What fencing does not cover: a paused leader that wakes mid-step may
//! produce the actions of the step it was in before it learns it was
//! deposed (their causes are in the log but ignored). Correlation is a
//! function of the alarms, so the successor plans the same action ids for
//! the same alarms and the sinks drop the repeats; what differs is within
//! that one step.

use crate::kafka::{Broker, BrokerError};
use crate::runtime::Shutdown;
use crate::sources::kafka::{settle_before_leaving, KafkaSource};
use crate::sources::SourceError;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Who writes the incident log: an epoch (one above the previous leader's)
/// and the member that claimed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderId {
    pub epoch: u64,
    pub member: String,
}

impl std::fmt::Display for LeaderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (epoch {})", self.member, self.epoch)
    }
}

/// The fields of a log record the fence reads (besides the event itself).
#[derive(Deserialize)]
struct Stamp {
    #[serde(default)]
    leader: Option<LeaderId>,
    #[serde(default)]
    mark: bool,
}

/// An incident-log record as a leader writes it: the event with its stamp.
#[derive(Serialize)]
pub struct Stamped<'a, T: Serialize> {
    #[serde(flatten)]
    pub event: &'a T,
    pub leader: &'a LeaderId,
}

/// A leader's mark, the first thing it writes.
pub fn mark(leader: &LeaderId, at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    // Our own types always serialize.
    serde_json::to_vec(&serde_json::json!({ "leader": leader, "mark": true, "at": at })).unwrap_or_default()
}

/// What the fence makes of one log record.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// An event to apply.
    Event,
    /// A leader's mark (the current leader may have changed).
    Mark,
    /// An event by someone who does not lead (any more): not applied.
    Ignore,
}

/// The readers' rule, in log order: see the module docs.
#[derive(Debug, Default, Clone)]
pub struct Fence {
    current: Option<LeaderId>,
    /// Events ignored so far (a deposed leader's late writes).
    pub ignored: u64,
}

impl Fence {
    pub fn admit(&mut self, record: &[u8]) -> Admit {
        // Only records a leader wrote carry the key; the rest need no parse.
        let stamp = if record.windows(8).any(|w| w == b"\"leader\"") {
            serde_json::from_slice::<Stamp>(record).ok()
        } else {
            None
        };
        let (leader, mark) = stamp.map_or((None, false), |s| (s.leader, s.mark));
        match (leader, mark) {
            (Some(l), true) => {
                if self.current.as_ref().is_none_or(|c| l.epoch > c.epoch) {
                    self.current = Some(l);
                }
                Admit::Mark
            }
            (leader, _) => {
                if leader == self.current {
                    Admit::Event
                } else {
                    self.ignored += 1;
                    Admit::Ignore
                }
            }
        }
    }

    /// The leader the log names now.
    pub fn current(&self) -> Option<&LeaderId> {
        self.current.as_ref()
    }

    /// The epoch a new leader claims: one above every mark seen.
    pub fn next_epoch(&self) -> u64 {
        self.current.as_ref().map_or(1, |c| c.epoch + 1)
    }
}

/// Whether the log's marks so far (folded into `fence`) name a leader
/// other than `me` with an epoch at least `me`'s: a later epoch, or a rival
/// whose mark of the same epoch came first.
pub fn supersedes<'f>(fence: &'f Fence, me: &LeaderId) -> Option<&'f LeaderId> {
    fence.current().filter(|c| *c != me && c.epoch >= me.epoch)
}

/// Follows the incident log for as long as this process leads (`log`
/// reads on from where `fence` was folded to) and returns the leader of
/// the first mark that supersedes `me`. The group alone cannot depose a
/// paused leader that wakes and rejoins (it may even be handed partition 0
/// again); the log's marks can.
pub async fn superseded(mut log: KafkaSource, mut fence: Fence, me: LeaderId) -> Result<LeaderId, SourceError> {
    loop {
        for rec in log.next_batch(1024, std::time::Duration::from_secs(1)).await? {
            // Marks are rare and small; events need no parse here.
            if !rec.payload.windows(11).any(|w| w == b"\"mark\":true") || fence.admit(&rec.payload) != Admit::Mark {
                continue;
            }
            if let Some(by) = supersedes(&fence, &me) {
                return Ok(by.clone());
            }
        }
    }
}

/// Sets the leading flag from the group's assignments, and whether the
/// group is settled (an assignment received since the last revoke).
struct ElectionContext {
    topic: String,
    leading: watch::Sender<bool>,
    settled: watch::Sender<bool>,
    /// Set when this member led and the group took its assignment away
    /// without a rebalance it took part in (its session expired: a pause,
    /// a cut-off network). It never leads again: it rejoins with its old
    /// place in the election, and the process stops.
    lost: Arc<AtomicBool>,
}

impl ClientContext for ElectionContext {}

impl ConsumerContext for ElectionContext {
    // Before the revoke is applied: `assignment_lost` says why it came.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let led = tpl.elements_for_topic(&self.topic).iter().any(|e| e.partition() == 0);
            if led && consumer.assignment_lost() {
                tracing::warn!("correlator election: the session expired while leading (paused or cut off)");
                self.lost.store(true, Ordering::SeqCst);
                self.leading.send_replace(false);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let lead = tpl.elements_for_topic(&self.topic).iter().any(|e| e.partition() == 0);
                self.leading.send_replace(lead && !self.lost.load(Ordering::SeqCst));
                self.settled.send_replace(true);
            }
            // An eager rebalance revokes everything before it assigns anew,
            // whenever a member joins: the leader keeps leading unless the
            // assignment that follows moves partition 0 (and if it does, the
            // successor's mark fences what was written meanwhile).
            Rebalance::Revoke(_) => {
                self.settled.send_replace(false);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "correlator election: rebalance error"),
        }
    }
}

/// An election member's client id: `base` and the join time (microseconds,
/// fixed width), so that member ids (`<client.id>-<uuid>`) sort by age.
fn election_client_id(base: &str, joined_micros: i64) -> String {
    format!("{base}-leader-{:020}", joined_micros.max(0))
}

/// This process's membership in the correlators' election.
pub struct Election {
    member: String,
    leading: watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
}

impl Election {
    /// Join the election; a task keeps the membership (heartbeats,
    /// rebalances) until `shutdown`, when it leaves the group so a standby
    /// takes over at once.
    pub fn join(broker: &Broker, group: &str, topic: &str, mut shutdown: Shutdown) -> Result<Self, BrokerError> {
        let (tx, leading) = watch::channel(false);
        let (settled_tx, settled) = watch::channel(false);
        let lost = Arc::new(AtomicBool::new(false));
        let context =
            ElectionContext { topic: topic.to_string(), leading: tx, settled: settled_tx, lost: lost.clone() };
        let joined = chrono::Utc::now().timestamp_micros();
        let mut config = broker.consumer_config(&format!("{group}-leader"));
        // The range assignor gives partition 0 to the member whose id sorts
        // first, and brokers make a member id `<client.id>-<uuid>`: with
        // the join time (fixed width) in the client id, the oldest member
        // leads, so a standby that joins never deposes the leader.
        let base = config.get("client.id").unwrap_or("outaged").to_string();
        config.set("client.id", election_client_id(&base, joined));
        let consumer: StreamConsumer<ElectionContext> = config
            .set("enable.auto.commit", "false")
            .create_with_context(context)
            .map_err(|e| BrokerError::Kafka { context: "joining the correlator election".into(), source: e })?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| BrokerError::Kafka { context: "joining the correlator election".into(), source: e })?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.requested() => break,
                    // No records: polling serves the group's rebalances.
                    r = consumer.recv() => if let Err(e) = r {
                        if crate::kafka::is_transient(&e) {
                            crate::kafka::note_retry("election", &e);
                        } else {
                            tracing::error!(error = %e, "correlator election");
                        }
                    }
                }
            }
            // Leave only a settled group (see the module docs).
            settle_before_leaving(&consumer, || *settled.borrow(), "election").await;
            consumer.unsubscribe();
            drop(consumer);
        });
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        let member = format!("{host}-{}-{joined}", std::process::id());
        Ok(Election { member, leading, lost })
    }

    /// This process's name in marks and logs.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Resolves once this process is assigned the leadership.
    pub async fn elected(&self) {
        let mut rx = self.leading.clone();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// Whether this process lost the leadership with its session (paused
    /// or cut off) rather than to a rebalance.
    pub fn session_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Resolves once this process is no longer the leader.
    pub async fn deposed(&self) {
        let mut rx = self.leading.clone();
        let _ = rx.wait_for(|l| !*l).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_member_ids_sort_by_join_time_whatever_their_uuid() {
        // A microsecond apart across a power of ten, then a day later.
        let older = format!("{}-ffffffff", election_client_id("outaged", 999_999_999));
        let newer = format!("{}-00000000", election_client_id("outaged", 1_000_000_000));
        let newest = format!("{}-00000000", election_client_id("outaged", 1_000_086_400_000_000));
        assert!(older < newer && newer < newest, "{older} {newer} {newest}");
    }

    fn leader(epoch: u64, member: &str) -> LeaderId {
        LeaderId { epoch, member: member.into() }
    }

    #[test]
    fn a_leader_is_superseded_by_a_later_epoch_or_a_rival_first_at_its_own() {
        let (me, them) = (leader(2, "me"), leader(2, "them"));
        let mut f = Fence::default();
        f.admit(&mark(&leader(1, "old"), chrono::Utc::now()));
        assert_eq!(supersedes(&f, &me), None, "an older leader's mark");
        f.admit(&mark(&me, chrono::Utc::now()));
        assert_eq!(supersedes(&f, &me), None, "its own");
        f.admit(&mark(&them, chrono::Utc::now()));
        assert_eq!(supersedes(&f, &me), None, "a rival of the same epoch after it: the first mark wins");
        f.admit(&mark(&leader(3, "next"), chrono::Utc::now()));
        assert_eq!(supersedes(&f, &me), Some(&leader(3, "next")), "a successor");
        let mut f = Fence::default();
        f.admit(&mark(&them, chrono::Utc::now()));
        f.admit(&mark(&me, chrono::Utc::now()));
        assert_eq!(supersedes(&f, &me), Some(&them), "a rival of the same epoch before it");
    }

    fn event(by: Option<&LeaderId>) -> Vec<u8> {
        let ev = serde_json::json!({ "incident_id": "INC-1", "seq": 1, "message": "\"leader\"" });
        match by {
            Some(l) => serde_json::to_vec(&Stamped { event: &ev, leader: l }).unwrap(),
            None => serde_json::to_vec(&ev).unwrap(),
        }
    }

    #[test]
    fn the_log_names_one_writer_and_late_writes_of_a_deposed_one_are_ignored() {
        let (a, b) = (leader(1, "a"), leader(2, "b"));
        let at = chrono::Utc::now();
        let mut f = Fence::default();
        assert_eq!(f.admit(&event(None)), Admit::Event, "before any mark, an unstamped (--role all) event counts");
        assert_eq!(f.admit(&mark(&a, at)), Admit::Mark);
        assert_eq!(f.current(), Some(&a));
        assert_eq!(f.admit(&event(Some(&a))), Admit::Event);
        assert_eq!(f.admit(&event(None)), Admit::Ignore, "after a mark, an unstamped event is nobody's");
        assert_eq!(f.next_epoch(), 2);
        assert_eq!(f.admit(&mark(&b, at)), Admit::Mark);
        assert_eq!(f.admit(&event(Some(&a))), Admit::Ignore, "the deposed leader woke and wrote");
        assert_eq!(f.admit(&event(Some(&b))), Admit::Event);
        // A second claimant of epoch 2 lost: its mark changes nothing.
        let c = leader(2, "c");
        assert_eq!(f.admit(&mark(&c, at)), Admit::Mark);
        assert_eq!(f.current(), Some(&b));
        assert_eq!(f.admit(&event(Some(&c))), Admit::Ignore);
        // An old epoch's mark arriving late changes nothing either.
        assert_eq!(f.admit(&mark(&a, at)), Admit::Mark);
        assert_eq!(f.current(), Some(&b));
        assert_eq!(f.ignored, 3);
    }

    #[test]
    fn a_stamped_record_is_still_the_event_it_stamps() {
        let l = leader(3, "m");
        let ev = serde_json::json!({ "incident_id": "INC-1", "seq": 4 });
        let bytes = serde_json::to_vec(&Stamped { event: &ev, leader: &l }).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!((back["incident_id"].as_str(), back["seq"].as_u64()), (Some("INC-1"), Some(4)));
        assert_eq!(back["leader"]["epoch"], 3);
    }
}
