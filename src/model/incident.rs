//! Incidents as an event-sourced log: [`IncidentEvent`] is one record on the
//! incident log topic (keyed by incident id), and [`Incident`] is the state
//! folded from an incident's events. Rebuilding the daemon after a restart is
//! nothing more than folding the log again.
//!
//! Invariant: events of one incident carry consecutive `seq` numbers from 1;
//! [`Incident::apply`] ignores an event it has already applied, so a record
//! written twice (producer retry, crash between produce and commit) is
//! harmless.

use super::area::Area;
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Stable incident id, e.g. `INC-20261123-3f9a1c2e`: the date and a hash of
/// the alarm that opened it, so a replay of the same alarms names its
/// incidents the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub CompactString);

impl IncidentId {
    pub fn derive(site_id: &str, alarm_id: &str, at: DateTime<Utc>) -> Self {
        let u = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{site_id}\u{1f}{alarm_id}\u{1f}{}", at.timestamp_millis()).as_bytes(),
        );
        IncidentId(compact_str::format_compact!("INC-{}-{}", at.format("%Y%m%d"), &u.simple().to_string()[..8]))
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Sites are down together but not (yet) enough, or not for long enough,
    /// to tell customers.
    Probable,
    /// Confirmed: customers, IVR and billing are acted on.
    Declared,
    /// Every site cleared and stayed clear for the hold-down.
    Resolved,
    /// Declared by mistake; customers already told get a correction.
    Cancelled,
    /// A probable incident whose sites all cleared before declaration.
    Dismissed,
    /// A probable incident that became connected to another one before
    /// either was announced, and was folded into it (`merged` event).
    Merged,
}

impl IncidentState {
    pub const ALL: [IncidentState; 6] = [
        IncidentState::Probable,
        IncidentState::Declared,
        IncidentState::Resolved,
        IncidentState::Cancelled,
        IncidentState::Dismissed,
        IncidentState::Merged,
    ];

    /// As the contracts spell it (`declared`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Probable => "probable",
            IncidentState::Declared => "declared",
            IncidentState::Resolved => "resolved",
            IncidentState::Cancelled => "cancelled",
            IncidentState::Dismissed => "dismissed",
            IncidentState::Merged => "merged",
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, IncidentState::Probable | IncidentState::Declared)
    }
}

/// One alarm's effect on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRef {
    /// (Ids inline up to 24 bytes: the correlator makes one per alarm.)
    pub alarm_id: CompactString,
    pub site_id: CompactString,
    /// Event time of the raise or clear.
    pub at: DateTime<Utc>,
}

/// Which stage of customer actions a `planned` event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Down,
    Restored,
    /// ETR update notices (the incident's latest ETR).
    EtrUpdate,
    /// "Still working" notices: the ETR passed while the outage goes on.
    StillWorking,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// First event of every incident.
    Opened {
        cause: String,
        /// The feed's free-text description of the alarm that opened it
        /// (`specificProblem`): for the NOC (API, replay, log), never
        /// matched and never on the public status page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Service-affecting alarms raised on sites of this incident.
    AlarmsRaised {
        alarms: Vec<AlarmRef>,
    },
    /// Alarms of this incident cleared; a site is up when none is left.
    AlarmsCleared {
        alarms: Vec<AlarmRef>,
    },
    Declared {
        reason: String,
        /// Sites down for less than the correlator's blip window: pending,
        /// outside the footprint until `confirmed` (a flap beside the
        /// failure is never told for). Sorted.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pending: Vec<CompactString>,
        /// Sites joining from now on are pending until `confirmed` (the
        /// correlator's blip filter is on). Absent (false) in older logs and
        /// with `blip_window = "0s"`: joiners are in the footprint at once.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        confirm_joiners: bool,
    },
    /// NOC update of what customers are told.
    Updated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etr: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// All sites up since `restored_at` and the hold-down passed.
    Resolved {
        restored_at: DateTime<Utc>,
    },
    Cancelled {
        reason: String,
    },
    Dismissed {},
    /// Became connected to another open incident; they stay separate
    /// (once an incident is declared its id is public and stays).
    Linked {
        other: IncidentId,
    },
    /// Folded into `into` before being declared: nobody had been told of
    /// this incident, so it closes and its down sites continue in `into`
    /// (an `alarms_raised` there carries them, with their original times).
    Merged {
        into: IncidentId,
    },
    /// Pending sites (joined after declaration) that have now been down
    /// for the blip window: they enter the footprint.
    Confirmed {
        sites: Vec<CompactString>,
    },
    /// Sites taken out of the incident while nobody was told for them (a
    /// probable incident's member whose failure was a blip): they leave
    /// its sites and footprint.
    Dropped {
        sites: Vec<CompactString>,
        reason: String,
    },
    /// The area of an incident the NOC declared by hand (right after its
    /// `opened`): what was drawn and the postcodes it covers, sorted. Such
    /// an incident has no sites; the NOC resolves it, alarms never do.
    Scoped {
        area: Area,
        postcodes: Vec<String>,
    },
    /// The "down" fan-out would reach more customers than
    /// `plan.approve_above_customers` (or, approved, more than
    /// `plan.reapprove_growth` times the audience approved): it waits for
    /// an `approved`.
    ApprovalRequired {
        customers: u64,
    },
    /// A NOC operator approved the fan-out (the event's actor).
    Approved {},
    /// Customer actions for these postcodes were put on the actions topic.
    Planned {
        phase: Phase,
        postcodes: Vec<String>,
        actions: u64,
        /// Of `postcodes`, those whose customers were not sent this phase's
        /// notice because another open incident holds their thread (one
        /// thread per customer, see `transforms::threads`): `down`: they were
        /// told "down" by it already; `restored`: it still holds them, its
        /// end will tell them. Sorted; absent when none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        silent: Vec<String>,
    },
    /// The ETR passed while the incident is still declared (the planner's
    /// clock): the NOC is alerted, and those told get one "still working".
    EtrPassed {
        etr: DateTime<Utc>,
    },
}

impl EventKind {
    /// The `type` tag this kind has in JSON (and in logs).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Opened { .. } => "opened",
            EventKind::AlarmsRaised { .. } => "alarms_raised",
            EventKind::AlarmsCleared { .. } => "alarms_cleared",
            EventKind::Declared { .. } => "declared",
            EventKind::Updated { .. } => "updated",
            EventKind::Resolved { .. } => "resolved",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::Dismissed {} => "dismissed",
            EventKind::Linked { .. } => "linked",
            EventKind::Merged { .. } => "merged",
            EventKind::Confirmed { .. } => "confirmed",
            EventKind::Dropped { .. } => "dropped",
            EventKind::Scoped { .. } => "scoped",
            EventKind::ApprovalRequired { .. } => "approval_required",
            EventKind::Approved {} => "approved",
            EventKind::Planned { .. } => "planned",
            EventKind::EtrPassed { .. } => "etr_passed",
        }
    }
}

/// One record of the incident log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEvent {
    pub incident_id: IncidentId,
    /// Position in this incident's history, from 1.
    pub seq: u64,
    /// When it happened (event time for alarm effects, wall time for commands).
    pub at: DateTime<Utc>,
    /// Who caused it: `correlator`, `planner`, or `noc:<user>`. (Borrowed
    /// for the built-in actors: the correlator makes an event per alarm.)
    pub actor: Cow<'static, str>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl IncidentEvent {
    /// `name` as an event's actor: the built-in actors (`correlator`,
    /// `planner`) borrowed, anyone else copied.
    pub fn actor(name: &str) -> Cow<'static, str> {
        match name {
            "correlator" => Cow::Borrowed("correlator"),
            "planner" => Cow::Borrowed("planner"),
            other => Cow::Owned(other.to_owned()),
        }
    }
}

/// Down interval of one site within an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteWindow {
    pub down_since: DateTime<Utc>,
    /// Set when the last active alarm of the site cleared.
    pub up_at: Option<DateTime<Utc>>,
    /// Active (uncleared) alarm ids on the site.
    pub active: AlarmIds,
    /// Joined after the incident was declared and not yet down for the
    /// correlator's `blip_window`: outside the footprint (nobody is told
    /// for it) until a `confirmed` event. Sites of a probable incident are
    /// never pending: the declaration takes them all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// A site's active alarm ids: a sorted set, serialized as a sorted list.
/// A site mostly has one active alarm, so one id is held inline (and an
/// id of up to 24 bytes inline in it): a site joining an incident
/// allocates nothing for its alarms. (A `BTreeSet` allocated a ~300-byte
/// node per site window, 7 % of the correlator's time.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmIds(smallvec::SmallVec<[CompactString; 1]>);

impl AlarmIds {
    pub fn one(id: CompactString) -> Self {
        AlarmIds(smallvec::smallvec![id])
    }

    /// Adds `id`; false if it was there.
    pub fn insert(&mut self, id: CompactString) -> bool {
        match self.find(&id) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, id);
                true
            }
        }
    }

    /// Removes `id`; false if it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.find(id) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.find(id).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// In order.
    pub fn iter(&self) -> impl Iterator<Item = &CompactString> {
        self.0.iter()
    }

    fn find(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|x| x.as_str().cmp(id))
    }
}

impl FromIterator<CompactString> for AlarmIds {
    fn from_iter<T: IntoIterator<Item = CompactString>>(ids: T) -> Self {
        let mut v: smallvec::SmallVec<[CompactString; 1]> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        AlarmIds(v)
    }
}

impl Serialize for AlarmIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for AlarmIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<CompactString>::deserialize(d)?.into_iter().collect())
    }
}

/// An incident's sites and their down windows, by site id. A hash map, so
/// folding an alarm finds its site in O(1) however many sites a storm
/// holds (a `BTreeMap` of 100 000 string keys cost ~1 µs a lookup in cache
/// misses, half the correlator's budget for an alarm). Iteration is in no
/// particular order (the hasher is seeded per process): output that is shown
/// or compared goes through [`SiteMap::sorted`], and serialization is sorted
/// by site id.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct SiteMap(foldhash::HashMap<CompactString, SiteWindow>);

impl SiteMap {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, site_id: &str) -> Option<&SiteWindow> {
        self.0.get(site_id)
    }

    pub fn contains_key(&self, site_id: &str) -> bool {
        self.0.contains_key(site_id)
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SiteWindow)> {
        self.0.iter().map(|(k, w)| (k.as_str(), w))
    }

    /// In no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(|k| k.as_str())
    }

    /// By site id.
    pub fn sorted(&self) -> Vec<(&str, &SiteWindow)> {
        let mut v: Vec<_> = self.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// By site id.
    pub fn sorted_keys(&self) -> Vec<&str> {
        let mut v: Vec<_> = self.keys().collect();
        v.sort_unstable();
        v
    }
}

impl std::ops::Index<&str> for SiteMap {
    type Output = SiteWindow;

    fn index(&self, site_id: &str) -> &SiteWindow {
        &self.0[site_id]
    }
}

impl Serialize for SiteMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.sorted())
    }
}

/// The folded state of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub state: IncidentState,
    pub seq: u64,
    pub cause: String,
    /// The opening alarm's free-text detail (`specificProblem`), for the NOC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub declared_at: Option<DateTime<Utc>>,
    pub restored_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub etr: Option<DateTime<Utc>>,
    pub message: Option<String>,
    pub sites: SiteMap,
    pub links: BTreeSet<IncidentId>,
    /// Postcodes whose customers were given "down" actions.
    pub notified_postcodes: BTreeSet<String>,
    /// Notified postcodes already given "restored" actions: early, while
    /// the incident was still declared (their own sites came back), or at
    /// resolution.
    #[serde(default)]
    pub restored_postcodes: BTreeSet<String>,
    /// The closing "restored" plan (for the postcodes not restored early)
    /// was made.
    pub restored_planned: bool,
    /// Per postcode told "restored": the seq of the `planned` event that
    /// told it (the next round's version, should it go down again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restored_seq: BTreeMap<String, u64>,
    /// Per postcode down again after being told "restored" within this
    /// incident: its round (the `restored_seq` that ended the one before),
    /// which versions the keys of its actions. Absent: round 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rounds: BTreeMap<String, u64>,
    /// The ETR that passed while the incident was declared (an
    /// `etr_passed` event), until the NOC sets a new one: the NOC's alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etr_passed: Option<DateTime<Utc>>,
    /// Seq of the latest `etr_passed` event (0: none).
    #[serde(default)]
    pub etr_passed_seq: u64,
    /// `etr_passed_seq` when "still working" notices were last planned.
    #[serde(default)]
    pub still_working_seq: u64,
    /// Last time the incident changed (for hold-downs and display).
    pub updated_at: DateTime<Utc>,
    /// Sites currently down (kept by `apply`, so counting is O(1)).
    #[serde(default)]
    pub down: usize,
    /// Latest time a site of the incident came back up.
    #[serde(default)]
    pub last_up: Option<DateTime<Utc>>,
    /// Seq of the latest `updated` event that set the ETR or changed the
    /// NOC's message (0: none): what an update notice tells.
    #[serde(default)]
    pub etr_version: u64,
    /// `etr_version` when ETR update notices were last planned.
    #[serde(default)]
    pub etr_told_version: u64,
    /// A NOC-drawn incident: its area and the postcodes it covers (sorted);
    /// `None` for one the correlator found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<(Area, Vec<String>)>,
    /// The "down" fan-out waits for a NOC approval.
    #[serde(default)]
    pub awaiting_approval: bool,
    /// A NOC operator approved the fan-out.
    #[serde(default)]
    pub approved: bool,
    /// The audience (customers) the latest `approval_required` asked about:
    /// an approved incident that grows past `plan.reapprove_growth` times
    /// this asks again.
    #[serde(default)]
    pub approval_customers: u64,
    /// Sites joining after the declaration wait for a `confirmed` to
    /// enter the footprint (set by the `declared` event).
    #[serde(default)]
    pub confirm_joiners: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApplyError {
    #[error("incident {id}: event seq {got} after seq {have}: a gap in the log")]
    Gap { id: IncidentId, have: u64, got: u64 },
    #[error("incident {0}: first event is not `opened`")]
    NotOpened(IncidentId),
}

impl Incident {
    /// Start an incident from its `opened` event.
    pub fn open(ev: &IncidentEvent) -> Result<Self, ApplyError> {
        let EventKind::Opened { cause, detail } = &ev.kind else {
            return Err(ApplyError::NotOpened(ev.incident_id.clone()));
        };
        if ev.seq != 1 {
            return Err(ApplyError::Gap { id: ev.incident_id.clone(), have: 0, got: ev.seq });
        }
        Ok(Incident {
            id: ev.incident_id.clone(),
            state: IncidentState::Probable,
            seq: 1,
            cause: cause.clone(),
            detail: detail.clone(),
            opened_at: ev.at,
            declared_at: None,
            restored_at: None,
            closed_at: None,
            etr: None,
            message: None,
            sites: SiteMap::default(),
            links: BTreeSet::new(),
            notified_postcodes: BTreeSet::new(),
            restored_postcodes: BTreeSet::new(),
            restored_planned: false,
            restored_seq: BTreeMap::new(),
            rounds: BTreeMap::new(),
            etr_passed: None,
            etr_passed_seq: 0,
            still_working_seq: 0,
            updated_at: ev.at,
            down: 0,
            last_up: None,
            etr_version: 0,
            etr_told_version: 0,
            scope: None,
            awaiting_approval: false,
            approved: false,
            approval_customers: 0,
            confirm_joiners: false,
        })
    }

    /// Fold one event. Returns `Ok(false)` for an event already applied.
    pub fn apply(&mut self, ev: &IncidentEvent) -> Result<bool, ApplyError> {
        if ev.seq <= self.seq {
            return Ok(false);
        }
        if ev.seq != self.seq + 1 {
            return Err(ApplyError::Gap { id: self.id.clone(), have: self.seq, got: ev.seq });
        }
        self.seq = ev.seq;
        self.updated_at = self.updated_at.max(ev.at);
        match &ev.kind {
            EventKind::Opened { .. } => {}
            EventKind::AlarmsRaised { alarms } => {
                for a in alarms {
                    let new = match self.sites.0.get_mut(a.site_id.as_str()) {
                        Some(w) => {
                            w.active.insert(a.alarm_id.clone());
                            // Down again after a clear: a new window from now.
                            let again = w.up_at.is_some();
                            if again {
                                w.down_since = a.at;
                                w.up_at = None;
                            }
                            again
                        }
                        None => {
                            let active = AlarmIds::one(a.alarm_id.clone());
                            // A site joining a declared incident waits
                            // for its `confirmed` to enter the footprint.
                            let pending = self.state == IncidentState::Declared && self.confirm_joiners;
                            self.sites.0.insert(
                                a.site_id.as_str().into(),
                                SiteWindow { down_since: a.at, up_at: None, active, pending },
                            );
                            true
                        }
                    };
                    self.down += new as usize;
                }
            }
            EventKind::AlarmsCleared { alarms } => {
                for a in alarms {
                    if let Some(w) = self.sites.0.get_mut(a.site_id.as_str()) {
                        w.active.remove(a.alarm_id.as_str());
                        if w.active.is_empty() && w.up_at.is_none() {
                            let up = a.at.max(w.down_since);
                            w.up_at = Some(up);
                            self.down -= 1;
                            self.last_up = Some(self.last_up.map_or(up, |l| l.max(up)));
                        }
                    }
                }
            }
            EventKind::Declared { pending, confirm_joiners, .. } => {
                self.state = IncidentState::Declared;
                self.declared_at = Some(ev.at);
                self.confirm_joiners = *confirm_joiners;
                for site in pending {
                    if let Some(w) = self.sites.0.get_mut(site.as_str()) {
                        w.pending = true;
                    }
                }
            }
            EventKind::Updated { cause, etr, message } => {
                if let Some(c) = cause {
                    self.cause = c.clone();
                }
                if etr.is_some() {
                    self.etr = *etr;
                    self.etr_version = ev.seq;
                    // A new ETR: the alert is over until it passes too.
                    self.etr_passed = None;
                }
                if message.is_some() && *message != self.message {
                    // New words from the NOC go to those told, as an
                    // update (the same versioned notice as an ETR change).
                    self.message = message.clone();
                    self.etr_version = ev.seq;
                }
            }
            EventKind::Resolved { restored_at } => {
                self.state = IncidentState::Resolved;
                self.restored_at = Some(*restored_at);
                self.closed_at = Some(ev.at);
                // A closed incident's fan-out waits for nobody.
                self.awaiting_approval = false;
            }
            EventKind::Cancelled { .. } => {
                self.state = IncidentState::Cancelled;
                self.closed_at = Some(ev.at);
                self.awaiting_approval = false;
            }
            EventKind::Dismissed {} => {
                self.state = IncidentState::Dismissed;
                self.closed_at = Some(ev.at);
            }
            EventKind::Linked { other } => {
                self.links.insert(other.clone());
            }
            EventKind::Merged { into } => {
                self.state = IncidentState::Merged;
                self.closed_at = Some(ev.at);
                self.links.insert(into.clone());
            }
            EventKind::Confirmed { sites } => {
                for site in sites {
                    if let Some(w) = self.sites.0.get_mut(site.as_str()) {
                        w.pending = false;
                    }
                }
            }
            EventKind::Dropped { sites, .. } => {
                for site in sites {
                    if let Some(w) = self.sites.0.remove(site.as_str()) {
                        self.down -= w.up_at.is_none() as usize;
                    }
                }
            }
            EventKind::Scoped { area, postcodes } => {
                self.scope = Some((area.clone(), postcodes.clone()));
            }
            EventKind::ApprovalRequired { customers } => {
                // Asked (again): what was approved covers a smaller audience.
                self.awaiting_approval = true;
                self.approved = false;
                self.approval_customers = *customers;
            }
            EventKind::Approved {} => {
                self.awaiting_approval = false;
                self.approved = true;
            }
            EventKind::Planned { phase: Phase::Down, postcodes, .. } => {
                for p in postcodes {
                    // Down again after "restored": a new round.
                    if self.restored_postcodes.remove(p) {
                        self.rounds.insert(p.clone(), self.restored_seq.get(p).copied().unwrap_or(0));
                    }
                }
                self.notified_postcodes.extend(postcodes.iter().cloned());
                // The "down" notices carry the current ETR; those told
                // before got an update planned ahead of this plan.
                self.etr_told_version = self.etr_version;
            }
            EventKind::Planned { phase: Phase::Restored, postcodes, .. } => {
                self.restored_postcodes.extend(postcodes.iter().cloned());
                for p in postcodes {
                    self.restored_seq.insert(p.clone(), ev.seq);
                }
                // Before resolution a restored plan is a partial one.
                self.restored_planned |= !self.state.is_open();
            }
            EventKind::Planned { phase: Phase::EtrUpdate, .. } => {
                self.etr_told_version = self.etr_version;
            }
            EventKind::Planned { phase: Phase::StillWorking, .. } => {
                self.still_working_seq = self.etr_passed_seq;
            }
            EventKind::EtrPassed { etr } => {
                self.etr_passed = Some(*etr);
                self.etr_passed_seq = ev.seq;
            }
        }
        Ok(true)
    }

    /// The round `postcode` is in (0: the first; see [`Incident::rounds`]).
    pub fn round(&self, postcode: &str) -> u64 {
        self.rounds.get(postcode).copied().unwrap_or(0)
    }

    /// Sites with at least one active alarm.
    pub fn down_sites(&self) -> impl Iterator<Item = &str> {
        self.sites.iter().filter(|(_, w)| w.up_at.is_none()).map(|(s, _)| s)
    }

    /// The sites whose coverage is the incident's footprint (what
    /// customers are told about): every site but the pending ones.
    pub fn footprint_sites(&self) -> impl Iterator<Item = (&str, &SiteWindow)> {
        self.sites.iter().filter(|(_, w)| !w.pending)
    }

    /// Sites currently down. O(1).
    pub fn down_count(&self) -> usize {
        self.down
    }

    /// When the last site came back, if every site is up. O(1).
    pub fn all_up_since(&self) -> Option<DateTime<Utc>> {
        if self.down > 0 {
            return None;
        }
        self.last_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }
    fn ev(seq: u64, at: i64, kind: EventKind) -> IncidentEvent {
        IncidentEvent { incident_id: IncidentId("INC-1".into()), seq, at: t(at), actor: "correlator".into(), kind }
    }

    #[test]
    fn alarm_ids_are_a_sorted_set_serialized_as_the_btree_set_was() {
        let mut ids = AlarmIds::one("b".into());
        assert!(ids.insert("a-long-alarm-id-past-the-inline-24-bytes".into()));
        assert!(ids.insert("c".into()));
        assert!(!ids.insert("b".into()), "a repeat is not added");
        assert_eq!(ids.len(), 3);
        assert!(ids.contains("c") && !ids.contains("d"));
        let set: BTreeSet<CompactString> = ids.iter().cloned().collect();
        assert_eq!(serde_json::to_string(&ids).unwrap(), serde_json::to_string(&set).unwrap());
        assert!(ids.remove("b") && !ids.remove("b"));
        assert_eq!(
            ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
            ["a-long-alarm-id-past-the-inline-24-bytes", "c"]
        );
        let read: AlarmIds = serde_json::from_str(r#"["z", "x", "z"]"#).unwrap();
        assert_eq!(read.iter().map(|i| i.as_str()).collect::<Vec<_>>(), ["x", "z"], "sorted, without repeats");
        assert!(ids.remove("c") && ids.remove("a-long-alarm-id-past-the-inline-24-bytes") && ids.is_empty());
    }
    fn a(id: &str, site: &str, at: i64) -> AlarmRef {
        AlarmRef { alarm_id: id.into(), site_id: site.into(), at: t(at) }
    }

    #[test]
    fn folding_tracks_sites_and_ignores_replayed_events() {
        let mut inc = Incident::open(&ev(1, 0, EventKind::Opened { cause: "power".into(), detail: None })).unwrap();
        let raised =
            ev(2, 0, EventKind::AlarmsRaised { alarms: vec![a("a1", "S1", 0), a("a2", "S1", 5), a("a3", "S2", 9)] });
        assert!(inc.apply(&raised).unwrap());
        assert!(!inc.apply(&raised).unwrap(), "a replayed event is a no-op");
        assert_eq!(inc.down_count(), 2);
        inc.apply(&ev(3, 60, EventKind::AlarmsCleared { alarms: vec![a("a1", "S1", 60), a("a3", "S2", 70)] })).unwrap();
        assert_eq!(inc.down_sites().collect::<Vec<_>>(), vec!["S1"], "S1 still has a2 active");
        assert_eq!(inc.all_up_since(), None);
        inc.apply(&ev(4, 90, EventKind::AlarmsCleared { alarms: vec![a("a2", "S1", 90)] })).unwrap();
        assert_eq!(inc.all_up_since(), Some(t(90)));
        assert!(matches!(inc.apply(&ev(6, 99, EventKind::Dismissed {})), Err(ApplyError::Gap { .. })));
    }

    #[test]
    fn an_approval_is_asked_again_and_withdrawn_when_the_incident_closes() {
        let mut inc = Incident::open(&ev(1, 0, EventKind::Opened { cause: "power".into(), detail: None })).unwrap();
        inc.apply(&ev(2, 0, EventKind::Declared { reason: "t".into(), pending: vec![], confirm_joiners: false }))
            .unwrap();
        inc.apply(&ev(3, 1, EventKind::ApprovalRequired { customers: 1200 })).unwrap();
        assert!(inc.awaiting_approval && !inc.approved && inc.approval_customers == 1200);
        inc.apply(&ev(4, 2, EventKind::Approved {})).unwrap();
        assert!(!inc.awaiting_approval && inc.approved);
        // Grown past what was approved: asked again, the approval no
        // longer covers it.
        inc.apply(&ev(5, 3, EventKind::ApprovalRequired { customers: 9000 })).unwrap();
        assert!(inc.awaiting_approval && !inc.approved && inc.approval_customers == 9000);
        // Resolved while waiting: nothing waits any more.
        inc.apply(&ev(6, 4, EventKind::Resolved { restored_at: t(4) })).unwrap();
        assert!(!inc.awaiting_approval, "a closed incident's fan-out waits for nobody");
    }

    #[test]
    fn event_json_is_flat_with_a_type_tag() {
        let e = ev(1, 0, EventKind::Opened { cause: "power".into(), detail: None });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "opened");
        assert_eq!(v["incident_id"], "INC-1");
        let back: IncidentEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
