//! Reference data rows: where the network is (sites), where customers are
//! billed (postcodes) and who they are (customers). Loaded by
//! [`crate::refdata`] from CSV.

use super::money::Money;
use serde::{Deserialize, Serialize};

/// A cell site or other network element with a coverage circle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub site_id: String,
    pub lat: f64,
    pub lon: f64,
    /// Coverage radius; two sites whose circles touch are neighbours.
    pub radius_km: f64,
    /// Shared power/backhaul group, when the inventory knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

/// A billing postcode and its centroid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Postcode {
    pub postcode: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<u64>,
    /// IANA zone for local-time rendering and quiet hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Which services a customer subscribes to (a `;`-list in CSV).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Services {
    pub mobile: bool,
    pub voice: bool,
    pub broadband: bool,
}

impl Services {
    /// Parse `mobile;voice;broadband` (any order, any subset, non-empty).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Services::default();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "mobile" => out.mobile = true,
                "voice" => out.voice = true,
                "broadband" => out.broadband = true,
                other => return Err(format!("unknown service {other:?} (expected mobile, voice or broadband)")),
            }
        }
        if out == Services::default() {
            return Err("no service listed".into());
        }
        Ok(out)
    }
}

/// Channels a customer asked not to be contacted on (a `;`-list in CSV:
/// `sms`, `email`). Service notices still reach them on the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OptOut {
    pub sms: bool,
    pub email: bool,
}

impl OptOut {
    /// Parse `sms;email` (any order, any subset, empty for none).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = OptOut::default();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "sms" => out.sms = true,
                "email" => out.email = true,
                other => return Err(format!("unknown channel {other:?} (expected sms or email)")),
            }
        }
        Ok(out)
    }
}

/// A customer as billing knows them. `msisdn` and `email` are personal data:
/// log them only through [`crate::redact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: String,
    /// E.164 number, if the customer has one on file.
    pub msisdn: Option<String>,
    pub email: Option<String>,
    /// Billing postcode: decides whether the customer is in an affected zone.
    pub postcode: String,
    /// BCP 47 tag such as `en`, `es`, `es-MX`.
    pub language: String,
    pub services: Services,
    /// Channels not to send notices on (the CSV's optional `opt_out`).
    #[serde(default)]
    pub opt_out: OptOut,
    pub monthly_fee: Money,
    pub avg_bill_3m: Money,
    /// The day of the month the customer's billing period starts (1–28;
    /// the CSV's optional `billing_cycle_day`); `None`: the configured
    /// default (`compensation.billing_cycle_day`, 1: the calendar month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_cycle_day: Option<u8>,
}
