//! One story per customer per outage. Owns the customer threads: which
//! open incidents hold each billing postcode (told its customers "down", or
//! joined them silently, and have not yet told them "restored"), which
//! "down" notice opened the postcode's thread, and which holder sets its
//! outlook. Pure: folded from the incident log (every incident's `updated`
//! and `planned` events), so a restart or replay rebuilds the same threads.
//!
//! A customer's audience membership is by billing postcode (every plan
//! names postcodes), so the customers of a postcode share one thread: a
//! thread per postcode is a thread per customer, at the cost of a postcode.
//!
//! The rules, applied by [`super::plan::Planner`]:
//! - **Down once.** An incident planning "down" for a postcode another open
//!   incident holds joins the thread (`planned` lists it in `silent`): no
//!   second "down" (its data grant still goes: grants are counted per
//!   incident and kept while one needs them).
//! - **Outlook.** An ETR update or "still working" of an incident goes to a
//!   postcode only when that incident [`Threads::speaks`] for it: it holds
//!   the latest ETR of the thread's holders (an ETR beats none; a tie goes
//!   to the greater incident id). A joining incident whose ETR is later than
//!   the thread's tells it at once, as an update.
//! - **Restored once.** An incident ending (or restoring a postcode early)
//!   while another still holds the postcode leaves silently; the last
//!   holder tells "restored" (its revoke and credits go either way).
//! - Follow-ups name the "down" they follow ([`Threads::opener`]): the
//!   notifier sends one only where that "down" went.
//!
//! Order independence: joins and leaves of one incident are in its own
//! partition, in order; the opener is the latest told "down" by (planned
//! at, incident), whatever order partitions are folded in.

use crate::model::{EventKind, Incident, IncidentEvent, IncidentId, Phase};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Threads {
    /// Postcode → open incidents holding it.
    holders: HashMap<String, BTreeSet<IncidentId>>,
    /// Postcode → the "down" that opened its latest thread: (planned at,
    /// incident, round of the postcode in it).
    opener: HashMap<String, (DateTime<Utc>, IncidentId, u64)>,
    /// Each incident's ETR, as its `updated` events left it.
    etrs: HashMap<IncidentId, DateTime<Utc>>,
}

impl Threads {
    /// Follow one event already applied to `inc`.
    pub fn observe(&mut self, inc: &Incident, ev: &IncidentEvent) {
        match &ev.kind {
            EventKind::Updated { etr: Some(etr), .. } => {
                self.etrs.insert(inc.id.clone(), *etr);
            }
            EventKind::Planned { phase: Phase::Down, postcodes, silent, .. } => {
                for p in postcodes {
                    self.holders.entry(p.clone()).or_default().insert(inc.id.clone());
                    if silent.binary_search(p).is_err() {
                        let told = (ev.at, inc.id.clone(), inc.round(p));
                        let o = self.opener.entry(p.clone()).or_insert_with(|| told.clone());
                        if (&told.0, &told.1) > (&o.0, &o.1) {
                            *o = told;
                        }
                    }
                }
            }
            EventKind::Planned { phase: Phase::Restored, postcodes, .. } => {
                // The closing plan releases every postcode it held.
                let all: Vec<&String> = if inc.state.is_open() {
                    postcodes.iter().collect()
                } else {
                    postcodes.iter().chain(inc.notified_postcodes.iter()).collect()
                };
                for p in all {
                    self.leave(p, &inc.id);
                }
                if !inc.state.is_open() {
                    self.etrs.remove(&inc.id);
                }
            }
            _ => {}
        }
    }

    fn leave(&mut self, postcode: &str, id: &IncidentId) {
        if let Some(h) = self.holders.get_mut(postcode) {
            h.remove(id);
            if h.is_empty() {
                self.holders.remove(postcode);
            }
        }
    }

    /// The open incidents other than `me` holding `postcode`.
    pub fn others<'a>(&'a self, postcode: &str, me: &'a IncidentId) -> impl Iterator<Item = &'a IncidentId> + 'a {
        self.holders.get(postcode).into_iter().flatten().filter(move |i| *i != me)
    }

    /// Whether an open incident other than `me` holds `postcode`.
    pub fn held_by_other(&self, postcode: &str, me: &IncidentId) -> bool {
        self.others(postcode, me).next().is_some()
    }

    /// Whether `inc` sets the outlook of `postcode`'s thread: no other
    /// holder has a later ETR (an ETR beats none; a tie goes to the greater
    /// incident id).
    pub fn speaks(&self, postcode: &str, inc: &Incident) -> bool {
        let mine = (inc.etr, &inc.id);
        self.others(postcode, &inc.id).all(|o| (self.etrs.get(o).copied(), o) < mine)
    }

    /// The "down" that opened `postcode`'s latest thread: (incident, round).
    pub fn opener(&self, postcode: &str) -> Option<(&IncidentId, u64)> {
        self.opener.get(postcode).map(|(_, id, round)| (id, *round))
    }

    /// Postcodes held by at least one open incident.
    pub fn held(&self) -> usize {
        self.holders.len()
    }
}
