//! Alarms in a total order, whatever the feed's batching: a bounded-lateness
//! watermark across every assigned partition (pure: wall time is a
//! parameter).
//!
//! An alarm is buffered until the watermark passes it, then released in
//! the order (event time, site id, alarm id, raise before clear, partition,
//! offset). The watermark is the least, over the partitions that are not
//! idle, of the latest event time the partition delivered minus
//! `lateness`; a partition assigned but not heard from yet holds it back
//! (its backlog may be older) until it has been silent for `idle_after`.
//! When every partition has been silent for `idle_after` (or none is known
//! and the reorderer is that old), the watermark follows the wall clock
//! minus `lateness`, so an idle feed still lets timers run. It never goes
//! back. While the source waits for its partitions (a group consumer
//! joining or rebalancing, [`Reorder::awaiting`]) the watermark stays: the
//! partitions, and how old their backlog is, are unknown, and taking the
//! wall clock then would make the whole backlog late (on Tansu a group
//! join takes seconds, far above a short `idle_after`). Each partition of
//! the assignment that follows has `idle_after` from then to deliver.
//!
//! An alarm at or below the watermark on arrival is *late*: it is handed
//! back to be applied at once, in arrival order, and counted — the one way
//! arrival order still reaches the incidents. After a restart, a site's
//! alarms at or below the latest raise or clear the restored incident log
//! records for that site (its `floor`) are re-reads of alarms already
//! applied: skipped and counted as replayed, not applied again (a raise
//! the feed repeated, applied after its clear, would open a phantom
//! incident). Per site, not the log's watermark: a partition whose records
//! were read after the others' (idle, or slower) may hold older alarms
//! the log never saw when the process died, and they must still apply.
//!
//! Offsets: a record may be acknowledged only when none of its alarms is
//! still buffered; [`Reorder::marks`] gives, per partition, the last offset
//! before the first record that still has one.

use crate::model::{Alarm, AlarmState};
use crate::sources::SourceRecord;
use chrono::{DateTime, Duration, Utc};
use compact_str::CompactString;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An alarm waiting for the watermark, and the record it came in (for a
/// dead letter, should the correlator refuse it).
#[derive(Debug, Clone)]
pub struct Held {
    pub alarm: Alarm,
    pub rec: Arc<SourceRecord>,
}

/// The release order: event time, site, alarm id, raise before clear;
/// then the record's position, so two copies of one alarm are ordered too.
/// (Ids inline up to 24 bytes: a key allocates nothing for usual ids.)
type Key = (DateTime<Utc>, CompactString, CompactString, bool, i32, i64, u32);

#[derive(Debug, Default)]
struct Part {
    topic: String,
    /// Latest event time the partition delivered.
    max_t: Option<DateTime<Utc>>,
    /// When (monotonic) it last delivered a record, or was first known.
    heard: Option<Mono>,
    /// Whether it ever delivered a record.
    seen: bool,
    /// Last offset read, and last offset handed out as a mark.
    read: i64,
    marked: i64,
    /// Buffered alarms per offset.
    pending: BTreeMap<i64, u32>,
}

/// Monotonic time since an origin the caller picks (idleness is measured
/// on it, not on the wall clock, which tests and replays may hold still).
pub type Mono = std::time::Duration;

pub struct Reorder {
    lateness: Duration,
    idle: Mono,
    /// When the reorderer was first used.
    born: Option<Mono>,
    /// The source waits for its partitions (see [`Reorder::awaiting`]).
    awaiting: bool,
    parts: BTreeMap<i32, Part>,
    buf: BTreeMap<Key, Held>,
    /// Alarms up to here are released; timers may run up to here.
    frontier: DateTime<Utc>,
    /// Per site, the latest alarm time the restored log records: at or
    /// below it, a re-read of that site's alarm.
    floors: foldhash::HashMap<CompactString, DateTime<Utc>>,
    /// Alarms applied out of order (arrived at or below the watermark).
    pub late: u64,
    /// Alarms re-read after a restart, at or below their site's floor.
    pub replayed: u64,
}

fn dur(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

impl Reorder {
    pub fn new(lateness: std::time::Duration, idle_after: std::time::Duration) -> Self {
        Reorder {
            lateness: dur(lateness),
            idle: idle_after,
            born: None,
            awaiting: false,
            parts: BTreeMap::new(),
            buf: BTreeMap::new(),
            frontier: DateTime::UNIX_EPOCH,
            floors: Default::default(),
            late: 0,
            replayed: 0,
        }
    }

    /// After folding the incident log: the watermark starts at its
    /// `watermark`, and a site's alarms at or below the time the log last
    /// records for that site (`sites`) were applied before the restart.
    pub fn restart<'a>(
        &mut self,
        watermark: DateTime<Utc>,
        sites: impl IntoIterator<Item = (&'a CompactString, &'a DateTime<Utc>)>,
    ) {
        self.frontier = self.frontier.max(watermark);
        for (site, &at) in sites {
            let floor = self.floors.entry(site.clone()).or_insert(at);
            *floor = (*floor).max(at);
        }
    }

    /// The watermark: alarms up to it are released, timers run up to it.
    pub fn watermark(&self) -> DateTime<Utc> {
        self.frontier
    }

    /// Alarms waiting for the watermark.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The partitions the source has assigned now (`(topic, partition)`);
    /// one not heard from holds the watermark back for `idle_after`.
    /// After [`Reorder::awaiting`], each of them counts as heard from now.
    pub fn assign(&mut self, partitions: &[(String, i32)], mono: Mono) {
        self.born.get_or_insert(mono);
        let fresh = std::mem::take(&mut self.awaiting);
        for (topic, p) in partitions {
            let part = self.parts.entry(*p).or_insert_with(|| Part { read: -1, marked: -1, ..Part::default() });
            if part.topic.is_empty() {
                part.topic.clone_from(topic);
            }
            if fresh {
                part.heard = Some(mono);
            } else {
                part.heard.get_or_insert(mono);
            }
        }
    }

    /// The source waits for its partitions (a group consumer before its
    /// first assignment, or between a revocation and the next): the
    /// watermark stays where it is until the next [`Reorder::assign`].
    pub fn awaiting(&mut self) {
        self.awaiting = true;
    }

    fn part(&mut self, rec: &SourceRecord, mono: Mono) -> &mut Part {
        let part = self.parts.entry(rec.partition).or_insert_with(|| Part { read: -1, marked: -1, ..Part::default() });
        if part.topic.is_empty() {
            part.topic.clone_from(&rec.topic);
        }
        part.heard = Some(mono);
        part.seen = true;
        part.read = part.read.max(rec.offset);
        part
    }

    /// A record was read (whatever it held: dead letters too).
    pub fn read(&mut self, rec: &SourceRecord, mono: Mono) {
        self.born.get_or_insert(mono);
        self.part(rec, mono);
    }

    /// One alarm of `rec`: buffered, or skipped as a re-read of an alarm
    /// the restored log accounts for (None); or handed back to be applied
    /// at once because the watermark has passed it (late).
    pub fn push(&mut self, rec: &Arc<SourceRecord>, n: u32, alarm: Alarm, mono: Mono) -> Option<Alarm> {
        self.born.get_or_insert(mono);
        let t = alarm.event_time;
        let frontier = self.frontier;
        let floor = self.floors.get(alarm.site_id.as_str()).copied();
        let part = self.part(rec, mono);
        part.max_t = Some(part.max_t.map_or(t, |m| m.max(t)));
        if floor.is_some_and(|f| t <= f) {
            // Applied before the restart (a raise repeated since, or a
            // clear, would not be idempotent if applied again).
            self.replayed += 1;
            return None;
        }
        if t <= frontier {
            self.late += 1;
            return Some(alarm);
        }
        let part = self.part(rec, mono);
        *part.pending.entry(rec.offset).or_default() += 1;
        let key = (
            t,
            CompactString::from(alarm.site_id.as_str()),
            CompactString::from(alarm.alarm_id.as_str()),
            alarm.state == AlarmState::Cleared,
            rec.partition,
            rec.offset,
            n,
        );
        self.buf.insert(key, Held { alarm, rec: rec.clone() });
        None
    }

    /// Where the watermark may go at `wall` (never back: see [`Reorder::release`]).
    fn candidate(&self, wall: DateTime<Utc>, mono: Mono) -> Option<DateTime<Utc>> {
        if self.awaiting {
            return None;
        }
        let back = |t: DateTime<Utc>| t.checked_sub_signed(self.lateness).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let awake = |heard: Option<Mono>| heard.is_some_and(|h| mono.saturating_sub(h) < self.idle);
        let (mut any, mut least) = (false, None::<DateTime<Utc>>);
        for p in self.parts.values().filter(|p| awake(p.heard)) {
            any = true;
            match (p.seen, p.max_t) {
                (true, Some(t)) => least = Some(least.map_or(back(t), |l| l.min(back(t)))),
                // Delivered records but no alarm (dead letters): no say.
                (true, None) => {}
                // Assigned but silent so far: its backlog may be older
                // than anything seen.
                (false, _) => return None,
            }
        }
        if any {
            return least;
        }
        // Nobody awake: the wall clock, once we are that old.
        self.born.filter(|b| mono.saturating_sub(*b) >= self.idle).map(|_| back(wall))
    }

    /// Advance the watermark as far as the partitions (and, when all are
    /// idle at `mono`, the wall clock) allow, and take the alarms it
    /// passed, in order.
    pub fn release(&mut self, wall: DateTime<Utc>, mono: Mono) -> Vec<Held> {
        self.born.get_or_insert(mono);
        if let Some(w) = self.candidate(wall, mono) {
            self.frontier = self.frontier.max(w);
        }
        let mut out = Vec::new();
        while let Some(entry) = self.buf.first_entry() {
            if entry.key().0 > self.frontier {
                break;
            }
            let h = entry.remove();
            if let Some(part) = self.parts.get_mut(&h.rec.partition) {
                if let std::collections::btree_map::Entry::Occupied(mut e) = part.pending.entry(h.rec.offset) {
                    *e.get_mut() -= 1;
                    if *e.get() == 0 {
                        e.remove();
                    }
                }
            }
            out.push(h);
        }
        out
    }

    /// Per partition, the last offset whose records have no alarm still
    /// buffered, where it moved since the last call: what may be
    /// acknowledged once the incident events of what was released so far
    /// are durable.
    pub fn marks(&mut self) -> Vec<SourceRecord> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.parts {
            let upto = p.pending.keys().next().map_or(p.read, |first| first - 1);
            if upto > p.marked {
                p.marked = upto;
                out.push(SourceRecord {
                    topic: p.topic.clone(),
                    partition,
                    offset: upto,
                    key: None,
                    payload: Vec::new(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;
    use std::time::Duration as Std;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + Duration::seconds(1_700_000_000 + s)
    }

    fn rec(p: i32, o: i64) -> Arc<SourceRecord> {
        Arc::new(SourceRecord { topic: "a".into(), partition: p, offset: o, key: None, payload: Vec::new() })
    }

    fn alarm(id: &str, site: &str, at: DateTime<Utc>) -> Alarm {
        Alarm {
            alarm_id: id.into(),
            site_id: site.into(),
            state: AlarmState::Raised,
            severity: Severity::Critical,
            probable_cause: "powerProblem".into(),
            event_time: at,
            lat: None,
            lon: None,
            specific_problem: None,
        }
    }

    fn ids(v: &[Held]) -> Vec<&str> {
        v.iter().map(|h| h.alarm.alarm_id.as_str()).collect()
    }

    #[test]
    fn alarms_wait_for_every_assigned_partition_and_come_out_in_order() {
        let mut r = Reorder::new(Std::from_secs(10), Std::from_secs(30));
        let (wall, m) = (t(1000), Std::ZERO);
        r.assign(&[("a".into(), 0), ("a".into(), 1)], m);
        assert!(r.push(&rec(0, 0), 0, alarm("b", "S2", t(100)), m).is_none());
        assert!(r.push(&rec(0, 1), 0, alarm("d", "S2", t(200)), m).is_none());
        // Partition 1 has said nothing yet: nothing is released.
        assert!(r.release(wall, m).is_empty());
        assert_eq!(r.marks().iter().map(|m| m.offset).collect::<Vec<_>>(), Vec::<i64>::new());
        assert!(r.push(&rec(1, 0), 0, alarm("a", "S1", t(100)), m).is_none());
        assert!(r.push(&rec(1, 1), 0, alarm("c", "S1", t(150)), m).is_none());
        // Watermark: min(200, 150) - 10 = 140.
        assert_eq!(ids(&r.release(wall, m)), ["a", "b"]);
        assert_eq!(r.watermark(), t(140));
        let marks: Vec<_> = r.marks().iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(marks, [(0, 0), (1, 0)]);
        // An alarm at or below the watermark is late, handed back.
        assert!(r.push(&rec(1, 2), 0, alarm("z", "S9", t(120)), m).is_some());
        assert_eq!(r.late, 1);
        // Partition 1 goes silent for idle_after: partition 0 alone decides
        // (the wall clock standing still changes nothing).
        let later = m + Std::from_secs(31);
        r.read(&rec(0, 2), later);
        assert_eq!(ids(&r.release(wall, later)), ["c"]);
        assert_eq!(r.watermark(), t(190));
        // Everything silent: the wall clock minus the lateness.
        let idle = later + Std::from_secs(31);
        assert_eq!(ids(&r.release(wall, idle)), ["d"]);
        assert_eq!(r.watermark(), wall - Duration::seconds(10));
        let marks: Vec<_> = r.marks().iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(marks, [(0, 2), (1, 2)]);
    }

    #[test]
    fn a_source_waiting_for_its_partitions_holds_the_watermark() {
        let mut r = Reorder::new(Std::ZERO, Std::from_secs(1));
        let wall = t(1000);
        // A group consumer joining for longer than idle_after: no partition
        // is known, yet the wall clock must not be taken.
        r.awaiting();
        assert!(r.release(wall, Std::ZERO).is_empty());
        assert!(r.release(wall, Std::from_secs(5)).is_empty());
        assert_eq!(r.watermark(), DateTime::UNIX_EPOCH);
        // Assigned at 5 s: partition 1's backlog arrives first, partition
        // 0's (older) within idle_after of the assignment, not of the start.
        r.assign(&[("a".into(), 0), ("a".into(), 1)], Std::from_secs(5));
        let m = Std::from_millis(5500);
        assert!(r.push(&rec(1, 0), 0, alarm("b", "S2", t(200)), m).is_none());
        assert!(r.release(wall, m).is_empty());
        assert!(r.push(&rec(0, 0), 0, alarm("a", "S1", t(100)), m).is_none());
        assert_eq!(ids(&r.release(wall, m)), ["a"]);
        assert_eq!(r.late, 0);
        // A revocation: held again, and a partition assigned anew (here the
        // same one) has idle_after again from its new assignment.
        r.awaiting();
        assert!(r.release(wall, Std::from_secs(60)).is_empty());
        r.assign(&[("a".into(), 0), ("a".into(), 1)], Std::from_secs(60));
        assert!(r.release(wall, Std::from_millis(60_500)).is_empty());
        // Then everything is idle: the wall clock.
        assert_eq!(ids(&r.release(wall, Std::from_secs(62))), ["b"]);
        assert_eq!(r.watermark(), wall);
    }

    #[test]
    fn after_a_restart_re_reads_are_replays_not_late() {
        let mut r = Reorder::new(Std::from_secs(10), Std::from_secs(30));
        let sites = [(CompactString::from("S1"), t(500))];
        r.restart(t(500), sites.iter().map(|(s, t)| (s, t)));
        let (wall, m) = (t(1000), Std::ZERO);
        assert!(r.push(&rec(0, 0), 0, alarm("a", "S1", t(400)), m).is_none());
        assert!(r.push(&rec(0, 1), 0, alarm("b", "S1", t(600)), m).is_none());
        assert_eq!((r.replayed, r.late), (1, 0));
        // Never back, whatever a partition says.
        r.release(wall, m);
        assert_eq!(r.watermark(), t(590));
        assert!(r.release(wall, m).is_empty());
        assert_eq!(r.buffered(), 1);
        // The replay holds no offset back.
        assert_eq!(r.marks().iter().map(|m| m.offset).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn after_a_restart_an_older_alarm_of_a_site_the_log_never_saw_applies() {
        // The log's watermark reached 500 through S1; S2's alarms, on a
        // partition read later, never reached the log before the crash.
        let mut r = Reorder::new(Std::from_secs(10), Std::from_secs(30));
        let sites = [(CompactString::from("S1"), t(500)), (CompactString::from("S2"), t(100))];
        r.restart(t(500), sites.iter().map(|(s, t)| (s, t)));
        let m = Std::ZERO;
        assert!(r.push(&rec(1, 0), 0, alarm("old", "S2", t(100)), m).is_none(), "S2's alarm the log has");
        let late = r.push(&rec(1, 1), 0, alarm("new", "S2", t(300)), m);
        assert_eq!(late.map(|a| a.alarm_id), Some("new".into()), "after S2's last in the log: applied, late");
        let late = r.push(&rec(2, 0), 0, alarm("s3", "S3", t(200)), m);
        assert_eq!(late.map(|a| a.alarm_id), Some("s3".into()), "a site the log never saw: applied, late");
        assert_eq!((r.replayed, r.late), (1, 2));
    }

    #[test]
    fn the_same_time_is_ordered_by_site_then_alarm_then_raise_before_clear() {
        let mut r = Reorder::new(Std::ZERO, Std::from_secs(30));
        let (wall, m) = (t(1000), Std::ZERO);
        let mut clear = alarm("x", "S1", t(5));
        clear.state = AlarmState::Cleared;
        r.push(&rec(0, 0), 0, clear, m);
        r.push(&rec(0, 1), 0, alarm("y", "S1", t(5)), m);
        r.push(&rec(0, 2), 0, alarm("x", "S1", t(5)), m);
        r.push(&rec(0, 3), 0, alarm("a", "S0", t(5)), m);
        // Partition 1 is a second ahead: the watermark is partition 0's 5.
        r.push(&rec(1, 0), 0, alarm("next", "S0", t(6)), m);
        let out = r.release(wall, m);
        let got: Vec<_> = out.iter().map(|h| (h.alarm.alarm_id.as_str(), h.alarm.state)).collect();
        assert_eq!(
            got,
            [
                ("a", AlarmState::Raised),
                ("x", AlarmState::Raised),
                ("x", AlarmState::Cleared),
                ("y", AlarmState::Raised)
            ]
        );
        // Partition 0's offsets are done; partition 1's only one is buffered.
        let marks: Vec<_> = r.marks().iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(marks, [(0, 3)]);
    }
}
