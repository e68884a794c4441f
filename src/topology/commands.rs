//! NOC commands across processes: any process's API may take a command;
//! the leading correlator applies it (`outage.commands`, one topic, two
//! record shapes).
//!
//! - A process that does not correlate (`--role api`, a standby) hands a
//!   command to its [`Forwarder`]: a request record
//!   `{"command_id", "actor", "command", "deadline"}`, and the API waits
//!   for the answer record `{"reply_to", "result"}` (at most
//!   [`ANSWER_WITHIN`]; then 503, outcome unknown: the incident shows it).
//! - The leader's [`relay`] consumes the requests (its own consumer group,
//!   offsets stored after the answer is produced), hands each to its
//!   pipeline exactly as its own API would (same validation, same
//!   answers), and produces the answer. A request past its deadline is
//!   answered `failed` unapplied, so a command nobody waits for any more
//!   (the leader was down) is never applied late. A crash between applying
//!   and storing the offset applies it again within the deadline (at
//!   least once; the log shows both).

use super::TopologyError;
use crate::api::types::IncidentView;
use crate::api::{Command, CommandError, Envelope};
use crate::kafka::Broker;
use crate::runtime::Shutdown;
use crate::sources::kafka::KafkaSource;
use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long an API waits for the leader's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(15);

#[derive(Serialize, Deserialize)]
struct Request {
    command_id: String,
    actor: String,
    command: Command,
    deadline: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    reply_to: String,
    result: Result<IncidentView, CommandError>,
}

/// Either shape, as read back.
#[derive(Deserialize)]
#[serde(untagged)]
enum Record {
    Answer(Answer),
    Request(Request),
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Result<IncidentView, CommandError>>>>>;

/// Sends this process's API commands to the leader and routes its answers
/// back.
#[derive(Clone)]
pub struct Forwarder {
    producer: FutureProducer,
    topic: String,
    waiting: Waiting,
}

impl Forwarder {
    /// Start following the answers (from the topic's end: earlier answers
    /// are for earlier processes).
    pub fn start(broker: &Broker, topic: &str, mut shutdown: Shutdown) -> Result<Self, TopologyError> {
        let waiting: Waiting = Default::default();
        let ends = broker.ends(topic)?;
        let mut answers = KafkaSource::tail(broker, topic, &ends)?.with_stage("command answers");
        let w = waiting.clone();
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = shutdown.requested() => return,
                    b = answers.next_batch(1000, Duration::from_millis(500)) => b,
                };
                let Ok(batch) = batch else { continue };
                for rec in batch {
                    if let Ok(Record::Answer(a)) = serde_json::from_slice::<Record>(&rec.payload) {
                        let tx = w.lock().unwrap_or_else(|p| p.into_inner()).remove(&a.reply_to);
                        if let Some(tx) = tx {
                            let _ = tx.send(a.result);
                        }
                    }
                }
            }
        });
        Ok(Forwarder { producer: broker.producer()?, topic: topic.to_string(), waiting })
    }

    /// Forward one command and answer its envelope when the leader does
    /// (in its own task: the caller goes on).
    pub fn forward(&self, envelope: Envelope, now: DateTime<Utc>) {
        let Envelope { command, actor, reply } = envelope;
        let id = format!("{:032x}", rand::random::<u128>());
        let deadline = now + chrono::Duration::from_std(ANSWER_WITHIN).unwrap_or_default();
        let request = Request { command_id: id.clone(), actor, command, deadline };
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), tx);
        let this = self.clone();
        tokio::spawn(async move {
            let failed = |m: String| Err(CommandError::Failed(m));
            let record = serde_json::to_string(&request).unwrap_or_default();
            let sent = crate::kafka::produce_all(&this.producer, &this.topic, &[(id.clone(), record)]).await;
            let answer = match sent {
                Err(e) => failed(format!("the command could not be sent to the leading correlator: {e}")),
                Ok(()) => match tokio::time::timeout(ANSWER_WITHIN, rx).await {
                    Ok(Ok(answer)) => answer,
                    _ => failed(format!(
                        "no leading correlator answered within {} s; the command was not applied",
                        ANSWER_WITHIN.as_secs()
                    )),
                },
            };
            this.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            let _ = reply.send(answer);
        });
    }
}

/// The leader's side: requests from `outage.commands` into `pipeline`
/// (the same channel as its own API), answers back onto the topic.
pub async fn relay(
    broker: Broker,
    group: String,
    topic: String,
    pipeline: mpsc::Sender<Envelope>,
    now: impl Fn() -> DateTime<Utc> + Send + 'static,
    mut shutdown: Shutdown,
) -> Result<(), TopologyError> {
    let mut requests = KafkaSource::subscribe(&broker, &format!("{group}-commands"), &topic)?.with_stage("commands");
    let producer = broker.producer()?;
    loop {
        let batch = tokio::select! {
            _ = shutdown.requested() => return Ok(requests.commit()?),
            b = requests.next_batch(100, Duration::from_millis(500)) => b?,
        };
        for rec in &batch {
            let r = match serde_json::from_slice::<Record>(&rec.payload) {
                Ok(Record::Request(r)) => r,
                // Our own answers share the topic.
                Ok(Record::Answer(_)) => continue,
                // Someone else's record: named, passed over (it holds an actor
                // name and a command, nothing personal; the bytes are not logged).
                Err(e) => {
                    tracing::warn!(partition = rec.partition, offset = rec.offset, error = %e, "not a NOC command; skipped");
                    continue;
                }
            };
            let result = if r.deadline < now() {
                Err(CommandError::Failed("the command waited past its deadline for a leader; not applied".into()))
            } else {
                let (reply, answer) = oneshot::channel();
                tracing::info!(actor = %r.actor, command_id = %r.command_id, "NOC command from another process");
                pipeline
                    .send(Envelope { command: r.command, actor: r.actor, reply })
                    .await
                    .map_err(|_| TopologyError::LogWriterStopped)?;
                answer.await.unwrap_or_else(|_| Err(CommandError::Failed("the pipeline stopped".into())))
            };
            let answer = Answer { reply_to: r.command_id.clone(), result };
            let record = serde_json::to_string(&answer).unwrap_or_default();
            crate::kafka::produce_all(&producer, &topic, &[(r.command_id, record)]).await?;
        }
        requests.ack(&batch)?;
    }
}
