//! STUB — being written. Owns: alarms → incident events (correlation).
use crate::config::CorrelatorConfig;
use crate::model::{Alarm, Incident, IncidentEvent, IncidentId};
use crate::refdata::RefData;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CorrelateError {
    #[error("unknown site {0:?} and the alarm carries no lat/lon")]
    UnknownSite(String),
    #[error(transparent)]
    Apply(#[from] crate::model::incident::ApplyError),
}

pub struct Correlator {
    #[allow(dead_code)]
    cfg: CorrelatorConfig,
    #[allow(dead_code)]
    refdata: Arc<RefData>,
    incidents: HashMap<IncidentId, Incident>,
}

impl Correlator {
    pub fn new(cfg: CorrelatorConfig, refdata: Arc<RefData>) -> Self {
        Correlator { cfg, refdata, incidents: HashMap::new() }
    }
    pub fn restore(&mut self, _ev: &IncidentEvent) -> Result<(), CorrelateError> {
        Ok(())
    }
    pub fn on_alarm(&mut self, _alarm: &Alarm) -> Result<Vec<IncidentEvent>, CorrelateError> {
        Ok(vec![])
    }
    pub fn tick(&mut self, _now: DateTime<Utc>) -> Vec<IncidentEvent> {
        vec![]
    }
    pub fn incident(&self, id: &IncidentId) -> Option<&Incident> {
        self.incidents.get(id)
    }
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }
}
