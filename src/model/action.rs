//! Per-customer actions (the records of the actions topic, keyed by
//! customer), the credit record for billing, and the IVR upsert.
//!
//! Every action carries `action_id`, its idempotency key: deterministic from
//! (incident, customer, channel, kind) and, for what can happen more than
//! once, a version (the n-th ETR update; the round of a postcode that went
//! down again after being told "restored"), so a replayed plan produces
//! the same ids and sinks drop what they already did.

use super::incident::IncidentId;
use super::money::Money;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Email,
    DataGrant,
    Credit,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Sms, Channel::Email, Channel::DataGrant, Channel::Credit];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::DataGrant => "data_grant",
            Channel::Credit => "credit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// "There is an outage in your area" notice.
    Down,
    /// "Service is back" notice, only to those told `down`.
    Restored,
    /// The NOC changed the expected restoration time: to those told `down`.
    EtrUpdate,
    /// The ETR passed and service is not back: "we are still working on
    /// it", once per ETR that passed, to those told `down`.
    StillWorking,
    /// The incident was a false positive: a short correction to those told
    /// `down`.
    Cancelled,
    /// Start temporary unlimited data.
    Grant,
    /// End it after restoration + grace.
    Revoke,
    /// Queue a compensation credit.
    Credit,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Down => "down",
            ActionKind::Restored => "restored",
            ActionKind::EtrUpdate => "etr_update",
            ActionKind::StillWorking => "still_working",
            ActionKind::Cancelled => "cancelled",
            ActionKind::Grant => "grant",
            ActionKind::Revoke => "revoke",
            ActionKind::Credit => "credit",
        }
    }
}

/// A rendered customer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Idempotency key: `{incident}/{customer}/{channel}/{kind}`, with
    /// `/{n}` after `etr_update` and `still_working` (the update's event
    /// seq: each is told once) and after a grant extension,
    /// `/{rule_id}:{service}` after `credit`, and `/r{n}` after the notices,
    /// grants, revokes and credits of a postcode's later round (down again
    /// within the incident after a "restored": `n` is the seq of the
    /// `planned` event that told it "restored").
    pub action_id: String,
    pub incident_id: IncidentId,
    pub customer_id: String,
    pub channel: Channel,
    pub kind: ActionKind,
    /// MSISDN or e-mail address: personal data, never logged in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// For data grants: when the grant ends (restoration + grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<Credit>,
    /// When the planner made the action.
    pub planned_at: DateTime<Utc>,
    /// The dispatcher holds the action until this time: an SMS notice
    /// planned during the customer's local night (quiet hours) until their
    /// local morning; a data revoke until the grant's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// For a follow-up notice (`etr_update`, `still_working`, `restored`,
    /// `cancelled`): the `action_id` of the "down" notice on this channel
    /// it follows, when that is not this incident's own unversioned one (the
    /// customer's thread was opened by another incident, or this is a later
    /// round). The notifier sends a follow-up only where that "down" went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    /// A notice the planner knows will not go out, and why (`opted_out`):
    /// the dispatcher records it as `skipped` on the deliveries record
    /// instead of sending it, so "why did X get nothing?" has an answer.
    /// A notice without a contact (`to` absent) is skipped as `no_contact`
    /// whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
}

impl Action {
    pub fn key(incident: &IncidentId, customer: &str, channel: Channel, kind: ActionKind) -> String {
        format!("{incident}/{customer}/{}/{}", channel.as_str(), kind.as_str())
    }

    /// `key` in round `round` of its postcode (0: the first, unversioned).
    pub fn in_round(key: String, round: u64) -> String {
        if round == 0 {
            key
        } else {
            format!("{key}/r{round}")
        }
    }

    /// The key of the "still working" notice sent when the ETR set by
    /// event `version` passed.
    pub fn still_working_key(incident: &IncidentId, customer: &str, channel: Channel, version: u64) -> String {
        format!("{}/{version}", Self::key(incident, customer, channel, ActionKind::StillWorking))
    }

    /// The key of the `version`-th ETR update notice: a later update is a
    /// new notice, a replayed one is not.
    pub fn etr_update_key(incident: &IncidentId, customer: &str, channel: Channel, version: u64) -> String {
        format!("{}/{version}", Self::key(incident, customer, channel, ActionKind::EtrUpdate))
    }

    /// The key of the `version`-th extension of a data grant (the ETR
    /// moved, so does the grant's end): a later one is a new grant, a
    /// replayed one is not.
    pub fn grant_extension_key(incident: &IncidentId, customer: &str, version: u64) -> String {
        format!("{}/{version}", Self::key(incident, customer, Channel::DataGrant, ActionKind::Grant))
    }

    /// The key of a credit action: a customer may get one per rule and
    /// service.
    pub fn credit_key(incident: &IncidentId, customer: &str, rule_id: &str, service: &str) -> String {
        format!("{}/{rule_id}:{service}", Self::key(incident, customer, Channel::Credit, ActionKind::Credit))
    }

    /// The parts of a [`Action::key`]: (incident, customer, channel, kind).
    pub fn parse_key(key: &str) -> Option<(String, String, Channel, ActionKind)> {
        let mut parts = key.split('/');
        let (incident, customer) = (parts.next()?, parts.next()?);
        let channel = serde_json::from_value(serde_json::Value::String(parts.next()?.into())).ok()?;
        let kind = serde_json::from_value(serde_json::Value::String(parts.next()?.into())).ok()?;
        let round = |v: &str| v.strip_prefix('r').is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0));
        let versioned = matches!(kind, ActionKind::EtrUpdate | ActionKind::StillWorking);
        let rest: Vec<&str> = parts.collect();
        let version_ok = match rest.as_slice() {
            [] => !versioned,
            [v] if versioned => v.parse::<u64>().is_ok(),
            [v] if kind == ActionKind::Grant => v.parse::<u64>().is_ok() || round(v),
            [v] if kind == ActionKind::Credit => !v.is_empty(),
            [v, r] if kind == ActionKind::Credit => !v.is_empty() && round(r),
            [v] => round(v),
            _ => false,
        };
        if !version_ok || incident.is_empty() || customer.is_empty() {
            return None;
        }
        Some((incident.into(), customer.into(), channel, kind))
    }
}

/// A compensation credit as billing consumes it from `billing.credits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credit {
    /// UUID v5 of (incident, customer, service, rule): stable across replays.
    pub credit_id: uuid::Uuid,
    pub customer_id: String,
    pub incident_id: IncidentId,
    pub service: String,
    pub amount: Money,
    pub rule_id: String,
    pub outage_start: DateTime<Utc>,
    pub outage_end: DateTime<Utc>,
    pub outage_seconds: i64,
    /// How the amount was computed, in words and numbers a person can redo.
    pub calculation: String,
    /// For a rule whose threshold applies per billing period (RD 899/2009
    /// art. 15 and 16): the customer's billing period and the threshold.
    /// On an action, the credit is one incident's entitlement for the
    /// ledger (`transforms::ledger`) to accrue; on `billing.credits`, what
    /// became due in that period, with each incident's share in `shares`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<BillingPeriod>,
    /// Each incident's share of a period credit (empty for a credit of a
    /// rule without a period threshold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<CreditShare>,
}

impl Credit {
    pub fn id_for(incident: &IncidentId, customer: &str, service: &str, rule: &str) -> uuid::Uuid {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("credit\u{1f}{incident}\u{1f}{customer}\u{1f}{service}\u{1f}{rule}").as_bytes(),
        )
    }

    /// [`Credit::id_for`] in round `round` of the customer's postcode
    /// (down again after "restored" within the incident): a new outage
    /// window, a new credit; round 0 is the id `id_for` gives.
    pub fn id_in_round(incident: &IncidentId, customer: &str, service: &str, rule: &str, round: u64) -> uuid::Uuid {
        if round == 0 {
            return Self::id_for(incident, customer, service, rule);
        }
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("credit\u{1f}{incident}\u{1f}{customer}\u{1f}{service}\u{1f}{rule}\u{1f}r{round}").as_bytes(),
        )
    }
    /// The id of the `seq`-th credit (1-based) of `customer`'s billing
    /// period starting `period_start` under `rule`: the same on every
    /// replay and restart, as the ledger's order is the topic's.
    pub fn period_id_for(customer: &str, rule: &str, period_start: chrono::NaiveDate, seq: u32) -> uuid::Uuid {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("credit-period\u{1f}{customer}\u{1f}{rule}\u{1f}{period_start}\u{1f}{seq}").as_bytes(),
        )
    }
}

/// A customer's billing period, `[start, end)` in local dates, and the
/// threshold a rule applies to the period's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingPeriod {
    /// First day of the period (local date).
    pub start: chrono::NaiveDate,
    /// First day of the next period (local date): the period ends before it.
    pub end: chrono::NaiveDate,
    /// The period's entitlements are paid when their amounts add up to
    /// more than this (RD 899/2009 art. 15: €1 = 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_above_minor: Option<i64>,
    /// The period's entitlements are paid when their outage seconds inside
    /// the daily window add up to more than this (art. 16: 6 h = 21600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_window_seconds_above: Option<i64>,
}

/// One incident's share of a period credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditShare {
    pub incident_id: IncidentId,
    pub amount: Money,
    pub outage_start: DateTime<Utc>,
    pub outage_end: DateTime<Utc>,
    pub outage_seconds: i64,
    /// Seconds of the outage inside the rule's daily window (art. 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_window_seconds: Option<i64>,
    /// How the share was computed.
    pub calculation: String,
}

/// Desired IVR state for one region (the published upsert contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IvrUpsert {
    pub region: String,
    pub active: bool,
    /// The announcement in `language`, the default (for platforms that
    /// play one language).
    pub message: String,
    pub language: String,
    /// The announcement in every language the templates have, by tag
    /// (the platform plays the caller's; `language` when it has none).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub messages: std::collections::BTreeMap<String, String>,
    pub incident_id: IncidentId,
    pub valid_until: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_only_etr_updates_and_credits_carry_a_suffix() {
        let inc = IncidentId("INC-20261123-0a1b2c3d".into());
        let down = Action::key(&inc, "C1", Channel::Sms, ActionKind::Down);
        assert_eq!(Action::parse_key(&down), Some((inc.to_string(), "C1".into(), Channel::Sms, ActionKind::Down)));
        let etr = Action::etr_update_key(&inc, "C1", Channel::Email, 7);
        assert_eq!(etr, "INC-20261123-0a1b2c3d/C1/email/etr_update/7");
        assert_eq!(
            Action::parse_key(&etr),
            Some((inc.to_string(), "C1".into(), Channel::Email, ActionKind::EtrUpdate))
        );
        let credit = Action::credit_key(&inc, "C1", "es-rd899-art15-voice-v1", "voice");
        assert_eq!(credit, "INC-20261123-0a1b2c3d/C1/credit/credit/es-rd899-art15-voice-v1:voice");
        assert_eq!(
            Action::parse_key(&credit),
            Some((inc.to_string(), "C1".into(), Channel::Credit, ActionKind::Credit))
        );
        for bad in [
            format!("{down}/7"),
            format!("{credit}/x"),
            format!("{inc}/C1/email/etr_update"),
            format!("{inc}/C1/email/etr_update/x"),
            format!("{etr}/1"),
            "/C1/sms/down".to_string(),
            format!("{inc}/C1/fax/down"),
        ] {
            assert_eq!(Action::parse_key(&bad), None, "{bad}");
        }
    }
}
