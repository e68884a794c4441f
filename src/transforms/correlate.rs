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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlarmState, Severity, Site};
    use std::time::Duration;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    /// S1..S4 about a kilometre apart; FAR 80 km north.
    fn correlator(cfg: CorrelatorConfig) -> Correlator {
        let site = |id: &str, lat, lon| Site { site_id: id.into(), lat, lon, radius_km: 2.0, group_id: None };
        let rd = RefData::build(
            vec![
                site("S1", 41.820, -71.410),
                site("S2", 41.829, -71.410),
                site("S3", 41.820, -71.398),
                site("S4", 41.829, -71.398),
                site("FAR", 42.500, -71.400),
            ],
            vec![],
            vec![],
        )
        .unwrap();
        Correlator::new(cfg, Arc::new(rd))
    }

    fn cfg() -> CorrelatorConfig {
        CorrelatorConfig {
            min_sites: 3,
            declare_sites: 4,
            min_duration: Duration::from_secs(120),
            hold_down: Duration::from_secs(600),
            ..Default::default()
        }
    }

    fn raise(id: &str, site: &str, at: i64) -> Alarm {
        Alarm {
            alarm_id: id.into(),
            site_id: site.into(),
            state: AlarmState::Raised,
            severity: Severity::Critical,
            probable_cause: "Mains Power Failure".into(),
            event_time: t(at),
            lat: None,
            lon: None,
        }
    }

    fn clear(id: &str, site: &str, at: i64) -> Alarm {
        Alarm { state: AlarmState::Cleared, severity: Severity::Cleared, ..raise(id, site, at) }
    }

    fn kinds(evs: &[IncidentEvent]) -> Vec<&'static str> {
        evs.iter().map(|e| e.kind.type_name()).collect()
    }

    #[test]
    fn neighbours_form_one_incident_declared_after_min_duration_and_resolved_after_hold_down() {
        let mut c = correlator(cfg());
        let mut log = vec![];
        for (i, s) in ["S1", "S2", "S3"].iter().enumerate() {
            log.extend(c.on_alarm(&raise(&format!("A{i}"), s, i as i64 * 10)).unwrap());
        }
        assert_eq!(
            kinds(&log),
            ["opened", "alarms_raised", "alarms_raised", "alarms_raised"],
            "one incident for three neighbours"
        );
        assert!(c.on_alarm(&raise("A0", "S1", 30)).unwrap().is_empty(), "a repeated raise is not news");
        assert!(c.tick(t(100)).is_empty(), "not declared before min_duration");
        let d = c.tick(t(200));
        assert_eq!(kinds(&d), ["declared"]);
        assert_eq!(d[0].at, t(20 + 120), "declared when the rule became true, not when the tick ran");
        log.extend(d);
        for (i, s) in ["S1", "S2", "S3"].iter().enumerate() {
            log.extend(c.on_alarm(&clear(&format!("A{i}"), s, 3600 + i as i64)).unwrap());
        }
        assert!(c.tick(t(3602 + 599)).is_empty(), "still inside the hold-down");
        let r = c.tick(t(3602 + 600));
        assert_eq!(kinds(&r), ["resolved"]);
        assert!(matches!(r[0].kind, EventKind::Resolved { restored_at } if restored_at == t(3602)));
        log.extend(r);
        // The fold of the log is the correlator's state.
        let mut again = correlator(cfg());
        for e in &log {
            again.restore(e).unwrap();
        }
        let id = &log[0].incident_id;
        assert_eq!(again.incident(id), c.incident(id));
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn many_sites_declare_at_once_and_a_site_down_again_holds_resolution() {
        let mut c = correlator(cfg());
        let mut evs = vec![];
        for (i, s) in ["S1", "S2", "S3", "S4"].iter().enumerate() {
            evs.extend(c.on_alarm(&raise(&format!("A{i}"), s, 0)).unwrap());
        }
        assert_eq!(kinds(&evs).last(), Some(&"declared"), "declare_sites reached");
        for (i, s) in ["S1", "S2", "S3", "S4"].iter().enumerate() {
            c.on_alarm(&clear(&format!("A{i}"), s, 1000)).unwrap();
        }
        c.on_alarm(&raise("B1", "S2", 1300)).unwrap();
        assert!(c.tick(t(5000)).is_empty(), "S2 is down again: not resolved");
        assert_eq!(c.incidents().count(), 1, "the re-raise joined the declared incident");
    }

    #[test]
    fn an_isolated_flap_is_dismissed_and_noise_is_ignored() {
        let mut c = correlator(cfg());
        c.on_alarm(&raise("F1", "FAR", 0)).unwrap();
        let mut minor = raise("N1", "S1", 0);
        minor.severity = Severity::Minor;
        assert!(c.on_alarm(&minor).unwrap().is_empty());
        let mut door = raise("N2", "S1", 0);
        door.probable_cause = "door open".into();
        assert!(c.on_alarm(&door).unwrap().is_empty());
        let evs = c.on_alarm(&clear("F1", "FAR", 60)).unwrap();
        assert_eq!(kinds(&evs), ["alarms_cleared"]);
        assert_eq!(kinds(&c.tick(t(61))), ["dismissed"]);
        assert!(c.incidents().all(|i| i.state == IncidentState::Dismissed));
    }

    #[test]
    fn a_backlog_declares_on_event_time_without_ticks() {
        let mut c = correlator(cfg());
        for (i, s) in ["S1", "S2", "S3"].iter().enumerate() {
            c.on_alarm(&raise(&format!("A{i}"), s, 0)).unwrap();
        }
        // 30 minutes later in event time, delivered straight after.
        let evs = c.on_alarm(&clear("A0", "S1", 1800)).unwrap();
        assert_eq!(kinds(&evs), ["declared", "alarms_cleared"], "timers ran at the alarm's event time first");
    }

    #[test]
    fn unknown_sites_need_coordinates() {
        let mut c = correlator(cfg());
        assert_eq!(c.on_alarm(&raise("X", "NEW", 0)), Err(CorrelateError::UnknownSite("NEW".into())));
        let mut located = raise("X", "NEW", 0);
        (located.lat, located.lon) = (Some(41.821), Some(-71.405));
        assert_eq!(kinds(&c.on_alarm(&located).unwrap()), ["opened", "alarms_raised"]);
        let evs = c.on_alarm(&raise("Y", "S1", 5)).unwrap();
        assert_eq!(kinds(&evs), ["alarms_raised"], "a known site next to the located one joins its incident");
    }
}
