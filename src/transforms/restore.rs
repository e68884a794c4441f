//! Early "service is back", per postcode. Owns the queue of notified
//! postcodes of declared incidents whose covering sites have all come back,
//! waiting out the hold-down before their customers are told — so a town
//! whose mast is repaired hears it then, not when the last site of a
//! county-wide storm comes back, and is credited for its own window.
//! Pure: time (event time) is passed in.
//!
//! Invariant: a postcode is released only if, at release time, every site
//! of the incident that covers it has been up for the hold-down. A site
//! going down again before that takes it out (the next clear reschedules
//! it). Once released, a postcode is restored for this incident until one
//! of its sites goes down again: then the planner tells it "down" again in
//! a new round (keys `/r{n}`, see `plan::Planner::plan_down`), and it
//! waits here again for its sites to come back.

use crate::model::{EventKind, Incident, IncidentEvent, IncidentId, IncidentState};
use crate::refdata::RefData;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Postcode `p`'s own outage window within `inc`: from the first of the
/// incident's sites covering it going down to the last of them coming back;
/// `None` while one of them is down (or none of them is in the incident).
pub fn restored_window(rd: &RefData, inc: &Incident, p: u32) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let mut window: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for s in rd.postcode_sites(p) {
        let Some(w) = inc.sites.get(&rd.site(s).site_id) else { continue };
        let up = w.up_at?;
        window = Some(window.map_or((w.down_since, up), |(a, b)| (a.min(w.down_since), b.max(up))));
    }
    window
}

pub struct Restorations {
    refdata: Arc<RefData>,
    hold_down: Duration,
    /// (due, incident, postcode index): checked again when due.
    queue: BTreeSet<(DateTime<Utc>, IncidentId, u32)>,
}

impl Restorations {
    pub fn new(refdata: Arc<RefData>, hold_down: std::time::Duration) -> Self {
        let hold_down = Duration::from_std(hold_down).unwrap_or(Duration::MAX);
        Restorations { refdata, hold_down, queue: BTreeSet::new() }
    }

    /// Postcodes waiting for their hold-down.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// When postcode `p` came back within `inc` (see [`restored_window`]).
    pub fn up_since(&self, inc: &Incident, p: u32) -> Option<DateTime<Utc>> {
        restored_window(&self.refdata, inc, p).map(|(_, up)| up)
    }

    fn waiting(&self, inc: &Incident, p: u32) -> bool {
        let code = &self.refdata.postcodes[p as usize].postcode;
        inc.state == IncidentState::Declared
            && inc.notified_postcodes.contains(code)
            && !inc.restored_postcodes.contains(code)
    }

    fn consider(&mut self, inc: &Incident, p: u32) {
        if !self.waiting(inc, p) {
            return;
        }
        if let Some(up) = self.up_since(inc, p) {
            self.queue.insert((up + self.hold_down, inc.id.clone(), p));
        }
    }

    /// Follow one event already applied to `inc`: a site coming up may
    /// restore its postcodes; a postcode notified while its sites were
    /// already up (they cleared before the declaration) is restored too.
    pub fn observe(&mut self, inc: &Incident, ev: &IncidentEvent) {
        if inc.state != IncidentState::Declared {
            return;
        }
        match &ev.kind {
            EventKind::AlarmsCleared { alarms } => {
                let rd = self.refdata.clone();
                for a in alarms {
                    let Some(s) = rd.site_index(&a.site_id) else { continue };
                    for &p in rd.site_postcodes(s) {
                        self.consider(inc, p);
                    }
                }
            }
            EventKind::Planned { postcodes, .. } => {
                for code in postcodes {
                    if let Some(p) = self.refdata.postcode_index(code) {
                        self.consider(inc, p);
                    }
                }
            }
            _ => {}
        }
    }

    /// After a restart: queue every notified, unrestored postcode of a
    /// declared incident whose sites are up.
    pub fn rebuild(&mut self, inc: &Incident) {
        let codes: Vec<u32> =
            inc.notified_postcodes.iter().filter_map(|code| self.refdata.postcode_index(code)).collect();
        for p in codes {
            self.consider(inc, p);
        }
    }

    /// When the next queued postcode is due to be checked, if any.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|q| q.0)
    }

    /// Postcodes to tell "restored" by `now`, per incident (sorted), each
    /// checked against the incident's current state.
    pub fn due<'a>(
        &mut self,
        now: DateTime<Utc>,
        incident: impl Fn(&IncidentId) -> Option<&'a Incident>,
    ) -> BTreeMap<IncidentId, Vec<u32>> {
        let mut out: BTreeMap<IncidentId, Vec<u32>> = BTreeMap::new();
        while let Some((due, id, p)) = self.queue.first().cloned() {
            if due > now {
                break;
            }
            self.queue.pop_first();
            let Some(inc) = incident(&id).filter(|inc| self.waiting(inc, p)) else { continue };
            if inc.all_up_since().is_some_and(|up| up + self.hold_down <= now) {
                continue; // The whole incident resolves now: its closing plan tells everyone.
            }
            match self.up_since(inc, p) {
                Some(up) if up + self.hold_down <= now => out.entry(id).or_default().push(p),
                // Came back later than this entry was queued for: its own
                // clear queued it again.
                _ => {}
            }
        }
        for ps in out.values_mut() {
            ps.sort_unstable();
            ps.dedup();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlarmRef, Phase, Postcode, Site};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    /// A and B 20 km apart, one postcode under each; AB is under both.
    fn refdata() -> Arc<RefData> {
        let site = |id: &str, lon| Site { site_id: id.into(), lat: 40.0, lon, radius_km: 2.0, group_id: None };
        let pc = |code: &str, lon| Postcode { postcode: code.into(), lat: 40.0, lon, population: None, timezone: None };
        Arc::new(
            RefData::build(
                vec![site("A", -3.0), site("A2", -2.96), site("B", -2.8)],
                vec![pc("PA", -3.0), pc("PAB", -2.98), pc("PB", -2.8)],
                vec![],
            )
            .unwrap(),
        )
    }

    struct Log {
        inc: Incident,
    }

    impl Log {
        fn new() -> Self {
            let ev = IncidentEvent {
                incident_id: IncidentId("INC-1".into()),
                seq: 1,
                at: t(0),
                actor: "correlator".into(),
                kind: EventKind::Opened { cause: "power".into(), detail: None },
            };
            Log { inc: Incident::open(&ev).unwrap() }
        }
        fn push(&mut self, at: i64, kind: EventKind) -> IncidentEvent {
            let ev = IncidentEvent {
                incident_id: self.inc.id.clone(),
                seq: self.inc.seq + 1,
                at: t(at),
                actor: "correlator".into(),
                kind,
            };
            assert!(self.inc.apply(&ev).unwrap());
            ev
        }
        fn alarms(sites: &[&str], at: i64) -> Vec<AlarmRef> {
            sites
                .iter()
                .map(|s| AlarmRef { alarm_id: format!("{s}-1").into(), site_id: (*s).into(), at: t(at) })
                .collect()
        }
    }

    fn declared_with_all_down(r: &mut Restorations) -> Log {
        let mut log = Log::new();
        log.push(0, EventKind::AlarmsRaised { alarms: Log::alarms(&["A", "A2", "B"], 0) });
        log.push(300, EventKind::Declared { reason: "test".into(), pending: vec![], confirm_joiners: false });
        let codes = ["PA", "PAB", "PB"].map(String::from).to_vec();
        let ev = log.push(300, EventKind::Planned { phase: Phase::Down, postcodes: codes, actions: 3, silent: vec![] });
        r.observe(&log.inc, &ev);
        assert_eq!(r.pending(), 0, "nothing is up yet");
        log
    }

    #[test]
    fn a_postcode_is_released_once_all_its_sites_stayed_up_for_the_hold_down() {
        let rd = refdata();
        let mut r = Restorations::new(rd.clone(), std::time::Duration::from_secs(600));
        let mut log = declared_with_all_down(&mut r);
        // A comes back at 1000: PA is only under A; PAB is also under A2.
        let ev = log.push(1000, EventKind::AlarmsCleared { alarms: Log::alarms(&["A"], 1000) });
        r.observe(&log.inc, &ev);
        assert!(r.due(t(1599), |_| Some(&log.inc)).is_empty(), "hold-down not over");
        let due = r.due(t(1600), |_| Some(&log.inc));
        let pa = rd.postcode_index("PA").unwrap();
        assert_eq!(due.get(&log.inc.id), Some(&vec![pa]), "PAB still has A2 down; PB has B down");
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn a_site_down_again_within_the_hold_down_keeps_its_postcode_waiting() {
        let rd = refdata();
        let mut r = Restorations::new(rd.clone(), std::time::Duration::from_secs(600));
        let mut log = declared_with_all_down(&mut r);
        let ev = log.push(1000, EventKind::AlarmsCleared { alarms: Log::alarms(&["B"], 1000) });
        r.observe(&log.inc, &ev);
        log.push(1200, EventKind::AlarmsRaised { alarms: Log::alarms(&["B"], 1200) });
        assert!(r.due(t(1700), |_| Some(&log.inc)).is_empty(), "B flapped: PB is down again");
        let ev = log.push(2000, EventKind::AlarmsCleared { alarms: Log::alarms(&["B"], 2000) });
        r.observe(&log.inc, &ev);
        assert!(r.due(t(2599), |_| Some(&log.inc)).is_empty(), "the hold-down counts from the last clear");
        let pb = rd.postcode_index("PB").unwrap();
        assert_eq!(r.due(t(2600), |_| Some(&log.inc)).get(&log.inc.id), Some(&vec![pb]));
    }

    #[test]
    fn restored_or_resolved_postcodes_are_not_released_again_and_restart_rebuilds_the_queue() {
        let rd = refdata();
        let mut r = Restorations::new(rd.clone(), std::time::Duration::from_secs(600));
        let mut log = declared_with_all_down(&mut r);
        let ev = log.push(1000, EventKind::AlarmsCleared { alarms: Log::alarms(&["A", "A2"], 1000) });
        r.observe(&log.inc, &ev);
        // A restart loses the queue; the folded incident rebuilds it.
        let mut fresh = Restorations::new(rd.clone(), std::time::Duration::from_secs(600));
        fresh.rebuild(&log.inc);
        assert_eq!(fresh.pending(), r.pending());
        let due = r.due(t(1600), |_| Some(&log.inc));
        let released: Vec<String> =
            due[&log.inc.id].iter().map(|&p| rd.postcodes[p as usize].postcode.clone()).collect();
        assert_eq!(released, ["PA", "PAB"]);
        log.push(1600, EventKind::Planned { phase: Phase::Restored, postcodes: released, actions: 2, silent: vec![] });
        assert!(!log.inc.restored_planned, "a partial restored plan is not the closing one");
        fresh.rebuild(&log.inc);
        assert!(fresh.due(t(9999), |_| Some(&log.inc)).is_empty(), "already restored");
    }
}
