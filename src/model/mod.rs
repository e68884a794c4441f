//! The domain vocabulary shared by every stage: alarms, reference data,
//! incidents (as events and as folded state), actions and credits.
//!
//! Everything here is plain data with serde derives; nothing does I/O. The
//! JSON shapes are the published contracts in `schemas/`, and
//! `tests/contracts.rs` checks the two agree.

pub mod action;
pub mod alarm;
pub mod area;
pub mod incident;
pub mod money;
pub mod refdata;

pub use action::{Action, ActionKind, BillingPeriod, Channel, Credit, CreditShare, IvrUpsert, Message};
pub use alarm::{Alarm, AlarmState, Severity};
pub use area::{Area, AreaError};
pub use incident::{AlarmRef, EventKind, Incident, IncidentEvent, IncidentId, IncidentState, Phase, SiteMap};
pub use money::Money;
pub use refdata::{Customer, OptOut, Postcode, Services, Site};
