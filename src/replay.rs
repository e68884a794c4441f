//! `outagectl replay`: the daemon's correlator and planner run offline over
//! an alarm file, deterministically (event time only, no wall clock), so
//! the NOC can backtest thresholds. Owns the replay report (one entry per
//! incident: times, sites, postcodes with customer counts, footprint).
//!
//! End of input: timers are run once more at the last event time plus the
//! longer of `min_duration` and `hold_down`, as a live daemon's clock would
//! after the feed went quiet.
//!
//! The JSON form (`--json`) is `schemas/replay-report.v1.schema.json`;
//! `--credits FILE` writes the credits the incidents would queue
//! (`schemas/credit.v1`, one per line): the rules without a period
//! threshold per incident, the Spanish rules through the compensation
//! ledger (incidents in order of opening), then one `below_threshold` line
//! per customer, rule and billing period whose entitlements never became
//! due ([`crate::transforms::ledger::BelowThreshold`]).

use crate::config::Config;
use crate::geodesy::{self, GeoPoint};
use crate::model::{Credit, Incident, IncidentState};
use crate::refdata::RefData;
use crate::sources::decode::decode_formats;
use crate::sources::elements::Elements;
use crate::transforms::correlate::Correlator;
use crate::transforms::ledger::{BelowThreshold, Ledger};
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
    /// The opening alarm's free-text detail (`specificProblem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
    /// Alarms decoded but not applied, by reason (`repeated_raise`,
    /// `clear_without_raise`, `not_service_affecting`, `stale_raise`);
    /// reasons that did not occur are left out.
    #[serde(default)]
    pub ignored: BTreeMap<String, u64>,
    /// Raises by the class of their probable cause (`power`,
    /// `transmission`, …); classes that did not occur are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cause_classes: BTreeMap<String, u64>,
    /// Causes of raises that neither the standards' table nor the
    /// `[causes]` rules classify, most frequent first (at most
    /// `UNCLASSIFIED_SHOWN`; an empty `cause` counts the rest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unclassified_causes: Vec<UnclassifiedCause>,
    pub incidents: Vec<IncidentReport>,
}

/// How many unclassified causes a report names.
pub const UNCLASSIFIED_SHOWN: usize = 50;

/// One probable cause the configuration does not classify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnclassifiedCause {
    pub cause: String,
    /// Raises that carried it.
    pub raises: u64,
}

/// Replay alarm records, one per line in any accepted format (blank lines
/// skipped; a line that is not UTF-8 or not an alarm is a dead letter). Only
/// a read error stops it.
pub fn replay(
    lines: impl Iterator<Item = std::io::Result<Vec<u8>>>,
    refdata: Arc<RefData>,
    cfg: &Config,
) -> std::io::Result<ReplayReport> {
    replay_with_credits(lines, refdata, cfg, &mut |_| Ok(()))
}

/// [`replay`], and hand every credit the incidents would queue (under
/// `cfg.plan.compensation`) to `credits`, incident by incident: the
/// backtest finance runs before a rule change goes live.
pub fn replay_with_credits(
    lines: impl Iterator<Item = std::io::Result<Vec<u8>>>,
    refdata: Arc<RefData>,
    cfg: &Config,
    credits: &mut dyn FnMut(Credit) -> std::io::Result<()>,
) -> std::io::Result<ReplayReport> {
    replay_with_ledger(lines, refdata, cfg, credits, &mut |_| Ok(()))
}

/// [`replay_with_credits`], and hand every (customer, rule, billing
/// period) whose entitlements never became due to `below`, after the
/// credits.
pub fn replay_with_ledger(
    lines: impl Iterator<Item = std::io::Result<Vec<u8>>>,
    refdata: Arc<RefData>,
    cfg: &Config,
    credits: &mut dyn FnMut(Credit) -> std::io::Result<()>,
    below: &mut dyn FnMut(BelowThreshold) -> std::io::Result<()>,
) -> std::io::Result<ReplayReport> {
    let classifier = cfg.classifier().map_err(std::io::Error::other)?;
    let mut correlator = Correlator::with_classifier(cfg.correlator.clone(), refdata.clone(), classifier.clone());
    let planner =
        Planner::new(cfg.plan.clone(), refdata.clone()).map_err(std::io::Error::other)?.with_classifier(classifier);
    let elements = Elements::new(&cfg.ingest.elements).map_err(std::io::Error::other)?;
    let mut alarms = 0;
    let mut dead = BTreeMap::new();
    let mut events = Vec::new();
    // As the daemon: alarms in the watermark's order (`transforms::order`),
    // the file being one partition read in one go; a later arrival than
    // `ingest.lateness` is applied as it comes, as it would be live.
    let mut order = crate::transforms::order::Reorder::new(cfg.ingest.lateness, cfg.ingest.idle_after);
    let (wall, mono) = (chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, std::time::Duration::ZERO);
    let mut apply = |a: &crate::model::Alarm, dead: &mut BTreeMap<String, u64>| {
        if let Err(e) = correlator.on_alarm_into(a, &mut events) {
            *dead.entry(e.to_string()).or_insert(0) += 1;
        }
        events.clear();
    };
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let rec = Arc::new(crate::sources::SourceRecord {
            topic: "replay".into(),
            partition: 0,
            offset: i64::try_from(n).unwrap_or(i64::MAX),
            key: None,
            payload: Vec::new(),
        });
        for (i, (format, decoded)) in decode_formats(&line).into_iter().enumerate() {
            alarms += 1;
            // As the daemon: the element becomes its site before correlation.
            let decoded = decoded
                .map_err(|e| e.to_string())
                .and_then(|mut a| elements.resolve(&refdata, format, &mut a).map(|()| a).map_err(|e| e.to_string()));
            match decoded {
                Err(e) => *dead.entry(e).or_insert(0) += 1,
                Ok(a) => {
                    if let Some(late) = order.push(&rec, u32::try_from(i).unwrap_or(u32::MAX), a, mono) {
                        apply(&late, &mut dead);
                    }
                }
            }
        }
        for h in order.release(wall, mono) {
            apply(&h.alarm, &mut dead);
        }
    }
    // The end of the file: every partition idle, everything released.
    let idle = cfg.ingest.idle_after + std::time::Duration::from_secs(1);
    for h in order.release(chrono::DateTime::<chrono::Utc>::MAX_UTC, idle) {
        apply(&h.alarm, &mut dead);
    }
    let settle = cfg.correlator.hold_down.max(cfg.correlator.min_duration);
    let end = correlator.watermark() + chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::zero());
    correlator.tick(end);
    let mut incidents: Vec<&Incident> = correlator.incidents().collect();
    incidents.sort_by(|a, b| (a.opened_at, &a.id).cmp(&(b.opened_at, &b.id)));
    // As the billing sink: period entitlements through the ledger.
    let mut ledger = Ledger::new();
    for inc in &incidents {
        planner.backtest_credits(inc, &mut |c: Credit| {
            if c.period.is_none() {
                return credits(c);
            }
            let Some(r) = ledger.accrue(&c) else { return Ok(()) };
            ledger.apply(&r);
            match r.credited {
                Some(due) => credits(due),
                None => Ok(()),
            }
        })?;
    }
    for b in ledger.below_threshold() {
        below(b)?;
    }
    let incidents = incidents.into_iter().map(|inc| report(inc, &planner, &refdata)).collect();
    let ignored =
        correlator.counts.by_reason().into_iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect();
    let tally = &correlator.tally;
    let cause_classes = tally.classes().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect();
    let unclassified_causes = tally
        .top(UNCLASSIFIED_SHOWN)
        .into_iter()
        .map(|(cause, raises)| UnclassifiedCause { cause, raises })
        .chain((tally.overflow > 0).then(|| UnclassifiedCause { cause: String::new(), raises: tally.overflow }))
        .collect();
    Ok(ReplayReport { alarms, dead_lettered: dead, ignored, cause_classes, unclassified_causes, incidents })
}

/// What a replay says about the configuration's coverage of a feed: the
/// records it could not use (unknown elements and sites, malformed
/// records) and the probable causes nobody classifies, as text for an
/// operator; and whether everything was covered.
pub fn coverage(report: &ReplayReport) -> (String, bool) {
    use std::fmt::Write;
    let mut out = String::new();
    let dead: u64 = report.dead_lettered.values().sum();
    let unclassified: u64 = report.unclassified_causes.iter().map(|u| u.raises).sum();
    let _ = writeln!(out, "{} alarms, {dead} not usable, {unclassified} raises of unclassified causes", report.alarms);
    if !report.cause_classes.is_empty() {
        let classes: Vec<String> = report.cause_classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(out, "  raises by cause class: {}", classes.join(", "));
    }
    if dead > 0 {
        let _ = writeln!(out, "  not usable (would be dead-lettered):");
        let mut by: Vec<(&String, &u64)> = report.dead_lettered.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (reason, n) in by {
            let _ = writeln!(out, "    ×{n}: {reason}");
        }
    }
    if unclassified > 0 {
        let _ = writeln!(
            out,
            "  causes neither the standards' table nor [causes] rules classify (add [[causes.rules]] for them):"
        );
        for u in &report.unclassified_causes {
            match u.cause.as_str() {
                "" => writeln!(out, "    ×{}: (other causes)", u.raises),
                c => writeln!(out, "    ×{}: {c:?}", u.raises),
            }
            .unwrap_or_default();
        }
    }
    (out, dead == 0 && unclassified == 0)
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
    // The footprint's sites: pending ones (joined after declaration, never
    // down for the blip window) were never told about.
    let mut sites: Vec<String> = inc.footprint_sites().map(|(s, _)| s.to_string()).collect();
    sites.sort_unstable();
    let circles = sites.iter().filter_map(|s| rd.site_index(s)).map(|i| {
        let s = rd.site(i);
        (GeoPoint::new(s.lat, s.lon), s.radius_km)
    });
    IncidentReport {
        id: inc.id.to_string(),
        state: inc.state,
        cause: inc.cause.clone(),
        detail: inc.detail.clone(),
        opened_at: inc.opened_at,
        // A merged incident was never public: only one declared in the
        // same instant as the merge, with nothing planned, is merged.
        declared_at: inc.declared_at.filter(|_| inc.state != IncidentState::Merged),
        restored_at: inc.restored_at,
        closed_at: inc.closed_at,
        footprint: geodesy::to_geojson(&geodesy::union_of_circles(circles)),
        sites,
        customers: postcodes.iter().map(|p| p.customers).sum(),
        postcodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refdata::{load_postcodes, load_sites};
    use crate::simulate::{self, ScenarioConfig, WireFormat};
    use std::collections::BTreeSet;

    fn demo_refdata() -> Arc<RefData> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
        let sites = load_sites(&dir.join("sites.csv")).unwrap();
        let postcodes = load_postcodes(&dir.join("postcodes.csv")).unwrap();
        Arc::new(RefData::build(sites, postcodes, vec![]).unwrap())
    }

    fn lines(records: Vec<(String, String)>) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
        records.into_iter().map(|(_, v)| Ok(v.into_bytes()))
    }

    /// The same scenario in the three wire formats gives the same incidents,
    /// and the declared ones are the ground truth's, each within one true
    /// incident.
    #[test]
    fn every_format_replays_to_the_same_incidents_matching_the_truth() {
        let rd = demo_refdata();
        let cfg = ScenarioConfig { seed: 7, start: "2026-11-23T04:00:00Z".parse().unwrap(), ..Default::default() };
        let scenario = simulate::generate(&rd.sites, &cfg).unwrap();
        let reports: Vec<ReplayReport> = [WireFormat::Native, WireFormat::Ves, WireFormat::Tmf642]
            .into_iter()
            .map(|f| replay(lines(simulate::encode(&scenario.alarms, f, 8)), rd.clone(), &Config::default()).unwrap())
            .collect();
        let summary = |r: &ReplayReport| -> Vec<(String, IncidentState, Vec<String>)> {
            r.incidents.iter().map(|i| (i.id.clone(), i.state, i.sites.clone())).collect()
        };
        assert_eq!(summary(&reports[0]), summary(&reports[1]), "VES");
        assert_eq!(summary(&reports[0]), summary(&reports[2]), "TMF642");
        assert!(reports.iter().all(|r| r.dead_lettered.is_empty() && r.alarms == scenario.alarms.len() as u64));
        let declared: Vec<&IncidentReport> = reports[0].incidents.iter().filter(|i| i.declared_at.is_some()).collect();
        assert_eq!(declared.len(), scenario.truth.incidents.len());
        for inc in declared {
            let sites: BTreeSet<&String> = inc.sites.iter().collect();
            assert!(
                scenario.truth.incidents.iter().any(|t| sites.iter().all(|s| t.sites.contains(s))),
                "{} is not inside one true incident",
                inc.id
            );
        }
    }

    #[test]
    fn bad_lines_are_dead_letters_and_the_rest_is_replayed() {
        let rd = demo_refdata();
        let good = simulate::encode(
            &simulate::generate(&rd.sites, &ScenarioConfig { seed: 3, ..Default::default() }).unwrap().alarms,
            WireFormat::Native,
            1,
        );
        let n = good.len() as u64;
        let mut input: Vec<std::io::Result<Vec<u8>>> = vec![Ok(b"\xff\xfe".to_vec()), Ok(b"  ".to_vec())];
        input.extend(lines(good));
        let report = replay(input.into_iter(), rd, &Config::default()).unwrap();
        assert_eq!(report.alarms, n + 1, "the blank line is not an alarm");
        assert_eq!(report.dead_lettered.values().sum::<u64>(), 1, "{:?}", report.dead_lettered);
        assert!(report.incidents.iter().any(|i| i.declared_at.is_some()));
    }

    #[test]
    fn elements_become_sites_before_correlation_and_unknown_ones_are_dead_letters() {
        let rd = demo_refdata();
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feeds");
        let mut cfg = Config::default();
        cfg.ingest.elements = vec![crate::sources::elements::ElementRule {
            format: crate::sources::decode::Format::Ves,
            pattern: r"^(?P<site>S-[A-Z]{2}-\d+)-".into(),
        }];
        let raise = std::fs::read_to_string(fixtures.join("ves/fault-7.2-los-raise.json")).unwrap();
        let raise = serde_json::from_str::<serde_json::Value>(&raise).unwrap().to_string();
        let unknown = r#"{"alarm_id":"x1","site_id":"ne-unknown-9","state":"raised","severity":"minor",
            "probable_cause":"door open","event_time":"2026-11-23T04:13:00Z"}"#
            .replace('\n', " ");
        let alone = replay(vec![Ok(raise.clone().into_bytes())].into_iter(), rd.clone(), &cfg).unwrap();
        assert!(alone.dead_lettered.is_empty(), "the rule places the VES element: {:?}", alone.dead_lettered);
        let input = vec![Ok(raise.clone().into_bytes()), Ok(unknown.into_bytes())];
        let report = replay(input.into_iter(), rd.clone(), &cfg).unwrap();
        assert_eq!(report.alarms, 2);
        let reasons: Vec<&String> = report.dead_lettered.keys().collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("ne-unknown-9") && reasons[0].contains("native"), "{reasons:?}");
        assert_eq!(report.ignored, alone.ignored, "the unknown element is not counted as ignored");
        // Without the rule, the VES element is unknown too.
        let report = replay(vec![Ok(raise.into_bytes())].into_iter(), rd, &Config::default()).unwrap();
        assert!(report.dead_lettered.keys().any(|r| r.contains("S-CT-000002-enb-1")), "{report:?}");
    }

    #[test]
    fn the_credit_backtest_is_deterministic_and_follows_the_configured_rules() {
        use crate::refdata::load_customers;
        use crate::transforms::compensate::{FlatGoodwill, RuleConfig};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
        let rd = Arc::new(
            RefData::build(
                load_sites(&dir.join("sites.csv")).unwrap(),
                load_postcodes(&dir.join("postcodes.csv")).unwrap(),
                load_customers(&dir.join("customers.csv")).unwrap(),
            )
            .unwrap(),
        );
        let cfg = ScenarioConfig { seed: 7, start: "2026-11-23T04:00:00Z".parse().unwrap(), ..Default::default() };
        let records = simulate::encode(&simulate::generate(&rd.sites, &cfg).unwrap().alarms, WireFormat::Native, 1);
        let run = |cfg: &Config| {
            let mut credits = Vec::new();
            let report = replay_with_credits(lines(records.clone()), rd.clone(), cfg, &mut |c| {
                credits.push(c);
                Ok(())
            })
            .unwrap();
            (report, credits)
        };
        let (report, prorated) = run(&Config::default());
        assert!(!prorated.is_empty());
        assert_eq!(prorated, run(&Config::default()).1, "the same input gives the same ids and amounts");
        let ids: BTreeSet<_> = prorated.iter().map(|c| c.credit_id).collect();
        assert_eq!(ids.len(), prorated.len(), "one credit per customer, service, rule and incident");
        let resolved: BTreeSet<&str> =
            report.incidents.iter().filter(|i| i.restored_at.is_some()).map(|i| i.id.as_str()).collect();
        assert!(prorated.iter().all(|c| resolved.contains(c.incident_id.0.as_str())));
        // One day of the fee instead: fee × 1 / 30, rounded half up, each.
        let mut flat = Config::default();
        flat.plan.compensation.rules = vec![RuleConfig::FlatGoodwill(FlatGoodwill::default())];
        let (_, day) = run(&flat);
        assert!(!day.is_empty());
        for c in &day {
            let fee = rd.customers.iter().find(|x| x.customer_id == c.customer_id).unwrap().monthly_fee.minor;
            assert_eq!(c.amount.minor, (fee * 2 + 30) / 60, "{}", c.calculation);
            assert_eq!(c.rule_id, "flat-goodwill-v1");
        }
        let mut none = Config::default();
        none.plan.compensation.rules = vec![];
        assert!(run(&none).1.is_empty(), "no rules, no credits");
    }
}
