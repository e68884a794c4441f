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
//!
//! Period rules (RD 899/2009, a credit action whose credit has a `period`):
//! the action is one incident's entitlement, accrued in the compensation
//! ledger ([`crate::transforms::ledger`]). Each accrual is a record on the
//! ledger topic (keyed by customer, co-partitioned with the actions topic,
//! so the dispatcher that owns a customer's actions owns their ledger);
//! what it makes due goes to `billing.credits` like any credit. On flush:
//! credits first, then the ledger records, then the journal — a crash in
//! between recomputes the same credit (same ledger, same order, same id).
//! The ledger is rebuilt from its topic when the dispatcher's partitions
//! change ([`ActionSink::assigned`]: on start and on every rebalance),
//! never from local files.

use super::outbox::KeyedFile;
use super::{ActionSink, Delivery, SinkError};
use crate::model::{Action, Channel, Credit};
use crate::transforms::ledger::{Ledger, LedgerRecord};
use rdkafka::producer::FutureProducer;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Reads the ledger topic's records of the given partitions, in order.
pub type LedgerReader = Arc<dyn Fn(&[i32]) -> Result<Vec<LedgerRecord>, SinkError> + Send + Sync>;

pub struct BillingCredits {
    producer: FutureProducer,
    topic: String,
    journal: Mutex<KeyedFile>,
    /// Credits taken since the last flush, not yet on the topic.
    pending: Mutex<Vec<Credit>>,
    ledger: LedgerSide,
}

/// The compensation ledger's state, its topic and how to read it back.
struct LedgerSide {
    topic: String,
    reader: Option<LedgerReader>,
    state: Mutex<(Ledger, Vec<LedgerRecord>)>,
}

impl BillingCredits {
    /// Produce to `topic`; journal in `dir/credits.jsonl`; accrue period
    /// entitlements on `ledger_topic` (read back with `reader`, when given,
    /// on every assignment).
    pub fn open(
        dir: &Path,
        producer: FutureProducer,
        topic: String,
        ledger_topic: String,
        reader: Option<LedgerReader>,
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        let journal = KeyedFile::open(dir.join("credits.jsonl"), |v| v.get("credit_id")?.as_str().map(String::from))?;
        let ledger = LedgerSide { topic: ledger_topic, reader, state: Mutex::default() };
        Ok(BillingCredits { producer, topic, journal: Mutex::new(journal), pending: Mutex::default(), ledger })
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, KeyedFile> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, (Ledger, Vec<LedgerRecord>)> {
        self.ledger.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many (customer, rule, period) accounts the ledger holds.
    pub fn ledger_accounts(&self) -> usize {
        self.ledger().0.len()
    }

    /// Accrue a period entitlement: the record goes to the ledger topic on
    /// flush, and the credit it makes due (if any) to billing.
    fn accrue(&self, a: &Action, entitlement: &Credit) -> Result<Delivery, SinkError> {
        let record = {
            let mut state = self.ledger();
            let Some(record) = state.0.accrue(entitlement) else { return Ok(Delivery::Duplicate) };
            state.0.apply(&record);
            state.1.push(record.clone());
            record
        };
        tracing::info!(
            action_id = %a.action_id,
            period = %record.period.start,
            due = record.credited.is_some(),
            "compensation entitlement accrued"
        );
        if let Some(c) = record.credited {
            if !self.journal().contains(&c.credit_id.to_string()) {
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(c);
            }
        }
        Ok(Delivery::Done)
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
        if credit.period.is_some() {
            return self.accrue(a, credit);
        }
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
        let accrued = std::mem::take(&mut self.ledger().1);
        if credits.is_empty() && accrued.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, String)> =
            credits.iter().map(|c| (c.customer_id.clone(), serde_json::to_string(c).unwrap_or_default())).collect();
        crate::kafka::produce_all(&self.producer, &self.topic, &records).await?;
        let accrued: Vec<(String, String)> =
            accrued.iter().map(|r| (r.customer_id.clone(), serde_json::to_string(r).unwrap_or_default())).collect();
        crate::kafka::produce_all(&self.producer, &self.ledger.topic, &accrued).await?;
        let mut journal = self.journal();
        for c in &credits {
            journal.write(c.credit_id.to_string(), c)?;
        }
        journal.flush()
    }

    /// Rebuild the ledger from its topic, for the partitions now ours.
    async fn assigned(&self, handover: &super::handover::Handover) -> Result<(), SinkError> {
        let Some(read) = &self.ledger.reader else { return Ok(()) };
        let partitions = &handover.partitions;
        let records = read(partitions)?;
        let mut ledger = Ledger::new();
        for r in &records {
            ledger.apply(r);
        }
        tracing::info!(
            partitions = partitions.len(),
            records = records.len(),
            accounts = ledger.len(),
            "compensation ledger rebuilt from its topic"
        );
        *self.ledger() = (ledger, Vec::new());
        Ok(())
    }
}
