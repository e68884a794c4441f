//! Sinks carry planned effects out of the pipeline. Owns the boundaries
//! [`ActionSink`] (one per-customer action: SMS, e-mail, data grant, credit)
//! and [`IvrSink`] (desired IVR state per region), and their local
//! implementation, the JSONL [`outbox::Outbox`]. Kannel, SMTP, provisioning
//! and billing adapters implement the same traits.
//!
//! Invariant: a sink is idempotent by the record's key (`action_id`,
//! `credit_id`, IVR region/incident/state); delivering twice is a no-op.

pub mod outbox;

use crate::model::{Action, IvrUpsert};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("outbox {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("action {action_id}: {message}")]
    Invalid { action_id: String, message: String },
}

/// What a sink did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Done,
    /// Already delivered before (same key): nothing was done.
    Duplicate,
}

pub trait ActionSink: Send {
    fn deliver(&mut self, action: &Action) -> impl Future<Output = Result<Delivery, SinkError>> + Send;
    /// Make every delivery so far durable.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

pub trait IvrSink: Send {
    fn upsert(&mut self, u: &IvrUpsert) -> impl Future<Output = Result<Delivery, SinkError>> + Send;
}
