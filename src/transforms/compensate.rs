//! Compensation: which credits a customer gets for an outage, computed in
//! integer minor units with the calculation spelled out for the bill.
//!
//! Owns the credit rules and their configuration ([`CompensationConfig`], a
//! list of [`RuleConfig`]s, one per jurisdiction/scheme), the engine that
//! applies them ([`credits`]), and the checks of the settings
//! ([`CompensationConfig::validate`]). Each rule has a stable, versioned id
//! ([`RuleConfig::id`]) that goes on the credit and into its deterministic
//! `credit_id`; change the arithmetic of a rule, bump its version.
//!
//! The rules:
//! - `es_rd899_voice`: Spain, RD 899/2009 art. 15 (fixed and mobile voice);
//! - `es_rd899_internet`: Spain, RD 899/2009 art. 16 (internet access);
//! - `uk_auto_comp`: UK, Ofcom automatic compensation for delayed repair;
//! - `flat_goodwill`: a number of days of the monthly fee;
//! - `goodwill_prorated`: the monthly fee prorated by the outage (the
//!   default configuration).
//!
//! What a rule assumes of the data: the outage window is the customer's
//! area's (the sites covering their postcode) and takes down every service
//! the customer has there; a customer has one `monthly_fee` and one
//! `avg_bill_3m` for the whole contract, so a fee-based rule pays **one**
//! credit per customer, booked on the first service of the rule's
//! `services` list the customer has (paying it per service would pay the
//! same fee twice). Only `uk_auto_comp`, whose amount is a fixed sum per
//! day, can pay per service (`per_service`). Rules stack: every configured
//! rule is applied, so list only the ones the operator owes.
//!
//! Rounding: all arithmetic is integer (`i128` inside), never floating
//! point. Each product (`amount × numerator / denominator`) is computed
//! exactly and rounded half up to the currency's minor unit once, at its
//! end ([`prorate`]); a `max` or a threshold is applied to the rounded
//! terms. The calculation strings quote every operand and every rounded
//! term, so a person can redo them by hand.

use crate::model::money::Currency;
use crate::model::{Credit, Customer, Incident, IncidentState, Money};
use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Seconds in the 30-day month the proration uses.
pub const MONTH_SECONDS: i64 = 30 * 86_400;

/// The service names credits are booked on (`Credit::service`).
pub const SERVICES: [&str; 3] = ["mobile", "voice", "broadband"];

/// Rule ids: stable, versioned (they are part of every `credit_id`).
pub const ES_RD899_VOICE_ID: &str = "es-rd899-art15-voice-v1";
pub const ES_RD899_INTERNET_ID: &str = "es-rd899-art16-internet-v1";
pub const UK_AUTO_COMP_ID: &str = "uk-ofcom-auto-comp-v1";
pub const FLAT_GOODWILL_ID: &str = "flat-goodwill-v1";
pub const GOODWILL_PRORATED_ID: &str = "goodwill-prorated-v1";

/// `amount × num / den`, rounded half up, without floating point.
pub fn prorate(amount_minor: i64, num: i64, den: i64) -> i64 {
    let (a, n, d) = (amount_minor as i128, num as i128, den as i128);
    ((2 * a * n + d) / (2 * d)) as i64
}

/// Every credit `customer` gets for an outage of their area over `window`
/// (`(start, end)`, the window of the sites covering their postcode): each
/// configured rule applied in turn, at most one credit per (customer,
/// service, rule).
///
/// - `tz`: the customer's local zone (their postcode's), used by the rules
///   that count local hours or days (`es_rd899_internet`, `uk_auto_comp`).
/// - `force_majeure`: the outage is due to force majeure (changes
///   `es_rd899_voice`, and `uk_auto_comp` when `exempt_under_force_majeure`).
/// - `min_outage`: the goodwill rules' minimum outage unless the rule sets
///   its own; the regulated rules have their own thresholds and ignore it.
///
/// Only a `declared` or `resolved` incident earns credits: a `cancelled`
/// one (declared by mistake) credits nobody, nor does one that was never
/// declared (`probable`, `dismissed`, `merged`). An empty or reversed
/// window earns nothing.
pub fn credits(
    cfg: &CompensationConfig,
    inc: &Incident,
    customer: &Customer,
    window: (DateTime<Utc>, DateTime<Utc>),
    tz: Tz,
    force_majeure: bool,
    min_outage: Duration,
) -> Vec<Credit> {
    if !matches!(inc.state, IncidentState::Declared | IncidentState::Resolved) {
        return vec![];
    }
    let Some(o) = Outage::new(inc, customer, window, tz, force_majeure, min_outage) else {
        return vec![];
    };
    let mut out: Vec<Credit> = Vec::new();
    for rule in &cfg.rules {
        for c in rule.apply(&o) {
            // `validate` rejects a rule listed twice; this keeps the promise
            // of one credit per (service, rule) even without it.
            if !out.iter().any(|x| x.service == c.service && x.rule_id == c.rule_id) {
                out.push(c);
            }
        }
    }
    out
}

/// Which compensation rules apply (`[compensation]` in the config).
///
/// Default: `rules = [{ rule = "goodwill_prorated" }]`, the behaviour before
/// rules were configurable. `rules = []` pays no credits at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompensationConfig {
    /// The rules, applied in order; each kind at most once.
    pub rules: Vec<RuleConfig>,
}

impl Default for CompensationConfig {
    fn default() -> Self {
        CompensationConfig { rules: vec![RuleConfig::GoodwillProrated(GoodwillProrated::default())] }
    }
}

pub use crate::runtime::InvalidSetting;

impl CompensationConfig {
    /// Checks serde cannot express, with keys under `compensation`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.validate_at("compensation")
    }

    /// [`validate`](Self::validate) with keys under `prefix` (e.g.
    /// `plan.compensation` if the section lives there).
    pub fn validate_at(&self, prefix: &str) -> Result<(), InvalidSetting> {
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!("{prefix}.rules[{i}].{field}");
            if let Some(j) = self.rules[..i].iter().position(|r| r.kind() == rule.kind()) {
                return Err(InvalidSetting {
                    key: at("rule"),
                    message: format!("{} is already listed at {prefix}.rules[{j}]", rule.kind()),
                });
            }
            rule.validate().map_err(|(field, message)| InvalidSetting { key: at(field), message })?;
        }
        Ok(())
    }
}

/// One compensation rule and its settings, tagged by `rule`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleConfig {
    /// Spain, RD 899/2009 art. 15: interrupted voice service.
    EsRd899Voice(EsRd899Voice),
    /// Spain, RD 899/2009 art. 16: interrupted internet access.
    EsRd899Internet(EsRd899Internet),
    /// UK, Ofcom automatic compensation for a delayed repair.
    UkAutoComp(UkAutoComp),
    /// A number of days of the monthly fee.
    FlatGoodwill(FlatGoodwill),
    /// The monthly fee prorated by the outage.
    GoodwillProrated(GoodwillProrated),
}

impl RuleConfig {
    /// The stable, versioned id credits of this rule carry.
    pub fn id(&self) -> &'static str {
        match self {
            RuleConfig::EsRd899Voice(_) => ES_RD899_VOICE_ID,
            RuleConfig::EsRd899Internet(_) => ES_RD899_INTERNET_ID,
            RuleConfig::UkAutoComp(_) => UK_AUTO_COMP_ID,
            RuleConfig::FlatGoodwill(_) => FLAT_GOODWILL_ID,
            RuleConfig::GoodwillProrated(_) => GOODWILL_PRORATED_ID,
        }
    }

    /// The `rule` tag in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleConfig::EsRd899Voice(_) => "es_rd899_voice",
            RuleConfig::EsRd899Internet(_) => "es_rd899_internet",
            RuleConfig::UkAutoComp(_) => "uk_auto_comp",
            RuleConfig::FlatGoodwill(_) => "flat_goodwill",
            RuleConfig::GoodwillProrated(_) => "goodwill_prorated",
        }
    }

    /// `Err((field, message))` for an impossible setting.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        match self {
            RuleConfig::EsRd899Voice(r) => {
                check_services(&r.services, &["voice", "mobile"])?;
                if r.min_automatic_minor < 0 {
                    return Err(("min_automatic_minor", "must be at least 0".into()));
                }
            }
            RuleConfig::EsRd899Internet(r) => {
                check_services(&r.services, &["broadband", "mobile"])?;
                if r.window_start >= r.window_end {
                    return Err((
                        "window_end",
                        format!(
                            "{} must be later than window_start {} (the window cannot span midnight)",
                            r.window_end.format("%H:%M"),
                            r.window_start.format("%H:%M")
                        ),
                    ));
                }
            }
            RuleConfig::UkAutoComp(r) => {
                check_services(&r.services, &SERVICES)?;
                if r.daily_amount_minor <= 0 {
                    return Err((
                        "daily_amount_minor",
                        "must be a positive amount in minor units (e.g. 954 pence)".into(),
                    ));
                }
            }
            RuleConfig::FlatGoodwill(r) => {
                if r.days == 0 {
                    return Err(("days", "must be at least 1".into()));
                }
            }
            RuleConfig::GoodwillProrated(_) => {}
        }
        Ok(())
    }

    fn apply(&self, o: &Outage) -> Vec<Credit> {
        match self {
            RuleConfig::EsRd899Voice(r) => r.apply(o),
            RuleConfig::EsRd899Internet(r) => r.apply(o),
            RuleConfig::UkAutoComp(r) => r.apply(o),
            RuleConfig::FlatGoodwill(r) => r.apply(o),
            RuleConfig::GoodwillProrated(r) => r.apply(o),
        }
    }
}

fn check_services(services: &[String], allowed: &[&str]) -> Result<(), (&'static str, String)> {
    if services.is_empty() {
        return Err(("services", "must list at least one service".into()));
    }
    if let Some(s) = services.iter().find(|s| !allowed.contains(&s.as_str())) {
        return Err(("services", format!("{s:?} is not one of {}", allowed.join(", "))));
    }
    Ok(())
}

/// RD 899/2009 art. 15 (Spain): a customer whose telephone service (fixed
/// `voice`, or `mobile` voice) was interrupted gets the larger of
/// - their 3-month average bill (`avg_bill_3m`) prorated by the outage over
///   a 30-day month, and
/// - 5 × their monthly fee prorated likewise;
///
/// under force majeure only the monthly fee prorated (art. 15.2). The
/// credit is paid automatically only when it is more than
/// `min_automatic_minor` (€1: art. 15 says "superior a 1 euro", so exactly
/// €1.00 is not paid). The threshold is checked per incident; adding up the
/// interruptions of a billing period is billing's job.
///
/// One credit per customer (fee and average are per contract), booked on
/// the first of `services` the customer has. Customers billed in another
/// currency than `currency` are not under this rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsRd899Voice {
    /// Services the rule covers, in booking order: `voice` (fixed
    /// telephony) and/or `mobile` (mobile voice). Default
    /// `["voice", "mobile"]`.
    pub services: Vec<String>,
    /// Credits up to and including this many minor units are not paid
    /// automatically. Default 100 (€1.00).
    pub min_automatic_minor: i64,
    /// The currency the rule's customers are billed in. Default `EUR`.
    pub currency: Currency,
}

impl Default for EsRd899Voice {
    fn default() -> Self {
        EsRd899Voice {
            services: vec!["voice".into(), "mobile".into()],
            min_automatic_minor: 100,
            currency: Currency::parse("EUR").unwrap_or_else(|_| unreachable!()),
        }
    }
}

impl EsRd899Voice {
    fn apply(&self, o: &Outage) -> Vec<Credit> {
        let c = o.customer;
        let (fee, avg) = (c.monthly_fee, c.avg_bill_3m);
        let Some(service) = first_covered(c, &self.services) else { return vec![] };
        if fee.currency != self.currency {
            return vec![];
        }
        let s = o.seconds;
        let money = |minor| Money::new(minor, fee.currency);
        let (minor, terms) = if o.force_majeure {
            let m = prorate(fee.minor, s, MONTH_SECONDS);
            (m, format!("force majeure (art. 15.2), monthly fee only: {fee} × {s} / {MONTH_SECONDS} = {}", money(m)))
        } else {
            let five = prorate(fee.minor.saturating_mul(5), s, MONTH_SECONDS);
            let five_text = format!("5 × monthly fee {fee} × {s} / {MONTH_SECONDS} = {}", money(five));
            if avg.currency == fee.currency {
                let a = prorate(avg.minor, s, MONTH_SECONDS);
                let m = a.max(five);
                let avg_text = format!("3-month average bill {avg} × {s} / {MONTH_SECONDS} = {}", money(a));
                (m, format!("max({avg_text}, {five_text}) = {}", money(m)))
            } else {
                (five, format!("{five_text} (3-month average bill in {}, not comparable)", avg.currency))
            }
        };
        let threshold = money(self.min_automatic_minor);
        if minor <= self.min_automatic_minor {
            return vec![];
        }
        let calculation = format!(
            "RD 899/2009 art. 15: outage {} ({s} s) of a 30-day month ({MONTH_SECONDS} s): {terms}, each product \
             rounded half up to {}; more than {threshold}, so paid automatically",
            human(s),
            unit(fee.currency),
        );
        vec![o.credit(service, money(minor), ES_RD899_VOICE_ID, calculation)]
    }
}

/// RD 899/2009 art. 16 (Spain): a customer whose internet access was
/// interrupted for more than `min_hours_in_window` hours counted only
/// between `window_start` and `window_end` local time (each day of the
/// outage, in the customer's zone, so a day of a DST change has its real
/// length) gets the monthly fee prorated by the **whole** interruption ("por
/// el tiempo que hubiera durado la interrupción"), not just its in-window
/// part. Exactly `min_hours_in_window` hours is not enough ("superior a
/// seis horas"). Force majeure does not change it (its credit already is
/// the fee prorated). A local window boundary that falls in a DST gap is
/// the instant the clocks jump; one that falls twice (clocks going back)
/// opens at its first and closes at its second occurrence.
///
/// One credit per customer (the fee is per contract), booked on the first
/// of `services` the customer has. Customers billed in another currency
/// than `currency` are not under this rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsRd899Internet {
    /// Services the rule covers, in booking order: `broadband` and/or
    /// `mobile` (mobile data). Default `["broadband"]`.
    pub services: Vec<String>,
    /// Start of the daily counting window, local time, `HH:MM`. Default
    /// `08:00`.
    pub window_start: NaiveTime,
    /// End of the daily counting window, local time, `HH:MM`; later than
    /// `window_start` (the window does not span midnight). Default `22:00`.
    pub window_end: NaiveTime,
    /// The in-window outage must exceed this many hours. Default 6.
    pub min_hours_in_window: u32,
    /// The currency the rule's customers are billed in. Default `EUR`.
    pub currency: Currency,
}

impl Default for EsRd899Internet {
    fn default() -> Self {
        EsRd899Internet {
            services: vec!["broadband".into()],
            window_start: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
            window_end: NaiveTime::from_hms_opt(22, 0, 0).unwrap_or_default(),
            min_hours_in_window: 6,
            currency: Currency::parse("EUR").unwrap_or_else(|_| unreachable!()),
        }
    }
}

impl EsRd899Internet {
    fn apply(&self, o: &Outage) -> Vec<Credit> {
        let c = o.customer;
        let fee = c.monthly_fee;
        let Some(service) = first_covered(c, &self.services) else { return vec![] };
        if fee.currency != self.currency {
            return vec![];
        }
        let inside = seconds_in_daily_window(o.start, o.end, o.tz, self.window_start, self.window_end);
        if inside <= i64::from(self.min_hours_in_window) * 3600 {
            return vec![];
        }
        let s = o.seconds;
        let minor = prorate(fee.minor, s, MONTH_SECONDS);
        if minor < 1 {
            return vec![];
        }
        let amount = Money::new(minor, fee.currency);
        let calculation = format!(
            "RD 899/2009 art. 16: {} ({inside} s) of the outage fell between {} and {} local time ({}), more than \
             {} h; monthly fee {fee} × the whole outage {} ({s} s) / 30 days ({MONTH_SECONDS} s) = {amount}, \
             rounded half up to {}",
            human(inside),
            self.window_start.format("%H:%M"),
            self.window_end.format("%H:%M"),
            o.tz.name(),
            self.min_hours_in_window,
            human(s),
            unit(fee.currency),
        );
        vec![o.credit(service, amount, ES_RD899_INTERNET_ID, calculation)]
    }
}

/// Ofcom automatic compensation (UK), delayed repair: `daily_amount_minor`
/// for each calendar day the service is still not repaired after two full
/// working days.
///
/// The reading, in the customer's local zone:
/// - a working day is Monday to Friday, except `bank_holidays`;
/// - the day the fault starts never counts (it is not a full day, whatever
///   the hour), so the repair is due by the end (24:00) of the second
///   working day after the fault's day;
/// - the credit is `daily_amount_minor` × the calendar days (weekends and
///   holidays included) from the day after that deadline to the day of
///   restoration, each day counted when the outage reaches into it: a
///   restoration at 00:00 exactly does not start that day.
///
/// E.g. a fault on Monday 10:00 must be repaired by Wednesday 24:00;
/// restored Thursday 09:00 pays 1 day, Friday 00:00 still 1, Friday 00:01
/// 2. The clock starts at the outage start (the network knows at once; no
/// customer report is awaited).
///
/// Customers billed in another currency than `currency` are not under
/// this rule. One credit per customer on the first of `services` they have,
/// or one per covered service with `per_service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UkAutoComp {
    /// Amount per calendar day, in minor units of `currency` (pence), e.g.
    /// 954. Required: Ofcom revises it every April.
    pub daily_amount_minor: i64,
    /// Currency of the amount and of the rule's customers. Default `GBP`.
    #[serde(default = "gbp")]
    pub currency: Currency,
    /// Services the rule covers, in booking order. Default
    /// `["broadband", "voice"]` (the scheme covers landline and broadband).
    #[serde(default = "uk_services")]
    pub services: Vec<String>,
    /// Bank holidays of the customers' nation (`"YYYY-MM-DD"` strings or
    /// bare TOML dates): not working days. Default none.
    #[serde(default, deserialize_with = "dates")]
    pub bank_holidays: Vec<NaiveDate>,
    /// Pay once per covered service the customer has (`true`), or once per
    /// customer on the first (`false`). Default false.
    #[serde(default)]
    pub per_service: bool,
    /// No compensation when the outage is due to force majeure. Default
    /// false (force majeure changes nothing).
    #[serde(default)]
    pub exempt_under_force_majeure: bool,
}

fn gbp() -> Currency {
    Currency::parse("GBP").unwrap_or_else(|_| unreachable!())
}

fn uk_services() -> Vec<String> {
    vec!["broadband".into(), "voice".into()]
}

impl UkAutoComp {
    /// A rule with `daily_amount_minor` and every other setting at its
    /// default.
    pub fn new(daily_amount_minor: i64) -> Self {
        UkAutoComp {
            daily_amount_minor,
            currency: gbp(),
            services: uk_services(),
            bank_holidays: vec![],
            per_service: false,
            exempt_under_force_majeure: false,
        }
    }

    fn is_working_day(&self, d: NaiveDate) -> bool {
        !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !self.bank_holidays.contains(&d)
    }

    /// The two full working days after the fault's day, and the number of
    /// calendar days unrepaired after them.
    fn days_late(&self, o: &Outage) -> Option<([NaiveDate; 2], i64)> {
        let mut day = o.start.with_timezone(&o.tz).date_naive();
        let mut found = Vec::with_capacity(2);
        // Bounded: two working days lie within a fortnight unless nearly
        // every day is a holiday.
        for _ in 0..366 {
            day = day.succ_opt()?;
            if self.is_working_day(day) {
                found.push(day);
                if found.len() == 2 {
                    break;
                }
            }
        }
        let due: [NaiveDate; 2] = found.try_into().ok()?;
        let first_late = due[1].succ_opt()?;
        let end = o.end.with_timezone(&o.tz).naive_local();
        if end <= first_late.and_time(NaiveTime::MIN) {
            return Some((due, 0));
        }
        let last_late = if end.time() == NaiveTime::MIN { end.date().pred_opt()? } else { end.date() };
        Some((due, (last_late - first_late).num_days() + 1))
    }

    fn apply(&self, o: &Outage) -> Vec<Credit> {
        let c = o.customer;
        if (o.force_majeure && self.exempt_under_force_majeure) || c.monthly_fee.currency != self.currency {
            return vec![];
        }
        let services = covered(c, &self.services);
        let services = if self.per_service { &services[..] } else { &services[..services.len().min(1)] };
        if services.is_empty() {
            return vec![];
        }
        let Some((due, days)) = self.days_late(o) else { return vec![] };
        if days < 1 {
            return vec![];
        }
        let daily = Money::new(self.daily_amount_minor, self.currency);
        let amount = Money::new(self.daily_amount_minor.saturating_mul(days), self.currency);
        let local = |t: DateTime<Utc>| t.with_timezone(&o.tz).format("%a %Y-%m-%d %H:%M %Z").to_string();
        let day = |d: NaiveDate| d.format("%a %Y-%m-%d").to_string();
        let first_late = due[1].succ_opt().unwrap_or(due[1]);
        let calculation = format!(
            "Ofcom automatic compensation: fault from {}, repair due by the end of {} (2 full working days: {}, {}); \
             restored {}: {days} calendar day{} late from {} × {daily} a day = {amount}",
            local(o.start),
            day(due[1]),
            day(due[0]),
            day(due[1]),
            local(o.end),
            if days == 1 { "" } else { "s" },
            day(first_late),
        );
        services.iter().map(|s| o.credit(s, amount, UK_AUTO_COMP_ID, calculation.clone())).collect()
    }
}

/// Goodwill: `days` of the monthly fee (`fee × days / 30`, rounded half up)
/// when the outage lasts at least the minimum, one credit per customer on
/// their first service (mobile, voice, broadband).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlatGoodwill {
    /// Days of the monthly fee, at least 1. Default 1.
    pub days: u32,
    /// Shortest outage that earns it, e.g. `"4h"`. Default: the planner's
    /// `credit_min_outage` (the `min_outage` given to [`credits`]).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub min_outage: Option<Duration>,
}

impl Default for FlatGoodwill {
    fn default() -> Self {
        FlatGoodwill { days: 1, min_outage: None }
    }
}

impl FlatGoodwill {
    fn apply(&self, o: &Outage) -> Vec<Credit> {
        let min = self.min_outage.unwrap_or(o.min_outage);
        if o.seconds < min.as_secs() as i64 {
            return vec![];
        }
        let fee = o.customer.monthly_fee;
        let minor = prorate(fee.minor, i64::from(self.days), 30);
        if minor < 1 {
            return vec![];
        }
        let amount = Money::new(minor, fee.currency);
        let days = self.days;
        let calculation = format!(
            "Outage {} ({} s) is at least {}: {days} day{} of the {fee} monthly fee / 30 days = {amount}, rounded half \
             up to {}",
            human(o.seconds),
            o.seconds,
            human(min.as_secs() as i64),
            if days == 1 { "" } else { "s" },
            unit(fee.currency),
        );
        vec![o.credit(first_service(o.customer), amount, FLAT_GOODWILL_ID, calculation)]
    }
}

/// Goodwill: the monthly fee prorated by the outage over a 30-day month
/// (rounded half up), when the outage lasts at least the minimum, one
/// credit per customer on their first service (mobile, voice, broadband).
/// The behaviour before rules were configurable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoodwillProrated {
    /// Shortest outage that earns it, e.g. `"1h"`. Default: the planner's
    /// `credit_min_outage` (the `min_outage` given to [`credits`]).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub min_outage: Option<Duration>,
}

impl GoodwillProrated {
    fn apply(&self, o: &Outage) -> Vec<Credit> {
        let min = self.min_outage.unwrap_or(o.min_outage);
        let seconds = o.seconds;
        if seconds < min.as_secs() as i64 {
            return vec![];
        }
        let fee = o.customer.monthly_fee;
        let minor = prorate(fee.minor, seconds, MONTH_SECONDS);
        if minor < 1 {
            return vec![];
        }
        let amount = Money::new(minor, fee.currency);
        // Unchanged since v1 (credits already issued carry it).
        let calculation = format!("{fee} monthly fee × {seconds} s / {MONTH_SECONDS} s, rounded half up = {amount}");
        vec![o.credit(first_service(o.customer), amount, GOODWILL_PRORATED_ID, calculation)]
    }
}

/// What every rule looks at.
struct Outage<'a> {
    inc: &'a Incident,
    customer: &'a Customer,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// `end - start` in whole seconds, > 0.
    seconds: i64,
    tz: Tz,
    force_majeure: bool,
    min_outage: Duration,
}

impl<'a> Outage<'a> {
    fn new(
        inc: &'a Incident,
        customer: &'a Customer,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        tz: Tz,
        force_majeure: bool,
        min_outage: Duration,
    ) -> Option<Self> {
        let seconds = (end - start).num_seconds();
        (seconds > 0).then_some(Outage { inc, customer, start, end, seconds, tz, force_majeure, min_outage })
    }

    fn credit(&self, service: &str, amount: Money, rule_id: &str, calculation: String) -> Credit {
        Credit {
            credit_id: Credit::id_for(&self.inc.id, &self.customer.customer_id, service, rule_id),
            customer_id: self.customer.customer_id.clone(),
            incident_id: self.inc.id.clone(),
            service: service.into(),
            amount,
            rule_id: rule_id.into(),
            outage_start: self.start,
            outage_end: self.end,
            outage_seconds: self.seconds,
            calculation,
        }
    }
}

fn has_service(c: &Customer, service: &str) -> bool {
    match service {
        "mobile" => c.services.mobile,
        "voice" => c.services.voice,
        "broadband" => c.services.broadband,
        _ => false,
    }
}

/// The services of `wanted` the customer has, in `wanted`'s order, once each.
fn covered<'a>(c: &Customer, wanted: &'a [String]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for s in wanted.iter().map(String::as_str) {
        if has_service(c, s) && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn first_covered<'a>(c: &Customer, wanted: &'a [String]) -> Option<&'a str> {
    wanted.iter().map(String::as_str).find(|s| has_service(c, s))
}

/// The service a per-customer goodwill credit is booked on (billing needs
/// one): mobile, else voice, else broadband.
fn first_service(c: &Customer) -> &'static str {
    let s = c.services;
    if s.mobile {
        "mobile"
    } else if s.voice {
        "voice"
    } else {
        "broadband"
    }
}

/// Seconds of `[start, end)` that fall within `[from, to)` local time of
/// some day in `tz` (`from < to`).
fn seconds_in_daily_window(start: DateTime<Utc>, end: DateTime<Utc>, tz: Tz, from: NaiveTime, to: NaiveTime) -> i64 {
    let (Some(mut day), Some(last)) =
        (start.with_timezone(&tz).date_naive().pred_opt(), end.with_timezone(&tz).date_naive().succ_opt())
    else {
        return 0;
    };
    let mut total = 0;
    while day <= last {
        let open = local_instant(tz, day.and_time(from), false).max(start);
        let close = local_instant(tz, day.and_time(to), true).min(end);
        if close > open {
            total += (close - open).num_seconds();
        }
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    total
}

/// The instant a local wall time happens in `tz`: when it happens twice,
/// the first (or, with `last`, the second); when it does not happen (a DST
/// gap), the instant the clocks jump (the first whole minute after it).
fn local_instant(tz: Tz, t: NaiveDateTime, last: bool) -> DateTime<Utc> {
    match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => d.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => if last { b } else { a }.with_timezone(&Utc),
        LocalResult::None => {
            let mut m = t;
            for _ in 0..(48 * 60) {
                m += chrono::Duration::minutes(1);
                if let Some(d) = tz.from_local_datetime(&m).earliest() {
                    return d.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&t)
        }
    }
}

/// Deserialize dates written `"2025-08-25"` or as bare TOML dates
/// `2025-08-25` (which reach an internally tagged enum as a one-entry map,
/// from `toml` and from figment alike).
fn dates<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<NaiveDate>, D::Error> {
    use serde::de::{self, MapAccess, Unexpected, Visitor};
    struct Date(NaiveDate);
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = NaiveDate;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a date YYYY-MM-DD")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<NaiveDate, E> {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| E::invalid_value(Unexpected::Str(s), &self))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<NaiveDate, A::Error> {
            match (m.next_entry::<String, String>()?, m.next_key::<String>()?) {
                (Some((k, v)), None) if k == "$__toml_private_datetime" => self.visit_str(&v),
                _ => Err(de::Error::invalid_type(Unexpected::Map, &self)),
            }
        }
    }
    impl<'de> Deserialize<'de> for Date {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(V).map(Date)
        }
    }
    Ok(Vec::<Date>::deserialize(d)?.into_iter().map(|d| d.0).collect())
}

/// `3 h 20 min`, `1 d 2 h 5 s`, `0 s`.
fn human(seconds: i64) -> String {
    let parts =
        [(seconds / 86_400, "d"), (seconds % 86_400 / 3600, "h"), (seconds % 3600 / 60, "min"), (seconds % 60, "s")];
    let out: Vec<String> = parts.iter().filter(|(n, _)| *n != 0).map(|(n, u)| format!("{n} {u}")).collect();
    if out.is_empty() {
        "0 s".into()
    } else {
        out.join(" ")
    }
}

/// The currency's minor unit as money, e.g. `0.01 EUR`.
fn unit(c: Currency) -> String {
    Money::new(1, c).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, IncidentEvent, IncidentId, Services};

    #[test]
    fn proration_is_exact_and_rounds_half_up() {
        // 30.00 for 3 h of a 30-day month: 3000 × 10800 / 2592000 = 12.5 → 13.
        assert_eq!(prorate(3000, 10_800, MONTH_SECONDS), 13);
        assert_eq!(prorate(3000, 10_799, MONTH_SECONDS), 12);
        assert_eq!(prorate(i64::MAX / 2, MONTH_SECONDS, MONTH_SECONDS), i64::MAX / 2, "no overflow");
    }

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn incident(state: IncidentState) -> Incident {
        let at = utc("2025-06-02T08:00:00Z");
        let ev = IncidentEvent {
            incident_id: IncidentId("INC-20250602-00000001".into()),
            seq: 1,
            at,
            actor: "correlator".into(),
            kind: EventKind::Opened { cause: "mains power failure".into(), detail: None },
        };
        let mut inc = Incident::open(&ev).unwrap();
        inc.state = state;
        inc
    }

    /// A customer with `services` (`;`-list), fee and 3-month average in
    /// minor units of `currency`.
    fn customer(services: &str, fee: i64, avg: i64, currency: &str) -> Customer {
        Customer {
            customer_id: "C1".into(),
            msisdn: None,
            email: None,
            postcode: "28001".into(),
            language: "es".into(),
            services: Services::parse(services).unwrap(),
            opt_out: Default::default(),
            monthly_fee: Money::new(fee, cur(currency)),
            avg_bill_3m: Money::new(avg, cur(currency)),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// `YYYY-MM-DDTHH:MM` local time in `tz` (unambiguous) as UTC.
    fn local(tz: Tz, s: &str) -> DateTime<Utc> {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap();
        tz.from_local_datetime(&t).single().unwrap().with_timezone(&Utc)
    }

    const MADRID: Tz = chrono_tz::Europe::Madrid;
    const LONDON: Tz = chrono_tz::Europe::London;
    const HOUR: Duration = Duration::from_secs(3600);

    fn run(rule: RuleConfig, c: &Customer, window: (DateTime<Utc>, DateTime<Utc>), tz: Tz, fm: bool) -> Vec<Credit> {
        let cfg = CompensationConfig { rules: vec![rule] };
        credits(&cfg, &incident(IncidentState::Resolved), c, window, tz, fm, HOUR)
    }

    /// Expected (service, minor) credits of a table row.
    type Paid = Vec<(&'static str, i64)>;

    /// (service, minor) of each credit.
    fn paid(credits: &[Credit]) -> Vec<(&str, i64)> {
        credits.iter().map(|c| (c.service.as_str(), c.amount.minor)).collect()
    }

    #[test]
    fn es_rd899_voice_pays_the_larger_term_over_one_euro() {
        let rule = RuleConfig::EsRd899Voice(EsRd899Voice::default());
        let t0 = utc("2025-06-02T10:00:00Z");
        let after = |s: i64| (t0, t0 + chrono::Duration::seconds(s));
        // (services, fee, avg, seconds, force majeure, expected [(service, minor)])
        let cases: Vec<(&str, i64, i64, i64, bool, Paid)> = vec![
            // avg 4200 × 12 000 / 2 592 000 = 19.44… → 19; 5 × 2000 × 12 000 / 2 592 000 = 46.29… → 46;
            // max = 46 ≤ 100: not paid automatically.
            ("voice", 2000, 4200, 12_000, false, vec![]),
            // avg 30 000 × 36 000 / 2 592 000 = 416.66… → 417; 5 × 2000 × 36 000 / 2 592 000 = 138.88… → 139.
            ("voice", 2000, 30_000, 36_000, false, vec![("voice", 417)]),
            // avg 6000 × 86 400 / 2 592 000 = 200; 5 × 5000 × 86 400 / 2 592 000 = 833.33… → 833.
            ("mobile", 5000, 6000, 86_400, false, vec![("mobile", 833)]),
            // Exactly €1: 5 × 3000 × 17 280 / 2 592 000 = 100 (avg 1000 × 17 280 / 2 592 000 = 6.66… → 7);
            // 100 is not more than 100.
            ("voice", 3000, 1000, 17_280, false, vec![]),
            // 5 × 3000 × 17 367 / 2 592 000 = 100.50… → 101 > 100.
            ("voice", 3000, 1000, 17_367, false, vec![("voice", 101)]),
            // Force majeure: fee only, 3000 × 172 800 / 2 592 000 = 200
            // (without it: max(9000 × 172 800 / 2 592 000 = 600, 5 × 200 = 1000)).
            ("voice", 3000, 9000, 172_800, true, vec![("voice", 200)]),
            // Force majeure at the threshold: 3000 × 86 400 / 2 592 000 = 100, not > 100.
            ("voice", 3000, 9000, 86_400, true, vec![]),
            // Both voice services: one credit (fee and average are per contract), on `voice`, listed first.
            ("mobile;voice", 5000, 6000, 86_400, false, vec![("voice", 833)]),
            // Broadband only: not a voice customer.
            ("broadband", 5000, 6000, 86_400, false, vec![]),
        ];
        for (i, (services, fee, avg, secs, fm, want)) in cases.into_iter().enumerate() {
            let got = run(rule.clone(), &customer(services, fee, avg, "EUR"), after(secs), MADRID, fm);
            assert_eq!(paid(&got), want, "case {i}");
            assert!(got.iter().all(|c| c.rule_id == ES_RD899_VOICE_ID && c.outage_seconds == secs), "case {i}");
        }
        // Billed in pounds: not under the Spanish rule.
        assert!(run(rule, &customer("voice", 5000, 6000, "GBP"), after(86_400), MADRID, false).is_empty());
    }

    #[test]
    fn es_rd899_voice_calculation_can_be_redone_by_hand() {
        let rule = RuleConfig::EsRd899Voice(EsRd899Voice { min_automatic_minor: 0, ..Default::default() });
        let t0 = utc("2025-06-02T10:00:00Z");
        let got = run(
            rule.clone(),
            &customer("voice", 2000, 4200, "EUR"),
            (t0, t0 + chrono::Duration::seconds(12_000)),
            MADRID,
            false,
        );
        assert_eq!(
            got[0].calculation,
            "RD 899/2009 art. 15: outage 3 h 20 min (12000 s) of a 30-day month (2592000 s): max(3-month average bill \
             42.00 EUR × 12000 / 2592000 = 0.19 EUR, 5 × monthly fee 20.00 EUR × 12000 / 2592000 = 0.46 EUR) = 0.46 \
             EUR, each product rounded half up to 0.01 EUR; more than 0.00 EUR, so paid automatically"
        );
        let fm = run(rule, &customer("voice", 3000, 9000, "EUR"), (t0, t0 + chrono::Duration::days(2)), MADRID, true);
        assert!(
            fm[0]
                .calculation
                .contains("force majeure (art. 15.2), monthly fee only: 30.00 EUR × 172800 / 2592000 = 2.00 EUR"),
            "{}",
            fm[0].calculation
        );
    }

    #[test]
    fn es_rd899_internet_counts_hours_between_8_and_22_local() {
        let rule = RuleConfig::EsRd899Internet(EsRd899Internet::default());
        let c = customer("broadband;voice", 3000, 4000, "EUR");
        // (local start, local end, expected minor); all Europe/Madrid wall times.
        let cases: Vec<(&str, &str, Option<i64>)> = vec![
            // Overnight 22:00 → 08:00: 10 h out, none of it in the window.
            ("2025-06-02T22:00", "2025-06-03T08:00", None),
            // Exactly 6 h in the window (10:00–16:00): not more than 6 h.
            ("2025-06-02T10:00", "2025-06-02T16:00", None),
            // 6 h 1 min in window: whole outage 21 660 s; 3000 × 21 660 / 2 592 000 = 25.06… → 25.
            ("2025-06-02T10:00", "2025-06-02T16:01", Some(25)),
            // 18:00 → 12:00 next day: 4 h (18–22) + 4 h (08–12) = 8 h in the window;
            // whole outage 18 h = 64 800 s: 3000 × 64 800 / 2 592 000 = 75.
            ("2025-06-02T18:00", "2025-06-03T12:00", Some(75)),
            // Across three nights, 21:00 → 09:00 two days later: 1 + 14 + 1 = 16 h in the window;
            // whole 36 h = 129 600 s: 3000 × 129 600 / 2 592 000 = 150.
            ("2025-06-02T21:00", "2025-06-04T09:00", Some(150)),
            // DST starts 2025-03-30 (02:00 CET → 03:00 CEST): 20:00 → 12:00 is 16 h on the wall, 15 h real;
            // in the window 2 h (20–22) + 4 h (08–12) = 6 h exactly: not more than 6 h.
            ("2025-03-29T20:00", "2025-03-30T12:00", None),
            // Same night to 13:00: 2 + 5 = 7 h in the window; whole outage 16 h real = 57 600 s
            // (17 h on the wall): 3000 × 57 600 / 2 592 000 = 66.66… → 67.
            ("2025-03-29T20:00", "2025-03-30T13:00", Some(67)),
            // DST ends 2025-10-26 (03:00 CEST → 02:00 CET): 21:00 → 14:00 is 17 h on the wall, 18 h real;
            // in the window 1 h + 6 h = 7 h; 3000 × 64 800 / 2 592 000 = 75.
            ("2025-10-25T21:00", "2025-10-26T14:00", Some(75)),
        ];
        for (i, (from, to, want)) in cases.into_iter().enumerate() {
            let got = run(rule.clone(), &c, (local(MADRID, from), local(MADRID, to)), MADRID, false);
            assert_eq!(paid(&got), want.map(|m| ("broadband", m)).into_iter().collect::<Vec<_>>(), "case {i}");
        }
        // Force majeure changes nothing.
        let w = (local(MADRID, "2025-06-02T18:00"), local(MADRID, "2025-06-03T12:00"));
        assert_eq!(paid(&run(rule.clone(), &c, w, MADRID, true)), [("broadband", 75)]);
        // In UTC the same instants are 16:00 → 10:00: 6 h + 2 h = 8 h, still more than 6 h, same credit.
        assert_eq!(paid(&run(rule.clone(), &c, w, Tz::UTC, false)), [("broadband", 75)]);
        // Mobile data only when configured.
        let mobile = customer("mobile", 3000, 4000, "EUR");
        assert!(run(rule, &mobile, w, MADRID, false).is_empty());
        let with_mobile = RuleConfig::EsRd899Internet(EsRd899Internet {
            services: vec!["broadband".into(), "mobile".into()],
            ..Default::default()
        });
        assert_eq!(paid(&run(with_mobile, &mobile, w, MADRID, false)), [("mobile", 75)]);
    }

    #[test]
    fn es_rd899_internet_calculation_names_both_durations() {
        let rule = RuleConfig::EsRd899Internet(EsRd899Internet::default());
        let w = (local(MADRID, "2025-06-02T18:00"), local(MADRID, "2025-06-03T12:00"));
        let got = run(rule, &customer("broadband", 3000, 4000, "EUR"), w, MADRID, false);
        assert_eq!(
            got[0].calculation,
            "RD 899/2009 art. 16: 8 h (28800 s) of the outage fell between 08:00 and 22:00 local time (Europe/Madrid), \
             more than 6 h; monthly fee 30.00 EUR × the whole outage 18 h (64800 s) / 30 days (2592000 s) = 0.75 EUR, \
             rounded half up to 0.01 EUR"
        );
    }

    #[test]
    fn daily_window_handles_dst_gaps_and_repeats() {
        // A window 02:30–04:00 on the spring-forward night opens when the clocks jump (03:00 CEST = 01:00 UTC).
        let (a, b) = (NaiveTime::from_hms_opt(2, 30, 0).unwrap(), NaiveTime::from_hms_opt(4, 0, 0).unwrap());
        let (s, e) = (utc("2025-03-29T12:00:00Z"), utc("2025-03-30T12:00:00Z"));
        assert_eq!(seconds_in_daily_window(s, e, MADRID, a, b), 3600);
        // 02:30–04:00 on the fall-back night: from the first 02:30 (00:30 UTC) to 04:00 CET (03:00 UTC).
        let (s, e) = (utc("2025-10-25T12:00:00Z"), utc("2025-10-26T12:00:00Z"));
        assert_eq!(seconds_in_daily_window(s, e, MADRID, a, b), 2 * 3600 + 1800);
    }

    fn uk(rule: UkAutoComp) -> RuleConfig {
        RuleConfig::UkAutoComp(rule)
    }

    #[test]
    fn uk_auto_comp_pays_each_calendar_day_after_two_full_working_days() {
        let rule = UkAutoComp::new(954);
        let c = customer("broadband;voice", 3000, 3000, "GBP");
        // (local start, local end, expected days); Europe/London.
        let cases: Vec<(&str, &str, i64)> = vec![
            // Mon 2 Jun 10:00: due by the end of Wed 4 Jun (Tue, Wed); restored Wed 23:59: in time.
            ("2025-06-02T10:00", "2025-06-04T23:59", 0),
            // Restored Thu 5 Jun 09:00: 1 day (Thu) × 954 = 954.
            ("2025-06-02T10:00", "2025-06-05T09:00", 1),
            // Restored Fri 6 Jun 00:00 exactly: Fri is not started, 1 day.
            ("2025-06-02T10:00", "2025-06-06T00:00", 1),
            // Restored Fri 00:01: Thu + Fri = 2 days × 954 = 1908.
            ("2025-06-02T10:00", "2025-06-06T00:01", 2),
            // Fault Mon 00:00 exactly: Mon still does not count, same deadline (end of Wed).
            ("2025-06-02T00:00", "2025-06-05T09:00", 1),
            // Weekend: fault Thu 5 Jun 15:00, working days Fri 6 and Mon 9; restored Mon 20:00: in time.
            ("2025-06-05T15:00", "2025-06-09T20:00", 0),
            // ... restored Wed 11 Jun 10:00: Tue + Wed = 2 days.
            ("2025-06-05T15:00", "2025-06-11T10:00", 2),
            // Fault Fri 6 Jun: due end of Tue 10; restored Sun 15 Jun 12:00: Wed–Sun = 5 calendar days × 954 = 4770.
            ("2025-06-06T10:00", "2025-06-15T12:00", 5),
            // Fault Sat 7 Jun: due end of Tue 10 (Mon, Tue); restored Wed 11 08:00: 1 day.
            ("2025-06-07T10:00", "2025-06-11T08:00", 1),
            // Across the clocks going back (Sun 26 Oct): fault Fri 24 Oct 09:00 BST, due end of Tue 28
            // (Mon 27, Tue 28); restored Wed 29 00:30 GMT: 1 day.
            ("2025-10-24T09:00", "2025-10-29T00:30", 1),
        ];
        for (i, (from, to, days)) in cases.into_iter().enumerate() {
            let got = run(uk(rule.clone()), &c, (local(LONDON, from), local(LONDON, to)), LONDON, false);
            let want: Vec<(&str, i64)> = if days > 0 { vec![("broadband", 954 * days)] } else { vec![] };
            assert_eq!(paid(&got), want, "case {i}");
        }
    }

    #[test]
    fn uk_auto_comp_skips_bank_holidays_and_knows_its_customers() {
        let c = customer("broadband;voice", 3000, 3000, "GBP");
        let holiday = NaiveDate::from_ymd_opt(2025, 8, 25).unwrap(); // Summer bank holiday, Mon 25 Aug 2025.
        let with_holiday = UkAutoComp { bank_holidays: vec![holiday], ..UkAutoComp::new(954) };
        // Fault Fri 22 Aug; restored Thu 28 Aug 12:00.
        let w = (local(LONDON, "2025-08-22T10:00"), local(LONDON, "2025-08-28T12:00"));
        // With the holiday: working days Tue 26, Wed 27; late Thu 28 only: 1 × 954.
        assert_eq!(paid(&run(uk(with_holiday.clone()), &c, w, LONDON, false)), [("broadband", 954)]);
        // Without it: Mon 25, Tue 26; late Wed 27 and Thu 28: 2 × 954 = 1908.
        assert_eq!(paid(&run(uk(UkAutoComp::new(954)), &c, w, LONDON, false)), [("broadband", 1908)]);
        // Per service: one credit for each of broadband and voice.
        let per = UkAutoComp { per_service: true, ..with_holiday.clone() };
        assert_eq!(paid(&run(uk(per), &c, w, LONDON, false)), [("broadband", 954), ("voice", 954)]);
        // Force majeure: paid unless the operator exempts it.
        assert_eq!(paid(&run(uk(with_holiday.clone()), &c, w, LONDON, true)), [("broadband", 954)]);
        let exempt = UkAutoComp { exempt_under_force_majeure: true, ..with_holiday.clone() };
        assert!(run(uk(exempt), &c, w, LONDON, true).is_empty());
        // Mobile only is not covered by default; a customer billed in euros is not a UK customer.
        assert!(run(uk(with_holiday.clone()), &customer("mobile", 3000, 3000, "GBP"), w, LONDON, false).is_empty());
        assert!(run(uk(with_holiday.clone()), &customer("broadband", 3000, 3000, "EUR"), w, LONDON, false).is_empty());
        let got = run(uk(with_holiday), &c, w, LONDON, false);
        assert_eq!(
            got[0].calculation,
            "Ofcom automatic compensation: fault from Fri 2025-08-22 10:00 BST, repair due by the end of Wed \
             2025-08-27 (2 full working days: Tue 2025-08-26, Wed 2025-08-27); restored Thu 2025-08-28 12:00 BST: \
             1 calendar day late from Thu 2025-08-28 × 9.54 GBP a day = 9.54 GBP"
        );
        assert_eq!(got[0].amount.currency, cur("GBP"));
    }

    #[test]
    fn flat_goodwill_pays_days_of_the_fee() {
        let t0 = utc("2025-06-02T10:00:00Z");
        let after = |s: i64| (t0, t0 + chrono::Duration::seconds(s));
        // (days, rule min_outage in hours (0: the planner's 1 h), services, fee, seconds, expected)
        let cases: Vec<(u32, u32, &str, i64, i64, Paid)> = vec![
            // 30 min < 1 h (the planner's minimum): nothing.
            (1, 0, "mobile", 2000, 1800, vec![]),
            // Exactly 1 h: 2000 × 1 / 30 = 66.66… → 67.
            (1, 0, "mobile", 2000, 3600, vec![("mobile", 67)]),
            // 3 days: 2000 × 3 / 30 = 200; on voice, the first of voice and broadband.
            (3, 0, "broadband;voice", 2000, 7200, vec![("voice", 200)]),
            // 10 × 1 / 30 = 0.33… → 0: nothing.
            (1, 0, "mobile", 10, 7200, vec![]),
            // The rule's own minimum (4 h) wins over the planner's: 3 h is not enough ...
            (1, 4, "mobile", 2000, 3 * 3600, vec![]),
            // ... 4 h is: 2000 × 1 / 30 → 67.
            (1, 4, "mobile", 2000, 4 * 3600, vec![("mobile", 67)]),
            // 15 × 3000 / 30 = 1500 (half a month).
            (15, 0, "broadband", 3000, 7200, vec![("broadband", 1500)]),
        ];
        for (i, (days, min_outage, services, fee, secs, want)) in cases.into_iter().enumerate() {
            let min_outage = (min_outage > 0).then(|| min_outage * HOUR);
            let rule = RuleConfig::FlatGoodwill(FlatGoodwill { days, min_outage });
            let got = run(rule, &customer(services, fee, 0, "USD"), after(secs), Tz::UTC, false);
            assert_eq!(paid(&got), want, "case {i}");
        }
        let got = run(
            RuleConfig::FlatGoodwill(FlatGoodwill::default()),
            &customer("mobile", 4000, 0, "USD"),
            after(20_122),
            Tz::UTC,
            false,
        );
        assert_eq!(
            got[0].calculation,
            "Outage 5 h 35 min 22 s (20122 s) is at least 1 h: 1 day of the 40.00 USD monthly fee / 30 days = 1.33 USD, \
             rounded half up to 0.01 USD"
        );
    }

    #[test]
    fn goodwill_prorated_is_the_default_and_the_old_api() {
        let t0 = utc("2025-06-02T10:00:00Z");
        let after = |s: i64| (t0, t0 + chrono::Duration::seconds(s));
        let inc = incident(IncidentState::Resolved);
        // (services, fee, seconds, expected)
        let cases: Vec<(&str, i64, i64, Paid)> = vec![
            // 3000 × 10 800 / 2 592 000 = 12.5 → 13, on mobile (first of mobile, voice, broadband).
            ("broadband;mobile", 3000, 10_800, vec![("mobile", 13)]),
            // 3000 × 10 799 / 2 592 000 = 12.49… → 12, on voice.
            ("voice;broadband", 3000, 10_799, vec![("voice", 12)]),
            // 59 min < 1 h: nothing.
            ("broadband", 3000, 3540, vec![]),
            // 100 × 3600 / 2 592 000 = 0.13… → 0: nothing.
            ("broadband", 100, 3600, vec![]),
            // 6000 × 2 592 000 / 2 592 000 = 6000: a full month.
            ("broadband", 6000, MONTH_SECONDS, vec![("broadband", 6000)]),
        ];
        for (i, (services, fee, secs, want)) in cases.into_iter().enumerate() {
            let c = customer(services, fee, 0, "USD");
            let got = credits(&CompensationConfig::default(), &inc, &c, after(secs), Tz::UTC, false, HOUR);
            assert_eq!(paid(&got), want, "case {i}");
        }
        let c = customer("mobile", 3000, 0, "USD");
        let got = credits(&CompensationConfig::default(), &inc, &c, after(10_800), Tz::UTC, false, HOUR).remove(0);
        assert_eq!(got.calculation, "30.00 USD monthly fee × 10800 s / 2592000 s, rounded half up = 0.13 USD");
        assert_eq!(got.rule_id, "goodwill-prorated-v1");
        assert_eq!(got.credit_id, Credit::id_for(&inc.id, "C1", "mobile", "goodwill-prorated-v1"));
        // Force majeure does not change goodwill.
        let cfg = CompensationConfig::default();
        assert_eq!(paid(&credits(&cfg, &inc, &c, after(10_800), Tz::UTC, true, HOUR)), [("mobile", 13)]);
    }

    #[test]
    fn only_declared_or_resolved_incidents_credit_and_rules_stack() {
        let cfg = CompensationConfig {
            rules: vec![
                RuleConfig::EsRd899Voice(EsRd899Voice::default()),
                RuleConfig::EsRd899Internet(EsRd899Internet::default()),
                RuleConfig::GoodwillProrated(GoodwillProrated::default()),
            ],
        };
        let c = customer("voice;broadband", 3000, 9000, "EUR");
        let w = (local(MADRID, "2025-06-02T08:00"), local(MADRID, "2025-06-03T08:00"));
        for state in
            [IncidentState::Cancelled, IncidentState::Dismissed, IncidentState::Merged, IncidentState::Probable]
        {
            assert!(credits(&cfg, &incident(state), &c, w, MADRID, false, HOUR).is_empty(), "{state:?}");
        }
        // 24 h = 86 400 s. Voice: max(9000 × 86 400 / 2 592 000 = 300, 5 × 3000 / 30 = 500) = 500.
        // Internet: 14 h in the window > 6 h; 3000 × 86 400 / 2 592 000 = 100. Goodwill: the same 100, on voice.
        for state in [IncidentState::Declared, IncidentState::Resolved] {
            let got = credits(&cfg, &incident(state), &c, w, MADRID, false, HOUR);
            assert_eq!(paid(&got), [("voice", 500), ("broadband", 100), ("voice", 100)], "{state:?}");
            let ids: Vec<&str> = got.iter().map(|c| c.rule_id.as_str()).collect();
            assert_eq!(ids, [ES_RD899_VOICE_ID, ES_RD899_INTERNET_ID, GOODWILL_PRORATED_ID]);
        }
        // An empty or reversed window earns nothing.
        let inc = incident(IncidentState::Resolved);
        assert!(credits(&cfg, &inc, &c, (w.1, w.0), MADRID, false, HOUR).is_empty());
        assert!(credits(&cfg, &inc, &c, (w.0, w.0), MADRID, false, HOUR).is_empty());
        // A rule listed twice still credits once.
        let twice = CompensationConfig { rules: vec![cfg.rules[0].clone(), cfg.rules[0].clone()] };
        assert_eq!(credits(&twice, &inc, &c, w, MADRID, false, HOUR).len(), 1);
    }

    /// `[compensation]` as it sits in the daemon's config file.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        compensation: CompensationConfig,
    }

    const EXAMPLE: &str = r#"
[[compensation.rules]]
rule = "es_rd899_voice"
min_automatic_minor = 100

[[compensation.rules]]
rule = "es_rd899_internet"
window_start = "08:00"
window_end = "22:00"
min_hours_in_window = 6
services = ["broadband", "mobile"]

[[compensation.rules]]
rule = "uk_auto_comp"
daily_amount_minor = 954
currency = "GBP"
bank_holidays = ["2025-08-25", 2025-12-25, 2025-12-26]

[[compensation.rules]]
rule = "flat_goodwill"
days = 2
min_outage = "4h"
"#;

    #[test]
    fn config_round_trips_through_toml() {
        let f: File = toml::from_str(EXAMPLE).unwrap();
        let rules = &f.compensation.rules;
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[0], RuleConfig::EsRd899Voice(EsRd899Voice::default()));
        let RuleConfig::EsRd899Internet(net) = &rules[1] else { panic!("{:?}", rules[1]) };
        assert_eq!(net.services, ["broadband", "mobile"]);
        assert_eq!(net.currency, cur("EUR"), "defaulted");
        let RuleConfig::UkAutoComp(uk) = &rules[2] else { panic!("{:?}", rules[2]) };
        assert_eq!(uk.bank_holidays.len(), 3);
        assert_eq!(uk.services, ["broadband", "voice"], "defaulted");
        assert_eq!(rules[3], RuleConfig::FlatGoodwill(FlatGoodwill { days: 2, min_outage: Some(4 * HOUR) }));
        f.compensation.validate().unwrap();
        let ids: Vec<&str> = rules.iter().map(RuleConfig::id).collect();
        assert_eq!(ids, [ES_RD899_VOICE_ID, ES_RD899_INTERNET_ID, UK_AUTO_COMP_ID, FLAT_GOODWILL_ID]);

        let text = toml::to_string(&f).unwrap();
        assert_eq!(toml::from_str::<File>(&text).unwrap(), f, "{text}");

        // Absent section: the default, goodwill_prorated.
        let empty: File = toml::from_str("").unwrap();
        assert_eq!(empty.compensation, CompensationConfig::default());
        assert_eq!(toml::from_str::<File>(&toml::to_string(&empty).unwrap()).unwrap(), empty);
        // An empty list pays nothing.
        let none: File = toml::from_str("[compensation]\nrules = []").unwrap();
        assert!(none.compensation.rules.is_empty());
    }

    #[test]
    fn config_errors_name_the_bad_key() {
        let typo = "[[compensation.rules]]\nrule = \"es_rd899_internet\"\nwindow_strat = \"08:00\"\n";
        let e = toml::from_str::<File>(typo).unwrap_err().to_string();
        assert!(e.contains("unknown field `window_strat`"), "{e}");
        let unknown = "[[compensation.rules]]\nrule = \"es_rd899\"\n";
        let e = toml::from_str::<File>(unknown).unwrap_err().to_string();
        assert!(e.contains("unknown variant `es_rd899`"), "{e}");
        let missing = "[[compensation.rules]]\nrule = \"uk_auto_comp\"\n";
        let e = toml::from_str::<File>(missing).unwrap_err().to_string();
        assert!(e.contains("missing field `daily_amount_minor`"), "{e}");
        let currency =
            "[[compensation.rules]]\nrule = \"uk_auto_comp\"\ndaily_amount_minor = 954\ncurrency = \"gbp\"\n";
        let e = toml::from_str::<File>(currency).unwrap_err().to_string();
        assert!(e.contains("ISO 4217"), "{e}");

        // (toml, bad key, message part)
        let cases = [
            (
                "[[compensation.rules]]\nrule = \"goodwill_prorated\"\n[[compensation.rules]]\nrule = \"es_rd899_internet\"\nwindow_start = \"22:00\"\nwindow_end = \"08:00\"\n",
                "compensation.rules[1].window_end",
                "must be later than window_start 22:00",
            ),
            (
                "[[compensation.rules]]\nrule = \"es_rd899_internet\"\nwindow_start = \"08:00\"\nwindow_end = \"08:00\"\n",
                "compensation.rules[0].window_end",
                "must be later",
            ),
            ("[[compensation.rules]]\nrule = \"uk_auto_comp\"\ndaily_amount_minor = -954\n", "compensation.rules[0].daily_amount_minor", "positive"),
            ("[[compensation.rules]]\nrule = \"flat_goodwill\"\ndays = 0\n", "compensation.rules[0].days", "at least 1"),
            ("[[compensation.rules]]\nrule = \"es_rd899_voice\"\nmin_automatic_minor = -1\n", "compensation.rules[0].min_automatic_minor", "at least 0"),
            ("[[compensation.rules]]\nrule = \"es_rd899_voice\"\nservices = [\"broadband\"]\n", "compensation.rules[0].services", "\"broadband\" is not one of voice, mobile"),
            ("[[compensation.rules]]\nrule = \"es_rd899_internet\"\nservices = []\n", "compensation.rules[0].services", "at least one"),
            (
                "[[compensation.rules]]\nrule = \"flat_goodwill\"\n[[compensation.rules]]\nrule = \"flat_goodwill\"\ndays = 2\n",
                "compensation.rules[1].rule",
                "flat_goodwill is already listed at compensation.rules[0]",
            ),
        ];
        for (text, key, message) in cases {
            let f: File = toml::from_str(text).unwrap();
            let e = f.compensation.validate().unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.message.contains(message), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("`{key}`: ")), "{e}");
        }
        let f: File = toml::from_str(cases[0].0).unwrap();
        assert_eq!(
            f.compensation.validate_at("plan.compensation").unwrap_err().key,
            "plan.compensation.rules[1].window_end"
        );
    }

    #[test]
    fn config_loads_through_figment_like_the_daemon_config() {
        use figment::providers::{Format, Serialized, Toml};
        // As `Config::load` does: serialized defaults, then the file merged over them.
        let defaults =
            figment::Figment::from(Serialized::defaults(File { compensation: CompensationConfig::default() }));
        let f: File = defaults.clone().merge(Toml::string(EXAMPLE)).extract().unwrap();
        assert_eq!(f, toml::from_str::<File>(EXAMPLE).unwrap(), "the file's list replaces the default one");
        let d: File = defaults.clone().extract().unwrap();
        assert_eq!(d.compensation, CompensationConfig::default());
        let e = defaults.clone().merge(Toml::string("[[compensation.rules]]\nrule = \"flat_goodwill\"\nday = 2\n"));
        let e = e.extract::<File>().unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("day"), "{e}");
        let bad =
            "[[compensation.rules]]\nrule = \"uk_auto_comp\"\ndaily_amount_minor = 954\nbank_holidays = [2025-08-32]\n";
        assert!(toml::from_str::<File>(bad).is_err());
        let bad = "[[compensation.rules]]\nrule = \"uk_auto_comp\"\ndaily_amount_minor = 954\nbank_holidays = [\"25/08/2025\"]\n";
        let e = toml::from_str::<File>(bad).unwrap_err().to_string();
        assert!(e.contains("a date YYYY-MM-DD"), "{e}");
    }
}
