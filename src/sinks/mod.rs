//! Sinks carry planned effects out of the pipeline. Owns the boundaries
//! [`ActionSink`] (one per-customer action: SMS, e-mail, data grant, credit)
//! and [`IvrSink`] (desired IVR state per region), and their local
//! implementations: the JSONL [`outbox::Outbox`]; [`notify::Notifier`],
//! which sends notices through SMS gateways ([`sms`]: Kannel, JSON HTTP) and
//! SMTP ([`email`]); [`provision`] (data grants to the provisioning API, in
//! batches); [`billing`] (credits to `billing.credits`); [`ivr`] (the IVR
//! platform's HTTP API, with a reconcile loop); [`route`] puts them behind
//! one `ActionSink`; [`held`] holds actions until their `not_before`;
//! [`park`] keeps notices whose gateway is down until it answers;
//! [`handover`] is what a dispatcher takes over with a partition.
//!
//! Invariant: a sink is idempotent by the record's key (`action_id`,
//! `credit_id`, IVR region/incident/state); delivering twice is a no-op.

pub mod billing;
pub mod deliveries;
pub mod email;
pub mod handover;
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
use crate::sinks::email::SmtpConfig;
use crate::sinks::sms::SmsProviderConfig;
use crate::tls::TlsConfig;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Where actions go. Without `sms` providers or `email`, notices go to the
/// JSONL outboxes only (the demo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Directory of the JSONL outboxes (sms, email, ivr, data_grant,
    /// credits) and of `deliveries.jsonl`, the record of every send.
    /// Sent notices are journalled here too: it is what makes a restart
    /// re-send nothing. Default `out`.
    pub outbox_dir: PathBuf,
    /// SMS providers, tried in order: the next takes over while one keeps
    /// failing. Default none.
    pub sms: Vec<SmsProviderConfig>,
    /// The SMTP relay. Default none.
    pub email: Option<SmtpConfig>,
    /// Retries of retriable failures.
    pub retry: RetryConfig,
    /// Notices the dispatcher has in flight at once, in lanes by customer
    /// (one customer's notices stay in order). Also the most a crash can
    /// re-send: each lane has at most one notice sent and not yet
    /// journalled. Default 64.
    pub concurrency: usize,
    /// Where to listen for Kannel's delivery reports (`GET /dlr`); the
    /// providers' `dlr_url` should point here. Default none (no reports).
    pub dlr_listen: Option<std::net::SocketAddr>,
    /// The IVR platform's HTTP API (`schemas/ivr-api.v1.openapi.json`).
    /// Default none: IVR upserts go to `ivr.jsonl`.
    pub ivr: Option<crate::sinks::ivr::IvrApiConfig>,
    /// The data-grant provisioning API
    /// (`schemas/provisioning-api.v1.openapi.json`). Default none: grants
    /// and revokes go to `data_grant.jsonl`.
    pub provisioning: Option<crate::sinks::provision::ProvisioningConfig>,
    /// What outbound TLS (HTTPS to the SMS gateways, the IVR platform and
    /// the provisioning API; SMTP with STARTTLS or TLS) trusts.
    pub tls: TlsConfig,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            outbox_dir: "out".into(),
            sms: vec![],
            email: None,
            retry: RetryConfig::default(),
            concurrency: 64,
            dlr_listen: None,
            ivr: None,
            provisioning: None,
            tls: TlsConfig::default(),
        }
    }
}

/// Retriable failures (timeouts, refused connections, 5xx, 429, SMTP 4xx):
/// a few attempts in line, then the notice is parked (`parked_*.jsonl`) and
/// retried with capped exponential backoff until a gateway takes it, its
/// incident ends or `park_horizon` passes. Permanent refusals are final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in line (across providers) before a notice is parked for
    /// the retry loop. Default 2.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    /// First backoff. Default 200ms.
    pub base: Duration,
    #[serde(with = "humantime_serde")]
    /// Longest backoff (in line and parked). Default 30s.
    pub max: Duration,
    /// Consecutive retriable failures after which a provider is down:
    /// passed over while another is up, and its channel's notices parked
    /// while none is. Default 5.
    pub failover_after: u32,
    #[serde(with = "humantime_serde")]
    /// A down provider is tried again this long after its last failure
    /// while another one carries its traffic (failback). Default 30s.
    pub cooldown: Duration,
    #[serde(with = "humantime_serde")]
    /// How long a parked notice is retried before it is given up
    /// (`gave_up`, reason `park_horizon`). Default 6h.
    pub park_horizon: Duration,
    #[serde(with = "humantime_serde")]
    /// A notice that cannot get a sending slot on its channel within this
    /// is parked, so a slow channel never holds the action consumer (and
    /// with it the other channels). Default 1s.
    pub queue_after: Duration,
}

impl RetryConfig {
    /// `park_horizon`'s default.
    pub const PARK_HORIZON: Duration = Duration::from_secs(6 * 3600);
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 2,
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
            failover_after: 5,
            cooldown: Duration::from_secs(30),
            park_horizon: Self::PARK_HORIZON,
            queue_after: Duration::from_secs(1),
        }
    }
}

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
    Config(#[from] crate::runtime::InvalidSetting),
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
    /// The dispatcher's partitions of the actions topic changed (on start
    /// and after every rebalance): let go of the customers no longer ours
    /// ([`handover::Handover::owns`]) and take what the partitions just
    /// taken left (what went out, parked notices, grant counts), or
    /// rebuild from the topics (the compensation ledger). Default: nothing.
    fn assigned(&self, handover: &handover::Handover) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = handover;
        async { Ok(()) }
    }
}

pub trait IvrSink: Send {
    fn upsert(&mut self, u: &IvrUpsert) -> impl Future<Output = Result<Delivery, SinkError>> + Send;
}
