//! The delivery record: every send attempt, its result, every skip and every
//! gateway delivery report, as one [`DeliveryRecord`] each. Owns where they
//! go: `deliveries.jsonl` in the outbox directory at once, and the
//! deliveries topic (keyed by customer) on [`DeliveryLog::flush`], which the
//! dispatcher calls before it acknowledges a batch of actions. Contacts are
//! masked before they are recorded.

use super::journal::Journal;
use super::SinkError;
use crate::model::{Action, ActionKind, Channel};
use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

/// What happened, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The gateway took it.
    Accepted,
    /// A retriable failure; another attempt follows unless `gave_up` does.
    Retry,
    /// Refused for good.
    Permanent,
    /// Retries ran out (`reason`: `park_horizon` when it waited that long).
    GaveUp,
    /// Its gateway could not take it now: it waits in the park queue and is
    /// retried (`reason`: `provider_down`, `backlog`, `queue`, `retry: …`).
    Parked,
    /// Never sent: bad or missing contact, or nothing to follow up on.
    Skipped,
    /// Held until its time (quiet hours, a revoke's grace); `reason` says until when.
    Held,
    /// Delivery report: on the handset.
    Delivered,
    /// Delivery report: the SMSC or handset could not deliver it.
    Undelivered,
    /// Delivery report: queued at the SMSC.
    Buffered,
    /// Delivery report: the SMSC took it.
    SmscAccepted,
    /// Delivery report: the SMSC refused it.
    SmscRejected,
}

impl DeliveryOutcome {
    /// Kannel's `%d` delivery-report type (dlr-mask bits).
    pub fn from_kannel_type(t: u32) -> Option<Self> {
        Some(match t {
            1 => Self::Delivered,
            2 => Self::Undelivered,
            4 => Self::Buffered,
            8 => Self::SmscAccepted,
            16 => Self::SmscRejected,
            _ => return None,
        })
    }
}

/// One line of `deliveries.jsonl`, one record of the deliveries topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub at: DateTime<Utc>,
    pub action_id: String,
    pub incident_id: String,
    pub customer_id: String,
    pub channel: Channel,
    pub kind: ActionKind,
    /// Masked contact (empty for delivery reports: the gateway echoes only
    /// the action id).
    pub to: String,
    /// Provider name (`smtp` for e-mail), empty when none was tried.
    pub provider: String,
    /// 1-based; 0 for skips and delivery reports.
    pub attempt: u32,
    pub outcome: DeliveryOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The gateway's id for the message, when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Where the action is on the actions topic (its offset there; the
    /// partition is this record's own, both keyed by customer), on `held`
    /// and `parked` records: what lets the dispatcher that takes the
    /// partition over read a waiting action back ([`super::handover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// A data grant's end, on its records: the grant counts across
    /// incidents are rebuilt from it ([`super::handover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl DeliveryRecord {
    pub fn of(a: &Action, provider: &str, attempt: u32, outcome: DeliveryOutcome) -> Self {
        DeliveryRecord {
            at: Utc::now(),
            action_id: a.action_id.clone(),
            incident_id: a.incident_id.to_string(),
            customer_id: a.customer_id.clone(),
            channel: a.channel,
            kind: a.kind,
            to: a.to.as_deref().map(crate::redact::contact).unwrap_or_default(),
            provider: provider.into(),
            attempt,
            outcome,
            reason: None,
            reference: None,
            offset: None,
            until: a.until.filter(|_| a.kind == ActionKind::Grant),
        }
    }

    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// A delivery report for `action_id` (as [`Action::key`] built it).
    pub fn report(action_id: &str, outcome: DeliveryOutcome, answer: &str, at: DateTime<Utc>) -> Option<Self> {
        let (incident, customer, channel, kind) = Action::parse_key(action_id)?;
        Some(DeliveryRecord {
            at,
            action_id: action_id.into(),
            incident_id: incident,
            customer_id: customer,
            channel,
            kind,
            to: String::new(),
            provider: String::new(),
            attempt: 0,
            outcome,
            reason: Some(answer.chars().take(200).collect()).filter(|s: &String| !s.is_empty()),
            reference: None,
            offset: None,
            until: None,
        })
    }
}

/// Where delivery records go: the file at once, the topic on flush.
pub struct DeliveryLog {
    file: Mutex<Journal>,
    topic: Option<(FutureProducer, String)>,
    /// `(customer_id, json)` not yet produced.
    pending: Mutex<Vec<(String, String)>>,
    /// action id → its offset on the actions topic, for the actions of
    /// the batch in hand ([`DeliveryLog::positions`]): stamped on their
    /// `held` and `parked` records.
    positions: Mutex<std::collections::HashMap<String, i64>>,
}

impl DeliveryLog {
    /// Append to `dir/deliveries.jsonl`; produce to `topic` when given.
    pub fn open(dir: &Path, topic: Option<(FutureProducer, String)>) -> Result<Self, SinkError> {
        let path = dir.join("deliveries.jsonl");
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        let (file, _) = Journal::open(path)?;
        Ok(DeliveryLog { file: Mutex::new(file), topic, pending: Mutex::default(), positions: Mutex::default() })
    }

    /// The actions of the batch in hand and their offsets on the actions
    /// topic (replacing the last batch's): a `held` or `parked` record of
    /// one of them carries its offset.
    pub fn positions(&self, of: impl IntoIterator<Item = (String, i64)>) {
        let mut p = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        p.clear();
        p.extend(of);
    }

    pub fn record(&self, r: &DeliveryRecord) -> Result<(), SinkError> {
        let stamped;
        let r = match r.outcome {
            DeliveryOutcome::Held | DeliveryOutcome::Parked if r.offset.is_none() => {
                let at = self.positions.lock().unwrap_or_else(|p| p.into_inner()).get(&r.action_id).copied();
                stamped = DeliveryRecord { offset: at, ..r.clone() };
                &stamped
            }
            _ => r,
        };
        let line = serde_json::to_string(r).unwrap_or_default();
        {
            self.file.lock().unwrap_or_else(|p| p.into_inner()).append_raw(&line)?;
        }
        if self.topic.is_some() {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).push((r.customer_id.clone(), line));
        }
        Ok(())
    }

    /// Flush the file and wait until the topic has every record so far.
    pub async fn flush(&self) -> Result<(), SinkError> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).sync()?;
        if let Some((producer, topic)) = &self.topic {
            let records = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            crate::kafka::produce_all(producer, topic, &records).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_its_action_from_the_key() {
        let at = Utc::now();
        let r = DeliveryRecord::report(
            "INC-20261123-00000001/C1/sms/down",
            DeliveryOutcome::Delivered,
            "id:1 stat:DELIVRD",
            at,
        )
        .unwrap();
        assert_eq!((r.incident_id.as_str(), r.customer_id.as_str()), ("INC-20261123-00000001", "C1"));
        assert_eq!((r.channel, r.kind), (Channel::Sms, ActionKind::Down));
        assert_eq!(r.reason.as_deref(), Some("id:1 stat:DELIVRD"));
        assert!(DeliveryRecord::report("nonsense", DeliveryOutcome::Delivered, "", at).is_none());
        assert!(DeliveryRecord::report("I/C/fax/down", DeliveryOutcome::Delivered, "", at).is_none());
        assert_eq!(DeliveryOutcome::from_kannel_type(8), Some(DeliveryOutcome::SmscAccepted));
        assert_eq!(DeliveryOutcome::from_kannel_type(3), None);
    }

    #[tokio::test]
    async fn records_are_masked_lines_in_the_file() {
        let d = tempfile::tempdir().unwrap();
        let log = DeliveryLog::open(d.path(), None).unwrap();
        let r = DeliveryRecord {
            to: crate::redact::contact("+34600000001"),
            ..DeliveryRecord::report("I-1/C1/sms/down", DeliveryOutcome::Accepted, "", Utc::now()).unwrap()
        };
        log.record(&r).unwrap();
        log.flush().await.unwrap();
        let body = std::fs::read_to_string(d.path().join("deliveries.jsonl")).unwrap();
        let back: DeliveryRecord = serde_json::from_str(body.trim()).unwrap();
        assert_eq!(back, r);
        assert!(!body.contains("600000001"), "the number is masked: {body}");
    }
}
