//! The normalized alarm: what every input format (native v1, VES, TMF642) is
//! decoded into before correlation. Its JSON form is the native v1 contract,
//! `schemas/alarm.v1.schema.json`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether the alarm condition started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmState {
    Raised,
    Cleared,
}

/// X.733 perceived severity, lower-cased as every feed we accept spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Cleared,
    Warning,
    Minor,
    Major,
    Critical,
}

/// One alarm occurrence on one site, in the native v1 shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// The feed's own id; raise and clear of one condition share it.
    pub alarm_id: String,
    /// The site (cell site, cabinet, exchange) the alarm is about; must be in
    /// the sites reference data or carry coordinates.
    pub site_id: String,
    pub state: AlarmState,
    pub severity: Severity,
    /// The probable cause as the feed's standard names it (X.733/X.721,
    /// 3GPP TS 32.111-2 Annex B, e.g. `powerProblem`, `LOSS_OF_SIGNAL`, or a
    /// vendor code): what classification matches (`transforms::classify`).
    pub probable_cause: String,
    /// The feed's free-text description of this occurrence (VES and
    /// TMF642 `specificProblem`): detail for the NOC, never matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific_problem: Option<String>,
    /// When the condition happened at the network element (event time, UTC).
    pub event_time: DateTime<Utc>,
    /// Coordinates, for sites the reference data does not know yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

impl Alarm {
    /// A raise with severity `cleared` is a clear in all but name (VES NORMAL).
    pub fn is_clear(&self) -> bool {
        self.state == AlarmState::Cleared || self.severity == Severity::Cleared
    }
}
