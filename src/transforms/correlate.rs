//! Alarms → incident events. Owns the rules that turn sites going down
//! together into one geographic incident and decide when it is declared,
//! resolved or dismissed. Pure: no I/O; time comes from the alarms' event
//! times and from `tick(now)`.
//!
//! The rules:
//! - an alarm's site must be known (inventory, or the alarm's own lat/lon)
//!   before anything else is asked of it: an unknown site is an error the
//!   caller dead-letters, never a cause that "does not count";
//! - a service-affecting raise (severity ≥ `min_severity`, X.733's rule:
//!   critical and major take service down; its cause's class, from
//!   [`super::classify`], not in `not_service_affecting_classes`; an
//!   unclassified cause only if `unclassified_service_affecting`; and, if
//!   the operator restricts them, a cause in `service_affecting_causes`)
//!   on a site joins an open incident only as part of the same failure, in
//!   a space-time neighbourhood: a down or recently cleared member site
//!   within `r_a + r_b + neighbour_gap_km` whose failure started within
//!   `join_window` (30 min) of this one's (or the incident opened within
//!   it), or a member of the same power/backhaul group at any distance
//!   whose failure started within `group_join_window` (1 h). Otherwise it
//!   opens a new incident (linked to the site's last resolved incident: a
//!   recurrence), so unrelated failures hours apart never chain. A site the
//!   incident already holds joins it again only while still down there or
//!   within `join_window` of its own last failure or the incident's onset.
//!   A failure window that ended as a blip is no evidence for anyone. When
//!   a raise touches several incidents, it joins the oldest declared one
//!   (else the oldest probable one); the other probable ones are `merged`
//!   into it (nobody was told of them yet), the other declared ones are
//!   `linked`, never merged, so public ids stay stable (one declared in
//!   this same instant with nothing planned for it is merged: its id was
//!   never public);
//! - a blip never widens the audience: a failure shorter than
//!   `blip_window` (5 min) is not in the footprint. While the incident is
//!   probable a member that clears within it, other sites still down, is
//!   `dropped`; the declaration leaves every site down for less than it
//!   `pending` (`declared.pending`), as is every site joining afterwards;
//!   a pending site enters the footprint (`confirmed`, batched per
//!   incident by one timer) once down that long in the same window, and
//!   one that clears sooner never does. Membership is revised only while
//!   nobody was told for the site; the declaration itself is not delayed;
//! - alarms pair by site and alarm id: a repeated raise and a clear of
//!   nothing active change nothing (counted), and a raise that arrives after
//!   its own clear, within `reorder_window` of feed time, is stale (counted,
//!   not applied): the condition is over;
//! - a Probable incident is declared when `declare_sites` sites are down, or
//!   when `min_sites` have been down for `min_duration`;
//! - it is dismissed when all its sites are up again before that;
//! - a Declared incident is resolved once every site has been up for
//!   `hold_down` (flap suppression).
//!
//! Cost: one alarm costs one hash lookup of its site, a short scan of the
//! site's active alarms (a mirror of the incident's, so the incident's site
//! map is searched once, by its own fold of the event) and O(log n) timer
//! work only when an incident's deadline moves; nothing scans the active
//! alarms or the open incidents. Incidents live in slots addressed by `u32`
//! (string ids are hashed only at the API's edges), inventory sites by their
//! inventory index. A raise on a site outside every incident also scans the
//! sites within reach: 27 cells (9 runs of points, found when the grid is
//! built) of a grid over the sites that selects exactly what the R-tree
//! would, reading each point's open incident from the grid itself and
//! measuring a distance only to an incident not found yet. Timers live in a
//! deadline queue.
//!
//! The footprint rule costs no scan either: a raise reads its neighbours'
//! failure starts from the per-site state an alarm of the site touches
//! anyway (`ActiveList::since_ms`), in the grid scan it already made; a declared incident queues its pending
//! windows in due order, and its single deadline is the earlier of its
//! resolution and its next confirmation.
//!
//! Invariant: every event returned has already been applied to the
//! correlator's own state, so its state equals the fold of the log
//! (`dropped`, `confirmed` and `declared.pending` included).

use crate::geodesy::GeoPoint;
use crate::model::incident::ApplyError;
use crate::model::Severity;
use crate::model::{Alarm, AlarmRef, EventKind, Incident, IncidentEvent, IncidentId, IncidentState};
use crate::refdata::{Indexed, RefData};
use crate::transforms::classify::{normalize, CauseClass, CauseTally, Classifier};
use chrono::{DateTime, Duration, Utc};
use compact_str::CompactString;
use foldhash::{HashMap, HashSet};
use rstar::RTree;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// When sites down together become an incident, and when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelatorConfig {
    /// Two down sites join one incident when their coverage circles are at
    /// most this far apart. Default 10 km.
    pub neighbour_gap_km: f64,
    /// Sites down together before an incident may be declared. Default 3.
    pub min_sites: usize,
    /// ...and for how long, so a blip is not announced. Default 2m.
    #[serde(with = "humantime_serde")]
    pub min_duration: std::time::Duration,
    /// Declare at once when this many sites are down. Default 10.
    pub declare_sites: usize,
    /// ... or when at least `min_sites` are down and their coverage holds
    /// this many customers (billing postcodes). Default 1000.
    pub declare_customers: u64,
    /// All sites must stay up this long before "restored". Default 10m.
    #[serde(with = "humantime_serde")]
    pub hold_down: std::time::Duration,
    /// Alarms below this severity are not service-affecting: X.733 defines
    /// critical and major as the service-affecting severities. Default major.
    pub min_severity: Severity,
    /// Cause classes (`transforms::classify`) that never take service down,
    /// whatever the severity. Default `["environment", "security"]`:
    /// temperature, humidity, an open door, an intrusion attempt.
    pub not_service_affecting_classes: Vec<CauseClass>,
    /// Whether a cause neither the standards' table nor `[causes]` rules
    /// know counts (by its severity, as X.733 says). Either way it is
    /// counted by value on `/metrics` and in the log. Default true.
    pub unclassified_service_affecting: bool,
    /// If not empty, only these probable causes (any spelling: case and
    /// separators are ignored) are service-affecting. Default: empty (every
    /// cause not excluded by its class).
    pub service_affecting_causes: Vec<String>,
    /// Radius for sites the inventory lacks but the alarm locates. Default 2 km.
    pub default_radius_km: f64,
    /// How far out of event-time order a raise may arrive after its own
    /// clear and still be known as stale (not applied): feeds re-send
    /// active alarms, and a re-send crossing the clear would leave the site
    /// down. Clears are remembered this long of feed time. `0s` turns it
    /// off. Default 5m.
    #[serde(with = "humantime_serde")]
    pub reorder_window: std::time::Duration,
    /// Temporal coherence: a down site joins an open incident only if its
    /// failure starts within this of the failure start of a member site
    /// within reach (`neighbour_gap_km`), or of the incident's onset. A site
    /// failing later than that opens (or joins) a separate incident, so
    /// unrelated failures hours apart never chain. Default 30m
    /// ([`CorrelatorConfig::DEFAULT_JOIN_WINDOW`]).
    #[serde(with = "humantime_serde")]
    pub join_window: std::time::Duration,
    /// The same for a member of the site's power/backhaul group
    /// (`group_id`), at any distance: shared infrastructure is strong
    /// evidence. Default 1h ([`CorrelatorConfig::DEFAULT_GROUP_JOIN_WINDOW`]).
    #[serde(with = "humantime_serde")]
    pub group_join_window: std::time::Duration,
    /// A site failure shorter than this is a blip and never widens the
    /// audience: cleared within it, the site is dropped from a probable
    /// incident; a site enters a declared incident's footprint (its
    /// customers are told) only once it has been down this long — the
    /// declaration itself is not delayed. `0s` turns it off.
    /// Default 5m ([`CorrelatorConfig::DEFAULT_BLIP_WINDOW`]).
    #[serde(with = "humantime_serde")]
    pub blip_window: std::time::Duration,
}

impl CorrelatorConfig {
    /// Storms cross 10-15 km (a site's reach) in about 15-20 minutes at
    /// 40-70 km/h; a power failure's sites go down within minutes.
    pub const DEFAULT_JOIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(30 * 60);
    /// A group's sites may report a shared failure late (batteries), but a
    /// storm takes single members of many groups: an hour, not the day.
    pub const DEFAULT_GROUP_JOIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
    /// Link flaps last seconds to a few minutes.
    pub const DEFAULT_BLIP_WINDOW: std::time::Duration = std::time::Duration::from_secs(5 * 60);
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            neighbour_gap_km: 10.0,
            min_sites: 3,
            min_duration: std::time::Duration::from_secs(120),
            declare_sites: 10,
            declare_customers: 1000,
            hold_down: std::time::Duration::from_secs(600),
            min_severity: Severity::Major,
            not_service_affecting_classes: vec![CauseClass::Environment, CauseClass::Security],
            unclassified_service_affecting: true,
            service_affecting_causes: Vec::new(),
            default_radius_km: 2.0,
            reorder_window: std::time::Duration::from_secs(300),
            join_window: Self::DEFAULT_JOIN_WINDOW,
            group_join_window: Self::DEFAULT_GROUP_JOIN_WINDOW,
            blip_window: Self::DEFAULT_BLIP_WINDOW,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CorrelateError {
    #[error("unknown site {0:?} and the alarm carries no lat/lon")]
    UnknownSite(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("incident {0} exists already")]
    Duplicate(IncidentId),
}

const ACTOR: &str = "correlator";

/// What the correlator saw but did not turn into events (published on
/// [`crate::runtime::Stats`], so it lives on the ground floor).
pub use crate::runtime::stats::Counts;

/// One clear seen lately on a site, so a raise that arrives after its own
/// clear is known as stale: feeds deliver slightly out of event-time order,
/// and a re-sent raise that crosses its clear would otherwise leave the
/// site down for good. Kept beside the site's active alarms (whose cache
/// line an alarm of the site reads anyway) for `reorder_window` of feed
/// time from its arrival, and dropped when the site is next touched after
/// that: memory is bounded by a window's clears per site.
struct Cleared {
    /// [`tag`] of `alarm_id`.
    tag: u32,
    /// The clear's event time, and when it is forgotten (the later of that
    /// and the watermark on arrival, plus the window), in ms.
    at_ms: i64,
    until_ms: i64,
    alarm_id: CompactString,
}

/// A site's recent clears (see [`Cleared`]).
#[derive(Default)]
struct RecentClears(Vec<Cleared>);

impl RecentClears {
    /// A clear of `alarm_id` at `at_ms`, kept until `until_ms`; first drops
    /// what is forgotten by `now_ms` (the watermark).
    fn record(&mut self, alarm_id: &str, at_ms: i64, until_ms: i64, now_ms: i64) {
        self.prune(now_ms);
        let tag = tag(alarm_id);
        match self.0.iter_mut().find(|c| c.tag == tag && c.alarm_id == alarm_id) {
            Some(c) => (c.at_ms, c.until_ms) = (c.at_ms.max(at_ms), c.until_ms.max(until_ms)),
            None => self.0.push(Cleared { tag, at_ms, until_ms, alarm_id: alarm_id.into() }),
        }
    }

    fn prune(&mut self, now_ms: i64) {
        self.0.retain(|c| c.until_ms >= now_ms);
    }

    /// Whether `alarm_id` (whose [`tag`] is `tag`) was cleared at or after
    /// `at_ms`, and is not forgotten by `now_ms`.
    fn cleared_since(&self, tag: u32, alarm_id: &str, at_ms: i64, now_ms: i64) -> bool {
        self.0.iter().any(|c| c.tag == tag && c.until_ms >= now_ms && c.at_ms >= at_ms && c.alarm_id == alarm_id)
    }
}

/// A slot per site: a vector by inventory index (no hashing once the site's
/// index is known), a map for sites only alarms located.
struct SiteSlots {
    by_site: Vec<Option<u32>>,
    adhoc: HashMap<String, u32>,
}

impl SiteSlots {
    fn new(n_sites: usize) -> Self {
        SiteSlots { by_site: vec![None; n_sites], adhoc: HashMap::default() }
    }

    /// `idx` is `site`'s inventory index, if it has one.
    fn get(&self, idx: Option<u32>, site: &str) -> Option<u32> {
        match idx {
            Some(i) => self.by_site[i as usize],
            None => self.adhoc.get(site).copied(),
        }
    }

    fn set(&mut self, idx: Option<u32>, site: &str, slot: Option<u32>) {
        match (idx, slot) {
            (Some(i), slot) => self.by_site[i as usize] = slot,
            (None, Some(slot)) => match self.adhoc.get_mut(site) {
                Some(s) => *s = slot,
                None => {
                    self.adhoc.insert(site.to_string(), slot);
                }
            },
            (None, None) => {
                self.adhoc.remove(site);
            }
        }
    }
}

/// Inventory sites bucketed by the cells of a 3-D grid over their unit
/// vectors (the R-tree's coordinates): one scan of the 27 cells around a
/// query instead of an R-tree descent. The cell edge is at least the chord
/// of the longest reach, so every site within reach lies in the cells next
/// to the query's; the R-tree's own distance test is then applied as it is
/// (same arithmetic, so the same sites).
///
/// Points are sorted by cell (x, y, z), so the three cells that differ only
/// in z are one run of points: 27 cells are 9 runs, found by binary search
/// over the occupied cells, and kept for each inventory site's own cell so
/// its query does no search at all. Each point also carries the open
/// incident of its site (a mirror of `Correlator::open`), so the scan reads
/// one contiguous stretch of memory.
struct SiteGrid {
    /// Cell edge, and the largest squared chord a query may ask for.
    edge: f64,
    max_chord2: f64,
    /// Occupied cells, sorted; `starts[i]` is where cell `i`'s points begin
    /// (one more entry: `points.len()`).
    cells: Vec<[i32; 3]>,
    starts: Vec<u32>,
    /// Per occupied cell: the 9 runs of points around it.
    runs: Vec<[(u32, u32); 9]>,
    /// Per inventory site: its occupied cell, and its place in `points`.
    site_cell: Vec<u32>,
    site_point: Vec<u32>,
    points: Vec<GridPoint>,
    /// Per point: where its site is and its radius, read only for a
    /// distance (so the scan's stretch stays small); in grid order, near
    /// each other as the points are.
    geo: Vec<(GeoPoint, f64)>,
}

struct GridPoint {
    xyz: [f64; 3],
    idx: u32,
    /// The slot of the site's open incident, or [`NO_SLOT`].
    open: u32,
}

const NO_SLOT: u32 = u32::MAX;

/// A site that never failed (for [`Correlator::since_ms`]).
const NEVER: i64 = i64::MIN;

/// When a pending window that started at `since_ms` is checked for
/// confirmation: after the blip window, on the next whole second.
fn confirm_due(since_ms: i64, blip_ms: i64) -> i64 {
    let due = since_ms.saturating_add(blip_ms);
    due.saturating_add(999).div_euclid(1000).saturating_mul(1000)
}

/// Whether two failure starts (ms) are within `window_ms` of each other.
fn within(a_ms: i64, b_ms: i64, window_ms: i64) -> bool {
    a_ms != NEVER && b_ms != NEVER && a_ms.abs_diff(b_ms) <= window_ms.max(0) as u64
}

impl SiteGrid {
    /// `None` when no reach is finite and positive (the R-tree serves then).
    fn new(rd: &RefData, max_reach_km: f64) -> Option<Self> {
        if !(max_reach_km.is_finite() && max_reach_km > 0.0) {
            return None;
        }
        let max_chord2 = crate::geodesy::chord2_for_km(max_reach_km);
        // A little over the chord: rounding must not move a site in reach
        // two cells away; and never so small that cell numbers overflow.
        let edge = (max_chord2.sqrt() * (1.0 + 1e-9)).max(1e-6);
        let cell = |xyz: [f64; 3]| xyz.map(|c| (c / edge).floor() as i32);
        let mut points: Vec<([i32; 3], GridPoint)> = rd
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let xyz = GeoPoint::new(s.lat, s.lon).xyz();
                (cell(xyz), GridPoint { xyz, idx: i as u32, open: NO_SLOT })
            })
            .collect();
        points.sort_by_key(|(c, p)| (*c, p.idx));
        let (mut cells, mut starts) = (Vec::new(), Vec::new());
        let (mut site_cell, mut site_point) = (vec![0; points.len()], vec![0; points.len()]);
        for (i, (c, p)) in points.iter().enumerate() {
            if cells.last() != Some(c) {
                cells.push(*c);
                starts.push(i as u32);
            }
            site_cell[p.idx as usize] = cells.len() as u32 - 1;
            site_point[p.idx as usize] = i as u32;
        }
        starts.push(points.len() as u32);
        let mut grid = SiteGrid {
            edge,
            max_chord2,
            cells,
            starts,
            runs: Vec::new(),
            site_cell,
            site_point,
            geo: points
                .iter()
                .map(|(_, p)| {
                    let s = rd.site(p.idx);
                    (GeoPoint::new(s.lat, s.lon), s.radius_km)
                })
                .collect(),
            points: points.into_iter().map(|(_, p)| p).collect(),
        };
        grid.runs = grid.cells.iter().map(|&c| grid.runs_around(c)).collect();
        Some(grid)
    }

    /// The 9 runs of points in the 27 cells around cell `c`.
    fn runs_around(&self, c: [i32; 3]) -> [(u32, u32); 9] {
        let at = |key: [i64; 3]| {
            let i = self.cells.partition_point(|k| k.map(i64::from) < key);
            self.starts[i]
        };
        let [x, y, z] = c.map(i64::from);
        let mut runs = [(0, 0); 9];
        for (k, run) in runs.iter_mut().enumerate() {
            let (dx, dy) = (k as i64 / 3 - 1, k as i64 % 3 - 1);
            *run = (at([x + dx, y + dy, z - 1]), at([x + dx, y + dy, z + 2]));
        }
        runs
    }

    /// Mirror `Correlator::open` for inventory site `idx`.
    fn set_open(&mut self, idx: u32, slot: Option<u32>) {
        self.points[self.site_point[idx as usize] as usize].open = slot.unwrap_or(NO_SLOT);
    }

    /// Calls `f` with every site whose unit vector is within squared chord
    /// `chord2` of `q` (exactly the test the R-tree makes) — with `only_open`,
    /// only those in an open incident (tested first: it is cheaper) — if
    /// `chord2` is within the grid's reach; `false` if it is not (nothing
    /// was called).
    /// `f` gets the point and its position (for [`SiteGrid::geo`]).
    fn within(&self, q: [f64; 3], chord2: f64, only_open: bool, f: impl FnMut(&GridPoint, usize)) -> bool {
        let c = q.map(|c| (c / self.edge).floor() as i32);
        self.scan(&self.runs_around(c), q, chord2, only_open, f)
    }

    /// [`SiteGrid::within`] around inventory site `idx` (its own point, so
    /// its own cell: the runs are ready).
    fn within_site(&self, idx: u32, chord2: f64, only_open: bool, f: impl FnMut(&GridPoint, usize)) -> bool {
        let q = self.points[self.site_point[idx as usize] as usize].xyz;
        self.scan(&self.runs[self.site_cell[idx as usize] as usize], q, chord2, only_open, f)
    }

    fn scan(
        &self,
        runs: &[(u32, u32); 9],
        q: [f64; 3],
        chord2: f64,
        only_open: bool,
        mut f: impl FnMut(&GridPoint, usize),
    ) -> bool {
        // (A NaN reach is not within it either.)
        let in_reach = chord2 <= self.max_chord2;
        if !in_reach {
            return false;
        }
        for &(from, to) in runs {
            for (k, p) in self.points[from as usize..to as usize].iter().enumerate() {
                if only_open && p.open == NO_SLOT {
                    continue;
                }
                // rstar's `distance_2` for `[f64; 3]`, operation for operation.
                let d = [p.xyz[0] - q[0], p.xyz[1] - q[1], p.xyz[2] - q[2]];
                let d2 = d[2] * d[2] + (d[1] * d[1] + (d[0] * d[0] + 0.0));
                if d2 <= chord2 {
                    f(p, from as usize + k);
                }
            }
        }
        true
    }
}

/// The one writer of the correlator's `open` sites: keeps the grid's
/// mirror of it in step.
fn set_open(open: &mut SiteSlots, grid: &mut Option<SiteGrid>, idx: Option<u32>, site: &str, slot: Option<u32>) {
    open.set(idx, site, slot);
    if let (Some(g), Some(i)) = (grid.as_mut(), idx) {
        g.set_open(i, slot);
    }
}

/// One active alarm of an inventory site, in the incident (slot) that holds
/// it: the mirror of `Incident::sites[site].active` that lets a lookup skip
/// the incident's (possibly huge) site map.
struct Active {
    slot: u32,
    /// [`tag`] of `alarm_id`: a site with many active alarms is searched by
    /// comparing integers, the id itself only on a match. (It fills the
    /// padding after `slot`, so it costs no space.)
    tag: u32,
    /// Inline up to 24 bytes: comparing it reads no other cache line.
    alarm_id: CompactString,
}

/// A short hash of an alarm id for [`Active::tag`].
fn tag(alarm_id: &str) -> u32 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0).hash_one(alarm_id) as u32
}

impl Active {
    fn new(slot: u32, alarm_id: &CompactString) -> Self {
        Active { slot, tag: tag(alarm_id), alarm_id: alarm_id.clone() }
    }

    /// Whether this is `alarm_id` (whose [`tag`] is `tag`) in `slot`.
    fn is(&self, slot: u32, tag: u32, alarm_id: &str) -> bool {
        self.slot == slot && self.tag == tag && self.alarm_id == alarm_id
    }
}

/// A site's active alarms (in no order), the first inline: a site mostly
/// has one, and then reading it costs no pointer chase.
struct ActiveList {
    first: Option<Active>,
    more: Vec<Active>,
    /// The site's clears within the reorder window.
    cleared: RecentClears,
    /// When the site's latest failure window started (ms; [`NEVER`] before
    /// any, and after a window that ended as a blip): temporal coherence
    /// reads it here, in the cache lines an alarm of the site touches anyway.
    since_ms: i64,
}

impl Default for ActiveList {
    fn default() -> Self {
        ActiveList { first: None, more: Vec::new(), cleared: RecentClears::default(), since_ms: NEVER }
    }
}

impl ActiveList {
    fn iter(&self) -> impl Iterator<Item = &Active> {
        self.first.iter().chain(&self.more)
    }

    fn push(&mut self, a: Active) {
        match self.first {
            None => self.first = Some(a),
            Some(_) => self.more.push(a),
        }
    }

    /// Keeps the alarms `keep` says to; the first place is refilled.
    fn retain(&mut self, mut keep: impl FnMut(&Active) -> bool) {
        if self.first.as_ref().is_some_and(|a| !keep(a)) {
            self.first = None;
        }
        self.more.retain(keep);
        if self.first.is_none() {
            self.first = self.more.pop();
        }
    }
}

/// One incident and what the correlator keeps about it.
struct Slot {
    inc: Incident,
    /// The slot's first incident was replaced by a new one of the same id
    /// (as a map insert would): sites may point here that `inc` lacks, so
    /// lookups go through `inc` itself.
    replaced: bool,
    /// When the incident (Probable) last reached `min_sites` down.
    quorum_since: Option<DateTime<Utc>>,
    /// While open: postcodes its sites cover, and their customers.
    coverage: Option<(HashSet<u32>, u64)>,
    /// Its pending timer (also in `timers`).
    deadline: Option<DateTime<Utc>>,
    /// Declared: sites that started a failure window since the declaration,
    /// by when they have been down for the blip window (non-decreasing):
    /// checked then, and `confirmed` if still down in that window and
    /// pending. Entries whose window ended are skipped when due.
    pending: VecDeque<Pending>,
}

/// A window of a site that may enter a declared incident's footprint.
struct Pending {
    due_ms: i64,
    since_ms: i64,
    /// The site: its inventory index, or (a site only alarms located) its id.
    site: PendingSite,
}

enum PendingSite {
    Inventory(u32),
    Adhoc(CompactString),
}

impl PendingSite {
    fn new(idx: Option<u32>, site: &str) -> Self {
        match idx {
            Some(i) => PendingSite::Inventory(i),
            None => PendingSite::Adhoc(site.into()),
        }
    }
}

/// A pending timer: by deadline, then incident id (the deterministic order
/// `tick` runs them in); the slot rides along so firing needs no lookup.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    due: DateTime<Utc>,
    id: IncidentId,
    slot: u32,
}

/// The postcodes `inc`'s footprint sites cover, and their customers.
fn footprint_coverage(rd: &RefData, inc: &Incident, site_index: impl Fn(&str) -> Option<u32>) -> (HashSet<u32>, u64) {
    let (mut covered, mut customers) = (HashSet::default(), 0u64);
    for (site, _) in inc.footprint_sites() {
        let Some(idx) = site_index(site) else { continue };
        for &p in rd.site_postcodes(idx) {
            if covered.insert(p) {
                customers += rd.customers_in(&rd.postcodes[p as usize].postcode).len() as u64;
            }
        }
    }
    (covered, customers)
}

/// Keep incident `slot`'s timer (`s.deadline`, and its entry in `timers`)
/// at its next deadline: a probable incident's declaration (quorum held for
/// `min_duration`) or dismissal (all up), a declared one's resolution (all
/// up for `hold_down`) or its next pending site's confirmation.
fn schedule(s: &mut Slot, timers: &mut BTreeSet<Timer>, slot: u32, min_duration: Duration, hold_down: Duration) {
    let inc = &s.inc;
    let due = match inc.state {
        IncidentState::Probable => match s.quorum_since {
            Some(q) => Some(q + min_duration),
            None => inc.all_up_since(),
        },
        IncidentState::Declared => {
            let resolve = inc.all_up_since().map(|u| u + hold_down);
            let confirm_ms = s.pending.front().map(|p| p.due_ms);
            if resolve.is_none() && confirm_ms.is_some() && s.deadline.map(|d| d.timestamp_millis()) == confirm_ms {
                return; // (The common case while a declared incident grows.)
            }
            let confirm = confirm_ms.and_then(DateTime::from_timestamp_millis);
            match (resolve, confirm) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        _ => None,
    };
    if due != s.deadline {
        if let Some(old) = s.deadline.take() {
            timers.remove(&Timer { due: old, id: inc.id.clone(), slot });
        }
        if let Some(due) = due {
            s.deadline = Some(due);
            timers.insert(Timer { due, id: inc.id.clone(), slot });
        }
    }
}

pub struct Correlator {
    cfg: CorrelatorConfig,
    refdata: Arc<RefData>,
    /// Probable cause → class (the standards' table and the operator's rules).
    classifier: Arc<Classifier>,
    /// `service_affecting_causes`, normalized (empty: no restriction).
    causes: HashSet<String>,
    /// Each distinct cause string's verdict, computed once: feeds repeat a
    /// handful of causes, and classifying normalizes and hashes.
    verdicts: HashMap<CompactString, Verdict>,
    min_duration: Duration,
    hold_down: Duration,
    /// Every incident, by slot; slots are never reused.
    slots: Vec<Slot>,
    /// Incident id → its slot (only at the API's edges and on opening).
    ids: HashMap<IncidentId, u32>,
    /// Member site → its open incident's slot.
    open: SiteSlots,
    /// Site → the slot of the last incident it was in that was resolved.
    resolved_by_site: SiteSlots,
    /// Per inventory site: its active alarms, by incident.
    active: Vec<ActiveList>,
    grid: Option<SiteGrid>,
    /// Sites not in the inventory, located by their alarms.
    adhoc: Vec<(String, GeoPoint, f64)>,
    adhoc_index: HashMap<String, u32>,
    adhoc_tree: RTree<Indexed>,
    /// Pending timers, by deadline.
    timers: BTreeSet<Timer>,
    /// Scratch: neighbour incidents of the raise being handled.
    scratch: Vec<u32>,
    /// `reorder_window` in ms (0: off).
    reorder_ms: i64,
    /// `join_window`, `group_join_window` and `blip_window` in ms.
    join_ms: i64,
    group_join_ms: i64,
    blip_ms: i64,

    /// Recent clears of sites not in the inventory (those of inventory
    /// sites are in `active`).
    adhoc_cleared: HashMap<String, RecentClears>,
    /// Latest event time seen.
    watermark: Option<DateTime<Utc>>,
    /// Per site, the latest raise or clear time the restored log records
    /// (`restore`): after a restart, a re-read alarm of that site at or
    /// before it was applied already (`transforms::order`). Per site, not
    /// one time for all: a partition that lagged behind the others may
    /// still hold older alarms the log never saw.
    restored_sites: HashMap<CompactString, DateTime<Utc>>,
    pub counts: Counts,
    /// Raises by cause class, and the unclassified by cause.
    pub tally: CauseTally,
}

/// What a cause string means to the correlator.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    class: Option<CauseClass>,
    /// Whether a raise of this cause counts (at a severity that does).
    affecting: bool,
}

/// Distinct causes whose verdict is cached; past this (a feed putting ids
/// in its causes) they are classified each time.
const MAX_VERDICTS: usize = 4096;

impl Correlator {
    /// A correlator classifying causes by the standards' table alone.
    pub fn new(cfg: CorrelatorConfig, refdata: Arc<RefData>) -> Self {
        Self::with_classifier(cfg, refdata, Arc::new(Classifier::default()))
    }

    /// A correlator classifying causes with `classifier` (the table plus
    /// the operator's `[causes]` rules).
    pub fn with_classifier(cfg: CorrelatorConfig, refdata: Arc<RefData>, classifier: Arc<Classifier>) -> Self {
        let causes = cfg.service_affecting_causes.iter().map(|c| normalize(c)).collect();
        let dur = |d: std::time::Duration| Duration::from_std(d).unwrap_or(Duration::MAX);
        let n_sites = refdata.sites.len();
        let reach = |r: f64| r + refdata.max_radius_km().max(cfg.default_radius_km) + cfg.neighbour_gap_km;
        let grid = SiteGrid::new(&refdata, reach(refdata.max_radius_km().max(cfg.default_radius_km)));
        let reorder_window = dur(cfg.reorder_window);
        let ms = |d: std::time::Duration| dur(d).num_milliseconds();
        let (join_ms, group_join_ms, blip_ms) = (ms(cfg.join_window), ms(cfg.group_join_window), ms(cfg.blip_window));
        Correlator {
            min_duration: dur(cfg.min_duration),
            hold_down: dur(cfg.hold_down),
            cfg,
            refdata,
            classifier,
            causes,
            verdicts: HashMap::default(),
            slots: Vec::new(),
            ids: HashMap::default(),
            open: SiteSlots::new(n_sites),
            resolved_by_site: SiteSlots::new(n_sites),
            active: std::iter::repeat_with(ActiveList::default).take(n_sites).collect(),
            grid,
            adhoc: Vec::new(),
            adhoc_index: HashMap::default(),
            adhoc_tree: RTree::new(),
            timers: BTreeSet::new(),
            scratch: Vec::new(),
            reorder_ms: reorder_window.num_milliseconds(),
            join_ms,
            group_join_ms,
            blip_ms,
            adhoc_cleared: HashMap::default(),
            watermark: None,
            restored_sites: HashMap::default(),
            counts: Counts::default(),
            tally: CauseTally::default(),
        }
    }

    fn slot_of(&self, id: &IncidentId) -> Option<&Slot> {
        self.ids.get(id).map(|&s| &self.slots[s as usize])
    }

    pub fn incident(&self, id: &IncidentId) -> Option<&Incident> {
        self.slot_of(id).map(|s| &s.inc)
    }

    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.slots.iter().map(|s| &s.inc)
    }

    /// Postcodes (indexes into `refdata.postcodes`) an open incident's sites
    /// cover, kept as sites join: the planner's footprint without a rescan.
    pub fn covered(&self, id: &IncidentId) -> Option<Vec<u32>> {
        self.slot_of(id)?.coverage.as_ref().map(|c| c.0.iter().copied().collect())
    }

    /// Customers billed in the postcodes an open incident's sites cover.
    pub fn customers(&self, id: &IncidentId) -> u64 {
        self.slot_of(id).and_then(|s| s.coverage.as_ref()).map_or(0, |c| c.1)
    }

    /// Per site, the latest alarm time the restored log records.
    pub fn restored_sites(&self) -> &HashMap<CompactString, DateTime<Utc>> {
        &self.restored_sites
    }

    /// The latest alarm event time seen; the epoch before any.
    pub fn watermark(&self) -> DateTime<Utc> {
        self.watermark.unwrap_or(DateTime::UNIX_EPOCH)
    }

    fn advance(&mut self, t: DateTime<Utc>) {
        self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
    }

    /// A new slot for `inc`, or, if its id is taken, `inc` in that slot in
    /// place of the old incident (as a map insert would), keeping the slot's
    /// bookkeeping.
    fn put(&mut self, inc: Incident) -> u32 {
        if let Some(&slot) = self.ids.get(&inc.id) {
            let s = &mut self.slots[slot as usize];
            let old = std::mem::replace(&mut s.inc, inc);
            s.replaced = true;
            for site in old.sites.keys() {
                let Some(idx) = self.refdata.site_index(site) else { continue };
                self.active[idx as usize].retain(|a| a.slot != slot);
            }
            return slot;
        }
        let slot = self.slots.len() as u32;
        self.ids.insert(inc.id.clone(), slot);
        self.slots.push(Slot {
            inc,
            replaced: false,
            quorum_since: None,
            coverage: None,
            deadline: None,
            pending: VecDeque::new(),
        });
        slot
    }

    /// Fold one record of the incident log (on start).
    pub fn restore(&mut self, ev: &IncidentEvent) -> Result<(), CorrelateError> {
        if ev.actor == ACTOR {
            // Planner and NOC events carry wall time, not alarm time.
            self.advance(ev.at);
            if let EventKind::AlarmsCleared { alarms } = &ev.kind {
                for a in alarms {
                    self.record_clear(&a.site_id, self.refdata.site_index(&a.site_id), &a.alarm_id, a.at);
                }
            }
            if let EventKind::AlarmsRaised { alarms } | EventKind::AlarmsCleared { alarms } = &ev.kind {
                for a in alarms {
                    let at = self.restored_sites.entry(a.site_id.clone()).or_insert(a.at);
                    *at = (*at).max(a.at);
                }
            }
        }
        let slot = match self.ids.get(&ev.incident_id) {
            None => self.put(Incident::open(ev)?),
            Some(&slot) => {
                if !self.slots[slot as usize].inc.apply(ev)? {
                    return Ok(());
                }
                slot
            }
        };
        self.index(slot, ev, None);
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
        let slot = *self.ids.get(id).ok_or_else(|| ApplyError::NotOpened(id.clone()))?;
        self.append_to(slot, at, actor, kind, None)
    }

    /// Open an incident the NOC declares by hand over `postcodes` (indexes
    /// into the reference data's postcodes, from [`crate::model::Area::postcodes`]):
    /// `opened`, `scoped` and `declared`, by `actor`. It has no sites, so no
    /// alarm joins it and no timer resolves it; the NOC resolves or cancels it.
    /// `since`: when service went, as the NOC says (the `opened` time, where
    /// compensation windows start); `at`: now.
    pub fn declare_area(
        &mut self,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
        actor: &str,
        cause: String,
        area: crate::model::Area,
        postcodes: &[u32],
    ) -> Result<Vec<IncidentEvent>, CorrelateError> {
        let names: Vec<String> =
            postcodes.iter().map(|&p| self.refdata.postcodes[p as usize].postcode.clone()).collect();
        let id = IncidentId::derive(actor, &format!("{}:{}", area.kind(), names.join(",")), at);
        if self.ids.contains_key(&id) {
            return Err(CorrelateError::Duplicate(id));
        }
        let opened = IncidentEvent {
            incident_id: id,
            seq: 1,
            at: since.min(at),
            actor: IncidentEvent::actor(actor),
            kind: EventKind::Opened { cause, detail: None },
        };
        let slot = self.put(Incident::open(&opened)?);
        self.index(slot, &opened, None);
        let mut out = vec![opened];
        // The actor is on the event; the reason is public (status page).
        let reason = format!("declared by the NOC over {} postcodes ({})", names.len(), area.kind());
        out.push(self.append_to(slot, at, actor, EventKind::Scoped { area, postcodes: names }, None)?);
        let kind = EventKind::Declared { reason, pending: vec![], confirm_joiners: false };
        out.push(self.append_to(slot, at, actor, kind, None)?);
        Ok(out)
    }

    /// `site`: an alarm's site and its inventory index, when the caller
    /// knows them (saves looking the index up again).
    fn append_to(
        &mut self,
        slot: u32,
        at: DateTime<Utc>,
        actor: &str,
        kind: EventKind,
        site: Option<(&str, Option<u32>)>,
    ) -> Result<IncidentEvent, CorrelateError> {
        let inc = &mut self.slots[slot as usize].inc;
        let ev = IncidentEvent {
            incident_id: inc.id.clone(),
            seq: inc.seq + 1,
            at,
            actor: IncidentEvent::actor(actor),
            kind,
        };
        inc.apply(&ev)?;
        self.index(slot, &ev, site);
        Ok(ev)
    }

    fn emit(
        &mut self,
        slot: u32,
        at: DateTime<Utc>,
        kind: EventKind,
        site: Option<(&str, Option<u32>)>,
        out: &mut Vec<IncidentEvent>,
    ) {
        // Only called for incidents we hold, with the next seq: cannot fail.
        if let Ok(ev) = self.append_to(slot, at, ACTOR, kind, site) {
            out.push(ev);
        }
    }

    /// Keep the site index, the quorum clock and the timer of one incident
    /// in step with an event just applied to it.
    fn index(&mut self, slot: u32, ev: &IncidentEvent, site: Option<(&str, Option<u32>)>) {
        let Correlator {
            cfg,
            refdata,
            slots,
            open,
            resolved_by_site,
            active,
            timers,
            min_duration,
            hold_down,
            grid,
            blip_ms,
            ..
        } = self;
        let rd = &**refdata;
        let Some(s) = slots.get_mut(slot as usize) else { return };
        let site_index = |name: &str| match site {
            Some((known, idx)) if known == name => idx,
            _ => rd.site_index(name),
        };
        // The mirror of the active alarms follows `Incident::apply`, whatever
        // the incident's state.
        match &ev.kind {
            EventKind::AlarmsRaised { alarms } => {
                let declared = s.inc.state == IncidentState::Declared && s.inc.confirm_joiners;
                for a in alarms {
                    let idx = site_index(&a.site_id);
                    // A new failure window: the site was not down here.
                    let new_window = match idx {
                        Some(idx) => {
                            let list = &mut active[idx as usize];
                            let new_window = !list.iter().any(|x| x.slot == slot);
                            let t = tag(&a.alarm_id);
                            if !list.iter().any(|x| x.is(slot, t, &a.alarm_id)) {
                                list.push(Active::new(slot, &a.alarm_id));
                            }
                            if new_window {
                                list.since_ms = a.at.timestamp_millis();
                            }
                            new_window
                        }
                        None => true,
                    };
                    if declared && new_window {
                        // (Non-decreasing dues: a late raise waits for the
                        // one before it. Rounded up to a whole second, so
                        // a busy incident's timer fires once a second, not
                        // once an alarm.)
                        let since = a.at.timestamp_millis();
                        let due = confirm_due(since, *blip_ms);
                        let due = s.pending.back().map_or(due, |b| b.due_ms.max(due));
                        s.pending.push_back(Pending {
                            due_ms: due,
                            since_ms: since,
                            site: PendingSite::new(idx, &a.site_id),
                        });
                    }
                }
            }
            EventKind::AlarmsCleared { alarms } => {
                for a in alarms {
                    let Some(idx) = site_index(&a.site_id) else { continue };
                    // (At most one: a raise adds an alarm only once.)
                    let t = tag(&a.alarm_id);
                    let list = &mut active[idx as usize];
                    list.retain(|x| !x.is(slot, t, &a.alarm_id));
                    // A failure window that ended as a blip is no evidence
                    // that a later failure nearby is part of this one.
                    if *blip_ms > 0
                        && a.at.timestamp_millis().saturating_sub(list.since_ms) < *blip_ms
                        && !list.iter().any(|x| x.slot == slot)
                    {
                        list.since_ms = NEVER;
                    }
                }
            }
            _ => {}
        }
        match &ev.kind {
            EventKind::AlarmsRaised { alarms } if s.inc.state.is_open() => {
                let (covered, customers) = s.coverage.get_or_insert_with(Default::default);
                for a in alarms {
                    let idx = site_index(&a.site_id);
                    set_open(open, grid, idx, &a.site_id, Some(slot));
                    let Some(idx) = idx.filter(|_| !rd.postcodes.is_empty()) else { continue };
                    // A pending site is outside the footprint until confirmed.
                    if s.inc.sites.get(&a.site_id).is_some_and(|w| w.pending) {
                        continue;
                    }
                    for &p in rd.site_postcodes(idx) {
                        if covered.insert(p) {
                            *customers += rd.customers_in(&rd.postcodes[p as usize].postcode).len() as u64;
                        }
                    }
                }
            }
            EventKind::Confirmed { sites } if s.inc.state.is_open() => {
                let (covered, customers) = s.coverage.get_or_insert_with(Default::default);
                for site in sites {
                    let Some(idx) = site_index(site) else { continue };
                    for &p in rd.site_postcodes(idx) {
                        if covered.insert(p) {
                            *customers += rd.customers_in(&rd.postcodes[p as usize].postcode).len() as u64;
                        }
                    }
                }
            }
            EventKind::Declared { pending, .. } if !pending.is_empty() => {
                let mut queue: Vec<Pending> = pending
                    .iter()
                    .filter_map(|site| {
                        let since = s.inc.sites.get(site)?.down_since.timestamp_millis();
                        let due_ms = confirm_due(since, *blip_ms);
                        Some(Pending { due_ms, since_ms: since, site: PendingSite::new(site_index(site), site) })
                    })
                    .collect();
                // (Stable: the event lists its sites sorted.)
                queue.sort_by_key(|p| p.due_ms);
                s.pending.extend(queue);
                if s.coverage.is_some() {
                    s.coverage = Some(footprint_coverage(rd, &s.inc, site_index));
                }
            }
            EventKind::Dropped { sites, .. } => {
                for site in sites {
                    let idx = site_index(site);
                    if open.get(idx, site) == Some(slot) {
                        set_open(open, grid, idx, site, None);
                    }
                }
                if s.inc.state.is_open() {
                    // Rebuilt from the footprint that is left (a probable
                    // incident's handful of sites).
                    s.coverage = Some(footprint_coverage(rd, &s.inc, site_index));
                }
            }
            EventKind::Scoped { postcodes, .. } if s.inc.state.is_open() => {
                let (covered, customers) = s.coverage.get_or_insert_with(Default::default);
                for (p, i) in postcodes.iter().filter_map(|p| Some((p, rd.postcode_index(p)?))) {
                    if covered.insert(i) {
                        *customers += rd.customers_in(p).len() as u64;
                    }
                }
            }
            EventKind::Resolved { .. }
            | EventKind::Dismissed {}
            | EventKind::Cancelled { .. }
            | EventKind::Merged { .. } => {
                s.coverage = None;
                s.pending.clear();
                let resolved = s.inc.state == IncidentState::Resolved;
                for name in s.inc.sites.keys() {
                    let idx = site_index(name);
                    if open.get(idx, name) == Some(slot) {
                        set_open(open, grid, idx, name, None);
                    }
                    if resolved {
                        resolved_by_site.set(idx, name, Some(slot));
                    }
                }
            }
            _ => {}
        }
        let inc = &s.inc;
        if inc.state == IncidentState::Probable && inc.down_count() >= cfg.min_sites {
            s.quorum_since.get_or_insert(ev.at);
        } else {
            s.quorum_since = None;
        }
        schedule(s, timers, slot, *min_duration, *hold_down);
    }

    /// Where the alarm's site is and its radius; `idx` is its inventory
    /// index, if it has one.
    fn locate(&mut self, alarm: &Alarm, idx: Option<u32>) -> Result<(GeoPoint, f64), CorrelateError> {
        if let Some(i) = idx {
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

    /// Remember a clear of `alarm_id` on `site` (inventory index `idx`) at
    /// `at`, for [`Correlator::stale`].
    fn record_clear(&mut self, site: &str, idx: Option<u32>, alarm_id: &str, at: DateTime<Utc>) {
        if self.reorder_ms <= 0 {
            return;
        }
        let now = self.watermark().timestamp_millis();
        let at = at.timestamp_millis();
        let until = at.max(now).saturating_add(self.reorder_ms);
        match idx {
            Some(i) => self.active[i as usize].cleared.record(alarm_id, at, until, now),
            None => self.adhoc_cleared.entry(site.to_string()).or_default().record(alarm_id, at, until, now),
        }
    }

    /// Whether this raise arrived after its own clear (within the reorder
    /// window): the condition is over.
    fn stale(&self, alarm: &Alarm, idx: Option<u32>) -> bool {
        let clears = match idx {
            Some(i) => &self.active[i as usize].cleared,
            None => match self.adhoc_cleared.get(&alarm.site_id) {
                Some(c) => c,
                None => return false,
            },
        };
        !clears.0.is_empty()
            && clears.cleared_since(
                tag(&alarm.alarm_id),
                &alarm.alarm_id,
                alarm.event_time.timestamp_millis(),
                self.watermark().timestamp_millis(),
            )
    }

    /// Whether a raise takes service down (severity and cause), counting
    /// its cause's class on the way.
    fn service_affecting(&mut self, a: &Alarm) -> bool {
        let cause = a.probable_cause.as_str();
        let v = match self.verdicts.get(cause) {
            Some(v) => *v,
            None => {
                let v = self.verdict(cause);
                if self.verdicts.len() < MAX_VERDICTS {
                    self.verdicts.insert(cause.into(), v);
                }
                v
            }
        };
        self.tally.record(cause, v.class);
        v.affecting && a.severity >= self.cfg.min_severity
    }

    fn verdict(&self, cause: &str) -> Verdict {
        let class = self.classifier.classify(cause);
        let by_class = match class {
            Some(c) => !self.cfg.not_service_affecting_classes.contains(&c),
            None => self.cfg.unclassified_service_affecting,
        };
        let listed = self.causes.is_empty() || self.causes.contains(&normalize(cause));
        Verdict { class, affecting: by_class && listed }
    }

    /// The open incident holding the alarm's site, and whether the alarm is
    /// active there.
    fn holding(&self, alarm: &Alarm, idx: Option<u32>) -> Option<(u32, bool)> {
        let slot = self.open.get(idx, &alarm.site_id)?;
        if let Some(idx) = idx.filter(|_| !self.slots[slot as usize].replaced) {
            // A site points only to an incident it was raised in, so the
            // incident has it; the mirror says whether the alarm is active.
            let t = tag(&alarm.alarm_id);
            return Some((slot, self.active[idx as usize].iter().any(|x| x.is(slot, t, &alarm.alarm_id))));
        }
        let active = self.slots[slot as usize].inc.sites.get(&alarm.site_id)?.active.contains(alarm.alarm_id.as_str());
        Some((slot, active))
    }

    /// Apply one alarm; returns the events it caused, in order. Timers due
    /// by the alarm's event time run first, so a replayed backlog gives the
    /// answer it gave live.
    /// (On an error the events of timers already run are dropped: callers
    /// that write a log use [`Correlator::on_alarm_into`].)
    pub fn on_alarm(&mut self, alarm: &Alarm) -> Result<Vec<IncidentEvent>, CorrelateError> {
        let mut out = Vec::new();
        self.on_alarm_into(alarm, &mut out)?;
        Ok(out)
    }

    /// [`Correlator::on_alarm`], appending the events to `out` (a buffer the
    /// caller reuses, so a steady feed allocates no result vectors). On an
    /// error `out` still holds the events already applied — those of the
    /// timers the alarm's time ran — which the caller must record like any
    /// others: they are in the correlator's state, and leaving them out of
    /// the incident log would leave a gap in its `seq`.
    pub fn on_alarm_into(&mut self, alarm: &Alarm, out: &mut Vec<IncidentEvent>) -> Result<(), CorrelateError> {
        self.alarm_into(alarm, out)
    }

    fn alarm_into(&mut self, alarm: &Alarm, out: &mut Vec<IncidentEvent>) -> Result<(), CorrelateError> {
        let t = alarm.event_time;
        self.tick_into(self.watermark.map_or(t, |w| w.max(t)), out);
        self.advance(t);
        let aref =
            || AlarmRef { alarm_id: alarm.alarm_id.as_str().into(), site_id: alarm.site_id.as_str().into(), at: t };
        let idx = self.refdata.site_index(&alarm.site_id);
        let site = Some((alarm.site_id.as_str(), idx));
        if alarm.is_clear() {
            match self.holding(alarm, idx) {
                Some((slot, true)) => {
                    self.emit(slot, t, EventKind::AlarmsCleared { alarms: vec![aref()] }, site, out);
                    self.drop_if_blip(slot, &alarm.site_id, t, out);
                }
                _ => self.counts.clears_without_raise += 1,
            }
            self.record_clear(&alarm.site_id, idx, &alarm.alarm_id, t);
            return Ok(());
        }
        if idx.is_none() && alarm.lat.is_none() && !self.adhoc_index.contains_key(&alarm.site_id) {
            return Err(CorrelateError::UnknownSite(alarm.site_id.clone()));
        }
        if !self.service_affecting(alarm) {
            self.counts.not_service_affecting += 1;
            return Ok(());
        }
        let (p, r) = self.locate(alarm, idx)?;
        let holding = self.holding(alarm, idx);
        if !matches!(holding, Some((_, true))) && self.stale(alarm, idx) {
            self.counts.stale_raises += 1;
            return Ok(());
        }
        let slot = match holding {
            Some((_, true)) => {
                self.counts.repeated_raises += 1;
                return Ok(());
            }
            // A new alarm of a site the open incident holds: there if the
            // site is still down there or its own last failure or the
            // incident's onset started within the join window; else, like
            // any other site, by its neighbours or in an incident of its own.
            Some((slot, false)) if self.coherent_again(slot, idx, &alarm.site_id, t) => {
                self.emit(slot, t, EventKind::AlarmsRaised { alarms: vec![aref()] }, site, out);
                slot
            }
            Some((_, false)) | None => self.join_or_open(alarm, idx, aref(), p, r, out)?,
        };
        let s = &self.slots[slot as usize];
        if s.inc.state == IncidentState::Probable {
            let (down, customers) = (s.inc.down_count(), s.coverage.as_ref().map_or(0, |c| c.1));
            let reason = if down >= self.cfg.declare_sites {
                Some(format!("{down} sites down (>= {})", self.cfg.declare_sites))
            } else if down >= self.cfg.min_sites && customers >= self.cfg.declare_customers {
                Some(format!("{down} sites down covering {customers} customers (>= {})", self.cfg.declare_customers))
            } else {
                None
            };
            if let Some(reason) = reason {
                let (pending, confirm_joiners) = (self.late_joiners(slot, t), self.blip_ms > 0);
                self.emit(slot, t, EventKind::Declared { reason, pending, confirm_joiners }, None, out);
            }
        }
        Ok(())
    }

    /// Whether a new alarm at `t` of a site in open incident `slot` is part
    /// of the same failure: the site is still down there, or its own last
    /// failure started, or the incident opened, within the join window.
    fn coherent_again(&self, slot: u32, idx: Option<u32>, site: &str, t: DateTime<Utc>) -> bool {
        let t = t.timestamp_millis();
        let inc = &self.slots[slot as usize].inc;
        // Still down there (another alarm of the site): the same failure.
        let (down, own) = match idx {
            Some(i) => {
                let list = &self.active[i as usize];
                (list.iter().any(|x| x.slot == slot), list.since_ms)
            }
            None => {
                inc.sites.get(site).map_or((false, NEVER), |w| (w.up_at.is_none(), w.down_since.timestamp_millis()))
            }
        };
        down || within(own, t, self.join_ms) || within(inc.opened_at.timestamp_millis(), t, self.join_ms)
    }

    /// The sites of probable incident `slot` that a declaration at `at`
    /// leaves pending: down for less than the blip window (a flap beside
    /// the failure, even the one that opened it, is not told for; the
    /// failure's own sites are, once down that long). Sorted. Walks the
    /// incident's sites once, at its declaration.
    fn late_joiners(&self, slot: u32, at: DateTime<Utc>) -> Vec<CompactString> {
        if self.blip_ms <= 0 {
            return Vec::new();
        }
        let inc = &self.slots[slot as usize].inc;
        let blip = Duration::milliseconds(self.blip_ms);
        let mut v: Vec<CompactString> = inc
            .sites
            .iter()
            .filter(|(_, w)| w.up_at.is_none() && at - w.down_since < blip)
            .map(|(s, _)| CompactString::from(s))
            .collect();
        v.sort_unstable();
        v
    }

    /// After a clear on `site` in probable incident `slot`: if the site is
    /// up and its failure lasted less than the blip window, while other
    /// sites are still down, drop it (nobody was told; a blip never widens
    /// the audience). With every site up the incident is dismissed anyway.
    fn drop_if_blip(&mut self, slot: u32, site: &str, t: DateTime<Utc>, out: &mut Vec<IncidentEvent>) {
        let inc = &self.slots[slot as usize].inc;
        if self.blip_ms <= 0 || inc.state != IncidentState::Probable || inc.down_count() == 0 {
            return;
        }
        let Some(w) = inc.sites.get(site) else { return };
        let Some(up) = w.up_at else { return };
        let lasted = up - w.down_since;
        if lasted.num_milliseconds() >= self.blip_ms {
            return;
        }
        let reason = format!(
            "blip: down {} (< blip_window {})",
            humantime::format_duration(lasted.to_std().unwrap_or_default()),
            humantime::format_duration(self.cfg.blip_window)
        );
        self.emit(slot, t, EventKind::Dropped { sites: vec![site.into()], reason }, None, out);
    }

    fn join_or_open(
        &mut self,
        alarm: &Alarm,
        idx: Option<u32>,
        aref: AlarmRef,
        p: GeoPoint,
        r: f64,
        out: &mut Vec<IncidentEvent>,
    ) -> Result<u32, CorrelateError> {
        let t = alarm.event_time;
        let site = Some((alarm.site_id.as_str(), idx));
        let mut near = std::mem::take(&mut self.scratch);
        self.neighbours(idx, p, r, t, &mut near);
        // The survivor: the oldest declared incident (its id is public),
        // else the oldest probable one.
        let key = |s: &Slot| (s.inc.state != IncidentState::Declared, s.inc.opened_at);
        let slots = &self.slots;
        near.sort_unstable_by(|&a, &b| {
            let (a, b) = (&slots[a as usize], &slots[b as usize]);
            key(a).cmp(&key(b)).then_with(|| a.inc.id.cmp(&b.inc.id))
        });
        if let Some((&first, others)) = near.split_first() {
            for &other in others {
                let (probable, other_id) = {
                    let o = &self.slots[other as usize].inc;
                    // Declared in this same instant, with nothing planned
                    // for it yet, it is still one failure seen from two
                    // sides (a storm hitting many sites in the same second,
                    // applied in (time, site) order): merged, like a
                    // probable one. Its id was never public.
                    let fresh = o.state == IncidentState::Declared
                        && o.declared_at == Some(t)
                        && o.notified_postcodes.is_empty()
                        && !o.awaiting_approval;
                    (o.state != IncidentState::Declared || fresh, &o.id)
                };
                if probable {
                    self.merge(other, first, t, out);
                } else if !self.slots[first as usize].inc.links.contains(other_id) {
                    let (first_id, other_id) = (self.slots[first as usize].inc.id.clone(), other_id.clone());
                    self.emit(first, t, EventKind::Linked { other: other_id }, None, out);
                    self.emit(other, t, EventKind::Linked { other: first_id }, None, out);
                }
            }
            near.clear();
            self.scratch = near;
            self.emit(first, t, EventKind::AlarmsRaised { alarms: vec![aref] }, site, out);
            return Ok(first);
        }
        self.scratch = near;
        let id = IncidentId::derive(&alarm.site_id, &alarm.alarm_id, t);
        let opened = IncidentEvent {
            incident_id: id,
            seq: 1,
            at: t,
            actor: ACTOR.into(),
            kind: EventKind::Opened { cause: alarm.probable_cause.clone(), detail: alarm.specific_problem.clone() },
        };
        let slot = self.put(Incident::open(&opened)?);
        out.push(opened);
        self.emit(slot, t, EventKind::AlarmsRaised { alarms: vec![aref] }, site, out);
        if let Some(prev) = self.resolved_by_site.get(idx, &alarm.site_id) {
            let other = self.slots[prev as usize].inc.id.clone();
            self.emit(slot, t, EventKind::Linked { other }, None, out);
        }
        Ok(slot)
    }

    /// Fold probable (or just declared, see [`Self::join_or_open`])
    /// incident `from` into `into`: `from` closes as merged,
    /// and its down sites' active alarms are raised in `into` with the time
    /// each site went down (so compensation windows keep their start).
    fn merge(&mut self, from: u32, into: u32, t: DateTime<Utc>, out: &mut Vec<IncidentEvent>) {
        let alarms: Vec<AlarmRef> = self.slots[from as usize]
            .inc
            .sites
            .sorted()
            .into_iter()
            .filter(|(_, w)| w.up_at.is_none())
            .flat_map(|(site, w)| {
                w.active.iter().map(|a| AlarmRef { alarm_id: a.clone(), site_id: site.into(), at: w.down_since })
            })
            .collect();
        let into_id = self.slots[into as usize].inc.id.clone();
        self.emit(from, t, EventKind::Merged { into: into_id }, None, out);
        if !alarms.is_empty() {
            self.emit(into, t, EventKind::AlarmsRaised { alarms }, None, out);
        }
    }

    /// Open incidents (slots, each once, in no particular order) that a site
    /// failing at `t` is part of: with a member site whose coverage is
    /// within the gap of a circle at `p` with radius `r` and whose failure
    /// started within `join_window` of `t` (or the incident's onset did), or
    /// a member in the same power/backhaul group as the site with inventory
    /// index `idx` whose failure started within `group_join_window` of `t`
    /// (shared infrastructure: one failure upstream, however far apart the
    /// sites are). `p` and `r` are that site's own when it has an index.
    fn neighbours(&self, idx: Option<u32>, p: GeoPoint, r: f64, t: DateTime<Utc>, out: &mut Vec<u32>) {
        fn add(out: &mut Vec<u32>, slot: u32) {
            if !out.contains(&slot) {
                out.push(slot);
            }
        }
        let gap = self.cfg.neighbour_gap_km;
        let reach = r + self.refdata.max_radius_km().max(self.cfg.default_radius_km) + gap;
        let chord2 = crate::geodesy::chord2_for_km(reach);
        // An incident already found needs no distance (the costly part: a
        // storm's sites are mostly one incident's).
        let cos_lat = p.cos_lat();
        let near = |&(at, radius_km): &(GeoPoint, f64)| p.distance_km_from(cos_lat, at) <= r + radius_km + gap;
        // Temporal coherence: the incident's onset, else the member's
        // failure start, within the window of this failure's start.
        let t_ms = t.timestamp_millis();
        let coherent = |j: u32, slot: u32, w: i64| self.coherent(j, slot, t_ms, w);
        let join = self.join_ms;
        // (Kept small, so the scan's loop takes it inline; the tests past
        // the first run only for an incident not found yet. `at` is read
        // only then: it is another cache line.)
        let mut seen = |q: &GridPoint, at: &(GeoPoint, f64)| {
            if !out.contains(&q.open) && self.part_of(q.idx, q.open, t_ms, join, |g| near(g), at) {
                out.push(q.open);
            }
        };
        let gridded = match (&self.grid, idx) {
            (Some(g), Some(i)) => g.within_site(i, chord2, true, |q, k| seen(q, &g.geo[k])),
            (Some(g), None) => g.within(p.xyz(), chord2, true, |q, k| seen(q, &g.geo[k])),
            (None, _) => false,
        };
        if !gridded {
            for j in self.refdata.sites_within(p, reach) {
                let Some(slot) = self.open.by_site[j as usize].filter(|s| !out.contains(s)) else { continue };
                let s = self.refdata.site(j);
                if coherent(j, slot, join) && near(&(GeoPoint::new(s.lat, s.lon), s.radius_km)) {
                    out.push(slot);
                }
            }
        }
        if let Some(i) = idx {
            for peer in self.refdata.group_peers(i) {
                if let Some(slot) = self.open.by_site[peer as usize] {
                    if coherent(peer, slot, self.group_join_ms) {
                        add(out, slot);
                    }
                }
            }
        }
        if self.adhoc.is_empty() {
            return;
        }
        for e in self.adhoc_tree.locate_within_distance(p.xyz(), chord2) {
            let (s, q, rq) = &self.adhoc[e.data as usize];
            if let Some(&slot) = self.open.adhoc.get(s).filter(|s| !out.contains(s)) {
                let inc = &self.slots[slot as usize].inc;
                let since = inc.sites.get(s).map_or(NEVER, |w| w.down_since.timestamp_millis());
                let onset = inc.opened_at.timestamp_millis();
                if (within(since, t_ms, join) || within(onset, t_ms, join)) && p.distance_km(*q) <= r + rq + gap {
                    out.push(slot);
                }
            }
        }
    }

    /// Whether inventory site `j`, a member of open incident `slot`, makes a
    /// failure starting at `t_ms` part of that incident's: the incident
    /// opened, or `j`'s own failure started, within `window_ms` of it.
    fn coherent(&self, j: u32, slot: u32, t_ms: i64, window_ms: i64) -> bool {
        within(self.slots[slot as usize].inc.opened_at.timestamp_millis(), t_ms, window_ms)
            || within(self.active[j as usize].since_ms, t_ms, window_ms)
    }

    /// [`Correlator::coherent`] and within reach (`near`): out of line, so
    /// the scan's loop over points stays small.
    #[inline(never)]
    fn part_of(
        &self,
        j: u32,
        slot: u32,
        t_ms: i64,
        window_ms: i64,
        near: impl Fn(&(GeoPoint, f64)) -> bool,
        at: &(GeoPoint, f64),
    ) -> bool {
        self.coherent(j, slot, t_ms, window_ms) && near(at)
    }

    /// When the next timer is due, if any.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|t| t.due)
    }

    /// Run the timers due by `now`: declare, dismiss, resolve. Deterministic
    /// order: by deadline, then incident id.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<IncidentEvent> {
        let mut out = Vec::new();
        self.tick_into(now, &mut out);
        out
    }

    /// [`Correlator::tick`], appending the events to `out`.
    pub fn tick_into(&mut self, now: DateTime<Utc>, out: &mut Vec<IncidentEvent>) {
        while self.timers.first().is_some_and(|t| t.due <= now) {
            let Some(Timer { due, slot, .. }) = self.timers.pop_first() else { break };
            let s = &mut self.slots[slot as usize];
            s.deadline = None;
            let inc = &s.inc;
            match inc.state {
                IncidentState::Probable if s.quorum_since.is_some() => {
                    let reason = format!(
                        "{} sites down for >= {}",
                        inc.down_count(),
                        humantime::format_duration(self.cfg.min_duration)
                    );
                    let (pending, confirm_joiners) = (self.late_joiners(slot, due), self.blip_ms > 0);
                    self.emit(slot, due, EventKind::Declared { reason, pending, confirm_joiners }, None, out);
                }
                IncidentState::Probable if inc.all_up_since().is_some() => {
                    self.emit(slot, due, EventKind::Dismissed {}, None, out);
                }
                IncidentState::Declared => {
                    // Pending sites down for the blip window by now, in
                    // this same window, enter the footprint.
                    let due_ms = due.timestamp_millis();
                    let mut sites: Vec<CompactString> = Vec::new();
                    while let Some(p) = s.pending.pop_front() {
                        if p.due_ms > due_ms {
                            s.pending.push_front(p);
                            break;
                        }
                        // Cheap test first: still down here, in that window.
                        let site: &str = match &p.site {
                            PendingSite::Inventory(i) => {
                                let i = *i as usize;
                                let list = &self.active[i];
                                if list.since_ms != p.since_ms || !list.iter().any(|x| x.slot == slot) {
                                    continue;
                                }
                                &self.refdata.site(i as u32).site_id
                            }
                            PendingSite::Adhoc(site) => site,
                        };
                        let confirm = s.inc.sites.get(site).is_some_and(|w| {
                            w.pending && w.up_at.is_none() && w.down_since.timestamp_millis() == p.since_ms
                        });
                        if confirm {
                            sites.push(site.into());
                        }
                    }
                    let confirmed = !sites.is_empty();
                    if confirmed {
                        sites.sort_unstable();
                        sites.dedup();
                        self.emit(slot, due, EventKind::Confirmed { sites }, None, out);
                    }
                    let s = &mut self.slots[slot as usize];
                    match s.inc.all_up_since() {
                        Some(up) if up + self.hold_down <= due => {
                            self.emit(slot, due, EventKind::Resolved { restored_at: up }, None, out);
                        }
                        // (`emit` reschedules after an event.)
                        _ if !confirmed => schedule(s, &mut self.timers, slot, self.min_duration, self.hold_down),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
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
        Correlator::new(cfg, Arc::new(refdata()))
    }

    fn refdata() -> RefData {
        let site = |id: &str, lat, lon| Site { site_id: id.into(), lat, lon, radius_km: 2.0, group_id: None };
        RefData::build(
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
        .unwrap()
    }

    fn cfg() -> CorrelatorConfig {
        CorrelatorConfig {
            min_sites: 3,
            declare_sites: 4,
            min_duration: Duration::from_secs(120),
            hold_down: Duration::from_secs(600),
            // (The footprint tests below turn it on: [`fcfg`].)
            blip_window: Duration::ZERO,
            ..Default::default()
        }
    }

    /// [`cfg`] with the default blip window (5 minutes).
    fn fcfg() -> CorrelatorConfig {
        CorrelatorConfig { blip_window: CorrelatorConfig::DEFAULT_BLIP_WINDOW, ..cfg() }
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
            specific_problem: None,
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
        door.probable_cause = "ENCLOSURE_DOOR_OPEN".into();
        assert!(c.on_alarm(&door).unwrap().is_empty(), "environmental, though critical");
        let evs = c.on_alarm(&clear("F1", "FAR", 60)).unwrap();
        assert_eq!(kinds(&evs), ["alarms_cleared"]);
        assert_eq!(kinds(&c.tick(t(61))), ["dismissed"]);
        assert!(c.incidents().all(|i| i.state == IncidentState::Dismissed));
    }

    #[test]
    fn causes_count_by_their_standard_class_in_any_spelling() {
        let with_cause = |id: &str, site: &str, cause: &str, severity: Severity| Alarm {
            probable_cause: cause.into(),
            severity,
            ..raise(id, site, 0)
        };
        let mut c = correlator(cfg());
        let counted = |c: &mut Correlator, a: &Alarm| {
            let before = c.counts.not_service_affecting;
            c.on_alarm(a).unwrap();
            c.counts.not_service_affecting == before
        };
        assert!(counted(&mut c, &with_cause("A1", "S1", "lossOfSignal", Severity::Major)));
        assert!(counted(&mut c, &with_cause("A2", "S2", "LOSS_OF_SIGNAL", Severity::Critical)));
        assert!(counted(&mut c, &with_cause("A3", "S3", "power problem", Severity::Critical)));
        assert!(!counted(&mut c, &with_cause("A4", "S1", "lossOfSignal", Severity::Minor)), "X.733: minor is not");
        assert!(!counted(&mut c, &with_cause("A5", "S1", "temperatureUnacceptable", Severity::Critical)));
        assert!(!counted(&mut c, &with_cause("A6", "S1", "unauthorizedAccessAttempt", Severity::Major)));
        assert!(counted(&mut c, &with_cause("A7", "S2", "ALM-4471", Severity::Critical)), "unclassified counts");
        assert!(counted(&mut c, &with_cause("A8", "S3", "ALM-4471", Severity::Critical)));
        assert_eq!(c.tally.top(5), vec![("ALM-4471".to_string(), 2)]);
        assert_eq!(c.tally.by_class[CauseClass::Transmission as usize], 3);
        assert_eq!(c.tally.by_class[CauseClass::Environment as usize], 1);

        // Unclassified causes left out; a rule classifies a vendor string.
        let strict = CorrelatorConfig { unclassified_service_affecting: false, ..cfg() };
        let rules = crate::transforms::classify::CausesConfig {
            rules: vec![crate::transforms::classify::CauseRule {
                kind: crate::transforms::classify::MatchKind::Glob,
                pattern: "ALM-44*".into(),
                class: CauseClass::Power,
            }],
            ..Default::default()
        };
        let classifier = Arc::new(Classifier::new(&rules).unwrap());
        let mut c = Correlator::with_classifier(strict, Arc::new(refdata()), classifier);
        assert!(!counted(&mut c, &with_cause("B1", "S1", "ALM-9", Severity::Critical)));
        assert!(counted(&mut c, &with_cause("B2", "S1", "alm-4471", Severity::Critical)));

        // The operator may still restrict by cause, in any spelling.
        let only = CorrelatorConfig { service_affecting_causes: vec!["Loss of signal".into()], ..cfg() };
        let mut c = correlator(only);
        assert!(counted(&mut c, &with_cause("C1", "S1", "lossOfSignal", Severity::Major)));
        assert!(!counted(&mut c, &with_cause("C2", "S2", "powerProblem", Severity::Critical)));
    }

    #[test]
    fn an_unknown_site_is_an_error_whatever_the_cause() {
        let mut c = correlator(cfg());
        let door = Alarm { probable_cause: "enclosureDoorOpen".into(), ..raise("X", "NEW", 0) };
        assert_eq!(c.on_alarm(&door), Err(CorrelateError::UnknownSite("NEW".into())));
        let minor = Alarm { severity: Severity::Minor, ..raise("Y", "NEW", 0) };
        assert_eq!(c.on_alarm(&minor), Err(CorrelateError::UnknownSite("NEW".into())));
        assert_eq!(c.counts.not_service_affecting, 0, "never counted as a cause that does not count");
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
    fn an_unknown_site_still_hands_back_the_timers_its_time_ran() {
        let mut c = correlator(cfg());
        for (i, s) in ["S1", "S2", "S3"].iter().enumerate() {
            c.on_alarm(&raise(&format!("A{i}"), s, 0)).unwrap();
        }
        let mut out = Vec::new();
        let e = c.on_alarm_into(&raise("X", "NEW", 1800), &mut out);
        assert_eq!(e, Err(CorrelateError::UnknownSite("NEW".into())));
        assert_eq!(kinds(&out), ["declared"], "applied, so the caller must log it");
        let inc = c.incident(&out[0].incident_id).unwrap();
        assert_eq!((inc.state, inc.seq), (IncidentState::Declared, out[0].seq));
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
        assert_eq!(
            c.counts,
            Counts { repeated_raises: 1, clears_without_raise: 1, not_service_affecting: 1, stale_raises: 0 }
        );
    }

    #[test]
    fn a_raise_arriving_after_its_own_clear_is_stale() {
        let mut c = correlator(cfg());
        c.on_alarm(&raise("A", "FAR", 0)).unwrap();
        assert_eq!(kinds(&c.on_alarm(&clear("A", "FAR", 40)).unwrap()), ["alarms_cleared"]);
        // The feed's re-send of the raise at 30 s crosses the clear.
        // Not applied: the site stays up, so the flap ends (the dismissal
        // timer, due at the clear, runs first).
        assert_eq!(kinds(&c.on_alarm(&raise("A", "FAR", 30)).unwrap()), ["dismissed"]);
        // A short condition delivered in reverse: clear, then its raise.
        assert!(c.on_alarm(&clear("B", "S1", 100)).unwrap().is_empty());
        assert!(c.on_alarm(&raise("B", "S1", 90)).unwrap().is_empty());
        // The same id raised again after its clear is a new condition.
        assert_eq!(kinds(&c.on_alarm(&raise("B", "S1", 110)).unwrap()), ["opened", "alarms_raised"]);
        assert_eq!((c.counts.stale_raises, c.counts.clears_without_raise), (2, 1));
        assert!(c.incidents().filter(|i| i.state.is_open()).all(|i| i.sites.contains_key("S1")));
        // The same for a site the inventory lacks, located by its alarm.
        let located = |at| Alarm { lat: Some(41.821), lon: Some(-71.405), ..raise("L", "NEW", at) };
        assert_eq!(kinds(&c.on_alarm(&located(200)).unwrap()), ["alarms_raised"]);
        assert_eq!(kinds(&c.on_alarm(&clear("L", "NEW", 220)).unwrap()), ["alarms_cleared"]);
        assert!(c.on_alarm(&located(210)).unwrap().is_empty());
        assert_eq!(c.counts.stale_raises, 3);
    }

    #[test]
    fn clears_are_remembered_for_the_reorder_window_of_feed_time() {
        let mut c = correlator(CorrelatorConfig { reorder_window: Duration::from_secs(60), ..cfg() });
        c.on_alarm(&clear("A", "S1", 0)).unwrap();
        // The feed moves on 61 s (another site's alarm): the clear is forgotten.
        c.on_alarm(&raise("X", "FAR", 61)).unwrap();
        assert_eq!(kinds(&c.on_alarm(&raise("A", "S1", -5)).unwrap()), ["opened", "alarms_raised"], "too late");
        // A clear arriving late is remembered from its arrival on.
        c.on_alarm(&clear("B", "S2", 10)).unwrap();
        c.on_alarm(&raise("Y", "FAR", 100)).unwrap();
        assert!(c.on_alarm(&raise("B", "S2", 5)).unwrap().is_empty(), "within a minute of its arrival");
        assert_eq!(c.counts.stale_raises, 1);
        // Off: the old behaviour.
        let mut off = correlator(CorrelatorConfig { reorder_window: Duration::ZERO, ..cfg() });
        off.on_alarm(&clear("A", "S1", 10)).unwrap();
        assert!(!off.on_alarm(&raise("A", "S1", 5)).unwrap().is_empty());
        assert_eq!(off.counts.stale_raises, 0);
    }

    #[test]
    fn a_restart_remembers_the_clears_in_the_log() {
        let mut c = correlator(cfg());
        let mut log = c.on_alarm(&raise("A", "FAR", 0)).unwrap();
        log.extend(c.on_alarm(&clear("A", "FAR", 40)).unwrap());
        let mut again = correlator(cfg());
        for e in &log {
            again.restore(e).unwrap();
        }
        assert_eq!(kinds(&again.on_alarm(&raise("A", "FAR", 30)).unwrap()), ["dismissed"]);
        assert_eq!(again.counts.stale_raises, 1);
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
                billing_cycle_day: None,
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

    /// S1..S4 and N (a noise site among them), each 1 km from the next,
    /// radius 0.4 km, each covering its own postcode (P-S1, …) of 10
    /// customers; G-A, G-B (60 km east) and G-C (120 km east) share power
    /// group G1.
    fn footprint_world(cfg: CorrelatorConfig) -> Correlator {
        use crate::model::money::{Currency, Money};
        use crate::model::{Customer, Postcode, Services};
        let at = [
            ("S1", 41.820, -71.410),
            ("S2", 41.829, -71.410),
            ("S3", 41.820, -71.398),
            ("S4", 41.829, -71.398),
            ("N", 41.838, -71.404),
            ("G-A", 41.600, -71.400),
            ("G-B", 41.600, -70.680),
            ("G-C", 41.600, -69.960),
        ];
        let sites = at
            .iter()
            .map(|&(id, lat, lon)| Site {
                site_id: id.into(),
                lat,
                lon,
                radius_km: 0.4,
                group_id: id.starts_with("G-").then(|| "G1".to_string()),
            })
            .collect();
        let postcodes = at.iter().map(|&(id, lat, lon)| Postcode {
            postcode: format!("P-{id}"),
            lat,
            lon,
            population: None,
            timezone: None,
        });
        let fee = Money::new(3000, Currency::parse("USD").unwrap());
        let customers = at
            .iter()
            .flat_map(|&(id, _, _)| {
                (0..10).map(move |k| Customer {
                    customer_id: format!("C-{id}-{k}"),
                    msisdn: None,
                    email: None,
                    postcode: format!("P-{id}"),
                    language: "en".into(),
                    services: Services::parse("voice").unwrap(),
                    opt_out: Default::default(),
                    monthly_fee: fee,
                    avg_bill_3m: fee,
                    billing_cycle_day: None,
                })
            })
            .collect();
        let rd = RefData::build(sites, postcodes.collect(), customers).unwrap();
        Correlator::new(cfg, Arc::new(rd))
    }

    /// The postcodes an open incident covers, by name, sorted.
    fn covered_names(c: &Correlator, id: &IncidentId) -> Vec<String> {
        let mut v: Vec<String> =
            c.covered(id).unwrap().iter().map(|&p| c.refdata.postcodes[p as usize].postcode.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_noise_site_near_an_open_incident_does_not_join() {
        let mut c = footprint_world(fcfg());
        let id = raise_all(&mut c, &["S1", "S2", "S3"], 0)[0].incident_id.clone();
        assert_eq!(kinds(&c.tick(t(1000))), ["declared", "confirmed"]);
        // N, a kilometre away, fails on its own two hours later.
        let evs = c.on_alarm(&raise("A-N", "N", 7200)).unwrap();
        assert_eq!(kinds(&evs), ["opened", "alarms_raised"], "a separate incident");
        assert_ne!(evs[0].incident_id, id);
        assert!(!c.incident(&id).unwrap().sites.contains_key("N"));
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2", "P-S3"]);
        // Within the join window the same neighbour would have joined.
        let mut c = footprint_world(fcfg());
        let id = raise_all(&mut c, &["S1", "S2", "S3"], 0)[0].incident_id.clone();
        let evs = c.on_alarm(&raise("A-N", "N", 600)).unwrap();
        assert_eq!(kinds(&evs), ["declared", "confirmed", "alarms_raised"]);
        assert_eq!(evs[2].incident_id, id);
    }

    #[test]
    fn chaining_across_hours_is_refused() {
        let mut c = footprint_world(fcfg());
        // Four long single-site outages, each next to the one before, two
        // hours apart: four incidents of one site, none declared.
        let mut ids = BTreeSet::new();
        for (k, s) in ["S1", "S2", "S4", "N"].iter().enumerate() {
            let evs = c.on_alarm(&raise(&format!("A-{s}"), s, k as i64 * 7200)).unwrap();
            assert_eq!(kinds(&evs)[..2], ["opened", "alarms_raised"], "{s}");
            ids.insert(evs[0].incident_id.clone());
        }
        c.tick(t(10 * 3600));
        assert_eq!(ids.len(), 4);
        assert!(c.incidents().all(|i| i.sites.len() == 1 && i.declared_at.is_none()));
        // A site of an open incident failing again hours after every start
        // there is not part of that failure either.
        let mut c = footprint_world(fcfg());
        let id = raise_all(&mut c, &["S1", "S3"], 0)[0].incident_id.clone();
        c.on_alarm(&clear("A-S1", "S1", 3600)).unwrap();
        let evs = c.on_alarm(&raise("B-S1", "S1", 3 * 3600)).unwrap();
        assert_eq!(kinds(&evs)[..2], ["opened", "alarms_raised"]);
        assert_ne!(evs[0].incident_id, id);
        // Within the window it is.
        let evs = c.on_alarm(&raise("B-S3", "S3", 3 * 3600 + 60)).unwrap();
        assert_eq!(kinds(&evs), ["alarms_raised"]);
        assert_eq!(c.incident(&id).unwrap().sites["S3"].active.len(), 2, "S3's own incident takes its new alarm");
    }

    #[test]
    fn group_members_join_at_any_distance_within_the_group_window() {
        let mut c = footprint_world(fcfg());
        let id = c.on_alarm(&raise("A", "G-A", 0)).unwrap()[0].incident_id.clone();
        // 60 km away (far beyond reach), 40 minutes later (past the join
        // window): its power group still takes it.
        let evs = c.on_alarm(&raise("B", "G-B", 2400)).unwrap();
        assert_eq!((kinds(&evs), &evs[0].incident_id), (vec!["alarms_raised"], &id));
        // Past the group window: a failure of its own.
        let evs = c.on_alarm(&raise("C", "G-C", 3 * 3600)).unwrap();
        assert_eq!(kinds(&evs)[..2], ["opened", "alarms_raised"]);
        assert_ne!(evs[0].incident_id, id);
    }

    #[test]
    fn a_blip_never_widens_the_audience() {
        let mut c = footprint_world(fcfg());
        // Probable: N flaps for a minute while S1, S2 are down: dropped.
        let id = raise_all(&mut c, &["S1", "S2", "N"], 0)[0].incident_id.clone();
        assert_eq!(covered_names(&c, &id), ["P-N", "P-S1", "P-S2"], "a probable incident counts every site");
        let evs = c.on_alarm(&clear("A-N", "N", 60)).unwrap();
        assert_eq!(kinds(&evs), ["alarms_cleared", "dropped"]);
        assert!(!c.incident(&id).unwrap().sites.contains_key("N"));
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2"]);
        raise_all(&mut c, &["S3"], 90);
        // Declared at quorum + 2 min; each site is told once down 5 min.
        let evs = c.tick(t(210));
        assert!(matches!(&evs[0].kind, EventKind::Declared { pending, .. } if pending == &["S1", "S2", "S3"]));
        assert!(covered_names(&c, &id).is_empty(), "nobody told yet");
        assert_eq!(kinds(&c.tick(t(390))), ["confirmed", "confirmed"]);
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2", "P-S3"]);
        // Declared: N flaps again (joins, pending) and S4 goes down for good.
        assert_eq!(kinds(&c.on_alarm(&raise("B-N", "N", 400)).unwrap()), ["alarms_raised"]);
        assert_eq!(kinds(&c.on_alarm(&raise("A-S4", "S4", 410)).unwrap()), ["alarms_raised"]);
        let inc = c.incident(&id).unwrap();
        assert!(inc.sites["N"].pending && inc.sites["S4"].pending);
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2", "P-S3"], "nobody told for pending sites");
        c.on_alarm(&clear("B-N", "N", 500)).unwrap();
        // S4 has been down for the blip window: in; N never.
        let evs = c.tick(t(410 + 300));
        assert_eq!(kinds(&evs), ["confirmed"]);
        assert!(matches!(&evs[0].kind, EventKind::Confirmed { sites } if sites == &["S4"]));
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2", "P-S3", "P-S4"]);
        let fp: BTreeSet<&str> = c.incident(&id).unwrap().footprint_sites().map(|(s, _)| s).collect();
        assert_eq!(fp, BTreeSet::from(["S1", "S2", "S3", "S4"]));
        // Off: every joiner is in at once.
        let mut off = footprint_world(cfg());
        let id = raise_all(&mut off, &["S1", "S2", "N"], 0)[0].incident_id.clone();
        assert_eq!(kinds(&off.on_alarm(&clear("A-N", "N", 60)).unwrap()), ["alarms_cleared"]);
        assert_eq!(covered_names(&off, &id), ["P-N", "P-S1", "P-S2"]);
        raise_all(&mut off, &["S3"], 70);
        off.tick(t(200));
        raise_all(&mut off, &["S4"], 210);
        let inc = off.incident(&id).unwrap();
        assert!(inc.state == IncidentState::Declared && !inc.confirm_joiners && !inc.sites["S4"].pending);
        assert_eq!(covered_names(&off, &id), ["P-N", "P-S1", "P-S2", "P-S3", "P-S4"], "joiners in at once");
    }

    #[test]
    fn a_late_joiner_down_less_than_the_blip_window_at_declaration_is_pending() {
        let mut c = footprint_world(fcfg());
        let id = raise_all(&mut c, &["S1", "S2"], 0)[0].incident_id.clone();
        raise_all(&mut c, &["S3"], 400);
        // A flap next to it: four sites down, declared at once.
        let evs = raise_all(&mut c, &["N"], 500);
        assert_eq!(kinds(&evs), ["alarms_raised", "declared"]);
        assert!(matches!(&evs[1].kind, EventKind::Declared { pending, .. } if pending == &["N", "S3"]), "{evs:?}");
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2"]);
        c.on_alarm(&clear("A-N", "N", 560)).unwrap();
        let evs = c.tick(t(800));
        assert!(matches!(&evs[0].kind, EventKind::Confirmed { sites } if sites == &["S3"]), "{evs:?}");
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2", "P-S3"]);
    }

    #[test]
    fn membership_is_revised_while_probable_and_never_after_customers_were_told() {
        let mut c = footprint_world(fcfg());
        let id = raise_all(&mut c, &["S1", "S2", "N"], 0)[0].incident_id.clone();
        c.on_alarm(&clear("A-N", "N", 100)).unwrap();
        assert_eq!(c.incident(&id).unwrap().sites.len(), 2, "revised while probable");
        raise_all(&mut c, &["S3"], 110);
        assert_eq!(kinds(&c.tick(t(400))), ["declared", "confirmed"]);
        // Declared: a told site's short failure is not a reason to drop it.
        let evs = c.on_alarm(&clear("A-S3", "S3", 420)).unwrap();
        assert_eq!(kinds(&evs), ["confirmed", "alarms_cleared"], "S3 in at 410, cleared at 420");
        assert!(c.incident(&id).unwrap().sites.contains_key("S3"));
        assert_eq!(covered_names(&c, &id), ["P-S1", "P-S2", "P-S3"]);
        // A pending joiner that blips stays out of the footprint, and the
        // incident resolves as usual once everything is back.
        raise_all(&mut c, &["S4"], 430);
        c.on_alarm(&clear("A-S4", "S4", 440)).unwrap();
        c.on_alarm(&clear("A-S1", "S1", 450)).unwrap();
        c.on_alarm(&clear("A-S2", "S2", 460)).unwrap();
        let evs = c.tick(t(460 + 600));
        assert_eq!(kinds(&evs), ["resolved"]);
        let inc = c.incident(&id).unwrap();
        assert!(inc.sites["S4"].pending);
        assert_eq!(inc.footprint_sites().count(), 3);
    }

    #[test]
    fn restore_from_the_log_gives_identical_state() {
        let mut c = footprint_world(fcfg());
        let mut log = vec![];
        let feed = |c: &mut Correlator, a: Alarm, log: &mut Vec<IncidentEvent>| {
            log.extend(c.on_alarm(&a).unwrap());
        };
        for (k, s) in ["S1", "S2", "N"].iter().enumerate() {
            feed(&mut c, raise(&format!("A-{s}"), s, k as i64), &mut log);
        }
        feed(&mut c, clear("A-N", "N", 30), &mut log); // dropped
        feed(&mut c, raise("A-S3", "S3", 40), &mut log);
        feed(&mut c, raise("A-G-A", "G-A", 50), &mut log);
        log.extend(c.tick(t(300))); // declared
        feed(&mut c, raise("A-S4", "S4", 310), &mut log); // pending
        feed(&mut c, raise("B-N", "N", 320), &mut log); // pending
        feed(&mut c, raise("A-G-B", "G-B", 330), &mut log);
        log.extend(c.tick(t(620))); // S4, N confirmed
        feed(&mut c, raise("X", "N", 9000), &mut log);
        assert!(kinds(&log).contains(&"dropped") && kinds(&log).contains(&"confirmed"), "{:?}", kinds(&log));
        let mut again = footprint_world(fcfg());
        for e in &log {
            again.restore(e).unwrap();
        }
        let state = |c: &Correlator| {
            let mut v: Vec<(String, Option<Vec<String>>, u64)> = c
                .incidents()
                .map(|i| {
                    let cov = c.covered(&i.id).map(|_| covered_names(c, &i.id));
                    (serde_json::to_string(i).unwrap(), cov, c.customers(&i.id))
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(state(&again), state(&c));
        // And both go on alike.
        for a in [raise("A-S4b", "S4", 9100), clear("A-S1", "S1", 9200), raise("Y", "S3", 9300)] {
            assert_eq!(again.on_alarm(&a).unwrap(), c.on_alarm(&a).unwrap());
        }
        assert_eq!(again.tick(t(20_000)), c.tick(t(20_000)));
        assert_eq!(state(&again), state(&c));
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
    fn incidents_declared_in_the_same_instant_they_meet_are_one_and_later_ones_are_linked() {
        // A storm takes seven sites in one second, applied in (time, site)
        // order: west and east each reach declare_sites before M joins them.
        let mut c = two_clusters(CorrelatorConfig { declare_sites: 3, ..cfg() });
        let west = raise_all(&mut c, &["W1", "W2", "W3"], 0)[0].incident_id.clone();
        let east = raise_all(&mut c, &["E1", "E2", "E3"], 0)[0].incident_id.clone();
        assert_eq!((state(&c, &west), state(&c, &east)), (IncidentState::Declared, IncidentState::Declared));
        let evs = raise_all(&mut c, &["M"], 0);
        assert_eq!(kinds(&evs)[0], "merged", "{:?}", kinds(&evs));
        // (Opened in the same instant: the survivor is the smaller id.)
        let (gone, kept) = if evs[0].incident_id == east { (east, west) } else { (west, east) };
        assert_eq!(state(&c, &gone), IncidentState::Merged, "declared this instant, nothing planned: merged");
        assert_eq!(state(&c, &kept), IncidentState::Declared);
        assert_eq!(c.incident(&kept).unwrap().down_count(), 7);
        // A second later, two declared incidents are public: linked.
        let mut c = two_clusters(CorrelatorConfig { declare_sites: 3, ..cfg() });
        let west = raise_all(&mut c, &["W1", "W2", "W3"], 0)[0].incident_id.clone();
        let east = raise_all(&mut c, &["E1", "E2", "E3"], 0)[0].incident_id.clone();
        let evs = raise_all(&mut c, &["M"], 1);
        assert!(!kinds(&evs).contains(&"merged"), "{:?}", kinds(&evs));
        assert_eq!((state(&c, &west), state(&c, &east)), (IncidentState::Declared, IncidentState::Declared));
        assert!(c.incident(&west).unwrap().links.contains(&east));
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

    #[test]
    fn the_site_grid_selects_what_the_r_tree_selects() {
        use crate::geodesy::chord2_for_km;
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        // A dense patch, the antimeridian and a pole.
        let mut sites = vec![];
        for (i, (lat0, lon0, span)) in [(41.0, -71.0, 1.0), (10.0, 179.5, 1.0), (89.5, 0.0, 0.5)].iter().enumerate() {
            for j in 0..700 {
                let (lat, lon) = (lat0 + rnd() * span, lon0 + rnd() * span);
                let lon = if lon > 180.0 { lon - 360.0 } else { lon };
                let radius_km = 0.5 + rnd() * 3.0;
                sites.push(Site { site_id: format!("S{i}-{j}"), lat, lon, radius_km, group_id: None });
            }
        }
        let rd = RefData::build(sites, vec![], vec![]).unwrap();
        let max_reach = 15.0;
        let grid = SiteGrid::new(&rd, max_reach).unwrap();
        for q in 0..3000 {
            let idx = (q * 7 % rd.sites.len()) as u32;
            let s = rd.site(idx);
            let p = if q % 2 == 0 {
                GeoPoint::new(s.lat, s.lon)
            } else {
                GeoPoint::new((s.lat + rnd() * 0.2 - 0.1).min(90.0), s.lon + rnd() * 0.2 - 0.1)
            };
            let reach = rnd() * max_reach;
            let mut want: Vec<u32> = rd.sites_within(p, reach).collect();
            let mut got = vec![];
            assert!(grid.within(p.xyz(), chord2_for_km(reach), false, |g, _| got.push(g.idx)));
            want.sort();
            got.sort();
            assert_eq!(got, want, "query {q} at {p:?} within {reach} km");
            if q % 2 == 0 {
                // The site's own query: its cell's runs, kept from the start.
                let mut own = vec![];
                assert!(grid.within_site(idx, chord2_for_km(reach), false, |g, _| own.push(g.idx)));
                own.sort();
                assert_eq!(own, want, "site query {q}");
            }
        }
        assert!(
            !grid.within([1.0, 0.0, 0.0], chord2_for_km(max_reach * 2.0), false, |_, _| ()),
            "beyond the grid's reach"
        );
        // Only sites marked open, with their slot; unmarking takes them out.
        let mut grid = grid;
        let p = rd.site(0);
        let near: Vec<u32> = rd.sites_within(GeoPoint::new(p.lat, p.lon), max_reach).collect();
        assert!(near.len() > 4, "the dense patch");
        for (k, &i) in near.iter().enumerate().filter(|(k, _)| k % 2 == 0) {
            grid.set_open(i, Some(k as u32));
        }
        grid.set_open(near[2], None);
        let mut got = vec![];
        assert!(grid.within_site(0, chord2_for_km(max_reach), true, |g, _| got.push((g.idx, g.open))));
        got.sort();
        let mut want: Vec<(u32, u32)> =
            near.iter().enumerate().filter(|(k, _)| k % 2 == 0 && *k != 2).map(|(k, &i)| (i, k as u32)).collect();
        want.sort();
        assert_eq!(got, want);
    }
}
