//! Incident → audience → actions. Owns the footprint (which billing
//! postcodes an incident covers), who is told what on which channel, what
//! they are given (unlimited data, credits), and the IVR's desired state per
//! region. Pure: the caller passes `now`.
//!
//! A postcode is in the footprint when its centroid lies inside the coverage
//! circle of a site of the incident: DESIGN.md prefers telling a few
//! unaffected customers over leaving affected ones guessing.
//!
//! A [`Plan`] names its postcodes and what each of their customers gets,
//! not the actions themselves: those are made page by page
//! ([`Planner::pages`]) as they are produced, so a million-customer
//! incident never holds a million actions in memory.

use super::compensate;
use super::templates::{TemplateError, Templates, Vars};
use crate::model::{Action, ActionKind, Channel, Credit, Customer, Incident, IncidentState, IvrUpsert, Message, Money};
use crate::refdata::RefData;
use crate::transforms::compensate::CompensationConfig;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Who is told what, and what they are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanConfig {
    /// IVR regions are postcode prefixes of this length (3: US SCF). Default 3.
    pub ivr_region_prefix: usize,
    /// Language of IVR prompts and of customers whose language has no
    /// template. Default `en`.
    pub default_language: String,
    /// Unlimited data lasts until restoration plus this grace. Default 24h.
    #[serde(with = "humantime_serde")]
    pub data_grant_grace: std::time::Duration,
    /// With no ETR, a grant is provisioned until now plus this (the revoke
    /// at restoration ends it, a grace later); no end is quoted to the
    /// customer. With an ETR it lasts until the ETR plus the grace, and is
    /// extended whenever the ETR moves. Default 7d.
    #[serde(with = "humantime_serde")]
    pub data_grant_horizon: std::time::Duration,
    /// Outages shorter than this earn no credit. Default 1h.
    #[serde(with = "humantime_serde")]
    pub credit_min_outage: std::time::Duration,
    /// Operator name used in messages. Default `Example Telecom`.
    pub operator_name: String,
    /// Where customers read updates, quoted in messages.
    pub status_url: String,
    /// Notice templates replacing the built-in `templates/notices.toml`.
    /// Default: none (the built-in set).
    pub templates: Option<PathBuf>,
    /// Most SMS segments a notice may take; every template is checked at
    /// start-up with the longest values. Default 2.
    pub sms_max_segments: usize,
    /// IANA zone of the IVR's fallback and of a postcode whose row names
    /// no zone and whose centroid lies in none (a postcode's own zone, or
    /// its centroid's, comes first). Default `UTC`.
    pub default_timezone: String,
    /// Notices promise automatic compensation. Default true.
    pub compensation_promise: bool,
    /// Hold SMS notices planned at night until the customer's local
    /// morning. Default: none (send at once).
    pub quiet_hours: Option<QuietHoursConfig>,
    /// Which credits customers get, per jurisdiction and service
    /// (`[[plan.compensation.rules]]`; see `transforms::compensate`).
    /// Default: the monthly fee prorated by the outage, for everyone.
    pub compensation: CompensationConfig,
    /// Incidents whose cause contains one of these (any case) are force
    /// majeure, which the regulated rules treat differently (e.g. Spain's
    /// art. 15 pays only the prorated fee). Default: none.
    pub force_majeure_causes: Vec<String>,
    /// A "down" fan-out to more customers than this waits for a NOC
    /// operator's approval (`POST /v1/incidents/{id}/approve`, after a look
    /// at `…/preview`); the IVR announcement does not wait. Default: none
    /// (never wait).
    pub approve_above_customers: Option<u64>,
    /// An approved incident whose audience grows past this many times the
    /// audience approved asks again (`approval_required` anew; what was
    /// told stays told, the rest waits). Default 2.
    pub reapprove_growth: u64,
}

/// When SMS notices must not wake customers, in each customer's local time
/// (their postcode's zone). E-mail is not held: it wakes nobody.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHoursConfig {
    /// Local time quiet hours begin, `HH:MM`. Default `21:00`.
    pub start: chrono::NaiveTime,
    /// Local time they end (the next day's when earlier than `start`),
    /// `HH:MM`. Default `08:00`.
    pub end: chrono::NaiveTime,
    /// A severe incident is told at once, night or not: one whose told
    /// postcodes hold at least this many customers. Default 100000.
    pub severe_customers: u64,
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        QuietHoursConfig {
            start: chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap_or_default(),
            end: chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
            severe_customers: 100_000,
        }
    }
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            ivr_region_prefix: 3,
            default_language: "en".into(),
            data_grant_grace: std::time::Duration::from_secs(24 * 3600),
            data_grant_horizon: std::time::Duration::from_secs(7 * 24 * 3600),
            credit_min_outage: std::time::Duration::from_secs(3600),
            operator_name: "Example Telecom".into(),
            status_url: "https://status.example.net".into(),
            templates: None,
            sms_max_segments: 2,
            default_timezone: "UTC".into(),
            compensation_promise: true,
            quiet_hours: None,
            compensation: CompensationConfig::default(),
            force_majeure_causes: Vec::new(),
            approve_above_customers: None,
            reapprove_growth: 2,
        }
    }
}

/// What a plan gives each customer of its postcodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Audience {
    /// "Down" notices, and unlimited data until `until` (provisional: the
    /// revoke at restoration sets the real end).
    Down { until: DateTime<Utc> },
    /// "Restored" notices, data revokes and credits, each postcode for its
    /// own outage window (start, end).
    Restored { windows: HashMap<String, (DateTime<Utc>, DateTime<Utc>)> },
    /// The incident was called off after customers were told: a short
    /// correction, and unlimited data ends at `until`. No credit.
    Cancelled { until: DateTime<Utc> },
    /// The NOC changed the ETR: the `version`-th update notice (the seq of
    /// the `updated` event), to everyone told and not yet restored.
    EtrUpdate { version: u64 },
}

/// Newly covered postcodes (down) or everyone told (restored), sorted, and
/// what their customers get; the actions come from [`Planner::pages`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub postcodes: Vec<String>,
    pub audience: Audience,
    /// When it was planned (the actions' `planned_at`).
    pub now: DateTime<Utc>,
}

impl Plan {
    fn nobody(now: DateTime<Utc>) -> Self {
        Plan { postcodes: vec![], audience: Audience::Down { until: now }, now }
    }
}

/// One IVR region's share of a previewed fan-out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionCounts {
    pub postcodes: u64,
    pub customers: u64,
    pub channels: BTreeMap<Channel, u64>,
}

/// The actions of a plan, a page of customers at a time.
pub struct Pages<'a> {
    planner: &'a Planner,
    inc: &'a Incident,
    plan: &'a Plan,
    texts: Texts<'a>,
    customers: Box<dyn Iterator<Item = &'a Customer> + Send + 'a>,
    per_page: usize,
}

impl Iterator for Pages<'_> {
    type Item = Vec<Action>;

    /// The next page's actions (possibly none: its customers may have no
    /// contact and nothing owed); `None` once every customer was seen.
    fn next(&mut self) -> Option<Vec<Action>> {
        let mut out = Vec::new();
        let mut seen = 0;
        for c in self.customers.by_ref().take(self.per_page) {
            seen += 1;
            self.planner.customer_actions(self.inc, self.plan, c, &mut self.texts, &mut out);
        }
        (seen > 0).then_some(out)
    }
}

pub struct Planner {
    cfg: PlanConfig,
    refdata: Arc<RefData>,
    templates: Templates,
    /// `cfg.default_timezone`, parsed (validated with the config): the
    /// IVR's and the last resort for a postcode's zone.
    default_tz: Tz,
    /// Each postcode's zone (by index into `refdata.postcodes`): the CSV's
    /// when it names a known IANA zone, else the zone its centroid lies in,
    /// else `default_tz` (see [`postcode_zones`]).
    zones: Vec<Tz>,
}

/// Where the postcodes' time zones came from (logged at start-up).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ZoneSources {
    /// Named by the postcode file.
    pub file: usize,
    /// Looked up from the postcode's centroid (no zone, or an unknown one,
    /// in the file).
    pub coordinates: usize,
    /// The file named a zone that does not exist (then by coordinates).
    pub unknown_in_file: usize,
    /// Neither: `plan.default_timezone` (at sea, or no coordinates).
    pub default: usize,
}

/// Each postcode's zone: the file's, else from its centroid (time-zone
/// boundaries, `tzf-rs`), else `default`. Local time decides what a
/// customer reads and the 08:00–22:00 window of Spain's art. 16, so an
/// unknown zone must not silently become UTC.
pub fn postcode_zones(refdata: &RefData, default: Tz) -> (Vec<Tz>, ZoneSources) {
    // Built once per process, and only when a postcode needs it (it holds
    // the world's zone boundaries, simplified: a few MB).
    static FINDER: std::sync::OnceLock<tzf_rs::DefaultFinder> = std::sync::OnceLock::new();
    let mut n = ZoneSources::default();
    let zones = refdata
        .postcodes
        .iter()
        .map(|p| {
            let named = p.timezone.as_deref().map(|z| z.parse::<Tz>());
            match named {
                Some(Ok(tz)) => {
                    n.file += 1;
                    return tz;
                }
                Some(Err(_)) => n.unknown_in_file += 1,
                None => {}
            }
            let f = FINDER.get_or_init(tzf_rs::DefaultFinder::new);
            let found = (p.lat.is_finite() && p.lon.is_finite())
                .then(|| f.get_tz_name(p.lon, p.lat).parse::<Tz>().ok())
                .flatten();
            match found {
                Some(tz) => {
                    n.coordinates += 1;
                    tz
                }
                None => {
                    n.default += 1;
                    default
                }
            }
        })
        .collect();
    (zones, n)
}

/// What a text depends on: kind, channel, language, postcode, whether the
/// customer has a grant, and the credit a restored notice names.
type TextKey<'a> = (ActionKind, Channel, &'a str, &'a str, bool, Option<Money>);

/// Renders each notice once per [`TextKey`] within one plan: a storm's
/// customers share a few hundred texts.
struct Texts<'a> {
    planner: &'a Planner,
    inc: &'a Incident,
    now: DateTime<Utc>,
    /// Provisional end of unlimited data, quoted in `down` notices.
    data_until: Option<DateTime<Utc>>,
    cache: HashMap<TextKey<'a>, Message>,
    /// Quiet hours, unless off or the incident is severe.
    quiet: Option<&'a QuietHoursConfig>,
    /// Per postcode: until when its SMS notices are held (quiet hours).
    held_until: HashMap<&'a str, Option<DateTime<Utc>>>,
}

impl<'a> Texts<'a> {
    /// The text of `kind` on `channel` for `c`; `credit`: what a restored
    /// notice names (this customer's credit for the outage).
    fn get(&mut self, kind: ActionKind, channel: Channel, c: &'a Customer, credit: Option<Money>) -> Message {
        let p = self.planner;
        let lang = p.templates.resolve(&c.language);
        let granted = c.services.mobile && c.msisdn.is_some();
        let key = (kind, channel, lang, c.postcode.as_str(), granted, credit);
        if let Some(m) = self.cache.get(&key) {
            return m.clone();
        }
        let vars = Vars {
            // The end of unlimited data is quoted only with an ETR: without
            // one it lasts until restoration plus the grace, an unknown time.
            data_until: if granted && self.inc.etr.is_some() { self.data_until } else { None },
            credit,
            ..p.vars(self.inc, &c.postcode, p.timezone(&c.postcode), self.now)
        };
        let m = p.templates.render(kind, channel, lang, &vars).unwrap_or_else(|e| {
            // The set was checked at start-up; should one still fail, the
            // customer gets a plain fallback, not nothing.
            tracing::error!(error = %e, "notice template failed");
            Message {
                subject: Some(format!("{} — {}", p.cfg.operator_name, self.inc.id)),
                text: format!("{}: {}", p.cfg.operator_name, p.cfg.status_url),
            }
        });
        self.cache.insert(key, m.clone());
        m
    }

    /// When the customer's local morning comes, if it is night for them.
    fn not_before(&mut self, c: &'a Customer) -> Option<DateTime<Utc>> {
        let q = self.quiet?;
        let (p, now) = (self.planner, self.now);
        *self.held_until.entry(c.postcode.as_str()).or_insert_with(|| quiet_until(q, p.timezone(&c.postcode), now))
    }
}

/// The end of quiet hours when `now` falls in them in zone `tz`, else
/// `None`. Quiet hours wrap midnight when `end` is earlier than `start`.
pub fn quiet_until(q: &QuietHoursConfig, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(&tz);
    let (t, today) = (local.time(), local.date_naive());
    let morning = if q.start < q.end {
        (q.start <= t && t < q.end).then_some(today)?
    } else if t >= q.start {
        today.succ_opt()?
    } else if t < q.end {
        today
    } else {
        return None;
    };
    let wake = morning.and_time(q.end);
    // A morning inside a DST gap comes when the clocks have jumped.
    tz.from_local_datetime(&wake)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(wake + chrono::Duration::hours(1))).earliest())
        .map(|d| d.with_timezone(&Utc))
}

impl Planner {
    /// Load and check the notice templates (the longest postcode of
    /// `refdata` is the worst-case area), then build the planner.
    pub fn new(cfg: PlanConfig, refdata: Arc<RefData>) -> Result<Self, TemplateError> {
        let templates =
            Templates::load(cfg.templates.as_deref(), &cfg.default_language)?.with_sms_budget(cfg.sms_max_segments);
        let area = refdata.postcodes.iter().map(|p| p.postcode.as_str()).max_by_key(|p| p.chars().count());
        templates.check(cfg.sms_max_segments, &cfg.operator_name, &cfg.status_url, area.unwrap_or(""))?;
        let default_tz = cfg.default_timezone.parse().unwrap_or(Tz::UTC);
        let (zones, from) = postcode_zones(&refdata, default_tz);
        if from.unknown_in_file > 0 {
            tracing::warn!(
                postcodes = from.unknown_in_file,
                "postcode file names time zones that do not exist; their postcodes' zones come from coordinates"
            );
        }
        tracing::info!(
            from_file = from.file,
            from_coordinates = from.coordinates,
            default = from.default,
            default_timezone = %default_tz,
            "postcode time zones"
        );
        Ok(Planner { cfg, refdata, templates, default_tz, zones })
    }

    /// Word causes by `classifier` (the operator's `[causes]` rules as
    /// well as the standards' table).
    pub fn with_classifier(mut self, classifier: Arc<crate::transforms::classify::Classifier>) -> Self {
        self.templates = self.templates.with_classifier(classifier);
        self
    }

    /// An incident's cause in the words notices use, in the default
    /// language.
    pub fn cause_words(&self, cause: &str) -> String {
        self.templates.cause_words(&self.cfg.default_language, cause)
    }

    /// The zone notices to a postcode's customers are written in.
    pub fn timezone(&self, postcode: &str) -> Tz {
        self.refdata
            .postcode_index(postcode)
            .and_then(|i| self.zones.get(i as usize).copied())
            .unwrap_or(self.default_tz)
    }

    fn vars<'a>(&'a self, inc: &'a Incident, area: &'a str, tz: Tz, now: DateTime<Utc>) -> Vars<'a> {
        Vars {
            operator: &self.cfg.operator_name,
            area,
            cause: &inc.cause,
            start: inc.opened_at,
            etr: inc.etr,
            data_until: None,
            // A promise only where rules can pay it.
            compensation: self.cfg.compensation_promise && !self.cfg.compensation.rules.is_empty(),
            credit: None,
            message: inc.message.as_deref(),
            incident: &inc.id.0,
            url: &self.cfg.status_url,
            tz,
            now,
        }
    }

    /// Whether the incident is severe enough to tell at night: its told
    /// postcodes (with the plan's) hold `threshold` customers or more.
    fn severe(&self, inc: &Incident, plan: &Plan, threshold: u64) -> bool {
        let new = plan.postcodes.iter().filter(|p| !inc.notified_postcodes.contains(*p));
        let mut n = 0u64;
        for p in inc.notified_postcodes.iter().chain(new) {
            n += self.refdata.customers_in(p).len() as u64;
            if n >= threshold {
                return true;
            }
        }
        false
    }

    /// Postcodes (indexes into `refdata.postcodes`) whose centroid lies in
    /// the coverage of any footprint site of the incident (not a pending
    /// one: [`Incident::footprint_sites`]), sorted by postcode.
    /// A NOC-drawn incident's footprint is its area's postcodes.
    pub fn footprint(&self, inc: &Incident) -> Vec<u32> {
        // Pending sites (not yet down for the blip window) are outside it.
        self.postcodes_of(inc, inc.footprint_sites().map(|(s, _)| s))
    }

    /// The area the IVR announces in (indexes into `refdata.postcodes`):
    /// the footprint and the pending sites' postcodes too. The IVR is told
    /// the moment an incident is declared (a caller hears "we know of an
    /// outage in your area"); only the notices to each customer wait for a
    /// site's confirmation. The same set announces and withdraws, so an
    /// announcement made for a pending site is cleared with the rest.
    pub fn announced(&self, inc: &Incident) -> Vec<u32> {
        self.postcodes_of(inc, inc.sites.keys())
    }

    /// Postcodes covered by `sites` of `inc` (its scope's, for a NOC-drawn
    /// incident), sorted by postcode.
    fn postcodes_of<'a>(&self, inc: &Incident, sites: impl Iterator<Item = &'a str>) -> Vec<u32> {
        if let Some((_, postcodes)) = &inc.scope {
            return postcodes.iter().filter_map(|p| self.refdata.postcode_index(p)).collect();
        }
        let mut set = BTreeSet::new();
        for site_id in sites {
            let Some(i) = self.refdata.site_index(site_id) else { continue };
            set.extend(self.refdata.site_postcodes(i).iter().copied());
        }
        let mut v: Vec<u32> = set.into_iter().collect();
        v.sort_by(|a, b| {
            self.refdata.postcodes[*a as usize].postcode.cmp(&self.refdata.postcodes[*b as usize].postcode)
        });
        v
    }

    /// Per footprint postcode (index into `refdata.postcodes`): when the
    /// sites covering it went down, and when the last of them came back
    /// (`None` while one is still down). Partially restored areas get their
    /// own window. A NOC-drawn incident's postcodes share its own window.
    pub fn postcode_windows(&self, inc: &Incident) -> BTreeMap<u32, (DateTime<Utc>, Option<DateTime<Utc>>)> {
        let mut out: BTreeMap<u32, (DateTime<Utc>, Option<DateTime<Utc>>)> = BTreeMap::new();
        if inc.scope.is_some() {
            // The NOC's window: from when it says service went (its
            // `opened`) to its resolution.
            let window = (inc.opened_at, inc.restored_at);
            return self.footprint(inc).into_iter().map(|p| (p, window)).collect();
        }
        for (site_id, w) in inc.footprint_sites() {
            let Some(i) = self.refdata.site_index(site_id) else { continue };
            for &p in self.refdata.site_postcodes(i) {
                out.entry(p)
                    .and_modify(|(start, end)| {
                        *start = (*start).min(w.down_since);
                        *end = end.zip(w.up_at).map(|(a, b)| a.max(b));
                    })
                    .or_insert((w.down_since, w.up_at));
            }
        }
        out
    }

    fn action(&self, inc: &Incident, c: &Customer, channel: Channel, kind: ActionKind, now: DateTime<Utc>) -> Action {
        Action {
            action_id: Action::key(&inc.id, &c.customer_id, channel, kind),
            incident_id: inc.id.clone(),
            customer_id: c.customer_id.clone(),
            channel,
            kind,
            to: None,
            language: c.language.clone(),
            message: None,
            until: None,
            credit: None,
            planned_at: now,
            not_before: None,
        }
    }

    fn customers<'a>(&'a self, postcodes: &'a [String]) -> impl Iterator<Item = &'a Customer> + 'a {
        postcodes.iter().flat_map(|p| self.refdata.customers_in(p).iter().map(|&i| &self.refdata.customers[i as usize]))
    }

    /// Notices and data grants for the footprint's postcodes not told yet.
    /// `footprint` is [`Self::footprint`] of the incident, or the
    /// correlator's incrementally kept coverage (any order): recomputing it
    /// from every site at each growth step would cost O(n²) over a storm.
    pub fn plan_down(&self, inc: &Incident, footprint: &[u32], now: DateTime<Utc>) -> Plan {
        if inc.state != IncidentState::Declared {
            return Plan::nobody(now);
        }
        let mut postcodes: Vec<String> = footprint
            .iter()
            .map(|&i| &self.refdata.postcodes[i as usize].postcode)
            .filter(|p| !inc.notified_postcodes.contains(*p))
            .cloned()
            .collect();
        postcodes.sort_unstable();
        Plan { postcodes, audience: Audience::Down { until: self.grant_until(inc, now) }, now }
    }

    /// The plan's actions, `per_page` customers at a time, in postcode then
    /// customer order (deterministic).
    pub fn pages<'a>(&'a self, inc: &'a Incident, plan: &'a Plan, per_page: usize) -> Pages<'a> {
        let data_until = match &plan.audience {
            Audience::Down { until } => Some(*until),
            _ => None,
        };
        let quiet = self.cfg.quiet_hours.as_ref().filter(|q| !self.severe(inc, plan, q.severe_customers));
        Pages {
            planner: self,
            inc,
            plan,
            texts: Texts {
                planner: self,
                inc,
                now: plan.now,
                data_until,
                cache: HashMap::new(),
                quiet,
                held_until: HashMap::new(),
            },
            customers: Box::new(self.customers(&plan.postcodes)),
            per_page: per_page.max(1),
        }
    }

    /// Every action of the plan at once (small plans and tests).
    pub fn actions(&self, inc: &Incident, plan: &Plan) -> Vec<Action> {
        self.pages(inc, plan, usize::MAX).flatten().collect()
    }

    /// What one customer of the plan gets.
    fn customer_actions<'a>(
        &self,
        inc: &Incident,
        plan: &Plan,
        c: &'a Customer,
        texts: &mut Texts<'a>,
        out: &mut Vec<Action>,
    ) {
        let now = plan.now;
        match &plan.audience {
            Audience::Down { until } => {
                self.notices(inc, c, ActionKind::Down, None, texts, out);
                out.extend(self.data_grant(inc, c, ActionKind::Grant, *until, now));
            }
            Audience::Restored { windows } => {
                let Some(&window) = windows.get(&c.postcode) else { return };
                let credits = self.credits(inc, c, window);
                // The notice names what the customer will get: the sum of
                // their credits (one currency per customer's rules).
                let total = credits.iter().map(|c| c.amount).reduce(|a, b| Money::new(a.minor + b.minor, a.currency));
                self.notices(inc, c, ActionKind::Restored, total, texts, out);
                out.extend(self.data_grant(inc, c, ActionKind::Revoke, window.1 + self.grace(), now));
                for credit in credits {
                    let mut a = self.action(inc, c, Channel::Credit, ActionKind::Credit, now);
                    a.action_id = Action::credit_key(&inc.id, &c.customer_id, &credit.rule_id, &credit.service);
                    a.credit = Some(credit);
                    out.push(a);
                }
            }
            Audience::Cancelled { until } => {
                self.notices(inc, c, ActionKind::Cancelled, None, texts, out);
                out.extend(self.data_grant(inc, c, ActionKind::Revoke, *until, now));
            }
            Audience::EtrUpdate { version } => {
                let first = out.len();
                self.notices(inc, c, ActionKind::EtrUpdate, None, texts, out);
                // The grant follows the ETR (never shortened: the platform
                // keeps the later end), under a key of its own version.
                if let Some(mut g) = self.data_grant(inc, c, ActionKind::Grant, self.grant_until(inc, now), now) {
                    g.action_id = Action::grant_extension_key(&inc.id, &c.customer_id, *version);
                    out.push(g);
                }
                for a in &mut out[first..] {
                    if a.kind == ActionKind::EtrUpdate {
                        a.action_id = Action::etr_update_key(&inc.id, &c.customer_id, a.channel, *version);
                    }
                }
            }
        }
    }

    /// The closing plan of an incident cancelled after customers were told:
    /// everyone told (and not already told "restored") gets the correction,
    /// and their unlimited data ends a grace after the cancellation.
    pub fn plan_cancelled(&self, inc: &Incident, now: DateTime<Utc>) -> Plan {
        if inc.state != IncidentState::Cancelled {
            return Plan::nobody(now);
        }
        let postcodes: Vec<String> = inc.notified_postcodes.difference(&inc.restored_postcodes).cloned().collect();
        let until = inc.closed_at.unwrap_or(now) + self.grace();
        Plan { postcodes, audience: Audience::Cancelled { until }, now }
    }

    /// ETR update notices, when the NOC changed the ETR since the last
    /// ones were planned: to everyone told "down" and not yet "restored".
    pub fn plan_etr_update(&self, inc: &Incident, now: DateTime<Utc>) -> Plan {
        if inc.state != IncidentState::Declared || inc.etr_version <= inc.etr_told_version {
            return Plan::nobody(now);
        }
        let postcodes: Vec<String> = inc.notified_postcodes.difference(&inc.restored_postcodes).cloned().collect();
        Plan { postcodes, audience: Audience::EtrUpdate { version: inc.etr_version }, now }
    }

    /// The credits `c` gets for an outage of their area over `window`
    /// under the configured rules.
    pub fn credits(&self, inc: &Incident, c: &Customer, window: (DateTime<Utc>, DateTime<Utc>)) -> Vec<Credit> {
        let tz = self.timezone(&c.postcode);
        let (cfg, min) = (&self.cfg.compensation, self.cfg.credit_min_outage);
        compensate::credits(cfg, inc, c, window, tz, self.force_majeure(inc), min)
    }

    /// For a backtest: every credit the incident's restored plans would
    /// queue, each customer for their postcode's own window (postcodes
    /// still down, or of an incident never resolved, are not credited yet).
    /// Customers in postcode order; `out` takes them one at a time.
    pub fn backtest_credits(
        &self,
        inc: &Incident,
        out: &mut dyn FnMut(Credit) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for (p, (start, end)) in self.postcode_windows(inc) {
            let Some(end) = end.or(inc.restored_at) else { continue };
            let postcode = &self.refdata.postcodes[p as usize].postcode;
            for &i in self.refdata.customers_in(postcode) {
                for credit in self.credits(inc, &self.refdata.customers[i as usize], (start, end)) {
                    out(credit)?;
                }
            }
        }
        Ok(())
    }

    /// The customer-facing text of an incident for `postcode` in
    /// `language` (its "down" SMS, or "restored" once closed): the one
    /// answer agents, IVR and chat bots give (`GET /v1/impact`).
    /// With `customer`, the text that customer's SMS carries (their
    /// unlimited-data line included when they have a grant).
    pub fn customer_text(
        &self,
        inc: &Incident,
        postcode: &str,
        language: &str,
        customer: Option<&Customer>,
        now: DateTime<Utc>,
    ) -> String {
        let lang = self.templates.resolve(language);
        let kind = match inc.state {
            IncidentState::Resolved => ActionKind::Restored,
            IncidentState::Cancelled => ActionKind::Cancelled,
            _ => ActionKind::Down,
        };
        let granted = customer.is_some_and(|c| c.services.mobile && c.msisdn.is_some());
        let vars = Vars {
            // As the "down" plan quotes it: with an ETR only.
            data_until: (granted && kind == ActionKind::Down && inc.etr.is_some()).then(|| self.grant_until(inc, now)),
            ..self.vars(inc, postcode, self.timezone(postcode), now)
        };
        match self.templates.render(kind, Channel::Sms, lang, &vars) {
            Ok(m) => m.text,
            Err(e) => {
                tracing::error!(error = %e, "customer text template failed");
                format!("{}: {}", self.cfg.operator_name, self.cfg.status_url)
            }
        }
    }

    /// The reference data it plans over.
    pub fn refdata(&self) -> &RefData {
        &self.refdata
    }

    /// The language a customer's `language` tag resolves to.
    pub fn language(&self, tag: &str) -> String {
        self.templates.resolve(tag).to_string()
    }

    /// Whether the incident's cause is one the config calls force majeure.
    fn force_majeure(&self, inc: &Incident) -> bool {
        let cause = inc.cause.to_lowercase();
        self.cfg.force_majeure_causes.iter().any(|c| !c.is_empty() && cause.contains(&c.to_lowercase()))
    }

    /// The provisional end of a data grant: the ETR plus the grace, or,
    /// with no ETR, `data_grant_horizon` from now. The revoke at
    /// restoration sets the real end (restoration plus the grace).
    fn grant_until(&self, inc: &Incident, now: DateTime<Utc>) -> DateTime<Utc> {
        match inc.etr {
            Some(etr) => etr.max(now) + self.grace(),
            None => now + chrono::Duration::from_std(self.cfg.data_grant_horizon).unwrap_or(chrono::Duration::days(7)),
        }
    }

    fn grace(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.data_grant_grace).unwrap_or(chrono::Duration::days(1))
    }

    /// Grant or revoke unlimited data, for mobile customers with a number.
    fn data_grant(
        &self,
        inc: &Incident,
        c: &Customer,
        kind: ActionKind,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Action> {
        let msisdn = c.msisdn.as_ref().filter(|_| c.services.mobile)?;
        let mut a = self.action(inc, c, Channel::DataGrant, kind, now);
        a.to = Some(msisdn.clone());
        a.until = Some(until);
        // The dispatcher holds a revoke until the grant is due to end.
        a.not_before = (kind == ActionKind::Revoke).then_some(until);
        Some(a)
    }

    fn notices<'a>(
        &self,
        inc: &Incident,
        c: &'a Customer,
        kind: ActionKind,
        credit: Option<Money>,
        texts: &mut Texts<'a>,
        out: &mut Vec<Action>,
    ) {
        let now = texts.now;
        let opt_out = self.refdata.opt_out(c);
        let channels = [(Channel::Sms, &c.msisdn, opt_out.sms), (Channel::Email, &c.email, opt_out.email)];
        for (channel, to, opted_out) in channels {
            if let (Some(to), false) = (to, opted_out) {
                let mut a = self.action(inc, c, channel, kind, now);
                a.to = Some(to.clone());
                a.message = Some(texts.get(kind, channel, c, credit));
                // The language of the text sent (after fallback: `es-MX`
                // and, with `default_language = "es"`, a Catalan `ca`
                // customer read Spanish), not the customer's tag.
                a.language = self.templates.resolve(&c.language).to_string();
                if channel == Channel::Sms {
                    a.not_before = texts.not_before(c);
                }
                out.push(a);
            }
        }
    }

    /// The closing plan at resolution: "restored" notices, data revokes and
    /// credits for everyone told and not already restored early.
    pub fn plan_restored(&self, inc: &Incident, now: DateTime<Utc>) -> Plan {
        let Some(restored_at) = inc.restored_at.filter(|_| inc.state == IncidentState::Resolved) else {
            return Plan::nobody(now);
        };
        let windows: HashMap<String, (DateTime<Utc>, DateTime<Utc>)> = self
            .postcode_windows(inc)
            .into_iter()
            .map(|(p, (start, end))| {
                (self.refdata.postcodes[p as usize].postcode.clone(), (start, end.unwrap_or(restored_at)))
            })
            .filter(|(p, _)| inc.notified_postcodes.contains(p) && !inc.restored_postcodes.contains(p))
            .collect();
        self.restored_actions(windows, now)
    }

    /// A partial plan while the incident is still declared: the same
    /// actions for `postcodes` (indexes), whose own sites have all come back
    /// (see [`super::restore`]); each is credited for its own window.
    pub fn plan_partly_restored(&self, inc: &Incident, postcodes: &[u32], now: DateTime<Utc>) -> Plan {
        if inc.state != IncidentState::Declared {
            return Plan::nobody(now);
        }
        let windows = postcodes
            .iter()
            .filter_map(|&p| {
                let window = super::restore::restored_window(&self.refdata, inc, p)?;
                Some((self.refdata.postcodes[p as usize].postcode.clone(), window))
            })
            .filter(|(code, _)| inc.notified_postcodes.contains(code) && !inc.restored_postcodes.contains(code))
            .collect();
        self.restored_actions(windows, now)
    }

    /// "Restored" notices, data revokes (at the postcode's restoration +
    /// grace) and credits (for its own outage window) for the customers of
    /// `windows`' postcodes.
    fn restored_actions(&self, windows: HashMap<String, (DateTime<Utc>, DateTime<Utc>)>, now: DateTime<Utc>) -> Plan {
        let mut postcodes: Vec<String> = windows.keys().cloned().collect();
        postcodes.sort_unstable();
        Plan { postcodes, audience: Audience::Restored { windows }, now }
    }

    /// The IVR region (postcode prefix) a postcode is in.
    pub fn region(&self, postcode: &str) -> String {
        postcode.chars().take(self.cfg.ivr_region_prefix).collect()
    }

    /// What the "down" plan over `footprint` would send now, without
    /// sending it: per IVR region, the postcodes not told yet, their
    /// customers and the actions by channel. The same code path as the
    /// real plan (consent, contacts, services), so the counts are the ones
    /// an approval releases. Linear in the customers: a few seconds for a
    /// million.
    pub fn preview(&self, inc: &Incident, footprint: &[u32], now: DateTime<Utc>) -> BTreeMap<String, RegionCounts> {
        let mut plan = self.plan_down(inc, footprint, now);
        if inc.state != IncidentState::Declared {
            // A probable incident's would-be plan, as if declared now.
            let mut declared = inc.clone();
            declared.state = IncidentState::Declared;
            plan = self.plan_down(&declared, footprint, now);
        }
        let mut regions: BTreeMap<String, RegionCounts> = BTreeMap::new();
        for p in &plan.postcodes {
            regions.entry(self.region(p)).or_default().postcodes += 1;
        }
        for (c, actions) in self.customers(&plan.postcodes).zip(self.pages(inc, &plan, 1)) {
            let r = regions.entry(self.region(&c.postcode)).or_default();
            r.customers += 1;
            for a in actions {
                *r.channels.entry(a.channel).or_default() += 1;
            }
        }
        regions
    }

    /// Desired IVR state of each region (postcode prefix) of the footprint:
    /// announced while declared, withdrawn once resolved or cancelled.
    /// Times are the region's local time (the zone of its first postcode
    /// in the footprint), as in the SMS its callers got.
    pub fn ivr(&self, inc: &Incident, footprint: &[u32], now: DateTime<Utc>) -> Vec<IvrUpsert> {
        let active = match inc.state {
            IncidentState::Declared => true,
            IncidentState::Resolved | IncidentState::Cancelled => false,
            _ => return vec![],
        };
        let mut regions: BTreeMap<String, Tz> = BTreeMap::new();
        for &i in footprint {
            let p = &self.refdata.postcodes[i as usize].postcode;
            regions.entry(self.region(p)).or_insert_with(|| self.timezone(p));
        }
        let lang = self.templates.resolve(&self.cfg.default_language);
        // Rendered once per zone (a country has one or a few).
        let mut by_zone: HashMap<Tz, BTreeMap<String, String>> = HashMap::new();
        let valid_until = if active { inc.etr.unwrap_or(now + chrono::Duration::hours(4)) } else { now };
        regions
            .into_iter()
            .map(|(region, tz)| {
                let messages = by_zone
                    .entry(tz)
                    .or_insert_with(|| {
                        let vars = self.vars(inc, "", tz, now);
                        self.templates
                            .languages()
                            .map(|l| {
                                let text = self.templates.ivr(active, l, &vars).unwrap_or_else(|e| {
                                    tracing::error!(error = %e, language = l, "IVR template failed");
                                    String::new()
                                });
                                (l.to_string(), text)
                            })
                            .collect()
                    })
                    .clone();
                IvrUpsert {
                    region,
                    active,
                    message: messages.get(lang).cloned().unwrap_or_default(),
                    language: lang.to_string(),
                    messages,
                    incident_id: inc.id.clone(),
                    valid_until,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::money::Currency;
    use crate::model::{AlarmRef, EventKind, IncidentEvent, IncidentId, Money, Phase, Postcode, Services, Site};
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    fn planner_with(cfg: PlanConfig) -> Planner {
        let usd = |minor| Money { minor, currency: Currency::parse("USD").unwrap() };
        let cust =
            |id: &str, msisdn: Option<&str>, email: Option<&str>, pc: &str, lang: &str, services: &str| Customer {
                customer_id: id.into(),
                msisdn: msisdn.map(Into::into),
                email: email.map(Into::into),
                postcode: pc.into(),
                language: lang.into(),
                services: Services::parse(services).unwrap(),
                opt_out: Default::default(),
                monthly_fee: usd(3000),
                avg_bill_3m: usd(3500),
            };
        let pc = |p: &str, lat, lon| Postcode { postcode: p.into(), lat, lon, population: None, timezone: None };
        let rd = RefData::build(
            vec![Site { site_id: "S1".into(), lat: 41.82, lon: -71.41, radius_km: 2.0, group_id: None }],
            vec![pc("02901", 41.821, -71.409), pc("02999", 41.9, -71.41)],
            vec![
                cust("C1", Some("+14015550101"), Some("c1@example.com"), "02901", "en", "mobile;voice"),
                cust("C2", None, Some("c2@example.com"), "02901", "es-MX", "broadband"),
                cust("C3", Some("+14015550103"), None, "02901", "ru", "voice"),
                cust("FAR", Some("+14015550199"), None, "02999", "en", "mobile"),
                Customer {
                    opt_out: crate::model::OptOut::parse("sms").unwrap(),
                    ..cust("C4", Some("+14015550104"), Some("c4@example.com"), "02901", "en", "voice")
                },
            ],
        )
        .unwrap();
        Planner::new(cfg, Arc::new(rd)).unwrap()
    }

    fn planner() -> Planner {
        planner_with(PlanConfig::default())
    }

    fn incident(kinds: Vec<EventKind>) -> Incident {
        let id = IncidentId("INC-20261123-00000001".into());
        let ev = |seq, kind| IncidentEvent { incident_id: id.clone(), seq, at: t(0), actor: "test".into(), kind };
        let mut inc =
            Incident::open(&ev(1, EventKind::Opened { cause: "mains power failure".into(), detail: None })).unwrap();
        let raised = vec![AlarmRef { alarm_id: "A1".into(), site_id: "S1".into(), at: t(0) }];
        inc.apply(&ev(2, EventKind::AlarmsRaised { alarms: raised })).unwrap();
        for (i, k) in kinds.into_iter().enumerate() {
            inc.apply(&ev(3 + i as u64, k)).unwrap();
        }
        inc
    }

    fn declared() -> EventKind {
        EventKind::Declared { reason: "test".into(), pending: vec![], confirm_joiners: false }
    }

    #[test]
    fn an_opt_out_by_link_stops_that_channel_from_the_next_plan() {
        let p = planner();
        let inc = incident(vec![declared()]);
        let emailed = |p: &Planner| -> Vec<String> {
            let actions = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), t(10)));
            actions.into_iter().filter(|a| a.channel == Channel::Email).map(|a| a.customer_id).collect()
        };
        assert_eq!(emailed(&p), ["C1", "C2", "C4"]);
        p.refdata.opt_outs.record("C1", Channel::Email, t(5)).unwrap();
        assert_eq!(emailed(&p), ["C2", "C4"], "C1 unsubscribed from e-mail");
        let sms = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), t(10)));
        assert!(sms.iter().any(|a| a.customer_id == "C1" && a.channel == Channel::Sms), "SMS still goes");
    }

    #[test]
    fn a_catalan_customer_read_in_spanish_is_recorded_as_spanish() {
        let usd = Money { minor: 3000, currency: Currency::parse("USD").unwrap() };
        let rd = RefData::build(
            vec![Site { site_id: "S1".into(), lat: 41.82, lon: -71.41, radius_km: 2.0, group_id: None }],
            vec![Postcode { postcode: "02901".into(), lat: 41.821, lon: -71.409, population: None, timezone: None }],
            vec![Customer {
                customer_id: "CA1".into(),
                msisdn: Some("+34612345678".into()),
                email: Some("ca1@example.com".into()),
                postcode: "02901".into(),
                language: "ca".into(),
                services: Services::parse("voice").unwrap(),
                opt_out: Default::default(),
                monthly_fee: usd,
                avg_bill_3m: usd,
            }],
        )
        .unwrap();
        let p =
            Planner::new(PlanConfig { default_language: "es".into(), ..PlanConfig::default() }, Arc::new(rd)).unwrap();
        let inc = incident(vec![declared()]);
        let actions = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), t(10)));
        assert_eq!(actions.len(), 2);
        for a in &actions {
            assert!(a.message.as_ref().unwrap().text.contains("avería"), "{a:?}");
            assert_eq!(a.language, "es", "the record names the language of the text, not the customer's tag");
        }
    }

    #[test]
    fn down_plan_covers_the_footprint_once_per_channel_a_customer_has() {
        let p = planner();
        let probable = incident(vec![]);
        let nobody = p.plan_down(&probable, &p.footprint(&probable), t(10));
        assert!(p.actions(&probable, &nobody).is_empty(), "nothing while probable");
        let inc = incident(vec![declared()]);
        let plan = p.plan_down(&inc, &p.footprint(&inc), t(10));
        assert_eq!(plan.postcodes, ["02901"]);
        let actions = p.actions(&inc, &plan);
        let got: Vec<(&str, Channel)> = actions.iter().map(|a| (a.customer_id.as_str(), a.channel)).collect();
        assert_eq!(
            got,
            [
                ("C1", Channel::Sms),
                ("C1", Channel::Email),
                ("C1", Channel::DataGrant),
                ("C2", Channel::Email),
                ("C3", Channel::Sms),
                ("C4", Channel::Email),
            ],
            "C4 opted out of SMS"
        );
        assert!(actions[4].message.as_ref().unwrap().text.contains("авария"), "ru reads Russian");
        assert!(actions[3].message.as_ref().unwrap().text.contains("avería"), "es-MX reads Spanish");
        let langs: Vec<&str> = actions.iter().filter(|a| a.message.is_some()).map(|a| a.language.as_str()).collect();
        assert_eq!(langs, ["en", "en", "es", "ru", "en"], "the record says the language sent: es-MX read es");
        assert_eq!(plan, p.plan_down(&inc, &p.footprint(&inc), t(10)), "plans are deterministic");
        assert_eq!(actions, p.actions(&inc, &plan), "and so are their actions");
        let paged: Vec<Vec<Action>> = p.pages(&inc, &plan, 2).collect();
        assert_eq!(paged.len(), 2, "4 customers, 2 a page");
        assert_eq!(paged.concat(), actions, "pages add up to the whole plan, in order");
        let told = incident(vec![
            declared(),
            EventKind::Planned { phase: Phase::Down, postcodes: plan.postcodes.clone(), actions: 5 },
        ]);
        let again = p.plan_down(&told, &p.footprint(&told), t(20));
        assert!(p.actions(&told, &again).is_empty(), "told postcodes are not told again");
    }

    #[test]
    fn restored_plan_tells_the_told_revokes_data_and_credits_long_outages() {
        let p = planner();
        let planned = EventKind::Planned { phase: Phase::Down, postcodes: vec!["02901".into()], actions: 5 };
        let cleared = EventKind::AlarmsCleared {
            alarms: vec![AlarmRef { alarm_id: "A1".into(), site_id: "S1".into(), at: t(3 * 3600) }],
        };
        let resolved = EventKind::Resolved { restored_at: t(3 * 3600) };
        let inc = incident(vec![declared(), planned.clone(), cleared.clone(), resolved]);
        let plan = p.actions(&inc, &p.plan_restored(&inc, t(4 * 3600)));
        let credits: Vec<&Money> = plan.iter().filter_map(|a| a.credit.as_ref()).map(|c| &c.amount).collect();
        assert_eq!(credits.len(), 4, "every customer in a told postcode, contacts or not");
        assert!(credits.iter().all(|m| m.minor == 13), "30.00 × 3 h / 30 d = 0.125 → 0.13");
        let revoke = plan.iter().find(|a| a.kind == ActionKind::Revoke).unwrap();
        assert_eq!(revoke.until, Some(t(3 * 3600) + chrono::Duration::days(1)));
        assert_eq!(revoke.not_before, revoke.until, "held until then");
        assert!(plan.iter().all(|a| a.customer_id != "FAR"));
        let short = incident(vec![
            declared(),
            planned,
            EventKind::AlarmsCleared {
                alarms: vec![AlarmRef { alarm_id: "A1".into(), site_id: "S1".into(), at: t(600) }],
            },
            EventKind::Resolved { restored_at: t(600) },
        ]);
        let short_plan = p.actions(&short, &p.plan_restored(&short, t(700)));
        assert!(short_plan.iter().all(|a| a.credit.is_none()), "10 min earns no credit");
    }

    #[test]
    fn a_cancellation_after_notice_corrects_and_ends_the_data_without_credit() {
        let p = planner();
        let planned = EventKind::Planned { phase: Phase::Down, postcodes: vec!["02901".into()], actions: 5 };
        let declared_only = incident(vec![declared(), planned.clone()]);
        assert!(p.plan_cancelled(&declared_only, t(60)).postcodes.is_empty(), "nothing while declared");
        let inc = incident(vec![declared(), planned, EventKind::Cancelled { reason: "false alarm".into() }]);
        let plan = p.plan_cancelled(&inc, t(60));
        assert_eq!(plan.postcodes, ["02901"]);
        let actions = p.actions(&inc, &plan);
        let kinds: BTreeSet<(Channel, ActionKind)> = actions.iter().map(|a| (a.channel, a.kind)).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                (Channel::Sms, ActionKind::Cancelled),
                (Channel::Email, ActionKind::Cancelled),
                (Channel::DataGrant, ActionKind::Revoke)
            ])
        );
        let revoke = actions.iter().find(|a| a.kind == ActionKind::Revoke).unwrap();
        assert_eq!(revoke.until, Some(t(0) + chrono::Duration::days(1)), "a grace after the cancellation");
        let sms = actions.iter().find(|a| a.kind == ActionKind::Cancelled && a.customer_id == "C1").unwrap();
        assert_ne!(sms.message.as_ref().unwrap().text, "", "the correction has a text");
    }

    #[test]
    fn ivr_announces_while_declared_and_withdraws_after() {
        let p = planner();
        assert!(p.ivr(&incident(vec![]), &p.footprint(&incident(vec![])), t(0)).is_empty());
        let on = p.ivr(&incident(vec![declared()]), &p.footprint(&incident(vec![declared()])), t(0));
        assert_eq!(on.len(), 1);
        assert_eq!(on[0].region, "029");
        assert!(on[0].active && !on[0].message.is_empty());
        let resolved = incident(vec![declared(), EventKind::Resolved { restored_at: t(5) }]);
        let off = p.ivr(&resolved, &p.footprint(&resolved), t(9));
        assert!(!off[0].active);
    }

    #[test]
    fn ivr_announces_at_declaration_before_a_pending_site_is_confirmed() {
        let p = planner();
        let pending = EventKind::Declared { reason: "test".into(), pending: vec!["S1".into()], confirm_joiners: true };
        let inc = incident(vec![pending.clone()]);
        assert!(p.footprint(&inc).is_empty(), "no customer is told for a pending site");
        let on = p.ivr(&inc, &p.announced(&inc), t(0));
        assert_eq!(on.len(), 1, "the IVR announces in the pending site's region at once");
        assert!(on[0].active);
        let resolved = incident(vec![pending, EventKind::Resolved { restored_at: t(5) }]);
        let off = p.ivr(&resolved, &p.announced(&resolved), t(9));
        assert_eq!(off.len(), 1, "the same area withdraws it");
        assert!(!off[0].active);
    }

    #[test]
    fn each_postcode_is_compensated_for_its_own_window() {
        let p = planner();
        let id = IncidentId("INC-20261123-00000002".into());
        let ev = |seq, kind| IncidentEvent { incident_id: id.clone(), seq, at: t(0), actor: "test".into(), kind };
        let a =
            |site: &str, at| vec![AlarmRef { alarm_id: format!("A-{site}").into(), site_id: site.into(), at: t(at) }];
        let mut inc = Incident::open(&ev(1, EventKind::Opened { cause: "power".into(), detail: None })).unwrap();
        // S1 covers 02901; S9 is not in the inventory (no postcodes).
        inc.apply(&ev(2, EventKind::AlarmsRaised { alarms: a("S1", 0) })).unwrap();
        inc.apply(&ev(3, EventKind::AlarmsRaised { alarms: a("S9", 0) })).unwrap();
        inc.apply(&ev(4, declared())).unwrap();
        inc.apply(&ev(5, EventKind::Planned { phase: Phase::Down, postcodes: vec!["02901".into()], actions: 5 }))
            .unwrap();
        inc.apply(&ev(6, EventKind::AlarmsCleared { alarms: a("S1", 2 * 3600) })).unwrap();
        let windows = p.postcode_windows(&inc);
        assert_eq!(windows.len(), 1);
        assert_eq!(windows.values().next(), Some(&(t(0), Some(t(2 * 3600)))), "02901 is back while S9 is down");
        inc.apply(&ev(7, EventKind::AlarmsCleared { alarms: a("S9", 6 * 3600) })).unwrap();
        inc.apply(&ev(8, EventKind::Resolved { restored_at: t(6 * 3600) })).unwrap();
        let plan = p.actions(&inc, &p.plan_restored(&inc, t(7 * 3600)));
        let credit = plan.iter().find_map(|a| a.credit.as_ref()).unwrap();
        assert_eq!(credit.outage_seconds, 2 * 3600, "its own two hours, not the incident's six");
        assert_eq!(credit.amount.minor, 8, "30.00 × 2 h / 30 d = 0.083 → 0.08");
    }

    #[test]
    fn quiet_hours_end_in_the_local_morning_across_midnight_and_dst() {
        use chrono::TimeZone;
        let q = QuietHoursConfig::default(); // 21:00 → 08:00
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        let utc = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
        // 23:30 in Madrid (CET, UTC+1) → 08:00 CET the next day = 07:00 UTC.
        assert_eq!(quiet_until(&q, madrid, utc(2026, 11, 23, 22, 30)), Some(utc(2026, 11, 24, 7, 0)));
        // 07:59 CET → 08:00 the same day.
        assert_eq!(quiet_until(&q, madrid, utc(2026, 11, 24, 6, 59)), Some(utc(2026, 11, 24, 7, 0)));
        // 08:00 and 20:59 CET are awake hours; 21:00 is quiet.
        assert_eq!(quiet_until(&q, madrid, utc(2026, 11, 24, 7, 0)), None);
        assert_eq!(quiet_until(&q, madrid, utc(2026, 11, 24, 19, 59)), None);
        assert_eq!(quiet_until(&q, madrid, utc(2026, 11, 24, 20, 0)), Some(utc(2026, 11, 25, 7, 0)));
        // In summer (CEST, UTC+2) the same local morning is 06:00 UTC.
        assert_eq!(quiet_until(&q, madrid, utc(2026, 7, 1, 23, 0)), Some(utc(2026, 7, 2, 6, 0)));
        // Quiet hours that do not wrap midnight: 01:00 → 05:00 UTC.
        let night = QuietHoursConfig {
            start: chrono::NaiveTime::from_hms_opt(1, 0, 0).unwrap(),
            end: chrono::NaiveTime::from_hms_opt(5, 0, 0).unwrap(),
            ..q.clone()
        };
        assert_eq!(quiet_until(&night, Tz::UTC, utc(2026, 11, 23, 0, 59)), None);
        assert_eq!(quiet_until(&night, Tz::UTC, utc(2026, 11, 23, 1, 0)), Some(utc(2026, 11, 23, 5, 0)));
        assert_eq!(quiet_until(&night, Tz::UTC, utc(2026, 11, 23, 5, 0)), None);
        // A morning inside the spring-forward gap (02:30 on 29 March 2026
        // does not exist in Madrid) comes an hour later on the wall clock:
        // 03:30 CEST = 01:30 UTC.
        let gap = QuietHoursConfig { end: chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap(), ..q };
        assert_eq!(quiet_until(&gap, madrid, utc(2026, 3, 28, 23, 0)), Some(utc(2026, 3, 29, 1, 30)));
    }

    #[test]
    fn a_postcode_zone_comes_from_the_file_else_its_coordinates_else_the_default() {
        let pc = |p: &str, lat, lon, tz: Option<&str>| Postcode {
            postcode: p.into(),
            lat,
            lon,
            population: None,
            timezone: tz.map(Into::into),
        };
        let postcodes = vec![
            pc("28013", 40.42, -3.70, Some("Europe/Madrid")),
            pc("02901", 41.82, -71.41, Some("America/Providence")), // no such zone
            pc("00000", 0.0, -30.0, None),                          // mid-Atlantic
            pc("08001", 41.38, 2.17, None),                         // Barcelona
        ];
        let rd = RefData::build(vec![], postcodes, vec![]).unwrap();
        let n = rd.postcodes.len();
        let (zones, from) = postcode_zones(&rd, chrono_tz::Europe::Lisbon);
        let zone = |p: &str| zones[rd.postcode_index(p).unwrap() as usize];
        assert_eq!(zone("08001"), chrono_tz::Europe::Madrid, "no zone in the file: by its centroid");
        assert_eq!(zone("28013"), chrono_tz::Europe::Madrid, "the file's zone");
        assert_eq!(zone("02901"), chrono_tz::America::New_York, "an unknown name: by its Providence centroid");
        assert!(zone("00000") != chrono_tz::Europe::Madrid, "at sea: a nautical zone or the default");
        assert_eq!(from.file, 1);
        assert_eq!(from.unknown_in_file, 1);
        assert_eq!(from.coordinates + from.default, n - 1);
    }

    #[test]
    fn at_night_sms_notices_wait_for_the_morning_unless_the_incident_is_severe() {
        let quiet = |severe_customers| PlanConfig {
            quiet_hours: Some(QuietHoursConfig { severe_customers, ..Default::default() }),
            ..PlanConfig::default()
        };
        let inc = incident(vec![declared()]);
        // The postcodes have no zone in the file: theirs is found from
        // their centroids (Providence, America/New_York, EDT in September).
        let morning = Utc.with_ymd_and_hms(2026, 9, 22, 12, 0, 0).unwrap(); // 08:00 EDT
        let night = t(14 * 3600); // 04:13 UTC, 00:13 EDT
        let p = planner_with(quiet(1000));
        let actions = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), night));
        for a in &actions {
            let want = (a.channel == Channel::Sms).then_some(morning);
            assert_eq!(a.not_before, want, "{} {:?}: only SMS waits", a.customer_id, a.channel);
        }
        assert!(actions.iter().any(|a| a.channel == Channel::Sms));
        let day = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), t(0)));
        assert!(day.iter().all(|a| a.not_before.is_none()), "10:13 EDT is not quiet");
        // 4 customers in 02901: with a threshold of 4 the incident is severe.
        let p = planner_with(quiet(4));
        let severe = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), night));
        assert!(severe.iter().all(|a| a.not_before.is_none()), "a severe incident is told at once");
    }

    #[test]
    fn unlimited_data_is_quoted_only_with_an_etr_and_lasts_until_restoration() {
        let p = planner();
        // No ETR: no end quoted; the grant is provisioned for the horizon.
        let inc = incident(vec![declared()]);
        let actions = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), t(60)));
        let sms = actions.iter().find(|a| a.channel == Channel::Sms && a.customer_id == "C1").unwrap();
        assert!(!sms.message.as_ref().unwrap().text.contains("unlimited data until"), "{:?}", sms.message);
        let grant = actions.iter().find(|a| a.channel == Channel::DataGrant).unwrap();
        assert_eq!(grant.until, Some(t(60) + chrono::Duration::days(7)), "the horizon, not now + grace");
        // With an ETR: quoted, and the grant ends at ETR + grace.
        let etr = EventKind::Updated { cause: None, etr: Some(t(3 * 3600)), message: None };
        let inc = incident(vec![declared(), etr]);
        let actions = p.actions(&inc, &p.plan_down(&inc, &p.footprint(&inc), t(60)));
        let sms = actions.iter().find(|a| a.channel == Channel::Sms && a.customer_id == "C1").unwrap();
        assert!(sms.message.as_ref().unwrap().text.contains("unlimited data until"), "{:?}", sms.message);
        let grant = actions.iter().find(|a| a.channel == Channel::DataGrant).unwrap();
        assert_eq!(grant.until, Some(t(3 * 3600) + chrono::Duration::days(1)));
    }

    #[test]
    fn a_new_noc_message_is_an_update_to_those_told_in_every_channel() {
        let p = planner();
        let down = EventKind::Planned { phase: Phase::Down, postcodes: vec!["02901".into()], actions: 5 };
        let say = |m: &str| EventKind::Updated { cause: None, etr: None, message: Some(m.into()) };
        let inc = incident(vec![declared(), down.clone(), say("Crews are on site.")]);
        let plan = p.plan_etr_update(&inc, t(60));
        assert_eq!(plan.postcodes, ["02901"], "a new message goes to the told");
        let actions = p.actions(&inc, &plan);
        for ch in [Channel::Sms, Channel::Email] {
            let a = actions.iter().find(|a| a.channel == ch).unwrap();
            assert!(a.message.as_ref().unwrap().text.contains("Crews are on site."), "{ch:?}: {:?}", a.message);
        }
        let ivr = p.ivr(&inc, &p.footprint(&inc), t(60));
        assert!(ivr[0].message.contains("Crews are on site."), "{}", ivr[0].message);
        // The same words again are no news.
        let told = EventKind::Planned { phase: Phase::EtrUpdate, postcodes: vec!["02901".into()], actions: 5 };
        let same = incident(vec![declared(), down, say("Crews are on site."), told, say("Crews are on site.")]);
        assert!(p.plan_etr_update(&same, t(60)).postcodes.is_empty());
    }

    #[test]
    fn a_restored_notice_names_the_credit_or_promises_nothing() {
        let p = planner();
        let down = EventKind::Planned { phase: Phase::Down, postcodes: vec!["02901".into()], actions: 5 };
        let long = incident(vec![declared(), down.clone(), EventKind::Resolved { restored_at: t(3 * 3600) }]);
        let actions = p.actions(&long, &p.plan_restored(&long, t(3 * 3600)));
        let sms = actions.iter().find(|a| a.channel == Channel::Sms && a.customer_id == "C1").unwrap();
        assert!(sms.message.as_ref().unwrap().text.contains("A credit of $0.13"), "{:?}", sms.message);
        let short = incident(vec![declared(), down, EventKind::Resolved { restored_at: t(600) }]);
        let actions = p.actions(&short, &p.plan_restored(&short, t(600)));
        assert!(actions.iter().all(|a| a.credit.is_none()));
        let sms = actions.iter().find(|a| a.channel == Channel::Sms && a.customer_id == "C1").unwrap();
        assert!(!sms.message.as_ref().unwrap().text.contains("credit"), "no promise: {:?}", sms.message);
        let mail = actions.iter().find(|a| a.channel == Channel::Email && a.customer_id == "C1").unwrap();
        assert!(mail.message.as_ref().unwrap().text.contains("does not qualify"), "{:?}", mail.message);
    }

    #[test]
    fn etr_updates_go_once_per_change_to_the_told_and_not_restored() {
        let p = planner();
        let etr = |h: i64| EventKind::Updated { cause: None, etr: Some(t(h * 3600)), message: None };
        let down = |pc: &str| EventKind::Planned { phase: Phase::Down, postcodes: vec![pc.into()], actions: 5 };
        let update = EventKind::Planned { phase: Phase::EtrUpdate, postcodes: vec!["02901".into()], actions: 5 };
        // An ETR set before anyone was told is in the "down" notices.
        let inc = incident(vec![declared(), etr(4), down("02901")]);
        assert!(p.plan_etr_update(&inc, t(60)).postcodes.is_empty());
        // Changed after: the told postcodes get an update, keyed by the
        // event that changed it (seq 6), once.
        let inc = incident(vec![declared(), down("02901"), etr(4)]);
        let plan = p.plan_etr_update(&inc, t(60));
        assert_eq!(plan.postcodes, ["02901"]);
        let actions = p.actions(&inc, &plan);
        let ids: BTreeSet<&str> = actions.iter().map(|a| a.action_id.as_str()).collect();
        assert!(ids.contains("INC-20261123-00000001/C1/sms/etr_update/5"), "{ids:?}");
        let notices: Vec<&Action> = actions.iter().filter(|a| a.channel != Channel::DataGrant).collect();
        assert!(notices.iter().all(|a| a.kind == ActionKind::EtrUpdate && a.message.is_some()));
        assert!(notices.iter().all(|a| matches!(a.channel, Channel::Sms | Channel::Email)), "no credits");
        // The grants follow the ETR: a versioned extension to ETR + grace.
        let grants: Vec<&Action> = actions.iter().filter(|a| a.channel == Channel::DataGrant).collect();
        assert!(!grants.is_empty() && grants.iter().all(|a| a.kind == ActionKind::Grant));
        assert!(grants.iter().all(|a| a.action_id.ends_with("/data_grant/grant/5")), "{grants:?}");
        assert!(grants.iter().all(|a| a.until == Some(t(4 * 3600) + chrono::Duration::days(1))));
        assert!(grants.iter().all(|a| Action::parse_key(&a.action_id).is_some()), "the key parses");
        let told = incident(vec![declared(), down("02901"), etr(4), update.clone()]);
        assert!(p.plan_etr_update(&told, t(60)).postcodes.is_empty(), "told once");
        let again = incident(vec![declared(), down("02901"), etr(4), update.clone(), etr(6)]);
        let second = p.actions(&again, &p.plan_etr_update(&again, t(60)));
        assert!(second.iter().any(|a| a.action_id.ends_with("/etr_update/7")), "a new change is a new notice");
        let restored = EventKind::Planned { phase: Phase::Restored, postcodes: vec!["02901".into()], actions: 5 };
        let back = incident(vec![declared(), down("02901"), restored, etr(6)]);
        assert!(p.plan_etr_update(&back, t(60)).postcodes.is_empty(), "not to postcodes already restored");
    }
}
