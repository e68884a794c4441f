//! Incident → audience → actions. Owns the footprint (which billing
//! postcodes an incident covers), who is told what on which channel, what
//! they are given (unlimited data, credits), and the IVR's desired state per
//! region. Pure: the caller passes `now`.
//!
//! A postcode is in the footprint when its centroid lies inside the coverage
//! circle of a site of the incident: DESIGN.md prefers telling a few
//! unaffected customers over leaving affected ones guessing.

use super::compensate::{self, Rule};
use super::templates::{self, MessageContext};
use crate::config::PlanConfig;
use crate::geodesy::GeoPoint;
use crate::model::{Action, ActionKind, Channel, Customer, Incident, IncidentState, IvrUpsert, Message};
use crate::refdata::RefData;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Actions for newly covered postcodes (down) or for everyone told (restored).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub postcodes: Vec<String>,
    pub actions: Vec<Action>,
}

pub struct Planner {
    cfg: PlanConfig,
    refdata: Arc<RefData>,
}

/// Renders each (kind, channel, language) once per plan.
struct Texts<'a> {
    ctx: MessageContext<'a>,
    default_language: &'a str,
    cache: HashMap<(ActionKind, Channel, &'static str), Message>,
}

impl Texts<'_> {
    fn get(&mut self, kind: ActionKind, channel: Channel, tag: &str) -> Message {
        // The template languages are en and es; anything else renders in en.
        let lang: &'static str = if templates::resolve(tag, self.default_language) == "es" { "es" } else { "en" };
        self.cache
            .entry((kind, channel, lang))
            .or_insert_with(|| templates::render(kind, channel, lang, &self.ctx))
            .clone()
    }
}

impl Planner {
    pub fn new(cfg: PlanConfig, refdata: Arc<RefData>) -> Self {
        Planner { cfg, refdata }
    }

    fn texts<'a>(&'a self, inc: &'a Incident) -> Texts<'a> {
        Texts {
            ctx: MessageContext {
                operator_name: &self.cfg.operator_name,
                incident_id: &inc.id.0,
                cause: &inc.cause,
                etr: inc.etr,
                status_url: &self.cfg.status_url,
            },
            default_language: &self.cfg.default_language,
            cache: HashMap::new(),
        }
    }

    /// Postcodes (indexes into `refdata.postcodes`) whose centroid lies in
    /// the coverage of any site of the incident, sorted by postcode.
    pub fn footprint(&self, inc: &Incident) -> Vec<u32> {
        let mut set = BTreeSet::new();
        for site_id in inc.sites.keys() {
            let Some(i) = self.refdata.site_index(site_id) else { continue };
            let s = self.refdata.site(i);
            set.extend(self.refdata.postcodes_within(GeoPoint::new(s.lat, s.lon), s.radius_km));
        }
        let mut v: Vec<u32> = set.into_iter().collect();
        v.sort_by(|a, b| {
            self.refdata.postcodes[*a as usize].postcode.cmp(&self.refdata.postcodes[*b as usize].postcode)
        });
        v
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
        }
    }

    fn customers<'a>(&'a self, postcodes: &'a [String]) -> impl Iterator<Item = &'a Customer> + 'a {
        postcodes.iter().flat_map(|p| self.refdata.customers_in(p).iter().map(|&i| &self.refdata.customers[i as usize]))
    }

    /// Notices and data grants for the footprint's postcodes not told yet.
    pub fn plan_down(&self, inc: &Incident, now: DateTime<Utc>) -> Plan {
        if inc.state != IncidentState::Declared {
            return Plan::default();
        }
        let postcodes: Vec<String> = self
            .footprint(inc)
            .into_iter()
            .map(|i| &self.refdata.postcodes[i as usize].postcode)
            .filter(|p| !inc.notified_postcodes.contains(*p))
            .cloned()
            .collect();
        let mut texts = self.texts(inc);
        let grant_until =
            now + chrono::Duration::from_std(self.cfg.data_grant_grace).unwrap_or(chrono::Duration::days(1));
        let mut actions = Vec::new();
        for c in self.customers(&postcodes) {
            self.notices(inc, c, ActionKind::Down, now, &mut texts, &mut actions);
            if let (true, Some(msisdn)) = (c.services.mobile, &c.msisdn) {
                let mut a = self.action(inc, c, Channel::DataGrant, ActionKind::Grant, now);
                a.to = Some(msisdn.clone());
                a.until = Some(inc.etr.map_or(grant_until, |e| e.max(now) + (grant_until - now)));
                actions.push(a);
            }
        }
        Plan { postcodes, actions }
    }

    fn notices(
        &self,
        inc: &Incident,
        c: &Customer,
        kind: ActionKind,
        now: DateTime<Utc>,
        texts: &mut Texts<'_>,
        out: &mut Vec<Action>,
    ) {
        for (channel, to) in [(Channel::Sms, &c.msisdn), (Channel::Email, &c.email)] {
            if let Some(to) = to {
                let mut a = self.action(inc, c, channel, kind, now);
                a.to = Some(to.clone());
                a.message = Some(texts.get(kind, channel, &c.language));
                out.push(a);
            }
        }
    }

    /// "Restored" notices, data revokes and credits for everyone told.
    pub fn plan_restored(&self, inc: &Incident, now: DateTime<Utc>) -> Plan {
        let Some(restored_at) = inc.restored_at.filter(|_| inc.state == IncidentState::Resolved) else {
            return Plan::default();
        };
        let postcodes: Vec<String> = inc.notified_postcodes.iter().cloned().collect();
        let mut texts = self.texts(inc);
        let grace = chrono::Duration::from_std(self.cfg.data_grant_grace).unwrap_or(chrono::Duration::days(1));
        let mut actions = Vec::new();
        for c in self.customers(&postcodes) {
            self.notices(inc, c, ActionKind::Restored, now, &mut texts, &mut actions);
            if let (true, Some(msisdn)) = (c.services.mobile, &c.msisdn) {
                let mut a = self.action(inc, c, Channel::DataGrant, ActionKind::Revoke, now);
                a.to = Some(msisdn.clone());
                a.until = Some(restored_at + grace);
                actions.push(a);
            }
            if let Some(credit) = compensate::credit(Rule::GoodwillProrated, inc, c, self.cfg.credit_min_outage) {
                let mut a = self.action(inc, c, Channel::Credit, ActionKind::Credit, now);
                a.credit = Some(credit);
                actions.push(a);
            }
        }
        Plan { postcodes, actions }
    }

    /// Desired IVR state of each region (postcode prefix) of the footprint:
    /// announced while declared, withdrawn once resolved or cancelled.
    pub fn ivr(&self, inc: &Incident, now: DateTime<Utc>) -> Vec<IvrUpsert> {
        let active = match inc.state {
            IncidentState::Declared => true,
            IncidentState::Resolved | IncidentState::Cancelled => false,
            _ => return vec![],
        };
        let n = self.cfg.ivr_region_prefix;
        let regions: BTreeSet<String> = self
            .footprint(inc)
            .into_iter()
            .map(|i| self.refdata.postcodes[i as usize].postcode.chars().take(n).collect())
            .collect();
        let lang = templates::resolve(&self.cfg.default_language, "en");
        let texts = self.texts(inc);
        let message = templates::ivr_prompt(active, lang, &texts.ctx);
        let valid_until = if active { inc.etr.unwrap_or(now + chrono::Duration::hours(4)) } else { now };
        regions
            .into_iter()
            .map(|region| IvrUpsert {
                region,
                active,
                message: message.clone(),
                language: lang.to_string(),
                incident_id: inc.id.clone(),
                valid_until,
            })
            .collect()
    }
}
