//! The compensation ledger: each customer's entitlements under a rule whose
//! threshold applies per billing period (RD 899/2009 art. 15 and 16, see
//! [`super::compensate`]), accrued per (customer, rule, billing period),
//! and the credits that become due.
//!
//! Owns the billing period arithmetic ([`period_of`]), the ledger record
//! ([`LedgerRecord`], one per accrued entitlement, on the ledger topic keyed
//! by customer) and the decision ([`Ledger::accrue`]): an entitlement (a
//! [`Credit`] with a `period` and its own share) is added to its period; if
//! the period's entitlements then pass the threshold (more than €1 in all,
//! or more than 6 h inside 08:00–22:00 in all), everything of the period not
//! yet credited is credited at once, with each incident's share in the
//! breakdown. Later entitlements of a period already over its threshold are
//! credited as they come.
//!
//! Pure: no I/O, no clock. The sink (`sinks::billing`) writes each record to
//! the ledger topic and rebuilds the ledger from it ([`Ledger::apply`]);
//! `outagectl replay --credits` runs the same ledger offline and reports what
//! never became due ([`Ledger::below_threshold`]).
//!
//! Invariants: an incident accrues at most once per (customer, rule,
//! period) — a replayed entitlement is a duplicate; the n-th credit of a
//! period has the id [`Credit::period_id_for`]`(customer, rule, period
//! start, n)`, so the same ledger order always gives the same ids; a share
//! is credited at most once.

use crate::model::money::Currency;
use crate::model::{BillingPeriod, Credit, CreditShare, IncidentId, Money};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The billing period (local dates `[start, end)`) holding the local date
/// of `t` in `tz`, for a cycle starting on `cycle_day` (1–28; 1 is the
/// calendar month; anything else is clamped into 1–28).
pub fn period_of(t: DateTime<Utc>, tz: Tz, cycle_day: u8) -> (NaiveDate, NaiveDate) {
    let day = u32::from(cycle_day.clamp(1, 28));
    let d = t.with_timezone(&tz).date_naive();
    let (mut y, mut m) = (d.year(), d.month());
    if d.day() < day {
        (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    }
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    // Days 1–28 exist in every month.
    let start = NaiveDate::from_ymd_opt(y, m, day).unwrap_or(d);
    let end = NaiveDate::from_ymd_opt(ny, nm, day).unwrap_or(d);
    (start, end)
}

/// One accrued entitlement, as written to the ledger topic (keyed by
/// customer): the share, and the credit it made due, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub customer_id: String,
    pub rule_id: String,
    pub service: String,
    pub period: BillingPeriod,
    pub share: CreditShare,
    /// The credit this accrual made due (the period's shares not yet
    /// credited, this one included), or none while under the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credited: Option<Credit>,
}

/// A period whose entitlements (some or all) never became due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BelowThreshold {
    /// Always `below_threshold`, so the line reads apart from a credit.
    pub status: String,
    pub customer_id: String,
    pub rule_id: String,
    pub service: String,
    pub period: BillingPeriod,
    /// The amounts not credited, added up.
    pub amount: Money,
    /// Their seconds inside the daily window, added up (art. 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_window_seconds: Option<i64>,
    pub shares: Vec<CreditShare>,
}

/// One (customer, rule, period): its shares in ledger order, the
/// incidents already credited (by any credit of the period: records read
/// back out of order still credit each share once), and how many credits
/// were made.
#[derive(Debug, Clone)]
struct Account {
    service: String,
    period: BillingPeriod,
    shares: Vec<CreditShare>,
    credited: BTreeSet<IncidentId>,
    credits: u32,
}

impl Account {
    fn holds(&self, incident: &IncidentId) -> bool {
        self.credited.contains(incident) || self.shares.iter().any(|s| &s.incident_id == incident)
    }

    fn open(&self) -> Vec<CreditShare> {
        self.shares.iter().filter(|s| !self.credited.contains(&s.incident_id)).cloned().collect()
    }
}

/// The ledger's state: every account, rebuilt from the records.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    accounts: BTreeMap<(String, String, NaiveDate), Account>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many (customer, rule, period) accounts it holds.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// What accruing `entitlement` (a credit with a `period` and one share)
    /// writes, without changing the ledger: `None` when it is not a period
    /// entitlement or its incident already accrued in that period.
    pub fn accrue(&self, entitlement: &Credit) -> Option<LedgerRecord> {
        let period = entitlement.period.clone()?;
        let share = entitlement.shares.first().cloned().unwrap_or_else(|| CreditShare {
            incident_id: entitlement.incident_id.clone(),
            amount: entitlement.amount,
            outage_start: entitlement.outage_start,
            outage_end: entitlement.outage_end,
            outage_seconds: entitlement.outage_seconds,
            in_window_seconds: None,
            calculation: entitlement.calculation.clone(),
        });
        let key = (entitlement.customer_id.clone(), entitlement.rule_id.clone(), period.start);
        let (mut all, mut open, credits) = match self.accounts.get(&key) {
            Some(a) if a.holds(&share.incident_id) => return None,
            Some(a) => (a.shares.clone(), a.open(), a.credits),
            None => (Vec::new(), Vec::new(), 0),
        };
        let share = once_only(share, &all);
        all.push(share.clone());
        open.push(share.clone());
        let currency = entitlement.amount.currency;
        let credited = (due(&period, &all, currency) && sum(&open, currency).minor > 0).then(|| {
            let c = &entitlement.customer_id;
            period_credit(c, &entitlement.rule_id, &entitlement.service, &period, &all, &open, credits + 1)
        });
        Some(LedgerRecord {
            customer_id: entitlement.customer_id.clone(),
            rule_id: entitlement.rule_id.clone(),
            service: entitlement.service.clone(),
            period,
            share,
            credited,
        })
    }

    /// Take a record into the ledger (as written, or as read back from the
    /// topic on start). A record of an incident already in its period is
    /// ignored.
    pub fn apply(&mut self, r: &LedgerRecord) {
        let key = (r.customer_id.clone(), r.rule_id.clone(), r.period.start);
        let a = self.accounts.entry(key).or_insert_with(|| Account {
            service: r.service.clone(),
            period: r.period.clone(),
            shares: Vec::new(),
            credited: BTreeSet::new(),
            credits: 0,
        });
        if a.shares.iter().any(|s| s.incident_id == r.share.incident_id) {
            return;
        }
        a.shares.push(r.share.clone());
        if let Some(c) = &r.credited {
            a.credited.extend(c.shares.iter().map(|s| s.incident_id.clone()));
            a.credits += 1;
        }
    }

    /// Every account with shares never credited, in (customer, rule,
    /// period) order.
    pub fn below_threshold(&self) -> impl Iterator<Item = BelowThreshold> + '_ {
        self.accounts.iter().filter_map(|((customer, rule, _), a)| {
            let open = a.open();
            let first = open.first()?;
            let window: i64 = open.iter().filter_map(|s| s.in_window_seconds).sum();
            let amount = sum(&open, first.amount.currency);
            Some(BelowThreshold {
                status: "below_threshold".into(),
                customer_id: customer.clone(),
                rule_id: rule.clone(),
                service: a.service.clone(),
                period: a.period.clone(),
                amount,
                in_window_seconds: a.period.in_window_seconds_above.map(|_| window),
                shares: open,
            })
        })
    }
}

/// The shares' amounts added up (a rule's customers are billed in one
/// currency, `currency`).
/// `share` less the time other shares of the account already cover: two
/// incidents over one customer at once (overlapping NOC areas, a split)
/// are one interruption, paid once. The rules are linear in the outage's
/// duration, so the amount (and the seconds in the daily window) shrink in
/// proportion to what is left.
fn once_only(mut share: CreditShare, others: &[CreditShare]) -> CreditShare {
    let (start, end) = (share.outage_start, share.outage_end);
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        others.iter().map(|o| (o.outage_start.max(start), o.outage_end.min(end))).filter(|(a, b)| a < b).collect();
    spans.sort();
    let mut covered = 0i64;
    let mut reach: Option<DateTime<Utc>> = None;
    for (a, b) in spans {
        let a = reach.map_or(a, |r| a.max(r));
        if b > a {
            covered += (b - a).num_seconds();
        }
        reach = Some(reach.map_or(b, |r| r.max(b)));
    }
    let total = share.outage_seconds.max(1);
    if covered <= 0 {
        return share;
    }
    let left = (total - covered).max(0);
    share.amount = Money::new(super::compensate::prorate(share.amount.minor, left, total), share.amount.currency);
    share.in_window_seconds = share.in_window_seconds.map(|w| super::compensate::prorate(w, left, total));
    share.calculation = format!(
        "{}; {covered} s of it already counted in another incident of the period: {left} of {total} s paid",
        share.calculation
    );
    share
}

fn sum(shares: &[CreditShare], currency: Currency) -> Money {
    Money::new(shares.iter().fold(0i64, |t, s| t.saturating_add(s.amount.minor)), currency)
}

/// Whether the period's shares pass its threshold(s).
fn due(p: &BillingPeriod, shares: &[CreditShare], currency: Currency) -> bool {
    let amount = sum(shares, currency).minor;
    let window: i64 = shares.iter().filter_map(|s| s.in_window_seconds).fold(0, i64::saturating_add);
    p.amount_above_minor.is_none_or(|m| amount > m) && p.in_window_seconds_above.is_none_or(|w| window > w)
}

/// The `seq`-th credit of the period: its `open` shares (not yet
/// credited) of `all` (the period's, in ledger order).
fn period_credit(
    customer: &str,
    rule: &str,
    service: &str,
    period: &BillingPeriod,
    all: &[CreditShare],
    open: &[CreditShare],
    seq: u32,
) -> Credit {
    let from = all.len() - open.len();
    let last = &open[open.len() - 1];
    let currency = last.amount.currency;
    let amount = sum(open, currency);
    let total = sum(all, currency);
    let terms: Vec<String> = open.iter().map(|s| format!("{} {}", s.incident_id, s.amount)).collect();
    let threshold = match (period.amount_above_minor, period.in_window_seconds_above) {
        (Some(m), _) => {
            format!("the period's entitlements add up to {total}, more than {}", Money::new(m, total.currency))
        }
        (None, Some(w)) => {
            let window: i64 = all.iter().filter_map(|s| s.in_window_seconds).sum();
            format!("the period's interruptions add up to {window} s between the window's hours, more than {w} s")
        }
        (None, None) => "no period threshold".into(),
    };
    let last_day = period.end.pred_opt().unwrap_or(period.end);
    let earlier = if from > 0 { format!("; {from} earlier share(s) already credited") } else { String::new() };
    let calculation = format!(
        "{rule}, billing period {} to {last_day}: {threshold}, so paid automatically{earlier}; this credit: {} = \
         {amount}",
        period.start,
        terms.join(" + "),
    );
    Credit {
        credit_id: Credit::period_id_for(customer, rule, period.start, seq),
        customer_id: customer.into(),
        incident_id: IncidentId(last.incident_id.0.clone()),
        service: service.into(),
        amount,
        rule_id: rule.into(),
        outage_start: open.iter().map(|s| s.outage_start).min().unwrap_or(last.outage_start),
        outage_end: open.iter().map(|s| s.outage_end).max().unwrap_or(last.outage_end),
        outage_seconds: open.iter().map(|s| s.outage_seconds).sum(),
        calculation,
        period: Some(period.clone()),
        shares: open.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MADRID: Tz = chrono_tz::Europe::Madrid;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn periods_are_calendar_months_or_start_on_the_cycle_day_local_time() {
        // (instant, zone, cycle day, start, end)
        let cases = [
            ("2025-06-02T10:00:00Z", Tz::UTC, 1, "2025-06-01", "2025-07-01"),
            ("2025-06-30T23:59:59Z", Tz::UTC, 1, "2025-06-01", "2025-07-01"),
            // 23:30 UTC on 30 June is 1 July in Madrid: July's period.
            ("2025-06-30T23:30:00Z", MADRID, 1, "2025-07-01", "2025-08-01"),
            ("2025-12-31T12:00:00Z", Tz::UTC, 1, "2025-12-01", "2026-01-01"),
            // Cycle day 15: the 14th is the previous period's last day.
            ("2025-06-14T12:00:00Z", Tz::UTC, 15, "2025-05-15", "2025-06-15"),
            ("2025-06-15T00:00:00Z", Tz::UTC, 15, "2025-06-15", "2025-07-15"),
            ("2025-01-03T00:00:00Z", Tz::UTC, 15, "2024-12-15", "2025-01-15"),
            // Out of range: clamped.
            ("2025-02-28T12:00:00Z", Tz::UTC, 31, "2025-02-28", "2025-03-28"),
            ("2025-02-28T12:00:00Z", Tz::UTC, 0, "2025-02-01", "2025-03-01"),
        ];
        for (t, tz, day, start, end) in cases {
            assert_eq!(period_of(utc(t), tz, day), (date(start), date(end)), "{t} {tz} day {day}");
        }
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    /// An entitlement of `incident` for C1 in the period starting `start`:
    /// an hour's outage on that day, from 10:00 plus two hours per letter
    /// of the incident's last character (INC-A 10:00, INC-B 12:00…), so
    /// distinct incidents never overlap.
    fn entitlement(incident: &str, start: &str, minor: i64, in_window: Option<i64>) -> Credit {
        let s = date(start);
        let period = BillingPeriod {
            start: s,
            end: s.checked_add_months(chrono::Months::new(1)).unwrap(),
            amount_above_minor: in_window.is_none().then_some(100),
            in_window_seconds_above: in_window.map(|_| 6 * 3600),
        };
        let slot = i64::from(incident.bytes().last().unwrap_or(b'A').saturating_sub(b'A'));
        let at = utc(&format!("{start}T10:00:00Z")) + chrono::Duration::hours(2 * slot);
        let share = CreditShare {
            incident_id: IncidentId(incident.into()),
            amount: eur(minor),
            outage_start: at,
            outage_end: at + chrono::Duration::hours(1),
            outage_seconds: 3600,
            in_window_seconds: in_window,
            calculation: format!("{incident}'s share"),
        };
        Credit {
            credit_id: Credit::id_for(&share.incident_id, "C1", "voice", "rule-v2"),
            customer_id: "C1".into(),
            incident_id: share.incident_id.clone(),
            service: "voice".into(),
            amount: share.amount,
            rule_id: "rule-v2".into(),
            outage_start: share.outage_start,
            outage_end: share.outage_end,
            outage_seconds: 3600,
            calculation: share.calculation.clone(),
            period: Some(period),
            shares: vec![share],
        }
    }

    /// Accrue each in turn, as the sink does; the credits made due.
    fn run(ledger: &mut Ledger, es: &[Credit]) -> Vec<Credit> {
        let mut out = Vec::new();
        for e in es {
            if let Some(r) = ledger.accrue(e) {
                ledger.apply(&r);
                out.extend(r.credited);
            }
        }
        out
    }

    #[test]
    fn two_small_amounts_in_one_period_are_one_credit_with_two_shares() {
        let mut l = Ledger::new();
        let got =
            run(&mut l, &[entitlement("INC-A", "2025-06-01", 42, None), entitlement("INC-B", "2025-06-01", 60, None)]);
        assert_eq!(got.len(), 1);
        let c = &got[0];
        assert_eq!(c.amount, eur(102));
        let shares: Vec<(&str, i64)> = c.shares.iter().map(|s| (s.incident_id.0.as_str(), s.amount.minor)).collect();
        assert_eq!(shares, [("INC-A", 42), ("INC-B", 60)]);
        assert_eq!(c.credit_id, Credit::period_id_for("C1", "rule-v2", date("2025-06-01"), 1));
        assert_eq!(c.incident_id.0, "INC-B", "the incident that made it due");
        assert_eq!(c.outage_seconds, 7200);
        assert!(c.calculation.contains("add up to 1.02 EUR, more than 1.00 EUR"), "{}", c.calculation);
        assert!(c.calculation.contains("INC-A 0.42 EUR + INC-B 0.60 EUR = 1.02 EUR"), "{}", c.calculation);
        assert_eq!(l.below_threshold().count(), 0);
        // A third incident in the same period: credited on its own, the 2nd credit.
        let got = run(&mut l, &[entitlement("INC-C", "2025-06-01", 5, None)]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].amount, got[0].shares.len()), (eur(5), 1));
        assert_eq!(got[0].credit_id, Credit::period_id_for("C1", "rule-v2", date("2025-06-01"), 2));
        assert!(got[0].calculation.contains("2 earlier share(s) already credited"), "{}", got[0].calculation);
    }

    #[test]
    fn the_same_across_a_month_boundary_pays_nothing_and_stays_visible() {
        let mut l = Ledger::new();
        let got =
            run(&mut l, &[entitlement("INC-A", "2025-06-01", 42, None), entitlement("INC-B", "2025-07-01", 60, None)]);
        assert!(got.is_empty(), "{got:?}");
        let below: Vec<(NaiveDate, i64)> = l.below_threshold().map(|b| (b.period.start, b.amount.minor)).collect();
        assert_eq!(below, [(date("2025-06-01"), 42), (date("2025-07-01"), 60)]);
        let line = serde_json::to_value(l.below_threshold().next().unwrap()).unwrap();
        assert_eq!(line["status"], "below_threshold");
        assert_eq!(line["shares"][0]["incident_id"], "INC-A");
    }

    #[test]
    fn internet_hours_in_the_window_add_up_over_the_period() {
        // 4 h + 3 h inside 08:00–22:00 in one period: 7 h > 6 h, due; each share's amount.
        let mut l = Ledger::new();
        let got = run(
            &mut l,
            &[
                entitlement("INC-A", "2025-06-01", 17, Some(4 * 3600)),
                entitlement("INC-B", "2025-06-01", 13, Some(3 * 3600)),
            ],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].amount, eur(30));
        assert_eq!(got[0].shares.len(), 2);
        assert!(got[0].calculation.contains("25200 s"), "{}", got[0].calculation);
        // 4 h + 2 h = 6 h exactly: not more than six hours.
        let mut l = Ledger::new();
        let got = run(
            &mut l,
            &[
                entitlement("INC-A", "2025-06-01", 17, Some(4 * 3600)),
                entitlement("INC-B", "2025-06-01", 13, Some(2 * 3600)),
            ],
        );
        assert!(got.is_empty());
        let b = l.below_threshold().next().unwrap();
        assert_eq!((b.amount, b.in_window_seconds), (eur(30), Some(6 * 3600)));
    }

    #[test]
    fn two_incidents_over_one_customer_at_once_are_paid_once() {
        // `e` moved to start at `from` and last `minutes`, its amount `minor`.
        let moved = |mut e: Credit, from: &str, minutes: i64, minor: i64| {
            e.outage_start = utc(from);
            e.outage_end = e.outage_start + chrono::Duration::minutes(minutes);
            e.outage_seconds = minutes * 60;
            e.amount = eur(minor);
            let s = &mut e.shares[0];
            (s.outage_start, s.outage_end, s.outage_seconds, s.amount) =
                (e.outage_start, e.outage_end, e.outage_seconds, e.amount);
            e
        };
        let mut l = Ledger::new();
        // 2 h, and 2 h overlapping its second hour: 3 h of outage, paid once.
        let a = moved(entitlement("INC-A", "2025-06-01", 0, None), "2025-06-03T10:00:00Z", 120, 300);
        let b = moved(entitlement("INC-B", "2025-06-01", 0, None), "2025-06-03T11:00:00Z", 120, 300);
        let got = run(&mut l, &[a, b]);
        let shares: Vec<i64> = got.iter().flat_map(|c| c.shares.iter().map(|s| s.amount.minor)).collect();
        assert_eq!(shares, [300, 150], "{got:?}");
        assert!(got.iter().flat_map(|c| &c.shares).any(|s| s.calculation.contains("already counted")), "{got:?}");
        // A third entirely inside the others: nothing more to pay.
        let c = moved(entitlement("INC-C", "2025-06-01", 0, None), "2025-06-03T10:30:00Z", 30, 75);
        let more = run(&mut l, &[c]);
        assert_eq!(more.iter().map(|c| c.amount.minor).sum::<i64>(), 0, "{more:?}");
    }

    #[test]
    fn a_replay_or_a_restart_never_credits_twice() {
        let es = [entitlement("INC-A", "2025-06-01", 42, None), entitlement("INC-B", "2025-06-01", 60, None)];
        // Written records, read back in order: the same state.
        let mut live = Ledger::new();
        let mut records = Vec::new();
        for e in &es {
            let r = live.accrue(e).unwrap();
            live.apply(&r);
            records.push(serde_json::to_string(&r).unwrap());
        }
        let mut rebuilt = Ledger::new();
        for r in &records {
            rebuilt.apply(&serde_json::from_str(r).unwrap());
        }
        // The replayed plan's entitlements are duplicates, in either ledger.
        for e in &es {
            assert!(live.accrue(e).is_none());
            assert!(rebuilt.accrue(e).is_none());
        }
        // Read back out of order (a retried produce can land late): each share still credited once.
        let mut reversed = Ledger::new();
        for r in records.iter().rev() {
            reversed.apply(&serde_json::from_str(r).unwrap());
        }
        assert_eq!(reversed.below_threshold().count(), 0, "INC-A was credited with INC-B");
        assert!(es.iter().all(|e| reversed.accrue(e).is_none()));
        // A crash after billing took the credit but before the ledger record:
        // the same accrual again gives the same credit id (billing drops it).
        let mut before = Ledger::new();
        before.apply(&serde_json::from_str(&records[0]).unwrap());
        let again = before.accrue(&es[1]).unwrap().credited.unwrap();
        let first: LedgerRecord = serde_json::from_str(&records[1]).unwrap();
        assert_eq!(again.credit_id, first.credited.unwrap().credit_id);
        // Not a period entitlement: not the ledger's.
        let plain = Credit { period: None, ..es[0].clone() };
        assert!(Ledger::new().accrue(&plain).is_none());
    }
}
