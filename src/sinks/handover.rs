//! What a dispatcher takes over with a partition of the actions topic.
//! Owns the fold of the delivery record into the once-only state a
//! dispatcher keeps: which notices, grants and revokes went out, which
//! data-grant claims are live, and which actions were still waiting — held
//! until their time, parked for their gateway — when the partition's last
//! dispatcher let it go (a rebalance, a crash, a scale-in).
//!
//! The deliveries topic is keyed by customer like the actions topic, with
//! the same partition count and partitioner, so partition p of one holds
//! the records of partition p of the other: the dispatcher that is given
//! partition p reads the deliveries of p from the start, folds them here
//! ([`Taken`]), reads the waiting actions back from the actions topic at
//! the offsets their `held`/`parked` records carry, and hands the result
//! ([`Handover`]) to its sinks ([`super::ActionSink::assigned`]). Each
//! dispatcher lets go of what is not its own any more (a customer's
//! partition is [`crate::kafka::partition_of`] their id). Pure: the reading
//! is `topology::dispatch`'s.

use super::deliveries::{DeliveryOutcome, DeliveryRecord};
use crate::model::{Action, Channel};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

/// An action still waiting at the end of its partition's delivery record.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub partition: i32,
    /// Its offset on the actions topic; `None` when no record of it said
    /// (it cannot be read back: counted as lost, loudly).
    pub offset: Option<i64>,
    /// Parked since then; `None`: held (until its `not_before`).
    pub parked_at: Option<DateTime<Utc>>,
}

/// The fold of some partitions' delivery records, in each partition's order.
#[derive(Debug, Default)]
pub struct Taken {
    /// Action id → channel, for every action a gateway or the platform took.
    pub sent: HashMap<String, Channel>,
    /// The records that settled a data grant or revoke, in order (the
    /// provisioner's grant counts are folded from them).
    pub grants: Vec<DeliveryRecord>,
    /// Action id → what it waits for.
    pub waiting: BTreeMap<String, Waiting>,
    /// Records folded.
    pub records: u64,
}

impl Taken {
    /// Fold one record of `partition`.
    pub fn apply(&mut self, partition: i32, r: DeliveryRecord) {
        use DeliveryOutcome::*;
        self.records += 1;
        match r.outcome {
            Held | Parked => {
                let w = self.waiting.entry(r.action_id.clone()).or_insert(Waiting {
                    partition,
                    offset: None,
                    parked_at: None,
                });
                w.offset = w.offset.or(r.offset);
                w.parked_at = match r.outcome {
                    Parked => w.parked_at.or(Some(r.at)),
                    _ => None,
                };
            }
            Accepted | Permanent | GaveUp | Skipped => {
                self.waiting.remove(&r.action_id);
                if r.outcome == Accepted {
                    self.sent.insert(r.action_id.clone(), r.channel);
                }
                if r.channel == Channel::DataGrant {
                    self.grants.push(r);
                }
            }
            Retry | Delivered | Undelivered | Buffered | SmscAccepted | SmscRejected => {}
        }
    }

    /// Done folding: an action that waited and then went out as a repeat
    /// (no record of its own) is not waiting.
    pub fn finish(mut self) -> Self {
        let sent = &self.sent;
        self.waiting.retain(|id, _| !sent.contains_key(id));
        self
    }

    /// Per partition, the first and last offsets of the waiting actions
    /// that can be read back.
    pub fn to_read(&self) -> BTreeMap<i32, (i64, i64)> {
        let mut out: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for w in self.waiting.values() {
            if let Some(o) = w.offset {
                let e = out.entry(w.partition).or_insert((o, o));
                *e = (e.0.min(o), e.1.max(o));
            }
        }
        out
    }
}

/// What the sinks are given when the dispatcher's partitions change.
#[derive(Debug, Default)]
pub struct Handover {
    /// Every partition of the actions topic now this dispatcher's.
    pub partitions: Vec<i32>,
    /// The actions topic's partition count (0: unknown, every customer is ours).
    pub partition_count: usize,
    /// Of the partitions just taken: what went out (action id → channel).
    pub sent: HashMap<String, Channel>,
    /// Of the partitions just taken: the data-grant records, in order.
    pub grants: Vec<DeliveryRecord>,
    /// Of the partitions just taken: notices that were parked, read back,
    /// with when they were parked.
    pub parked: Vec<(Action, DateTime<Utc>)>,
}

impl Handover {
    /// Only `partitions` (nothing taken over): the sinks let go of the rest.
    pub fn of(partitions: Vec<i32>, partition_count: usize) -> Self {
        Handover { partitions, partition_count, ..Default::default() }
    }

    /// Whether `customer`'s actions are on one of our partitions.
    pub fn owns(&self, customer: &str) -> bool {
        self.partition_count == 0
            || self.partitions.contains(&crate::kafka::partition_of(customer.as_bytes(), self.partition_count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ActionKind;

    fn rec(id: &str, outcome: DeliveryOutcome, offset: Option<i64>) -> DeliveryRecord {
        DeliveryRecord {
            offset,
            ..DeliveryRecord::report(id, outcome, "", "2026-12-04T10:00:00Z".parse().unwrap()).unwrap()
        }
    }

    #[test]
    fn what_went_out_what_waits_and_where_to_read_it() {
        use DeliveryOutcome::*;
        let mut t = Taken::default();
        let down = |c: &str| format!("I-1/{c}/sms/down");
        // Sent in line; its delivery report changes nothing.
        t.apply(0, rec(&down("C1"), Accepted, None));
        t.apply(0, rec(&down("C1"), Delivered, None));
        // Held, then released and sent.
        t.apply(0, rec(&down("C2"), Held, Some(7)));
        t.apply(0, rec(&down("C2"), Accepted, None));
        // Held still.
        t.apply(1, rec(&down("C3"), Held, Some(12)));
        // Parked, retried, still parked.
        t.apply(1, rec(&down("C4"), Retry, None));
        t.apply(1, rec(&down("C4"), Parked, Some(30)));
        t.apply(1, rec(&down("C4"), Retry, None));
        // Held, released, then parked: the offset of the hold is kept.
        t.apply(0, rec(&down("C5"), Held, Some(3)));
        t.apply(0, rec(&down("C5"), Parked, None));
        // Parked then given up; held then withdrawn.
        t.apply(1, rec(&down("C6"), Parked, Some(40)));
        t.apply(1, rec(&down("C6"), GaveUp, None));
        t.apply(1, rec(&down("C7"), Held, Some(41)));
        t.apply(1, rec(&down("C7"), Skipped, None));
        // Held with no offset on record (written before offsets were).
        t.apply(1, rec(&down("C8"), Held, None));
        let t = t.finish();
        assert_eq!(t.records, 15);
        let mut sent: Vec<_> = t.sent.keys().cloned().collect();
        sent.sort();
        assert_eq!(sent, [down("C1"), down("C2")]);
        let waiting: Vec<_> = t.waiting.iter().map(|(id, w)| (id.clone(), w.offset, w.parked_at.is_some())).collect();
        assert_eq!(
            waiting,
            [
                (down("C3"), Some(12), false),
                (down("C4"), Some(30), true),
                (down("C5"), Some(3), true),
                (down("C8"), None, false),
            ]
        );
        assert_eq!(t.to_read(), BTreeMap::from([(0, (3, 3)), (1, (12, 30))]));
    }

    #[test]
    fn grant_records_are_kept_in_order_and_a_repeat_is_not_waiting() {
        use DeliveryOutcome::*;
        let mut t = Taken::default();
        t.apply(2, rec("I-1/C1/data_grant/grant", Accepted, None));
        t.apply(2, rec("I-1/C1/data_grant/revoke", Held, Some(9)));
        t.apply(2, rec("I-1/C1/data_grant/revoke", Skipped, None));
        t.apply(2, rec("I-1/C2/sms/down", Held, Some(10)));
        t.apply(2, rec("I-1/C2/sms/down", Accepted, None));
        t.apply(2, rec("I-1/C2/sms/down", Held, Some(10))); // read twice
        let t = t.finish();
        let kinds: Vec<_> = t.grants.iter().map(|r| (r.kind, r.outcome)).collect();
        assert_eq!(kinds, [(ActionKind::Grant, Accepted), (ActionKind::Revoke, Skipped)]);
        assert!(t.waiting.is_empty(), "{:?}", t.waiting);
    }

    #[test]
    fn a_dispatcher_owns_the_customers_of_its_partitions() {
        let h = Handover::of(vec![0, 2], 4);
        let mine = (0..100).map(|i| format!("C{i}")).filter(|c| h.owns(c)).count();
        assert!(mine > 30 && mine < 70, "about half of 100 customers: {mine}");
        for i in 0..100 {
            let c = format!("C{i}");
            let p = crate::kafka::partition_of(c.as_bytes(), 4);
            assert_eq!(h.owns(&c), p == 0 || p == 2);
        }
        assert!(Handover::of(vec![], 0).owns("anyone"));
    }
}
