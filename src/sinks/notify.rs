//! The delivery engine behind the actions topic. Owns what happens to one
//! notice: the contact is checked (E.164, e-mail address) and a bad one is
//! skipped with its reason; a follow-up (restored, ETR update, cancelled) is
//! sent only on a channel whose "down" notice a gateway accepted; each
//! provider is held to its rate ([`Pacer`]) and its concurrent requests
//! (a semaphore); retriable failures are retried with exponential backoff
//! and full jitter, moving to the next SMS provider while one keeps
//! failing; permanent failures are recorded, not retried. Every attempt and
//! result goes to the [`DeliveryLog`] (contacts masked), so "why did customer
//! X not get message Y?" has an answer.
//!
//! Exactly once, as far as a gateway allows: a notice is journalled in its
//! outbox file (keyed by `action_id`) as soon as its gateway accepts it, and
//! a journalled notice is never sent again, across restarts. What a crash can
//! re-send is what was in flight: at most one notice per dispatcher lane.
//!
//! Shared (`&self`) by the dispatcher's concurrent lanes.
//!
//! Data grants and credits still go to their outboxes (their provisioning
//! and billing adapters come with the remedies issue).

use super::deliveries::{DeliveryLog, DeliveryOutcome, DeliveryRecord};
use super::email::Smtp;
use super::outbox::Outbox;
use super::sms::{Outcome, Provider, Sms, SmsGateway};
use super::{ActionSink, Delivery, SinkError};
use crate::config::{RetryConfig, SinksConfig};
use crate::model::{Action, ActionKind, Channel};
use crate::tls::Trust;
use rand::Rng;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

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

/// One SMS provider and the limits it is held to.
struct Route {
    gateway: Provider,
    pacer: Pacer,
    in_flight: Semaphore,
    /// Consecutive retriable failures.
    failures: AtomicU32,
    resting_until: Mutex<Option<Instant>>,
}

impl Route {
    fn resting_until(&self) -> Option<Instant> {
        *self.resting_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rest(&self, until: Option<Instant>) {
        *self.resting_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }
}

/// Paces sends to at most `per_second`. Each caller reserves the next slot
/// (one interval after the previous one, never before now) and sleeps until
/// it: a late wake-up delays that one send, it does not lose the slot's
/// share of the rate (a check-then-sleep limiter with burst 1 — governor's
/// `until_ready` — reached only 0.4–0.7 of the limit at 2 000–20 000/s
/// here). An idle spell banks nothing. Then a sliding-window gate makes the
/// limit hard: a send waits until the one `per_second` sends before it is a
/// second old, so no second ever holds more, however sends bunch after a
/// stall.
pub struct Pacer {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
    /// When each of the last `per_second` sends went (a ring).
    window: tokio::sync::Mutex<(Vec<Option<tokio::time::Instant>>, usize)>,
}

impl Pacer {
    pub fn new(per_second: u32) -> Self {
        // 1 % headroom (above 100/s): the gate counts when we send, the
        // gateway when the request arrives, and requests leaving a busy
        // runtime arrive bunched by a few milliseconds.
        let n = (per_second - per_second / 100).max(1);
        // Rounded up: pacing alone never exceeds the rate.
        let interval = Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(n)));
        Pacer {
            interval,
            next: Mutex::new(tokio::time::Instant::now()),
            window: tokio::sync::Mutex::new((vec![None; n as usize], 0)),
        }
    }

    /// Wait for this caller's turn.
    pub async fn ready(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
        let mut window = self.window.lock().await;
        let (ring, i) = &mut *window;
        if let Some(oldest) = ring[*i] {
            tokio::time::sleep_until(oldest + Duration::from_secs(1)).await;
        }
        ring[*i] = Some(tokio::time::Instant::now());
        *i = (*i + 1) % ring.len();
    }
}

pub struct Notifier {
    outbox: Outbox,
    log: Arc<DeliveryLog>,
    sms: Vec<Route>,
    email: Option<(Smtp, Pacer, Semaphore)>,
    retry: RetryConfig,
}

/// Whether a notice of this kind follows up on a "down" notice.
fn follows_up(kind: ActionKind) -> bool {
    matches!(kind, ActionKind::Restored | ActionKind::EtrUpdate | ActionKind::Cancelled)
}

impl Notifier {
    /// `None` when no gateway is configured (notices stay in the outboxes).
    /// `trust`: the roots HTTPS and SMTP TLS trust (`sinks.tls`).
    pub fn from_config(cfg: &SinksConfig, trust: &Trust, log: Arc<DeliveryLog>) -> Result<Option<Self>, SinkError> {
        if cfg.sms.is_empty() && cfg.email.is_none() {
            return Ok(None);
        }
        let sms = cfg
            .sms
            .iter()
            .map(|p| {
                Ok(Route {
                    pacer: Pacer::new(p.rate_per_second),
                    in_flight: Semaphore::new(p.max_in_flight.max(1) as usize),
                    gateway: Provider::new(p.clone(), trust)?,
                    failures: AtomicU32::new(0),
                    resting_until: Mutex::new(None),
                })
            })
            .collect::<Result<_, SinkError>>()?;
        let email = match &cfg.email {
            Some(e) => Some((
                Smtp::new(e.clone(), trust)?,
                Pacer::new(e.rate_per_second),
                Semaphore::new(e.pool_size.max(1) as usize),
            )),
            None => None,
        };
        Ok(Some(Notifier { outbox: Outbox::open(&cfg.outbox_dir)?, log, sms, email, retry: cfg.retry.clone() }))
    }

    fn record(&self, a: &Action, provider: &str, attempt: u32, outcome: &Outcome) -> Result<(), SinkError> {
        let r = match outcome {
            Outcome::Accepted { reference } => DeliveryRecord {
                reference: reference.clone(),
                ..DeliveryRecord::of(a, provider, attempt, DeliveryOutcome::Accepted)
            },
            Outcome::Retry { reason } => {
                DeliveryRecord::of(a, provider, attempt, DeliveryOutcome::Retry).because(reason)
            }
            Outcome::Permanent { reason } => {
                DeliveryRecord::of(a, provider, attempt, DeliveryOutcome::Permanent).because(reason)
            }
        };
        self.log.record(&r)
    }

    /// The route to try next: the first one not resting, else the one that
    /// wakes first.
    fn pick(&self) -> usize {
        let now = Instant::now();
        self.sms
            .iter()
            .position(|r| r.resting_until().is_none_or(|t| t <= now))
            .or_else(|| (0..self.sms.len()).min_by_key(|&i| self.sms[i].resting_until()))
            .unwrap_or(0)
    }

    async fn send_sms(&self, a: &Action) -> Result<Delivery, SinkError> {
        let text = a.message.as_ref().map(|m| m.text.as_str()).unwrap_or_default();
        let to = a.to.as_deref().unwrap_or_default();
        for attempt in 1..=self.retry.max_attempts {
            let route = &self.sms[self.pick()];
            let outcome = {
                let _permit = route.in_flight.acquire().await;
                route.pacer.ready().await;
                route.gateway.send(&Sms { to, text, action_id: &a.action_id }).await
            };
            let name = route.gateway.name();
            self.record(a, name, attempt, &outcome)?;
            match outcome {
                Outcome::Accepted { .. } => {
                    route.failures.store(0, Relaxed);
                    route.rest(None);
                    return self.journal(a);
                }
                Outcome::Permanent { reason } => {
                    tracing::warn!(action_id = %a.action_id, provider = %name, %reason, "SMS refused");
                    return Ok(Delivery::Failed);
                }
                Outcome::Retry { reason } => {
                    if route.failures.fetch_add(1, Relaxed) + 1 >= self.retry.failover_after {
                        route.rest(Some(Instant::now() + self.retry.cooldown));
                        tracing::warn!(provider = %name, %reason, "SMS provider keeps failing; passing it over");
                    }
                    if attempt < self.retry.max_attempts {
                        let pause = backoff(&self.retry, attempt, &mut rand::rng());
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        self.gave_up(a, "")
    }

    async fn send_email(&self, a: &Action) -> Result<Delivery, SinkError> {
        let Some((smtp, pacer, in_flight)) = &self.email else { return self.outbox.deliver_now(a) };
        for attempt in 1..=self.retry.max_attempts {
            let outcome = {
                let _permit = in_flight.acquire().await;
                pacer.ready().await;
                smtp.send(a).await
            };
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
        self.gave_up(a, "smtp")
    }

    fn gave_up(&self, a: &Action, provider: &str) -> Result<Delivery, SinkError> {
        let r = DeliveryRecord::of(a, provider, self.retry.max_attempts, DeliveryOutcome::GaveUp);
        self.log.record(&r.because("retries exhausted"))?;
        Ok(Delivery::Failed)
    }

    fn skip(&self, a: &Action, reason: &'static str) -> Result<Delivery, SinkError> {
        self.log.record(&DeliveryRecord::of(a, "", 0, DeliveryOutcome::Skipped).because(reason))?;
        Ok(Delivery::Skipped(reason))
    }

    /// Journal an accepted notice at once: this is what stops a restart
    /// from sending it again.
    fn journal(&self, a: &Action) -> Result<Delivery, SinkError> {
        self.outbox.deliver_now(a)?;
        self.outbox.flush_now()?;
        Ok(Delivery::Done)
    }
}

impl ActionSink for Notifier {
    async fn deliver(&self, a: &Action) -> Result<Delivery, SinkError> {
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
            return self.skip(a, reason);
        }
        // Actions of one customer arrive in order on one lane, so the
        // "down" notice has been settled by the time its follow-up comes.
        if follows_up(a.kind) {
            let down = Action::key(&a.incident_id, &a.customer_id, a.channel, ActionKind::Down);
            if !self.outbox.holds(a.channel, &down) {
                return self.skip(a, "not_told_down");
            }
        }
        match a.channel {
            Channel::Sms => self.send_sms(a).await,
            _ => self.send_email(a).await,
        }
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.outbox.flush_now()?;
        self.log.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SmsGatewayKind, SmsProviderConfig};
    use crate::model::{IncidentId, Message};
    use rand::SeedableRng;
    use std::sync::atomic::AtomicUsize;

    /// An in-process JSON gateway: answers each request with `status(to)`
    /// after `delay`, and counts what it saw.
    #[derive(Default)]
    struct Gateway {
        requests: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    async fn gateway(status: fn(&str) -> u16, delay: Duration) -> (String, Arc<Gateway>) {
        use axum::extract::State;
        use axum::http::StatusCode;
        let seen = Arc::new(Gateway::default());
        let handler = move |State(g): State<Arc<Gateway>>, axum::Json(v): axum::Json<serde_json::Value>| async move {
            g.requests.fetch_add(1, Relaxed);
            let now = g.in_flight.fetch_add(1, Relaxed) + 1;
            g.most_in_flight.fetch_max(now, Relaxed);
            tokio::time::sleep(delay).await;
            g.in_flight.fetch_sub(1, Relaxed);
            let code = status(v["to"].as_str().unwrap_or_default());
            (StatusCode::from_u16(code).unwrap(), r#"{"id":"m1"}"#)
        };
        let app = axum::Router::new().route("/send", axum::routing::post(handler)).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn provider(name: &str, url: &str, max_in_flight: u32) -> SmsProviderConfig {
        SmsProviderConfig {
            name: name.into(),
            kind: SmsGatewayKind::Json,
            url: url.into(),
            rate_per_second: 10_000,
            max_in_flight,
            ..Default::default()
        }
    }

    fn notifier(dir: &std::path::Path, sms: Vec<SmsProviderConfig>) -> Notifier {
        let cfg = SinksConfig {
            outbox_dir: dir.into(),
            sms,
            retry: RetryConfig {
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
                failover_after: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let log = Arc::new(DeliveryLog::open(dir, None).unwrap());
        Notifier::from_config(&cfg, &Trust::default(), log).unwrap().unwrap()
    }

    fn sms(customer: &str, to: &str, kind: ActionKind) -> Action {
        let inc = IncidentId("INC-20261123-00000001".into());
        Action {
            action_id: Action::key(&inc, customer, Channel::Sms, kind),
            incident_id: inc,
            customer_id: customer.into(),
            channel: Channel::Sms,
            kind,
            to: Some(to.into()),
            language: "en".into(),
            message: Some(Message { subject: None, text: format!("{} notice", kind.as_str()) }),
            until: None,
            credit: None,
            planned_at: chrono::Utc::now(),
            not_before: None,
        }
    }

    #[tokio::test]
    async fn follow_ups_go_only_where_down_was_accepted_and_nothing_goes_twice() {
        let (url, seen) = gateway(|to| if to.ends_with("02") { 400 } else { 202 }, Duration::ZERO).await;
        let d = tempfile::tempdir().unwrap();
        let n = notifier(d.path(), vec![provider("p1", &url, 4)]);
        let (ok, refused) = ("+14015550101", "+14015550102");
        assert_eq!(n.deliver(&sms("C1", ok, ActionKind::Down)).await.unwrap(), Delivery::Done);
        assert_eq!(n.deliver(&sms("C2", refused, ActionKind::Down)).await.unwrap(), Delivery::Failed);
        assert_eq!(n.deliver(&sms("C1", ok, ActionKind::Restored)).await.unwrap(), Delivery::Done);
        assert_eq!(
            n.deliver(&sms("C2", refused, ActionKind::Restored)).await.unwrap(),
            Delivery::Skipped("not_told_down")
        );
        assert_eq!(n.deliver(&sms("C3", "0034", ActionKind::Down)).await.unwrap(), Delivery::Skipped("invalid_msisdn"));
        assert_eq!(n.deliver(&sms("C1", ok, ActionKind::Down)).await.unwrap(), Delivery::Duplicate);
        n.flush().await.unwrap();
        assert_eq!(seen.requests.load(Relaxed), 3, "a 4xx is not retried; skips and duplicates send nothing");
        // A restart reads the journal back: nothing is sent again.
        let again = notifier(d.path(), vec![provider("p1", &url, 4)]);
        assert_eq!(again.deliver(&sms("C1", ok, ActionKind::Restored)).await.unwrap(), Delivery::Duplicate);
        let records: Vec<DeliveryRecord> = std::fs::read_to_string(d.path().join("deliveries.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let outcomes: Vec<_> = records.iter().map(|r| (r.customer_id.as_str(), r.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                ("C1", DeliveryOutcome::Accepted),
                ("C2", DeliveryOutcome::Permanent),
                ("C1", DeliveryOutcome::Accepted),
                ("C2", DeliveryOutcome::Skipped),
                ("C3", DeliveryOutcome::Skipped),
            ]
        );
        assert!(records.iter().all(|r| !r.to.contains("5550101")), "contacts are masked");
    }

    #[tokio::test]
    async fn a_provider_that_keeps_failing_is_passed_over() {
        let (down, down_seen) = gateway(|_| 503, Duration::ZERO).await;
        let (up, up_seen) = gateway(|_| 202, Duration::ZERO).await;
        let d = tempfile::tempdir().unwrap();
        let n = notifier(d.path(), vec![provider("first", &down, 4), provider("second", &up, 4)]);
        for i in 1..=3 {
            let a = sms(&format!("C{i}"), &format!("+1401555010{i}"), ActionKind::Down);
            assert_eq!(n.deliver(&a).await.unwrap(), Delivery::Done);
        }
        assert_eq!(down_seen.requests.load(Relaxed), 2, "two failures, then it rests");
        assert_eq!(up_seen.requests.load(Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_to_the_rate_without_bursts_or_lost_slots() {
        let pacer = Pacer::new(50);
        let start = tokio::time::Instant::now();
        let mut times = futures::future::join_all((0..50).map(|_| async {
            pacer.ready().await;
            tokio::time::Instant::now() - start
        }))
        .await;
        times.sort();
        // Slot i at i × 20 ms (the timer wheel rounds up to the millisecond).
        for (i, t) in times.iter().enumerate() {
            let slot = Duration::from_millis(20 * i as u64);
            assert!(*t >= slot && *t <= slot + Duration::from_millis(1), "slot {i} at {t:?}");
        }
        // An idle spell banks nothing: the next two are still 20 ms apart.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t0 = tokio::time::Instant::now();
        pacer.ready().await;
        pacer.ready().await;
        assert_eq!(tokio::time::Instant::now() - t0, Duration::from_millis(20));
        assert_eq!(Pacer::new(3).interval, Duration::from_nanos(333_333_334), "rounded up: never above");
        assert_eq!(Pacer::new(2000).interval, Duration::from_nanos(505_051), "1 % headroom from 100/s: 1 980/s");
    }

    #[tokio::test(start_paused = true)]
    async fn no_second_holds_more_than_the_limit_even_when_sends_bunch() {
        // No pacing, only the gate: as if every slot had come due at once
        // (the worker threads were busy).
        let pacer = Pacer { interval: Duration::ZERO, ..Pacer::new(10) };
        let start = tokio::time::Instant::now();
        let times = futures::future::join_all((0..25).map(|_| async {
            pacer.ready().await;
            tokio::time::Instant::now() - start
        }))
        .await;
        let per_second = |s: u64| times.iter().filter(|t| t.as_secs() == s).count();
        assert_eq!((per_second(0), per_second(1), per_second(2)), (10, 10, 5), "{times:?}");
    }

    #[tokio::test]
    async fn requests_in_flight_stay_within_the_providers_limit() {
        let (url, seen) = gateway(|_| 202, Duration::from_millis(30)).await;
        let d = tempfile::tempdir().unwrap();
        let n = notifier(d.path(), vec![provider("p1", &url, 3)]);
        let actions: Vec<Action> =
            (0..12).map(|i| sms(&format!("C{i}"), &format!("+140155501{i:02}"), ActionKind::Down)).collect();
        let results = futures::future::join_all(actions.iter().map(|a| n.deliver(a))).await;
        assert!(results.into_iter().all(|r| r.unwrap() == Delivery::Done));
        assert_eq!(seen.requests.load(Relaxed), 12);
        let most = seen.most_in_flight.load(Relaxed);
        assert!((2..=3).contains(&most), "at most 3 at once, and more than one: {most}");
    }

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
