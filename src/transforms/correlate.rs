//! Alarms → incident events. Owns the rules that turn sites going down
//! together into one geographic incident and decide when it is declared,
//! resolved or dismissed. Pure: no I/O; time comes from the alarms' event
//! times and from `tick(now)`.
//!
//! The rules:
//! - a service-affecting raise (severity ≥ `min_severity`, cause in
//!   `service_affecting_causes`) on a site joins the open incident that has
//!   a down or recently cleared member site within `r_a + r_b +
//!   neighbour_gap_km` or in the same power/backhaul group, or opens a new
//!   one (linked to the site's last resolved incident: a recurrence). When it touches several, it joins the
//!   oldest declared one (else the oldest probable one); the other probable
//!   ones are `merged` into it (nobody was told of them yet), the other
//!   declared ones are `linked`, never merged, so public ids stay stable;
//! - a Probable incident is declared when `declare_sites` sites are down, or
//!   when `min_sites` have been down for `min_duration`;
//! - it is dismissed when all its sites are up again before that;
//! - a Declared incident is resolved once every site has been up for
//!   `hold_down` (flap suppression).
//!
//! Cost: one alarm costs a hash lookup, an R-tree query over the sites near
//! it and O(log n) timer work; nothing scans the active alarms or the open
//! incidents. Timers live in a deadline queue.
//!
//! Invariant: every event returned has already been applied to the
//! correlator's own state, so its state equals the fold of the log.

use crate::config::CorrelatorConfig;
use crate::geodesy::GeoPoint;
use crate::model::incident::ApplyError;
use crate::model::{Alarm, AlarmRef, EventKind, Incident, IncidentEvent, IncidentId, IncidentState};
use crate::refdata::{Indexed, RefData};
use chrono::{DateTime, Duration, Utc};
use foldhash::{HashMap, HashSet};
use rstar::RTree;
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CorrelateError {
    #[error("unknown site {0:?} and the alarm carries no lat/lon")]
    UnknownSite(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

const ACTOR: &str = "correlator";

/// What the correlator saw but did not turn into events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Raises of an alarm already active (feeds re-send).
    pub repeated_raises: u64,
    /// Clears of an alarm no open incident holds.
    pub clears_without_raise: u64,
    /// Raises below the severity or outside the causes that count.
    pub not_service_affecting: u64,
}

/// Which open incident each site is a member of: a vector by inventory
/// index (no hashing on the hot path), a map for sites only alarms located.
struct OpenIndex {
    by_site: Vec<Option<IncidentId>>,
    adhoc: HashMap<String, IncidentId>,
}

impl OpenIndex {
    fn get(&self, rd: &RefData, site: &str) -> Option<&IncidentId> {
        match rd.site_index(site) {
            Some(i) => self.by_site[i as usize].as_ref(),
            None => self.adhoc.get(site),
        }
    }

    fn set(&mut self, rd: &RefData, site: &str, id: Option<IncidentId>) {
        match (rd.site_index(site), id) {
            (Some(i), id) => self.by_site[i as usize] = id,
            (None, Some(id)) => {
                self.adhoc.insert(site.to_string(), id);
            }
            (None, None) => {
                self.adhoc.remove(site);
            }
        }
    }
}

pub struct Correlator {
    cfg: CorrelatorConfig,
    refdata: Arc<RefData>,
    /// Lower-cased service-affecting causes.
    causes: Vec<String>,
    min_duration: Duration,
    hold_down: Duration,
    incidents: HashMap<IncidentId, Incident>,
    /// Member site → its open incident.
    open: OpenIndex,
    /// Site → the last incident it was in that was resolved.
    resolved_by_site: HashMap<String, IncidentId>,
    /// Sites not in the inventory, located by their alarms.
    adhoc: Vec<(String, GeoPoint, f64)>,
    adhoc_index: HashMap<String, u32>,
    adhoc_tree: RTree<Indexed>,
    /// When each Probable incident last reached `min_sites` down.
    quorum_since: HashMap<IncidentId, DateTime<Utc>>,
    /// Per open incident: postcodes its sites cover, and their customers.
    coverage: HashMap<IncidentId, (HashSet<u32>, u64)>,
    /// Pending timer per incident, and the queue of them by deadline.
    deadline: HashMap<IncidentId, DateTime<Utc>>,
    timers: BTreeSet<(DateTime<Utc>, IncidentId)>,
    /// Latest event time seen.
    watermark: Option<DateTime<Utc>>,
    pub counts: Counts,
}

impl Correlator {
    pub fn new(cfg: CorrelatorConfig, refdata: Arc<RefData>) -> Self {
        let causes = cfg.service_affecting_causes.iter().map(|c| c.trim().to_lowercase()).collect();
        let dur = |d: std::time::Duration| Duration::from_std(d).unwrap_or(Duration::MAX);
        let n_sites = refdata.sites.len();
        Correlator {
            min_duration: dur(cfg.min_duration),
            hold_down: dur(cfg.hold_down),
            cfg,
            refdata,
            causes,
            incidents: HashMap::default(),
            open: OpenIndex { by_site: vec![None; n_sites], adhoc: HashMap::default() },
            resolved_by_site: HashMap::default(),
            adhoc: Vec::new(),
            adhoc_index: HashMap::default(),
            adhoc_tree: RTree::new(),
            quorum_since: HashMap::default(),
            coverage: HashMap::default(),
            deadline: HashMap::default(),
            timers: BTreeSet::new(),
            watermark: None,
            counts: Counts::default(),
        }
    }

    pub fn incident(&self, id: &IncidentId) -> Option<&Incident> {
        self.incidents.get(id)
    }

    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    /// Postcodes (indexes into `refdata.postcodes`) an open incident's sites
    /// cover, kept as sites join: the planner's footprint without a rescan.
    pub fn covered(&self, id: &IncidentId) -> Option<Vec<u32>> {
        self.coverage.get(id).map(|c| c.0.iter().copied().collect())
    }

    /// Customers billed in the postcodes an open incident's sites cover.
    pub fn customers(&self, id: &IncidentId) -> u64 {
        self.coverage.get(id).map_or(0, |c| c.1)
    }

    /// The latest alarm event time seen; the epoch before any.
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
                if !inc.apply(ev)? {
                    return Ok(());
                }
            }
        }
        self.index(ev);
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
        self.index(&ev);
        Ok(ev)
    }

    fn emit(&mut self, id: &IncidentId, at: DateTime<Utc>, kind: EventKind, out: &mut Vec<IncidentEvent>) {
        // Only called for incidents we hold, with the next seq: cannot fail.
        if let Ok(ev) = self.append(id, at, ACTOR, kind) {
            out.push(ev);
        }
    }

    /// Keep the site index, the quorum clock and the timer of one incident
    /// in step with an event just applied to it.
    fn index(&mut self, ev: &IncidentEvent) {
        let id = &ev.incident_id;
        let Some(inc) = self.incidents.get(id) else { return };
        match &ev.kind {
            EventKind::AlarmsRaised { alarms } if inc.state.is_open() => {
                for a in alarms {
                    self.open.set(&self.refdata, &a.site_id, Some(id.clone()));
                }
                let (covered, customers) = self.coverage.entry(id.clone()).or_default();
                for a in alarms {
                    let Some(site) = self.refdata.site_index(&a.site_id) else { continue };
                    for &p in self.refdata.site_postcodes(site) {
                        if covered.insert(p) {
                            *customers +=
                                self.refdata.customers_in(&self.refdata.postcodes[p as usize].postcode).len() as u64;
                        }
                    }
                }
            }
            EventKind::Resolved { .. }
            | EventKind::Dismissed {}
            | EventKind::Cancelled { .. }
            | EventKind::Merged { .. } => {
                self.coverage.remove(id);
                for s in inc.sites.keys() {
                    if self.open.get(&self.refdata, s) == Some(id) {
                        self.open.set(&self.refdata, s, None);
                    }
                    if inc.state == IncidentState::Resolved {
                        self.resolved_by_site.insert(s.clone(), id.clone());
                    }
                }
            }
            _ => {}
        }
        if inc.state == IncidentState::Probable && inc.down_count() >= self.cfg.min_sites {
            self.quorum_since.entry(id.clone()).or_insert(ev.at);
        } else {
            self.quorum_since.remove(id);
        }
        let due = match inc.state {
            IncidentState::Probable => match self.quorum_since.get(id) {
                Some(q) => Some(*q + self.min_duration),
                None => inc.all_up_since(),
            },
            IncidentState::Declared => inc.all_up_since().map(|u| u + self.hold_down),
            _ => None,
        };
        if let Some(old) = self.deadline.remove(id) {
            self.timers.remove(&(old, id.clone()));
        }
        if let Some(due) = due {
            self.deadline.insert(id.clone(), due);
            self.timers.insert((due, id.clone()));
        }
    }

    fn locate(&mut self, alarm: &Alarm) -> Result<(GeoPoint, f64), CorrelateError> {
        if let Some(i) = self.refdata.site_index(&alarm.site_id) {
            let s = self.refdata.site(i);
            return Ok((GeoPoint::new(s.lat, s.lon), s.radius_km));
        }
        if let Some(&i) = self.adhoc_index.get(&alarm.site_id) {
            let (_, p, r) = self.adhoc[i as usize];
            return Ok((p, r));
        }
        let (Some(lat), Some(lon)) = (alarm.lat, alarm.lon) else {
            return Err(CorrelateError::UnknownSite(alarm.site_id.clone()));
        };
        let (p, r) = (GeoPoint::new(lat, lon), self.cfg.default_radius_km);
        let i = self.adhoc.len() as u32;
        self.adhoc.push((alarm.site_id.clone(), p, r));
        self.adhoc_index.insert(alarm.site_id.clone(), i);
        self.adhoc_tree.insert(Indexed::new(p.xyz(), i));
        Ok((p, r))
    }

    fn service_affecting(&self, a: &Alarm) -> bool {
        a.severity >= self.cfg.min_severity && self.causes.contains(&a.probable_cause.trim().to_lowercase())
    }

    /// Apply one alarm; returns the events it caused, in order. Timers due
    /// by the alarm's event time run first, so a replayed backlog gives the
    /// answer it gave live.
    pub fn on_alarm(&mut self, alarm: &Alarm) -> Result<Vec<IncidentEvent>, CorrelateError> {
        let t = alarm.event_time;
        let mut out = self.tick(self.watermark.map_or(t, |w| w.max(t)));
        self.advance(t);
        let aref = AlarmRef { alarm_id: alarm.alarm_id.clone(), site_id: alarm.site_id.clone(), at: t };
        let holding = |c: &Self| {
            let id = c.open.get(&c.refdata, &alarm.site_id)?;
            let active = c.incidents.get(id)?.sites.get(&alarm.site_id)?.active.contains(&alarm.alarm_id);
            Some((id.clone(), active))
        };
        if alarm.is_clear() {
            match holding(self) {
                Some((id, true)) => self.emit(&id, t, EventKind::AlarmsCleared { alarms: vec![aref] }, &mut out),
                _ => self.counts.clears_without_raise += 1,
            }
            return Ok(out);
        }
        if !self.service_affecting(alarm) {
            self.counts.not_service_affecting += 1;
            return Ok(out);
        }
        let (p, r) = self.locate(alarm)?;
        let id = match holding(self) {
            Some((_, true)) => {
                self.counts.repeated_raises += 1;
                return Ok(out);
            }
            Some((id, false)) => {
                self.emit(&id, t, EventKind::AlarmsRaised { alarms: vec![aref] }, &mut out);
                id
            }
            None => self.join_or_open(alarm, aref, p, r, &mut out)?,
        };
        let inc = &self.incidents[&id];
        if inc.state == IncidentState::Probable {
            let (down, customers) = (inc.down_count(), self.customers(&id));
            let reason = if down >= self.cfg.declare_sites {
                Some(format!("{down} sites down (>= {})", self.cfg.declare_sites))
            } else if down >= self.cfg.min_sites && customers >= self.cfg.declare_customers {
                Some(format!("{down} sites down covering {customers} customers (>= {})", self.cfg.declare_customers))
            } else {
                None
            };
            if let Some(reason) = reason {
                self.emit(&id, t, EventKind::Declared { reason }, &mut out);
            }
        }
        Ok(out)
    }

    fn join_or_open(
        &mut self,
        alarm: &Alarm,
        aref: AlarmRef,
        p: GeoPoint,
        r: f64,
        out: &mut Vec<IncidentEvent>,
    ) -> Result<IncidentId, CorrelateError> {
        let t = alarm.event_time;
        // The survivor: the oldest declared incident (its id is public),
        // else the oldest probable one.
        let mut candidates: Vec<(bool, DateTime<Utc>, IncidentId)> = self
            .neighbours(&alarm.site_id, p, r)
            .into_iter()
            .map(|id| {
                let inc = &self.incidents[&id];
                (inc.state != IncidentState::Declared, inc.opened_at, id)
            })
            .collect();
        candidates.sort();
        if let Some(((_, _, first), others)) = candidates.split_first() {
            for (probable, _, other) in others {
                if *probable {
                    self.merge(other, first, t, out);
                } else if !self.incidents[first].links.contains(other) {
                    self.emit(first, t, EventKind::Linked { other: other.clone() }, out);
                    self.emit(other, t, EventKind::Linked { other: first.clone() }, out);
                }
            }
            self.emit(first, t, EventKind::AlarmsRaised { alarms: vec![aref] }, out);
            return Ok(first.clone());
        }
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
        self.emit(&id, t, EventKind::AlarmsRaised { alarms: vec![aref] }, out);
        if let Some(prev) = self.resolved_by_site.get(&alarm.site_id).cloned() {
            self.emit(&id, t, EventKind::Linked { other: prev }, out);
        }
        Ok(id)
    }

    /// Fold probable incident `from` into `into`: `from` closes as merged,
    /// and its down sites' active alarms are raised in `into` with the time
    /// each site went down (so compensation windows keep their start).
    fn merge(&mut self, from: &IncidentId, into: &IncidentId, t: DateTime<Utc>, out: &mut Vec<IncidentEvent>) {
        let alarms: Vec<AlarmRef> = self.incidents[from]
            .sites
            .iter()
            .filter(|(_, w)| w.up_at.is_none())
            .flat_map(|(site, w)| {
                w.active.iter().map(|a| AlarmRef { alarm_id: a.clone(), site_id: site.clone(), at: w.down_since })
            })
            .collect();
        self.emit(from, t, EventKind::Merged { into: into.clone() }, out);
        if !alarms.is_empty() {
            self.emit(into, t, EventKind::AlarmsRaised { alarms }, out);
        }
    }

    /// Open incidents with a member site whose coverage is within the gap
    /// of a circle at `p` with radius `r`, or in the same power/backhaul
    /// group as `site` (shared infrastructure: one failure upstream, however
    /// far apart the sites are).
    fn neighbours(&self, site: &str, p: GeoPoint, r: f64) -> Vec<IncidentId> {
        let gap = self.cfg.neighbour_gap_km;
        let reach = r + self.refdata.max_radius_km().max(self.cfg.default_radius_km) + gap;
        // Usually one or two distinct incidents among dozens of sites:
        // dedupe references, clone once at the end.
        let mut out: Vec<&IncidentId> = Vec::new();
        fn add<'a>(out: &mut Vec<&'a IncidentId>, id: &'a IncidentId) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        for i in self.refdata.sites_within(p, reach) {
            if let Some(id) = &self.open.by_site[i as usize] {
                let s = self.refdata.site(i);
                if p.distance_km(GeoPoint::new(s.lat, s.lon)) <= r + s.radius_km + gap {
                    add(&mut out, id);
                }
            }
        }
        let chord2 = crate::geodesy::chord2_for_km(reach);
        for e in self.adhoc_tree.locate_within_distance(p.xyz(), chord2) {
            let (s, q, rq) = &self.adhoc[e.data as usize];
            if let Some(id) = self.open.adhoc.get(s) {
                if p.distance_km(*q) <= r + rq + gap {
                    add(&mut out, id);
                }
            }
        }
        if let Some(idx) = self.refdata.site_index(site) {
            for peer in self.refdata.group_peers(idx) {
                if let Some(id) = &self.open.by_site[peer as usize] {
                    add(&mut out, id);
                }
            }
        }
        out.into_iter().cloned().collect()
    }

    /// Run the timers due by `now`: declare, dismiss, resolve. Deterministic
    /// order: by deadline, then incident id.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<IncidentEvent> {
        let mut out = Vec::new();
        while let Some((due, id)) = self.timers.first().cloned() {
            if due > now {
                break;
            }
            self.timers.remove(&(due, id.clone()));
            self.deadline.remove(&id);
            let Some(inc) = self.incidents.get(&id) else { continue };
            match inc.state {
                IncidentState::Probable if self.quorum_since.contains_key(&id) => {
                    let reason = format!(
                        "{} sites down for >= {}",
                        inc.down_count(),
                        humantime::format_duration(self.cfg.min_duration)
                    );
                    self.emit(&id, due, EventKind::Declared { reason }, &mut out);
                }
                IncidentState::Probable if inc.all_up_since().is_some() => {
                    self.emit(&id, due, EventKind::Dismissed {}, &mut out);
                }
                IncidentState::Declared => {
                    if let Some(up) = inc.all_up_since() {
                        self.emit(&id, due, EventKind::Resolved { restored_at: up }, &mut out);
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

    #[test]
    fn a_recurrence_after_resolution_is_a_new_incident_linked_to_the_old() {
        let mut c = correlator(cfg());
        for (i, s) in ["S1", "S2", "S3", "S4"].iter().enumerate() {
            c.on_alarm(&raise(&format!("A{i}"), s, 0)).unwrap();
        }
        for (i, s) in ["S1", "S2", "S3", "S4"].iter().enumerate() {
            c.on_alarm(&clear(&format!("A{i}"), s, 100)).unwrap();
        }
        let resolved = c.tick(t(100 + 600));
        assert_eq!(kinds(&resolved), ["resolved"]);
        let old = resolved[0].incident_id.clone();
        let evs = c.on_alarm(&raise("B1", "S1", 2000)).unwrap();
        assert_eq!(kinds(&evs), ["opened", "alarms_raised", "linked"]);
        assert_ne!(evs[0].incident_id, old);
        assert!(matches!(&evs[2].kind, EventKind::Linked { other } if *other == old));
    }

    #[test]
    fn what_is_not_news_is_counted() {
        let mut c = correlator(cfg());
        c.on_alarm(&clear("Z", "S1", 0)).unwrap();
        c.on_alarm(&raise("A", "S1", 0)).unwrap();
        c.on_alarm(&raise("A", "S1", 5)).unwrap();
        let mut minor = raise("M", "S2", 0);
        minor.severity = Severity::Minor;
        c.on_alarm(&minor).unwrap();
        assert_eq!(c.counts, Counts { repeated_raises: 1, clears_without_raise: 1, not_service_affecting: 1 });
    }

    #[test]
    fn sites_covering_many_customers_declare_at_once() {
        use crate::model::money::{Currency, Money};
        use crate::model::{Customer, Postcode, Services};
        let site = |id: &str, lat, lon| Site { site_id: id.into(), lat, lon, radius_km: 2.0, group_id: None };
        let fee = Money::new(3000, Currency::parse("USD").unwrap());
        let customers = (0..1000)
            .map(|i| Customer {
                customer_id: format!("C{i}"),
                msisdn: None,
                email: None,
                postcode: "02901".into(),
                language: "en".into(),
                services: Services::parse("voice").unwrap(),
                opt_out: Default::default(),
                monthly_fee: fee,
                avg_bill_3m: fee,
            })
            .collect();
        let rd = RefData::build(
            vec![site("S1", 41.820, -71.410), site("S2", 41.829, -71.410), site("S3", 41.820, -71.398)],
            vec![Postcode { postcode: "02901".into(), lat: 41.821, lon: -71.409, population: None, timezone: None }],
            customers,
        )
        .unwrap();
        let mut c = Correlator::new(CorrelatorConfig { declare_customers: 1000, ..cfg() }, Arc::new(rd));
        let mut evs = vec![];
        for (i, s) in ["S1", "S2", "S3"].iter().enumerate() {
            evs.extend(c.on_alarm(&raise(&format!("A{i}"), s, 0)).unwrap());
        }
        assert_eq!(c.customers(&evs[0].incident_id), 1000);
        assert_eq!(kinds(&evs).last(), Some(&"declared"), "no min_duration wait for 1000 customers");
        let mut c2 = correlator(CorrelatorConfig { declare_customers: 1000, ..cfg() });
        let evs: Vec<_> = ["S1", "S2", "S3"]
            .iter()
            .enumerate()
            .flat_map(|(i, s)| c2.on_alarm(&raise(&format!("A{i}"), s, 0)).unwrap())
            .collect();
        assert!(!kinds(&evs).contains(&"declared"), "without customers the rule waits");
    }

    /// West (W1..W3) and east (E1..E3) clusters 25 km apart, too far to
    /// join; M between them is within reach of both.
    fn two_clusters(cfg: CorrelatorConfig) -> Correlator {
        let site = |id: &str, lon| Site { site_id: id.into(), lat: 41.5, lon, radius_km: 2.0, group_id: None };
        let sites = vec![
            site("W1", -71.50),
            site("W2", -71.49),
            site("W3", -71.48),
            site("M", -71.335),
            site("E1", -71.19),
            site("E2", -71.18),
            site("E3", -71.17),
        ];
        Correlator::new(cfg, Arc::new(RefData::build(sites, vec![], vec![]).unwrap()))
    }

    fn raise_all(c: &mut Correlator, sites: &[&str], at: i64) -> Vec<IncidentEvent> {
        sites.iter().flat_map(|s| c.on_alarm(&raise(&format!("A-{s}"), s, at)).unwrap()).collect()
    }

    fn state(c: &Correlator, id: &IncidentId) -> IncidentState {
        c.incident(id).unwrap().state
    }

    #[test]
    fn probable_incidents_that_meet_are_merged_into_the_oldest() {
        let mut c = two_clusters(CorrelatorConfig { declare_sites: 5, ..cfg() });
        let west = raise_all(&mut c, &["W1", "W2"], 0)[0].incident_id.clone();
        let east = raise_all(&mut c, &["E1", "E2"], 10)[0].incident_id.clone();
        assert_ne!(west, east, "25 km apart: two incidents");
        let evs = raise_all(&mut c, &["M"], 30);
        assert_eq!(kinds(&evs), ["merged", "alarms_raised", "alarms_raised", "declared"]);
        assert!(matches!(&evs[0].kind, EventKind::Merged { into } if *into == west) && evs[0].incident_id == east);
        assert_eq!(state(&c, &east), IncidentState::Merged);
        let w = c.incident(&west).unwrap();
        assert_eq!(w.down_count(), 5);
        assert_eq!(w.sites["E1"].down_since, t(10), "merged sites keep the time they went down");
        let more = c.on_alarm(&clear("A-E1", "E1", 40)).unwrap();
        assert_eq!(more[0].incident_id, west, "later alarms of merged sites go to the survivor");
    }

    #[test]
    fn a_probable_incident_merges_into_a_declared_one_even_a_younger_one() {
        let mut c = two_clusters(cfg());
        let west = raise_all(&mut c, &["W1", "W2"], 0)[0].incident_id.clone();
        let east = raise_all(&mut c, &["E1", "E2", "E3"], 10)[0].incident_id.clone();
        let evs = c.tick(t(200));
        assert_eq!((kinds(&evs), &evs[0].incident_id), (vec!["declared"], &east));
        let evs = raise_all(&mut c, &["M"], 210);
        assert_eq!(evs[0].incident_id, west);
        assert!(matches!(&evs[0].kind, EventKind::Merged { into } if *into == east), "its id is public: it stays");
        assert_eq!(c.incident(&east).unwrap().down_count(), 6);
    }

    #[test]
    fn declared_incidents_that_meet_are_linked_both_ways_not_merged() {
        let mut c = two_clusters(cfg());
        let west = raise_all(&mut c, &["W1", "W2", "W3"], 0)[0].incident_id.clone();
        let east = raise_all(&mut c, &["E1", "E2", "E3"], 10)[0].incident_id.clone();
        assert_eq!(kinds(&c.tick(t(200))), ["declared", "declared"]);
        let evs = raise_all(&mut c, &["M"], 210);
        assert_eq!(kinds(&evs), ["linked", "linked", "alarms_raised"]);
        assert_eq!(evs[2].incident_id, west, "the oldest takes the new site");
        assert!(c.incident(&west).unwrap().links.contains(&east) && c.incident(&east).unwrap().links.contains(&west));
        assert_eq!((state(&c, &west), state(&c, &east)), (IncidentState::Declared, IncidentState::Declared));
    }
}
