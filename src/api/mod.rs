//! The NOC control plane over HTTP (axum), served by `outaged`. Owns the
//! routes, bearer-token roles, the read model the pipeline publishes
//! ([`Snapshot`]) and the command channel into the pipeline ([`Command`]):
//! the pipeline task stays the only writer of incidents, so a NOC command
//! is one more event in the incident log, numbered and planned like any
//! other, with the token's name as its actor.
//!
//! Routes: `GET /v1/incidents[?state=]`, `GET /v1/incidents/{id}`,
//! `GET /v1/incidents/{id}/preview`, `POST /v1/incidents` (declare over
//! postcodes, sites, a GeoJSON polygon or a circle),
//! `POST /v1/incidents/{id}/update|approve|link|resolve|cancel` (operator),
//! `GET /v1/impact?postcode=|msisdn=|customer_id=`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` (Prometheus text; no token), `GET /status`
//! (the public status page, HTML, no token; [`status`]).
//! Tokens are never logged; the listen address defaults to loopback.

pub mod client;
pub mod problem;
pub mod status;
pub mod types;
mod unsubscribe;

use crate::model::{Incident, IncidentId, IncidentState};
use crate::refdata::RefData;
use crate::runtime::{Shutdown, Stats};
use crate::transforms::classify::CauseClass;
use crate::transforms::plan::Planner;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use problem::{ApiError, ApiJson, ApiPath, ApiQuery, Kind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use types::*;

/// `[api]` in the config.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the API listens. Default `127.0.0.1:8080` (loopback: put a
    /// TLS proxy in front to reach it from elsewhere); none: no API.
    pub listen: Option<SocketAddr>,
    /// Bearer tokens and their roles. Default none (every call but the
    /// health checks and metrics is refused). Keep them out of the file:
    /// `OUTAGE_API__TOKENS='[{name="noc",role="operator",token="…"}]'`.
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))), tokens: Vec::new() }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig").field("listen", &self.listen).field("tokens", &self.tokens).finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it: recorded as the actor of every command it issues.
    pub name: String,
    pub role: Role,
    pub token: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads incidents and impact.
    Viewer,
    /// Also declares, updates, resolves and cancels.
    Operator,
}

/// One incident as the pipeline last saw it, with what the API needs
/// beside the folded state.
#[derive(Debug, Clone)]
pub struct SnapshotIncident {
    pub inc: Incident,
    /// The cause in the words notices use (default language): what agents,
    /// the IVR, chat bots and the status page say.
    pub cause_text: String,
    /// Footprint postcodes (declared: the correlator's coverage; closed:
    /// those told).
    pub postcodes: Vec<String>,
    pub customers: u64,
    pub timeline: Vec<TimelineEntry>,
    /// The zone customers read this incident's times in: its first
    /// postcode's (the status page shows times in it, named).
    pub zone: chrono_tz::Tz,
}

impl SnapshotIncident {
    pub fn view(&self) -> IncidentView {
        let i = &self.inc;
        IncidentView {
            id: i.id.clone(),
            state: i.state,
            cause: i.cause.clone(),
            cause_text: self.cause_text.clone(),
            detail: i.detail.clone(),
            opened_at: i.opened_at,
            declared_at: i.declared_at,
            restored_at: i.restored_at,
            closed_at: i.closed_at,
            etr: i.etr,
            message: i.message.clone(),
            sites: i.sites.sorted_keys().into_iter().map(String::from).collect(),
            area: i.scope.as_ref().map(|(a, _)| a.clone()),
            awaiting_approval: i.awaiting_approval,
            etr_passed: i.etr_passed,
            sites_down: i.down_count(),
            postcodes: self.postcodes.clone(),
            customers: self.customers,
            links: i.links.iter().cloned().collect(),
            updated_at: i.updated_at,
            timeline: self.timeline.clone(),
        }
    }
}

/// The read model: open incidents and recently closed ones.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The incident log has been folded and the pipeline is running.
    pub ready: bool,
    /// Shared with the pipeline's cache: an incident that did not change
    /// since the last snapshot is not copied again.
    pub incidents: Vec<Arc<SnapshotIncident>>,
}

/// A NOC command for the pipeline, answered with the incident after it.
/// Serialized when it travels through `outage.commands` to the leading
/// correlator (`topology::commands`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Open and declare an incident over an area, with the postcodes it
    /// resolved to (indexes into the reference data; resolved once, by the
    /// handler, which answers 422 for a bad area).
    Declare(DeclareRequest, Vec<u32>),
    /// Change an existing incident.
    On(IncidentId, Change),
}

/// What a command does to an existing incident.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Update(UpdateRequest),
    Resolve,
    Cancel(CancelRequest),
    /// Release a fan-out waiting for approval.
    Approve,
    /// Link with another incident (both get a `linked` event).
    Link(IncidentId),
}

#[derive(Debug, thiserror::Error, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandError {
    #[error("no incident {0}")]
    NotFound(IncidentId),
    #[error("{0}")]
    Invalid(String),
    #[error("the pipeline failed: {0}")]
    Failed(String),
    /// The events it would write are too large for the incident log (413).
    #[error("{0}")]
    TooLarge(String),
}

/// The largest area a declaration may draw, as JSON: the `scoped` event
/// keeps it as given, so a larger polygon is refused (413) before anything
/// is resolved; simplify it (fewer vertices) or give postcodes or sites.
pub const AREA_MAX_BYTES: usize = 256 * 1024;

/// The largest incident event a NOC command may make (its area, postcodes,
/// texts, counted twice for JSON escaping): the producer's record limit
/// less room for the event's other fields, checked by the pipeline before
/// the command touches any state, so an event too large for the incident
/// log is refused (413), never produced. (All 33 120 US ZIP codes make a
/// `scoped` event of about 270 kB.)
pub const EVENT_MAX_BYTES: usize = crate::kafka::RECORD_MAX_BYTES - 64 * 1024;

/// A command in flight: what, who (the token's name), where to answer.
pub struct Envelope {
    pub command: Command,
    pub actor: String,
    pub reply: oneshot::Sender<Result<IncidentView, CommandError>>,
}

/// The pipeline's ends of the API: commands in, snapshots out.
pub struct PipelineSide {
    pub commands: mpsc::Receiver<Envelope>,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
}

/// What the handlers share.
pub struct ApiState {
    tokens: Vec<ApiToken>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Envelope>,
    refdata: Arc<RefData>,
    planner: Planner,
    stats: Arc<Stats>,
    /// Customer index by MSISDN and by id, for `/v1/impact`.
    by_msisdn: HashMap<String, u32>,
    by_id: HashMap<String, u32>,
    /// `refdata.default_country`: a number asked about in national form is
    /// read as the billing import reads the customer file.
    default_country: Option<String>,
    now: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    /// Checks unsubscribe links' tokens (`sinks.email.unsubscribe_secret`).
    unsubscribe: Option<crate::unsubscribe::Signer>,
}

/// The channels between the API and the pipeline (commands bounded: a
/// NOC does not queue thousands).
pub fn channels() -> (PipelineSide, mpsc::Sender<Envelope>, watch::Receiver<Arc<Snapshot>>) {
    let (ctx, crx) = mpsc::channel(64);
    let (stx, srx) = watch::channel(Arc::new(Snapshot::default()));
    (PipelineSide { commands: crx, snapshots: stx }, ctx, srx)
}

/// What the API takes of the daemon's configuration (composed by
/// `Config::api_settings`, so the API does not import the configuration
/// that imports it).
pub struct ApiSettings {
    /// `api.tokens`.
    pub tokens: Vec<ApiToken>,
    /// `plan`: the API previews and renders notices as the planner does.
    pub plan: crate::transforms::plan::PlanConfig,
    /// `causes`, compiled: the same words for causes as the notices.
    pub classifier: Arc<crate::transforms::classify::Classifier>,
    /// `refdata.default_country`.
    pub default_country: Option<String>,
    /// `sinks.email.unsubscribe_secret`.
    pub unsubscribe_secret: Option<String>,
}

impl ApiState {
    pub fn new(
        cfg: ApiSettings,
        refdata: Arc<RefData>,
        commands: mpsc::Sender<Envelope>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stats: Arc<Stats>,
        now: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    ) -> Result<Self, crate::transforms::templates::TemplateError> {
        let mut by_msisdn = HashMap::new();
        let mut by_id = HashMap::new();
        for (i, c) in refdata.customers.iter().enumerate() {
            if let Some(m) = &c.msisdn {
                by_msisdn.insert(m.clone(), i as u32);
            }
            by_id.insert(c.customer_id.clone(), i as u32);
        }
        Ok(ApiState {
            tokens: cfg.tokens,
            snapshots,
            commands,
            planner: Planner::new(cfg.plan, refdata.clone())?.with_classifier(cfg.classifier),
            refdata,
            stats,
            by_msisdn,
            by_id,
            default_country: cfg.default_country,
            now,
            unsubscribe: cfg.unsubscribe_secret.as_deref().map(crate::unsubscribe::Signer::new),
        })
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match e {
            CommandError::NotFound(_) => StatusCode::NOT_FOUND,
            CommandError::Invalid(_) => StatusCode::CONFLICT,
            CommandError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
            CommandError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Equal in time whatever the first difference (tokens are secrets).
/// `v` as a Prometheus label value: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token an `Authorization` header presents: the `Bearer` scheme in
/// any case (RFC 9110 §11.1: schemes are case-insensitive), then the token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The caller's token, if it has at least `need`.
fn authorize<'a>(st: &'a ApiState, headers: &HeaderMap, need: Role) -> Result<&'a ApiToken, ApiError> {
    let presented = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    let Some(presented) = presented else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is required"));
    };
    let Some(t) = st.tokens.iter().find(|t| same(&t.token, presented)) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"));
    };
    if t.role < need {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("token {:?} is a {:?}; this needs an operator", t.name, t.role),
        ));
    }
    Ok(t)
}

type Shared = State<Arc<ApiState>>;

/// A caller with a viewer's (or operator's) token: an extractor, so it is
/// checked before the path, query or body is read — a caller without a
/// token learns nothing about the request (401 before any 400/422).
struct Viewer;

/// A caller with an operator's token, and its name (the actor of the
/// command's event).
struct Operator(String);

impl axum::extract::FromRequestParts<Arc<ApiState>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &Arc<ApiState>) -> Result<Self, ApiError> {
        authorize(st, &parts.headers, Role::Viewer).map(|_| Viewer)
    }
}

impl axum::extract::FromRequestParts<Arc<ApiState>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, st: &Arc<ApiState>) -> Result<Self, ApiError> {
        authorize(st, &parts.headers, Role::Operator).map(|t| Operator(t.name.clone()))
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status::page))
        .route("/v1/incidents", get(list).post(declare))
        .route("/v1/incidents/{id}", get(show))
        .route("/v1/incidents/{id}/preview", get(preview))
        .route("/v1/incidents/{id}/approve", post(approve))
        .route("/v1/incidents/{id}/link", post(link))
        .route("/v1/incidents/{id}/update", post(update))
        .route("/v1/incidents/{id}/resolve", post(resolve))
        .route("/v1/incidents/{id}/cancel", post(cancel))
        .route("/v1/impact", get(impact))
        .route("/unsubscribe", get(unsubscribe::page).post(unsubscribe::confirm))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
}

/// The probes and metrics alone, for a process with no incidents to show
/// (`outaged --role dispatcher`).
pub fn ops_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
}

/// Serve the NOC API until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>, shutdown: Shutdown) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serve `router` until shutdown.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.requested().await }).await
}

/// Ready: the reference data is loaded (the daemon does not start without
/// it), the incident log is folded, and the alarm consumer is connected to
/// a broker (or has not reported yet).
async fn readyz(State(st): Shared) -> Response {
    let brokers_up = st.stats.source.lock().unwrap_or_else(|p| p.into_inner()).brokers_up;
    if !st.snapshots.borrow().ready {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the incident log is still being read").into_response()
    } else if brokers_up == Some(0) {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no connection to a Kafka broker").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<IncidentState>,
}

async fn list(
    State(st): Shared,
    _: Viewer,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<IncidentView>>, ApiError> {
    let snap = st.snapshots.borrow().clone();
    Ok(Json(snap.incidents.iter().filter(|i| q.state.is_none_or(|s| i.inc.state == s)).map(|i| i.view()).collect()))
}

async fn show(State(st): Shared, _: Viewer, ApiPath(id): ApiPath<String>) -> Result<Json<IncidentView>, ApiError> {
    let snap = st.snapshots.borrow().clone();
    snap.incidents
        .iter()
        .find(|i| i.inc.id.0 == id)
        .map(|i| Json(i.view()))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no incident {id}")))
}

async fn command(st: &ApiState, actor: String, command: Command) -> Result<Json<IncidentView>, ApiError> {
    tracing::info!(%actor, ?command, "NOC command");
    let (reply, answer) = oneshot::channel();
    let down = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the pipeline is not running");
    st.commands.send(Envelope { command, actor, reply }).await.map_err(|_| down())?;
    Ok(Json(answer.await.map_err(|_| down())??))
}

async fn declare(
    State(st): Shared,
    Operator(actor): Operator,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<IncidentView>), ApiError> {
    one_area_kind(&body)?;
    let req: DeclareRequest = problem::from_value(body)?;
    if req.cause.trim().is_empty() {
        return Err(ApiError::invalid("cause", "give the cause"));
    }
    etr_ahead(req.etr, (st.now)())?;
    let area_bytes = serde_json::to_vec(&req.area).map_or(usize::MAX, |v| v.len());
    if area_bytes > AREA_MAX_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the {} area is {area_bytes} bytes of JSON, above the {AREA_MAX_BYTES}-byte limit: \
                 simplify it (fewer vertices) or give postcodes or sites",
                req.area.kind()
            ),
        )
        .field("area"));
    }
    let area_field = format!("area.{}", req.area.kind());
    req.area.check_geometry().map_err(|e| ApiError::invalid(&area_field, e.to_string()).kind(Kind::InvalidGeometry))?;
    // Resolved here, once: a typo is a 422 naming it, before anything
    // reaches the pipeline (which shares this reference data).
    let postcodes = req.area.postcodes(&st.refdata).map_err(|e| ApiError::invalid(&area_field, e.to_string()))?;
    let view = command(&st, actor, Command::Declare(req, postcodes)).await?;
    Ok((StatusCode::CREATED, view))
}

/// The kinds an area may be drawn as.
const AREA_KINDS: [&str; 4] = ["postcodes", "sites", "polygon", "circle"];

/// `area` is an object with exactly one kind: said in those words (serde
/// would answer "expected value at line 1 column 42" for two).
fn one_area_kind(body: &serde_json::Value) -> Result<(), ApiError> {
    let Some(area) = body.get("area") else { return Ok(()) }; // serde names the missing field
    let Some(obj) = area.as_object() else {
        return Err(ApiError::invalid("area", "area must be an object: {\"postcodes\": […]}, {\"sites\": […]}, {\"polygon\": GeoJSON} or {\"circle\": {\"lat\", \"lon\", \"radius_km\"}}"));
    };
    let given: Vec<&str> = obj.keys().map(String::as_str).collect();
    if let Some(unknown) = given.iter().find(|k| !AREA_KINDS.contains(k)) {
        return Err(ApiError::invalid(
            &format!("area.{unknown}"),
            format!("area kind {unknown:?} is not one of {}", AREA_KINDS.join(", ")),
        ));
    }
    if given.len() != 1 {
        let got = if given.is_empty() { "none".to_string() } else { given.join(" and ") };
        return Err(ApiError::invalid(
            "area",
            format!("give exactly one area kind ({}); got {got}", AREA_KINDS.join(", ")),
        ));
    }
    Ok(())
}

async fn approve(
    State(st): Shared,
    Operator(actor): Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IncidentView>, ApiError> {
    command(&st, actor, Command::On(IncidentId(id.into()), Change::Approve)).await
}

async fn link(
    State(st): Shared,
    Operator(actor): Operator,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<LinkRequest>,
) -> Result<Json<IncidentView>, ApiError> {
    command(&st, actor, Command::On(IncidentId(id.into()), Change::Link(req.other))).await
}

/// What the fan-out still to go would send, per channel and IVR region.
async fn preview(State(st): Shared, _: Viewer, ApiPath(id): ApiPath<String>) -> Result<Json<Preview>, ApiError> {
    let snap = st.snapshots.borrow().clone();
    if !snap.incidents.iter().any(|i| i.inc.id.0 == id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no incident {id}")));
    }
    let now = (st.now)();
    let st2 = st.clone();
    // Linear in the audience (a million customers: seconds): off the runtime.
    let preview = tokio::task::spawn_blocking(move || {
        let i = snap.incidents.iter().find(|i| i.inc.id.0 == id)?;
        let rd = &st2.refdata;
        let footprint: Vec<u32> = i.postcodes.iter().filter_map(|p| rd.postcode_index(p)).collect();
        let regions = st2.planner.preview(&i.inc, &footprint, now);
        let channels = |m: &std::collections::BTreeMap<crate::model::Channel, u64>| {
            m.iter().map(|(c, n)| (c.as_str().to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>()
        };
        let mut total = std::collections::BTreeMap::new();
        for r in regions.values() {
            for (c, n) in &r.channels {
                *total.entry(c.as_str().to_string()).or_insert(0) += n;
            }
        }
        Some(Preview {
            id: i.inc.id.clone(),
            awaiting_approval: i.inc.awaiting_approval,
            postcodes: regions.values().map(|r| r.postcodes).sum(),
            customers: regions.values().map(|r| r.customers).sum(),
            channels: total,
            regions: regions
                .iter()
                .map(|(region, r)| RegionPreview {
                    region: region.clone(),
                    postcodes: r.postcodes,
                    customers: r.customers,
                    channels: channels(&r.channels),
                })
                .collect(),
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("preview failed: {e}")))?;
    preview.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "the incident vanished"))
}

async fn update(
    State(st): Shared,
    Operator(actor): Operator,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Json<IncidentView>, ApiError> {
    if req.cause.is_none() && req.etr.is_none() && req.message.is_none() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "give at least one of cause, etr, message"));
    }
    etr_ahead(req.etr, (st.now)())?;
    command(&st, actor, Command::On(IncidentId(id.into()), Change::Update(req))).await
}

/// An ETR customers are told must lie ahead: one already past ("fix
/// expected 05:00" sent at 09:00) is refused, naming both times.
fn etr_ahead(etr: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<(), ApiError> {
    match etr {
        Some(etr) if etr <= now => Err(ApiError::invalid(
            "etr",
            format!(
                "etr {} is not in the future (now {}): give the time service is expected back",
                etr.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        )),
        _ => Ok(()),
    }
}

async fn resolve(
    State(st): Shared,
    Operator(actor): Operator,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IncidentView>, ApiError> {
    command(&st, actor, Command::On(IncidentId(id.into()), Change::Resolve)).await
}

async fn cancel(
    State(st): Shared,
    Operator(actor): Operator,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> Result<Json<IncidentView>, ApiError> {
    command(&st, actor, Command::On(IncidentId(id.into()), Change::Cancel(req))).await
}

#[derive(Deserialize)]
struct ImpactQuery {
    postcode: Option<String>,
    msisdn: Option<String>,
    customer_id: Option<String>,
}

async fn impact(
    State(st): Shared,
    _: Viewer,
    ApiQuery(q): ApiQuery<ImpactQuery>,
) -> Result<Json<ImpactResponse>, ApiError> {
    let customer =
        match (&q.postcode, &q.msisdn, &q.customer_id) {
            (Some(_), None, None) => None,
            (None, Some(m), None) => {
                // Any spelling of the number: spaces, dashes, 00, a national
                // form — normalised as the customer file was.
                let e164 = crate::refdata::e164(m, st.default_country.as_deref()).map_err(|why| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("msisdn: {why}")).field("msisdn")
                })?;
                Some(st.by_msisdn.get(&e164).ok_or_else(|| {
                    ApiError::new(StatusCode::NOT_FOUND, "no customer with that number").field("msisdn")
                })?)
            }
            (None, None, Some(c)) => Some(st.by_id.get(c.trim()).ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("no customer {c}")).field("customer_id")
            })?),
            _ => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "give exactly one of postcode, msisdn, customer_id"))
            }
        };
    let who = customer.map(|&i| &st.refdata.customers[i as usize]);
    let (postcode, language) = match who {
        Some(c) => (c.postcode.clone(), st.planner.language(&c.language)),
        None => (q.postcode.clone().unwrap_or_default().trim().to_string(), st.planner.language("")),
    };
    let now = (st.now)();
    let snap = st.snapshots.borrow().clone();
    let incidents = snap
        .incidents
        .iter()
        .filter(|i| i.inc.state.is_open() && i.postcodes.contains(&postcode))
        .map(|i| ImpactedBy {
            id: i.inc.id.clone(),
            state: i.inc.state,
            cause: i.inc.cause.clone(),
            etr: i.inc.etr,
            text: st.planner.customer_text(&i.inc, &postcode, &language, who, now),
        })
        .collect();
    let customer_id = who.map(|c| c.customer_id.clone());
    Ok(Json(ImpactResponse { postcode, language, customer_id, incidents }))
}

/// Prometheus text exposition of the daemon's counters.
async fn metrics(State(st): Shared) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let s = &st.stats;
    let mut out = String::new();
    /// One metric: its help, its type, and a line per (labels, value).
    fn metric<L: std::fmt::Display>(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(L, u64)]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    }
    /// `{label="key"}` for each count.
    fn labelled<'a>(label: &str, counts: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<(String, u64)> {
        counts.into_iter().map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), v)).collect()
    }
    out.push_str(&st.refdata.rejected.metrics());
    let read = s.alarms_read.load(Relaxed);
    let dead = s.alarms_dead_lettered.load(Relaxed);
    metric(
        &mut out,
        "outage_alarms_total",
        "counter",
        "Alarm records read, by outcome.",
        &[("{outcome=\"accepted\"}", read.saturating_sub(dead)), ("{outcome=\"dead_lettered\"}", dead)],
    );
    let dead_by =
        labelled("class", s.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, *v)));
    metric(
        &mut out,
        "outage_alarms_dead_lettered_total",
        "counter",
        "Alarms dead-lettered, by class of reason.",
        &dead_by,
    );
    let ignored = s.alarms_ignored.lock().unwrap_or_else(|p| p.into_inner()).by_reason();
    metric(
        &mut out,
        "outage_alarms_ignored_total",
        "counter",
        "Alarms decoded but not applied (repeated raise, clear without raise, not service-affecting, stale raise), by reason.",
        &labelled("reason", ignored),
    );
    metric(
        &mut out,
        "outage_alarms_late_total",
        "counter",
        "Alarms that arrived after the watermark had passed their event time (ingest.lateness): applied in arrival order.",
        &[("", s.alarms_late.load(Relaxed))],
    );
    metric(
        &mut out,
        "outage_buffered_alarms",
        "gauge",
        "Alarms waiting for the watermark to pass them.",
        &[("", s.alarms_buffered.load(Relaxed))],
    );
    let causes = s.causes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    metric(
        &mut out,
        "outage_alarm_raises_by_cause_class_total",
        "counter",
        "Alarm raises by the class of their probable cause (the standards' table and [causes] rules).",
        &labelled("class", CauseClass::ALL.iter().map(|c| (c.as_str(), causes.by_class[*c as usize]))),
    );
    let named: u64 = causes.top.iter().map(|(_, n)| n).sum();
    let unclassified: Vec<(String, u64)> = causes
        .top
        .iter()
        .map(|(cause, n)| (format!("{{cause=\"{}\"}}", label_value(cause)), *n))
        .chain(std::iter::once(("{cause=\"\"}".to_string(), causes.unclassified - named)))
        .collect();
    metric(
        &mut out,
        "outage_alarm_raises_unclassified_total",
        "counter",
        "Alarm raises whose probable cause nobody classifies, the causes.report_top most frequent by cause; cause=\"\" counts the rest.",
        &unclassified,
    );
    let snap = st.snapshots.borrow().clone();
    let mut by_state: std::collections::BTreeMap<&str, u64> = Default::default();
    for i in &snap.incidents {
        *by_state.entry(i.inc.state.as_str()).or_default() += 1;
    }
    let states = labelled("state", by_state);
    metric(
        &mut out,
        "outage_incidents",
        "gauge",
        "Incidents in the read model (open and recently closed), by state.",
        &states,
    );
    let mut actions: Vec<(String, u64)> = crate::model::Channel::ALL
        .iter()
        .map(|c| (format!("{{channel=\"{}\",result=\"done\"}}", c.as_str()), s.delivered(*c)))
        .collect();
    let failed = s.notices_failed.load(Relaxed);
    let dup = s.duplicates.load(Relaxed);
    actions.push(("{channel=\"notice\",result=\"failed\"}".into(), failed));
    actions.push(("{channel=\"any\",result=\"duplicate\"}".into(), dup));
    metric(&mut out, "outage_actions_total", "counter", "Actions carried out, by channel and result.", &actions);
    metric(
        &mut out,
        "outage_actions_planned_total",
        "counter",
        "Actions planned onto the actions topic.",
        &[("", s.actions_planned.load(Relaxed))],
    );
    metric(
        &mut out,
        "outage_etr_passed_total",
        "counter",
        "ETRs that passed while their incident was still declared (the NOC was alerted, customers told \"still working\").",
        &[("", s.etr_passed.load(Relaxed))],
    );
    metric(
        &mut out,
        "outage_actions_waiting",
        "gauge",
        "Actions held until their time (quiet hours, revokes).",
        &[("", s.actions_waiting.load(Relaxed))],
    );
    metric(
        &mut out,
        "outage_declare_to_ivr_max_milliseconds",
        "gauge",
        "Slowest declaration to IVR announcement set.",
        &[("", s.declare_to_ivr_max_ms.load(Relaxed))],
    );
    let health = *s.source.lock().unwrap_or_else(|p| p.into_inner());
    metric(
        &mut out,
        "outage_consumer_lag_records",
        "gauge",
        "Alarm records on the broker not processed yet (librdkafka's stored-offset lag, refreshed every 2 s; absent until known).",
        &health.lag.map(|l| ("", l)).into_iter().collect::<Vec<_>>(),
    );
    metric(
        &mut out,
        "outage_brokers_up",
        "gauge",
        "Kafka brokers the alarm consumer is connected to (absent until known).",
        &health.brokers_up.map(|l| ("", l)).into_iter().collect::<Vec<_>>(),
    );
    let retries: Vec<(String, u64)> = crate::kafka::retries()
        .into_iter()
        .map(|(stage, n)| (format!("{{stage=\"{}\"}}", stage.replace(['"', '\\', '\n'], "_")), n))
        .collect();
    metric(
        &mut out,
        "outage_kafka_retries_total",
        "counter",
        "Transient Kafka errors (brokers down, transport failures, timeouts, leader changes) retried, by stage: alarms and actions (the consumers) or the topic produced to.",
        &retries,
    );
    metric(
        &mut out,
        "outage_journal_torn_lines_total",
        "counter",
        "Torn last lines (a crash mid-write) cut off the JSONL journals when they were opened.",
        &[("", crate::sinks::journal::torn_lines())],
    );
    crate::sinks::park::render_metrics(&mut out);
    s.first_alarm_to_declared.render(
        "outage_first_alarm_to_declared_seconds",
        "From an incident's first alarm (event time) to its declaration.",
        &mut out,
    );
    s.first_alarm_to_first_notice.render(
        "outage_first_alarm_to_first_notice_seconds",
        "From an incident's first alarm to the first outage notice a gateway accepted.",
        &mut out,
    );
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_wants_the_log_folded_and_a_broker() {
        let (side, commands, snapshots) = channels();
        let stats = Arc::new(Stats::default());
        let rd = Arc::new(RefData::build(vec![], vec![], vec![]).unwrap());
        let state = ApiState::new(
            crate::config::Config::default().api_settings(),
            rd,
            commands,
            snapshots,
            stats.clone(),
            Box::new(Utc::now),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router(Arc::new(state))).await });
        let ready = || async {
            let http = crate::tls::http_client(&Default::default()).build().unwrap();
            let r = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        let (code, body) = ready().await;
        assert_eq!(code, 503);
        assert!(body.contains("still being read"), "{body}");
        side.snapshots.send(Arc::new(Snapshot { ready: true, incidents: vec![] })).unwrap();
        assert_eq!(ready().await.0, 200, "brokers not reported yet: ready");
        let set = |n| stats.source.lock().unwrap().brokers_up = Some(n);
        set(0);
        let (code, body) = ready().await;
        assert_eq!(code, 503);
        assert!(body.contains("no connection to a Kafka broker"), "{body}");
        set(1);
        assert_eq!(ready().await.0, 200);
        server.abort();
    }
}
