//! Alarms → incident events. Owns the rules that turn sites going down
//! together into one geographic incident and decide when it is declared,
//! resolved or dismissed. Pure: no I/O, time comes from the alarms' event
//! times and from `tick(now)`.
//!
//! The rules (a first version; tuned by `outagectl replay` later):
//! - a service-affecting raise (severity ≥ `min_severity`, cause in
//!   `service_affecting_causes`) on a site joins the open incident that has
//!   a member site within `r_a + r_b + neighbour_gap_km`, the oldest when
//!   several (the others are `linked`), or opens a new one;
//! - a Probable incident is declared when `declare_sites` sites are down, or
//!   when `min_sites` have been down for `min_duration`;
//! - it is dismissed when all its sites clear before that;
//! - a Declared incident is resolved once every site has been up for
//!   `hold_down`.
//!
//! Invariant: every event returned has already been applied to the
//! correlator's own state, so its state equals the fold of the log.

use crate::config::CorrelatorConfig;
use crate::geodesy::GeoPoint;
use crate::model::incident::ApplyError;
use crate::model::{Alarm, AlarmRef, EventKind, Incident, IncidentEvent, IncidentId, IncidentState};
use crate::refdata::RefData;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CorrelateError {
    #[error("unknown site {0:?} and the alarm carries no lat/lon")]
    UnknownSite(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

const ACTOR: &str = "correlator";

pub struct Correlator {
    cfg: CorrelatorConfig,
    refdata: Arc<RefData>,
    /// Lower-cased service-affecting causes.
    causes: Vec<String>,
    incidents: HashMap<IncidentId, Incident>,
    /// Member site → its open incident.
    open_by_site: HashMap<String, IncidentId>,
    /// Sites not in the inventory, located by their alarms: (point, radius).
    adhoc: HashMap<String, (GeoPoint, f64)>,
    /// When each Probable incident last reached `min_sites` down.
    quorum_since: HashMap<IncidentId, DateTime<Utc>>,
    /// Latest event time seen.
    watermark: Option<DateTime<Utc>>,
}

impl Correlator {
    pub fn new(cfg: CorrelatorConfig, refdata: Arc<RefData>) -> Self {
        let causes = cfg.service_affecting_causes.iter().map(|c| c.trim().to_lowercase()).collect();
        Correlator {
            cfg,
            refdata,
            causes,
            incidents: HashMap::new(),
            open_by_site: HashMap::new(),
            adhoc: HashMap::new(),
            quorum_since: HashMap::new(),
            watermark: None,
        }
    }

    pub fn incident(&self, id: &IncidentId) -> Option<&Incident> {
        self.incidents.get(id)
    }

    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    /// The latest event time seen (alarms and restored events); the epoch
    /// before any.
    pub fn watermark(&self) -> DateTime<Utc> {
        self.watermark.unwrap_or(DateTime::UNIX_EPOCH)
    }

    fn advance(&mut self, t: DateTime<Utc>) {
        self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
    }

    /// Fold one record of the incident log (on start).
    pub fn restore(&mut self, ev: &IncidentEvent) -> Result<(), CorrelateError> {
        if ev.actor == ACTOR {
            // Planner and NOC events carry wall time, not alarm time.
            self.advance(ev.at);
        }
        match self.incidents.get_mut(&ev.incident_id) {
            None => {
                let inc = Incident::open(ev)?;
                self.incidents.insert(inc.id.clone(), inc);
            }
            Some(inc) => {
                inc.apply(ev)?;
            }
        }
        self.reindex(&ev.incident_id, ev.at);
        Ok(())
    }

    /// Append an event made outside the correlator (the planner's `planned`,
    /// a NOC command) to an incident: numbered and applied here.
    pub fn append(
        &mut self,
        id: &IncidentId,
        at: DateTime<Utc>,
        actor: &str,
        kind: EventKind,
    ) -> Result<IncidentEvent, CorrelateError> {
        let inc = self.incidents.get_mut(id).ok_or_else(|| ApplyError::NotOpened(id.clone()))?;
        let ev = IncidentEvent { incident_id: id.clone(), seq: inc.seq + 1, at, actor: actor.into(), kind };
        inc.apply(&ev)?;
        self.reindex(id, at);
        Ok(ev)
    }

    fn emit(&mut self, id: &IncidentId, at: DateTime<Utc>, kind: EventKind, out: &mut Vec<IncidentEvent>) {
        // Only called for incidents we hold, with the next seq: cannot fail.
        if let Ok(ev) = self.append(id, at, ACTOR, kind) {
            out.push(ev);
        }
    }

    /// Keep the site index and the quorum clock in step with one incident.
    fn reindex(&mut self, id: &IncidentId, at: DateTime<Utc>) {
        let Some(inc) = self.incidents.get(id) else { return };
        if inc.state.is_open() {
            for s in inc.sites.keys() {
                self.open_by_site.insert(s.clone(), id.clone());
            }
        } else {
            for s in inc.sites.keys() {
                if self.open_by_site.get(s) == Some(id) {
                    self.open_by_site.remove(s);
                }
            }
        }
        if inc.state == IncidentState::Probable && inc.down_count() >= self.cfg.min_sites {
            self.quorum_since.entry(id.clone()).or_insert(at);
        } else {
            self.quorum_since.remove(id);
        }
    }

    fn locate(&mut self, alarm: &Alarm) -> Result<(GeoPoint, f64), CorrelateError> {
        if let Some(i) = self.refdata.site_index(&alarm.site_id) {
            let s = self.refdata.site(i);
            return Ok((GeoPoint::new(s.lat, s.lon), s.radius_km));
        }
        if let (Some(lat), Some(lon)) = (alarm.lat, alarm.lon) {
            let at = (GeoPoint::new(lat, lon), self.cfg.default_radius_km);
            self.adhoc.insert(alarm.site_id.clone(), at);
            return Ok(at);
        }
        self.adhoc.get(&alarm.site_id).copied().ok_or_else(|| CorrelateError::UnknownSite(alarm.site_id.clone()))
    }

    fn service_affecting(&self, a: &Alarm) -> bool {
        a.severity >= self.cfg.min_severity && self.causes.contains(&a.probable_cause.trim().to_lowercase())
    }

    /// Apply one alarm; returns the events it caused, in order.
    pub fn on_alarm(&mut self, alarm: &Alarm) -> Result<Vec<IncidentEvent>, CorrelateError> {
        let t = alarm.event_time;
        let mut out = self.tick(self.watermark.map_or(t, |w| w.max(t)));
        self.advance(t);
        let aref = AlarmRef { alarm_id: alarm.alarm_id.clone(), site_id: alarm.site_id.clone(), at: t };
        if alarm.is_clear() {
            let Some(id) = self.open_by_site.get(&alarm.site_id).cloned() else { return Ok(out) };
            let active =
                self.incidents[&id].sites.get(&alarm.site_id).is_some_and(|w| w.active.contains(&alarm.alarm_id));
            if active {
                self.emit(&id, t, EventKind::AlarmsCleared { alarms: vec![aref] }, &mut out);
            }
            return Ok(out);
        }
        if !self.service_affecting(alarm) {
            return Ok(out);
        }
        let (p, r) = self.locate(alarm)?;
        let id = match self.open_by_site.get(&alarm.site_id).cloned() {
            Some(id) => {
                if self.incidents[&id].sites.get(&alarm.site_id).is_some_and(|w| w.active.contains(&alarm.alarm_id)) {
                    return Ok(out); // a repeated raise
                }
                self.emit(&id, t, EventKind::AlarmsRaised { alarms: vec![aref] }, &mut out);
                id
            }
            None => {
                let mut candidates: Vec<&Incident> =
                    self.neighbours(p, r).into_iter().filter_map(|id| self.incidents.get(&id)).collect();
                candidates.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
                let ids: Vec<(IncidentId, BTreeSet<IncidentId>)> =
                    candidates.iter().map(|i| (i.id.clone(), i.links.clone())).collect();
                match ids.split_first() {
                    None => {
                        let id = IncidentId::derive(&alarm.site_id, &alarm.alarm_id, t);
                        let opened = IncidentEvent {
                            incident_id: id.clone(),
                            seq: 1,
                            at: t,
                            actor: ACTOR.into(),
                            kind: EventKind::Opened { cause: alarm.probable_cause.clone() },
                        };
                        self.incidents.insert(id.clone(), Incident::open(&opened)?);
                        out.push(opened);
                        self.emit(&id, t, EventKind::AlarmsRaised { alarms: vec![aref] }, &mut out);
                        id
                    }
                    Some(((first, links), others)) => {
                        self.emit(first, t, EventKind::AlarmsRaised { alarms: vec![aref] }, &mut out);
                        for (other, _) in others {
                            if !links.contains(other) {
                                self.emit(first, t, EventKind::Linked { other: other.clone() }, &mut out);
                            }
                        }
                        first.clone()
                    }
                }
            }
        };
        let inc = &self.incidents[&id];
        if inc.state == IncidentState::Probable && inc.down_count() >= self.cfg.declare_sites {
            let reason = format!("{} sites down (>= {})", inc.down_count(), self.cfg.declare_sites);
            self.emit(&id, t, EventKind::Declared { reason }, &mut out);
        }
        Ok(out)
    }

    /// Open incidents with a member site whose coverage is within the gap
    /// of a circle at `p` with radius `r`, sorted, deduplicated.
    fn neighbours(&self, p: GeoPoint, r: f64) -> BTreeSet<IncidentId> {
        let gap = self.cfg.neighbour_gap_km;
        let reach = r + self.refdata.max_radius_km().max(self.cfg.default_radius_km) + gap;
        let mut out = BTreeSet::new();
        for i in self.refdata.sites_within(p, reach) {
            let s = self.refdata.site(i);
            if let Some(id) = self.open_by_site.get(&s.site_id) {
                if p.distance_km(GeoPoint::new(s.lat, s.lon)) <= r + s.radius_km + gap {
                    out.insert(id.clone());
                }
            }
        }
        for (site, (q, rq)) in &self.adhoc {
            if let Some(id) = self.open_by_site.get(site) {
                if p.distance_km(*q) <= r + rq + gap {
                    out.insert(id.clone());
                }
            }
        }
        out
    }

    /// Run the timers at `now`: declare, dismiss, resolve.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<IncidentEvent> {
        let mut out = Vec::new();
        let min_duration = chrono::Duration::from_std(self.cfg.min_duration).unwrap_or(chrono::Duration::MAX);
        let hold_down = chrono::Duration::from_std(self.cfg.hold_down).unwrap_or(chrono::Duration::MAX);
        let mut open: Vec<IncidentId> =
            self.incidents.values().filter(|i| i.state.is_open()).map(|i| i.id.clone()).collect();
        open.sort();
        for id in open {
            let inc = &self.incidents[&id];
            match inc.state {
                IncidentState::Probable => {
                    if let Some(since) = self.quorum_since.get(&id) {
                        if now - *since >= min_duration {
                            let at = *since + min_duration;
                            let reason = format!(
                                "{} sites down for >= {}",
                                inc.down_count(),
                                humantime::format_duration(self.cfg.min_duration)
                            );
                            self.emit(&id, at, EventKind::Declared { reason }, &mut out);
                            continue;
                        }
                    }
                    if let Some(up) = inc.all_up_since() {
                        self.emit(&id, up, EventKind::Dismissed {}, &mut out);
                    }
                }
                IncidentState::Declared => {
                    if let Some(up) = inc.all_up_since() {
                        if now - up >= hold_down {
                            self.emit(&id, up + hold_down, EventKind::Resolved { restored_at: up }, &mut out);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}
