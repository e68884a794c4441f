//! Scenario simulator: a pure, deterministic generator of realistic telecom
//! alarm storms with a known answer.
//!
//! Owns: turning reference-data sites and a [`ScenarioConfig`] into a stream
//! of normalized [`Alarm`]s (as a fault-management feed would publish them)
//! plus the [`GroundTruth`] the correlator should recover from it. It is used
//! for demos, load tests and end-to-end accuracy checks.
//!
//! What a scenario contains:
//! - **Power failures**: whole power/backhaul groups (`Site::group_id`) go
//!   down together with `critical` alarms and come back 45–120 min later,
//!   staggered. One ground-truth incident each.
//! - **Storm tracks**: a 15–25 km circle moving in a straight line at
//!   40–70 km/h for 1–2 h between two populated places; about 60 % of the
//!   sites it passes over go down (`major`) as it reaches them and clear
//!   30–180 min later. One ground-truth incident each.
//! - **Noise** that must never become an incident: isolated single-site
//!   flaps (`major` "loss of signal" for 30–240 s, ≥ 20 km from any incident
//!   and from each other) and a few non-service-affecting `minor`/`warning`
//!   alarms.
//! - **A day's background** (off by default; `city_flaps`, `long_outages`,
//!   `maintenance`): flaps on sites drawn uniformly — so at site density,
//!   densest in cities — anywhere and any time, beside the incidents too;
//!   isolated outages of 1–6 h (half during the incidents) and maintenance
//!   windows (`outOfService`, 30–120 min, night), never within
//!   [`COINCIDENCE_KM`] of (or in the group of) a real failure starting
//!   within [`COINCIDENCE_S`]: closer, no one could tell them apart.
//! - **The same area twice** (`recurrences`): a power failure's group fails
//!   again 4–8 h after it came back; a second ground-truth incident.
//! - **Feed defects**: repeated raises of the same `alarm_id`, delivery
//!   out of event-time order by a bounded jitter, and late re-sends: a
//!   raise re-sent with its original event time after the alarm cleared
//!   (an NMS resynchronising its active alarms), which must not bring the
//!   site down again.
//!
//! Determinism: the same seed, the same set of sites (in any order) and the
//! same config give identical output. Randomness comes only from
//! `ChaCha8Rng` (portable across platforms), one stream per phase, and
//! nothing is iterated in hash order. Site lists are processed in `site_id`
//! order, so the order of the input slice does not matter.
//!
//! Cost: O(n log n) in the number of sites (one sort, a few linear scans per
//! storm track); 100k sites take milliseconds. No I/O except the
//! [`write_jsonl`] and [`write_truth`] helpers.

use crate::geodesy::{GeoPoint, EARTH_RADIUS_KM};
use crate::model::{Alarm, AlarmState, Severity, Site};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

// Probable causes are the standards' own names (ITU-T X.733/X.721), as
// real feeds send them; the vendor-style free text goes in
// `specific_problem` (see [`specific_problem`]).

/// Probable cause of a power-failure alarm (X.733 `powerProblem`).
pub const CAUSE_MAINS_POWER: &str = "powerProblem";
/// Probable cause reported by some sites of a power group (downstream of the
/// failed hub, they lose transmission rather than power).
pub const CAUSE_BACKHAUL: &str = "communicationsSubsystemFailure";
/// Probable cause of some storm alarms.
pub const CAUSE_EQUIPMENT: &str = "equipmentMalfunction";
/// Probable cause of some storm alarms and of every flap.
pub const CAUSE_LOSS_OF_SIGNAL: &str = "lossOfSignal";
/// Probable cause of a site taken down for planned works (X.733
/// `outOfService`; class other, so it counts).
pub const CAUSE_OUT_OF_SERVICE: &str = "outOfService";
/// Every service-affecting cause the simulator emits: each is in a class
/// the default correlator configuration counts (power, transmission,
/// equipment, other).
pub const SERVICE_AFFECTING_CAUSES: [&str; 5] =
    [CAUSE_MAINS_POWER, CAUSE_BACKHAUL, CAUSE_EQUIPMENT, CAUSE_LOSS_OF_SIGNAL, CAUSE_OUT_OF_SERVICE];
/// The environmental causes of the noise alarms (X.733 environmental
/// alarms): never service-affecting by default, even when `major`.
pub const NON_SERVICE_AFFECTING_CAUSES: [&str; 2] = ["temperatureUnacceptable", "enclosureDoorOpen"];

/// The free text a vendor's NMS puts beside a standard cause
/// (`specificProblem`): detail for the NOC, never matched.
pub fn specific_problem(cause: &str, site_id: &str) -> Option<String> {
    let text = match cause {
        CAUSE_MAINS_POWER => format!("Mains failure at {site_id}: rectifiers on battery"),
        CAUSE_BACKHAUL => format!("S1 link from {site_id} to its hub down"),
        CAUSE_EQUIPMENT => format!("RRU 2 of {site_id} not responding"),
        CAUSE_LOSS_OF_SIGNAL => format!("LOS on port 1/3 of {site_id}"),
        CAUSE_OUT_OF_SERVICE => format!("{site_id} locked for planned works"),
        "temperatureUnacceptable" => format!("Cabinet temperature high at {site_id}"),
        "enclosureDoorOpen" => format!("Cabinet door open at {site_id}"),
        _ => return None,
    };
    Some(text)
}

/// A group needs at least this many sites to be chosen for a power failure:
/// smaller groups would look like a single-site flap.
pub const MIN_GROUP_SITES: usize = 3;
/// Wanted gap between two power groups, between a power group and the swath
/// of a storm, and between two storm swaths (best of a bounded number of
/// random tries).
pub const INCIDENT_SEPARATION_KM: f64 = 30.0;
/// The gap below which two incidents are not placed at all: an incident
/// that cannot be placed at least this far from the others is left out (the
/// ground truth lists what was placed). Closer than this, coverage areas of
/// simultaneous outages touch and no geographic correlator can, or should,
/// tell them apart.
pub const MIN_INCIDENT_SEPARATION_KM: f64 = 20.0;
/// How much of [`INCIDENT_SEPARATION_KM`] a placement may fall short by.
const SEPARATION_TOLERANCE_KM: f64 = INCIDENT_SEPARATION_KM - MIN_INCIDENT_SEPARATION_KM;
/// Minimum distance of a flap site from any incident site and from every
/// other flap site (flaps that cannot be placed so are skipped).
pub const NOISE_SEPARATION_KM: f64 = 20.0;

/// A storm heads toward a site at least this far from where it starts.
const STORM_MIN_TRAVEL_KM: f64 = 60.0;
/// Chance that a site the storm passes over goes down.
const STORM_DOWN_PROBABILITY: f64 = 0.6;
/// A storm that reaches at least this many free sites takes down at least this
/// many, so that it is a multi-site incident.
const MIN_STORM_SITES: usize = 3;
/// Share of power-group sites that report the backhaul cause.
const BACKHAUL_SHARE: f64 = 0.2;
/// Random tries to find a well-separated group or flap site.
const PLACEMENT_ATTEMPTS: usize = 64;
/// Random tries to find a storm track away from the earlier ones.
const TRACK_ATTEMPTS: usize = 16;
/// Noise (flaps and minor alarms) is spread over the first three hours.
const NOISE_SPAN_S: i64 = 3 * 3600;
/// Every event falls within this many seconds of `start` (checked up front so
/// that time arithmetic cannot overflow).
const MAX_OFFSET_S: i64 = 86_400;

// One ChaCha stream per phase: changing one knob (say `flaps`) leaves the
// random draws of the other phases alone.
const STREAM_TRACKS: u64 = 1;
const STREAM_GROUPS: u64 = 2;
const STREAM_POWER: u64 = 3;
const STREAM_STORM: u64 = 4;
const STREAM_FLAPS: u64 = 5;
const STREAM_MINOR: u64 = 6;
const STREAM_REPEATS: u64 = 7;
const STREAM_JITTER: u64 = 8;
const STREAM_LATE: u64 = 9;
const STREAM_CITY_FLAPS: u64 = 10;
const STREAM_LONG: u64 = 11;
const STREAM_MAINTENANCE: u64 = 12;
const STREAM_RECUR: u64 = 13;

/// Background failures (city flaps, long outages, maintenance) fall within
/// the first this many seconds of the scenario: a day's feed.
const DAY_SPAN_S: i64 = 20 * 3600;
/// Independent failures do not coincide: a background failure that lasts
/// (a long outage, planned works) is not placed within this distance of (or
/// in the power group of) a real incident's site or another lasting
/// background failure whose failure starts within [`COINCIDENCE_S`] of its
/// own. Closer in space and
/// time, a failure is indistinguishable from the outage beside it (for any
/// correlator, DBSCAN with hindsight included), and the ground truth would
/// be a coin toss. Flaps have no such limit: they land anywhere, any time.
pub const COINCIDENCE_KM: f64 = 20.0;
/// See [`COINCIDENCE_KM`].
pub const COINCIDENCE_S: i64 = 3600;

/// What to simulate. `ScenarioConfig { seed: 7, ..Default::default() }` is
/// the usual way to build one; in serde form every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScenarioConfig {
    /// Seed of every random draw: the same seed, sites and config always give
    /// the same scenario, so a failing run can be replayed exactly.
    pub seed: u64,
    /// Event time of the scenario's t = 0.
    pub start: DateTime<Utc>,
    /// How many whole power/backhaul groups fail (each a ground-truth
    /// incident). Needs that many groups with at least [`MIN_GROUP_SITES`]
    /// sites.
    pub power_failures: usize,
    /// Storm tracks across the region (each a ground-truth incident).
    pub storms: usize,
    /// Isolated single-site flaps (noise, must never become incidents). Also
    /// sets the number of minor/warning noise alarms: a quarter of this,
    /// rounded up, so `0` gives a scenario without noise.
    pub flaps: usize,
    /// Probability that a raise is sent twice (repeated raises), in [0, 1]:
    /// feeds re-send active alarms and the pipeline must deduplicate.
    pub repeat_probability: f64,
    /// Maximum out-of-order delivery jitter applied to publication order,
    /// seconds (≥ 0): real feeds deliver slightly out of event-time order.
    pub max_jitter_s: i64,
    /// Probability, in [0, 1], that a condition's raise is re-sent with its
    /// original event time 1–60 s after the clear was published (plus the
    /// jitter): a resynchronising NMS. The correlator must know it as stale.
    pub late_resend_probability: f64,
    /// Background flaps at real densities (noise): sites drawn uniformly,
    /// so densest where sites are (cities), anywhere — beside and during
    /// the real incidents too — down 10–240 s, 1–4 times over the day.
    pub city_flaps: usize,
    /// Isolated long outages (noise): one site down for 1–6 hours (a
    /// failed board, a cut fibre), at site density; half of them start
    /// during the real incidents (±1 h), half anywhere in the day.
    pub long_outages: usize,
    /// Maintenance windows (noise): one site locked for planned works for
    /// 30–120 minutes, in the first 3 hours (the night) or the last 4.
    pub maintenance: usize,
    /// Of the power failures, how many strike the same group again later
    /// the same day (4–8 hours after it came back): the same area twice,
    /// two ground-truth incidents over the same sites.
    pub recurrences: usize,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            seed: 0,
            start: default_start(),
            power_failures: 2,
            storms: 1,
            flaps: 20,
            repeat_probability: 0.2,
            max_jitter_s: 20,
            late_resend_probability: 0.05,
            city_flaps: 0,
            long_outages: 0,
            maintenance: 0,
            recurrences: 0,
        }
    }
}

/// The default t = 0: 2026-11-23T06:00:00Z, fixed so that default runs are
/// reproducible.
fn default_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).single().expect("a valid fixed date")
}

/// A generated scenario: the feed and the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The alarms in publication order (event time plus a bounded jitter), as
    /// they should be produced to the alarm topic.
    pub alarms: Vec<Alarm>,
    /// What the correlator should find in `alarms`.
    pub truth: GroundTruth,
}

/// The answer key of a scenario, written next to the alarms so that an
/// accuracy check can score the incidents the pipeline opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// The seed the scenario came from, to regenerate it.
    pub seed: u64,
    /// The scenario's t = 0 (from the config).
    pub start: DateTime<Utc>,
    /// The real incidents, ordered by start time (ids `T1`, `T2`, … in that
    /// order); their site sets are disjoint, except that a recurrence
    /// repeats its group's sites hours later.
    pub incidents: Vec<TruthIncident>,
    /// Sites that only carry noise (flaps, minor/warning alarms), sorted; none
    /// of them may end up in an incident.
    pub noise_sites: Vec<String>,
}

/// One real incident the correlator should open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthIncident {
    /// `T1`, `T2`, … in order of start time: stable names for reports.
    pub id: String,
    /// What caused it, to score detection per kind.
    pub kind: TruthKind,
    /// The sites that went down, sorted by `site_id`.
    pub sites: Vec<String>,
    /// Event time of the first raise.
    pub start: DateTime<Utc>,
    /// Event time of the last clear: when the incident should resolve.
    pub end: DateTime<Utc>,
}

/// The cause of a ground-truth incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruthKind {
    /// A whole power/backhaul group failed.
    Power,
    /// A storm track took down sites along its way.
    Storm,
}

/// Why a scenario cannot be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulateError {
    /// The site list is empty: there is nothing to take down.
    #[error("no sites to simulate on")]
    NoSites,
    /// Fewer distinct groups of at least [`MIN_GROUP_SITES`] sites than
    /// `power_failures` (each failure needs its own group).
    #[error(
        "{requested} power failures requested but only {available} power groups have at least \
         {MIN_GROUP_SITES} sites"
    )]
    NotEnoughGroups {
        /// `ScenarioConfig::power_failures`.
        requested: usize,
        /// Eligible groups in the sites.
        available: usize,
    },
    /// A site with coordinates out of range or a duplicate `site_id`: the
    /// geometry or the ground truth would be meaningless.
    #[error("site {site_id:?}: {reason}")]
    InvalidSite {
        /// The offending site.
        site_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A config value out of range (`repeat_probability` outside [0, 1],
    /// negative `max_jitter_s`, `start` at the end of representable time).
    #[error("invalid scenario config: {0}")]
    InvalidConfig(String),
}

/// Generate the scenario for `sites` (the reference data; only `site_id`,
/// coordinates and `group_id` are used). Pure and deterministic.
pub fn generate(sites: &[Site], cfg: &ScenarioConfig) -> Result<Scenario, SimulateError> {
    validate(sites, cfg)?;
    let mut order: Vec<usize> = (0..sites.len()).collect();
    order.sort_unstable_by(|&a, &b| sites[a].site_id.cmp(&sites[b].site_id));
    let pts: Vec<V3> = sites.iter().map(|s| GeoPoint::new(s.lat, s.lon).xyz()).collect();

    let groups = eligible_groups(sites, &order, &pts);
    if cfg.power_failures > groups.len() {
        return Err(SimulateError::NotEnoughGroups { requested: cfg.power_failures, available: groups.len() });
    }

    let tracks = pick_tracks(&mut phase_rng(cfg.seed, STREAM_TRACKS), &order, &pts, cfg.storms);
    let chosen = pick_groups(&mut phase_rng(cfg.seed, STREAM_GROUPS), &groups, &tracks, cfg.power_failures);

    let mut em = Emitter::new(cfg, sites);
    let mut claimed = vec![false; sites.len()];
    let mut incidents: Vec<(TruthKind, Vec<usize>, i64, i64)> = Vec::new();

    // Every real site failure (site, start), for the coincidence rule.
    let mut failures: Vec<(usize, i64)> = Vec::new();

    // Power failures.
    let mut rng = phase_rng(cfg.seed, STREAM_POWER);
    let mut restored_at: Vec<i64> = Vec::new();
    for &g in &chosen {
        let t0 = rng.random_range(0..=600);
        let restore = t0 + rng.random_range(45 * 60..=120 * 60);
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for &i in &groups[g].members {
            let raise = t0 + rng.random_range(0..=120);
            let clear = restore + rng.random_range(0..=600);
            let cause = if rng.random_bool(BACKHAUL_SHARE) { CAUSE_BACKHAUL } else { CAUSE_MAINS_POWER };
            em.condition(i, Severity::Critical, cause, raise, clear);
            claimed[i] = true;
            failures.push((i, raise));
            (first, last) = (first.min(raise), last.max(clear));
        }
        incidents.push((TruthKind::Power, groups[g].members.clone(), first, last));
        restored_at.push(last);
    }

    // The same groups again, later the same day.
    let mut rng = phase_rng(cfg.seed, STREAM_RECUR);
    for (&g, &back) in chosen.iter().zip(&restored_at).take(cfg.recurrences) {
        let t0 = back + rng.random_range(4 * 3600..=8 * 3600);
        let restore = t0 + rng.random_range(45 * 60..=120 * 60);
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for &i in &groups[g].members {
            let raise = t0 + rng.random_range(0..=120);
            let clear = restore + rng.random_range(0..=600);
            em.condition(i, Severity::Critical, CAUSE_MAINS_POWER, raise, clear);
            failures.push((i, raise));
            (first, last) = (first.min(raise), last.max(clear));
        }
        incidents.push((TruthKind::Power, groups[g].members.clone(), first, last));
    }

    // Storms, on the sites no power failure took.
    let mut rng = phase_rng(cfg.seed, STREAM_STORM);
    for track in &tracks {
        let mut reached: Vec<(i64, usize)> =
            order.iter().filter(|&&i| !claimed[i]).filter_map(|&i| track.arrival_s(pts[i]).map(|t| (t, i))).collect();
        let mut down = vec![false; reached.len()];
        for d in down.iter_mut() {
            *d = rng.random_bool(STORM_DOWN_PROBABILITY);
        }
        // Top up to a multi-site incident, earliest reached first.
        let want = MIN_STORM_SITES.min(reached.len());
        let mut count = down.iter().filter(|&&d| d).count();
        if count < want {
            let mut by_time: Vec<usize> = (0..reached.len()).collect();
            by_time.sort_by_key(|&k| reached[k].0);
            for k in by_time {
                if count >= want {
                    break;
                }
                if !down[k] {
                    down[k] = true;
                    count += 1;
                }
            }
        }
        let mut keep = down.iter();
        reached.retain(|_| *keep.next().unwrap_or(&false));
        if reached.is_empty() {
            continue; // Nothing left to take down: no incident.
        }
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        let mut members = Vec::with_capacity(reached.len());
        for &(t, i) in &reached {
            let clear = t + rng.random_range(30 * 60..=180 * 60);
            let cause = if rng.random_bool(0.5) { CAUSE_EQUIPMENT } else { CAUSE_LOSS_OF_SIGNAL };
            em.condition(i, Severity::Major, cause, t, clear);
            claimed[i] = true;
            failures.push((i, t));
            members.push(i);
            (first, last) = (first.min(t), last.max(clear));
        }
        incidents.push((TruthKind::Storm, members, first, last));
    }

    // Flaps: isolated, far from every incident and from each other.
    let mut noise: BTreeSet<usize> = BTreeSet::new();
    let mut rng = phase_rng(cfg.seed, STREAM_FLAPS);
    let mut flaps: Vec<usize> = Vec::new();
    for _ in 0..cfg.flaps {
        let Some(i) = (0..PLACEMENT_ATTEMPTS).find_map(|_| {
            let i = order[pick(&mut rng, order.len())];
            let p = pts[i];
            let ok = !claimed[i]
                && chosen.iter().all(|&g| groups[g].gap_km(p) >= NOISE_SEPARATION_KM)
                && tracks.iter().all(|t| t.distance_km(p) - t.radius_km >= NOISE_SEPARATION_KM)
                && flaps.iter().all(|&f| km_between(p, pts[f]) >= NOISE_SEPARATION_KM);
            ok.then_some(i)
        }) else {
            continue; // No room left for an isolated flap.
        };
        flaps.push(i);
        noise.insert(i);
        let times = rng.random_range(1..=3);
        let slot = NOISE_SPAN_S / times;
        for k in 0..times {
            let dur = rng.random_range(30..=240);
            let raise = k * slot + rng.random_range(0..slot - dur);
            em.condition(i, Severity::Major, CAUSE_LOSS_OF_SIGNAL, raise, raise + dur);
        }
    }

    // Minor/warning alarms on any site outside the incidents.
    let mut rng = phase_rng(cfg.seed, STREAM_MINOR);
    for _ in 0..cfg.flaps.div_ceil(4) {
        let Some(i) = (0..PLACEMENT_ATTEMPTS).find_map(|_| {
            let i = order[pick(&mut rng, order.len())];
            (!claimed[i]).then_some(i)
        }) else {
            continue;
        };
        noise.insert(i);
        let severity = if rng.random_bool(0.5) { Severity::Minor } else { Severity::Warning };
        let cause = NON_SERVICE_AFFECTING_CAUSES[pick(&mut rng, NON_SERVICE_AFFECTING_CAUSES.len())];
        // Feeds raise an over-temperature as major: its class, not its
        // severity, keeps it from counting (no extra draw, so the streams
        // are as before).
        let severity = match (cause, severity) {
            ("temperatureUnacceptable", Severity::Minor) => Severity::Major,
            _ => severity,
        };
        let raise = rng.random_range(0..NOISE_SPAN_S);
        em.condition(i, severity, cause, raise, raise + rng.random_range(60..=900));
    }

    // The day's background at real densities: flaps anywhere, long outages
    // and planned works that do not coincide with a real failure.
    let span = incidents.iter().fold((i64::MAX, i64::MIN), |(a, b), i| (a.min(i.2), b.max(i.3)));
    let around =
        if span.0 <= span.1 { ((span.0 - 3600).max(0), (span.1 + 3600).min(DAY_SPAN_S)) } else { (0, DAY_SPAN_S) };
    let mut rng = phase_rng(cfg.seed, STREAM_CITY_FLAPS);
    for _ in 0..cfg.city_flaps {
        let Some(i) = (0..PLACEMENT_ATTEMPTS).map(|_| order[pick(&mut rng, order.len())]).find(|&i| !claimed[i]) else {
            continue;
        };
        noise.insert(i);
        // One flap per slice of the day: a site's flaps never overlap.
        let times = rng.random_range(1..=4);
        let slot = DAY_SPAN_S / times;
        for k in 0..times {
            let dur = rng.random_range(10..=240);
            let raise = k * slot + rng.random_range(0..slot - dur);
            em.condition(i, Severity::Major, CAUSE_LOSS_OF_SIGNAL, raise, raise + dur);
        }
    }
    let mut lasting: Vec<(usize, i64)> = Vec::new();
    let same_group = |i: usize, j: usize| sites[i].group_id.is_some() && sites[i].group_id == sites[j].group_id;
    let coincides = |i: usize, start: i64, lasting: &[(usize, i64)]| {
        failures.iter().chain(lasting).any(|&(j, s)| {
            (s - start).abs() < COINCIDENCE_S && (km_between(pts[i], pts[j]) < COINCIDENCE_KM || same_group(i, j))
        })
    };
    let mut rng = phase_rng(cfg.seed, STREAM_LONG);
    for k in 0..cfg.long_outages {
        let dur = rng.random_range(3600..=6 * 3600);
        let (from, to) = if k % 2 == 0 { around } else { (0, DAY_SPAN_S) };
        let to = to.min(MAX_OFFSET_S - dur - 1).max(from + 1);
        let Some((i, raise)) = (0..PLACEMENT_ATTEMPTS).find_map(|_| {
            let i = order[pick(&mut rng, order.len())];
            let raise = rng.random_range(from..to);
            (!claimed[i] && !noise.contains(&i) && !coincides(i, raise, &lasting)).then_some((i, raise))
        }) else {
            continue;
        };
        noise.insert(i);
        lasting.push((i, raise));
        let cause = if rng.random_bool(0.5) { CAUSE_EQUIPMENT } else { CAUSE_LOSS_OF_SIGNAL };
        em.condition(i, Severity::Major, cause, raise, raise + dur);
    }
    let mut rng = phase_rng(cfg.seed, STREAM_MAINTENANCE);
    for _ in 0..cfg.maintenance {
        let dur = rng.random_range(30 * 60..=120 * 60);
        let Some((i, raise)) = (0..PLACEMENT_ATTEMPTS).find_map(|_| {
            let i = order[pick(&mut rng, order.len())];
            let raise = if rng.random_bool(0.5) {
                rng.random_range(0..3 * 3600)
            } else {
                rng.random_range(DAY_SPAN_S - 4 * 3600..DAY_SPAN_S)
            };
            (!claimed[i] && !noise.contains(&i) && !coincides(i, raise, &lasting)).then_some((i, raise))
        }) else {
            continue;
        };
        noise.insert(i);
        lasting.push((i, raise));
        em.condition(i, Severity::Major, CAUSE_OUT_OF_SERVICE, raise, raise + dur);
    }

    let at = |s: i64| cfg.start + TimeDelta::seconds(s);
    let mut truth_incidents: Vec<TruthIncident> = incidents
        .into_iter()
        .map(|(kind, members, first, last)| {
            let mut ids: Vec<String> = members.iter().map(|&i| sites[i].site_id.clone()).collect();
            ids.sort_unstable();
            TruthIncident { id: String::new(), kind, sites: ids, start: at(first), end: at(last) }
        })
        .collect();
    truth_incidents.sort_by(|a, b| (a.start, &a.sites).cmp(&(b.start, &b.sites)));
    for (k, inc) in truth_incidents.iter_mut().enumerate() {
        inc.id = format!("T{}", k + 1);
    }
    let mut noise_sites: Vec<String> = noise.into_iter().map(|i| sites[i].site_id.clone()).collect();
    noise_sites.sort_unstable();

    Ok(Scenario {
        alarms: em.finish(),
        truth: GroundTruth { seed: cfg.seed, start: cfg.start, incidents: truth_incidents, noise_sites },
    })
}

/// Write one JSON object per line (the native v1 alarm shape), in slice
/// order: the input of a Kafka producer or of a file-replay source.
pub fn write_jsonl(alarms: &[Alarm], w: impl Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(w);
    for alarm in alarms {
        serde_json::to_writer(&mut w, alarm)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// The wire format simulated alarms are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// Native v1 (`schemas/alarm.v1.schema.json`).
    #[default]
    Native,
    /// ONAP VES 7.x fault events (`schemas/ves-fault.v7.schema.json`).
    Ves,
    /// TMF642 alarm notifications (`schemas/tmf642-alarm.v4.schema.json`).
    Tmf642,
}

/// The alarms as records `(key, value)` in `format`, in slice order. VES
/// records hold up to `ves_batch` consecutive alarms in one `eventList` (a
/// batch of one is a plain `event`); the key is the first alarm's site.
pub fn encode(alarms: &[Alarm], format: WireFormat, ves_batch: usize) -> Vec<(String, String)> {
    match format {
        WireFormat::Native => {
            alarms.iter().map(|a| (a.site_id.clone(), serde_json::to_string(a).unwrap_or_default())).collect()
        }
        WireFormat::Tmf642 => alarms
            .iter()
            .map(|a| (a.site_id.clone(), crate::sources::tmf642::encode_notification(a).to_string()))
            .collect(),
        WireFormat::Ves => {
            let mut seq = 0;
            alarms
                .chunks(ves_batch.max(1))
                .map(|chunk| {
                    let mut events: Vec<serde_json::Value> = chunk
                        .iter()
                        .map(|a| {
                            seq += 1;
                            crate::sources::ves::encode_event(a, seq)
                        })
                        .collect();
                    let value = if events.len() == 1 {
                        serde_json::json!({ "event": events.remove(0) })
                    } else {
                        serde_json::json!({ "eventList": events })
                    };
                    (chunk[0].site_id.clone(), value.to_string())
                })
                .collect()
        }
    }
}

/// Write the ground truth as pretty JSON followed by a newline.
pub fn write_truth(truth: &GroundTruth, w: impl Write) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(w);
    serde_json::to_writer_pretty(&mut w, truth)?;
    w.write_all(b"\n")?;
    w.flush()
}

fn validate(sites: &[Site], cfg: &ScenarioConfig) -> Result<(), SimulateError> {
    if sites.is_empty() {
        return Err(SimulateError::NoSites);
    }
    if !(0.0..=1.0).contains(&cfg.repeat_probability) {
        return Err(SimulateError::InvalidConfig(format!(
            "repeat_probability must be within [0, 1], got {}",
            cfg.repeat_probability
        )));
    }
    if !(0.0..=1.0).contains(&cfg.late_resend_probability) {
        return Err(SimulateError::InvalidConfig(format!(
            "late_resend_probability must be within [0, 1], got {}",
            cfg.late_resend_probability
        )));
    }
    if cfg.max_jitter_s < 0 {
        return Err(SimulateError::InvalidConfig(format!("max_jitter_s must be ≥ 0, got {}", cfg.max_jitter_s)));
    }
    if cfg.start.checked_add_signed(TimeDelta::seconds(MAX_OFFSET_S)).is_none() {
        return Err(SimulateError::InvalidConfig(format!("start {} is too late", cfg.start)));
    }
    let mut seen = BTreeSet::new();
    for s in sites {
        let bad = |reason: &str| SimulateError::InvalidSite { site_id: s.site_id.clone(), reason: reason.into() };
        if !(s.lat.is_finite() && (-90.0..=90.0).contains(&s.lat)) {
            return Err(bad("latitude outside [-90, 90]"));
        }
        if !(s.lon.is_finite() && (-180.0..=180.0).contains(&s.lon)) {
            return Err(bad("longitude outside [-180, 180]"));
        }
        if !seen.insert(s.site_id.as_str()) {
            return Err(bad("duplicate site_id"));
        }
    }
    Ok(())
}

fn phase_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A uniform index below `n` (> 0), drawn as a u64 so that it does not depend
/// on the platform's pointer width.
fn pick(rng: &mut ChaCha8Rng, n: usize) -> usize {
    rng.random_range(0..n as u64) as usize
}

// ---------------------------------------------------------------------------
// Geometry on the unit sphere. Points are unit vectors, as in `geodesy`.
// ---------------------------------------------------------------------------

type V3 = [f64; 3];

fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

fn scale(a: V3, k: f64) -> V3 {
    [a[0] * k, a[1] * k, a[2] * k]
}

fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// Great-circle distance between two unit vectors, in km (atan2 form: exact
/// at small and large angles alike).
fn km_between(a: V3, b: V3) -> f64 {
    norm(cross(a, b)).atan2(dot(a, b)) * EARTH_RADIUS_KM
}

/// A power/backhaul group that can fail as a whole.
struct Group {
    /// Member site indexes, in `site_id` order.
    members: Vec<usize>,
    centroid: V3,
    /// Largest distance of a member from the centroid.
    radius_km: f64,
}

impl Group {
    /// Lower bound of the distance from `p` to any member.
    fn gap_km(&self, p: V3) -> f64 {
        km_between(p, self.centroid) - self.radius_km
    }
}

/// Groups with at least [`MIN_GROUP_SITES`] members, in `group_id` order.
fn eligible_groups(sites: &[Site], order: &[usize], pts: &[V3]) -> Vec<Group> {
    let mut by_id: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in order {
        if let Some(g) = sites[i].group_id.as_deref().filter(|g| !g.is_empty()) {
            by_id.entry(g).or_default().push(i);
        }
    }
    by_id
        .into_values()
        .filter(|m| m.len() >= MIN_GROUP_SITES)
        .map(|members| {
            let sum = members.iter().fold([0.0; 3], |acc, &i| add(acc, pts[i]));
            let n = norm(sum);
            // Members spread over half the globe have no centroid; any member will do.
            let centroid = if n > 1e-9 { scale(sum, 1.0 / n) } else { pts[members[0]] };
            let radius_km = members.iter().map(|&i| km_between(pts[i], centroid)).fold(0.0, f64::max);
            Group { members, centroid, radius_km }
        })
        .collect()
}

/// Choose up to `n` distinct groups, each as far as feasible (best of a
/// bounded number of random tries) from the groups chosen before and from
/// the storm swaths; one that cannot be placed [`MIN_INCIDENT_SEPARATION_KM`]
/// away is left out.
fn pick_groups(rng: &mut ChaCha8Rng, groups: &[Group], tracks: &[Track], n: usize) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    for _ in 0..n {
        let slack = |g: &Group, chosen: &[usize]| {
            let to_groups =
                chosen.iter().map(|&c| km_between(g.centroid, groups[c].centroid) - g.radius_km - groups[c].radius_km);
            let to_tracks = tracks.iter().map(|t| t.distance_km(g.centroid) - t.radius_km - g.radius_km);
            to_groups.chain(to_tracks).fold(f64::INFINITY, f64::min) - INCIDENT_SEPARATION_KM
        };
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..PLACEMENT_ATTEMPTS {
            let g = pick(rng, groups.len());
            if chosen.contains(&g) {
                continue;
            }
            let s = slack(&groups[g], &chosen);
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, g));
            }
            if s >= 0.0 {
                break;
            }
        }
        // No group far enough from the others: leave this failure out
        // rather than generate two true incidents a geographic correlator
        // could not tell apart.
        if let Some((s, g)) = best {
            if s >= -SEPARATION_TOLERANCE_KM {
                chosen.push(g);
            }
        }
    }
    chosen
}

/// A storm: a circle moving along a great-circle arc at constant speed.
#[derive(Debug, Clone)]
struct Track {
    /// Where the centre starts.
    a: V3,
    /// Unit tangent of the direction of travel at `a`.
    dir: V3,
    /// `a × dir`: the pole of the track's great circle.
    pole: V3,
    len_km: f64,
    radius_km: f64,
    speed_kmh: f64,
    /// Offset from t = 0 at which the centre leaves `a`.
    start_s: i64,
}

impl Track {
    fn new(a: V3, dir: V3, len_km: f64, radius_km: f64, speed_kmh: f64, start_s: i64) -> Self {
        Track { a, dir, pole: cross(a, dir), len_km, radius_km, speed_kmh, start_s }
    }

    fn point_at(&self, s_km: f64) -> V3 {
        let s = s_km / EARTH_RADIUS_KM;
        add(scale(self.a, s.cos()), scale(self.dir, s.sin()))
    }

    /// Cross-track and along-track distance of `p` from the track's great
    /// circle, in km.
    fn locate(&self, p: V3) -> (f64, f64) {
        let xt = dot(p, self.pole).clamp(-1.0, 1.0).asin() * EARTH_RADIUS_KM;
        let at = dot(p, self.dir).atan2(dot(p, self.a)) * EARTH_RADIUS_KM;
        (xt, at)
    }

    /// Distance from `p` to the nearest point of the arc the centre travels.
    fn distance_km(&self, p: V3) -> f64 {
        let (xt, at) = self.locate(p);
        if (0.0..=self.len_km).contains(&at) {
            xt.abs()
        } else {
            km_between(p, self.a).min(km_between(p, self.point_at(self.len_km)))
        }
    }

    /// Offset from t = 0 at which the storm circle first covers `p`, or `None`
    /// if it never does.
    fn arrival_s(&self, p: V3) -> Option<i64> {
        if self.distance_km(p) > self.radius_km {
            return None;
        }
        let (xt, at) = self.locate(p);
        // On the sphere, cos d = cos(xt) · cos(s − at): solve d = radius.
        let r = self.radius_km / EARTH_RADIUS_KM;
        let half = ((r.cos() / (xt / EARTH_RADIUS_KM).cos()).clamp(-1.0, 1.0)).acos() * EARTH_RADIUS_KM;
        let s = (at - half).clamp(0.0, self.len_km);
        Some(self.start_s + (s / self.speed_kmh * 3600.0).round() as i64)
    }

    /// Smallest distance between the centre paths of two tracks (sampled
    /// every 2 km along `self`, exact against `other`).
    fn path_gap_km(&self, other: &Track) -> f64 {
        let steps = (self.len_km / 2.0).ceil().max(1.0) as usize;
        (0..=steps)
            .map(|k| other.distance_km(self.point_at(self.len_km * k as f64 / steps as f64)))
            .fold(f64::INFINITY, f64::min)
    }
}

/// Choose up to `n` storm tracks, each as far as feasible from the earlier
/// ones; one that cannot be placed [`MIN_INCIDENT_SEPARATION_KM`] away is
/// left out.
fn pick_tracks(rng: &mut ChaCha8Rng, order: &[usize], pts: &[V3], n: usize) -> Vec<Track> {
    let mut tracks: Vec<Track> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut best: Option<(f64, Track)> = None;
        for _ in 0..TRACK_ATTEMPTS {
            let t = random_track(rng, order, pts);
            let slack =
                tracks.iter().map(|o| t.path_gap_km(o) - t.radius_km - o.radius_km).fold(f64::INFINITY, f64::min)
                    - INCIDENT_SEPARATION_KM;
            let done = slack >= 0.0;
            if best.as_ref().is_none_or(|(b, _)| slack > *b) {
                best = Some((slack, t));
            }
            if done {
                break;
            }
        }
        tracks.extend(best.filter(|(slack, _)| *slack >= -SEPARATION_TOLERANCE_KM).map(|(_, t)| t));
    }
    tracks
}

/// A track that starts at a random site and heads toward a random site at
/// least [`STORM_MIN_TRAVEL_KM`] away (or the farthest one, in a small
/// region), stopping there if it gets there before its time is up.
fn random_track(rng: &mut ChaCha8Rng, order: &[usize], pts: &[V3]) -> Track {
    let a = pts[order[pick(rng, order.len())]];
    let radius_km: f64 = rng.random_range(15.0..=25.0);
    let speed_kmh: f64 = rng.random_range(40.0..=70.0);
    let hours: f64 = rng.random_range(1.0..=2.0);
    let start_s = rng.random_range(5 * 60..=15 * 60);

    let mut far: Vec<usize> = Vec::new();
    let mut farthest = (0.0, order[0]);
    for &i in order {
        let d = km_between(a, pts[i]);
        if d >= STORM_MIN_TRAVEL_KM {
            far.push(i);
        }
        if d > farthest.0 {
            farthest = (d, i);
        }
    }
    let b = if far.is_empty() { farthest.1 } else { far[pick(rng, far.len())] };
    let (b, dist_km) = (pts[b], km_between(a, pts[b]));

    let toward = add(b, scale(a, -dot(a, b)));
    let travel_km = speed_kmh * hours;
    if dist_km >= 1.0 && norm(toward) > 1e-9 {
        let dir = scale(toward, 1.0 / norm(toward));
        Track::new(a, dir, travel_km.min(dist_km), radius_km, speed_kmh, start_s)
    } else {
        // All sites in one spot: any heading will do.
        let bearing = rng.random_range(0.0..std::f64::consts::TAU);
        let (lat, lon) = (a[2].clamp(-1.0, 1.0).asin(), a[1].atan2(a[0]));
        let east = [-lon.sin(), lon.cos(), 0.0];
        let north = [-lat.sin() * lon.cos(), -lat.sin() * lon.sin(), lat.cos()];
        let dir = add(scale(north, bearing.cos()), scale(east, bearing.sin()));
        Track::new(a, dir, travel_km, radius_km, speed_kmh, start_s)
    }
}

// ---------------------------------------------------------------------------
// Alarm emission.
// ---------------------------------------------------------------------------

/// An alarm waiting for its place in publication order.
struct Pending {
    event_s: i64,
    /// When it is published before the jitter: its event time, or later
    /// for a late re-send.
    publish_s: i64,
    seq: usize,
    alarm: Alarm,
}

/// Turns conditions (raise … clear on one site) into alarms with unique ids,
/// repeated raises and, at the end, publication-order jitter.
struct Emitter<'a> {
    sites: &'a [Site],
    start: DateTime<Utc>,
    seed: u64,
    repeat_probability: f64,
    max_jitter_s: i64,
    late_resend_probability: f64,
    next_id: u64,
    repeats: ChaCha8Rng,
    late: ChaCha8Rng,
    out: Vec<Pending>,
}

impl<'a> Emitter<'a> {
    fn new(cfg: &ScenarioConfig, sites: &'a [Site]) -> Self {
        Emitter {
            sites,
            start: cfg.start,
            seed: cfg.seed,
            repeat_probability: cfg.repeat_probability,
            max_jitter_s: cfg.max_jitter_s,
            late_resend_probability: cfg.late_resend_probability,
            next_id: 1,
            repeats: phase_rng(cfg.seed, STREAM_REPEATS),
            late: phase_rng(cfg.seed, STREAM_LATE),
            out: Vec::new(),
        }
    }

    /// One alarm condition on site `i`, raised at `raise_s` and cleared at
    /// `clear_s` (> `raise_s`), sharing one alarm id. A repeated raise, if
    /// drawn, falls strictly between the two; a late re-send, if drawn,
    /// carries the raise's time and is published after the clear.
    fn condition(&mut self, i: usize, severity: Severity, cause: &str, raise_s: i64, clear_s: i64) {
        debug_assert!(clear_s > raise_s);
        let id = format!("SIM-{}-{}", self.seed, self.next_id);
        self.next_id += 1;
        self.push(&id, i, AlarmState::Raised, severity, cause, raise_s);
        if self.repeats.random_bool(self.repeat_probability) {
            let max_delay = 60.min(clear_s - raise_s - 1);
            if max_delay >= 5 {
                let delay = self.repeats.random_range(5..=max_delay);
                self.push(&id, i, AlarmState::Raised, severity, cause, raise_s + delay);
            }
        }
        self.push(&id, i, AlarmState::Cleared, severity, cause, clear_s);
        if self.late.random_bool(self.late_resend_probability) {
            // After the clear's latest publication time, so always after it.
            let publish_s = clear_s + self.max_jitter_s + self.late.random_range(1..=60);
            self.push(&id, i, AlarmState::Raised, severity, cause, raise_s).publish_s = publish_s;
        }
    }

    /// Emits one alarm, published at its event time (plus the jitter)
    /// unless the caller moves it.
    fn push(
        &mut self,
        id: &str,
        i: usize,
        state: AlarmState,
        severity: Severity,
        cause: &str,
        event_s: i64,
    ) -> &mut Pending {
        let alarm = Alarm {
            alarm_id: id.to_string(),
            site_id: self.sites[i].site_id.clone(),
            state,
            severity,
            probable_cause: cause.to_string(),
            event_time: self.start + TimeDelta::seconds(event_s),
            lat: None,
            lon: None,
            specific_problem: specific_problem(cause, &self.sites[i].site_id),
        };
        let seq = self.out.len();
        self.out.push(Pending { event_s, publish_s: event_s, seq, alarm });
        &mut self.out[seq]
    }

    /// The alarms in publication order: event time plus a jitter in
    /// [0, max_jitter_s] (a late re-send: its own time, drawn already),
    /// ties by event time then emission order.
    fn finish(self) -> Vec<Alarm> {
        let mut rng = phase_rng(self.seed, STREAM_JITTER);
        let mut keyed: Vec<(i64, Pending)> = self
            .out
            .into_iter()
            .map(|p| {
                let at = if p.publish_s > p.event_s {
                    p.publish_s
                } else {
                    p.event_s.saturating_add(rng.random_range(0..=self.max_jitter_s))
                };
                (at, p)
            })
            .collect();
        keyed.sort_unstable_by_key(|(publish_s, p)| (*publish_s, p.event_s, p.seq));
        keyed.into_iter().map(|(_, p)| p.alarm).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A `n`×`n` grid of sites about 3 km apart near Providence, grouped in
    /// 4×4 blocks (16-site groups).
    fn grid(n: usize) -> Vec<Site> {
        let mut out = Vec::with_capacity(n * n);
        for r in 0..n {
            for c in 0..n {
                out.push(Site {
                    site_id: format!("S{r:04}-{c:04}"),
                    lat: 41.0 + r as f64 * 0.027,
                    lon: -72.5 + c as f64 * 0.0358,
                    radius_km: 2.0,
                    group_id: Some(format!("G{:03}-{:03}", r / 4, c / 4)),
                });
            }
        }
        out
    }

    fn cfg(seed: u64) -> ScenarioConfig {
        ScenarioConfig { seed, ..Default::default() }
    }

    fn by_alarm_id(alarms: &[Alarm]) -> BTreeMap<&str, Vec<&Alarm>> {
        let mut m: BTreeMap<&str, Vec<&Alarm>> = BTreeMap::new();
        for a in alarms {
            m.entry(a.alarm_id.as_str()).or_default().push(a);
        }
        m
    }

    #[test]
    fn same_seed_gives_identical_output_and_input_order_does_not_matter() {
        let sites = grid(40);
        let a = generate(&sites, &cfg(7)).unwrap();
        let b = generate(&sites, &cfg(7)).unwrap();
        assert_eq!(a, b);
        let mut reversed = sites.clone();
        reversed.reverse();
        assert_eq!(generate(&reversed, &cfg(7)).unwrap(), a);
    }

    #[test]
    fn different_seeds_give_different_output() {
        let sites = grid(40);
        let a = generate(&sites, &cfg(1)).unwrap();
        let b = generate(&sites, &cfg(2)).unwrap();
        assert_ne!(a.alarms, b.alarms);
        assert_ne!(a.truth.incidents, b.truth.incidents);
    }

    #[test]
    fn scenario_has_the_requested_incidents_and_some_noise() {
        let sites = grid(40);
        for seed in 0..10 {
            let s = generate(&sites, &cfg(seed)).unwrap();
            let kinds: Vec<TruthKind> = s.truth.incidents.iter().map(|i| i.kind).collect();
            assert_eq!(kinds.iter().filter(|&&k| k == TruthKind::Power).count(), 2, "seed {seed}");
            assert_eq!(kinds.iter().filter(|&&k| k == TruthKind::Storm).count(), 1, "seed {seed}");
            let ids: Vec<&str> = s.truth.incidents.iter().map(|i| i.id.as_str()).collect();
            assert_eq!(ids, ["T1", "T2", "T3"]);
            assert!(s.truth.incidents.windows(2).all(|w| w[0].start <= w[1].start));
            assert!(!s.truth.noise_sites.is_empty(), "seed {seed}");
            let storm = s.truth.incidents.iter().find(|i| i.kind == TruthKind::Storm).unwrap();
            assert!(storm.sites.len() >= MIN_STORM_SITES, "seed {seed}: {}", storm.sites.len());
        }
    }

    #[test]
    fn every_condition_is_one_raise_clear_pair() {
        let sites = grid(40);
        let cfg =
            ScenarioConfig { seed: 3, repeat_probability: 0.5, late_resend_probability: 0.0, ..Default::default() };
        let s = generate(&sites, &cfg).unwrap();
        let ids = by_alarm_id(&s.alarms);
        let mut repeated = 0;
        for (id, alarms) in &ids {
            assert!(id.starts_with("SIM-3-"), "{id}");
            let clears: Vec<_> = alarms.iter().filter(|a| a.state == AlarmState::Cleared).collect();
            let raises: Vec<_> = alarms.iter().filter(|a| a.state == AlarmState::Raised).collect();
            assert_eq!(clears.len(), 1, "{id}");
            assert!((1..=2).contains(&raises.len()), "{id}");
            repeated += usize::from(raises.len() == 2);
            assert!(alarms.iter().all(|a| a.site_id == alarms[0].site_id && a.severity == alarms[0].severity));
            assert!(alarms.iter().all(|a| a.probable_cause == alarms[0].probable_cause));
            assert!(raises.iter().all(|r| r.event_time < clears[0].event_time), "{id}");
            assert!(alarms.iter().all(|a| a.lat.is_none() && a.lon.is_none()));
        }
        assert!(repeated > 0);
        // Every incident site has exactly one condition, service-affecting.
        let mut per_site: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, alarms) in &ids {
            per_site.entry(alarms[0].site_id.as_str()).or_default().push(id);
        }
        for inc in &s.truth.incidents {
            for site in &inc.sites {
                let conds = &per_site[site.as_str()];
                assert_eq!(conds.len(), 1, "{site}");
                let a = ids[conds[0]][0];
                assert!(SERVICE_AFFECTING_CAUSES.contains(&a.probable_cause.as_str()));
                let want = if inc.kind == TruthKind::Power { Severity::Critical } else { Severity::Major };
                assert_eq!(a.severity, want);
            }
            // Start and end are the first raise and the last clear.
            let times = inc.sites.iter().flat_map(|site| &ids[per_site[site.as_str()][0]]);
            let first = times.clone().filter(|a| a.state == AlarmState::Raised).map(|a| a.event_time).min();
            let last = times.filter(|a| a.state == AlarmState::Cleared).map(|a| a.event_time).max();
            assert_eq!((first, last), (Some(inc.start), Some(inc.end)));
        }
        // Every alarmed site is either in an incident or noise.
        let truth_sites: BTreeSet<&str> =
            s.truth.incidents.iter().flat_map(|i| i.sites.iter().map(String::as_str)).collect();
        for site in per_site.keys() {
            assert!(truth_sites.contains(site) || s.truth.noise_sites.iter().any(|n| n == site), "{site}");
        }
    }

    #[test]
    fn noise_sites_are_never_in_incidents_and_flaps_are_isolated() {
        let sites = grid(40);
        let pos: BTreeMap<&str, V3> =
            sites.iter().map(|s| (s.site_id.as_str(), GeoPoint::new(s.lat, s.lon).xyz())).collect();
        let mut major_environmental = 0;
        for seed in 0..10 {
            let s = generate(&sites, &cfg(seed)).unwrap();
            assert!(s.truth.noise_sites.windows(2).all(|w| w[0] < w[1]));
            let truth_sites: Vec<&str> =
                s.truth.incidents.iter().flat_map(|i| i.sites.iter().map(String::as_str)).collect();
            let unique: BTreeSet<&str> = truth_sites.iter().copied().collect();
            assert_eq!(unique.len(), truth_sites.len(), "incidents overlap");
            for n in &s.truth.noise_sites {
                assert!(!unique.contains(n.as_str()), "seed {seed}: {n}");
            }
            let flap_sites: BTreeSet<&str> = s
                .alarms
                .iter()
                .filter(|a| a.severity == Severity::Major && a.probable_cause == CAUSE_LOSS_OF_SIGNAL)
                .filter(|a| !unique.contains(a.site_id.as_str()))
                .map(|a| a.site_id.as_str())
                .collect();
            assert!(!flap_sites.is_empty());
            for f in &flap_sites {
                for t in &unique {
                    assert!(km_between(pos[f], pos[t]) >= NOISE_SEPARATION_KM, "seed {seed}: {f} near {t}");
                }
                for g in &flap_sites {
                    assert!(f == g || km_between(pos[f], pos[g]) >= NOISE_SEPARATION_KM);
                }
            }
            // Every cause is a standard one with vendor detail beside it;
            // the noise's is environmental (never service-affecting by
            // default), some of it major, so the class is what keeps it out.
            let classifier = crate::transforms::classify::Classifier::default();
            for a in &s.alarms {
                let class = classifier.classify(&a.probable_cause);
                assert!(class.is_some(), "{} is not a standard cause", a.probable_cause);
                assert!(a.specific_problem.as_deref().is_some_and(|d| d.contains(&a.site_id)), "{a:?}");
                if NON_SERVICE_AFFECTING_CAUSES.contains(&a.probable_cause.as_str()) {
                    assert_eq!(class, Some(crate::transforms::classify::CauseClass::Environment));
                }
            }
            major_environmental += s
                .alarms
                .iter()
                .filter(|a| {
                    a.severity == Severity::Major && NON_SERVICE_AFFECTING_CAUSES.contains(&a.probable_cause.as_str())
                })
                .count();
        }
        assert!(major_environmental > 0);
    }

    #[test]
    fn a_harder_day_has_background_noise_and_the_same_area_twice() {
        let sites = grid(40);
        let hard = ScenarioConfig {
            seed: 5,
            power_failures: 3,
            recurrences: 1,
            city_flaps: 60,
            long_outages: 12,
            maintenance: 6,
            ..Default::default()
        };
        let s = generate(&sites, &hard).unwrap();
        assert_eq!(s, generate(&sites, &hard).unwrap(), "deterministic");
        // The background leaves the real incidents' draws alone.
        let base = ScenarioConfig { recurrences: 0, city_flaps: 0, long_outages: 0, maintenance: 0, ..hard.clone() };
        let base = generate(&sites, &base).unwrap();
        assert_eq!(base.truth.incidents.len() + 1, s.truth.incidents.len(), "plus the recurrence");
        // The same group twice, hours apart.
        let power: Vec<&TruthIncident> = s.truth.incidents.iter().filter(|i| i.kind == TruthKind::Power).collect();
        let twice: Vec<_> = power.iter().filter(|a| power.iter().any(|b| b.id != a.id && b.sites == a.sites)).collect();
        assert_eq!(twice.len(), 2);
        assert!(twice[1].start - twice[0].end >= TimeDelta::hours(4));
        // Noise on sites no incident takes, with standard causes; lasting
        // noise never beside a real failure starting within the hour.
        let truth_sites: BTreeSet<&str> =
            s.truth.incidents.iter().flat_map(|i| i.sites.iter().map(String::as_str)).collect();
        assert!(s.truth.noise_sites.iter().all(|n| !truth_sites.contains(n.as_str())));
        assert!(s.truth.noise_sites.len() > 60, "{}", s.truth.noise_sites.len());
        let at: BTreeMap<&str, V3> =
            sites.iter().map(|x| (x.site_id.as_str(), GeoPoint::new(x.lat, x.lon).xyz())).collect();
        let starts: Vec<(&str, DateTime<Utc>)> = s
            .alarms
            .iter()
            .filter(|a| a.state == AlarmState::Raised && truth_sites.contains(a.site_id.as_str()))
            .map(|a| (a.site_id.as_str(), a.event_time))
            .collect();
        let mut lasting = 0;
        for (_, alarms) in by_alarm_id(&s.alarms) {
            let (raise, clear) = (alarms[0], alarms.iter().find(|a| a.state == AlarmState::Cleared).unwrap());
            assert!(
                SERVICE_AFFECTING_CAUSES.contains(&raise.probable_cause.as_str())
                    || NON_SERVICE_AFFECTING_CAUSES.contains(&raise.probable_cause.as_str())
            );
            if truth_sites.contains(raise.site_id.as_str())
                || clear.event_time - raise.event_time < TimeDelta::minutes(30)
            {
                continue;
            }
            lasting += 1;
            for (site, start) in &starts {
                let km = km_between(at[raise.site_id.as_str()], at[site]);
                let dt = (raise.event_time - *start).num_seconds().abs();
                assert!(km >= COINCIDENCE_KM || dt >= COINCIDENCE_S, "{} beside {site}", raise.site_id);
            }
        }
        assert!(lasting >= 12, "{lasting}");
    }

    #[test]
    fn power_failure_takes_down_exactly_one_whole_group() {
        let sites = grid(40);
        let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in &sites {
            groups.entry(s.group_id.as_deref().unwrap()).or_default().push(s.site_id.clone());
        }
        for seed in 0..10 {
            let s = generate(&sites, &cfg(seed)).unwrap();
            let power: Vec<&TruthIncident> = s.truth.incidents.iter().filter(|i| i.kind == TruthKind::Power).collect();
            for inc in &power {
                assert!(inc.sites.windows(2).all(|w| w[0] < w[1]));
                assert_eq!(groups.values().filter(|g| **g == inc.sites).count(), 1, "seed {seed}");
                // Raises within 2 min of each other, clears 45–130 min after the start.
                let mine: Vec<&Alarm> = s.alarms.iter().filter(|a| inc.sites.contains(&a.site_id)).collect();
                let first_raise = mine.iter().filter(|a| a.state == AlarmState::Raised).map(|a| a.event_time);
                let first_raise = first_raise.min().unwrap();
                for a in &mine {
                    let dt = (a.event_time - first_raise).num_seconds();
                    match a.state {
                        AlarmState::Raised => assert!(dt <= 120 + 60),
                        AlarmState::Cleared => assert!((45 * 60 - 120..=130 * 60).contains(&dt)),
                    }
                }
            }
            // Well separated on this grid: no two groups adjacent.
            assert_ne!(power[0].sites, power[1].sites);
        }
    }

    #[test]
    fn publication_order_is_within_the_jitter_of_event_order() {
        let sites = grid(40);
        for max_jitter_s in [0, 5, 20, 120] {
            let cfg = ScenarioConfig { seed: 11, max_jitter_s, late_resend_probability: 0.0, ..Default::default() };
            let s = generate(&sites, &cfg).unwrap();
            let mut latest = s.alarms[0].event_time;
            let mut out_of_order = 0;
            for a in &s.alarms {
                let lag = (latest - a.event_time).num_seconds();
                assert!(lag <= max_jitter_s, "lag {lag} > {max_jitter_s}");
                out_of_order += usize::from(lag > 0);
                latest = latest.max(a.event_time);
            }
            assert_eq!(out_of_order == 0, max_jitter_s == 0, "jitter {max_jitter_s}");
        }
    }

    #[test]
    fn a_late_resend_repeats_the_raise_after_the_clear_and_moves_nothing_else() {
        let sites = grid(40);
        let base = ScenarioConfig { seed: 4, late_resend_probability: 0.0, ..Default::default() };
        let with = generate(&sites, &ScenarioConfig { late_resend_probability: 0.3, ..base.clone() }).unwrap();
        let without = generate(&sites, &base).unwrap();
        let mut late = 0;
        for (id, alarms) in by_alarm_id(&with.alarms) {
            let pos = |a: &Alarm| with.alarms.iter().position(|b| std::ptr::eq(a, b)).unwrap();
            let clear = alarms.iter().find(|a| a.state == AlarmState::Cleared).unwrap();
            let first = alarms.iter().find(|a| a.state == AlarmState::Raised).unwrap();
            for r in alarms.iter().filter(|a| a.state == AlarmState::Raised && pos(a) > pos(clear)) {
                assert_eq!(r.event_time, first.event_time, "{id}: a re-send carries the raise's time");
                late += 1;
            }
        }
        assert!(late > 0);
        // The other alarms keep their draws and their order.
        let mut rest = with.alarms.clone();
        let mut seen = BTreeSet::new();
        rest.retain(|a| seen.insert((a.alarm_id.clone(), a.state == AlarmState::Raised, a.event_time)));
        assert_eq!(with.alarms.len() - rest.len(), late);
        assert_eq!(rest, without.alarms);
        assert_eq!(with.truth, without.truth);
    }

    #[test]
    fn write_jsonl_lines_parse_back() {
        let sites = grid(20);
        let s = generate(&sites, &ScenarioConfig { power_failures: 1, ..cfg(5) }).unwrap();
        let mut buf = Vec::new();
        write_jsonl(&s.alarms, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.ends_with('\n'));
        let back: Vec<Alarm> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(back, s.alarms);
        assert!(!text.contains("\"lat\""));

        let mut buf = Vec::new();
        write_truth(&s.truth, &mut buf).unwrap();
        let truth: GroundTruth = serde_json::from_slice(&buf).unwrap();
        assert_eq!(truth, s.truth);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!(["power", "storm"].contains(&v["incidents"][0]["kind"].as_str().unwrap()));
    }

    #[test]
    fn errors_are_reported() {
        assert_eq!(generate(&[], &cfg(1)), Err(SimulateError::NoSites));
        let sites = grid(8); // 4 groups
        assert_eq!(
            generate(&sites, &ScenarioConfig { power_failures: 5, ..cfg(1) }),
            Err(SimulateError::NotEnoughGroups { requested: 5, available: 4 })
        );
        assert!(generate(&sites, &ScenarioConfig { power_failures: 4, ..cfg(1) }).is_ok());
        let ungrouped: Vec<Site> = sites.iter().map(|s| Site { group_id: None, ..s.clone() }).collect();
        assert!(matches!(generate(&ungrouped, &cfg(1)), Err(SimulateError::NotEnoughGroups { available: 0, .. })));
        assert!(generate(&ungrouped, &ScenarioConfig { power_failures: 0, ..cfg(1) }).is_ok());
        for bad in [-0.1, 1.5, f64::NAN] {
            let c = ScenarioConfig { repeat_probability: bad, ..cfg(1) };
            assert!(matches!(generate(&sites, &c), Err(SimulateError::InvalidConfig(_))));
        }
        let c = ScenarioConfig { max_jitter_s: -1, ..cfg(1) };
        assert!(matches!(generate(&sites, &c), Err(SimulateError::InvalidConfig(_))));
        let mut dup = sites.clone();
        dup.push(sites[0].clone());
        assert!(matches!(generate(&dup, &cfg(1)), Err(SimulateError::InvalidSite { .. })));
        let mut nan = sites.clone();
        nan[3].lat = f64::NAN;
        assert!(matches!(generate(&nan, &cfg(1)), Err(SimulateError::InvalidSite { .. })));
    }

    #[test]
    fn tiny_and_degenerate_regions_still_work() {
        // One spot, one group: the storm has nowhere to go, flaps cannot be isolated.
        let one: Vec<Site> = (0..5)
            .map(|k| Site {
                site_id: format!("S{k}"),
                lat: 10.0,
                lon: 179.99,
                radius_km: 1.0,
                group_id: Some("G".into()),
            })
            .collect();
        let s = generate(&one, &ScenarioConfig { power_failures: 1, ..cfg(9) }).unwrap();
        assert_eq!(s.truth.incidents.len(), 1, "no room to separate the power failure from the storm: left out");
        assert_eq!(s.truth.incidents[0].kind, TruthKind::Storm);
        let s = generate(&one, &ScenarioConfig { power_failures: 1, storms: 0, ..cfg(9) }).unwrap();
        assert_eq!((s.truth.incidents.len(), s.truth.incidents[0].sites.len()), (1, 5));
        assert!(s.truth.noise_sites.is_empty());
        let s = generate(&one, &ScenarioConfig { power_failures: 0, ..cfg(9) }).unwrap();
        assert_eq!(s.truth.incidents[0].kind, TruthKind::Storm);
        assert!((MIN_STORM_SITES..=5).contains(&s.truth.incidents[0].sites.len()));
    }

    #[test]
    fn storm_follows_a_track_and_spares_some_sites() {
        let sites = grid(40);
        for seed in 0..5 {
            let s = generate(&sites, &ScenarioConfig { power_failures: 0, flaps: 0, ..cfg(seed) }).unwrap();
            assert_eq!(s.truth.incidents.len(), 1);
            assert!(s.truth.noise_sites.is_empty());
            let storm = &s.truth.incidents[0];
            // A 30–50 km swath over a 3 km grid: dozens of sites, not all of them.
            assert!(storm.sites.len() >= 20, "seed {seed}: {}", storm.sites.len());
            assert!(storm.sites.len() < sites.len() / 2);
            let offset = (storm.start - s.truth.start).num_seconds();
            assert!((5 * 60..=15 * 60).contains(&offset), "{offset}");
            assert!(storm.end - storm.start <= TimeDelta::hours(5));
        }
    }

    #[test]
    fn demo_sites_if_present() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo/sites.csv");
        let Ok(mut rdr) = csv::Reader::from_path(&path) else {
            return;
        };
        let sites: Vec<Site> = rdr.deserialize().map(|r| r.unwrap()).collect();
        let s = generate(&sites, &cfg(42)).unwrap();
        assert_eq!(s.truth.incidents.len(), 3);
        assert!(!s.truth.noise_sites.is_empty());
    }

    #[test]
    fn large_inputs_are_fast_enough() {
        // 100k sites: must not be quadratic (this would take minutes if it were).
        let sites = grid(317);
        let t = std::time::Instant::now();
        let s = generate(&sites, &cfg(1)).unwrap();
        assert_eq!(s.truth.incidents.len(), 3);
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    }
}
