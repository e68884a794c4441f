//! Compensation: which credit a customer gets for an outage, computed in
//! integer minor units with the calculation spelled out for the bill.
//! Owns the credit rules; each rule has a stable id that goes on the credit
//! (and into its deterministic `credit_id`).
//!
//! Today one goodwill rule; the regulated rules (e.g. Spain's RD 899/2009,
//! voice and internet) are added as further [`Rule`] variants.

use crate::model::{Credit, Customer, Incident, Money};
use chrono::{DateTime, Utc};

/// Seconds in the 30-day month the proration uses.
pub const MONTH_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The monthly fee prorated by the outage time, for every customer.
    GoodwillProrated,
}

impl Rule {
    pub fn id(self) -> &'static str {
        match self {
            Rule::GoodwillProrated => "goodwill-prorated-v1",
        }
    }
}

/// `amount × num / den`, rounded half up, without floating point.
pub fn prorate(amount_minor: i64, num: i64, den: i64) -> i64 {
    let (a, n, d) = (amount_minor as i128, num as i128, den as i128);
    ((2 * a * n + d) / (2 * d)) as i64
}

/// The credit a customer gets under `rule` for an outage of their area from
/// `start` to `end` (the window of the sites covering their postcode), if
/// any: none when the outage is shorter than `min_outage` or rounds to zero.
pub fn credit(
    rule: Rule,
    inc: &Incident,
    customer: &Customer,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    min_outage: std::time::Duration,
) -> Option<Credit> {
    let seconds = (end - start).num_seconds();
    if seconds <= 0 || seconds < min_outage.as_secs() as i64 {
        return None;
    }
    match rule {
        Rule::GoodwillProrated => {
            // One credit per customer, booked on their first service line
            // (billing needs a service); per-service rules come with the
            // regulated rules.
            let s = customer.services;
            let service = if s.mobile {
                "mobile"
            } else if s.voice {
                "voice"
            } else {
                "broadband"
            };
            let fee = customer.monthly_fee;
            let minor = prorate(fee.minor, seconds, MONTH_SECONDS);
            if minor < 1 {
                return None;
            }
            let amount = Money { minor, currency: fee.currency };
            Some(Credit {
                credit_id: Credit::id_for(&inc.id, &customer.customer_id, service, rule.id()),
                customer_id: customer.customer_id.clone(),
                incident_id: inc.id.clone(),
                service: service.into(),
                amount,
                rule_id: rule.id().into(),
                outage_start: start,
                outage_end: end,
                outage_seconds: seconds,
                calculation: format!("{fee} monthly fee × {seconds} s / {MONTH_SECONDS} s, rounded half up = {amount}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proration_is_exact_and_rounds_half_up() {
        // 30.00 for 3 h of a 30-day month: 3000 × 10800 / 2592000 = 12.5 → 13.
        assert_eq!(prorate(3000, 10_800, MONTH_SECONDS), 13);
        assert_eq!(prorate(3000, 10_799, MONTH_SECONDS), 12);
        assert_eq!(prorate(i64::MAX / 2, MONTH_SECONDS, MONTH_SECONDS), i64::MAX / 2, "no overflow");
    }
}
