//! Actions held until their time. Owns `held.jsonl` in the outbox
//! directory and the in-memory queue the dispatcher releases from. An
//! action whose `not_before` is still ahead waits here instead of going to
//! its sink: an SMS planned during a customer's local night (quiet hours)
//! until their morning, a data-grant revoke until restoration + grace.
//!
//! A *thread* is one (incident, customer, channel): a "down", its ETR
//! updates and its "restored"; a grant and its revoke. Order within a thread
//! is kept: while a thread has an action held, later ones of the thread
//! are held behind it; a "restored" or "cancelled" that arrives while the
//! "down" is still held withdraws the whole thread (nobody is woken, nor
//! told at breakfast about an outage already over).
//!
//! Durability: every change is a line (`{"hold": action}` or
//! `{"done": action_id}`), flushed before the dispatcher acknowledges the
//! batch that caused it. Opening folds the file and rewrites it with only
//! the actions still held (a temp file renamed over it), so it holds what
//! is waiting, not history. A release whose `done` line was lost to a crash
//! is released again and the sink drops it as a duplicate.

use super::journal::{recover, Journal};
use super::SinkError;
use crate::model::{Action, Channel};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One line of `held.jsonl`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Hold(Box<Action>),
    Done(String),
}

/// `{incident}/{customer}/{channel}`: the notices whose order matters.
fn thread_of(a: &Action) -> String {
    format!("{}/{}/{}", a.incident_id, a.customer_id, a.channel.as_str())
}

/// Position in the release queue: due time, then arrival order.
type Slot = (DateTime<Utc>, u64);

pub struct HeldNotices {
    out: Journal,
    queue: BTreeMap<Slot, Action>,
    /// action id → its slot, so a replayed hold is not held twice.
    by_id: HashMap<String, Slot>,
    /// thread → the slots of its held notices.
    threads: HashMap<String, Vec<Slot>>,
    next_seq: u64,
}

impl HeldNotices {
    /// Open (and compact) `dir/held.jsonl`. A torn last line, from a crash
    /// mid-write, is dropped; any other bad line names the file and line.
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        let path = dir.join("held.jsonl");
        let io = |source| SinkError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        let mut held: Vec<Action> = Vec::new();
        // A torn last line is cut off here (`journal::recover`), once for
        // every journal; any other bad line names the file and line.
        let lines = recover(&path)?;
        if !lines.is_empty() {
            let mut index: HashMap<String, usize> = HashMap::new();
            for (n, line) in lines.iter().enumerate() {
                match serde_json::from_str::<Line>(line) {
                    Ok(Line::Hold(a)) => {
                        if !index.contains_key(&a.action_id) {
                            index.insert(a.action_id.clone(), held.len());
                            held.push(*a);
                        }
                    }
                    Ok(Line::Done(id)) => {
                        if let Some(i) = index.remove(&id) {
                            held[i].action_id.clear(); // tombstone
                        }
                    }
                    Err(e) => {
                        return Err(SinkError::Invalid {
                            action_id: String::new(),
                            message: format!("{}:{}: {e}", path.display(), n + 1),
                        })
                    }
                }
            }
            held.retain(|a| !a.action_id.is_empty());
            let tmp = dir.join("held.jsonl.tmp");
            let _ = std::fs::remove_file(&tmp);
            let (mut w, _) = Journal::open(tmp.clone())?;
            for a in &held {
                w.append(&Line::Hold(Box::new(a.clone())))?;
            }
            w.sync()?;
            drop(w);
            std::fs::rename(&tmp, &path).map_err(io)?;
        }
        let (out, _) = Journal::open(path)?;
        let mut me =
            HeldNotices { out, queue: BTreeMap::new(), by_id: HashMap::new(), threads: HashMap::new(), next_seq: 0 };
        for a in held {
            me.insert(a);
        }
        Ok(me)
    }

    fn insert(&mut self, a: Action) -> Option<Slot> {
        if self.by_id.contains_key(&a.action_id) {
            return None;
        }
        // Never ahead of a notice of the same thread held before it.
        let thread = thread_of(&a);
        let after = self.threads.get(&thread).and_then(|s| s.iter().map(|s| s.0).max());
        let due = a.not_before.into_iter().chain(after).max().unwrap_or(a.planned_at);
        let slot = (due, self.next_seq);
        self.next_seq += 1;
        self.by_id.insert(a.action_id.clone(), slot);
        self.threads.entry(thread).or_default().push(slot);
        self.queue.insert(slot, a);
        Some(slot)
    }

    fn remove(&mut self, slot: Slot) -> Option<Action> {
        let a = self.queue.remove(&slot)?;
        self.by_id.remove(&a.action_id);
        let thread = thread_of(&a);
        if let Some(slots) = self.threads.get_mut(&thread) {
            slots.retain(|s| *s != slot);
            if slots.is_empty() {
                self.threads.remove(&thread);
            }
        }
        Some(a)
    }

    fn append(&mut self, line: &Line) -> Result<(), SinkError> {
        self.out.append(line)
    }

    /// Should `a` wait? When it is not yet due, or its thread has a notice
    /// waiting (order is kept).
    pub fn must_wait(&self, a: &Action, now: DateTime<Utc>) -> bool {
        a.not_before.is_some_and(|t| t > now) || (!self.threads.is_empty() && self.threads.contains_key(&thread_of(a)))
    }

    /// Hold `a`; returns when it is due, or `None` when it was held already.
    pub fn hold(&mut self, a: &Action) -> Result<Option<DateTime<Utc>>, SinkError> {
        let Some(slot) = self.insert(a.clone()) else { return Ok(None) };
        self.append(&Line::Hold(Box::new(a.clone())))?;
        Ok(Some(slot.0))
    }

    /// Take every held notice of `a`'s thread out (for a "restored" or
    /// "cancelled" that makes them moot). The caller records why.
    pub fn withdraw(&mut self, incident: &str, customer: &str, channel: Channel) -> Result<Vec<Action>, SinkError> {
        if self.threads.is_empty() {
            return Ok(Vec::new());
        }
        let thread = format!("{incident}/{customer}/{}", channel.as_str());
        let slots = self.threads.get(&thread).cloned().unwrap_or_default();
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if let Some(a) = self.remove(slot) {
                self.append(&Line::Done(a.action_id.clone()))?;
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Take up to `max` notices due by `now`, earliest first. Call
    /// [`HeldNotices::done`] once they are delivered.
    pub fn take_due(&mut self, now: DateTime<Utc>, max: usize) -> Vec<Action> {
        let slots: Vec<Slot> = self.queue.range(..=(now, u64::MAX)).map(|(s, _)| *s).take(max).collect();
        slots.into_iter().filter_map(|s| self.remove(s)).collect()
    }

    /// Record that released notices went to the sink.
    pub fn done<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) -> Result<(), SinkError> {
        for id in ids {
            self.append(&Line::Done(id.to_string()))?;
        }
        Ok(())
    }

    /// Let go of the notices of customers for whom `keep` says no (their
    /// partition went to another dispatcher, which reads them back from
    /// the topics). How many went.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Result<usize, SinkError> {
        let gone: Vec<Slot> = self.queue.iter().filter(|(_, a)| !keep(&a.customer_id)).map(|(s, _)| *s).collect();
        for slot in &gone {
            if let Some(a) = self.remove(*slot) {
                self.append(&Line::Done(a.action_id))?;
            }
        }
        Ok(gone.len())
    }

    /// Make every change so far durable (before the batch is acknowledged).
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.sync()
    }

    /// Notices waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionKind, IncidentId};
    use chrono::TimeZone;

    /// The morning of 24 November.
    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, h, m, 0).unwrap()
    }

    /// 23 November, 23:00: the night before.
    fn eve() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 23, 0, 0).unwrap()
    }

    fn sms(customer: &str, kind: ActionKind, not_before: Option<DateTime<Utc>>) -> Action {
        let incident_id = IncidentId("INC-1".into());
        Action {
            action_id: Action::key(&incident_id, customer, Channel::Sms, kind),
            incident_id,
            customer_id: customer.into(),
            channel: Channel::Sms,
            kind,
            to: Some("+34600000001".into()),
            language: "es".into(),
            message: None,
            until: None,
            credit: None,
            planned_at: eve(),
            not_before,
            follows: None,
            skip: None,
        }
    }

    fn ids(v: &[Action]) -> Vec<&str> {
        v.iter().map(|a| a.action_id.as_str()).collect()
    }

    #[test]
    fn notices_come_out_when_due_in_order_and_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let mut h = HeldNotices::open(d.path()).unwrap();
        let (c1, c2) = (sms("C1", ActionKind::Down, Some(at(8, 0))), sms("C2", ActionKind::Down, Some(at(7, 0))));
        assert!(h.must_wait(&c1, eve()) && !h.must_wait(&c1, at(8, 0)));
        assert_eq!(h.hold(&c1).unwrap(), Some(at(8, 0)));
        assert_eq!(h.hold(&c2).unwrap(), Some(at(7, 0)));
        assert_eq!(h.hold(&c1).unwrap(), None, "a replayed hold is held once");
        // An ETR update with no time of its own waits behind its thread's down.
        let etr = sms("C1", ActionKind::EtrUpdate, None);
        assert!(h.must_wait(&etr, eve()));
        assert_eq!(h.hold(&etr).unwrap(), Some(at(8, 0)));
        h.flush().unwrap();

        let mut h = HeldNotices::open(d.path()).unwrap();
        assert_eq!(h.len(), 3, "a restart holds the same notices");
        assert!(h.take_due(at(6, 59), 10).is_empty());
        let first = h.take_due(at(7, 30), 10);
        assert_eq!(ids(&first), [c2.action_id.as_str()]);
        h.done(ids(&first)).unwrap();
        let next = h.take_due(at(9, 0), 1);
        assert_eq!(ids(&next), [c1.action_id.as_str()], "at most max, the down before its update");
        h.done(ids(&next)).unwrap();
        h.flush().unwrap();

        let mut h = HeldNotices::open(d.path()).unwrap();
        assert_eq!(ids(&h.take_due(at(9, 0), 10)), [etr.action_id.as_str()], "released ones stay released");
        let body = std::fs::read_to_string(d.path().join("held.jsonl")).unwrap();
        assert_eq!(body.lines().count(), 1, "opening compacts the file to what is still held: {body}");
    }

    #[test]
    fn a_partition_let_go_takes_its_customers_held_notices_for_good() {
        let d = tempfile::tempdir().unwrap();
        let mut h = HeldNotices::open(d.path()).unwrap();
        let morning = Some(at(7, 0));
        for c in ["C1", "C2", "C3"] {
            h.hold(&sms(c, ActionKind::Down, morning)).unwrap();
        }
        assert_eq!(h.retain(|c| c == "C2").unwrap(), 2);
        h.flush().unwrap();
        drop(h);
        let mut h = HeldNotices::open(d.path()).unwrap();
        assert_eq!(ids(&h.take_due(at(8, 0), 10)), ["INC-1/C2/sms/down"]);
    }

    #[test]
    fn a_restoration_withdraws_its_thread_only() {
        let d = tempfile::tempdir().unwrap();
        let mut h = HeldNotices::open(d.path()).unwrap();
        h.hold(&sms("C1", ActionKind::Down, Some(at(8, 0)))).unwrap();
        h.hold(&sms("C1", ActionKind::EtrUpdate, Some(at(8, 0)))).unwrap();
        h.hold(&sms("C2", ActionKind::Down, Some(at(8, 0)))).unwrap();
        let gone = h.withdraw("INC-1", "C1", Channel::Sms).unwrap();
        assert_eq!(gone.len(), 2);
        assert!(h.withdraw("INC-1", "C1", Channel::Email).unwrap().is_empty());
        assert!(!h.must_wait(&sms("C1", ActionKind::Restored, None), eve()));
        h.flush().unwrap();
        let mut h = HeldNotices::open(d.path()).unwrap();
        assert_eq!(ids(&h.take_due(at(8, 0), 10)), ["INC-1/C2/sms/down"]);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_bad_line_is_named() {
        let d = tempfile::tempdir().unwrap();
        let mut h = HeldNotices::open(d.path()).unwrap();
        h.hold(&sms("C1", ActionKind::Down, Some(at(8, 0)))).unwrap();
        h.flush().unwrap();
        drop(h);
        let path = d.path().join("held.jsonl");
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{good}{{\"hold\": {{\"act")).unwrap();
        let mut h = HeldNotices::open(d.path()).unwrap();
        assert_eq!(h.len(), 1);
        // The next line is a line of its own.
        h.hold(&sms("C2", ActionKind::Down, Some(at(8, 0)))).unwrap();
        h.flush().unwrap();
        drop(h);
        assert_eq!(HeldNotices::open(d.path()).unwrap().len(), 2);
        std::fs::write(&path, format!("nonsense\n{good}")).unwrap();
        let err = HeldNotices::open(d.path()).err().unwrap().to_string();
        assert!(err.contains("held.jsonl:1"), "{err}");
    }
}
