//! Notices waiting for their gateway. Owns `parked_sms.jsonl` and
//! `parked_email.jsonl` in the outbox directory, the in-memory queue the
//! delivery engine's retry loop ([`super::notify`]) sends from, and the
//! outage gauges (`outage_provider_up`, `outage_notices_parked`,
//! `outage_notices_parked_total`).
//!
//! A notice is parked when its channel cannot take it now: every provider
//! is down (refused connections, 5xx, timeouts), its in-line attempts
//! failed, it could not get a sending slot within `sinks.retry.queue_after`
//! (a slow channel), or notices are already waiting on the channel (nothing
//! overtakes them). It waits until a gateway takes it, refuses it for good,
//! its incident ends (its "restored"/"cancelled" withdraws it), or it has
//! waited `sinks.retry.park_horizon`.
//!
//! Order: the queue is one FIFO per customer (a *thread*); only a thread's
//! head is ever sent, and at most one at a time, so a customer's
//! "restored" never overtakes their parked "down". Heads are scheduled by
//! their next try (capped exponential backoff per notice).
//!
//! Durability: every change is a line (`{"park": {action, parked_at}}` or
//! `{"done": action_id}`), appended at once and `fsync`ed by
//! [`ParkQueue::sync`], which the dispatcher's flush calls before it stores
//! the offsets of the batch that parked them. Opening folds the file and
//! rewrites it with only the notices still parked (a temp file renamed over
//! it), in their order, so a restart resumes them. A `done` line lost to a
//! crash sends nothing twice: an accepted notice is in the outbox journal
//! first, and the engine drops a journalled one as a duplicate.

use super::journal::{recover, Journal};
use super::SinkError;
use crate::model::{Action, Channel};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use tokio::time::Instant;

/// One line of a park journal.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Park { action: Box<Action>, parked_at: DateTime<Utc> },
    Done(String),
}

/// A parked notice.
#[derive(Debug, Clone)]
pub struct Entry {
    pub action: Action,
    pub parked_at: DateTime<Utc>,
    /// Attempts made so far (in line and from the queue; not kept across
    /// restarts).
    pub attempts: u32,
    next_try: Instant,
}

/// Parked notices of one channel.
pub struct ParkQueue {
    out: Journal,
    /// customer → their parked notices, oldest first.
    threads: HashMap<String, VecDeque<Entry>>,
    /// Heads ready to be tried: (next try, seq) → customer. A thread whose
    /// head is being sent is not here.
    due: BTreeMap<(Instant, u64), String>,
    /// customer → the head's key in `due`.
    keys: HashMap<String, (Instant, u64)>,
    busy: HashSet<String>,
    ids: HashSet<String>,
    seq: u64,
    len: usize,
}

impl ParkQueue {
    /// Open (and compact) `dir/parked_{channel}.jsonl`. A torn last line
    /// is cut off (`journal::recover`); any other bad line names the file
    /// and line.
    pub fn open(dir: &Path, channel: Channel) -> Result<Self, SinkError> {
        let name = format!("parked_{}.jsonl", channel.as_str());
        let path = dir.join(&name);
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        let mut parked: Vec<(Action, DateTime<Utc>)> = Vec::new();
        let lines = recover(&path)?;
        if !lines.is_empty() {
            let mut index: HashMap<String, usize> = HashMap::new();
            for (n, line) in lines.iter().enumerate() {
                match serde_json::from_str::<Line>(line) {
                    Ok(Line::Park { action, parked_at }) => {
                        if !index.contains_key(&action.action_id) {
                            index.insert(action.action_id.clone(), parked.len());
                            parked.push((*action, parked_at));
                        }
                    }
                    Ok(Line::Done(id)) => {
                        if let Some(i) = index.remove(&id) {
                            parked[i].0.action_id.clear(); // tombstone
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
            parked.retain(|(a, _)| !a.action_id.is_empty());
            let tmp = dir.join(format!("{name}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let (mut w, _) = Journal::open(tmp.clone())?;
            for (a, at) in &parked {
                w.append(&Line::Park { action: Box::new(a.clone()), parked_at: *at })?;
            }
            w.sync()?;
            drop(w);
            std::fs::rename(&tmp, &path).map_err(|source| SinkError::Io { path: path.clone(), source })?;
        }
        let (out, _) = Journal::open(path)?;
        let mut q = ParkQueue {
            out,
            threads: HashMap::new(),
            due: BTreeMap::new(),
            keys: HashMap::new(),
            busy: HashSet::new(),
            ids: HashSet::new(),
            seq: 0,
            len: 0,
        };
        let now = Instant::now();
        for (a, at) in parked {
            q.insert(a, at, 0, now);
        }
        Ok(q)
    }

    fn insert(&mut self, a: Action, parked_at: DateTime<Utc>, attempts: u32, now: Instant) -> bool {
        if !self.ids.insert(a.action_id.clone()) {
            return false;
        }
        let customer = a.customer_id.clone();
        let thread = self.threads.entry(customer.clone()).or_default();
        thread.push_back(Entry { action: a, parked_at, attempts, next_try: now });
        self.len += 1;
        if thread.len() == 1 && !self.busy.contains(&customer) {
            self.schedule(&customer, now);
        }
        true
    }

    fn schedule(&mut self, customer: &str, at: Instant) {
        if let Some(k) = self.keys.remove(customer) {
            self.due.remove(&k);
        }
        let k = (at, self.seq);
        self.seq += 1;
        self.due.insert(k, customer.to_string());
        self.keys.insert(customer.to_string(), k);
    }

    fn unschedule(&mut self, customer: &str) {
        if let Some(k) = self.keys.remove(customer) {
            self.due.remove(&k);
        }
    }

    /// Park `a` at the back of its customer's thread, `attempts` already
    /// made. False when it is parked already (a batch read again).
    pub fn park(&mut self, a: &Action, parked_at: DateTime<Utc>, attempts: u32) -> Result<bool, SinkError> {
        if self.ids.contains(&a.action_id) {
            return Ok(false);
        }
        self.out.append(&Line::Park { action: Box::new(a.clone()), parked_at })?;
        Ok(self.insert(a.clone(), parked_at, attempts, Instant::now()))
    }

    /// Whether `customer` has notices parked (or one being sent from here).
    pub fn holds(&self, customer: &str) -> bool {
        self.threads.contains_key(customer)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Take out the parked notices of `incident` for `customer` (its
    /// "restored" or "cancelled" arrived: they are moot), except one being
    /// sent right now. The caller records why.
    pub fn withdraw(&mut self, incident: &str, customer: &str) -> Result<Vec<Action>, SinkError> {
        let busy = self.busy.contains(customer);
        let Some(thread) = self.threads.get_mut(customer) else { return Ok(Vec::new()) };
        let head = thread.front().map(|e| e.action.action_id.clone());
        let mut gone = Vec::new();
        let mut kept = VecDeque::with_capacity(thread.len());
        for (i, e) in std::mem::take(thread).into_iter().enumerate() {
            if e.action.incident_id.0 == incident && !(busy && i == 0) {
                gone.push(e.action);
            } else {
                kept.push_back(e);
            }
        }
        let new_head = kept.front().map(|e| e.action.action_id.clone());
        *thread = kept;
        if thread.is_empty() && !busy {
            self.threads.remove(customer);
            self.unschedule(customer);
        } else if new_head != head && !busy {
            self.schedule(customer, Instant::now());
        }
        for a in &gone {
            self.ids.remove(&a.action_id);
            self.out.append(&Line::Done(a.action_id.clone()))?;
        }
        self.len -= gone.len();
        Ok(gone)
    }

    /// Whether `customer` has a "restored" or "cancelled" of `incident`
    /// parked (behind a notice being sent): that notice is moot.
    pub fn ended_behind(&self, customer: &str, incident: &str) -> bool {
        self.threads.get(customer).is_some_and(|t| {
            t.iter().skip(1).any(|e| {
                e.action.incident_id.0 == incident
                    && matches!(e.action.kind, crate::model::ActionKind::Restored | crate::model::ActionKind::Cancelled)
            })
        })
    }

    /// When the earliest head is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.first_key_value().map(|(k, _)| k.0)
    }

    /// The earliest head due by `now`, marked as being sent: settle it with
    /// [`ParkQueue::settle`] or [`ParkQueue::retry`].
    pub fn take(&mut self, now: Instant) -> Option<Entry> {
        let (&k, _) = self.due.first_key_value().filter(|(k, _)| k.0 <= now)?;
        let customer = self.due.remove(&k)?;
        self.keys.remove(&customer);
        let head = self.threads.get(&customer).and_then(|t| t.front()).cloned()?;
        self.busy.insert(customer);
        Some(head)
    }

    /// The head of `customer` is settled (sent, refused, skipped, expired):
    /// it leaves the queue and the next one is due at once.
    pub fn settle(&mut self, customer: &str) -> Result<(), SinkError> {
        self.busy.remove(customer);
        let Some(thread) = self.threads.get_mut(customer) else { return Ok(()) };
        if let Some(e) = thread.pop_front() {
            self.ids.remove(&e.action.action_id);
            self.len -= 1;
            self.out.append(&Line::Done(e.action.action_id))?;
        }
        if thread.is_empty() {
            self.threads.remove(customer);
            self.unschedule(customer);
        } else {
            self.schedule(customer, Instant::now());
        }
        Ok(())
    }

    /// The head of `customer` failed again: try it at `next`.
    pub fn retry(&mut self, customer: &str, next: Instant) {
        self.busy.remove(customer);
        let Some(e) = self.threads.get_mut(customer).and_then(|t| t.front_mut()) else { return };
        e.attempts += 1;
        e.next_try = next;
        self.schedule(customer, next);
    }

    /// Every waiting head is due now (a provider came back).
    pub fn all_due_now(&mut self) {
        let now = Instant::now();
        let waiting: Vec<String> = self.due.values().cloned().collect();
        for c in waiting {
            if let Some(e) = self.threads.get_mut(&c).and_then(|t| t.front_mut()) {
                e.next_try = now;
            }
            self.schedule(&c, now);
        }
    }

    /// Take out the notices parked before `cutoff` from the front of each
    /// thread not being sent (`sinks.retry.park_horizon`). The caller
    /// records them.
    pub fn expire(&mut self, cutoff: DateTime<Utc>) -> Result<Vec<Entry>, SinkError> {
        let mut gone = Vec::new();
        let customers: Vec<String> = self.threads.keys().filter(|c| !self.busy.contains(*c)).cloned().collect();
        for c in customers {
            let Some(thread) = self.threads.get_mut(&c) else { continue };
            let before = thread.len();
            while thread.front().is_some_and(|e| e.parked_at < cutoff) {
                gone.extend(thread.pop_front());
            }
            if thread.len() == before {
                continue;
            }
            if thread.is_empty() {
                self.threads.remove(&c);
                self.unschedule(&c);
            } else {
                self.schedule(&c, Instant::now());
            }
        }
        for e in &gone {
            self.ids.remove(&e.action.action_id);
            self.out.append(&Line::Done(e.action.action_id.clone()))?;
        }
        self.len -= gone.len();
        Ok(gone)
    }

    /// Let go of the notices of customers for whom `keep` says no (their
    /// partition went to another dispatcher, which reads them back from
    /// the topics), except a head being sent right now, which settles
    /// here. How many went.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Result<usize, SinkError> {
        let customers: Vec<String> = self.threads.keys().filter(|c| !keep(c)).cloned().collect();
        let mut gone = Vec::new();
        for c in customers {
            let busy = self.busy.contains(&c);
            let Some(thread) = self.threads.get_mut(&c) else { continue };
            let head = if busy { thread.pop_front() } else { None };
            gone.extend(std::mem::take(thread).into_iter().map(|e| e.action.action_id));
            match head {
                Some(h) => thread.push_back(h),
                None => {
                    self.threads.remove(&c);
                    self.unschedule(&c);
                }
            }
        }
        for id in &gone {
            self.ids.remove(id);
            self.out.append(&Line::Done(id.clone()))?;
        }
        self.len -= gone.len();
        Ok(gone.len())
    }

    /// Make every change so far durable.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.out.sync()
    }
}

/// The outage gauges, process-wide (`/metrics`).
#[derive(Default)]
struct Gauges {
    /// (channel, provider) → up.
    up: BTreeMap<(String, String), bool>,
    /// channel → (parked now, parked since start).
    parked: BTreeMap<String, (u64, u64)>,
}

static GAUGES: Mutex<Option<Gauges>> = Mutex::new(None);

fn gauges<T>(f: impl FnOnce(&mut Gauges) -> T) -> T {
    let mut g = GAUGES.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Gauges::default))
}

/// `outage_provider_up{channel,provider}`.
pub fn set_provider_up(channel: Channel, provider: &str, up: bool) {
    gauges(|g| g.up.insert((channel.as_str().into(), provider.into()), up));
}

/// `outage_notices_parked{channel}` (now) and, when `new` notices were
/// parked, `outage_notices_parked_total{channel}`.
pub fn set_parked(channel: Channel, now: usize, new: u64) {
    gauges(|g| {
        let e = g.parked.entry(channel.as_str().into()).or_default();
        e.0 = now as u64;
        e.1 += new;
    });
}

/// The outage gauges in Prometheus' text format.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    gauges(|g| {
        let _ = writeln!(
            out,
            "# HELP outage_provider_up Whether a notice gateway answers (0 after sinks.retry.failover_after retriable failures in a row, 1 again at its first answer), by channel and provider.\n# TYPE outage_provider_up gauge"
        );
        for ((c, p), up) in &g.up {
            let p = p.replace(['"', '\\', '\n'], "_");
            let _ = writeln!(out, "outage_provider_up{{channel=\"{c}\",provider=\"{p}\"}} {}", u8::from(*up));
        }
        let _ = writeln!(
            out,
            "# HELP outage_notices_parked Notices waiting for their gateway (parked), by channel.\n# TYPE outage_notices_parked gauge"
        );
        for (c, (now, _)) in &g.parked {
            let _ = writeln!(out, "outage_notices_parked{{channel=\"{c}\"}} {now}");
        }
        let _ = writeln!(
            out,
            "# HELP outage_notices_parked_total Notices parked since the start, by channel.\n# TYPE outage_notices_parked_total counter"
        );
        for (c, (_, total)) in &g.parked {
            let _ = writeln!(out, "outage_notices_parked_total{{channel=\"{c}\"}} {total}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionKind, IncidentId};

    fn sms(incident: &str, customer: &str, kind: ActionKind) -> Action {
        let incident_id = IncidentId(incident.into());
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
            planned_at: Utc::now(),
            not_before: None,
            follows: None,
            skip: None,
        }
    }

    #[test]
    fn one_head_per_customer_in_order_and_a_restart_resumes_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let mut q = ParkQueue::open(d.path(), Channel::Sms).unwrap();
        let t = Utc::now();
        let (down1, restored1) = (sms("I1", "C1", ActionKind::Down), sms("I1", "C1", ActionKind::Restored));
        let down2 = sms("I1", "C2", ActionKind::Down);
        assert!(q.park(&down1, t, 1).unwrap());
        assert!(q.park(&restored1, t, 0).unwrap());
        assert!(q.park(&down2, t, 0).unwrap());
        assert!(!q.park(&down1, t, 0).unwrap(), "parked once");
        assert_eq!(q.len(), 3);
        let now = Instant::now();
        let a = q.take(now).unwrap();
        assert_eq!(a.action.action_id, down1.action_id);
        assert_eq!(a.attempts, 1);
        let b = q.take(now).unwrap();
        assert_eq!(b.action.action_id, down2.action_id, "C1's restored waits behind its down in flight");
        assert!(q.take(now).is_none());
        q.retry("C1", now + std::time::Duration::from_secs(60));
        assert!(q.take(now).is_none(), "C1's head backs off, and nothing overtakes it");
        q.settle("C2").unwrap();
        q.sync().unwrap();

        let mut q = ParkQueue::open(d.path(), Channel::Sms).unwrap();
        assert_eq!(q.len(), 2, "a restart resumes what is still parked");
        let a = q.take(Instant::now()).unwrap();
        assert_eq!(a.action.action_id, down1.action_id, "in order");
        q.settle("C1").unwrap();
        assert_eq!(q.take(Instant::now()).unwrap().action.action_id, restored1.action_id);
        q.settle("C1").unwrap();
        assert!(q.is_empty() && !q.holds("C1"));
    }

    #[test]
    fn a_restoration_withdraws_its_incident_but_not_a_notice_in_flight() {
        let d = tempfile::tempdir().unwrap();
        let mut q = ParkQueue::open(d.path(), Channel::Sms).unwrap();
        let t = Utc::now();
        q.park(&sms("I1", "C1", ActionKind::Down), t, 0).unwrap();
        q.park(&sms("I2", "C1", ActionKind::Down), t, 0).unwrap();
        q.park(&sms("I1", "C1", ActionKind::EtrUpdate), t, 0).unwrap();
        q.park(&sms("I1", "C2", ActionKind::Down), t, 0).unwrap();
        let gone = q.withdraw("I1", "C1").unwrap();
        assert_eq!(gone.len(), 2);
        assert_eq!(q.len(), 2);
        let now = Instant::now();
        let mut taken = [q.take(now).unwrap(), q.take(now).unwrap()];
        taken.sort_by(|a, b| a.action.customer_id.cmp(&b.action.customer_id));
        assert_eq!(taken[0].action.incident_id.0, "I2", "the other incident's notice stays, now C1's head");
        assert_eq!(taken[1].action.customer_id, "C2");
        assert!(q.withdraw("I1", "C2").unwrap().is_empty(), "a notice being sent is not withdrawn");
        q.sync().unwrap();
        assert_eq!(ParkQueue::open(d.path(), Channel::Sms).unwrap().len(), 2);
    }

    #[test]
    fn a_partition_let_go_takes_its_customers_notices_but_not_one_in_flight() {
        let d = tempfile::tempdir().unwrap();
        let mut q = ParkQueue::open(d.path(), Channel::Sms).unwrap();
        let at = Utc::now();
        for c in ["C1", "C2"] {
            q.park(&sms("I-1", c, ActionKind::Down), at, 1).unwrap();
            q.park(&sms("I-1", c, ActionKind::EtrUpdate), at, 0).unwrap();
        }
        q.park(&sms("I-1", "C3", ActionKind::Down), at, 1).unwrap();
        let head = q.take(Instant::now()).unwrap(); // being sent
        let sending = head.action.customer_id.clone();
        let gone = q.retain(|c| c == "C3").unwrap();
        assert_eq!(gone, if sending == "C3" { 4 } else { 3 }, "all of the others' but the one in flight");
        assert_eq!(q.len(), 5 - gone);
        q.settle(&sending).unwrap();
        q.sync().unwrap();
        drop(q);
        let q = ParkQueue::open(d.path(), Channel::Sms).unwrap();
        assert_eq!(q.len(), if sending == "C3" { 0 } else { 1 }, "only C3's notice is left");
        assert!(q.holds("C3") || sending == "C3");
    }

    #[test]
    fn notices_past_the_horizon_expire_from_the_front() {
        let d = tempfile::tempdir().unwrap();
        let mut q = ParkQueue::open(d.path(), Channel::Sms).unwrap();
        let old = Utc::now() - chrono::Duration::hours(7);
        q.park(&sms("I1", "C1", ActionKind::Down), old, 0).unwrap();
        q.park(&sms("I1", "C1", ActionKind::Restored), Utc::now(), 0).unwrap();
        let gone = q.expire(Utc::now() - chrono::Duration::hours(6)).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].action.kind, ActionKind::Down);
        assert_eq!(q.take(Instant::now()).unwrap().action.kind, ActionKind::Restored);
    }
}
