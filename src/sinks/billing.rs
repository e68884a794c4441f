//! Credits to billing. Owns the `billing.credits` producer side: one record
//! per customer, service, rule and incident (the [`Credit`] of
//! `schemas/credit.v1`), keyed by customer so one customer's credits stay in
//! order, identified by its deterministic `credit_id`.
//!
//! Exactly-once as billing sees it: the producer is idempotent (no broker
//! retry duplicates a record), and `credits.jsonl` journals every credit id
//! the topic has acknowledged, so a replayed plan or a restarted dispatcher
//! never produces a credit again. Credits are produced on
//! [`ActionSink::flush`] (before the dispatcher acknowledges the batch),
//! then journalled; a crash in between re-produces the same records with the
//! same ids and amounts, which billing drops by `credit_id`.

use super::outbox::KeyedFile;
use super::{ActionSink, Delivery, SinkError};
use crate::model::{Action, Channel, Credit};
use rdkafka::producer::FutureProducer;
use std::path::Path;
use std::sync::Mutex;

pub struct BillingCredits {
    producer: FutureProducer,
    topic: String,
    journal: Mutex<KeyedFile>,
    /// Credits taken since the last flush, not yet on the topic.
    pending: Mutex<Vec<Credit>>,
}

impl BillingCredits {
    /// Produce to `topic`; journal in `dir/credits.jsonl`.
    pub fn open(dir: &Path, producer: FutureProducer, topic: String) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        let journal = KeyedFile::open(dir.join("credits.jsonl"), |v| v.get("credit_id")?.as_str().map(String::from))?;
        Ok(BillingCredits { producer, topic, journal: Mutex::new(journal), pending: Mutex::default() })
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, KeyedFile> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ActionSink for BillingCredits {
    async fn deliver(&self, a: &Action) -> Result<Delivery, SinkError> {
        let credit = match (&a.credit, a.channel) {
            (Some(c), Channel::Credit) => c,
            _ => {
                return Err(SinkError::Invalid {
                    action_id: a.action_id.clone(),
                    message: "not a credit action".into(),
                })
            }
        };
        if self.journal().contains(&credit.credit_id.to_string()) {
            return Ok(Delivery::Duplicate);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.iter().any(|c| c.credit_id == credit.credit_id) {
            return Ok(Delivery::Duplicate);
        }
        pending.push(credit.clone());
        Ok(Delivery::Done)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let credits = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if credits.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, String)> =
            credits.iter().map(|c| (c.customer_id.clone(), serde_json::to_string(c).unwrap_or_default())).collect();
        crate::kafka::produce_all(&self.producer, &self.topic, &records).await?;
        let mut journal = self.journal();
        for c in &credits {
            journal.write(c.credit_id.to_string(), c)?;
        }
        journal.flush()
    }
}
