//! The public status page, `GET /status` (no token). Owns what the public
//! is shown of the read model ([`Snapshot`]) and how: declared incidents and
//! those resolved or cancelled recently (never probable, dismissed or merged
//! ones, which nobody was told about), each with its id, state, cause, the
//! NOC's message, opened/declared/restored times, ETR, affected postcodes
//! with customer counts (aggregates only), the timeline (kind, detail and
//! time; never the actor, which names NOC staff, nor the `planned`
//! bookkeeping entries), and its footprint drawn as
//! inline SVG: the union of its sites' coverage circles (or ~1 km circles
//! around its postcodes when it has no sites), with the postcode centroids
//! on top. No site ids, MSISDNs, e-mail addresses or anything else personal.
//!
//! The page is self-contained (no map tiles, scripts or style sheets from
//! elsewhere; a CSP header says so), refreshes itself every
//! [`REFRESH_SECONDS`] and says when it was generated (UTC). Every string
//! that came from outside is HTML-escaped. The incidents' part of the page
//! is rendered once per published snapshot (at most twice a second) and
//! reused by every request until the next one; only the "generated at"
//! line is per request.

use super::{ApiState, Snapshot, SnapshotIncident};
use crate::geodesy::{union_of_circles, GeoPoint};
use crate::model::IncidentState;
use crate::refdata::RefData;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use geo::MultiPolygon;
use std::fmt::{self, Write};
use std::sync::{Arc, Mutex, Weak};

/// The fill of an active incident's footprint. One distinctive colour used
/// nowhere else on the page: the real-browser test (`tests/status_page.rs`)
/// counts its pixels.
pub const FOOTPRINT_FILL: &str = "#e8590c";
/// The fill of a resolved or cancelled incident's footprint.
pub const CLOSED_FOOTPRINT_FILL: &str = "#adb5bd";
/// The page reloads itself this often.
pub const REFRESH_SECONDS: u32 = 15;
/// At most this many postcode dots per map (the most customers first).
pub const MAX_DOTS: usize = 150;
/// Dots are labelled with their postcode up to this many.
const MAX_LABELS: usize = 25;
/// At most this many postcodes listed under a map.
pub const MAX_LISTED: usize = 200;
/// Footprint circles around postcode centroids, for an incident with no sites.
pub const POSTCODE_RADIUS_KM: f64 = 1.0;
/// At most this many circles in one footprint union (the biggest
/// correlator incidents stay well under it; past it the map says so).
pub const MAX_CIRCLES: usize = 2000;
const SVG_WIDTH: f64 = 640.0;
const SVG_MIN_HEIGHT: f64 = 220.0;
const SVG_MAX_HEIGHT: f64 = 640.0;
const KM_PER_DEGREE_LAT: f64 = 111.32;

/// `GET /status`.
pub(super) async fn page(State(st): State<Arc<ApiState>>) -> Response {
    let snap = st.snapshots.borrow().clone();
    let now = (st.now)();
    let main = match cached(&snap, &st.refdata) {
        Some(main) => main,
        None => {
            let (s, rd) = (snap.clone(), st.refdata.clone());
            // The footprint unions are CPU work: off the async workers.
            let Ok(main) = tokio::task::spawn_blocking(move || Arc::<str>::from(render_main(&s, &rd))).await else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "the status page could not be rendered").into_response();
            };
            store(&snap, &st.refdata, main.clone());
            main
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
        ],
        wrap(now, &main),
    )
        .into_response()
}

/// The last rendered incidents' part, for the snapshot and reference data
/// it was made from. Holding the `Weak`s keeps their allocations, so a new
/// snapshot can never be mistaken for the old one at the same address.
struct Cached {
    snap: Weak<Snapshot>,
    refdata: Weak<RefData>,
    main: Arc<str>,
}

static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

fn cached(snap: &Arc<Snapshot>, rd: &Arc<RefData>) -> Option<Arc<str>> {
    let c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let c = c.as_ref()?;
    (Weak::ptr_eq(&c.snap, &Arc::downgrade(snap)) && Weak::ptr_eq(&c.refdata, &Arc::downgrade(rd)))
        .then(|| c.main.clone())
}

fn store(snap: &Arc<Snapshot>, rd: &Arc<RefData>, main: Arc<str>) {
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    *c = Some(Cached { snap: Arc::downgrade(snap), refdata: Arc::downgrade(rd), main });
}

/// The whole page for `snap`, generated at `now`.
pub fn render(snap: &Snapshot, rd: &RefData, now: DateTime<Utc>) -> String {
    wrap(now, &render_main(snap, rd))
}

/// HTML-escaped text (also safe inside a quoted attribute).
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A time as the page shows it, in a `<time>` element: the machine's
/// UTC in `datetime`, the reader's local time with its zone in the text.
struct Time(DateTime<Utc>, chrono_tz::Tz);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<time datetime=\"{}\">{}</time>",
            self.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.0.with_timezone(&self.1).format("%Y-%m-%d %H:%M %Z")
        )
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:960px;padding:1em;color:#212529;background:#fff}\
h1{font-size:1.6em;margin:.2em 0}.generated{color:#6c757d;margin:0 0 1em}\
section.incident{border:1px solid #dee2e6;border-radius:6px;padding:.8em 1em;margin:1em 0}\
section.closed{opacity:.85}h2{font-size:1.2em;margin:.2em 0}\
.state{display:inline-block;padding:.1em .5em;border-radius:4px;font-size:.8em;text-transform:uppercase;color:#fff;background:#495057}\
.state-declared{background:#c92a2a}.state-resolved{background:#2b8a3e}\
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:.5em 0}dt{color:#6c757d}dd{margin:0}\
.message{background:#fff4e6;border-left:4px solid #f59f00;padding:.4em .8em;white-space:pre-wrap}\
ul.postcodes{columns:6 8em;padding-left:1.2em;margin:.3em 0}\
ol.timeline{padding-left:1.2em}ol.timeline b{font-weight:600}\
.note{color:#6c757d;font-size:.9em}svg{max-width:100%;height:auto;display:block;margin:.5em 0}";

fn wrap(now: DateTime<Utc>, main: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <title>Service status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Service status</h1>\n\
         <p class=\"generated\">Generated {} (refreshes every {REFRESH_SECONDS} s)</p>\n{main}</body>\n</html>\n",
        Time(now, chrono_tz::UTC)
    )
}

/// The incidents the public sees, active first (newest first), then closed
/// ones (most recently closed first).
fn shown(snap: &Snapshot) -> Vec<&SnapshotIncident> {
    let mut v: Vec<&SnapshotIncident> = snap
        .incidents
        .iter()
        .map(|i| &**i)
        .filter(|i| match i.inc.state {
            IncidentState::Declared => true,
            IncidentState::Resolved | IncidentState::Cancelled => i.inc.declared_at.is_some(),
            IncidentState::Probable | IncidentState::Dismissed | IncidentState::Merged => false,
        })
        .collect();
    v.sort_by(|a, b| {
        let key = |i: &SnapshotIncident| {
            (i.inc.state != IncidentState::Declared, std::cmp::Reverse(i.inc.closed_at.or(i.inc.declared_at)))
        };
        key(a).cmp(&key(b)).then_with(|| a.inc.id.cmp(&b.inc.id))
    });
    v
}

/// Everything between the heading and the end of the body.
fn render_main(snap: &Snapshot, rd: &RefData) -> String {
    let mut out = String::new();
    if !snap.ready {
        out.push_str("<p class=\"empty\">Starting up: no incidents known yet.</p>\n");
        return out;
    }
    let shown = shown(snap);
    let active = shown.iter().filter(|i| i.inc.state == IncidentState::Declared).count();
    if shown.is_empty() {
        out.push_str("<p class=\"empty\">No incidents: all services are running normally.</p>\n");
        return out;
    }
    let _ = writeln!(
        out,
        "<p class=\"summary\">{active} active incident{}, {} recently closed.</p>",
        if active == 1 { "" } else { "s" },
        shown.len() - active
    );
    for i in shown {
        incident(&mut out, i, rd);
    }
    out
}

fn incident(out: &mut String, s: &SnapshotIncident, rd: &RefData) {
    let i = &s.inc;
    let state = i.state.as_str();
    let class = if i.state == IncidentState::Declared { "active" } else { "closed" };
    let _ = writeln!(
        out,
        "<section class=\"incident {class}\" id=\"{id}\">\n<h2><span class=\"id\">{id}</span> \
         <span class=\"state state-{state}\">{state}</span></h2>",
        id = Esc(&i.id.0),
    );
    // The cause in the words customers read (its class, in the default
    // language), as every other channel says it; the feed's code if none.
    let cause = if s.cause_text.is_empty() { &i.cause } else { &s.cause_text };
    let _ = writeln!(out, "<dl>\n<dt>Cause</dt><dd class=\"cause\">{}</dd>", Esc(cause));
    let _ = writeln!(out, "<dt>Opened</dt><dd>{}</dd>", Time(i.opened_at, s.zone));
    if let Some(t) = i.declared_at {
        let _ = writeln!(out, "<dt>Declared</dt><dd>{}</dd>", Time(t, s.zone));
    }
    match (i.etr, i.restored_at) {
        (_, Some(t)) => {
            let _ = writeln!(out, "<dt>Restored</dt><dd>{}</dd>", Time(t, s.zone));
        }
        (Some(t), None) if i.state == IncidentState::Declared => {
            let _ = writeln!(out, "<dt>Expected restoration</dt><dd class=\"etr\">{}</dd>", Time(t, s.zone));
        }
        (None, None) if i.state == IncidentState::Declared => {
            out.push_str("<dt>Expected restoration</dt><dd class=\"etr\">not known yet</dd>\n");
        }
        _ => {}
    }
    if let Some(t) = i.closed_at.filter(|_| i.state == IncidentState::Cancelled) {
        let _ = writeln!(out, "<dt>Cancelled</dt><dd>{}</dd>", Time(t, s.zone));
    }
    let _ = writeln!(
        out,
        "<dt>Affected</dt><dd>{} postcode{}, {} customer{}</dd>\n</dl>",
        s.postcodes.len(),
        if s.postcodes.len() == 1 { "" } else { "s" },
        s.customers,
        if s.customers == 1 { "" } else { "s" },
    );
    if let Some(m) = i.message.as_deref().filter(|m| !m.trim().is_empty()) {
        let _ = writeln!(out, "<p class=\"message\">{}</p>", Esc(m));
    }
    // Postcodes with their customer counts, the most customers first.
    let mut pcs: Vec<(&str, usize)> = s.postcodes.iter().map(|p| (p.as_str(), rd.customers_in(p).len())).collect();
    pcs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    pcs.dedup_by(|a, b| a.0 == b.0);
    let fill = if i.state == IncidentState::Declared { FOOTPRINT_FILL } else { CLOSED_FOOTPRINT_FILL };
    map(out, s, &pcs, rd, fill);
    if !pcs.is_empty() {
        out.push_str("<ul class=\"postcodes\">");
        let mut listed: Vec<&(&str, usize)> = pcs.iter().take(MAX_LISTED).collect();
        listed.sort_by(|a, b| a.0.cmp(b.0));
        for (p, n) in listed {
            let _ = write!(out, "<li>{} <span class=\"note\">({n})</span></li>", Esc(p));
        }
        out.push_str("</ul>\n");
        if pcs.len() > MAX_LISTED {
            let _ = writeln!(
                out,
                "<p class=\"note\">Listed: the {MAX_LISTED} postcodes with the most customers, of {}.</p>",
                pcs.len()
            );
        }
    }
    // `planned` entries are bookkeeping (postcodes and actions per page of
    // a fan-out), not news: left out.
    let mut updates = s.timeline.iter().filter(|e| e.kind != "planned").peekable();
    if updates.peek().is_some() {
        out.push_str("<h3>Updates</h3>\n<ol class=\"timeline\">\n");
        for e in updates {
            let _ = writeln!(out, "<li>{} <b>{}</b> {}</li>", Time(e.at, s.zone), Esc(&e.kind), Esc(&e.detail));
        }
        out.push_str("</ol>\n");
    }
    out.push_str("</section>\n");
}

/// Equirectangular projection (x scaled by cos of the middle latitude) of a
/// lon/lat box onto the SVG's pixels.
struct Frame {
    lon_min: f64,
    lat_max: f64,
    k: f64,
    scale: f64,
    height: f64,
}

impl Frame {
    /// The frame holding every point, with a margin, no smaller than ~2 km.
    fn fit(points: impl Iterator<Item = (f64, f64)>) -> Option<Frame> {
        let (mut lon0, mut lon1, mut lat0, mut lat1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (lon, lat) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            (lon0, lon1, lat0, lat1) = (lon0.min(lon), lon1.max(lon), lat0.min(lat), lat1.max(lat));
        }
        if lon0 > lon1 {
            return None;
        }
        let k = ((lat0 + lat1) / 2.0).to_radians().cos().max(0.05);
        // Extents in "latitude degrees" (so both axes share one scale).
        let (cx, cy) = ((lon0 + lon1) / 2.0 * k, (lat0 + lat1) / 2.0);
        let mut w = ((lon1 - lon0) * k).max(0.02) * 1.12;
        let mut h = (lat1 - lat0).max(0.02) * 1.12;
        let height = (SVG_WIDTH * h / w).clamp(SVG_MIN_HEIGHT, SVG_MAX_HEIGHT);
        // Widen whichever side is short of the picture's aspect: no distortion.
        if h / w < height / SVG_WIDTH {
            h = w * height / SVG_WIDTH;
        } else {
            w = h * SVG_WIDTH / height;
        }
        Some(Frame { lon_min: (cx - w / 2.0) / k, lat_max: cy + h / 2.0, k, scale: SVG_WIDTH / w, height })
    }

    fn xy(&self, lon: f64, lat: f64) -> (f64, f64) {
        ((lon - self.lon_min) * self.k * self.scale, (self.lat_max - lat) * self.scale)
    }
}

/// The incident's footprint over its postcodes, as inline SVG.
fn map(out: &mut String, s: &SnapshotIncident, pcs: &[(&str, usize)], rd: &RefData, fill: &str) {
    let i = &s.inc;
    let sites: Vec<(GeoPoint, f64)> = i
        .sites
        .sorted_keys()
        .into_iter()
        .filter_map(|id| rd.site_index(id))
        .map(|x| rd.site(x))
        .map(|s| (GeoPoint::new(s.lat, s.lon), s.radius_km))
        .collect();
    let dots: Vec<(&str, usize, GeoPoint)> = pcs
        .iter()
        .filter_map(|&(p, n)| rd.postcode_index(p).map(|x| (p, n, &rd.postcodes[x as usize])))
        .map(|(p, n, pc)| (p, n, GeoPoint::new(pc.lat, pc.lon)))
        .collect();
    // Without sites (declared over postcodes): small circles around them.
    let circles = if sites.is_empty() { dots.iter().map(|d| (d.2, POSTCODE_RADIUS_KM)).collect() } else { sites };
    let circles_total = circles.len();
    let footprint = union_of_circles(circles.into_iter().take(MAX_CIRCLES));
    let drawn = &dots[..dots.len().min(MAX_DOTS)];
    let coords = footprint.0.iter().flat_map(|p| p.exterior().0.iter().map(|c| (c.x, c.y)));
    let Some(frame) = Frame::fit(coords.chain(drawn.iter().map(|d| (d.2.lon, d.2.lat)))) else {
        out.push_str("<p class=\"note\">No map: the affected places are not in the reference data.</p>\n");
        return;
    };
    let _ = writeln!(
        out,
        "<svg class=\"map\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h:.0}\" width=\"{w}\" \
         height=\"{h:.0}\" role=\"img\" aria-label=\"Affected area of {id}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#f1f3f5\"/>",
        w = SVG_WIDTH,
        h = frame.height,
        id = Esc(&i.id.0),
    );
    let _ = writeln!(
        out,
        "<path class=\"footprint\" fill=\"{fill}\" fill-rule=\"evenodd\" stroke=\"#495057\" stroke-width=\"1\" d=\"{}\"/>",
        svg_path(&footprint, &frame)
    );
    for (p, n, g) in drawn {
        let (x, y) = frame.xy(g.lon, g.lat);
        let _ = write!(
            out,
            "<circle class=\"postcode\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"#1c2b39\" stroke=\"#fff\" \
             stroke-width=\"1\"><title>{} ({n} customers)</title></circle>",
            Esc(p)
        );
        if drawn.len() <= MAX_LABELS {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#1c2b39\">{}</text>",
                x + 5.0,
                y - 4.0,
                Esc(p)
            );
        }
        out.push('\n');
    }
    scale_bar(out, &frame);
    out.push_str("</svg>\n");
    if dots.len() > MAX_DOTS {
        let _ = writeln!(
            out,
            "<p class=\"note\">Map: the {MAX_DOTS} postcodes with the most customers are drawn, of {}.</p>",
            dots.len()
        );
    }
    if circles_total > MAX_CIRCLES {
        let _ = writeln!(out, "<p class=\"note\">Map: the area drawn is part of the footprint only.</p>");
    }
}

/// The SVG path of a multipolygon: every ring closed, holes by even-odd.
fn svg_path(mp: &MultiPolygon<f64>, frame: &Frame) -> String {
    let mut d = String::new();
    for ring in mp.0.iter().flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors())) {
        for (n, c) in ring.0.iter().enumerate() {
            let (x, y) = frame.xy(c.x, c.y);
            let _ = write!(d, "{}{x:.1} {y:.1}", if n == 0 { "M" } else { "L" });
        }
        d.push('Z');
    }
    d
}

/// A round-length scale bar in the bottom-left corner.
fn scale_bar(out: &mut String, frame: &Frame) {
    let px_per_km = frame.scale / KM_PER_DEGREE_LAT;
    let target = SVG_WIDTH / 5.0 / px_per_km;
    let km = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        .into_iter()
        .rev()
        .find(|&k| k <= target)
        .unwrap_or(0.5);
    let (x, y, len) = (10.0, frame.height - 12.0, km * px_per_km);
    let _ = writeln!(
        out,
        "<path d=\"M{x} {y:.1}h{len:.1}\" stroke=\"#212529\" stroke-width=\"2\"/>\
         <text x=\"{x}\" y=\"{:.1}\" font-size=\"11\" fill=\"#212529\">{km} km</text>",
        y - 4.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::TimelineEntry;
    use crate::model::{AlarmRef, Customer, EventKind, Incident, IncidentEvent, IncidentId, Postcode, Services, Site};
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn refdata() -> RefData {
        let pc = |p: &str, lat, lon| Postcode { postcode: p.into(), lat, lon, population: None, timezone: None };
        let usd = || crate::model::Money::new(3000, crate::model::money::Currency::parse("USD").unwrap());
        let cust = |id: &str, pc: &str| Customer {
            customer_id: id.into(),
            msisdn: Some("+14015550101".into()),
            email: Some("someone@example.com".into()),
            postcode: pc.into(),
            language: "en".into(),
            services: Services::parse("mobile").unwrap(),
            opt_out: Default::default(),
            monthly_fee: usd(),
            avg_bill_3m: usd(),
            billing_cycle_day: None,
        };
        RefData::build(
            vec![
                Site { site_id: "SITE-SECRET-1".into(), lat: 41.82, lon: -71.41, radius_km: 2.0, group_id: None },
                Site { site_id: "SITE-SECRET-2".into(), lat: 41.83, lon: -71.38, radius_km: 2.0, group_id: None },
            ],
            vec![pc("02901", 41.821, -71.409), pc("02903", 41.83, -71.385), pc("06001", 41.79, -72.85)],
            vec![cust("C1", "02901"), cust("C2", "02901"), cust("C3", "02903")],
        )
        .unwrap()
    }

    fn incident(id: &str, sites: &[&str], kinds: Vec<EventKind>) -> Incident {
        let id = IncidentId(id.into());
        let ev = |seq, kind| IncidentEvent { incident_id: id.clone(), seq, at: t(0), actor: "noc-alice".into(), kind };
        let mut inc =
            Incident::open(&ev(1, EventKind::Opened { cause: "mains power failure".into(), detail: None })).unwrap();
        let mut seq = 2;
        if !sites.is_empty() {
            let alarms = sites
                .iter()
                .map(|s| AlarmRef { alarm_id: format!("A-{s}").into(), site_id: (*s).into(), at: t(0) })
                .collect();
            inc.apply(&ev(2, EventKind::AlarmsRaised { alarms })).unwrap();
            seq = 3;
        }
        for (n, k) in kinds.into_iter().enumerate() {
            inc.apply(&ev(seq + n as u64, k)).unwrap();
        }
        inc
    }

    fn declared() -> EventKind {
        EventKind::Declared { reason: "2 sites down (>= 2)".into(), pending: vec![], confirm_joiners: false }
    }

    fn snapshot(incidents: Vec<SnapshotIncident>) -> Snapshot {
        Snapshot { ready: true, incidents: incidents.into_iter().map(Arc::new).collect() }
    }

    fn entry(kind: &str, detail: &str) -> TimelineEntry {
        TimelineEntry { at: t(5), actor: "noc-alice".into(), kind: kind.into(), detail: detail.into() }
    }

    fn with_sites() -> SnapshotIncident {
        SnapshotIncident {
            zone: chrono_tz::UTC,
            cause_text: String::new(),
            inc: incident("INC-20261123-0000aaaa", &["SITE-SECRET-1", "SITE-SECRET-2"], vec![declared()]),
            postcodes: vec!["02901".into(), "02903".into()],
            customers: 3,
            timeline: vec![entry("declared", "2 sites down (>= 2)"), entry("planned", "Down: 2 postcodes, 7 actions")],
        }
    }

    #[test]
    fn an_empty_page_says_no_incidents() {
        let html = render(&snapshot(vec![]), &refdata(), t(0));
        assert!(html.contains("No incidents"), "{html}");
        assert!(!html.contains("<svg"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
        assert!(html.contains("Generated <time datetime=\"2026-11-23T18:00:00Z\">2026-11-23 18:00 UTC</time>"));
        // Not ready yet is not "no incidents".
        let html = render(&Snapshot::default(), &refdata(), t(0));
        assert!(!html.contains("No incidents") && html.contains("Starting up"), "{html}");
    }

    #[test]
    fn a_declared_incident_is_shown_with_its_footprint_and_nothing_personal() {
        let mut s = with_sites();
        s.inc.etr = Some(t(120));
        let html = render(&snapshot(vec![s]), &refdata(), t(10));
        assert!(html.contains("id=\"INC-20261123-0000aaaa\""), "{html}");
        assert!(html.contains("state-declared\">declared<"));
        assert!(html.contains("<dd class=\"cause\">mains power failure</dd>"), "no words: the cause as sent");
        let mut worded = with_sites();
        worded.cause_text = "a power failure".into();
        let worded = render(&snapshot(vec![worded]), &refdata(), t(10));
        assert!(worded.contains("<dd class=\"cause\">a power failure</dd>"), "the words every channel uses");
        assert!(html.contains("<dd class=\"etr\"><time datetime=\"2026-11-23T20:00:00Z\">"));
        assert!(html.contains("2 postcodes, 3 customers"));
        assert!(html.contains("<li>02901 <span class=\"note\">(2)</span></li>"), "counts per postcode");
        assert!(html.contains("<b>declared</b> 2 sites down (&gt;= 2)"), "timeline");
        assert!(!html.contains("<b>planned</b>"), "fan-out bookkeeping is not news");
        // The footprint: one path in the active colour with real geometry,
        // inside the viewBox, and both postcode dots on top.
        let d = html.split("class=\"footprint\"").nth(1).expect("footprint path");
        assert!(d.contains(&format!("fill=\"{FOOTPRINT_FILL}\"")));
        assert_eq!(html.matches(FOOTPRINT_FILL).count(), 1, "the footprint colour is nowhere else");
        let d = d.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 1, "two overlapping circles are one polygon: {d}");
        let nums: Vec<f64> = d.split(['M', 'L', 'Z', ' ']).filter_map(|n| n.parse().ok()).collect();
        assert!(nums.len() > 40, "{d}");
        assert!(nums.iter().all(|&v| (0.0..=SVG_WIDTH).contains(&v)), "{d}");
        assert_eq!(html.matches("<circle class=\"postcode\"").count(), 2);
        // Nothing personal, no staff names, no site ids.
        for secret in ["noc-alice", "SITE-SECRET", "+1401", "example.com", "C1"] {
            assert!(!html.contains(secret), "{secret} on the page");
        }
        // Self-contained.
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn an_incidents_times_are_its_readers_local_time_named_with_utc_for_machines() {
        let mut s = with_sites();
        s.inc.etr = Some(t(120));
        s.zone = chrono_tz::Europe::Madrid;
        let html = render(&snapshot(vec![s]), &refdata(), t(10));
        // 20:00 UTC on 23 November is 21:00 in Madrid (CET).
        assert!(html.contains("<time datetime=\"2026-11-23T20:00:00Z\">2026-11-23 21:00 CET</time>"), "{html}");
        assert!(html.contains("Generated <time datetime=\"2026-11-23T18:10:00Z\">2026-11-23 18:10 UTC</time>"));
    }

    #[test]
    fn strings_from_outside_are_escaped() {
        let mut s = with_sites();
        s.inc.message = Some("<script>alert('x')</script> & \"more\"".into());
        s.inc.cause = "<img src=x onerror=alert(1)>".into();
        s.timeline.push(entry("updated", "message: <script>steal()</script>"));
        let html = render(&snapshot(vec![s]), &refdata(), t(10));
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"), "{html}");
        assert!(html.contains("message: &lt;script&gt;steal()&lt;/script&gt;"));
        assert_eq!(Esc("a<b>&'\"c").to_string(), "a&lt;b&gt;&amp;&#39;&quot;c");
        assert_eq!(Esc("plain ünïcode").to_string(), "plain ünïcode");
    }

    #[test]
    fn an_incident_without_sites_gets_circles_around_its_postcodes() {
        let s = SnapshotIncident {
            zone: chrono_tz::UTC,
            cause_text: String::new(),
            inc: incident("INC-20261123-0000bbbb", &[], vec![declared()]),
            postcodes: vec!["02901".into(), "06001".into(), "99999".into()],
            customers: 2,
            timeline: vec![],
        };
        let html = render(&snapshot(vec![s]), &refdata(), t(10));
        let d = html.split("class=\"footprint\"").nth(1).expect("footprint path");
        let d = d.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
        // 02901 and 06001 are ~120 km apart: two separate circles; 99999 is
        // unknown to the reference data and only listed.
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(html.matches("<circle class=\"postcode\"").count(), 2);
        assert!(html.contains("<li>99999 "));
    }

    #[test]
    fn only_public_incidents_are_shown_active_first() {
        let probable = SnapshotIncident {
            zone: chrono_tz::UTC,
            cause_text: String::new(),
            inc: incident("INC-20261123-0000cccc", &["SITE-SECRET-1"], vec![]),
            postcodes: vec![],
            customers: 0,
            timeline: vec![],
        };
        let mut resolved = with_sites();
        resolved.inc = incident(
            "INC-20261123-0000dddd",
            &["SITE-SECRET-1"],
            vec![declared(), EventKind::Resolved { restored_at: t(30) }],
        );
        let html = render(&snapshot(vec![probable, resolved, with_sites()]), &refdata(), t(60));
        assert!(!html.contains("0000cccc"), "probable incidents are nobody's business yet");
        let (active, closed) = (html.find("0000aaaa").unwrap(), html.find("0000dddd").unwrap());
        assert!(active < closed, "active first");
        assert!(html.contains("1 active incident, 1 recently closed."));
        assert!(html.contains(&format!("fill=\"{CLOSED_FOOTPRINT_FILL}\"")));
        assert!(html.contains("<dt>Restored</dt><dd><time datetime=\"2026-11-23T18:30:00Z\">"));
    }

    #[test]
    fn huge_incidents_are_capped_and_say_so() {
        let rd = {
            let pcs: Vec<Postcode> = (0..400)
                .map(|n| Postcode {
                    postcode: format!("P{n:04}"),
                    lat: 41.0 + (n / 20) as f64 * 0.01,
                    lon: -71.0 + (n % 20) as f64 * 0.01,
                    population: None,
                    timezone: None,
                })
                .collect();
            RefData::build(vec![], pcs, vec![]).unwrap()
        };
        let s = SnapshotIncident {
            zone: chrono_tz::UTC,
            cause_text: String::new(),
            inc: incident("INC-20261123-0000eeee", &[], vec![declared()]),
            postcodes: (0..400).map(|n| format!("P{n:04}")).collect(),
            customers: 0,
            timeline: vec![],
        };
        let html = render(&snapshot(vec![s]), &rd, t(0));
        assert_eq!(html.matches("<circle class=\"postcode\"").count(), MAX_DOTS);
        assert!(html.contains(&format!("the {MAX_DOTS} postcodes with the most customers are drawn, of 400")));
        assert_eq!(html.matches("<li>P").count(), MAX_LISTED);
        assert!(html.contains("of 400.</p>"));
        assert!(!html.contains("fill=\"#1c2b39\">P"), "no labels on a crowded map");
    }

    #[test]
    fn the_frame_keeps_the_aspect_and_everything_inside() {
        let f = Frame::fit([(-71.5, 41.7), (-71.3, 41.9)].into_iter()).unwrap();
        let (x0, y0) = f.xy(-71.5, 41.9);
        let (x1, y1) = f.xy(-71.3, 41.7);
        assert!(x0 > 0.0 && y0 > 0.0 && x1 < SVG_WIDTH && y1 < f.height, "{x0} {y0} {x1} {y1}");
        // 0.2° of longitude at 41.8° is 0.745 × 0.2° of latitude on screen.
        let ratio = (x1 - x0) / (y1 - y0);
        assert!((ratio - 41.8f64.to_radians().cos()).abs() < 1e-9, "{ratio}");
        assert!(Frame::fit(std::iter::empty()).is_none());
        assert!(Frame::fit([(f64::NAN, 1.0)].into_iter()).is_none());
        // One point: a small square around it, not a division by zero.
        let f = Frame::fit([(-71.4, 41.8)].into_iter()).unwrap();
        let (x, y) = f.xy(-71.4, 41.8);
        assert!((x - SVG_WIDTH / 2.0).abs() < 1e-6 && (y - f.height / 2.0).abs() < 1e-6);
    }

    #[tokio::test]
    async fn the_router_serves_the_page_without_a_token() {
        let (side, commands, snapshots) = crate::api::channels();
        let state = ApiState::new(
            crate::config::Config::default().api_settings(),
            Arc::new(refdata()),
            commands,
            snapshots,
            Arc::new(crate::runtime::Stats::default()),
            Box::new(|| t(10)),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, crate::api::router(Arc::new(state))).await });
        let http = crate::tls::http_client(&Default::default()).build().unwrap();
        let get = || http.get(format!("http://{addr}/status")).send();
        let r = get().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert!(r.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
        assert!(r.text().await.unwrap().contains("Starting up"));
        // A published snapshot shows up on the next request (not a stale cache).
        side.snapshots.send(Arc::new(snapshot(vec![with_sites()]))).unwrap();
        let body = get().await.unwrap().text().await.unwrap();
        assert!(body.contains("INC-20261123-0000aaaa") && body.contains(FOOTPRINT_FILL), "{body}");
        assert!(body.contains("2026-11-23T18:10:00Z"), "generated at the API's clock");
        // The API proper still wants its token.
        let r = http.get(format!("http://{addr}/v1/incidents")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        server.abort();
    }
}
