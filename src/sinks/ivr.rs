//! The IVR platform over HTTP. Owns [`HttpIvr`], the [`IvrSink`] that
//! carries each region's desired announcement to the platform
//! (`schemas/ivr-api.v1.openapi.json`): an active upsert is a `PUT`, an
//! inactive one a `DELETE`, retried with jittered exponential backoff on
//! 429, 5xx and transport errors; other 4xx are permanent. It also owns the
//! desired state the pipeline last asked for, and the reconciliation that
//! re-asserts it on a platform that lost or changed announcements
//! ([`HttpIvr::reconcile`], run periodically by [`reconcile_loop`]).

use super::notify::backoff;
use super::{Delivery, IvrSink, SinkError};
use crate::model::IvrUpsert;
use crate::runtime::InvalidSetting;
use crate::runtime::Shutdown;
use crate::sinks::RetryConfig;
use chrono::{DateTime, Utc};
use reqwest::{header, Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// `[sinks.ivr]`: the IVR platform's HTTP API.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrApiConfig {
    /// Base URL; the API paths (`/v1/announcements/…`) are appended, e.g.
    /// `https://ivr.example.net`. Logged: put no secret in it. Required.
    pub url: String,
    /// Bearer token (`Authorization: Bearer …`). Never logged: `Debug`
    /// redacts it. Default none (no `Authorization` header).
    pub token: Option<String>,
    /// Per-request timeout. Default 5s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a transient failure (429, 5xx, timeout, connection
    /// error) after the first attempt. Default 3.
    pub retries: u32,
    /// How often the platform's announcements are compared with the
    /// desired state and lost ones re-asserted. Default 60s.
    #[serde(with = "humantime_serde")]
    pub reconcile_every: Duration,
}

impl Default for IvrApiConfig {
    fn default() -> Self {
        IvrApiConfig {
            url: String::new(),
            token: None,
            timeout: Duration::from_secs(5),
            retries: 3,
            reconcile_every: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for IvrApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IvrApiConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("reconcile_every", &self.reconcile_every)
            .finish()
    }
}

impl IvrApiConfig {
    /// Checks serde cannot express (keys under `sinks.ivr`).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.base_url().map(drop)
    }

    fn base_url(&self) -> Result<Url, InvalidSetting> {
        let bad = |key: &'static str, message: &str| InvalidSetting { key: key.into(), message: message.into() };
        let url = Url::parse(&self.url).map_err(|e| bad("sinks.ivr.url", &e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(bad("sinks.ivr.url", "must be an http(s) URL with a host"));
        }
        if self.timeout.is_zero() {
            return Err(bad("sinks.ivr.timeout", "must be more than 0s"));
        }
        if self.reconcile_every.is_zero() {
            return Err(bad("sinks.ivr.reconcile_every", "must be more than 0s"));
        }
        Ok(url)
    }
}

/// What one reconciliation found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Desired announcements compared with the platform's.
    pub checked: u64,
    /// Of those, missing or different on the platform and PUT again.
    pub reasserted: u64,
    /// Desired announcements not checked (the region's GET failed) or not
    /// re-asserted (the PUT failed).
    pub failed: u64,
}

/// Why a request did not succeed, after retries.
#[derive(Debug)]
enum Failure {
    /// A 4xx other than 429: retrying cannot help.
    Permanent(StatusCode),
    /// Retries ran out on 429/5xx/transport errors (the last reason).
    Transient(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Permanent(s) => write!(f, "refused: HTTP {s}"),
            Failure::Transient(r) => write!(f, "retries exhausted: {r}"),
        }
    }
}

/// (region, incident id): an announcement's key on the platform.
type Key = (String, String);

/// An announcement the pipeline wants played.
struct Wanted {
    upsert: IvrUpsert,
    /// The platform is known to hold exactly `upsert`.
    applied: bool,
}

/// An announcement without an ETR is valid until "now + 4 h" when planned,
/// and an incident is re-planned on every step its alarms touch: one whose
/// only change is a `valid_until` later by less than this is not sent again
/// (the platform's copy still has hours to run), or a busy incident would
/// PUT the same announcement on every step.
const EXTEND_EVERY: chrono::Duration = chrono::Duration::hours(1);

/// `u` is `applied`, or `applied` with `valid_until` moved later by less
/// than [`EXTEND_EVERY`].
fn only_extends_a_little(applied: &IvrUpsert, u: &IvrUpsert) -> bool {
    let IvrUpsert { region, active, message, language, messages, incident_id, valid_until } = u;
    let later = *valid_until - applied.valid_until;
    (chrono::Duration::zero()..EXTEND_EVERY).contains(&later)
        && (region, active, message, language, messages, incident_id)
            == (
                &applied.region,
                &applied.active,
                &applied.message,
                &applied.language,
                &applied.messages,
                &applied.incident_id,
            )
}

/// Longest wait between attempts, also the cap on `Retry-After`.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The IVR platform's HTTP API as an [`IvrSink`].
///
/// Delivery: `Done` once the platform took the PUT or DELETE; `Duplicate`
/// for an upsert equal to one already applied (nothing sent) and for a
/// DELETE the platform answers 404 (already gone); `Failed` for a refusal or
/// when retries ran out, logged with region, incident and status. It never
/// returns `Err`.
///
/// Share it between the pipeline and [`reconcile_loop`] as
/// `Arc<tokio::sync::Mutex<HttpIvr>>`, which is an [`IvrSink`] too.
pub struct HttpIvr {
    cfg: IvrApiConfig,
    base: Url,
    http: reqwest::Client,
    retry: RetryConfig,
    desired: BTreeMap<Key, Wanted>,
    last_flip_latency: Option<Duration>,
}

impl HttpIvr {
    /// `trust`: the roots HTTPS to the platform trusts (`sinks.tls`).
    pub fn new(cfg: IvrApiConfig, trust: &crate::tls::Trust) -> Result<Self, InvalidSetting> {
        let base = cfg.base_url()?;
        let http = crate::tls::http_client(trust)
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| InvalidSetting { key: "sinks.ivr".into(), message: e.to_string() })?;
        let retry = RetryConfig { base: Duration::from_millis(200), max: BACKOFF_MAX, ..RetryConfig::default() };
        Ok(HttpIvr { cfg, base, http, retry, desired: BTreeMap::new(), last_flip_latency: None })
    }

    /// From the last active upsert call to the platform's 2xx for its PUT
    /// (retries included): the IVR part of declaration → announcement.
    pub fn last_flip_latency(&self) -> Option<Duration> {
        self.last_flip_latency
    }

    /// The announcements the pipeline wants played now.
    pub fn desired(&self) -> impl Iterator<Item = &IvrUpsert> {
        self.desired.values().map(|w| &w.upsert)
    }

    /// Drop expired announcements (`valid_until` < `now`: the platform has
    /// stopped them itself), then GET every region that still has some and
    /// re-PUT those the platform lost or holds in a different form.
    pub async fn reconcile(&mut self, now: DateTime<Utc>) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        for region in self.regions_to_check(now) {
            self.reconcile_region(&region, &mut report).await;
        }
        report
    }

    /// Forgets expired announcements; the regions with desired state.
    fn regions_to_check(&mut self, now: DateTime<Utc>) -> Vec<String> {
        self.desired.retain(|_, w| w.upsert.valid_until >= now);
        let mut regions: Vec<String> = self.desired.keys().map(|(r, _)| r.clone()).collect();
        regions.dedup();
        regions
    }

    async fn reconcile_region(&mut self, region: &str, report: &mut ReconcileReport) {
        let wanted: Vec<IvrUpsert> =
            self.desired.values().filter(|w| w.upsert.region == region).map(|w| w.upsert.clone()).collect();
        let held: Vec<IvrUpsert> = match self.list(region).await {
            Ok(held) => held,
            Err(reason) => {
                tracing::warn!(region, %reason, "IVR reconcile: could not read the platform's announcements");
                report.failed += wanted.len() as u64;
                return;
            }
        };
        for u in wanted {
            report.checked += 1;
            let key = (u.region.clone(), u.incident_id.to_string());
            if !held.contains(&u) {
                let incident = &u.incident_id;
                tracing::info!(region, %incident, "IVR reconcile: announcement missing or different, re-asserting");
                if let Err(f) = self.put(&u).await {
                    report.failed += 1;
                    self.failed(&u, &f);
                    continue;
                }
                report.reasserted += 1;
            }
            if let Some(w) = self.desired.get_mut(&key) {
                w.applied = true;
            }
        }
    }

    /// Logs a failure and, for a refusal, forgets the announcement: the
    /// platform will refuse it again, so reconciling cannot help.
    fn failed(&mut self, u: &IvrUpsert, f: &Failure) {
        let status = match f {
            Failure::Permanent(s) => {
                self.desired.remove(&(u.region.clone(), u.incident_id.to_string()));
                Some(s.as_u16())
            }
            Failure::Transient(_) => None,
        };
        let (region, incident) = (&u.region, &u.incident_id);
        tracing::warn!(%region, %incident, active = u.active, status, error = %f, "IVR announcement not applied");
    }

    async fn put(&self, u: &IvrUpsert) -> Result<(), Failure> {
        self.call(Method::PUT, self.url(&[&u.region, &u.incident_id.0]), Some(u)).await.map(drop)
    }

    async fn list(&self, region: &str) -> Result<Vec<IvrUpsert>, String> {
        let r = self.call(Method::GET, self.url(&[region]), None).await.map_err(|f| f.to_string())?;
        r.json().await.map_err(|e| format!("answer is not a list of announcements: {}", e.without_url()))
    }

    /// `{base}/v1/announcements/{segments…}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["v1", "announcements"]).extend(segments);
        }
        url
    }

    /// One request, retried on 429/5xx/transport errors up to `retries`
    /// times, waiting the jittered backoff or `Retry-After`, the longer.
    async fn call(&self, method: Method, url: Url, body: Option<&IvrUpsert>) -> Result<reqwest::Response, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(token) = &self.cfg.token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let (reason, retry_after) = match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error() => {
                    (format!("HTTP {}", r.status()), retry_after(&r))
                }
                Ok(r) => return Err(Failure::Permanent(r.status())),
                // Without the URL: it names the region and incident, which
                // the caller logs anyway, and keeps the log line short.
                Err(e) => (format!("transport: {}", crate::tls::transport_error(e)), None),
            };
            if attempt > self.cfg.retries {
                return Err(Failure::Transient(reason));
            }
            let pause = backoff(&self.retry, attempt, &mut rand::rng()).max(retry_after.unwrap_or_default());
            tracing::debug!(%method, path = url.path(), attempt, %reason, ?pause, "IVR platform: retrying");
            tokio::time::sleep(pause).await;
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), capped.
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    let secs = r.headers().get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(BACKOFF_MAX))
}

impl IvrSink for HttpIvr {
    async fn upsert(&mut self, u: &IvrUpsert) -> Result<Delivery, SinkError> {
        let started = Instant::now();
        let key = (u.region.clone(), u.incident_id.to_string());
        if !u.active {
            self.desired.remove(&key);
            return Ok(match self.call(Method::DELETE, self.url(&[&u.region, &u.incident_id.0]), None).await {
                Ok(_) => Delivery::Done,
                Err(Failure::Permanent(StatusCode::NOT_FOUND)) => Delivery::Duplicate,
                Err(f) => {
                    self.failed(u, &f);
                    Delivery::Failed
                }
            });
        }
        if self.desired.get(&key).is_some_and(|w| w.applied && only_extends_a_little(&w.upsert, u)) {
            return Ok(Delivery::Duplicate);
        }
        // Wanted even if this PUT fails for now: reconciling retries it.
        self.desired.insert(key.clone(), Wanted { upsert: u.clone(), applied: false });
        Ok(match self.put(u).await {
            Ok(()) => {
                self.last_flip_latency = Some(started.elapsed());
                if let Some(w) = self.desired.get_mut(&key) {
                    w.applied = true;
                }
                Delivery::Done
            }
            Err(f) => {
                self.failed(u, &f);
                Delivery::Failed
            }
        })
    }
}

/// The pipeline's handle when [`reconcile_loop`] shares the sink; the lock
/// is held for one upsert (its retries included).
impl IvrSink for Arc<Mutex<HttpIvr>> {
    async fn upsert(&mut self, u: &IvrUpsert) -> Result<Delivery, SinkError> {
        self.lock().await.upsert(u).await
    }
}

/// [`HttpIvr::reconcile`] on a shared sink, taking the lock one region at a
/// time so an incident's flip waits for at most one region's check.
pub async fn reconcile_shared(ivr: &Mutex<HttpIvr>, now: DateTime<Utc>) -> ReconcileReport {
    let regions = ivr.lock().await.regions_to_check(now);
    let mut report = ReconcileReport::default();
    for region in regions {
        ivr.lock().await.reconcile_region(&region, &mut report).await;
    }
    report
}

/// Reconcile every `every` (first after one period) until shutdown, which
/// also interrupts a reconciliation in progress (its PUTs are idempotent).
pub async fn reconcile_loop(
    ivr: Arc<Mutex<HttpIvr>>,
    every: Duration,
    clock: impl Fn() -> DateTime<Utc> + Send,
    mut shutdown: Shutdown,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let round = async {
            ticks.tick().await;
            reconcile_shared(&ivr, clock()).await
        };
        let r = tokio::select! {
            _ = shutdown.requested() => return,
            r = round => r,
        };
        if r.failed > 0 {
            tracing::warn!(checked = r.checked, reasserted = r.reasserted, failed = r.failed, "IVR reconcile");
        } else if r.reasserted > 0 {
            tracing::info!(checked = r.checked, reasserted = r.reasserted, "IVR reconcile");
        } else {
            tracing::debug!(checked = r.checked, "IVR reconcile: platform up to date");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IncidentId;
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::routing::{get, put};
    use serde_json::Value;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    const TOKEN: &str = "s3cret-ivr-token";

    /// An in-process IVR platform holding announcements by key. It refuses
    /// bodies the published schema rejects (400), a wrong token (401), and
    /// answers 503 to the next `fail_next` requests.
    struct Platform {
        schema: jsonschema::Validator,
        state: std::sync::Mutex<BTreeMap<Key, Value>>,
        fail_next: AtomicUsize,
        /// Every request as `METHOD path -> status`.
        log: std::sync::Mutex<Vec<String>>,
    }

    impl Platform {
        fn count(&self, method: &str) -> usize {
            self.log.lock().unwrap().iter().filter(|l| l.starts_with(method)).count()
        }

        fn keys(&self) -> Vec<Key> {
            self.state.lock().unwrap().keys().cloned().collect()
        }

        /// Answer a request: auth and injected failures first, then `ok`.
        fn answer(&self, what: String, headers: &HeaderMap, ok: impl FnOnce() -> StatusCode) -> StatusCode {
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let status = if auth != Some(&format!("Bearer {TOKEN}")) {
                StatusCode::UNAUTHORIZED
            } else if self.fail_next.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                ok()
            };
            self.log.lock().unwrap().push(format!("{what} -> {}", status.as_u16()));
            status
        }
    }

    async fn put_one(
        State(p): State<Arc<Platform>>,
        Path((region, incident)): Path<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        p.answer(format!("PUT {region}/{incident}"), &headers, || {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST };
            if !p.schema.is_valid(&v) || v["region"] != region.as_str() || v["incident_id"] != incident.as_str() {
                return StatusCode::BAD_REQUEST;
            }
            match p.state.lock().unwrap().insert((region, incident), v.clone()) {
                None => StatusCode::CREATED,
                Some(old) if old == v => StatusCode::NO_CONTENT,
                Some(_) => StatusCode::OK,
            }
        })
    }

    async fn delete_one(
        State(p): State<Arc<Platform>>,
        Path((region, incident)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> StatusCode {
        p.answer(format!("DELETE {region}/{incident}"), &headers, || {
            match p.state.lock().unwrap().remove(&(region, incident)) {
                Some(_) => StatusCode::NO_CONTENT,
                None => StatusCode::NOT_FOUND,
            }
        })
    }

    async fn list(
        State(p): State<Arc<Platform>>,
        Path(region): Path<String>,
        headers: HeaderMap,
    ) -> (StatusCode, axum::Json<Vec<Value>>) {
        let status = p.answer(format!("GET {region}"), &headers, || StatusCode::OK);
        let held = p.state.lock().unwrap().iter().filter(|((r, _), _)| *r == region).map(|(_, v)| v.clone()).collect();
        (status, axum::Json(if status.is_success() { held } else { vec![] }))
    }

    /// Start the platform; the sink's config points at it.
    async fn platform() -> (IvrApiConfig, Arc<Platform>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/ivr-upsert.v1.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let schema = jsonschema::draft202012::options().should_validate_formats(true).build(&schema).unwrap();
        let p = Arc::new(Platform {
            schema,
            state: Default::default(),
            fail_next: AtomicUsize::new(0),
            log: Default::default(),
        });
        let app = axum::Router::new()
            .route("/v1/announcements/{region}", get(list))
            .route("/v1/announcements/{region}/{incident}", put(put_one).delete(delete_one))
            .with_state(p.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = IvrApiConfig {
            url: format!("http://{}", listener.local_addr().unwrap()),
            token: Some(TOKEN.into()),
            ..Default::default()
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        (cfg, p)
    }

    fn sink(cfg: IvrApiConfig) -> HttpIvr {
        let mut ivr = HttpIvr::new(cfg, &Default::default()).unwrap();
        ivr.retry.base = Duration::from_millis(2);
        ivr
    }

    fn upsert(region: &str, incident: &str, active: bool) -> IvrUpsert {
        IvrUpsert {
            region: region.into(),
            active,
            message: if active { format!("Outage in {region}, we are on it.") } else { String::new() },
            language: "en".into(),
            messages: [("en".into(), format!("Outage in {region}.")), ("es".into(), format!("Avería en {region}."))]
                .into(),
            incident_id: IncidentId(incident.into()),
            valid_until: Utc::now() + chrono::Duration::hours(4),
        }
    }

    fn key(region: &str, incident: &str) -> Key {
        (region.into(), incident.into())
    }

    #[tokio::test]
    async fn an_https_platform_is_reached_only_trusting_the_ca_file() {
        use crate::tls::testing::{fixture, https_server};
        use crate::tls::Trust;
        let cfg = IvrApiConfig { url: format!("https://localhost:{}", https_server("{}").await), ..Default::default() };
        let ca = Trust::load(Some(&fixture("ca.pem")), "sinks.tls.ca_file").unwrap();
        let mut trusted = HttpIvr::new(cfg.clone(), &ca).unwrap();
        assert_eq!(trusted.upsert(&upsert("RI-PROV", "INC-1", true)).await.unwrap(), Delivery::Done);
        let mut untrusted = HttpIvr::new(IvrApiConfig { retries: 0, ..cfg }, &Trust::default()).unwrap();
        assert_eq!(untrusted.upsert(&upsert("RI-PROV", "INC-1", true)).await.unwrap(), Delivery::Failed);
    }

    #[tokio::test]
    async fn upsert_puts_and_clearing_deletes() {
        let (cfg, p) = platform().await;
        let mut ivr = sink(cfg);
        let on = upsert("RI-PROV", "INC-1", true);
        assert_eq!(ivr.upsert(&on).await.unwrap(), Delivery::Done);
        assert_eq!(p.keys(), [key("RI-PROV", "INC-1")]);
        assert_eq!(
            serde_json::from_value::<IvrUpsert>(p.state.lock().unwrap().values().next().unwrap().clone()).unwrap(),
            on
        );
        assert!(ivr.last_flip_latency().is_some());
        assert_eq!(ivr.upsert(&upsert("RI-PROV", "INC-1", false)).await.unwrap(), Delivery::Done);
        assert!(p.keys().is_empty());
        assert_eq!(ivr.desired().count(), 0);
        assert_eq!(*p.log.lock().unwrap(), ["PUT RI-PROV/INC-1 -> 201", "DELETE RI-PROV/INC-1 -> 204"]);
        // Clearing again: the platform says 404, already gone.
        assert_eq!(ivr.upsert(&upsert("RI-PROV", "INC-1", false)).await.unwrap(), Delivery::Duplicate);
    }

    #[tokio::test]
    async fn repeating_an_upsert_is_a_no_op_and_a_change_is_sent() {
        let (cfg, p) = platform().await;
        let mut ivr = sink(cfg);
        let on = upsert("RI-PROV", "INC-1", true);
        assert_eq!(ivr.upsert(&on).await.unwrap(), Delivery::Done);
        assert_eq!(ivr.upsert(&on).await.unwrap(), Delivery::Duplicate);
        assert_eq!(p.count("PUT"), 1);
        // The platform is idempotent too: a new sink (a restart) re-PUTs.
        assert_eq!(sink(ivr.cfg.clone()).upsert(&on).await.unwrap(), Delivery::Done);
        let changed = IvrUpsert { message: "Now expected back by 14:00.".into(), ..on.clone() };
        assert_eq!(ivr.upsert(&changed).await.unwrap(), Delivery::Done);
        assert_eq!(
            *p.log.lock().unwrap(),
            ["PUT RI-PROV/INC-1 -> 201", "PUT RI-PROV/INC-1 -> 204", "PUT RI-PROV/INC-1 -> 200"]
        );
    }

    #[tokio::test]
    async fn a_replan_that_only_moves_valid_until_a_little_later_is_not_resent() {
        let (cfg, p) = platform().await;
        let mut ivr = sink(cfg);
        let on = upsert("RI-PROV", "INC-1", true);
        let later = |m: i64| IvrUpsert { valid_until: on.valid_until + chrono::Duration::minutes(m), ..on.clone() };
        assert_eq!(ivr.upsert(&on).await.unwrap(), Delivery::Done);
        // The next steps' plans: "now + 4 h" a few seconds, then minutes on.
        assert_eq!(ivr.upsert(&later(0)).await.unwrap(), Delivery::Duplicate);
        assert_eq!(ivr.upsert(&later(59)).await.unwrap(), Delivery::Duplicate);
        assert_eq!(p.count("PUT"), 1);
        // An hour on, the platform's copy is extended; earlier is sent too
        // (an ETR brought forward).
        assert_eq!(ivr.upsert(&later(60)).await.unwrap(), Delivery::Done);
        assert_eq!(ivr.upsert(&later(30)).await.unwrap(), Delivery::Done);
        assert_eq!(p.count("PUT"), 3);
        assert_eq!(ivr.desired().next().unwrap().valid_until, later(30).valid_until, "what the platform holds");
        // Anything else changed is sent at once.
        let es = IvrUpsert { language: "es".into(), ..later(31) };
        assert_eq!(ivr.upsert(&es).await.unwrap(), Delivery::Done);
        assert_eq!(p.count("PUT"), 4);
    }

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let (cfg, p) = platform().await;
        let mut ivr = sink(cfg);
        p.fail_next.store(2, Relaxed);
        assert_eq!(ivr.upsert(&upsert("RI-PROV", "INC-1", true)).await.unwrap(), Delivery::Done);
        assert_eq!(p.count("PUT"), 3);
        assert_eq!(p.keys(), [key("RI-PROV", "INC-1")]);
        // More failures than retries: failed, but still wanted, so the
        // next reconciliation puts it.
        p.fail_next.store(4, Relaxed);
        assert_eq!(ivr.upsert(&upsert("RI-PROV", "INC-2", true)).await.unwrap(), Delivery::Failed);
        assert_eq!(p.count("PUT"), 7, "1 + 3 retries");
        let r = ivr.reconcile(Utc::now()).await;
        assert_eq!(r, ReconcileReport { checked: 2, reasserted: 1, failed: 0 });
        assert_eq!(p.keys(), [key("RI-PROV", "INC-1"), key("RI-PROV", "INC-2")]);
    }

    #[tokio::test]
    async fn a_refusal_fails_at_once() {
        let (cfg, p) = platform().await;
        let mut ivr = sink(cfg.clone());
        let bad = IvrUpsert { message: String::new(), ..upsert("RI-PROV", "INC-1", true) };
        assert_eq!(ivr.upsert(&bad).await.unwrap(), Delivery::Failed);
        assert_eq!(*p.log.lock().unwrap(), ["PUT RI-PROV/INC-1 -> 400"], "not retried");
        assert_eq!(ivr.desired().count(), 0, "not re-asserted either");
        let mut wrong_token = sink(IvrApiConfig { token: Some("guess".into()), ..cfg });
        assert_eq!(wrong_token.upsert(&upsert("RI-PROV", "INC-1", true)).await.unwrap(), Delivery::Failed);
        assert_eq!(p.count("PUT"), 2);
        assert!(p.keys().is_empty());
    }

    #[tokio::test]
    async fn reconcile_reasserts_exactly_what_the_platform_lost() {
        let (cfg, p) = platform().await;
        let mut ivr = sink(cfg);
        let expired =
            IvrUpsert { valid_until: Utc::now() - chrono::Duration::seconds(1), ..upsert("NL-AMS", "INC-0", true) };
        for u in [
            upsert("RI-PROV", "INC-1", true),
            upsert("RI-PROV", "INC-2", true),
            upsert("ES-MAD", "INC-1", true),
            expired,
        ] {
            assert_eq!(ivr.upsert(&u).await.unwrap(), Delivery::Done);
        }
        assert_eq!(ivr.reconcile(Utc::now()).await, ReconcileReport { checked: 3, reasserted: 0, failed: 0 });
        assert_eq!(p.count("GET"), 2, "the expired announcement's region is not checked");
        {
            let mut held = p.state.lock().unwrap();
            held.remove(&key("RI-PROV", "INC-2"));
            held.get_mut(&key("ES-MAD", "INC-1")).unwrap()["message"] = "Something else".into();
            held.remove(&key("NL-AMS", "INC-0"));
        }
        let puts = p.count("PUT");
        assert_eq!(ivr.reconcile(Utc::now()).await, ReconcileReport { checked: 3, reasserted: 2, failed: 0 });
        assert_eq!(p.count("PUT"), puts + 2);
        let held: Vec<IvrUpsert> =
            p.state.lock().unwrap().values().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
        let wanted: Vec<IvrUpsert> = ivr.desired().cloned().collect();
        assert_eq!(held, wanted);
        // The platform down for a whole region's retries: counted, kept.
        p.fail_next.store(4, Relaxed);
        let r = ivr.reconcile(Utc::now()).await;
        assert_eq!((r.failed, ivr.desired().count()), (1, 3), "{r:?}");
    }

    #[tokio::test]
    async fn the_loop_reasserts_until_shutdown() {
        let (cfg, p) = platform().await;
        let ivr = Arc::new(Mutex::new(sink(cfg)));
        let mut pipeline_side = ivr.clone();
        assert_eq!(pipeline_side.upsert(&upsert("RI-PROV", "INC-1", true)).await.unwrap(), Delivery::Done);
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(reconcile_loop(ivr, Duration::from_millis(20), Utc::now, shutdown));
        p.state.lock().unwrap().clear();
        for _ in 0..200 {
            if !p.keys().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(p.keys(), [key("RI-PROV", "INC-1")]);
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops on shutdown").unwrap();
    }

    #[test]
    fn config_takes_defaults_and_never_shows_the_token() {
        let cfg: IvrApiConfig =
            toml::from_str(&format!("url = \"https://ivr.example.net\"\ntoken = \"{TOKEN}\"")).unwrap();
        assert_eq!(
            cfg,
            IvrApiConfig {
                url: "https://ivr.example.net".into(),
                token: Some(TOKEN.into()),
                timeout: Duration::from_secs(5),
                retries: 3,
                reconcile_every: Duration::from_secs(60),
            }
        );
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains(TOKEN) && shown.contains("<redacted>"), "{shown}");
        assert!(toml::from_str::<IvrApiConfig>("url = \"https://x\"\ntimeout = \"2s\"\ntokn = \"x\"").is_err());
        for bad in ["", "ivr.example.net", "ftp://ivr.example.net"] {
            assert!(IvrApiConfig { url: bad.into(), ..cfg.clone() }.validate().is_err(), "{bad}");
        }
        let ivr = HttpIvr::new(IvrApiConfig { url: "https://ivr.example.net/api/".into(), ..cfg }, &Default::default())
            .unwrap();
        assert_eq!(
            ivr.url(&["RI PROV", "INC/1"]).as_str(),
            "https://ivr.example.net/api/v1/announcements/RI%20PROV/INC%2F1"
        );
    }

    #[test]
    fn the_openapi_document_names_the_published_schema_and_every_operation() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/ivr-api.v1.openapi.json");
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["components"]["schemas"]["IvrUpsert"]["$ref"], "ivr-upsert.v1.schema.json");
        let paths = &doc["paths"];
        for (path, method) in [
            ("/v1/announcements/{region}", "get"),
            ("/v1/announcements/{region}/{incident_id}", "put"),
            ("/v1/announcements/{region}/{incident_id}", "delete"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path}");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    }
}
