//! The HTTP API's request and response bodies (`/v1/...`), shared by the
//! server (`api::serve`) and the `outagectl` client (`api::client`).

use crate::model::{Area, IncidentId, IncidentState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One incident as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentView {
    pub id: IncidentId,
    pub state: IncidentState,
    pub cause: String,
    /// The cause in the words customers read (its class, in the default
    /// language), e.g. "a power failure".
    #[serde(default)]
    pub cause_text: String,
    /// The opening alarm's free-text detail (`specificProblem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub declared_at: Option<DateTime<Utc>>,
    pub restored_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Expected restoration time, when the NOC gave one.
    pub etr: Option<DateTime<Utc>>,
    /// The NOC's customer-facing message, if any.
    pub message: Option<String>,
    /// Sites in the incident, and how many are down now.
    pub sites: Vec<String>,
    pub sites_down: usize,
    /// Postcodes in the footprint (declared incidents; told or to be told).
    pub postcodes: Vec<String>,
    pub customers: u64,
    pub links: Vec<IncidentId>,
    /// The area the NOC drew, for an incident declared by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<Area>,
    /// The "down" fan-out waits for an operator's approval.
    #[serde(default)]
    pub awaiting_approval: bool,
    /// The ETR that passed while the incident is still declared, until the
    /// NOC sets a new one: an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etr_passed: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The incident log: the updates a person reads (declared, updated,
    /// resolved, …), oldest first.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// Who: `correlator`, `planner` or the API token's name.
    pub actor: String,
    /// The event type (`declared`, `updated`, …).
    pub kind: String,
    /// In words, e.g. `ETR 2026-11-23T18:00:00Z`.
    pub detail: String,
}

/// `POST /v1/incidents/{id}/update`: what changes (at least one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etr: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/incidents/{id}/cancel`: a false positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: String,
}

/// `POST /v1/incidents`: declare an incident over an area the NOC draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareRequest {
    pub cause: String,
    /// `{"postcodes": [...]}`, `{"sites": [...]}`, `{"polygon": GeoJSON}`
    /// or `{"circle": {"lat", "lon", "radius_km"}}`.
    pub area: Area,
    /// When service went, if before now (compensation counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etr: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/incidents/{id}/link`: the two are one problem; both stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub other: IncidentId,
}

/// `GET /v1/incidents/{id}/preview`: what the "down" fan-out still to go
/// would send, before anyone approves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub id: IncidentId,
    /// The fan-out waits for `POST …/approve`.
    pub awaiting_approval: bool,
    /// Postcodes not told yet, and their customers.
    pub postcodes: u64,
    pub customers: u64,
    /// Actions by channel (`sms`, `email`, `data_grant`).
    pub channels: BTreeMap<String, u64>,
    /// The same per IVR region (postcode prefix).
    pub regions: Vec<RegionPreview>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPreview {
    pub region: String,
    pub postcodes: u64,
    pub customers: u64,
    pub channels: BTreeMap<String, u64>,
}

/// `GET /v1/impact?postcode=…|msisdn=…|customer_id=…`: the one answer for
/// agents, IVR and chat bots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactResponse {
    /// The postcode asked about, or the customer's.
    pub postcode: String,
    /// The customer's language (BCP 47), or the default for a postcode.
    pub language: String,
    /// The customer matched (asked by number or id), so an agent knows
    /// whom they are talking about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub incidents: Vec<ImpactedBy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactedBy {
    pub id: IncidentId,
    pub state: IncidentState,
    pub cause: String,
    pub etr: Option<DateTime<Utc>>,
    /// The agreed customer-facing text, in `language`.
    pub text: String,
}

/// Every error answer's body (`application/problem+json`, RFC 9457
/// problem details): what kind of problem, its status, what happened and
/// the request field to blame, when one is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind, e.g.
    /// `https://schemas.outage.invalid/problems/invalid-field`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind in words, the same for every problem of the kind.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// The request field that failed: a body path (`area.circle.lat`,
    /// `etr`) or a query parameter (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The error body of daemons before problem details (`{"error": "..."}`);
/// the client still reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
