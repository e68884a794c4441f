//! Every error the API answers, in one shape: RFC 9457 problem details
//! (`application/problem+json`: `type`, `title`, `status`, `detail`, and
//! `field` naming the request field that failed, when one did). Owns
//! [`ApiError`] and the extractors the handlers use instead of axum's
//! ([`ApiJson`], [`ApiQuery`], [`ApiPath`]), whose rejections — a body
//! that is not JSON, a wrong field type, an unknown field, a missing
//! content type — become problems naming the field (axum's own answer
//! these as `text/plain`), and the fallbacks for unknown routes (404) and
//! methods (405).

use super::types::Problem;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// Where the problem `type` URIs live: identifiers, not pages to fetch (as
/// the schemas' `$id`s). `about:blank` is not used: every problem says its kind.
pub const PROBLEM_BASE: &str = "https://schemas.outage.invalid/problems/";

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem, each a `type` URI (`PROBLEM_BASE` + slug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: the body is not JSON, or a query or path value is unusable.
    Malformed,
    /// 422 (400 for a query): a field has the wrong type or value.
    Invalid,
    /// 422: a polygon that is not a valid simple geometry.
    InvalidGeometry,
    /// 401: no token or an unknown one.
    Unauthorized,
    /// 403: the token's role cannot do this.
    Forbidden,
    /// 404: no such incident, customer or route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: the incident is not in a state that allows it.
    Conflict,
    /// 413: too large (the area, an event, the body).
    TooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 503: not ready, or the pipeline is not running.
    Unavailable,
    /// 500.
    Internal,
}

impl Kind {
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Malformed => "malformed-request",
            Kind::Invalid => "invalid-field",
            Kind::InvalidGeometry => "invalid-geometry",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not-found",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::Conflict => "conflict",
            Kind::TooLarge => "too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::Unavailable => "unavailable",
            Kind::Internal => "internal",
        }
    }

    /// The short, fixed summary of the kind (`title`).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Malformed => "Malformed request",
            Kind::Invalid => "Invalid field",
            Kind::InvalidGeometry => "Invalid geometry",
            Kind::Unauthorized => "Unauthorized",
            Kind::Forbidden => "Forbidden",
            Kind::NotFound => "Not found",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::Conflict => "Conflict with the incident's state",
            Kind::TooLarge => "Too large",
            Kind::UnsupportedMediaType => "Unsupported media type",
            Kind::Unavailable => "Unavailable",
            Kind::Internal => "Internal error",
        }
    }

    /// The kind a status means when nothing more specific is known.
    pub fn of_status(status: StatusCode) -> Kind {
        match status.as_u16() {
            400 => Kind::Malformed,
            401 => Kind::Unauthorized,
            403 => Kind::Forbidden,
            404 => Kind::NotFound,
            405 => Kind::MethodNotAllowed,
            409 => Kind::Conflict,
            413 => Kind::TooLarge,
            415 => Kind::UnsupportedMediaType,
            422 => Kind::Invalid,
            503 => Kind::Unavailable,
            _ => Kind::Internal,
        }
    }
}

/// An error answer: status, kind, what happened and, when a request field
/// is to blame, which (`area.circle.lat`, `etr`, `state`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: Kind,
    pub detail: String,
    pub field: Option<String>,
}

impl ApiError {
    /// A problem of the kind the status means.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError { status, kind: Kind::of_status(status), detail: detail.into(), field: None }
    }

    /// 422, naming the field.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail).field(field)
    }

    pub fn field(mut self, field: &str) -> Self {
        self.field = Some(field.to_string());
        self
    }

    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The body.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("{PROBLEM_BASE}{}", self.kind.slug()),
            title: self.kind.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (self.status, [(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: which scheme, and (a token was given) why it failed.
            let challenge = if self.detail.contains("unknown token") {
                "Bearer realm=\"outage\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"outage\""
            };
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        resp
    }
}

/// A serde path as the API names fields: `area.circle.lat`; none for the
/// whole document.
fn field_name(path: &serde_path_to_error::Path) -> Option<String> {
    let s = path.to_string();
    (s != "." && !s.is_empty()).then_some(s)
}

/// Deserialize `T` from a JSON value, naming the field that failed (422).
pub fn from_value<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let field = field_name(e.path());
        let detail = match &field {
            Some(f) => format!("{f}: {}", e.inner()),
            None => e.inner().to_string(),
        };
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, kind: Kind::Invalid, detail, field }
    })
}

/// Parse a JSON body as `T`: 400 when it is not JSON, 422 naming the field
/// when it is JSON of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    from_value(v)
}

/// `Json<T>` with problem rejections: the body must be
/// `application/json` (or `…+json`), JSON, and of `T`'s shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))) {
            let got = if ct.is_empty() { "none".to_string() } else { format!("{ct:?}") };
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the body must be JSON with Content-Type: application/json (got {got})"),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("reading the body: {}", e.body_text())))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// `Query<T>` with problem rejections (400 naming the parameter). Each
/// parameter is a string to `T` (`state=declared`); a repeated one counts once, the last.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("query string: {}", e.body_text())))?;
        let v = serde_json::Value::Object(map.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect());
        from_value(v).map(ApiQuery).map_err(|mut e| {
            e.status = StatusCode::BAD_REQUEST;
            e.detail = format!("query parameter {}", e.detail);
            e
        })
    }
}

/// `Path<T>` with problem rejections (400).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("path: {}", e.body_text())))
    }
}

/// The router's fallback: no such route.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route {}", uri.path()))
}

/// A route asked with a method it does not take.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} does not take {method}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_field_is_named_and_malformed_json_is_400() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct B {
            inner: Inner,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            lat: f64,
        }
        let e = parse_json::<B>(br#"{"inner": {"lat": "north"}}"#).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("inner.lat")));
        assert!(e.detail.starts_with("inner.lat: invalid type"), "{}", e.detail);
        let e = parse_json::<B>(b"{not json").unwrap_err();
        assert_eq!((e.status, e.kind, e.field), (StatusCode::BAD_REQUEST, Kind::Malformed, None));
        let p = ApiError::invalid("etr", "in the past").problem();
        assert_eq!(p.kind, "https://schemas.outage.invalid/problems/invalid-field");
        assert_eq!((p.status, p.title.as_str(), p.field.as_deref()), (422, "Invalid field", Some("etr")));
    }
}
