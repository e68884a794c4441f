//! SMS gateways. Owns the [`SmsGateway`] boundary and its two HTTP
//! implementations: Kannel's `sendsms` interface and a generic JSON gateway.
//! Each answers with an [`Outcome`] the delivery engine acts on: accepted,
//! retry later (5xx, 429, timeouts, connection errors) or permanent (other
//! 4xx). Rate limits, retries and failover live in [`super::notify`].

use super::super::transforms::sms_text::{self, Coding};
use super::SinkError;
use crate::runtime::InvalidSetting;
use crate::tls::{http_client, Trust};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsGatewayKind {
    /// Kannel smsbox `sendsms` (GET with username/password).
    #[default]
    Kannel,
    /// `POST` JSON `{to, from, text, reference}` with a bearer token
    /// (`password`).
    Json,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsProviderConfig {
    /// Name in records and metrics. Default `kannel`.
    pub name: String,
    pub kind: SmsGatewayKind,
    /// e.g. `http://127.0.0.1:13013/cgi-bin/sendsms`.
    pub url: String,
    pub username: Option<String>,
    /// Kannel password, or the JSON gateway's bearer token. Never logged.
    pub password: Option<String>,
    /// Sender id. Default `ExampleTel`.
    pub from: String,
    /// Our delivery-report endpoint, handed to Kannel as `dlr-url`.
    pub dlr_url: Option<String>,
    /// Messages per second this provider may be sent. Default 100.
    pub rate_per_second: u32,
    /// Requests open at once against this provider. Default 32.
    pub max_in_flight: u32,
    #[serde(with = "humantime_serde")]
    /// Per-request timeout. Default 10s.
    pub timeout: Duration,
}

/// The password (or bearer token) never reaches a log line.
impl std::fmt::Debug for SmsProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("dlr_url", &self.dlr_url)
            .field("rate_per_second", &self.rate_per_second)
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for SmsProviderConfig {
    fn default() -> Self {
        SmsProviderConfig {
            name: "kannel".into(),
            kind: SmsGatewayKind::Kannel,
            url: "http://127.0.0.1:13013/cgi-bin/sendsms".into(),
            username: None,
            password: None,
            from: "ExampleTel".into(),
            dlr_url: None,
            rate_per_second: 100,
            max_in_flight: 32,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a gateway said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken for delivery; `reference` is the gateway's id when it gives one.
    Accepted { reference: Option<String> },
    /// Try again later (this gateway or another).
    Retry { reason: String },
    /// This message will never be taken (bad number, refused content…).
    Permanent { reason: String },
}

/// One outbound SMS, as the engine hands it to a gateway.
#[derive(Debug, Clone)]
pub struct Sms<'a> {
    /// E.164 with the leading `+`.
    pub to: &'a str,
    pub text: &'a str,
    /// Idempotency key, passed to gateways that take one and echoed in
    /// delivery reports.
    pub action_id: &'a str,
}

pub trait SmsGateway: Send + Sync {
    /// The provider's configured name (for records and metrics).
    fn name(&self) -> &str;
    fn send(&self, sms: &Sms<'_>) -> impl Future<Output = Outcome> + Send;
}

/// Classify an HTTP status the way both gateways need: 2xx accepted,
/// 429/5xx retry, other 4xx permanent.
fn by_status(status: reqwest::StatusCode, body: &str) -> Outcome {
    let snippet: String = body.trim().chars().take(200).collect();
    if status.is_success() {
        Outcome::Accepted { reference: None }
    } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Outcome::Retry { reason: format!("HTTP {status}: {snippet}") }
    } else {
        Outcome::Permanent { reason: format!("HTTP {status}: {snippet}") }
    }
}

fn transport_error(e: reqwest::Error) -> Outcome {
    // Connection refused, reset, timeout: the gateway may be fine later.
    // Without the URL: Kannel's query holds the password, the number and
    // the text, and this reason goes to the delivery record and the logs.
    Outcome::Retry { reason: format!("transport: {}", crate::tls::transport_error(e)) }
}

/// A keep-alive HTTP client shared by a provider's requests.
fn client(timeout: Duration, trust: &Trust) -> Result<reqwest::Client, SinkError> {
    http_client(trust)
        .timeout(timeout)
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| InvalidSetting { key: "sinks.sms".into(), message: e.without_url().to_string() }.into())
}

/// Kannel's `sendsms` HTTP interface (smsbox).
///
/// Texts go as UTF-8 (`charset=UTF-8`); texts outside GSM-7 are sent with
/// `coding=2` so smsbox encodes them as UCS-2 instead of mangling them. Long
/// texts are split and concatenated by smsbox (`concatenation = true` and
/// `max-messages` on the sendsms-user). `202` ("0: Accepted for delivery",
/// "3: Queued for later delivery") is accepted, `503` ("Temporal failure")
/// retried, other `4xx` (bad auth, bad number) permanent.
pub struct Kannel {
    cfg: SmsProviderConfig,
    http: reqwest::Client,
}

impl Kannel {
    pub fn new(cfg: SmsProviderConfig, trust: &Trust) -> Result<Self, SinkError> {
        Ok(Kannel { http: client(cfg.timeout, trust)?, cfg })
    }

    /// The query `sendsms` gets for `sms` (without the password in logs:
    /// callers never log it).
    pub fn query(&self, sms: &Sms<'_>) -> Vec<(&'static str, String)> {
        let c = &self.cfg;
        let mut q = vec![
            ("username", c.username.clone().unwrap_or_default()),
            ("password", c.password.clone().unwrap_or_default()),
            ("from", c.from.clone()),
            ("to", sms.to.to_string()),
            ("text", sms.text.to_string()),
            ("charset", "UTF-8".into()),
        ];
        if sms_text::coding(sms.text) == Coding::Ucs2 {
            q.push(("coding", "2".into()));
        }
        if let Some(dlr) = &c.dlr_url {
            // Kannel substitutes %d (report type) and %A (the SMSC's answer).
            let sep = if dlr.contains('?') { '&' } else { '?' };
            q.push(("dlr-mask", "31".into()));
            q.push(("dlr-url", format!("{dlr}{sep}action_id={}&type=%d&answer=%A", urlencode(sms.action_id))));
        }
        q
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl SmsGateway for Kannel {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn send(&self, sms: &Sms<'_>) -> Outcome {
        let r = match self.http.get(&self.cfg.url).query(&self.query(sms)).send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        match by_status(status, &body) {
            // smsbox answers 202 for accepted and queued alike.
            Outcome::Accepted { .. } => Outcome::Accepted { reference: None },
            other => other,
        }
    }
}

/// A generic JSON gateway: `POST url` with
/// `{"to", "from", "text", "reference"}` and a bearer token; any 2xx is
/// accepted (`{"id": …}` in the answer becomes the reference).
pub struct JsonGateway {
    cfg: SmsProviderConfig,
    http: reqwest::Client,
}

impl JsonGateway {
    pub fn new(cfg: SmsProviderConfig, trust: &Trust) -> Result<Self, SinkError> {
        Ok(JsonGateway { http: client(cfg.timeout, trust)?, cfg })
    }
}

impl SmsGateway for JsonGateway {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn send(&self, sms: &Sms<'_>) -> Outcome {
        let body = serde_json::json!({
            "to": sms.to, "from": self.cfg.from, "text": sms.text, "reference": sms.action_id,
        });
        let mut req = self.http.post(&self.cfg.url).json(&body);
        if let Some(token) = &self.cfg.password {
            req = req.bearer_auth(token);
        }
        let r = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        match by_status(status, &text) {
            Outcome::Accepted { .. } => {
                let reference = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string)));
                Outcome::Accepted { reference }
            }
            other => other,
        }
    }
}

/// A configured provider of either kind.
pub enum Provider {
    Kannel(Kannel),
    Json(JsonGateway),
}

impl Provider {
    pub fn new(cfg: SmsProviderConfig, trust: &Trust) -> Result<Self, SinkError> {
        Ok(match cfg.kind {
            SmsGatewayKind::Kannel => Provider::Kannel(Kannel::new(cfg, trust)?),
            SmsGatewayKind::Json => Provider::Json(JsonGateway::new(cfg, trust)?),
        })
    }
}

impl SmsGateway for Provider {
    fn name(&self) -> &str {
        match self {
            Provider::Kannel(k) => k.name(),
            Provider::Json(j) => j.name(),
        }
    }

    async fn send(&self, sms: &Sms<'_>) -> Outcome {
        match self {
            Provider::Kannel(k) => k.send(sms).await,
            Provider::Json(j) => j.send(sms).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_a_debug_line() {
        let sms = SmsProviderConfig { password: Some("s3cret-sms".into()), ..Default::default() };
        let smtp = crate::sinks::email::SmtpConfig {
            password: Some("s3cret-smtp".into()),
            unsubscribe_secret: Some("s3cret-hmac-key-of-at-least-32-chars".into()),
            ..Default::default()
        };
        let shown = format!("{sms:?} {smtp:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("kannel"), "{shown}");
    }

    fn kannel(dlr: Option<&str>) -> Kannel {
        Kannel::new(
            SmsProviderConfig {
                name: "k1".into(),
                kind: SmsGatewayKind::Kannel,
                url: "http://127.0.0.1:13013/cgi-bin/sendsms".into(),
                username: Some("outage".into()),
                password: Some("pw".into()),
                from: "ExampleTel".into(),
                dlr_url: dlr.map(Into::into),
                ..Default::default()
            },
            &Trust::default(),
        )
        .unwrap()
    }

    fn get<'a>(q: &'a [(&'static str, String)], k: &str) -> Option<&'a str> {
        q.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn kannel_sends_ucs2_only_for_texts_outside_gsm7_and_asks_for_reports() {
        let k = kannel(Some("http://127.0.0.1:8080/v1/dlr"));
        let sms = Sms { to: "+34600000001", text: "Avería en su zona", action_id: "INC-1/C1/sms/down" };
        let q = k.query(&sms);
        assert_eq!(get(&q, "coding"), Some("2"), "í is not GSM-7");
        assert_eq!(get(&q, "charset"), Some("UTF-8"));
        assert_eq!(get(&q, "text"), Some("Avería en su zona"), "reqwest url-encodes the UTF-8 text");
        assert_eq!(get(&q, "dlr-mask"), Some("31"));
        assert_eq!(
            get(&q, "dlr-url"),
            Some("http://127.0.0.1:8080/v1/dlr?action_id=INC-1%2FC1%2Fsms%2Fdown&type=%d&answer=%A")
        );
        let plain = Sms { text: "Service is back", ..sms };
        let q = kannel(None).query(&plain);
        assert_eq!(get(&q, "coding"), None);
        assert_eq!(get(&q, "dlr-url"), None);
    }

    #[tokio::test]
    async fn a_transport_error_does_not_leak_the_query() {
        let url = "http://127.0.0.1:1/cgi-bin/sendsms?password=s3cret&to=%2B34600000001&text=hola";
        let e = http_client(&Trust::default()).build().unwrap().get(url).send().await.unwrap_err();
        match transport_error(e) {
            Outcome::Retry { reason } => {
                assert!(!reason.contains("s3cret") && !reason.contains("600000001"), "{reason}");
                assert!(reason.starts_with("transport: "), "{reason}");
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn statuses_are_classified() {
        use reqwest::StatusCode as S;
        assert!(matches!(by_status(S::ACCEPTED, "0: Accepted for delivery"), Outcome::Accepted { .. }));
        assert!(matches!(
            by_status(S::SERVICE_UNAVAILABLE, "Temporal failure, try again later."),
            Outcome::Retry { .. }
        ));
        assert!(matches!(by_status(S::TOO_MANY_REQUESTS, ""), Outcome::Retry { .. }));
        match by_status(S::FORBIDDEN, "Authorization failed for sendsms") {
            Outcome::Permanent { reason } => assert!(reason.contains("403") && reason.contains("Authorization")),
            o => panic!("{o:?}"),
        }
    }
}
