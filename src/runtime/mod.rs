//! The ground floor every component stands on: the clock and the shutdown
//! signal, passed in as parameters so tests control time and the end of a
//! run, and [`Stats`], the board of counters and gauges every stage writes
//! and `/metrics`, the demo and the tests read. Imports nothing from the
//! components above it (only `model` and `metrics`, themselves ground floor).

use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::watch;

pub mod stats;
pub use stats::Stats;

/// The wall clock, injectable so tests control time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Resolves when shutdown is requested; cloned into every task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Requests shutdown of every [`Shutdown`] cloned from its pair.
#[derive(Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(Arc::new(tx)), Shutdown(rx))
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// A setting a component rejects: the full key (e.g.
/// `plan.compensation.rules[1].window_end`, `sinks.sms.url`) and why.
/// Components own their config structs and check them with this;
/// `config::ConfigError` takes it in and locates the key in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct InvalidSetting {
    pub key: String,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidSetting { key: key.into(), message: message.into() }
    }
}
