//! The delivery engine behind the actions topic. Owns what happens to one
//! notice: the contact is checked (E.164, e-mail address) and a bad one is
//! skipped with its reason; each provider is held to its rate
//! (governor); retriable failures are retried with exponential backoff and
//! full jitter, moving to the next SMS provider while one keeps failing;
//! permanent failures are recorded, not retried. Every attempt and result
//! goes to `deliveries.jsonl` (contacts masked), so "why did customer X not
//! get message Y?" has an answer.
//!
//! Exactly once, as far as a gateway allows: a notice is journalled in its
//! outbox file (keyed by `action_id`) as soon as its gateway accepts it, and
//! a journalled notice is never sent again, across restarts. The window a
//! crash can re-send is the one notice in flight per dispatcher.
//!
//! Data grants and credits still go to their outboxes (their provisioning
//! and billing adapters come with the remedies issue).

use super::email::Smtp;
use super::outbox::Outbox;
use super::sms::{Outcome, Provider, Sms, SmsGateway};
use super::{ActionSink, Delivery, SinkError};
use crate::config::{RetryConfig, SinksConfig};
use crate::model::{Action, ActionKind, Channel};
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One line of `deliveries.jsonl`.
#[derive(Debug, Serialize)]
pub struct DeliveryRecord<'a> {
    pub at: DateTime<Utc>,
    pub action_id: &'a str,
    pub incident_id: &'a str,
    pub customer_id: &'a str,
    pub channel: Channel,
    pub kind: ActionKind,
    /// Masked contact.
    pub to: String,
    pub provider: &'a str,
    pub attempt: u32,
    /// `accepted`, `retry`, `permanent`, `skipped` or `gave_up`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A valid E.164 number: `+`, a non-zero digit, 7 to 15 digits in all.
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else { return false };
    (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

/// Why a notice's contact cannot be used, if it cannot.
pub fn bad_contact(a: &Action) -> Option<&'static str> {
    match (a.channel, a.to.as_deref()) {
        (Channel::Sms | Channel::Email, None | Some("")) => Some("no_contact"),
        (Channel::Sms, Some(to)) if !is_e164(to) => Some("invalid_msisdn"),
        (Channel::Email, Some(to)) if to.parse::<lettre::Address>().is_err() => Some("invalid_email"),
        _ => None,
    }
}

/// Backoff before attempt `n + 1` (n ≥ 1): uniform in [0, min(max, base·2ⁿ⁻¹)].
pub fn backoff(r: &RetryConfig, n: u32, rng: &mut impl Rng) -> Duration {
    let cap = r.base.saturating_mul(1u32 << (n - 1).min(20)).min(r.max);
    Duration::from_nanos(rng.random_range(0..=cap.as_nanos() as u64))
}

struct Route {
    gateway: Provider,
    limiter: DefaultDirectRateLimiter,
    /// Consecutive retriable failures.
    failures: u32,
    resting_until: Option<Instant>,
}

fn limiter(per_second: u32) -> DefaultDirectRateLimiter {
    // Burst 1: never above the rate, even right after an idle spell.
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN))
}

pub struct Notifier {
    outbox: Outbox,
    deliveries: BufWriter<File>,
    deliveries_path: PathBuf,
    sms: Vec<Route>,
    email: Option<(Smtp, DefaultDirectRateLimiter)>,
    retry: RetryConfig,
}

impl Notifier {
    /// `None` when no gateway is configured (notices stay in the outboxes).
    pub fn from_config(cfg: &SinksConfig) -> Result<Option<Self>, SinkError> {
        if cfg.sms.is_empty() && cfg.email.is_none() {
            return Ok(None);
        }
        let outbox = Outbox::open(&cfg.outbox_dir)?;
        let deliveries_path = cfg.outbox_dir.join("deliveries.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&deliveries_path)
            .map_err(|source| SinkError::Io { path: deliveries_path.clone(), source })?;
        let sms = cfg
            .sms
            .iter()
            .map(|p| Route {
                limiter: limiter(p.rate_per_second),
                gateway: Provider::new(p.clone()),
                failures: 0,
                resting_until: None,
            })
            .collect();
        let email = match &cfg.email {
            Some(e) => Some((Smtp::new(e.clone())?, limiter(e.rate_per_second))),
            None => None,
        };
        Ok(Some(Notifier {
            outbox,
            deliveries: BufWriter::new(file),
            deliveries_path,
            sms,
            email,
            retry: cfg.retry.clone(),
        }))
    }

    fn record(&mut self, a: &Action, provider: &str, attempt: u32, outcome: &Outcome) -> Result<(), SinkError> {
        let (outcome, reason, reference) = match outcome {
            Outcome::Accepted { reference } => ("accepted", None, reference.clone()),
            Outcome::Retry { reason } => ("retry", Some(reason.clone()), None),
            Outcome::Permanent { reason } => ("permanent", Some(reason.clone()), None),
        };
        self.write_record(a, provider, attempt, outcome, reason, reference)
    }

    fn write_record(
        &mut self,
        a: &Action,
        provider: &str,
        attempt: u32,
        outcome: &'static str,
        reason: Option<String>,
        reference: Option<String>,
    ) -> Result<(), SinkError> {
        let r = DeliveryRecord {
            at: Utc::now(),
            action_id: &a.action_id,
            incident_id: &a.incident_id.0,
            customer_id: &a.customer_id,
            channel: a.channel,
            kind: a.kind,
            to: a.to.as_deref().map(crate::redact::contact).unwrap_or_default(),
            provider,
            attempt,
            outcome,
            reason,
            reference,
        };
        let io = |source| SinkError::Io { path: self.deliveries_path.clone(), source };
        serde_json::to_writer(&mut self.deliveries, &r).map_err(|e| io(e.into()))?;
        self.deliveries.write_all(b"\n").map_err(io)
    }

    /// The route to try next: the first one not resting, else the one that
    /// wakes first.
    fn pick(&self) -> usize {
        let now = Instant::now();
        self.sms
            .iter()
            .position(|r| r.resting_until.is_none_or(|t| t <= now))
            .or_else(|| (0..self.sms.len()).min_by_key(|&i| self.sms[i].resting_until))
            .unwrap_or(0)
    }

    async fn send_sms(&mut self, a: &Action) -> Result<Delivery, SinkError> {
        let text = a.message.as_ref().map(|m| m.text.as_str()).unwrap_or_default();
        let to = a.to.as_deref().unwrap_or_default();
        for attempt in 1..=self.retry.max_attempts {
            let i = self.pick();
            let route = &self.sms[i];
            route.limiter.until_ready().await;
            let outcome = route.gateway.send(&Sms { to, text, action_id: &a.action_id }).await;
            let name = route.gateway.name().to_string();
            self.record(a, &name, attempt, &outcome)?;
            let route = &mut self.sms[i];
            match outcome {
                Outcome::Accepted { .. } => {
                    route.failures = 0;
                    route.resting_until = None;
                    return self.journal(a);
                }
                Outcome::Permanent { reason } => {
                    tracing::warn!(action_id = %a.action_id, provider = %name, %reason, "SMS refused");
                    return Ok(Delivery::Failed);
                }
                Outcome::Retry { reason } => {
                    route.failures += 1;
                    if route.failures >= self.retry.failover_after {
                        route.resting_until = Some(Instant::now() + self.retry.cooldown);
                        tracing::warn!(provider = %name, %reason, "SMS provider keeps failing; passing it over");
                    }
                    if attempt < self.retry.max_attempts {
                        let pause = backoff(&self.retry, attempt, &mut rand::rng());
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        self.write_record(a, "", self.retry.max_attempts, "gave_up", Some("retries exhausted".into()), None)?;
        Ok(Delivery::Failed)
    }

    async fn send_email(&mut self, a: &Action) -> Result<Delivery, SinkError> {
        for attempt in 1..=self.retry.max_attempts {
            let Some((smtp, limiter)) = &self.email else { break };
            limiter.until_ready().await;
            let outcome = smtp.send(a).await;
            self.record(a, "smtp", attempt, &outcome)?;
            match outcome {
                Outcome::Accepted { .. } => return self.journal(a),
                Outcome::Permanent { .. } => return Ok(Delivery::Failed),
                Outcome::Retry { .. } if attempt < self.retry.max_attempts => {
                    let pause = backoff(&self.retry, attempt, &mut rand::rng());
                    tokio::time::sleep(pause).await;
                }
                Outcome::Retry { .. } => {}
            }
        }
        self.write_record(a, "smtp", self.retry.max_attempts, "gave_up", Some("retries exhausted".into()), None)?;
        Ok(Delivery::Failed)
    }

    /// Journal an accepted notice at once: this is what stops a restart
    /// from sending it again.
    fn journal(&mut self, a: &Action) -> Result<Delivery, SinkError> {
        self.outbox.deliver_now(a)?;
        self.outbox.flush_now()?;
        Ok(Delivery::Done)
    }
}

impl ActionSink for Notifier {
    async fn deliver(&mut self, a: &Action) -> Result<Delivery, SinkError> {
        if self.outbox.contains(a) {
            return Ok(Delivery::Duplicate);
        }
        let gateway = match a.channel {
            Channel::Sms => !self.sms.is_empty(),
            Channel::Email => self.email.is_some(),
            _ => false,
        };
        if !gateway {
            return self.outbox.deliver_now(a);
        }
        if let Some(reason) = bad_contact(a) {
            self.write_record(a, "", 0, "skipped", Some(reason.into()), None)?;
            return Ok(Delivery::Skipped(reason));
        }
        match a.channel {
            Channel::Sms => self.send_sms(a).await,
            _ => self.send_email(a).await,
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.outbox.flush_now()?;
        self.deliveries.flush().map_err(|source| SinkError::Io { path: self.deliveries_path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn e164_numbers_are_checked() {
        assert!(is_e164("+34600000001"));
        assert!(is_e164("+14015550101"));
        for bad in ["34600000001", "+0346000000", "+34 600 000 001", "+12345", "+1234567890123456", "+", ""] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_with_full_jitter() {
        let r = RetryConfig { base: Duration::from_millis(100), max: Duration::from_secs(1), ..Default::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in 1..=10 {
            let cap = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_secs(1));
            let samples: Vec<Duration> = (0..200).map(|_| backoff(&r, n, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "attempt {n}");
            assert!(samples.iter().any(|d| *d > cap / 2), "jitter spans the range at attempt {n}");
            assert!(samples.iter().any(|d| *d < cap / 2), "jitter spans the range at attempt {n}");
        }
    }
}
