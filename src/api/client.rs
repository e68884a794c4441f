//! The typed HTTP client for `outaged`'s API (`/v1/...`, `/healthz`,
//! `/readyz`), used by `outagectl`. Owns: building request URLs under a
//! `--server` base, sending the bearer token (never shown: not in `Debug`,
//! not in errors), turning HTTP statuses into [`ClientError`] with the exit
//! codes `outagectl` documents, and the plain-text tables and time format
//! the CLI prints. Bodies are the ones in [`super::types`].

use super::types::{
    CancelRequest, DeclareRequest, ErrorBody, ImpactResponse, IncidentView, LinkRequest, Preview, Problem,
    TimelineEntry, UpdateRequest,
};
use crate::model::{Area, IncidentId, IncidentState};
use crate::tls::Trust;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// What went wrong talking to the daemon; [`ClientError::exit_code`] is
/// what `outagectl` exits with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not a usable base URL.
    #[error("bad server address {server:?}: {reason}")]
    InvalidServer { server: String, reason: String },
    /// The token cannot be sent in an HTTP header (the token is not shown).
    #[error("the token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    /// Connection refused, DNS failure, timeout, connection dropped.
    #[error("cannot reach the daemon at {server} ({}): is outaged running there?", root_cause(source))]
    Unreachable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    /// 401: no token, or one the daemon does not know.
    #[error("unauthorized: no or bad token ({0}); give --token or set OUTAGECTL_TOKEN")]
    Unauthorized(String),
    /// 403: the token's role (viewer) cannot do this.
    #[error("forbidden: this token's role cannot {action} ({message})")]
    Forbidden { action: &'static str, message: String },
    /// 404: e.g. an unknown incident; the daemon's words.
    #[error("not found: {0}")]
    NotFound(String),
    /// 400, 409, 422: the daemon refused the request as given.
    #[error("request refused: {0}")]
    BadRequest(String),
    /// Any other status (503: not ready, 5xx).
    #[error("the daemon answered {status}: {message}")]
    Server { status: StatusCode, message: String },
    /// A success answer whose body is not what this client expects
    /// (a different version of the daemon, or not outaged at all).
    #[error("unexpected answer to {what}: {message}")]
    Decode { what: String, message: String },
}

impl ClientError {
    /// The process exit code for this error: unreachable 3, unauthorized or
    /// forbidden 4, not found 5, bad request 6, anything else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => 3,
            ClientError::Unauthorized(_) | ClientError::Forbidden { .. } => 4,
            ClientError::NotFound(_) => 5,
            ClientError::BadRequest(_) => 6,
            ClientError::InvalidServer { .. }
            | ClientError::InvalidToken
            | ClientError::Server { .. }
            | ClientError::Decode { .. } => 1,
        }
    }
}

/// The innermost cause, e.g. `Connection refused (os error 111)`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// Which customer or place `GET /v1/impact` asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpactQuery {
    Postcode(String),
    Msisdn(String),
    CustomerId(String),
}

impl ImpactQuery {
    fn pair(&self) -> (&'static str, &str) {
        match self {
            ImpactQuery::Postcode(p) => ("postcode", p),
            ImpactQuery::Msisdn(m) => ("msisdn", m),
            ImpactQuery::CustomerId(c) => ("customer_id", c),
        }
    }
}

/// The base URL a `--server` value means (`host:port` alone: `http://`),
/// ending in `/`; refused: other schemes, no host, credentials (not
/// echoed), a query or fragment.
pub fn base_url(server: &str) -> Result<Url, ClientError> {
    let trimmed = server.trim();
    let with_scheme = if trimmed.contains("://") { trimmed.to_string() } else { format!("http://{trimmed}") };
    let bad = |reason: &str| ClientError::InvalidServer { server: trimmed.to_string(), reason: reason.into() };
    let mut base = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad("expected an http:// or https:// URL"));
    }
    if base.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !base.username().is_empty() || base.password().is_some() {
        // Not echoed: it would print the credentials.
        return Err(ClientError::InvalidServer {
            server: "<URL with credentials>".into(),
            reason: "put no credentials in --server; give the token with --token or OUTAGECTL_TOKEN".into(),
        });
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(bad("a server address has no ?query or #fragment"));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// A client for one daemon. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    /// Base URL, always ending in `/` so paths join under it.
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `server` is a base URL (`http://host:port` or `https://…`, optionally
    /// with a path prefix; `host:port` alone means `http://`). An empty
    /// token is no token. `timeout` bounds each whole request. HTTPS trusts
    /// the built-in roots ([`Client::with_trust`] adds a CA file's).
    pub fn new(server: &str, token: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        Self::with_trust(server, token, timeout, &Trust::default())
    }

    /// [`Client::new`], with HTTPS trusting `trust`'s roots (`--ca-file`).
    pub fn with_trust(
        server: &str,
        token: Option<String>,
        timeout: Duration,
        trust: &Trust,
    ) -> Result<Self, ClientError> {
        let base = base_url(server)?;
        let bad =
            |reason: &str| ClientError::InvalidServer { server: server.trim().to_string(), reason: reason.into() };
        let token = token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        if let Some(t) = &token {
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err(ClientError::InvalidToken);
            }
        }
        let http = crate::tls::http_client(trust)
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("outagectl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&root_cause(&e)))?;
        Ok(Client { base, token, http })
    }

    /// The base URL requests go under (no credentials: those are refused).
    pub fn server(&self) -> &str {
        self.base.as_str()
    }

    /// `base` + path segments (each percent-encoded: an id cannot climb out).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("http URLs have a path").pop_if_empty().extend(segments);
        url
    }

    /// Send one request; the status decides the error, the body the result.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<(&str, &str)>,
        body: Option<&dyn ErasedBody>,
        action: &'static str,
    ) -> Result<Vec<u8>, ClientError> {
        let url = self.url(segments);
        let what = format!("{method} /{}", segments.join("/"));
        let mut req = self.http.request(method, url);
        if let Some(q) = query {
            req = req.query(&[q]);
        }
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_json());
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let unreachable = |source: reqwest::Error| {
            let cause = root_cause(&source);
            // rustls' words for a certificate it does not trust.
            let untrusted = self.base.scheme() == "https" && cause.contains("certificate");
            if source.is_builder() || untrusted {
                let hint = if untrusted {
                    "; if the daemon's certificate is from a private CA, give its PEM with --ca-file or OUTAGECTL_CA_FILE"
                } else {
                    ""
                };
                ClientError::InvalidServer { server: self.server().to_string(), reason: format!("{cause}{hint}") }
            } else {
                ClientError::Unreachable { server: self.server().to_string(), source }
            }
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(self.status_error(status, &bytes, &what, action))
    }

    /// The error for a non-success answer, with the daemon's words when
    /// there are some: a problem's `detail` and the `field` it names
    /// (`application/problem+json`), or an older daemon's `{"error": …}`.
    fn status_error(&self, status: StatusCode, body: &[u8], what: &str, action: &'static str) -> ClientError {
        let said = problem_text(body).or_else(|| serde_json::from_slice::<ErrorBody>(body).ok().map(|b| b.error));
        let message = self.scrub(said.clone().map(|s| sanitize(&s)).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_string()
            } else {
                sanitize(&truncate(text, 300))
            }
        }));
        match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized(message),
            StatusCode::FORBIDDEN => ClientError::Forbidden { action, message },
            StatusCode::NOT_FOUND if said.is_none() => ClientError::NotFound(format!(
                "{what} does not exist at {} (is this outaged, with its HTTP API?)",
                self.server()
            )),
            StatusCode::NOT_FOUND => ClientError::NotFound(message),
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                ClientError::BadRequest(message)
            }
            _ => ClientError::Server { status, message },
        }
    }

    /// Server-provided text with the token cut out, should a server echo it.
    fn scrub(&self, s: String) -> String {
        match &self.token {
            Some(t) if s.contains(t.as_str()) => s.replace(t.as_str(), "<redacted>"),
            _ => s,
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<(&str, &str)>,
        body: Option<&dyn ErasedBody>,
        action: &'static str,
    ) -> Result<T, ClientError> {
        let what = format!("{method} /{}", segments.join("/"));
        let body = self.call(method, segments, query, body, action).await?;
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de)
            .map_err(|e| ClientError::Decode { what, message: self.scrub(truncate(&e.to_string(), 300)) })
    }

    /// `GET /v1/incidents[?state=]`.
    pub async fn incidents(&self, state: Option<IncidentState>) -> Result<Vec<IncidentView>, ClientError> {
        let state = state.map(IncidentState::as_str);
        self.json(Method::GET, &["v1", "incidents"], state.map(|s| ("state", s)), None, "list incidents").await
    }

    /// `GET /v1/incidents/{id}`.
    pub async fn incident(&self, id: &IncidentId) -> Result<IncidentView, ClientError> {
        self.json(Method::GET, &["v1", "incidents", &id.0], None, None, "read incidents").await
    }

    /// `POST /v1/incidents` (201).
    pub async fn declare(&self, req: &DeclareRequest) -> Result<IncidentView, ClientError> {
        self.json(Method::POST, &["v1", "incidents"], None, Some(req), "declare incidents").await
    }

    /// `GET /v1/incidents/{id}/preview`.
    pub async fn preview(&self, id: &IncidentId) -> Result<Preview, ClientError> {
        self.json(Method::GET, &["v1", "incidents", &id.0, "preview"], None, None, "read incidents").await
    }

    /// `POST /v1/incidents/{id}/approve` with `{}`.
    pub async fn approve(&self, id: &IncidentId) -> Result<IncidentView, ClientError> {
        let empty = serde_json::Map::new();
        self.json(Method::POST, &["v1", "incidents", &id.0, "approve"], None, Some(&empty), "approve fan-outs").await
    }

    /// `POST /v1/incidents/{id}/link`.
    pub async fn link(&self, id: &IncidentId, other: &IncidentId) -> Result<IncidentView, ClientError> {
        let req = LinkRequest { other: other.clone() };
        self.json(Method::POST, &["v1", "incidents", &id.0, "link"], None, Some(&req), "link incidents").await
    }

    /// `POST /v1/incidents/{id}/update`.
    pub async fn update(&self, id: &IncidentId, req: &UpdateRequest) -> Result<IncidentView, ClientError> {
        self.json(Method::POST, &["v1", "incidents", &id.0, "update"], None, Some(req), "update incidents").await
    }

    /// `POST /v1/incidents/{id}/resolve` with `{}`.
    pub async fn resolve(&self, id: &IncidentId) -> Result<IncidentView, ClientError> {
        let empty = serde_json::Map::new();
        self.json(Method::POST, &["v1", "incidents", &id.0, "resolve"], None, Some(&empty), "resolve incidents").await
    }

    /// `POST /v1/incidents/{id}/cancel`.
    pub async fn cancel(&self, id: &IncidentId, req: &CancelRequest) -> Result<IncidentView, ClientError> {
        self.json(Method::POST, &["v1", "incidents", &id.0, "cancel"], None, Some(req), "cancel incidents").await
    }

    /// `GET /v1/impact?postcode=|msisdn=|customer_id=`.
    pub async fn impact(&self, q: &ImpactQuery) -> Result<ImpactResponse, ClientError> {
        self.json(Method::GET, &["v1", "impact"], Some(q.pair()), None, "look up impact").await
    }

    /// `GET /healthz`: the process answers.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.call(Method::GET, &["healthz"], None, None, "check health").await.map(|_| ())
    }

    /// `GET /readyz`: the incident log is read and the pipeline runs (503
    /// with the reason otherwise, as [`ClientError::Server`]).
    pub async fn ready(&self) -> Result<(), ClientError> {
        self.call(Method::GET, &["readyz"], None, None, "check readiness").await.map(|_| ())
    }
}

/// A request body, type-erased so one `call` serves every endpoint.
trait ErasedBody: Sync {
    fn to_json(&self) -> Vec<u8>;
}

impl<T: Serialize + Sync> ErasedBody for T {
    fn to_json(&self) -> Vec<u8> {
        // Plain data structs and maps of strings: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A problem body (RFC 9457) in one line: its detail, and the field it
/// names when the detail does not already start with it.
fn problem_text(body: &[u8]) -> Option<String> {
    let p: Problem = serde_json::from_slice(body).ok()?;
    let detail = if p.detail.trim().is_empty() { p.title.clone() } else { p.detail.clone() };
    Some(match &p.field {
        Some(f) if !detail.starts_with(f.as_str()) => format!("{detail} (field {f})"),
        _ => detail,
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

// ---------------------------------------------------------------------------
// Human output for `outagectl`.

/// `YYYY-MM-DD HH:MM UTC`, or `-` for none.
pub fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// `s` safe to print to a terminal: ANSI/VT escape sequences (CSI, OSC and
/// the rest) removed with their parameters, newlines and tabs made spaces,
/// other control characters (C0, DEL, C1) and bidirectional overrides
/// dropped. A cause or message comes from outside: it must not recolour,
/// retitle or reorder the NOC's terminal.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' | '\u{9b}' | '\u{9d}' => {
                // ESC [ … final, ESC ] … BEL|ST, ESC x; CSI/OSC (C1) likewise.
                let kind = if c == '\u{1b}' { chars.next() } else { Some(if c == '\u{9b}' { '[' } else { ']' }) };
                match kind {
                    Some('[') => {
                        for d in chars.by_ref() {
                            if ('\u{40}'..='\u{7e}').contains(&d) {
                                break;
                            }
                        }
                    }
                    Some(']' | 'P' | '_' | '^') => {
                        while let Some(d) = chars.next() {
                            if d == '\u{7}' || d == '\u{9c}' {
                                break;
                            }
                            if d == '\u{1b}' && chars.peek() == Some(&'\\') {
                                chars.next();
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '\n' | '\t' | '\r' => out.push(' '),
            c if c.is_control() => {}
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

/// How many terminal columns `s` takes (CJK and most emoji: two each,
/// combining marks: none).
pub fn display_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// An aligned plain-text table: a header row, then rows, columns padded to
/// the widest cell (in terminal columns, so CJK and emoji line up) and
/// separated by two spaces; no trailing spaces. Every cell is
/// [`sanitize`]d. Rows shorter than the header are padded with blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len().max(rows.iter().map(Vec::len).max().unwrap_or(0));
    let cell = |row: &[String], i: usize| row.get(i).map_or(String::new(), |c| sanitize(c));
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    // No headers (a key: value list): no header line.
    let header = (!headers.is_empty()).then_some(&header);
    let all: Vec<Vec<String>> =
        header.into_iter().chain(rows).map(|r| (0..cols).map(|i| cell(r, i)).collect()).collect();
    let widths: Vec<usize> = (0..cols).map(|i| all.iter().map(|r| display_width(&r[i])).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < cols {
                line.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(display_width(c))));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Up to `n` items joined by `, `, then `+K` for the rest.
fn first_few(items: &[String], n: usize) -> String {
    if items.is_empty() {
        return "-".into();
    }
    let shown = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        format!("{shown} +{}", items.len() - n)
    } else {
        shown
    }
}

/// `outagectl incidents` without `--state` or `--all`: leaves out the
/// dismissed and merged incidents (flaps and probable incidents nobody was
/// told of, most of a busy day's list); returns how many it left out.
pub fn drop_untold(incidents: &mut Vec<IncidentView>) -> usize {
    let before = incidents.len();
    incidents.retain(|i| !matches!(i.state, IncidentState::Dismissed | IncidentState::Merged));
    before - incidents.len()
}

/// `outagectl incidents`' order, by the DECLARED column it shows: declared
/// incidents first, oldest declaration first (the newest lands next to the
/// prompt), then those never declared (probable, dismissed, merged) by
/// when they opened; ties by id.
pub fn sort_incidents(incidents: &mut [IncidentView]) {
    incidents.sort_by(|a, b| {
        let key = |i: &IncidentView| (i.declared_at.is_none(), i.declared_at.unwrap_or(i.opened_at));
        key(a).cmp(&key(b)).then_with(|| a.id.0.cmp(&b.id.0))
    });
}

/// At most `max` terminal columns of `s`, `…` marking a cut.
pub fn truncate_width(s: &str, max: usize) -> String {
    if display_width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if w + cw + 1 > max {
            break;
        }
        w += cw;
        out.push(c);
    }
    out.push('…');
    out
}

/// One line per incident, in the order given (see [`sort_incidents`]).
pub fn incidents_table(incidents: &[IncidentView]) -> String {
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.state.as_str().to_string(),
                truncate_width(&sanitize(&i.cause), 40),
                fmt_time(i.declared_at),
                fmt_time(i.etr),
                format!("{}/{}", i.sites_down, i.sites.len()),
                first_few(&i.postcodes, 3),
                i.customers.to_string(),
            ]
        })
        .collect();
    table(&["ID", "STATE", "CAUSE", "DECLARED", "ETR", "SITES DOWN", "POSTCODES", "CUSTOMERS"], &rows)
}

/// `outagectl show` (and the answer to a command): every field, then the
/// timeline.
pub fn incident_details(i: &IncidentView) -> String {
    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let links: Vec<String> = i.links.iter().map(|l| l.to_string()).collect();
    let fields: Vec<Vec<String>> = [
        ("Incident", i.id.to_string()),
        ("State", i.state.as_str().to_string()),
        ("Cause", if i.cause_text.is_empty() { i.cause.clone() } else { format!("{} ({})", i.cause_text, i.cause) }),
        ("Detail", i.detail.clone().unwrap_or_else(|| "-".into())),
        ("Message", i.message.clone().unwrap_or_else(|| "-".into())),
        ("Opened", fmt_time(Some(i.opened_at))),
        ("Declared", fmt_time(i.declared_at)),
        (
            "ETR",
            match i.etr_passed {
                Some(_) => format!("{} (PASSED: service not back; set a new ETR)", fmt_time(i.etr)),
                None => fmt_time(i.etr),
            },
        ),
        ("Restored", fmt_time(i.restored_at)),
        ("Closed", fmt_time(i.closed_at)),
        ("Updated", fmt_time(Some(i.updated_at))),
        ("Sites down", format!("{} of {}", i.sites_down, i.sites.len())),
        ("Sites", list(&i.sites)),
        ("Postcodes", format!("{} ({})", i.postcodes.len(), list(&i.postcodes))),
        ("Customers", i.customers.to_string()),
        ("Links", list(&links)),
        ("Area", i.area.as_ref().map_or_else(|| "-".to_string(), area_text)),
        ("Fan-out", if i.awaiting_approval { "waits for approval".to_string() } else { "-".to_string() }),
    ]
    .into_iter()
    .map(|(k, v)| vec![format!("{k}:"), v])
    .collect();
    let mut out = table(&[], &fields);
    out.push('\n');
    if i.timeline.is_empty() {
        out.push_str("Timeline: (empty)\n");
    } else {
        out.push_str("Timeline:\n");
        out.push_str(&timeline_table(&i.timeline));
    }
    out
}

fn timeline_table(entries: &[TimelineEntry]) -> String {
    let rows: Vec<Vec<String>> =
        entries.iter().map(|e| vec![fmt_time(Some(e.at)), e.actor.clone(), e.kind.clone(), e.detail.clone()]).collect();
    table(&["AT", "ACTOR", "EVENT", "DETAIL"], &rows)
}

/// An area as the NOC drew it, in one line.
fn area_text(a: &Area) -> String {
    match a {
        Area::Postcodes(p) => format!("postcodes {}", first_few(p, 5)),
        Area::Sites(s) => format!("sites {}", first_few(s, 5)),
        Area::Polygon(g) => format!("polygon ({})", g.get("type").and_then(|t| t.as_str()).unwrap_or("?")),
        Area::Circle { lat, lon, radius_km } => format!("circle {radius_km} km around {lat}, {lon}"),
    }
}

/// `outagectl preview`: totals, then one line per IVR region.
pub fn preview_table(p: &Preview) -> String {
    let channels = |m: &std::collections::BTreeMap<String, u64>| {
        ["sms", "email", "data_grant"].map(|c| m.get(c).copied().unwrap_or(0).to_string())
    };
    let mut out = format!(
        "{}: {} customers in {} postcodes not told yet{}\n\n",
        sanitize(&p.id.0),
        p.customers,
        p.postcodes,
        if p.awaiting_approval { "; the fan-out waits for approval (outagectl approve ID)" } else { "" }
    );
    let mut rows: Vec<Vec<String>> = p
        .regions
        .iter()
        .map(|r| {
            let mut row = vec![r.region.clone(), r.postcodes.to_string(), r.customers.to_string()];
            row.extend(channels(&r.channels));
            row
        })
        .collect();
    let mut total = vec!["TOTAL".to_string(), p.postcodes.to_string(), p.customers.to_string()];
    total.extend(channels(&p.channels));
    rows.push(total);
    out.push_str(&table(&["REGION", "POSTCODES", "CUSTOMERS", "SMS", "EMAIL", "DATA GRANTS"], &rows));
    out
}

/// `outagectl impact`: the postcode, then each incident and its text.
pub fn impact_text(r: &ImpactResponse) -> String {
    let mut out = match &r.customer_id {
        Some(c) => format!(
            "Customer {} in postcode {} (language {})\n",
            sanitize(c),
            sanitize(&r.postcode),
            sanitize(&r.language)
        ),
        None => format!("Postcode {} (language {})\n", sanitize(&r.postcode), sanitize(&r.language)),
    };
    if r.incidents.is_empty() {
        out.push_str("No open incident affects it.\n");
        return out;
    }
    let rows: Vec<Vec<String>> = r
        .incidents
        .iter()
        .map(|i| vec![i.id.to_string(), i.state.as_str().to_string(), i.cause.clone(), fmt_time(i.etr)])
        .collect();
    out.push_str(&table(&["ID", "STATE", "CAUSE", "ETR"], &rows));
    for i in &r.incidents {
        let lines: Vec<String> = i.text.lines().map(sanitize).collect();
        out.push_str(&format!("\n{}:\n  {}\n", sanitize(&i.id.0), lines.join("\n  ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ImpactedBy;
    use axum::extract::{Path, Query};
    use axum::http::{HeaderMap, StatusCode as AxStatus};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const TOKEN: &str = "s3cr3t-token-value";

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn sample(id: &str) -> IncidentView {
        IncidentView {
            id: IncidentId(id.into()),
            state: IncidentState::Declared,
            cause: "power failure".into(),
            cause_text: "a power failure".into(),
            detail: Some("mains failure at S1".into()),
            opened_at: t("2026-11-23T14:00:00Z"),
            declared_at: Some(t("2026-11-23T14:05:00Z")),
            restored_at: None,
            closed_at: None,
            etr: Some(t("2026-11-23T18:00:00Z")),
            message: Some("engineers on site".into()),
            sites: vec!["S1".into(), "S2".into(), "S3".into()],
            sites_down: 2,
            postcodes: vec!["AB1 2CD".into(), "AB1 3EF".into(), "AB1 4GH".into(), "AB1 5JK".into()],
            customers: 1234,
            links: vec![],
            area: None,
            awaiting_approval: false,
            etr_passed: None,
            updated_at: t("2026-11-23T14:10:00Z"),
            timeline: vec![TimelineEntry {
                at: t("2026-11-23T14:05:00Z"),
                actor: "correlator".into(),
                kind: "declared".into(),
                detail: "3 sites".into(),
            }],
        }
    }

    #[test]
    fn the_default_list_leaves_out_what_nobody_was_told_of() {
        let with = |id, state| IncidentView { state, ..sample(id) };
        let mut list = vec![
            with("A", IncidentState::Declared),
            with("B", IncidentState::Dismissed),
            with("C", IncidentState::Resolved),
            with("D", IncidentState::Merged),
            with("E", IncidentState::Probable),
        ];
        assert_eq!(drop_untold(&mut list), 2);
        let ids: Vec<&str> = list.iter().map(|i| i.id.0.as_str()).collect();
        assert_eq!(ids, ["A", "C", "E"]);
    }

    /// What the test server saw: the Authorization header and JSON bodies.
    #[derive(Default)]
    struct Seen {
        auth: Vec<Option<String>>,
        bodies: Vec<serde_json::Value>,
        queries: Vec<HashMap<String, String>>,
    }

    type S = Arc<Mutex<Seen>>;

    /// Note the Authorization header; 401 unless it carries `TOKEN`.
    fn record(seen: &S, h: &HeaderMap) -> Result<(), (AxStatus, Json<ErrorBody>)> {
        let auth = h.get("authorization").map(|v| v.to_str().unwrap().to_string());
        let ok = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
        seen.lock().unwrap().auth.push(auth);
        if ok {
            Ok(())
        } else {
            Err((AxStatus::UNAUTHORIZED, Json(ErrorBody { error: "unknown token".into() })))
        }
    }

    async fn server() -> (String, S) {
        let seen: S = Arc::default();
        let s = seen.clone();
        let list = {
            let s = s.clone();
            move |h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                record(&s, &h).map_err(IntoResponse::into_response)?;
                s.lock().unwrap().queries.push(q);
                Ok::<_, axum::response::Response>(Json(vec![sample("INC-1"), sample("INC-2")]))
            }
        };
        let show = {
            let s = s.clone();
            move |h: HeaderMap, Path(id): Path<String>| async move {
                record(&s, &h).map_err(IntoResponse::into_response)?;
                if id == "INC-1" {
                    Ok(Json(sample(&id)))
                } else {
                    Err((AxStatus::NOT_FOUND, Json(ErrorBody { error: format!("no incident {id}") })).into_response())
                }
            }
        };
        let declare = {
            let s = s.clone();
            move |h: HeaderMap, Json(b): Json<serde_json::Value>| async move {
                record(&s, &h).map_err(IntoResponse::into_response)?;
                s.lock().unwrap().bodies.push(b);
                Ok::<_, axum::response::Response>((AxStatus::CREATED, Json(sample("INC-NEW"))))
            }
        };
        let command = {
            let s = s.clone();
            move |h: HeaderMap, Path((id, verb)): Path<(String, String)>, Json(b): Json<serde_json::Value>| async move {
                record(&s, &h).map_err(IntoResponse::into_response)?;
                s.lock().unwrap().bodies.push(serde_json::json!({"verb": verb, "body": b}));
                if verb == "cancel" && b.get("reason").is_none() {
                    return Err((AxStatus::UNPROCESSABLE_ENTITY, Json(ErrorBody { error: "reason missing".into() }))
                        .into_response());
                }
                let mut v = sample(&id);
                v.state = if verb == "resolve" { IncidentState::Resolved } else { IncidentState::Declared };
                Ok(Json(v))
            }
        };
        let impact = {
            let s = s.clone();
            move |h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                record(&s, &h).map_err(IntoResponse::into_response)?;
                s.lock().unwrap().queries.push(q.clone());
                Ok::<_, axum::response::Response>(Json(ImpactResponse {
                    postcode: q.get("postcode").cloned().unwrap_or_else(|| "AB1 2CD".into()),
                    language: "en".into(),
                    customer_id: None,
                    incidents: vec![ImpactedBy {
                        id: IncidentId("INC-1".into()),
                        state: IncidentState::Declared,
                        cause: "power failure".into(),
                        etr: None,
                        text: "We know.".into(),
                    }],
                }))
            }
        };
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(|| async {
                    (AxStatus::SERVICE_UNAVAILABLE, Json(ErrorBody { error: "still reading the log".into() }))
                }),
            )
            .route("/v1/incidents", get(list).post(declare))
            .route("/v1/incidents/{id}", get(show))
            .route("/v1/incidents/{id}/{verb}", post(command))
            .route("/v1/impact", get(impact))
            .route("/v1/forbidden", get(|| async { AxStatus::FORBIDDEN }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn client(server: &str, token: Option<&str>) -> Client {
        Client::new(server, token.map(String::from), Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn every_call_decodes_and_sends_the_token() {
        let (srv, seen) = server().await;
        let c = client(&srv, Some(TOKEN));

        let list = c.incidents(Some(IncidentState::Declared)).await.unwrap();
        assert_eq!(list, vec![sample("INC-1"), sample("INC-2")]);
        assert_eq!(seen.lock().unwrap().queries[0].get("state").map(String::as_str), Some("declared"));
        assert_eq!(c.incidents(None).await.unwrap().len(), 2);
        assert!(seen.lock().unwrap().queries[1].is_empty());

        assert_eq!(c.incident(&IncidentId("INC-1".into())).await.unwrap(), sample("INC-1"));

        let declared = c
            .declare(&DeclareRequest {
                area: Area::Postcodes(vec!["AB1 2CD".into()]),
                cause: "fibre cut".into(),
                since: None,
                etr: None,
                message: None,
            })
            .await
            .unwrap();
        assert_eq!(declared.id.0, "INC-NEW");

        let id = IncidentId("INC-1".into());
        let upd = UpdateRequest { etr: Some(t("2026-11-23T19:00:00Z")), ..Default::default() };
        assert_eq!(c.update(&id, &upd).await.unwrap().id, id);
        assert_eq!(c.resolve(&id).await.unwrap().state, IncidentState::Resolved);
        assert_eq!(c.cancel(&id, &CancelRequest { reason: "false alarm".into() }).await.unwrap().id, id);

        let imp = c.impact(&ImpactQuery::Msisdn("+447700900123".into())).await.unwrap();
        assert_eq!(imp.incidents.len(), 1);
        assert_eq!(seen.lock().unwrap().queries[2].get("msisdn").map(String::as_str), Some("+447700900123"));

        c.health().await.unwrap();
        let e = c.ready().await.unwrap_err();
        assert!(matches!(e, ClientError::Server { status: StatusCode::SERVICE_UNAVAILABLE, .. }), "{e:?}");
        assert!(e.to_string().contains("still reading the log"));
        assert_eq!(e.exit_code(), 1);

        let seen = seen.lock().unwrap();
        assert!(seen.auth.iter().all(|a| a.as_deref() == Some(&*format!("Bearer {TOKEN}"))), "{:?}", seen.auth);
        assert_eq!(seen.auth.len(), 8);
        assert_eq!(
            seen.bodies,
            vec![
                serde_json::json!({"area": {"postcodes": ["AB1 2CD"]}, "cause": "fibre cut"}),
                serde_json::json!({"verb": "update", "body": {"etr": "2026-11-23T19:00:00Z"}}),
                serde_json::json!({"verb": "resolve", "body": {}}),
                serde_json::json!({"verb": "cancel", "body": {"reason": "false alarm"}}),
            ]
        );
    }

    #[tokio::test]
    async fn unauthorized_is_exit_4_and_never_shows_the_token() {
        let (srv, seen) = server().await;
        let e = client(&srv, None).incidents(None).await.unwrap_err();
        assert!(matches!(&e, ClientError::Unauthorized(m) if m == "unknown token"), "{e:?}");
        assert_eq!(e.exit_code(), 4);
        assert_eq!(seen.lock().unwrap().auth, vec![None], "no token: no Authorization header");

        let wrong = "wrong-token-xyz";
        let c = client(&srv, Some(wrong));
        let e = c.incident(&IncidentId("INC-1".into())).await.unwrap_err();
        assert!(matches!(e, ClientError::Unauthorized(_)));
        assert!(!e.to_string().contains(wrong) && !format!("{e:?}").contains(wrong));
        assert!(!format!("{c:?}").contains(wrong));
    }

    #[tokio::test]
    async fn forbidden_is_exit_4() {
        let (srv, _) = server().await;
        let c = client(&srv, Some(TOKEN));
        let e = c.call(Method::GET, &["v1", "forbidden"], None, None, "declare incidents").await.unwrap_err();
        assert!(matches!(e, ClientError::Forbidden { .. }), "{e:?}");
        assert!(e.to_string().contains("this token's role cannot declare incidents"), "{e}");
        assert_eq!(e.exit_code(), 4);
    }

    #[tokio::test]
    async fn not_found_carries_the_servers_message() {
        let (srv, _) = server().await;
        let c = client(&srv, Some(TOKEN));
        let e = c.incident(&IncidentId("INC-404".into())).await.unwrap_err();
        assert!(matches!(&e, ClientError::NotFound(m) if m == "no incident INC-404"), "{e:?}");
        assert_eq!(e.exit_code(), 5);
        // An id with a slash stays one path segment.
        let e = c.incident(&IncidentId("../healthz".into())).await.unwrap_err();
        assert!(matches!(&e, ClientError::NotFound(m) if m == "no incident ../healthz"), "{e:?}");
        // A route the daemon does not have (plain 404, no JSON body).
        let e = c.call(Method::GET, &["v2", "nothing"], None, None, "look").await.unwrap_err();
        assert!(matches!(&e, ClientError::NotFound(m) if m.contains("GET /v2/nothing does not exist")), "{e:?}");
    }

    #[tokio::test]
    async fn unprocessable_is_bad_request_exit_6() {
        let (srv, _) = server().await;
        let c = client(&srv, Some(TOKEN));
        let e = c
            .json::<IncidentView>(
                Method::POST,
                &["v1", "incidents", "INC-1", "cancel"],
                None,
                Some(&serde_json::Map::new()),
                "x",
            )
            .await
            .unwrap_err();
        assert!(matches!(&e, ClientError::BadRequest(m) if m == "reason missing"), "{e:?}");
        assert_eq!(e.exit_code(), 6);
    }

    #[tokio::test]
    async fn connection_refused_is_unreachable_exit_3() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = client(&format!("http://{addr}"), Some(TOKEN));
        let e = c.incidents(None).await.unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert_eq!(e.exit_code(), 3);
        let msg = e.to_string();
        assert!(msg.contains(&addr.to_string()) && msg.contains("is outaged running"), "{msg}");
        assert!(!msg.contains(TOKEN) && !format!("{e:?}").contains(TOKEN));
    }

    #[tokio::test]
    async fn https_with_the_ca_file_and_a_hint_without_it() {
        use crate::tls::testing::{fixture, https_server};
        let server = format!("https://localhost:{}", https_server("[]").await);
        let trust = Trust::load(Some(&fixture("ca.pem")), "--ca-file").unwrap();
        let c = Client::with_trust(&server, Some(TOKEN.into()), Duration::from_secs(5), &trust).unwrap();
        assert!(c.incidents(None).await.unwrap().is_empty());
        let e = client(&server, None).incidents(None).await.unwrap_err();
        assert!(matches!(&e, ClientError::InvalidServer { reason, .. } if reason.contains("--ca-file")), "{e:?}");
        assert_eq!(e.exit_code(), 1);
    }

    #[tokio::test]
    async fn decode_error_names_the_call() {
        let app = Router::new().route("/v1/incidents", get(|| async { Json(serde_json::json!([{"id": 1}])) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let e = client(&format!("http://{addr}"), None).incidents(None).await.unwrap_err();
        assert!(matches!(&e, ClientError::Decode { what, .. } if what == "GET /v1/incidents"), "{e:?}");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = client("http://127.0.0.1:1", Some(TOKEN));
        let d = format!("{c:?}");
        assert!(!d.contains(TOKEN), "{d}");
        assert!(d.contains("<redacted>") && d.contains("127.0.0.1:1"), "{d}");
        assert!(format!("{:?}", client("127.0.0.1:1", None)).contains("token: None"));
    }

    #[test]
    fn server_addresses() {
        assert_eq!(client("127.0.0.1:8080", None).server(), "http://127.0.0.1:8080/");
        assert_eq!(client("http://noc-proxy/outage", None).server(), "http://noc-proxy/outage/");
        assert_eq!(
            client("http://noc-proxy/outage/", None).url(&["v1", "incidents", "a/b"]).as_str(),
            "http://noc-proxy/outage/v1/incidents/a%2Fb"
        );
        let e = Client::new("ftp://x", None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ClientError::InvalidServer { .. }));
        let e = Client::new("http://", None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ClientError::InvalidServer { .. }));
        let e = Client::new("http://me:pw@host", None, Duration::from_secs(1)).unwrap_err();
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = Client::new("http://host", Some("bad\ntoken".into()), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ClientError::InvalidToken) && !e.to_string().contains("bad"));
        // An empty token is no token.
        assert!(format!("{:?}", client("h", Some("  "))).contains("token: None"));
    }

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let out = table(
            &["ID", "NAME", "N"],
            &[vec!["a".into(), "longer".into(), "1".into()], vec!["bbb".into(), "x".into()]],
        );
        assert_eq!(out, "ID   NAME    N\na    longer  1\nbbb  x\n");
    }

    #[test]
    fn show_marks_a_passed_etr_for_the_noc() {
        let i = sample("INC-20261123-3f9a1c2e");
        assert!(!incident_details(&i).contains("PASSED"));
        let passed = IncidentView { etr_passed: i.etr, ..i };
        let out = incident_details(&passed);
        let etr = out.lines().find(|l| l.starts_with("ETR:")).unwrap();
        assert!(etr.contains("2026-11-23 18:00 UTC (PASSED: service not back; set a new ETR)"), "{out}");
    }

    #[test]
    fn incidents_table_shows_the_summary() {
        let out = incidents_table(&[sample("INC-20261123-3f9a1c2e")]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID                     STATE     CAUSE"), "{out}");
        assert!(lines[1].starts_with("INC-20261123-3f9a1c2e  declared  power failure"), "{out}");
        assert!(lines[1].contains("2026-11-23 14:05 UTC  2026-11-23 18:00 UTC  2/3"), "{out}");
        assert!(lines[1].ends_with("AB1 2CD, AB1 3EF, AB1 4GH +1  1234"), "{out}");
        // Header and row columns line up.
        assert_eq!(lines[0].find("STATE"), lines[1].find("declared"));
        assert_eq!(lines[0].find("CUSTOMERS"), lines[1].find("1234"));
        assert_eq!(incidents_table(&[]), "ID  STATE  CAUSE  DECLARED  ETR  SITES DOWN  POSTCODES  CUSTOMERS\n");
    }

    #[test]
    fn details_and_impact_text() {
        let d = incident_details(&sample("INC-1"));
        assert!(d.contains("ETR:         2026-11-23 18:00 UTC\n"), "{d}");
        assert!(d.contains("Restored:    -\n"), "{d}");
        assert!(d.contains("Timeline:\nAT                    ACTOR       EVENT     DETAIL\n"), "{d}");
        assert!(d.contains("2026-11-23 14:05 UTC  correlator  declared  3 sites\n"), "{d}");
        let none =
            ImpactResponse { postcode: "ZZ1".into(), language: "en".into(), customer_id: None, incidents: vec![] };
        assert_eq!(impact_text(&none), "Postcode ZZ1 (language en)\nNo open incident affects it.\n");
    }

    #[test]
    fn escape_sequences_and_controls_never_reach_the_terminal() {
        let evil = "fibre\u{1b}[31m cut\u{1b}[0m\u{1b}]0;pwned\u{7}\r\non\u{7f} Main\u{202e}St\u{9b}2J";
        assert_eq!(sanitize(evil), "fibre cut  on MainSt");
        let out = incidents_table(&[IncidentView { cause: evil.into(), ..sample("INC-1") }]);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains("fibre cut  on MainSt"), "{out}");
        let out = table(&["A"], &[vec!["x\u{1b}[2Jy".into()]]);
        assert_eq!(out, "A\nxy\n");
    }

    #[test]
    fn wide_characters_keep_columns_aligned() {
        let out = table(
            &["CAUSE", "N"],
            &[vec!["光纤中断".into(), "1".into()], vec!["⚡🔥 power".into(), "2".into()], vec!["é".into(), "3".into()]],
        );
        let lines: Vec<&str> = out.lines().collect();
        // Every N sits at the same terminal column.
        let col = |l: &str| display_width(&l[..l.rfind(['N', '1', '2', '3']).unwrap()]);
        assert_eq!(lines.iter().map(|l| col(l)).collect::<Vec<_>>(), vec![12, 12, 12, 12], "{out}");
        assert_eq!(truncate_width("光纤中断光纤中断", 7), "光纤中…");
        assert!(display_width(&truncate_width("光纤中断光纤中断", 7)) <= 7);
    }

    #[test]
    fn incidents_sort_by_the_declared_time_they_show() {
        let at = |id: &str, opened: &str, declared: Option<&str>| IncidentView {
            opened_at: t(opened),
            declared_at: declared.map(t),
            ..sample(id)
        };
        let mut list = vec![
            at("P", "2026-11-23T09:00:00Z", None),
            at("B", "2026-11-23T08:00:00Z", Some("2026-11-23T12:00:00Z")),
            at("A", "2026-11-23T10:00:00Z", Some("2026-11-23T11:00:00Z")),
        ];
        sort_incidents(&mut list);
        let ids: Vec<&str> = list.iter().map(|i| i.id.0.as_str()).collect();
        assert_eq!(
            ids,
            ["A", "B", "P"],
            "declared 11:00 before declared 12:00 though opened later; never declared last"
        );
    }

    #[tokio::test]
    async fn a_problem_answer_is_shown_by_its_detail_and_field() {
        let body = serde_json::json!({
            "type": "https://schemas.outage.invalid/problems/invalid-field", "title": "Invalid field",
            "status": 422, "detail": "2026-01-01T00:00:00Z is not in the future", "field": "etr"
        });
        let app = Router::new().route(
            "/v1/incidents",
            get(move || {
                let body = body.clone();
                async move {
                    (AxStatus::UNPROCESSABLE_ENTITY, [("content-type", "application/problem+json")], body.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let e = client(&format!("http://{addr}"), None).incidents(None).await.unwrap_err();
        assert_eq!(e.exit_code(), 6);
        assert_eq!(e.to_string(), "request refused: 2026-01-01T00:00:00Z is not in the future (field etr)");
    }
}
