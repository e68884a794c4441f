//! Sinks carry planned effects out of the pipeline. Owns the boundaries
//! [`ActionSink`] (one per-customer action: SMS, e-mail, data grant, credit)
//! and [`IvrSink`] (desired IVR state per region), and their local
//! implementations: the JSONL [`outbox::Outbox`]; [`notify::Notifier`],
//! which sends notices through SMS gateways ([`sms`]: Kannel, JSON HTTP) and
//! SMTP ([`email`]); [`provision`] (data grants to the provisioning API, in
//! batches); [`billing`] (credits to `billing.credits`); [`ivr`] (the IVR
//! platform's HTTP API, with a reconcile loop); [`route`] puts them behind
//! one `ActionSink`; [`held`] holds actions until their `not_before`;
//! [`park`] keeps notices whose gateway is down until it answers.
//!
//! Invariant: a sink is idempotent by the record's key (`action_id`,
//! `credit_id`, IVR region/incident/state); delivering twice is a no-op.

pub mod billing;
pub mod deliveries;
pub mod email;
pub mod held;
pub mod ivr;
pub mod journal;
pub mod notify;
pub mod outbox;
pub mod park;
pub mod provision;
pub mod route;
pub mod sms;

use crate::model::{Action, IvrUpsert};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("outbox {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("action {action_id}: {message}")]
    Invalid { action_id: String, message: String },
    #[error(transparent)]
    Email(#[from] email::EmailError),
    #[error(transparent)]
    Produce(#[from] crate::kafka::ProduceError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("reading topic {topic}: {source}")]
    Read { topic: String, source: Box<crate::kafka::BrokerError> },
}

/// What a sink did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Done,
    /// Already delivered before (same key): nothing was done.
    Duplicate,
    /// The gateway refused it for good, or retries ran out (recorded).
    Failed,
    /// Not sent: the contact is missing or invalid (the reason, recorded).
    Skipped(&'static str),
    /// Its gateway cannot take it now: it waits, durably, in the delivery
    /// engine's park queue (`notify`, `park`), which settles it later.
    Parked,
}

/// Shared by the dispatcher's concurrent lanes, hence `&self`.
pub trait ActionSink: Send + Sync {
    fn deliver(&self, action: &Action) -> impl Future<Output = Result<Delivery, SinkError>> + Send;
    /// Make every delivery so far durable (and recorded).
    fn flush(&self) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// The dispatcher's partitions of the actions topic are now
    /// `partitions` (on start and after every rebalance): rebuild state
    /// kept per customer (the compensation ledger). Default: nothing.
    fn assigned(&self, partitions: &[i32]) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = partitions;
        async { Ok(()) }
    }
}

pub trait IvrSink: Send {
    fn upsert(&mut self, u: &IvrUpsert) -> impl Future<Output = Result<Delivery, SinkError>> + Send;
}
