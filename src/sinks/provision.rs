//! Data-grant provisioning: temporary unlimited data for the customers of an
//! outage. Owns the client side of `schemas/provisioning-api.v1.openapi.json`
//! ([`Provisioner`], an [`ActionSink`] for channel `data_grant`), the
//! reference count of grants across incidents, and its journal,
//! `grants.jsonl` in the directory given to [`Provisioner::open`].
//!
//! Batching: [`ActionSink::deliver`] puts the action into the pending batch
//! of its kind (grants and revokes go to different endpoints) and waits for
//! that batch's answer, so it returns the item's real outcome (`Done`,
//! `Duplicate` for `already_applied`, `Failed`), never an optimistic one. A
//! batch goes when it holds `batch_size` items, when its first item has
//! waited `max_wait`, or on [`ActionSink::flush`]. Batches go from spawned
//! tasks, so a caller that stops waiting loses nothing. Under the
//! dispatcher, each lane waits for its action, so a batch holds at most as
//! many items as there are lanes (`sinks.concurrency`).
//!
//! Retries: `429`, `5xx`, timeouts and connection errors retry the whole
//! batch (`retries` times, exponential backoff with full jitter, or the
//! `Retry-After` the platform asks for); any other `4xx` fails every item of
//! the batch for good. Either way a failure is recorded (journal line
//! `failed`, and the [`DeliveryLog`] when one is attached) and not retried;
//! a failed action is not journalled as done, so a replay tries it again.
//!
//! Reference counting: a customer can be in several incidents at once, and
//! the platform holds one unlimited-data state per subscriber. A revoke for
//! incident X whose customer still has a grant from another incident Y (not
//! revoked, `until` not passed) is not sent (`Skipped("still_in_incident")`)
//! and only ends X's claim; the revoke that ends the last claim is sent. A
//! grant for a customer already granted is sent anyway (the platform moves
//! `until` to the later one). A revoke with no other live grant is sent even
//! if its own grant was never journalled (failed, or journal lost): the
//! platform answers `already_applied` when there is nothing to end. "Not
//! passed" is by the clock given to [`Provisioner::with_clock`] (the
//! dispatcher's), else the system clock. Decisions assume one customer's
//! actions come one at a time, as the dispatcher's lanes (by customer)
//! deliver them.
//!
//! Journal: one line per settled action (`grant`, `revoke` — sent or not —
//! and `failed`), flushed when its batch settles. Opening folds it: a grant
//! or revoke journalled as done is `Duplicate` and makes no API call, across
//! restarts. A crash between the platform's answer and the journal re-sends
//! that batch, which the platform answers `already_applied`.
//!
//! MSISDNs are personal data: they go to the platform and nowhere else (not
//! to the journal; masked in logs and delivery records).

use super::deliveries::{DeliveryLog, DeliveryOutcome, DeliveryRecord};
use super::notify::is_e164;
use super::{ActionSink, Delivery, SinkError};
use crate::model::{Action, ActionKind, Channel, IncidentId};
use crate::runtime::Clock;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// Most items the API takes in one request (the OpenAPI `maxItems`).
pub const MAX_BATCH: usize = 1000;
/// The journal's file name in the directory given to [`Provisioner::open`].
pub const JOURNAL: &str = "grants.jsonl";
/// Provider name in delivery records.
const PROVIDER: &str = "provisioning";

/// `[sinks.provisioning]`: the data-grant provisioning API.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningConfig {
    /// Base URL of the API, without `/v1/...`, e.g.
    /// `https://provisioning.example.net`. Required.
    pub url: String,
    /// Bearer token. Never logged (`Debug` shows `<redacted>`). Default none
    /// (no `Authorization` header).
    #[serde(default)]
    pub token: Option<String>,
    /// Items per request, 1 to 1000 (clamped). Under the dispatcher a
    /// batch holds at most `sinks.concurrency` items, so a larger value
    /// means batches go after `max_wait`. Default 500.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// How long a partial batch may wait for more items before it goes.
    /// Default 200ms.
    #[serde(default = "defaults::max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Per-request timeout. Default 10s.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a batch after a retriable failure (429, 5xx, timeout,
    /// connection error), so `retries + 1` attempts in all. Default 3.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
}

mod defaults {
    use std::time::Duration;
    pub fn batch_size() -> usize {
        500
    }
    pub fn max_wait() -> Duration {
        Duration::from_millis(200)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn retries() -> u32 {
        3
    }
}

impl ProvisioningConfig {
    /// The API at `url`, everything else at its default.
    pub fn new(url: impl Into<String>) -> Self {
        ProvisioningConfig {
            url: url.into(),
            token: None,
            batch_size: defaults::batch_size(),
            max_wait: defaults::max_wait(),
            timeout: defaults::timeout(),
            retries: defaults::retries(),
        }
    }
}

impl std::fmt::Debug for ProvisioningConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("batch_size", &self.batch_size)
            .field("max_wait", &self.max_wait)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// The `grant_id` of `incident`'s grant for `customer`, shared by the grant
/// and its revoke: UUID v5 (OID namespace) of
/// `data_grant \x1f incident \x1f customer`. Stable across replays.
pub fn grant_id(incident: &IncidentId, customer: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("data_grant\u{1f}{incident}\u{1f}{customer}").as_bytes())
}

/// One line of `grants.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    /// The platform applied (or already had) this grant.
    Grant { action_id: String, customer_id: String, incident_id: String, until: DateTime<Utc>, at: DateTime<Utc> },
    /// The incident's claim ended; `sent`: the platform applied the revoke
    /// (false: another incident still needed the grant, so it was kept).
    Revoke { action_id: String, customer_id: String, incident_id: String, sent: bool, at: DateTime<Utc> },
    /// Refused or retries ran out: recorded, not done (a replay tries it
    /// again). A failed revoke still ends its incident's claim.
    Failed {
        action_id: String,
        customer_id: String,
        incident_id: String,
        kind: ActionKind,
        reason: String,
        at: DateTime<Utc>,
    },
}

/// What the journal says: done action ids and live claims per customer.
struct Journal {
    out: super::journal::Journal,
    done: HashSet<String>,
    /// customer → incident → the grant's `until` (claims not yet revoked).
    claims: HashMap<String, BTreeMap<String, DateTime<Utc>>>,
    /// Action ids being delivered now: a second copy is a duplicate.
    in_progress: HashSet<String>,
}

impl Journal {
    fn open(dir: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        let path = dir.join(JOURNAL);
        // A torn last line (crash mid-write) is cut off (`journal::recover`):
        // that action is sent again and the platform answers `already_applied`.
        let (out, raw) = super::journal::Journal::open(path)?;
        let lines: Vec<Line> = raw.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let mut j = Journal { out, done: HashSet::new(), claims: HashMap::new(), in_progress: HashSet::new() };
        for l in &lines {
            j.apply(l);
        }
        Ok(j)
    }

    fn apply(&mut self, l: &Line) {
        match l {
            Line::Grant { action_id, customer_id, incident_id, until, .. } => {
                self.done.insert(action_id.clone());
                let until_ =
                    self.claims.entry(customer_id.clone()).or_default().entry(incident_id.clone()).or_insert(*until);
                *until_ = (*until_).max(*until);
            }
            Line::Revoke { action_id, customer_id, incident_id, .. } => {
                self.done.insert(action_id.clone());
                self.end_claim(customer_id, incident_id);
            }
            Line::Failed { customer_id, incident_id, kind: ActionKind::Revoke, .. } => {
                self.end_claim(customer_id, incident_id)
            }
            Line::Failed { .. } => {}
        }
    }

    fn end_claim(&mut self, customer: &str, incident: &str) {
        if let Some(m) = self.claims.get_mut(customer) {
            m.remove(incident);
            if m.is_empty() {
                self.claims.remove(customer);
            }
        }
    }

    /// Whether `customer` has a live grant from an incident other than
    /// `incident`.
    fn claimed_elsewhere(&self, customer: &str, incident: &str, now: DateTime<Utc>) -> bool {
        self.claims.get(customer).is_some_and(|m| m.iter().any(|(inc, until)| inc != incident && *until > now))
    }

    fn write(&mut self, l: &Line) -> Result<(), SinkError> {
        self.out.append(l)?;
        self.apply(l);
        Ok(())
    }

    /// Durable: written and `fsync`ed.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.sync()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Grant,
    Revoke,
}

type Outcome = Result<Delivery, SinkError>;

/// One action waiting in a batch, and who waits for its outcome.
struct Item {
    action: Action,
    grant_id: Uuid,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    /// Bumped when the batch is taken, so a stale timer leaves the next
    /// batch alone.
    generation: u64,
}

#[derive(Default)]
struct Batches {
    grants: Batch,
    revokes: Batch,
}

impl Batches {
    fn of(&mut self, op: Op) -> &mut Batch {
        match op {
            Op::Grant => &mut self.grants,
            Op::Revoke => &mut self.revokes,
        }
    }
}

#[derive(Serialize)]
struct GrantItem<'a> {
    grant_id: Uuid,
    customer_id: &'a str,
    msisdn: &'a str,
    incident_id: &'a str,
    until: DateTime<Utc>,
}

#[derive(Serialize)]
struct RevokeItem<'a> {
    grant_id: Uuid,
    customer_id: &'a str,
    msisdn: &'a str,
    incident_id: &'a str,
}

#[derive(Deserialize)]
struct BatchResponse {
    results: Vec<ItemResult>,
}

#[derive(Deserialize)]
struct ItemResult {
    grant_id: Uuid,
    status: ItemStatus,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ItemStatus {
    Applied,
    AlreadyApplied,
    Rejected,
}

/// How a batch ended.
enum BatchEnd {
    Answered(HashMap<Uuid, (ItemStatus, Option<String>)>),
    /// A 4xx other than 429: nothing done, never will be.
    Refused(String),
    /// Retries ran out.
    GaveUp(String),
}

/// One attempt's result.
enum Attempt {
    Answered(BatchResponse),
    Retry { reason: String, after: Option<Duration> },
    Refused(String),
}

struct Inner {
    cfg: ProvisioningConfig,
    batch_size: usize,
    http: reqwest::Client,
    grants_url: String,
    revokes_url: String,
    journal: Mutex<Journal>,
    batches: Mutex<Batches>,
    /// Batches taken and not yet settled.
    in_flight: watch::Sender<usize>,
    log: OnceLock<Arc<DeliveryLog>>,
    clock: OnceLock<Arc<dyn Clock>>,
}

/// The data-grant sink. Cheap to share: `&self` everywhere.
pub struct Provisioner {
    inner: Arc<Inner>,
}

impl Provisioner {
    /// Open (or create) `dir/grants.jsonl` and fold it. `trust`: the roots
    /// HTTPS to the API trusts (`sinks.tls`).
    pub fn open(dir: &Path, cfg: ProvisioningConfig, trust: &crate::tls::Trust) -> Result<Self, SinkError> {
        let journal = Journal::open(dir)?;
        let http = crate::tls::http_client(trust).timeout(cfg.timeout).build().map_err(|e| {
            crate::runtime::InvalidSetting { key: "sinks.provisioning".into(), message: e.without_url().to_string() }
        })?;
        let base = cfg.url.trim_end_matches('/');
        let batch_size = cfg.batch_size.clamp(1, MAX_BATCH);
        if batch_size != cfg.batch_size {
            tracing::warn!(configured = cfg.batch_size, using = batch_size, "provisioning batch_size out of 1..=1000");
        }
        Ok(Provisioner {
            inner: Arc::new(Inner {
                grants_url: format!("{base}/v1/data-grants:batch"),
                revokes_url: format!("{base}/v1/data-revokes:batch"),
                batch_size,
                cfg,
                http,
                journal: Mutex::new(journal),
                batches: Mutex::default(),
                in_flight: watch::Sender::new(0),
                log: OnceLock::new(),
                clock: OnceLock::new(),
            }),
        })
    }

    /// Also record every attempt, failure and skip in `log`
    /// (`deliveries.jsonl` and the deliveries topic), provider
    /// `provisioning`, MSISDNs masked.
    pub fn with_log(self, log: Arc<DeliveryLog>) -> Self {
        let _ = self.inner.log.set(log);
        self
    }

    /// Tell whether a grant's `until` has passed by `clock` (the one the
    /// dispatcher releases held revokes by) instead of the system clock.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let _ = self.inner.clock.set(clock);
        self
    }

    /// Whether `action_id` is journalled as done.
    pub fn is_done(&self, action_id: &str) -> bool {
        self.inner.journal().done.contains(action_id)
    }

    /// The incidents that still hold a grant for `customer` (not revoked;
    /// `until` may have passed).
    pub fn claims(&self, customer: &str) -> Vec<String> {
        self.inner.journal().claims.get(customer).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }
}

/// Drops the action from `in_progress` however `deliver` ends.
struct Claim<'a> {
    inner: &'a Inner,
    action_id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.inner.journal().in_progress.remove(&self.action_id);
    }
}

/// Counts a batch in flight until it settles (or its task dies).
struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Replace runs of 7+ digits (an MSISDN an error body might echo) by their
/// masked form.
fn mask_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.trim_start_matches('+').len() >= 7 {
            out.push_str(&crate::redact::msisdn(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() || (c == '+' && run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A short, masked snippet of an answer body for records and logs.
fn snippet(body: &str) -> String {
    let s = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    mask_numbers(&s.chars().take(200).collect::<String>())
}

/// Backoff before retry `n` (n ≥ 1): uniform in [0, min(5s, 100ms·2ⁿ⁻¹)].
fn backoff(n: u32) -> Duration {
    let cap = Duration::from_millis(100).saturating_mul(1u32 << (n - 1).min(16)).min(Duration::from_secs(5));
    Duration::from_nanos(rand::rng().random_range(0..=cap.as_nanos() as u64))
}

/// Copy of an I/O error for each waiter of a batch.
fn copy_err(e: &SinkError) -> SinkError {
    match e {
        SinkError::Io { path, source } => {
            SinkError::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        other => SinkError::Io { path: PathBuf::new(), source: std::io::Error::other(other.to_string()) },
    }
}

impl Inner {
    fn journal(&self) -> MutexGuard<'_, Journal> {
        // A panic mid-write leaves at worst a torn line, which open() skips.
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.get().map_or_else(Utc::now, |c| c.now())
    }

    fn batches(&self) -> MutexGuard<'_, Batches> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(
        &self,
        a: &Action,
        attempt: u32,
        outcome: DeliveryOutcome,
        reason: Option<&str>,
    ) -> Result<(), SinkError> {
        let Some(log) = self.log.get() else { return Ok(()) };
        let mut r = DeliveryRecord::of(a, PROVIDER, attempt, outcome);
        if let Some(reason) = reason {
            r = r.because(reason);
        }
        log.record(&r)
    }

    fn skip(&self, a: &Action, reason: &'static str) -> Outcome {
        self.record(a, 0, DeliveryOutcome::Skipped, Some(reason))?;
        Ok(Delivery::Skipped(reason))
    }

    /// Put `item` into its batch; send the batch if that filled it, or
    /// start its timer if it is the first.
    fn enqueue(self: &Arc<Self>, op: Op, item: Item) {
        let mut batches = self.batches();
        let batch = batches.of(op);
        batch.items.push(item);
        if batch.items.len() >= self.batch_size {
            let items = self.take(batch);
            drop(batches);
            self.spawn_send(op, items);
        } else if batch.items.len() == 1 {
            let (inner, generation, wait) = (self.clone(), batch.generation, self.cfg.max_wait);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let mut batches = inner.batches();
                let batch = batches.of(op);
                if batch.generation == generation && !batch.items.is_empty() {
                    let items = inner.take(batch);
                    drop(batches);
                    inner.spawn_send(op, items);
                }
            });
        }
    }

    /// Take the batch's items (with the batches lock held) and count them in
    /// flight, so a flush that starts now waits for them.
    fn take(&self, batch: &mut Batch) -> Vec<Item> {
        batch.generation += 1;
        self.in_flight.send_modify(|n| *n += 1);
        std::mem::take(&mut batch.items)
    }

    fn spawn_send(self: &Arc<Self>, op: Op, items: Vec<Item>) {
        let guard = InFlight(self.clone());
        tokio::spawn(async move {
            let inner = guard.0.clone();
            inner.send(op, items).await;
            drop(guard);
        });
    }

    /// Send one batch (with retries), journal what it did, and tell each
    /// waiter its item's outcome.
    async fn send(&self, op: Op, items: Vec<Item>) {
        let end = self.call(op, &items).await;
        let now = self.now();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(items.len());
        {
            let mut j = self.journal();
            for it in &items {
                let a = &it.action;
                let (status, reason) = match &end {
                    BatchEnd::Answered(results) => match results.get(&it.grant_id) {
                        Some((s, r)) => (Some(*s), r.clone()),
                        None => (None, Some("no result for this grant_id".to_string())),
                    },
                    BatchEnd::Refused(r) | BatchEnd::GaveUp(r) => (None, Some(r.clone())),
                };
                let line = match (status, op) {
                    (Some(ItemStatus::Applied | ItemStatus::AlreadyApplied), Op::Grant) => Line::Grant {
                        action_id: a.action_id.clone(),
                        customer_id: a.customer_id.clone(),
                        incident_id: a.incident_id.to_string(),
                        until: a.until.unwrap_or(now),
                        at: now,
                    },
                    (Some(ItemStatus::Applied | ItemStatus::AlreadyApplied), Op::Revoke) => Line::Revoke {
                        action_id: a.action_id.clone(),
                        customer_id: a.customer_id.clone(),
                        incident_id: a.incident_id.to_string(),
                        sent: true,
                        at: now,
                    },
                    _ => Line::Failed {
                        action_id: a.action_id.clone(),
                        customer_id: a.customer_id.clone(),
                        incident_id: a.incident_id.to_string(),
                        kind: a.kind,
                        reason: reason.clone().unwrap_or_else(|| "rejected".into()),
                        at: now,
                    },
                };
                outcomes.push(j.write(&line).map(|()| match status {
                    Some(ItemStatus::Applied) => Delivery::Done,
                    Some(ItemStatus::AlreadyApplied) => Delivery::Duplicate,
                    _ => Delivery::Failed,
                }));
            }
            if let Err(e) = j.flush() {
                outcomes.iter_mut().for_each(|o| *o = Err(copy_err(&e)));
            }
        }
        for (it, outcome) in items.into_iter().zip(outcomes) {
            let a = &it.action;
            let logged = match (&outcome, &end) {
                (Ok(Delivery::Done | Delivery::Duplicate), _) => self.record(a, 0, DeliveryOutcome::Accepted, None),
                (Ok(_), BatchEnd::GaveUp(r)) => self.record(a, 0, DeliveryOutcome::GaveUp, Some(r)),
                (Ok(_), BatchEnd::Refused(r)) => self.record(a, 0, DeliveryOutcome::Permanent, Some(r)),
                (Ok(_), BatchEnd::Answered(results)) => {
                    let reason = match results.get(&it.grant_id) {
                        Some((_, r)) => r.as_deref().unwrap_or("rejected").to_string(),
                        None => "no result for this grant_id".into(),
                    };
                    tracing::warn!(
                        action_id = %a.action_id, customer_id = %a.customer_id,
                        msisdn = %crate::redact::msisdn(a.to.as_deref().unwrap_or_default()),
                        %reason, "data grant item rejected"
                    );
                    self.record(a, 0, DeliveryOutcome::Permanent, Some(&reason))
                }
                (Err(_), _) => Ok(()),
            };
            let outcome = match (outcome, logged) {
                (Ok(_), Err(e)) => Err(e),
                (o, _) => o,
            };
            // The waiter may have gone (its deliver was dropped): the
            // journal has the outcome anyway.
            let _ = it.tx.send(outcome);
        }
    }

    /// POST the batch until it is answered, refused, or retries run out.
    async fn call(&self, op: Op, items: &[Item]) -> BatchEnd {
        let (url, body) = match op {
            Op::Grant => {
                let grants: Vec<GrantItem<'_>> = items
                    .iter()
                    .map(|it| GrantItem {
                        grant_id: it.grant_id,
                        customer_id: &it.action.customer_id,
                        msisdn: it.action.to.as_deref().unwrap_or_default(),
                        incident_id: &it.action.incident_id.0,
                        until: it.action.until.unwrap_or_default(),
                    })
                    .collect();
                (&self.grants_url, serde_json::json!({ "grants": grants }))
            }
            Op::Revoke => {
                let revokes: Vec<RevokeItem<'_>> = items
                    .iter()
                    .map(|it| RevokeItem {
                        grant_id: it.grant_id,
                        customer_id: &it.action.customer_id,
                        msisdn: it.action.to.as_deref().unwrap_or_default(),
                        incident_id: &it.action.incident_id.0,
                    })
                    .collect();
                (&self.revokes_url, serde_json::json!({ "revokes": revokes }))
            }
        };
        let attempts = self.cfg.retries.saturating_add(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(url, &body).await {
                Attempt::Answered(r) => {
                    return BatchEnd::Answered(
                        r.results.into_iter().map(|r| (r.grant_id, (r.status, r.reason))).collect(),
                    )
                }
                Attempt::Refused(reason) => {
                    tracing::error!(%url, items = items.len(), %reason, "provisioning batch refused");
                    return BatchEnd::Refused(reason);
                }
                Attempt::Retry { reason, after } => {
                    tracing::warn!(%url, items = items.len(), attempt, %reason, "provisioning batch failed; retrying");
                    for it in items {
                        // Best effort: a delivery-log error surfaces with the outcome.
                        let _ = self.record(&it.action, attempt, DeliveryOutcome::Retry, Some(&reason));
                    }
                    last = reason;
                    if attempt < attempts {
                        let pause = after.map_or_else(|| backoff(attempt), |a| a.min(Duration::from_secs(30)));
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        tracing::error!(%url, items = items.len(), reason = %last, "provisioning batch: retries exhausted");
        BatchEnd::GaveUp(format!("retries exhausted: {last}"))
    }

    async fn attempt(&self, url: &str, body: &serde_json::Value) -> Attempt {
        let mut req = self.http.post(url).json(body);
        if let Some(token) = &self.cfg.token {
            req = req.bearer_auth(token);
        }
        let r = match req.send().await {
            Ok(r) => r,
            // Timeouts and connection errors: the platform may be fine later.
            Err(e) => {
                return Attempt::Retry { reason: format!("transport: {}", crate::tls::transport_error(e)), after: None }
            }
        };
        let status = r.status();
        let after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match r.text().await {
            Ok(t) => t,
            Err(e) => return Attempt::Retry { reason: format!("reading answer: {}", e.without_url()), after: None },
        };
        if status.is_success() {
            // Unreadable: we cannot tell what was done; items are idempotent,
            // so asking again is safe.
            match serde_json::from_str::<BatchResponse>(&text) {
                Ok(r) => Attempt::Answered(r),
                Err(e) => Attempt::Retry { reason: format!("HTTP {status}: unreadable answer: {e}"), after: None },
            }
        } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry { reason: format!("HTTP {status}: {}", snippet(&text)), after }
        } else {
            Attempt::Refused(format!("HTTP {status}: {}", snippet(&text)))
        }
    }
}

impl ActionSink for Provisioner {
    async fn deliver(&self, a: &Action) -> Result<Delivery, SinkError> {
        let inner = &self.inner;
        if a.channel != Channel::DataGrant {
            return Ok(Delivery::Skipped("not_a_data_grant"));
        }
        let op = match a.kind {
            ActionKind::Grant => Op::Grant,
            ActionKind::Revoke => Op::Revoke,
            other => {
                return Err(SinkError::Invalid {
                    action_id: a.action_id.clone(),
                    message: format!("data_grant action of kind {}", other.as_str()),
                })
            }
        };
        if op == Op::Grant && a.until.is_none() {
            return Err(SinkError::Invalid { action_id: a.action_id.clone(), message: "grant without until".into() });
        }
        {
            let mut j = inner.journal();
            if j.done.contains(&a.action_id) || !j.in_progress.insert(a.action_id.clone()) {
                return Ok(Delivery::Duplicate);
            }
        }
        let _claim = Claim { inner, action_id: a.action_id.clone() };
        match a.to.as_deref() {
            None | Some("") => return inner.skip(a, "no_contact"),
            Some(to) if !is_e164(to) => return inner.skip(a, "invalid_msisdn"),
            Some(_) => {}
        }
        if op == Op::Revoke {
            let mut j = inner.journal();
            let now = inner.now();
            if j.claimed_elsewhere(&a.customer_id, &a.incident_id.0, now) {
                j.write(&Line::Revoke {
                    action_id: a.action_id.clone(),
                    customer_id: a.customer_id.clone(),
                    incident_id: a.incident_id.to_string(),
                    sent: false,
                    at: now,
                })?;
                j.flush()?;
                drop(j);
                tracing::debug!(action_id = %a.action_id, customer_id = %a.customer_id, "revoke kept back: another incident still needs the grant");
                return inner.skip(a, "still_in_incident");
            }
        }
        let (tx, rx) = oneshot::channel();
        inner.enqueue(op, Item { action: a.clone(), grant_id: grant_id(&a.incident_id, &a.customer_id), tx });
        rx.await.unwrap_or_else(|_| {
            Err(SinkError::Io {
                path: inner.journal().out.path().to_path_buf(),
                source: std::io::Error::other("provisioning batch lost (runtime shutting down?)"),
            })
        })
    }

    /// The grants and revokes settled from the partitions just taken are
    /// done here too, and their claims count (in memory: read again from
    /// the deliveries topic at every start).
    async fn assigned(&self, handover: &super::handover::Handover) -> Result<(), SinkError> {
        let mut j = self.inner.journal();
        for r in &handover.grants {
            let (action_id, customer_id, incident_id, at) =
                (r.action_id.clone(), r.customer_id.clone(), r.incident_id.clone(), r.at);
            let line = match (r.kind, r.outcome, r.reason.as_deref()) {
                (ActionKind::Grant, DeliveryOutcome::Accepted, _) => {
                    Line::Grant { action_id, customer_id, incident_id, until: r.until.unwrap_or(at), at }
                }
                (ActionKind::Revoke, DeliveryOutcome::Accepted, _) => {
                    Line::Revoke { action_id, customer_id, incident_id, sent: true, at }
                }
                (ActionKind::Revoke, DeliveryOutcome::Skipped, Some("still_in_incident")) => {
                    Line::Revoke { action_id, customer_id, incident_id, sent: false, at }
                }
                (kind, DeliveryOutcome::Permanent | DeliveryOutcome::GaveUp, reason) => Line::Failed {
                    action_id,
                    customer_id,
                    incident_id,
                    kind,
                    reason: reason.unwrap_or_default().into(),
                    at,
                },
                _ => continue,
            };
            j.apply(&line);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let inner = &self.inner;
        let taken = {
            let mut batches = inner.batches();
            [Op::Grant, Op::Revoke].map(|op| {
                let batch = batches.of(op);
                (op, if batch.items.is_empty() { vec![] } else { inner.take(batch) })
            })
        };
        for (op, items) in taken {
            if !items.is_empty() {
                inner.spawn_send(op, items);
            }
        }
        let mut rx = inner.in_flight.subscribe();
        // The sender lives in `inner`, so this only ends at zero.
        let _ = rx.wait_for(|n| *n == 0).await;
        inner.journal().flush()?;
        match inner.log.get() {
            Some(log) => log.flush().await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;
    use crate::tls::Trust;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    use serde_json::{json, Value};
    use std::collections::VecDeque;

    const TOKEN: &str = "test-token";

    fn api() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/provisioning-api.v1.openapi.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every object schema that lists its properties rejects any other
    /// (not inside `if`, whose `properties` only test a condition): what we
    /// send must be documented, field by field.
    fn close(s: &mut Value) {
        match s {
            Value::Object(m) => {
                if m.contains_key("properties") {
                    m.insert("additionalProperties".into(), Value::Bool(false));
                }
                for (k, child) in m.iter_mut() {
                    if k != "if" {
                        close(child);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(close),
            _ => {}
        }
    }

    /// The schema at `$ref` (e.g. `#/components/schemas/Grant`) of the
    /// OpenAPI file, as a standalone Draft 2020-12 validator (closed).
    fn validator(api: &Value, reference: &str) -> jsonschema::Validator {
        let mut schemas = api["components"]["schemas"].clone();
        close(&mut schemas);
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": reference,
            "components": { "schemas": schemas },
        });
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{reference} does not compile: {e}"))
    }

    /// The `$ref` of a path's request body or 200 answer.
    fn schema_ref(api: &Value, path: &str, request: bool) -> String {
        let op = &api["paths"][path]["post"];
        let r = if request {
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        } else {
            let resp = op["responses"]["200"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
            api["components"]["responses"][resp]["content"]["application/json"]["schema"]["$ref"].as_str()
        };
        r.unwrap_or_else(|| panic!("{path}: no schema $ref")).to_string()
    }

    fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
        v.iter_errors(instance).map(|e| format!("at {}: {e}", e.instance_path())).collect()
    }

    #[derive(Default)]
    struct State {
        /// (path, items) of every request that passed auth and the schema.
        requests: Vec<(String, usize)>,
        /// Requests that broke the contract (bad token, bad body, bad answer).
        violations: Vec<String>,
        /// Statuses to answer before anything else, one per request.
        script: VecDeque<u16>,
        granted: HashSet<String>,
        revoked: HashSet<String>,
        /// Subscribers with unlimited data on, and until when.
        on: HashMap<String, String>,
    }

    /// A fake provisioning platform: checks the token and each body against
    /// the OpenAPI file, answers per item and keeps the subscribers' state.
    struct Platform {
        state: Mutex<State>,
        grants: jsonschema::Validator,
        revokes: jsonschema::Validator,
        answer: jsonschema::Validator,
    }

    impl Platform {
        fn state(&self) -> MutexGuard<'_, State> {
            self.state.lock().unwrap()
        }
        fn requests(&self, path: &str) -> Vec<usize> {
            self.state().requests.iter().filter(|(p, _)| p.ends_with(path)).map(|(_, n)| *n).collect()
        }
        fn is_on(&self, msisdn: &str) -> bool {
            self.state().on.contains_key(msisdn)
        }
        fn script(&self, statuses: &[u16]) {
            self.state().script.extend(statuses);
        }
        fn violations(&self) -> Vec<String> {
            self.state().violations.clone()
        }

        fn handle(&self, path: &str, headers: &HeaderMap, body: &[u8]) -> axum::response::Response {
            let mut s = self.state();
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
                return (StatusCode::UNAUTHORIZED, r#"{"error":"bad token"}"#).into_response();
            }
            let (validator, key) = match path {
                "/v1/data-grants:batch" => (&self.grants, "grants"),
                "/v1/data-revokes:batch" => (&self.revokes, "revokes"),
                _ => return StatusCode::NOT_FOUND.into_response(),
            };
            let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let errs = errors(validator, &body);
            if !errs.is_empty() {
                s.violations.push(format!("{path}: {errs:?}"));
                return (StatusCode::BAD_REQUEST, r#"{"error":"schema"}"#).into_response();
            }
            let items = body[key].as_array().unwrap();
            s.requests.push((path.into(), items.len()));
            if let Some(code) = s.script.pop_front() {
                let r = (StatusCode::from_u16(code).unwrap(), r#"{"error":"scripted, +15551230100"}"#);
                return r.into_response();
            }
            let mut results = vec![];
            for it in items {
                let (id, msisdn) = (it["grant_id"].as_str().unwrap().to_string(), it["msisdn"].as_str().unwrap());
                let r = if msisdn.ends_with("0000") {
                    json!({ "grant_id": id, "status": "rejected", "reason": "unknown_subscriber" })
                } else if key == "grants" {
                    let status = if s.granted.insert(id.clone()) { "applied" } else { "already_applied" };
                    let until = it["until"].as_str().unwrap().to_string();
                    let on = s.on.entry(msisdn.into()).or_default();
                    *on = on.clone().max(until);
                    json!({ "grant_id": id, "status": status })
                } else {
                    let fresh = s.revoked.insert(id.clone());
                    let status = if fresh && s.on.remove(msisdn).is_some() { "applied" } else { "already_applied" };
                    json!({ "grant_id": id, "status": status })
                };
                results.push(r);
            }
            let answer = json!({ "results": results });
            let errs = errors(&self.answer, &answer);
            if !errs.is_empty() {
                s.violations.push(format!("answer of {path}: {errs:?}"));
            }
            axum::Json(answer).into_response()
        }
    }

    async fn platform() -> (String, Arc<Platform>) {
        let api = api();
        let p = Arc::new(Platform {
            state: Mutex::default(),
            grants: validator(&api, &schema_ref(&api, "/v1/data-grants:batch", true)),
            revokes: validator(&api, &schema_ref(&api, "/v1/data-revokes:batch", true)),
            answer: validator(&api, &schema_ref(&api, "/v1/data-grants:batch", false)),
        });
        assert_eq!(schema_ref(&api, "/v1/data-grants:batch", false), schema_ref(&api, "/v1/data-revokes:batch", false));
        let handler = {
            let p = p.clone();
            move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let p = p.clone();
                async move { p.handle(uri.path(), &headers, &body) }
            }
        };
        let app = axum::Router::new()
            .route("/v1/data-grants:batch", axum::routing::post(handler.clone()))
            .route("/v1/data-revokes:batch", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, p)
    }

    fn cfg(url: &str) -> ProvisioningConfig {
        ProvisioningConfig {
            token: Some(TOKEN.into()),
            batch_size: 3,
            max_wait: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            ..ProvisioningConfig::new(url)
        }
    }

    fn inc(s: &str) -> IncidentId {
        IncidentId(format!("INC-20261123-{s}").into())
    }

    fn action(incident: &str, customer: &str, msisdn: &str, kind: ActionKind, until: DateTime<Utc>) -> Action {
        let incident_id = inc(incident);
        Action {
            action_id: Action::key(&incident_id, customer, Channel::DataGrant, kind),
            incident_id,
            customer_id: customer.into(),
            channel: Channel::DataGrant,
            kind,
            to: Some(msisdn.into()),
            language: "en".into(),
            message: None,
            until: Some(until),
            credit: None,
            planned_at: Utc::now(),
            not_before: None,
            follows: None,
            skip: None,
        }
    }

    fn grant(incident: &str, customer: &str, msisdn: &str) -> Action {
        action(incident, customer, msisdn, ActionKind::Grant, Utc::now() + chrono::Duration::hours(2))
    }

    fn revoke(incident: &str, customer: &str, msisdn: &str) -> Action {
        action(incident, customer, msisdn, ActionKind::Revoke, Utc::now())
    }

    async fn deliver_all(p: &Provisioner, actions: &[Action]) -> Vec<Delivery> {
        futures::future::join_all(actions.iter().map(|a| p.deliver(a))).await.into_iter().map(Result::unwrap).collect()
    }

    fn journal(dir: &Path) -> Vec<Line> {
        let body = std::fs::read_to_string(dir.join(JOURNAL)).unwrap();
        body.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn batches_hold_batch_size_items_and_a_reopened_sink_sends_nothing_again() {
        let (url, platform) = platform().await;
        let d = tempfile::tempdir().unwrap();
        let grants: Vec<Action> =
            (1..=7).map(|i| grant("0000000a", &format!("C{i}"), &format!("+1401555010{i}"))).collect();
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap();
        assert_eq!(deliver_all(&p, &grants).await, [Delivery::Done; 7]);
        let mut sizes = platform.requests("data-grants:batch");
        sizes.sort();
        assert_eq!(sizes, [1, 3, 3], "7 actions, batch_size 3: ceil(7/3) requests");
        assert!((1..=7).all(|i| platform.is_on(&format!("+1401555010{i}"))));
        assert_eq!(deliver_all(&p, &grants[..2]).await, [Delivery::Duplicate; 2]);
        p.flush().await.unwrap();
        drop(p);

        // Restart: the journal says what was done; nothing goes again.
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap();
        assert_eq!(deliver_all(&p, &grants).await, [Delivery::Duplicate; 7]);
        let r = revoke("0000000a", "C1", "+14015550101");
        assert_eq!(p.deliver(&r).await.unwrap(), Delivery::Done);
        drop(p);
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap();
        assert_eq!(p.deliver(&r).await.unwrap(), Delivery::Duplicate);
        assert_eq!(platform.requests("data-grants:batch").len(), 3);
        assert_eq!(platform.requests("data-revokes:batch"), [1]);
        assert!(!platform.is_on("+14015550101") && platform.is_on("+14015550102"));
        let lines = journal(d.path());
        assert_eq!(lines.len(), 8);
        assert!(!std::fs::read_to_string(d.path().join(JOURNAL)).unwrap().contains("5550101"), "no MSISDN");
        assert_eq!(platform.violations(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn flush_sends_a_partial_batch_at_once() {
        let (url, platform) = platform().await;
        let d = tempfile::tempdir().unwrap();
        let slow = ProvisioningConfig { batch_size: 500, max_wait: Duration::from_secs(60), ..cfg(&url) };
        let p = Provisioner::open(d.path(), slow, &Trust::default()).unwrap();
        let grants = [grant("0000000b", "C1", "+14015550201"), grant("0000000b", "C2", "+14015550202")];
        let run = async {
            let flushing = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                p.flush().await.unwrap();
            };
            tokio::join!(deliver_all(&p, &grants), flushing).0
        };
        let done = tokio::time::timeout(Duration::from_secs(5), run).await.expect("flush sends without max_wait");
        assert_eq!(done, [Delivery::Done; 2]);
        assert_eq!(platform.requests("data-grants:batch"), [2]);
        p.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_customer_in_two_incidents_keeps_the_grant_until_the_last_one_ends() {
        let (url, platform) = platform().await;
        let d = tempfile::tempdir().unwrap();
        let (c1, c2) = ("+14015550301", "+14015550302");
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap();
        for a in [grant("0000000x", "C1", c1), grant("0000000y", "C1", c1), grant("0000000x", "C2", c2)] {
            assert_eq!(p.deliver(&a).await.unwrap(), Delivery::Done, "a second incident's grant is sent too");
        }
        assert_eq!(platform.requests("data-grants:batch"), [1, 1, 1]);
        assert_eq!(p.claims("C1"), ["INC-20261123-0000000x", "INC-20261123-0000000y"]);

        // X ends: C1 is still in Y and keeps the grant; C2 is revoked.
        let r = deliver_all(&p, &[revoke("0000000x", "C1", c1), revoke("0000000x", "C2", c2)]).await;
        assert_eq!(r, [Delivery::Skipped("still_in_incident"), Delivery::Done]);
        assert_eq!(platform.requests("data-revokes:batch"), [1]);
        assert!(platform.is_on(c1) && !platform.is_on(c2));
        assert_eq!(p.claims("C1"), ["INC-20261123-0000000y"]);
        drop(p);

        // After a restart the count is the same; Y's end revokes.
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap();
        assert_eq!(p.deliver(&revoke("0000000x", "C1", c1)).await.unwrap(), Delivery::Duplicate);
        assert_eq!(p.deliver(&revoke("0000000y", "C1", c1)).await.unwrap(), Delivery::Done);
        assert!(!platform.is_on(c1));
        assert_eq!(platform.requests("data-revokes:batch"), [1, 1]);
        assert!(p.claims("C1").is_empty());

        // Another incident whose grant has run out (`until` passed) does
        // not keep the grant.
        let c3 = "+14015550303";
        let expired = action("0000000z", "C3", c3, ActionKind::Grant, Utc::now() - chrono::Duration::minutes(1));
        assert_eq!(p.deliver(&grant("0000000x", "C3", c3)).await.unwrap(), Delivery::Done);
        assert_eq!(p.deliver(&expired).await.unwrap(), Delivery::Done);
        assert_eq!(p.deliver(&revoke("0000000x", "C3", c3)).await.unwrap(), Delivery::Done);
        assert!(!platform.is_on(c3));
        assert_eq!(platform.violations(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_5xx_is_retried_and_a_4xx_is_recorded_and_not_retried() {
        let (url, platform) = platform().await;
        let d = tempfile::tempdir().unwrap();
        let log = Arc::new(DeliveryLog::open(d.path(), None).unwrap());
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap().with_log(log.clone());

        platform.script(&[503]);
        assert_eq!(p.deliver(&grant("0000000e", "C1", "+14015550401")).await.unwrap(), Delivery::Done);
        assert_eq!(platform.requests("data-grants:batch"), [1, 1], "503, then the same batch again");

        platform.script(&[400]);
        let refused = grant("0000000e", "C2", "+14015550402");
        assert_eq!(p.deliver(&refused).await.unwrap(), Delivery::Failed);
        assert_eq!(platform.requests("data-grants:batch").len(), 3, "a 400 is not retried");
        assert!(!p.is_done(&refused.action_id) && !platform.is_on("+14015550402"));

        platform.script(&[503, 429, 500, 502]);
        let gave_up = grant("0000000e", "C3", "+14015550403");
        assert_eq!(p.deliver(&gave_up).await.unwrap(), Delivery::Failed);
        assert_eq!(platform.requests("data-grants:batch").len(), 7, "retries 3: four attempts");

        // One rejected item fails alone; the rest of its batch is done.
        let mixed = [grant("0000000e", "C4", "+14015550000"), grant("0000000e", "C5", "+14015550405")];
        assert_eq!(deliver_all(&p, &mixed).await, [Delivery::Failed, Delivery::Done]);
        assert_eq!(platform.requests("data-grants:batch").len(), 8);

        // A wrong token is permanent too.
        let d2 = tempfile::tempdir().unwrap();
        let bad = Provisioner::open(
            d2.path(),
            ProvisioningConfig { token: Some("nope".into()), ..cfg(&url) },
            &Trust::default(),
        )
        .unwrap();
        assert_eq!(bad.deliver(&grant("0000000e", "C6", "+14015550406")).await.unwrap(), Delivery::Failed);
        assert_eq!(platform.requests("data-grants:batch").len(), 8, "401 before the platform counted it");

        // Failures are recorded, not journalled as done: a replay tries
        // again.
        p.flush().await.unwrap();
        let failed: Vec<(String, String)> = journal(d.path())
            .into_iter()
            .filter_map(|l| match l {
                Line::Failed { customer_id, reason, .. } => Some((customer_id, reason)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 3, "{failed:?}");
        assert!(failed[0].0 == "C2" && failed[0].1.starts_with("HTTP 400"), "{failed:?}");
        assert!(failed[1].0 == "C3" && failed[1].1.starts_with("retries exhausted: HTTP 502"), "{failed:?}");
        assert_eq!(failed[2], ("C4".into(), "unknown_subscriber".into()));
        assert!(failed.iter().all(|(_, r)| !r.contains("5551230100")), "numbers in error bodies are masked");
        assert_eq!(p.deliver(&refused).await.unwrap(), Delivery::Done);

        p.flush().await.unwrap();
        let records: Vec<DeliveryRecord> = std::fs::read_to_string(d.path().join("deliveries.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let of = |c: &str| records.iter().filter(|r| r.customer_id == c).map(|r| r.outcome).collect::<Vec<_>>();
        use DeliveryOutcome::*;
        assert_eq!(of("C1"), [Retry, Accepted]);
        assert_eq!(of("C2"), [Permanent, Accepted]);
        assert_eq!(of("C3"), [Retry, Retry, Retry, Retry, GaveUp]);
        assert_eq!(of("C4"), [Permanent]);
        assert!(records.iter().all(|r| r.provider == PROVIDER && !r.to.contains("55504")), "masked");
        assert_eq!(platform.violations(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn other_actions_are_skipped_or_refused_and_routed_past() {
        let (url, platform) = platform().await;
        let d = tempfile::tempdir().unwrap();
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap();
        let mut sms = grant("0000000f", "C1", "+14015550501");
        (sms.channel, sms.kind, sms.until) = (Channel::Sms, ActionKind::Down, None);
        sms.action_id = Action::key(&sms.incident_id, "C1", Channel::Sms, ActionKind::Down);
        sms.message = Some(Message { subject: None, text: "outage".into() });
        assert_eq!(p.deliver(&sms).await.unwrap(), Delivery::Skipped("not_a_data_grant"));
        let mut down = grant("0000000f", "C1", "+14015550501");
        down.kind = ActionKind::Down;
        assert!(matches!(p.deliver(&down).await, Err(SinkError::Invalid { .. })));
        let mut no_until = grant("0000000f", "C1", "+14015550501");
        no_until.until = None;
        assert!(matches!(p.deliver(&no_until).await, Err(SinkError::Invalid { .. })));
        let mut no_contact = grant("0000000f", "C2", "+14015550502");
        no_contact.to = None;
        assert_eq!(p.deliver(&no_contact).await.unwrap(), Delivery::Skipped("no_contact"));
        let bad = grant("0000000f", "C3", "0034600");
        assert_eq!(p.deliver(&bad).await.unwrap(), Delivery::Skipped("invalid_msisdn"));
        assert!(platform.requests("").is_empty());

        // Routed next to the outbox: grants here, notices there.
        let outbox = crate::sinks::outbox::Outbox::open(&d.path().join("out")).unwrap();
        let credits = crate::sinks::outbox::Outbox::open(&d.path().join("credits")).unwrap();
        let both = crate::sinks::route::Routes { notices: outbox, grants: Some(p), credits };
        assert_eq!(both.deliver(&sms).await.unwrap(), Delivery::Done);
        assert_eq!(both.deliver(&grant("0000000f", "C1", "+14015550501")).await.unwrap(), Delivery::Done);
        both.flush().await.unwrap();
        assert!(both.notices.contains(&sms));
        assert_eq!(platform.requests("data-grants:batch"), [1]);
    }

    #[tokio::test]
    async fn a_grant_counts_until_its_until_by_the_clock_given() {
        struct At(DateTime<Utc>);
        impl Clock for At {
            fn now(&self) -> DateTime<Utc> {
                self.0
            }
        }
        let (url, platform) = platform().await;
        let d = tempfile::tempdir().unwrap();
        let c1 = "+14015550601";
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap();
        for a in [grant("0000000g", "C1", c1), grant("0000000h", "C1", c1)] {
            assert_eq!(p.deliver(&a).await.unwrap(), Delivery::Done);
        }
        drop(p);
        // Three hours on, both grants' `until` (two hours) have passed.
        let later = Arc::new(At(Utc::now() + chrono::Duration::hours(3)));
        let p = Provisioner::open(d.path(), cfg(&url), &Trust::default()).unwrap().with_clock(later);
        assert_eq!(p.deliver(&revoke("0000000g", "C1", c1)).await.unwrap(), Delivery::Done);
        assert!(!platform.is_on(c1));
    }

    #[test]
    fn config_parses_with_documented_defaults_and_never_shows_the_token() {
        let c: ProvisioningConfig =
            toml::from_str("url = \"https://prov.example.net\"\ntoken = \"s3cret\"\nmax_wait = \"50ms\"\n").unwrap();
        assert_eq!(
            c,
            ProvisioningConfig {
                token: Some("s3cret".into()),
                max_wait: Duration::from_millis(50),
                ..ProvisioningConfig::new("https://prov.example.net")
            }
        );
        assert_eq!((c.batch_size, c.timeout, c.retries), (500, Duration::from_secs(10), 3));
        assert_eq!(ProvisioningConfig::new("x").max_wait, Duration::from_millis(200));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && shown.contains("<redacted>"), "{shown}");
        assert!(toml::from_str::<ProvisioningConfig>("url = \"x\"\nbatchsize = 5\n").is_err(), "unknown field");
        assert!(toml::from_str::<ProvisioningConfig>("token = \"t\"\n").is_err(), "url is required");
    }

    #[test]
    fn grant_ids_are_stable_and_the_api_example_is_one() {
        let id = grant_id(&IncidentId("INC-20261123-3f9a1c2e".into()), "C00021236");
        assert_eq!(id, grant_id(&IncidentId("INC-20261123-3f9a1c2e".into()), "C00021236"));
        assert_ne!(id, grant_id(&IncidentId("INC-20261123-3f9a1c2e".into()), "C00021237"));
        let api = api();
        let s = &api["components"]["schemas"];
        assert_eq!(s["GrantId"]["examples"][0], id.to_string());
        assert_eq!(s["IncidentId"]["examples"][0], "INC-20261123-3f9a1c2e");
        assert_eq!(s["CustomerId"]["examples"][0], "C00021236");
    }

    #[test]
    fn numbers_in_answers_are_masked() {
        assert_eq!(mask_numbers("no subscriber +15551230100 (code 404)"), "no subscriber +1555•••0100 (code 404)");
        assert_eq!(snippet(r#"{"error":"bad 34600000001"}"#), "bad 34600•••0001");
    }
}
