//! The delivery engine behind the actions topic. Owns what happens to one
//! notice: the contact is checked (E.164, e-mail address) and a bad one is
//! skipped with its reason; a follow-up (restored, ETR update, cancelled) is
//! sent only on a channel whose "down" notice a gateway accepted; each
//! provider is held to its rate ([`Pacer`]) and its concurrent requests
//! (a semaphore); permanent refusals (4xx, SMTP 5xx) are final and
//! recorded with their reason, never retried.
//!
//! Waiting for a gateway: a retriable failure (refused connection, 5xx,
//! 429, timeout, SMTP 4xx) is retried in line at most
//! `sinks.retry.max_attempts` times, moving to the next provider of the
//! channel once one is down (`failover_after` failures in a row); then the
//! notice is *parked* ([`super::park`], durable before the batch's offsets
//! are stored) and a retry loop per channel sends it with capped
//! exponential backoff, one probe at a time while every provider of the
//! channel is down, at full pace again at the first answer. A parked
//! notice waits until a gateway takes or refuses it, until its incident
//! ends (the "restored"/"cancelled" withdraws it: `ended_while_parked`, and
//! the follow-up is `not_told_down`), or `park_horizon` (`gave_up`,
//! `park_horizon`). Nothing overtakes a channel's parked notices, so a
//! customer's notices keep their order; and a notice that cannot get a
//! sending slot within `queue_after` is parked too, so a slow or dead
//! channel never holds the dispatcher (nor, through it, another channel).
//! Providers going down and coming back are logged (warn, with the count
//! parked) and exported (`outage_provider_up`, `outage_notices_parked`,
//! `outage_notices_parked_total`). Every attempt and result goes to the
//! [`DeliveryLog`] (contacts masked), so "why did customer X not get
//! message Y?" has an answer.
//!
//! Exactly once, as far as a gateway allows: a notice is journalled in its
//! outbox file (keyed by `action_id`) as soon as its gateway accepts it
//! (under its sending slot), and a journalled notice is never sent again,
//! across restarts. What a crash can re-send is what was in flight: at
//! most the channels' sending slots (`max_in_flight` per provider,
//! `pool_size`), and never more than the dispatcher lanes plus those slots.
//!
//! Shared (`&self`) by the dispatcher's concurrent lanes; the retry loops
//! are tasks [`Notifier::start`] spawns (ended by the shutdown it is given,
//! or when the notifier is dropped).
//!
//! Data grants and credits still go to their outboxes (their provisioning
//! and billing adapters come with the remedies issue).

use super::deliveries::{DeliveryLog, DeliveryOutcome, DeliveryRecord};
use super::email::Smtp;
use super::outbox::Outbox;
use super::park::{self, Entry, ParkQueue};
use super::sms::{Outcome, Provider, Sms, SmsGateway};
use super::{ActionSink, Delivery, SinkError};
use crate::model::{Action, ActionKind, Channel};
use crate::runtime::Shutdown;
use crate::sinks::{RetryConfig, SinksConfig};
use crate::tls::Trust;
use chrono::{DateTime, Utc};
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

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

/// Why a notice is not to be sent at all, known before any gateway is
/// tried: the planner marked it (`Action::skip`: `opted_out`, `no_contact`)
/// or it has no contact. The dispatcher records it as `skipped` with this
/// reason, whichever sink would have carried it.
pub fn planned_skip(a: &Action) -> Option<&'static str> {
    if !matches!(a.channel, Channel::Sms | Channel::Email) {
        return None;
    }
    match a.skip.as_deref() {
        Some("opted_out") => Some("opted_out"),
        Some("no_contact") => Some("no_contact"),
        Some(_) => Some("not_sent"),
        None if a.to.as_deref().is_none_or(str::is_empty) => Some("no_contact"),
        None => None,
    }
}

/// Backoff before attempt `n + 1` (n ≥ 1): uniform in [0, min(max, base·2ⁿ⁻¹)].
pub fn backoff(r: &RetryConfig, n: u32, rng: &mut impl Rng) -> Duration {
    let cap = r.base.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(r.max);
    Duration::from_nanos(rng.random_range(0..=cap.as_nanos() as u64))
}

/// Backoff of a parked notice (and of the probes of a channel whose
/// providers are all down) after its `n`-th failure from the queue: capped
/// exponential, jittered in [cap/2, cap] so a dead gateway is never
/// hammered.
pub fn park_backoff(r: &RetryConfig, n: u32, rng: &mut impl Rng) -> Duration {
    let cap = r.base.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(r.max);
    let half = cap.as_nanos() as u64 / 2;
    Duration::from_nanos(half + rng.random_range(0..=half))
}

/// What carries a channel's notices.
enum Gateway {
    Sms(Provider),
    Smtp(Box<Smtp>),
}

impl Gateway {
    async fn send(&self, a: &Action) -> Outcome {
        match self {
            Gateway::Sms(p) => {
                let text = a.message.as_ref().map(|m| m.text.as_str()).unwrap_or_default();
                let to = a.to.as_deref().unwrap_or_default();
                p.send(&Sms { to, text, action_id: &a.action_id }).await
            }
            Gateway::Smtp(s) => s.send(a).await,
        }
    }
}

/// One provider and the limits it is held to.
struct Route {
    name: String,
    gateway: Gateway,
    pacer: Pacer,
    in_flight: Semaphore,
    /// The most one send may take (the provider's timeout and a margin).
    timeout: Duration,
    /// Consecutive retriable failures.
    failures: AtomicU32,
    up: AtomicBool,
    /// While down: since when, and when it may be tried again in line
    /// while another provider is up.
    down: Mutex<Option<(Instant, Instant)>>,
}

/// One channel: its providers, its park queue and what its retry loop
/// needs.
struct Engine {
    channel: Channel,
    routes: Vec<Route>,
    /// Sends the retry loop runs at once: the providers' slots.
    capacity: usize,
    parked: Mutex<ParkQueue>,
    wake: Notify,
    /// Failed probes in a row while every provider is down, and when the
    /// next may go.
    probe: Mutex<(u32, Instant)>,
    /// Round robin over down providers for probes.
    next_probe_route: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    fn new(channel: Channel, routes: Vec<Route>, dir: &std::path::Path) -> Result<Self, SinkError> {
        let parked = ParkQueue::open(dir, channel)?;
        for r in &routes {
            park::set_provider_up(channel, &r.name, true);
        }
        park::set_parked(channel, parked.len(), 0);
        if !parked.is_empty() {
            tracing::warn!(channel = channel.as_str(), parked = parked.len(), "parked notices resume");
        }
        Ok(Engine {
            channel,
            capacity: routes.iter().map(|r| r.in_flight.available_permits()).sum::<usize>().max(1),
            routes,
            parked: Mutex::new(parked),
            wake: Notify::new(),
            probe: Mutex::new((0, Instant::now())),
            next_probe_route: AtomicUsize::new(0),
        })
    }

    fn any_up(&self) -> bool {
        self.routes.iter().any(|r| r.up.load(Relaxed))
    }

    /// The provider to try: the first up one, or a down one earlier in the
    /// list whose rest is over while another is up (failback). In line,
    /// none while all are down (the notice is parked); from the queue, the
    /// down ones in turn (a probe).
    fn pick(&self, in_line: bool, cooldown: Duration) -> Option<usize> {
        let now = Instant::now();
        if self.any_up() {
            for (i, r) in self.routes.iter().enumerate() {
                if r.up.load(Relaxed) {
                    return Some(i);
                }
                let mut down = lock(&r.down);
                if let Some((_, retry_at)) = down.as_mut().filter(|d| d.1 <= now) {
                    *retry_at = now + cooldown;
                    return Some(i);
                }
            }
        }
        if in_line || self.routes.is_empty() {
            return None;
        }
        Some(self.next_probe_route.fetch_add(1, Relaxed) % self.routes.len())
    }

    /// Route `i` answered (accepted or refused): it is up.
    fn answered(&self, i: usize) {
        let r = &self.routes[i];
        r.failures.store(0, Relaxed);
        if r.up.swap(true, Relaxed) {
            return;
        }
        let since = lock(&r.down).take().map(|d| d.0);
        park::set_provider_up(self.channel, &r.name, true);
        *lock(&self.probe) = (0, Instant::now());
        let parked = {
            let mut q = lock(&self.parked);
            q.all_due_now();
            q.len()
        };
        tracing::warn!(
            channel = self.channel.as_str(),
            provider = %r.name,
            down_for = ?since.map(|s| s.elapsed()),
            parked,
            "notice provider is back: parked notices resume"
        );
        self.wake.notify_one();
    }

    /// Route `i` failed retriably; after `failover_after` in a row it is down.
    fn failed(&self, i: usize, reason: &str, retry: &RetryConfig) {
        let r = &self.routes[i];
        let n = r.failures.fetch_add(1, Relaxed) + 1;
        let now = Instant::now();
        if n < retry.failover_after.max(1) {
            return;
        }
        let mut down = lock(&r.down);
        let since = down.map_or(now, |d| d.0);
        *down = Some((since, now + retry.cooldown));
        drop(down);
        if r.up.swap(false, Relaxed) {
            park::set_provider_up(self.channel, &r.name, false);
            let parked = lock(&self.parked).len();
            let others_up = self.any_up();
            tracing::warn!(
                channel = self.channel.as_str(),
                provider = %r.name,
                %reason,
                failures = n,
                parked,
                others_up,
                "notice provider is down: {}",
                if others_up { "passing it over" } else { "notices are parked until it answers" }
            );
        }
    }
}

/// Called with each notice the retry loops settle (for the dispatcher's
/// counters).
type Settled = Box<dyn Fn(&Action, Delivery) + Send + Sync>;
type Now = Box<dyn Fn() -> DateTime<Utc> + Send + Sync>;

struct Shared {
    outbox: Outbox,
    log: Arc<DeliveryLog>,
    retry: RetryConfig,
    sms: Option<Engine>,
    email: Option<Engine>,
    now: OnceLock<Now>,
    settled: OnceLock<Settled>,
}

pub struct Notifier {
    shared: Arc<Shared>,
    loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for h in lock(&self.loops).drain(..) {
            h.abort();
        }
    }
}

/// Whether a notice of this kind follows up on a "down" notice.
fn follows_up(kind: ActionKind) -> bool {
    matches!(kind, ActionKind::Restored | ActionKind::EtrUpdate | ActionKind::StillWorking | ActionKind::Cancelled)
}

/// What trying a parked notice came to.
enum Tried {
    Settled(Delivery),
    Again,
}

impl Notifier {
    /// `None` when no gateway is configured (notices stay in the outboxes).
    /// `trust`: the roots HTTPS and SMTP TLS trust (`sinks.tls`). Parked
    /// notices are read back from the outbox directory; they are sent once
    /// [`Notifier::start`] runs the retry loops.
    pub fn from_config(cfg: &SinksConfig, trust: &Trust, log: Arc<DeliveryLog>) -> Result<Option<Self>, SinkError> {
        if cfg.sms.is_empty() && cfg.email.is_none() {
            return Ok(None);
        }
        let route = |name: &str, gateway, per_second, slots: u32, timeout: Duration| Route {
            name: name.into(),
            gateway,
            timeout: timeout.saturating_mul(2).max(Duration::from_secs(1)),
            pacer: Pacer::new(per_second),
            in_flight: Semaphore::new(slots.max(1) as usize),
            failures: AtomicU32::new(0),
            up: AtomicBool::new(true),
            down: Mutex::new(None),
        };
        let sms = cfg
            .sms
            .iter()
            .map(|p| {
                let gateway = Gateway::Sms(Provider::new(p.clone(), trust)?);
                Ok(route(&p.name, gateway, p.rate_per_second, p.max_in_flight, p.timeout))
            })
            .collect::<Result<Vec<_>, SinkError>>()?;
        let sms = if sms.is_empty() { None } else { Some(Engine::new(Channel::Sms, sms, &cfg.outbox_dir)?) };
        let email = match &cfg.email {
            Some(e) => {
                let gateway = Gateway::Smtp(Box::new(Smtp::new(e.clone(), trust)?));
                let r = route("smtp", gateway, e.rate_per_second, e.pool_size, e.timeout);
                Some(Engine::new(Channel::Email, vec![r], &cfg.outbox_dir)?)
            }
            None => None,
        };
        let shared = Shared {
            outbox: Outbox::open(&cfg.outbox_dir)?,
            log,
            retry: cfg.retry.clone(),
            sms,
            email,
            now: OnceLock::new(),
            settled: OnceLock::new(),
        };
        Ok(Some(Notifier { shared: Arc::new(shared), loops: Mutex::new(Vec::new()) }))
    }

    /// Run the retry loops (one per channel with a gateway) until
    /// `shutdown`: `now` is the clock parked notices are timed by
    /// (`park_horizon`), `settled` hears what became of each parked notice.
    /// Call once; later calls do nothing.
    pub fn start(
        &self,
        now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
        settled: impl Fn(&Action, Delivery) + Send + Sync + 'static,
        shutdown: Shutdown,
    ) {
        if self.shared.now.set(Box::new(now)).is_err() {
            return;
        }
        let _ = self.shared.settled.set(Box::new(settled));
        let mut loops = lock(&self.loops);
        for channel in [Channel::Sms, Channel::Email] {
            if self.shared.engine(channel).is_some() {
                loops.push(tokio::spawn(retry_loop(self.shared.clone(), channel, shutdown.clone())));
            }
        }
    }

    /// Notices parked on `channel` now.
    pub fn parked(&self, channel: Channel) -> usize {
        self.shared.engine(channel).map_or(0, |e| lock(&e.parked).len())
    }
}

impl Shared {
    fn engine(&self, channel: Channel) -> Option<&Engine> {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Email => self.email.as_ref(),
            _ => None,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.now.get().map_or_else(Utc::now, |f| f())
    }

    fn settled(&self, a: &Action, d: Delivery) {
        if let Some(f) = self.settled.get() {
            f(a, d);
        }
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

    fn skip(&self, a: &Action, reason: &'static str) -> Result<Delivery, SinkError> {
        self.log.record(&DeliveryRecord::of(a, "", 0, DeliveryOutcome::Skipped).because(reason))?;
        Ok(Delivery::Skipped(reason))
    }

    /// Journal an accepted notice at once: this is what stops a restart
    /// from sending it again. Written through to the kernel (a killed
    /// process loses nothing); `fsync`ed with the batch's flush, before its
    /// offsets are stored — an fsync per mail held e-mail to ~50/s on disk.
    /// Only a machine crash can re-send the notices of the batch in flight.
    fn journal(&self, a: &Action) -> Result<Delivery, SinkError> {
        self.outbox.deliver_now(a)?;
        self.outbox.write_through(a.channel)?;
        Ok(Delivery::Done)
    }

    /// Whether `a` is a follow-up whose "down" was never accepted.
    fn not_told_down(&self, a: &Action) -> bool {
        follows_up(a.kind) && {
            // The "down" of the customer's thread: another incident's when
            // that one told them first, or a later round's.
            let down = match &a.follows {
                Some(k) => std::borrow::Cow::Borrowed(k.as_str()),
                None => Action::key(&a.incident_id, &a.customer_id, a.channel, ActionKind::Down).into(),
            };
            !self.outbox.holds(a.channel, &down)
        }
    }

    /// One try through route `i`: a sending slot (within `wait` when
    /// given: `None` back when none came), the pacer, the send, its
    /// record and, for an accepted notice, its journal line, all under the
    /// slot. The route's health follows the outcome.
    async fn attempt(
        &self,
        eng: &Engine,
        i: usize,
        a: &Action,
        attempt: u32,
        wait: Option<Duration>,
    ) -> Result<Option<Outcome>, SinkError> {
        let r = &eng.routes[i];
        let permit: Option<SemaphorePermit<'_>> = match wait {
            Some(w) => match tokio::time::timeout(w, r.in_flight.acquire()).await {
                Ok(p) => p.ok(),
                Err(_) => return Ok(None),
            },
            None => r.in_flight.acquire().await.ok(),
        };
        r.pacer.ready().await;
        // The clients' own timeouts, and this one above them: a gateway
        // that takes the connection and never answers is a retriable
        // failure, never a lane held for good.
        let outcome = match tokio::time::timeout(r.timeout, r.gateway.send(a)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry { reason: format!("no answer within {}", humantime::format_duration(r.timeout)) },
        };
        self.record(a, &r.name, attempt, &outcome)?;
        match &outcome {
            Outcome::Accepted { .. } => {
                self.journal(a)?;
                eng.answered(i);
            }
            Outcome::Permanent { reason } => {
                eng.answered(i);
                tracing::warn!(
                    action_id = %a.action_id,
                    to = %a.to.as_deref().map(crate::redact::contact).unwrap_or_default(),
                    provider = %r.name,
                    %reason,
                    "notice refused for good"
                );
            }
            Outcome::Retry { reason } => eng.failed(i, reason, &self.retry),
        }
        drop(permit);
        Ok(Some(outcome))
    }

    /// Park `a` (`attempts` made), recorded with `reason`.
    fn park(&self, eng: &Engine, a: &Action, attempts: u32, reason: &str) -> Result<Delivery, SinkError> {
        let now = self.now();
        {
            let mut q = lock(&eng.parked);
            if q.park(a, now, attempts)? {
                park::set_parked(eng.channel, q.len(), 1);
            }
        }
        self.log.record(&DeliveryRecord::of(a, "", attempts, DeliveryOutcome::Parked).because(reason))?;
        eng.wake.notify_one();
        Ok(Delivery::Parked)
    }

    /// The in-line path: parked notices of the channel first (withdrawn by
    /// their incident's end, or waited behind), then a few tries, then the
    /// park queue.
    async fn send(&self, eng: &Engine, a: &Action) -> Result<Delivery, SinkError> {
        let waiting = {
            let mut q = lock(&eng.parked);
            if matches!(a.kind, ActionKind::Restored | ActionKind::Cancelled) {
                let mut gone = q.withdraw(&a.incident_id.0, &a.customer_id)?;
                // The thread's "down" may be another incident's.
                if let Some((opener, ..)) = a.follows.as_deref().and_then(Action::parse_key) {
                    if opener != a.incident_id.0 {
                        gone.extend(q.withdraw(&opener, &a.customer_id)?);
                    }
                }
                if !gone.is_empty() {
                    park::set_parked(eng.channel, q.len(), 0);
                    drop(q);
                    for w in &gone {
                        let r = DeliveryRecord::of(w, "", 0, DeliveryOutcome::Skipped).because("ended_while_parked");
                        self.log.record(&r)?;
                        self.settled(w, Delivery::Skipped("ended_while_parked"));
                    }
                    if gone.iter().any(|w| w.kind == ActionKind::Down) {
                        // The outage ended before anyone was told of it.
                        return self.skip(a, "not_told_down");
                    }
                    q = lock(&eng.parked);
                }
            }
            (q.holds(&a.customer_id), !q.is_empty())
        };
        if waiting.0 {
            return self.park(eng, a, 0, "behind_parked");
        }
        // Actions of one customer arrive in order on one lane and none of
        // theirs is parked, so the "down" has been settled by now.
        if self.not_told_down(a) {
            return self.skip(a, "not_told_down");
        }
        if waiting.1 {
            return self.park(eng, a, 0, "queue");
        }
        if !eng.any_up() {
            return self.park(eng, a, 0, "provider_down");
        }
        let mut last = String::new();
        let mut made = 0;
        for attempt in 1..=self.retry.max_attempts.max(1) {
            let Some(i) = eng.pick(true, self.retry.cooldown) else { break };
            made = attempt;
            match self.attempt(eng, i, a, attempt, Some(self.retry.queue_after)).await? {
                None => return self.park(eng, a, attempt - 1, "backlog"),
                Some(Outcome::Accepted { .. }) => return Ok(Delivery::Done),
                Some(Outcome::Permanent { .. }) => return Ok(Delivery::Failed),
                Some(Outcome::Retry { reason }) => {
                    last = reason;
                    if attempt < self.retry.max_attempts && eng.any_up() {
                        let pause = backoff(&self.retry, attempt, &mut rand::rng());
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        let reason = if last.is_empty() { "provider_down".to_string() } else { format!("retry: {last}") };
        self.park(eng, a, made, &reason)
    }

    /// Try a parked notice once (from the retry loop).
    async fn try_parked(&self, eng: &Engine, e: &Entry) -> Tried {
        let a = &e.action;
        if self.outbox.contains(a) {
            return Tried::Settled(Delivery::Duplicate);
        }
        let ended = lock(&eng.parked).ended_behind(&a.customer_id, &a.incident_id.0);
        let why = if ended { Some("ended_while_parked") } else { self.not_told_down(a).then_some("not_told_down") };
        if let Some(why) = why {
            return match self.skip(a, why) {
                Ok(d) => Tried::Settled(d),
                Err(err) => {
                    tracing::error!(action_id = %a.action_id, error = %err, "delivery record");
                    Tried::Again
                }
            };
        }
        let Some(i) = eng.pick(false, self.retry.cooldown) else { return Tried::Again };
        match self.attempt(eng, i, a, e.attempts + 1, None).await {
            Ok(Some(Outcome::Accepted { .. })) => Tried::Settled(Delivery::Done),
            Ok(Some(Outcome::Permanent { .. })) => Tried::Settled(Delivery::Failed),
            Ok(_) => Tried::Again,
            Err(err) => {
                tracing::error!(action_id = %a.action_id, error = %err, "parked notice: journal failed; retried");
                Tried::Again
            }
        }
    }

    /// Settle what trying `e` came to.
    fn settle(&self, eng: &Engine, e: &Entry, tried: Tried) {
        let mut q = lock(&eng.parked);
        match tried {
            Tried::Settled(d) => {
                if let Err(err) = q.settle(&e.action.customer_id) {
                    tracing::error!(channel = eng.channel.as_str(), error = %err, "park journal");
                }
                park::set_parked(eng.channel, q.len(), 0);
                drop(q);
                self.settled(&e.action, d);
            }
            Tried::Again => {
                let mut rng = rand::rng();
                let next = Instant::now() + park_backoff(&self.retry, e.attempts + 1, &mut rng);
                q.retry(&e.action.customer_id, next);
                drop(q);
                if !eng.any_up() {
                    let mut probe = lock(&eng.probe);
                    probe.0 += 1;
                    probe.1 = Instant::now() + park_backoff(&self.retry, probe.0, &mut rng);
                }
            }
        }
        eng.wake.notify_one();
    }

    /// Give up the notices parked longer than `park_horizon`.
    fn expire(&self, eng: &Engine) {
        let Ok(horizon) = chrono::Duration::from_std(self.retry.park_horizon) else { return };
        let cutoff = self.now() - horizon;
        let gone = {
            let mut q = lock(&eng.parked);
            let gone = q.expire(cutoff);
            park::set_parked(eng.channel, q.len(), 0);
            gone
        };
        match gone {
            Ok(gone) => {
                if !gone.is_empty() {
                    tracing::warn!(
                        channel = eng.channel.as_str(),
                        notices = gone.len(),
                        horizon = %humantime::format_duration(self.retry.park_horizon),
                        "parked notices given up: their gateway did not take them within sinks.retry.park_horizon"
                    );
                }
                for e in gone {
                    let r =
                        DeliveryRecord::of(&e.action, "", e.attempts, DeliveryOutcome::GaveUp).because("park_horizon");
                    if let Err(err) = self.log.record(&r) {
                        tracing::error!(error = %err, "delivery record");
                    }
                    self.settled(&e.action, Delivery::Failed);
                }
            }
            Err(err) => tracing::error!(channel = eng.channel.as_str(), error = %err, "park journal"),
        }
    }

    /// Start the parked notices that may go now; when the next may.
    fn start_due(self: &Arc<Self>, eng: &Engine, tasks: &mut tokio::task::JoinSet<()>) -> Option<Instant> {
        loop {
            let now = Instant::now();
            let up = eng.any_up();
            if !up && !tasks.is_empty() {
                return None; // one probe at a time
            }
            if tasks.len() >= eng.capacity {
                return None;
            }
            let probe_at = lock(&eng.probe).1;
            if !up && probe_at > now {
                return Some(probe_at);
            }
            let taken = {
                let mut q = lock(&eng.parked);
                match q.take(now) {
                    Some(e) => e,
                    None => return q.next_due(),
                }
            };
            let horizon = chrono::Duration::from_std(self.retry.park_horizon).unwrap_or(chrono::TimeDelta::MAX);
            if self.now() - taken.parked_at > horizon {
                let r = DeliveryRecord::of(&taken.action, "", taken.attempts, DeliveryOutcome::GaveUp)
                    .because("park_horizon");
                if let Err(err) = self.log.record(&r) {
                    tracing::error!(error = %err, "delivery record");
                }
                self.settle(eng, &taken, Tried::Settled(Delivery::Failed));
                continue;
            }
            let (shared, channel) = (self.clone(), eng.channel);
            tasks.spawn(async move {
                let Some(eng) = shared.engine(channel) else { return };
                let tried = shared.try_parked(eng, &taken).await;
                shared.settle(eng, &taken, tried);
            });
            if !up {
                return None;
            }
        }
    }
}

/// The retry loop of one channel: sends its parked notices (capped
/// exponential backoff per notice; one probe at a time, itself backed off,
/// while every provider is down), gives up those past the horizon, and
/// says every minute while a provider stays down.
async fn retry_loop(shared: Arc<Shared>, channel: Channel, mut shutdown: Shutdown) {
    let Some(eng) = shared.engine(channel) else { return };
    let mut tasks = tokio::task::JoinSet::new();
    let sweep_every = shared.retry.max.clamp(Duration::from_millis(10), Duration::from_secs(60));
    let mut sweep = Instant::now();
    let mut said = Instant::now();
    loop {
        let now = Instant::now();
        if now >= sweep {
            shared.expire(eng);
            sweep = now + sweep_every;
            if now.duration_since(said) >= Duration::from_secs(60) {
                said = now;
                let parked = lock(&eng.parked).len();
                for r in eng.routes.iter().filter(|r| !r.up.load(Relaxed)) {
                    let since = lock(&r.down).map(|d| d.0.elapsed());
                    tracing::warn!(channel = channel.as_str(), provider = %r.name, down_for = ?since, parked, "notice provider still down");
                }
            }
        }
        let next = shared.start_due(eng, &mut tasks).map_or(sweep, |t| t.min(sweep));
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = eng.wake.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep_until(next) => {}
        }
    }
    // What is in flight is parked still: a restart tries it again (the
    // outbox journal drops it if it was taken).
    tasks.abort_all();
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

impl ActionSink for Notifier {
    async fn deliver(&self, a: &Action) -> Result<Delivery, SinkError> {
        let s = &*self.shared;
        if s.outbox.contains(a) {
            return Ok(Delivery::Duplicate);
        }
        let Some(eng) = s.engine(a.channel) else { return s.outbox.deliver_now(a) };
        if let Some(reason) = bad_contact(a) {
            return s.skip(a, reason);
        }
        s.send(eng, a).await
    }

    /// What went out from the partitions just taken is a repeat here; the
    /// notices they had parked join the queues (behind nothing: their
    /// threads were the other dispatcher's); the notices of customers no
    /// longer ours leave them (their new dispatcher reads them back).
    async fn assigned(&self, handover: &super::handover::Handover) -> Result<(), SinkError> {
        let s = &*self.shared;
        s.outbox.remember(handover);
        for eng in [&s.sms, &s.email].into_iter().flatten() {
            let (gone, taken) = {
                let mut q = lock(&eng.parked);
                let gone = q.retain(|c| handover.owns(c))?;
                let mut taken = 0u64;
                for (a, at) in handover.parked.iter().filter(|(a, _)| a.channel == eng.channel) {
                    if !s.outbox.contains(a) && q.park(a, *at, 0)? {
                        taken += 1;
                    }
                }
                q.sync()?;
                park::set_parked(eng.channel, q.len(), taken);
                (gone, taken)
            };
            if gone > 0 || taken > 0 {
                tracing::info!(channel = eng.channel.as_str(), let_go = gone, taken, "parked notices handed over");
                eng.wake.notify_one();
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let s = &*self.shared;
        s.outbox.flush_now()?;
        for eng in [&s.sms, &s.email].into_iter().flatten() {
            lock(&eng.parked).sync()?;
        }
        s.log.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IncidentId, Message};
    use crate::sinks::sms::{SmsGatewayKind, SmsProviderConfig};
    use rand::SeedableRng;

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
                max_attempts: 3,
                // These tests wait in line for a slot, however loaded the
                // machine: parking for backlog is tested on its own.
                queue_after: Duration::from_secs(3600),
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
            follows: None,
            skip: None,
        }
    }

    #[test]
    fn planned_skips_name_their_reason_and_only_notices_have_them() {
        let ok = sms("C1", "+14015550101", ActionKind::Down);
        assert_eq!(planned_skip(&ok), None);
        // (action, reason): no number, an empty one, opted out, a reason the planner may add later.
        let cases = [
            (Action { to: None, ..ok.clone() }, "no_contact"),
            (Action { to: Some(String::new()), ..ok.clone() }, "no_contact"),
            (Action { skip: Some("opted_out".into()), ..ok.clone() }, "opted_out"),
            (Action { to: None, skip: Some("no_contact".into()), ..ok.clone() }, "no_contact"),
            (Action { skip: Some("something_new".into()), ..ok.clone() }, "not_sent"),
            (Action { channel: Channel::Email, to: None, ..ok.clone() }, "no_contact"),
        ];
        for (a, want) in cases {
            assert_eq!(planned_skip(&a), Some(want), "{:?} {:?}", a.to, a.skip);
        }
        // Credits and data grants are not notices: never skipped here.
        let credit = Action { channel: Channel::Credit, to: None, skip: Some("opted_out".into()), ..ok.clone() };
        assert_eq!(planned_skip(&credit), None);
        // An invalid number is the notifier's to refuse, with its own reason.
        assert_eq!(planned_skip(&sms("C1", "0034", ActionKind::Down)), None);
        assert_eq!(bad_contact(&sms("C1", "0034", ActionKind::Down)), Some("invalid_msisdn"));
    }

    /// A gateway that can be switched off (503) and on, and remembers
    /// what it accepted, in order; numbers ending in 99 are refused (400).
    #[derive(Default)]
    struct Switch {
        down: AtomicBool,
        requests: AtomicUsize,
        accepted: Mutex<Vec<(String, String)>>,
    }

    async fn switch_gateway() -> (String, Arc<Switch>) {
        use axum::extract::State;
        use axum::http::StatusCode;
        let seen = Arc::new(Switch::default());
        let handler = |State(g): State<Arc<Switch>>, axum::Json(v): axum::Json<serde_json::Value>| async move {
            g.requests.fetch_add(1, Relaxed);
            let to = v["to"].as_str().unwrap_or_default().to_string();
            if g.down.load(Relaxed) {
                return (StatusCode::SERVICE_UNAVAILABLE, "smsbox is away".to_string());
            }
            if to.ends_with("99") {
                return (StatusCode::BAD_REQUEST, "unknown subscriber".to_string());
            }
            let text = v["text"].as_str().unwrap_or_default().to_string();
            lock(&g.accepted).push((to, text));
            (StatusCode::ACCEPTED, r#"{"id":"m1"}"#.to_string())
        };
        let app = axum::Router::new().route("/send", axum::routing::post(handler)).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/send", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// What the retry loops settled: (action id, what became of it).
    type SettledLog = Arc<Mutex<Vec<(String, Delivery)>>>;

    /// A notifier with small backoffs, its retry loops started on `clock`;
    /// the trigger stops them, the list collects what they settled.
    fn started(
        dir: &std::path::Path,
        sms: Vec<SmsProviderConfig>,
        clock: Arc<Mutex<DateTime<Utc>>>,
    ) -> (Notifier, crate::runtime::ShutdownTrigger, SettledLog) {
        let cfg = SinksConfig {
            outbox_dir: dir.into(),
            sms,
            retry: RetryConfig {
                base: Duration::from_millis(5),
                max: Duration::from_millis(40),
                failover_after: 2,
                max_attempts: 2,
                queue_after: Duration::from_secs(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let log = Arc::new(DeliveryLog::open(dir, None).unwrap());
        let n = Notifier::from_config(&cfg, &Trust::default(), log).unwrap().unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let settled = Arc::new(Mutex::new(Vec::new()));
        let s = settled.clone();
        n.start(move || *lock(&clock), move |a, d| lock(&s).push((a.action_id.clone(), d)), shutdown);
        (n, trigger, settled)
    }

    fn records(dir: &std::path::Path) -> Vec<DeliveryRecord> {
        std::fs::read_to_string(dir.join("deliveries.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn until_nothing_parked(n: &Notifier) {
        // A liveness bound, not a speed one (each accepted notice is an
        // fsync, slow on a busy disk).
        for _ in 0..6000 {
            if n.parked(Channel::Sms) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} notices still parked after 60 s", n.parked(Channel::Sms));
    }

    fn etr(customer: &str, to: &str) -> Action {
        sms(customer, to, ActionKind::EtrUpdate)
    }

    #[tokio::test]
    async fn a_gateway_down_for_a_while_loses_nothing_and_keeps_each_customers_order() {
        let (url, gw) = switch_gateway().await;
        let d = tempfile::tempdir().unwrap();
        let (n, _stop, settled) = started(d.path(), vec![provider("k1", &url, 4)], Arc::new(Mutex::new(Utc::now())));
        gw.down.store(true, Relaxed);
        let customers: Vec<(String, String)> =
            (0..20).map(|i| (format!("C{i:02}"), format!("+140155501{i:02}"))).collect();
        // Each customer's down then ETR update, as one lane delivers them.
        for (c, to) in &customers {
            for a in [sms(c, to, ActionKind::Down), etr(c, to)] {
                assert_eq!(n.deliver(&a).await.unwrap(), Delivery::Parked, "{}", a.action_id);
            }
        }
        n.flush().await.unwrap();
        assert_eq!(n.parked(Channel::Sms), 40);
        // The gateway stays away a while: the loop probes, backing off.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let probes = gw.requests.load(Relaxed);
        assert!(lock(&gw.accepted).is_empty());
        assert!(probes < 40, "one probe at a time, backed off, not every notice: {probes}");
        gw.down.store(false, Relaxed);
        until_nothing_parked(&n).await;
        let got = lock(&gw.accepted).clone();
        assert_eq!(got.len(), 40, "nothing lost, nothing twice");
        for (c, to) in &customers {
            let mine: Vec<&str> = got.iter().filter(|(t, _)| t == to).map(|(_, text)| text.as_str()).collect();
            assert_eq!(mine, ["down notice", "etr_update notice"], "{c}: in order");
        }
        assert_eq!(lock(&settled).iter().filter(|(_, d)| *d == Delivery::Done).count(), 40);
        n.flush().await.unwrap();
        let recs = records(d.path());
        assert_eq!(recs.iter().filter(|r| r.outcome == DeliveryOutcome::Parked).count(), 40);
        assert!(recs.iter().any(|r| r.outcome == DeliveryOutcome::Retry), "the probes are on the record");
        assert!(recs.iter().all(|r| r.outcome != DeliveryOutcome::GaveUp));
        // A customer whose notices all went is sent to in line again.
        assert_eq!(n.deliver(&sms("C00", "+14015550100", ActionKind::Restored)).await.unwrap(), Delivery::Done);
    }

    #[tokio::test]
    async fn a_refusal_is_final_and_recorded_with_its_reason_while_others_wait() {
        let (url, gw) = switch_gateway().await;
        let d = tempfile::tempdir().unwrap();
        let (n, _stop, settled) = started(d.path(), vec![provider("k1", &url, 4)], Arc::new(Mutex::new(Utc::now())));
        let refused = sms("C99", "+14015550199", ActionKind::Down);
        assert_eq!(n.deliver(&refused).await.unwrap(), Delivery::Failed);
        assert_eq!(gw.requests.load(Relaxed), 1, "a 4xx is not retried");
        // A refusal parked behind an outage is final too, when it comes.
        gw.down.store(true, Relaxed);
        for i in 1..=3 {
            let a = sms(&format!("C{i}"), &format!("+1401555010{i}"), ActionKind::Down);
            assert_eq!(n.deliver(&a).await.unwrap(), Delivery::Parked);
        }
        let late = sms("C98", "+14015550299", ActionKind::Down);
        assert_eq!(n.deliver(&late).await.unwrap(), Delivery::Parked);
        gw.down.store(false, Relaxed);
        until_nothing_parked(&n).await;
        assert_eq!(lock(&gw.accepted).len(), 3);
        assert!(lock(&settled).contains(&(late.action_id.clone(), Delivery::Failed)));
        n.flush().await.unwrap();
        let recs = records(d.path());
        for a in [&refused, &late] {
            let permanent: Vec<_> =
                recs.iter().filter(|r| r.action_id == a.action_id && r.outcome == DeliveryOutcome::Permanent).collect();
            assert_eq!(permanent.len(), 1, "{}", a.action_id);
            let reason = permanent[0].reason.as_deref().unwrap_or_default();
            assert!(reason.contains("400") && reason.contains("unknown subscriber"), "{reason}");
        }
    }

    #[tokio::test]
    async fn a_restart_resumes_parked_notices_in_order() {
        // Nothing listens here: connections are refused.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/send", l.local_addr().unwrap())
        };
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(Mutex::new(Utc::now()));
        let (n, stop, _) = started(d.path(), vec![provider("k1", &dead, 4)], clock.clone());
        let (c1, c2) = (("C1", "+14015550101"), ("C2", "+14015550102"));
        let sent = [sms(c1.0, c1.1, ActionKind::Down), sms(c2.0, c2.1, ActionKind::Down), etr(c1.0, c1.1)];
        for a in &sent {
            assert_eq!(n.deliver(a).await.unwrap(), Delivery::Parked);
        }
        n.flush().await.unwrap();
        stop.trigger();
        drop(n);

        let (url, gw) = switch_gateway().await;
        let (n, _stop, _) = started(d.path(), vec![provider("k1", &url, 4)], clock);
        assert_eq!(n.parked(Channel::Sms), 3, "read back from parked_sms.jsonl");
        until_nothing_parked(&n).await;
        let got = lock(&gw.accepted).clone();
        let c1_texts: Vec<&str> = got.iter().filter(|(t, _)| t == c1.1).map(|(_, x)| x.as_str()).collect();
        assert_eq!(c1_texts, ["down notice", "etr_update notice"]);
        assert_eq!(got.len(), 3);
        n.flush().await.unwrap();
        drop(n);
        let (n, _stop, _) = started(d.path(), vec![provider("k1", &url, 4)], Arc::new(Mutex::new(Utc::now())));
        assert_eq!(n.parked(Channel::Sms), 0, "sent ones stay sent");
        assert_eq!(n.deliver(&sent[0]).await.unwrap(), Delivery::Duplicate);
    }

    #[tokio::test]
    async fn a_down_parked_past_its_incidents_end_or_the_horizon_is_dropped_with_its_follow_ups() {
        let (url, gw) = switch_gateway().await;
        let d = tempfile::tempdir().unwrap();
        let t0 = Utc::now();
        let clock = Arc::new(Mutex::new(t0));
        let (n, _stop, settled) = started(d.path(), vec![provider("k1", &url, 4)], clock.clone());
        gw.down.store(true, Relaxed);
        let (c1, c2) = (("C1", "+14015550101"), ("C2", "+14015550102"));
        assert_eq!(n.deliver(&sms(c1.0, c1.1, ActionKind::Down)).await.unwrap(), Delivery::Parked);
        assert_eq!(n.deliver(&etr(c1.0, c1.1)).await.unwrap(), Delivery::Parked);
        // The incident ends while C1's down still waits: neither goes.
        // (Parked behind the down when a probe has it in flight just then;
        // settled the same way once the probe fails.)
        let restored = sms(c1.0, c1.1, ActionKind::Restored);
        let d1 = n.deliver(&restored).await.unwrap();
        assert!(matches!(d1, Delivery::Skipped("not_told_down") | Delivery::Parked), "{d1:?}");
        until_nothing_parked(&n).await;
        // C2's down waits past the horizon (6 h by default).
        assert_eq!(n.deliver(&sms(c2.0, c2.1, ActionKind::Down)).await.unwrap(), Delivery::Parked);
        *lock(&clock) = t0 + chrono::Duration::hours(7);
        until_nothing_parked(&n).await;
        gw.down.store(false, Relaxed);
        let restored2 = sms(c2.0, c2.1, ActionKind::Restored);
        assert_eq!(n.deliver(&restored2).await.unwrap(), Delivery::Skipped("not_told_down"));
        assert!(lock(&gw.accepted).is_empty(), "nobody is told of an outage after its end");
        n.flush().await.unwrap();
        let recs = records(d.path());
        let why = |id: &str, o: DeliveryOutcome| {
            recs.iter().find(|r| r.action_id == id && r.outcome == o).and_then(|r| r.reason.clone())
        };
        let down1 = Action::key(&restored.incident_id, "C1", Channel::Sms, ActionKind::Down);
        assert_eq!(why(&down1, DeliveryOutcome::Skipped).as_deref(), Some("ended_while_parked"));
        assert_eq!(why(&restored.action_id, DeliveryOutcome::Skipped).as_deref(), Some("not_told_down"));
        assert!(why(&etr(c1.0, c1.1).action_id, DeliveryOutcome::Skipped).is_some(), "the ETR update is dropped too");
        let down2 = Action::key(&restored.incident_id, "C2", Channel::Sms, ActionKind::Down);
        assert_eq!(why(&down2, DeliveryOutcome::GaveUp).as_deref(), Some("park_horizon"));
        assert!(lock(&settled).contains(&(down2, Delivery::Failed)));
    }

    #[tokio::test]
    async fn a_parked_notice_fails_over_to_the_next_provider() {
        let (first, first_gw) = switch_gateway().await;
        let (second, second_gw) = switch_gateway().await;
        let d = tempfile::tempdir().unwrap();
        let (n, _stop, _) = started(
            d.path(),
            vec![provider("first", &first, 4), provider("second", &second, 4)],
            Arc::new(Mutex::new(Utc::now())),
        );
        first_gw.down.store(true, Relaxed);
        second_gw.down.store(true, Relaxed);
        for i in 1..=4 {
            let a = sms(&format!("C{i}"), &format!("+1401555010{i}"), ActionKind::Down);
            assert_eq!(n.deliver(&a).await.unwrap(), Delivery::Parked);
        }
        second_gw.down.store(false, Relaxed);
        until_nothing_parked(&n).await;
        assert_eq!(lock(&second_gw.accepted).len(), 4, "the probes found the provider that answers");
        assert!(lock(&first_gw.accepted).is_empty());
    }

    #[tokio::test]
    async fn a_dead_channel_does_not_hold_another() {
        let (url, gw) = switch_gateway().await;
        // An SMTP relay that takes the connection and never answers.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = hang.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = hang.accept().await {
                held.push(s);
            }
        });
        let d = tempfile::tempdir().unwrap();
        let cfg = SinksConfig {
            outbox_dir: d.path().into(),
            sms: vec![provider("k1", &url, 4)],
            email: Some(crate::sinks::email::SmtpConfig {
                port,
                pool_size: 1,
                timeout: Duration::from_millis(500),
                ..Default::default()
            }),
            retry: RetryConfig { queue_after: Duration::from_millis(50), ..Default::default() },
            ..Default::default()
        };
        let log = Arc::new(DeliveryLog::open(d.path(), None).unwrap());
        let n = Notifier::from_config(&cfg, &Trust::default(), log).unwrap().unwrap();
        let mail = |i: usize| Action {
            channel: Channel::Email,
            action_id: format!("INC-1/M{i}/email/down"),
            customer_id: format!("M{i}"),
            to: Some(format!("m{i}@example.com")),
            ..sms("x", "+14015550100", ActionKind::Down)
        };
        // Lanes as the dispatcher runs them: each customer's SMS, then mail.
        let lanes = (0..8).map(|i| {
            let n = &n;
            async move {
                let s = n.deliver(&sms(&format!("C{i}"), &format!("+1401555010{i}"), ActionKind::Down)).await;
                let m = n.deliver(&mail(i)).await;
                (s.unwrap(), m.unwrap())
            }
        });
        let out = futures::future::join_all(lanes).await;
        assert!(out.iter().all(|(s, _)| *s == Delivery::Done));
        assert_eq!(lock(&gw.accepted).len(), 8);
        let mails: Vec<Delivery> = out.iter().map(|(_, m)| *m).collect();
        assert!(
            mails.iter().filter(|m| **m == Delivery::Parked).count() >= 7,
            "one mail holds the relay's only slot; the rest wait parked, not in the lanes: {mails:?}"
        );
        n.flush().await.unwrap();
        let recs = records(d.path());
        assert!(recs.iter().any(|r| r.outcome == DeliveryOutcome::Parked && r.reason.as_deref() == Some("backlog")));
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
