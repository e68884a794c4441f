//! `outagectl replay`: the daemon's correlator and planner run offline over
//! an alarm file, deterministically (event time only, no wall clock), so
//! the NOC can backtest thresholds. Owns the replay report (one entry per
//! incident: times, sites, postcodes with customer counts, footprint).
//!
//! End of input: timers are run once more at the last event time plus the
//! longer of `min_duration` and `hold_down`, as a live daemon's clock would
//! after the feed went quiet.
//!
//! The JSON form (`--json`) is `schemas/replay-report.v1.schema.json`.

use crate::config::Config;
use crate::geodesy::{self, GeoPoint};
use crate::model::{Incident, IncidentState};
use crate::refdata::RefData;
use crate::sources::decode::decode;
use crate::transforms::correlate::Correlator;
use crate::transforms::plan::Planner;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostcodeImpact {
    pub postcode: String,
    pub customers: usize,
    /// When the first site covering it went down.
    pub down_since: DateTime<Utc>,
    /// When the last site covering it came back (absent while one is down).
    pub restored_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentReport {
    pub id: String,
    pub state: IncidentState,
    pub cause: String,
    pub opened_at: DateTime<Utc>,
    pub declared_at: Option<DateTime<Utc>>,
    pub restored_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub sites: Vec<String>,
    pub postcodes: Vec<PostcodeImpact>,
    pub customers: usize,
    /// GeoJSON MultiPolygon of the coverage of the incident's sites.
    pub footprint: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayReport {
    pub alarms: u64,
    /// Dead-letter reasons and how often each occurred.
    pub dead_lettered: BTreeMap<String, u64>,
    pub incidents: Vec<IncidentReport>,
}

/// Replay JSONL alarm records (one per line; blank lines skipped).
pub fn replay(lines: impl Iterator<Item = String>, refdata: Arc<RefData>, cfg: &Config) -> ReplayReport {
    let mut correlator = Correlator::new(cfg.correlator.clone(), refdata.clone());
    let planner = Planner::new(cfg.plan.clone(), refdata.clone());
    let mut alarms = 0;
    let mut dead = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        alarms += 1;
        let reason = match decode(line.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(a) => match correlator.on_alarm(&a) {
                Ok(_) => continue,
                Err(e) => e.to_string(),
            },
        };
        *dead.entry(reason).or_insert(0) += 1;
    }
    let settle = cfg.correlator.hold_down.max(cfg.correlator.min_duration);
    let end = correlator.watermark() + chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::zero());
    correlator.tick(end);
    let mut incidents: Vec<&Incident> = correlator.incidents().collect();
    incidents.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
    let incidents = incidents.into_iter().map(|inc| report(inc, &planner, &refdata)).collect();
    ReplayReport { alarms, dead_lettered: dead, incidents }
}

fn report(inc: &Incident, planner: &Planner, rd: &RefData) -> IncidentReport {
    let postcodes: Vec<PostcodeImpact> = planner
        .postcode_windows(inc)
        .into_iter()
        .map(|(i, (down_since, restored_at))| {
            let p = &rd.postcodes[i as usize].postcode;
            PostcodeImpact { postcode: p.clone(), customers: rd.customers_in(p).len(), down_since, restored_at }
        })
        .collect();
    let circles = inc.sites.keys().filter_map(|s| rd.site_index(s)).map(|i| {
        let s = rd.site(i);
        (GeoPoint::new(s.lat, s.lon), s.radius_km)
    });
    IncidentReport {
        id: inc.id.0.clone(),
        state: inc.state,
        cause: inc.cause.clone(),
        opened_at: inc.opened_at,
        declared_at: inc.declared_at,
        restored_at: inc.restored_at,
        closed_at: inc.closed_at,
        sites: inc.sites.keys().cloned().collect(),
        customers: postcodes.iter().map(|p| p.customers).sum(),
        postcodes,
        footprint: geodesy::to_geojson(&geodesy::union_of_circles(circles)),
    }
}
