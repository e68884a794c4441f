//! STUB — being written. Owns: incident → audience → actions.
use crate::config::PlanConfig;
use crate::model::{Action, Incident, IvrUpsert};
use crate::refdata::RefData;
use chrono::{DateTime, Utc};
use std::sync::Arc;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub postcodes: Vec<String>,
    pub actions: Vec<Action>,
}

pub struct Planner {
    #[allow(dead_code)]
    cfg: PlanConfig,
    #[allow(dead_code)]
    refdata: Arc<RefData>,
}

impl Planner {
    pub fn new(cfg: PlanConfig, refdata: Arc<RefData>) -> Self {
        Planner { cfg, refdata }
    }
    pub fn plan_down(&self, _inc: &Incident, _now: DateTime<Utc>) -> Plan {
        Plan::default()
    }
    pub fn plan_restored(&self, _inc: &Incident, _now: DateTime<Utc>) -> Plan {
        Plan::default()
    }
    pub fn ivr(&self, _inc: &Incident, _now: DateTime<Utc>) -> Vec<IvrUpsert> {
        vec![]
    }
}
