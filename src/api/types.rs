//! The HTTP API's request and response bodies (`/v1/...`), shared by the
//! server (`api::serve`) and the `outagectl` client (`api::client`).

use crate::model::{IncidentId, IncidentState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One incident as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentView {
    pub id: IncidentId,
    pub state: IncidentState,
    pub cause: String,
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

/// `POST /v1/incidents`: declare an incident over postcodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareRequest {
    pub postcodes: Vec<String>,
    pub cause: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etr: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /v1/impact?postcode=…|msisdn=…|customer_id=…`: the one answer for
/// agents, IVR and chat bots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactResponse {
    /// The postcode asked about, or the customer's.
    pub postcode: String,
    /// The customer's language (BCP 47), or the default for a postcode.
    pub language: String,
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

/// Every error body: `{"error": "..."}` with the HTTP status saying which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
