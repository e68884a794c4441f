//! E-mail over SMTP (lettre's SMTP client on sockets we open, pooled, TLS
//! as configured). Owns the connection set-up (`TCP_NODELAY`, see
//! [`Smtp`]) and
//! how a notice becomes a message: multipart text + HTML (the HTML escaped
//! from the text), a `Message-ID` derived from the action's idempotency key
//! (so a re-send is recognisably the same message), and `List-Unsubscribe` /
//! `List-Unsubscribe-Post` (RFC 8058 one-click) headers.

use super::sms::Outcome;
use crate::model::Action;
use crate::tls::Trust;
use lettre::address::Envelope;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::Message;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on loopback or a trusted network).
    #[default]
    None,
    /// STARTTLS on the submission port.
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Default `127.0.0.1`.
    pub host: String,
    /// Default 25.
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Never logged.
    pub password: Option<String>,
    /// `From:`. Default `Example Telecom <noreply@example.net>`.
    pub from: String,
    /// Pooled SMTP connections. Default 8.
    pub pool_size: u32,
    /// Messages per second. Default 50.
    pub rate_per_second: u32,
    #[serde(with = "humantime_serde")]
    /// Default 30s.
    pub timeout: Duration,
    /// One-click unsubscribe endpoint (RFC 8058); adds `List-Unsubscribe-Post`.
    /// The daemon serves it at `GET/POST /unsubscribe` (the API's
    /// listener): point this at that, through the TLS proxy.
    pub unsubscribe_url: Option<String>,
    pub unsubscribe_mailto: Option<String>,
    /// The HMAC-SHA256 key signing each link's token (customer, channel,
    /// expiry): required, at least 32 characters, when either link is set.
    /// Never logged; keep it out of the file:
    /// `OUTAGE_SINKS__EMAIL='{unsubscribe_secret="…"}'`.
    pub unsubscribe_secret: Option<String>,
    /// How long a link works after its mail was planned. Default 60 days.
    #[serde(with = "humantime_serde")]
    pub unsubscribe_valid_for: Duration,
}

/// The password and the unsubscribe key never reach a log line.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("from", &self.from)
            .field("pool_size", &self.pool_size)
            .field("rate_per_second", &self.rate_per_second)
            .field("timeout", &self.timeout)
            .field("unsubscribe_url", &self.unsubscribe_url)
            .field("unsubscribe_mailto", &self.unsubscribe_mailto)
            .field("unsubscribe_secret", &redacted(&self.unsubscribe_secret))
            .field("unsubscribe_valid_for", &self.unsubscribe_valid_for)
            .finish()
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Example Telecom <noreply@example.net>".into(),
            pool_size: 8,
            rate_per_second: 50,
            timeout: Duration::from_secs(30),
            unsubscribe_url: None,
            unsubscribe_mailto: None,
            unsubscribe_secret: None,
            unsubscribe_valid_for: Duration::from_secs(60 * 24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("sinks.email: {0}")]
    Config(String),
}

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".into())
    }
}

/// `<uuid-v5-of-action-id@domain>`: the same action always gets the same id.
pub fn message_id(action_id: &str, domain: &str) -> String {
    let u = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("email\u{1f}{action_id}").as_bytes());
    format!("<{}@{domain}>", u.simple())
}

fn html_of(text: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let paras: String = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>\n", esc(p.trim()).replace('\n', "<br>")))
        .collect();
    format!("<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n{paras}</body></html>\n")
}

/// How the connection is secured, with what it needs.
enum Security {
    None,
    /// STARTTLS after the greeting (lettre's upgrade of our socket).
    Starttls(TlsParameters),
    /// TLS from the first byte (port 465): rustls over our socket, then
    /// SMTP inside it.
    Implicit(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>),
}

/// Implicit TLS over our own socket, as lettre's stream trait wants it.
#[derive(Debug)]
struct TlsSocket(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for TlsSocket {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsSocket {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// Why a send did not happen.
enum SendError {
    /// The server's answer or lettre's (`is_permanent`: a 5xx).
    Smtp(lettre::transport::smtp::Error),
    /// Connecting, the TLS handshake, or the time limit.
    Connect(String),
}

/// A pooled connection is not reused after this long idle: relays close
/// idle sessions (lettre's pool used 60 s), and a dead one costs a retry.
const IDLE_MAX: Duration = Duration::from_secs(30);

/// SMTP with our own connection pool. lettre's `AsyncSmtpTransport`
/// opens its sockets itself and sets no `TCP_NODELAY`; it writes a mail's
/// body and the closing `.` separately, so each mail waited for the
/// server's delayed ACK (~40 ms: 22 mails/s per connection). We open the
/// socket (`TCP_NODELAY` set), secure it as configured, and hand it to
/// lettre's `AsyncSmtpConnection` (greeting, EHLO, STARTTLS, AUTH, the
/// transaction). Connections are kept idle for reuse, at most `pool_size`
/// of them (the notifier sends at most `pool_size` at once).
pub struct Smtp {
    cfg: SmtpConfig,
    from: Mailbox,
    security: Security,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// Signs the unsubscribe links' tokens (`unsubscribe_secret`).
    signer: Option<crate::unsubscribe::Signer>,
    /// Connections opened (for tests and the bench's churn figure).
    opened: Arc<std::sync::atomic::AtomicU64>,
}

impl Smtp {
    /// `trust`: the roots STARTTLS and TLS trust (`sinks.tls`); the relay's
    /// certificate must name `host`. Connects nothing.
    pub fn new(cfg: SmtpConfig, trust: &Trust) -> Result<Self, EmailError> {
        let from: Mailbox = cfg.from.parse().map_err(|e| EmailError::Config(format!("from {:?}: {e}", cfg.from)))?;
        let tls_err = |e: String| EmailError::Config(format!("tls for host {:?}: {e}", cfg.host));
        let security = match cfg.tls {
            SmtpTls::None => Security::None,
            SmtpTls::Starttls => Security::Starttls(trust.smtp(&cfg.host).map_err(tls_err)?),
            SmtpTls::Tls => {
                let name =
                    rustls::pki_types::ServerName::try_from(cfg.host.clone()).map_err(|e| tls_err(e.to_string()))?;
                Security::Implicit(tokio_rustls::TlsConnector::from(trust.rustls_config()), name)
            }
        };
        let links = cfg.unsubscribe_url.is_some() || cfg.unsubscribe_mailto.is_some();
        let signer = cfg.unsubscribe_secret.as_deref().map(crate::unsubscribe::Signer::new);
        if links && signer.is_none() {
            return Err(EmailError::Config("unsubscribe links need unsubscribe_secret".into()));
        }
        Ok(Smtp {
            from,
            security,
            signer,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            opened: Arc::default(),
            cfg,
        })
    }

    /// How many SMTP connections this sink has opened.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new session: TCP with `TCP_NODELAY`, TLS as configured, EHLO,
    /// AUTH when credentials are set.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let addr = (self.cfg.host.as_str(), self.cfg.port);
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| SendError::Connect(format!("connecting to {}:{}: {e}", self.cfg.host, self.cfg.port)))?;
        tcp.set_nodelay(true).map_err(|e| SendError::Connect(format!("TCP_NODELAY: {e}")))?;
        self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stream: Box<dyn AsyncTokioStream> = match &self.security {
            Security::Implicit(connector, name) => Box::new(TlsSocket(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| SendError::Connect(format!("TLS with {}: {e}", self.cfg.host)))?,
            )),
            _ => Box::new(tcp),
        };
        let mut conn =
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await.map_err(SendError::Smtp)?;
        if let Security::Starttls(params) = &self.security {
            conn.starttls(params.clone(), &self.hello).await.map_err(SendError::Smtp)?;
        }
        if let (Some(u), Some(p)) = (&self.cfg.username, &self.cfg.password) {
            conn.auth(DEFAULT_MECHANISMS, &Credentials::new(u.clone(), p.clone())).await.map_err(SendError::Smtp)?;
        }
        Ok(conn)
    }

    /// An idle connection young enough to trust, if any.
    fn checkout(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_MAX && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !conn.has_broken() && idle.len() < self.cfg.pool_size.max(1) as usize {
            idle.push((conn, Instant::now()));
        }
    }

    /// One mail on a pooled (or new) connection; a connection that failed
    /// is dropped, never reused.
    async fn transact(&self, envelope: &Envelope, body: &[u8]) -> Result<Response, SendError> {
        let mut conn = match self.checkout() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let r = conn.send(envelope, body).await.map_err(SendError::Smtp)?;
        self.checkin(conn);
        Ok(r)
    }

    /// The message a notice action becomes.
    pub fn message(&self, a: &Action) -> Result<Message, String> {
        let to: Mailbox = a.to.as_deref().unwrap_or_default().parse().map_err(|e| format!("invalid address: {e}"))?;
        let m = a.message.as_ref().ok_or("notice without a message")?;
        let domain = self.from.email.domain().to_string();
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone().unwrap_or_default())
            .message_id(Some(message_id(&a.action_id, &domain)));
        let mut targets = Vec::new();
        // A signed, expiring token for this customer and channel: a
        // sequential customer id alone would let anyone unsubscribe anyone.
        // It expires `unsubscribe_valid_for` after planning, so a re-sent
        // mail is byte for byte the same.
        let valid_for = chrono::Duration::from_std(self.cfg.unsubscribe_valid_for).unwrap_or(chrono::Duration::MAX);
        let expires = a.planned_at.checked_add_signed(valid_for).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let token = self.signer.as_ref().map(|s| s.token(&a.customer_id, a.channel, expires));
        if let (Some(mailto), Some(token)) = (&self.cfg.unsubscribe_mailto, &token) {
            targets.push(format!("<mailto:{mailto}?subject=unsubscribe%20{token}>"));
        }
        if let (Some(url), Some(token)) = (&self.cfg.unsubscribe_url, &token) {
            let sep = if url.contains('?') { '&' } else { '?' };
            targets.push(format!("<{url}{sep}token={token}>"));
            b = b.header(ListUnsubscribePost);
        }
        if !targets.is_empty() {
            b = b.header(ListUnsubscribe(targets.join(", ")));
        }
        b.multipart(MultiPart::alternative_plain_html(m.text.clone(), html_of(&m.text))).map_err(|e| e.to_string())
    }

    pub async fn send(&self, a: &Action) -> Outcome {
        let msg = match self.message(a) {
            Ok(m) => m,
            Err(reason) => return Outcome::Permanent { reason },
        };
        let body = msg.formatted();
        match tokio::time::timeout(self.cfg.timeout, self.transact(msg.envelope(), &body)).await {
            Ok(Ok(r)) => Outcome::Accepted { reference: r.message().next().map(str::to_string) },
            Ok(Err(SendError::Smtp(e))) if e.is_permanent() => Outcome::Permanent { reason: e.to_string() },
            Ok(Err(SendError::Smtp(e))) => Outcome::Retry { reason: e.to_string() },
            Ok(Err(SendError::Connect(reason))) => Outcome::Retry { reason },
            Err(_) => Outcome::Retry { reason: format!("no answer within {:?}", self.cfg.timeout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionKind, Channel, IncidentId};

    fn action(to: &str) -> Action {
        Action {
            action_id: "INC-1/C1/email/down".into(),
            incident_id: IncidentId("INC-1".into()),
            customer_id: "C1".into(),
            channel: Channel::Email,
            kind: ActionKind::Down,
            to: Some(to.into()),
            language: "ru".into(),
            message: Some(crate::model::Message {
                subject: Some("Авария в 02901".into()),
                text: "Связь <пропала>.\n\nНовости: https://status.example.net".into(),
            }),
            until: None,
            credit: None,
            planned_at: chrono::DateTime::UNIX_EPOCH,
            not_before: None,
            follows: None,
            skip: None,
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn smtp() -> Smtp {
        Smtp::new(
            SmtpConfig {
                unsubscribe_url: Some("https://example.net/unsub".into()),
                unsubscribe_mailto: Some("unsubscribe@example.net".into()),
                unsubscribe_secret: Some(SECRET.into()),
                ..SmtpConfig::default()
            },
            &Trust::default(),
        )
        .unwrap()
    }

    // The pooled transport needs a runtime, even to be dropped.
    #[tokio::test]
    async fn a_notice_is_multipart_with_a_stable_id_and_one_click_unsubscribe() {
        let raw = String::from_utf8(smtp().message(&action("c1@example.com")).unwrap().formatted()).unwrap();
        assert!(raw.contains(&format!("Message-ID: {}", message_id("INC-1/C1/email/down", "example.net"))), "{raw}");
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{raw}");
        let token = crate::unsubscribe::Signer::new(SECRET).token(
            "C1",
            Channel::Email,
            chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(60),
        );
        // lettre folds long header lines; unfold before looking.
        let unfolded = raw.replace("\r\n ", " ").replace("\r\n\t", " ");
        assert!(unfolded.contains(&format!("<https://example.net/unsub?token={token}>")), "{raw}");
        assert!(!unfolded.contains("customer=C1") && !unfolded.contains("unsubscribe%20C1"), "no bare id: {raw}");
        let s = crate::unsubscribe::Signer::new(SECRET);
        assert_eq!(s.verify(&token, chrono::DateTime::UNIX_EPOCH), Ok(("C1".into(), Channel::Email)));
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
        assert!(raw.contains("Subject: =?utf-8?"), "a non-ASCII subject is encoded: {raw}");
        assert_ne!(message_id("a", "x"), message_id("b", "x"));
    }

    /// One SMTP session on `stream` (after the greeting when `greet` is
    /// false): counts mails, refuses RCPT to `nobody@…` with 550, offers
    /// STARTTLS when `starttls` and hands the plain stream back for it.
    async fn session<S>(
        stream: S,
        greet: bool,
        starttls: bool,
        mails: Arc<std::sync::atomic::AtomicU64>,
    ) -> std::io::Result<Option<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = BufReader::new(stream);
        if greet {
            s.get_mut().write_all(b"220 test ESMTP\r\n").await?;
        }
        let mut line = String::new();
        loop {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                return Ok(None);
            }
            let upper = line.to_ascii_uppercase();
            let answer: &[u8] = if upper.starts_with("EHLO") && starttls {
                b"250-test\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
            } else if upper.starts_with("EHLO") {
                b"250-test\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("STARTTLS") {
                s.get_mut().write_all(b"220 go ahead\r\n").await?;
                return Ok(Some(s.into_inner()));
            } else if upper.starts_with("MAIL") && starttls {
                b"530 must issue STARTTLS first\r\n"
            } else if upper.starts_with("RCPT") && upper.contains("NOBODY@") {
                b"550 no such user\r\n"
            } else if upper.starts_with("DATA") {
                s.get_mut().write_all(b"354 go ahead\r\n").await?;
                loop {
                    line.clear();
                    if s.read_line(&mut line).await? == 0 || line == ".\r\n" {
                        break;
                    }
                }
                mails.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                b"250 2.0.0 queued as q1\r\n"
            } else if upper.starts_with("QUIT") {
                s.get_mut().write_all(b"221 bye\r\n").await?;
                return Ok(None);
            } else {
                b"250 OK\r\n"
            };
            s.get_mut().write_all(answer).await?;
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum SinkTls {
        None,
        Starttls,
        Implicit,
    }

    /// A minimal SMTP server on loopback (TLS with the fixture certificate
    /// of `tests/fixtures/tls`): returns its port and the mails it took.
    async fn sink_with(tls: SinkTls) -> (u16, Arc<std::sync::atomic::AtomicU64>) {
        let acceptor = crate::tls::testing::acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = mails.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (mails, acceptor) = (counted.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match tls {
                        SinkTls::None => {
                            let _ = session(tcp, true, false, mails).await;
                        }
                        SinkTls::Implicit => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = session(tls, true, false, mails).await;
                            }
                        }
                        SinkTls::Starttls => {
                            if let Ok(Some(tcp)) = session(tcp, true, true, mails.clone()).await {
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    let _ = session(tls, false, false, mails).await;
                                }
                            }
                        }
                    }
                });
            }
        });
        (port, mails)
    }

    async fn sink() -> (u16, Arc<std::sync::atomic::AtomicU64>) {
        sink_with(SinkTls::None).await
    }

    #[tokio::test]
    async fn starttls_and_implicit_tls_go_over_our_socket_trusting_the_ca_file() {
        let trust = Trust::load(Some(&crate::tls::testing::fixture("ca.pem")), "sinks.tls.ca_file").unwrap();
        for (sink_tls, tls) in [(SinkTls::Starttls, SmtpTls::Starttls), (SinkTls::Implicit, SmtpTls::Tls)] {
            let (port, mails) = sink_with(sink_tls).await;
            let cfg = SmtpConfig { host: "localhost".into(), port, tls, ..SmtpConfig::default() };
            let smtp = Smtp::new(cfg.clone(), &trust).unwrap();
            for _ in 0..2 {
                let out = smtp.send(&action("c1@example.com")).await;
                assert!(matches!(out, Outcome::Accepted { .. }), "{tls:?}: {out:?}");
            }
            assert_eq!((mails.load(std::sync::atomic::Ordering::Relaxed), smtp.connections_opened()), (2, 1));
            // Without the CA file the relay's certificate is refused.
            let untrusting = Smtp::new(cfg, &Trust::default()).unwrap();
            let out = untrusting.send(&action("c1@example.com")).await;
            assert!(matches!(out, Outcome::Retry { .. } | Outcome::Permanent { .. }), "{tls:?}: {out:?}");
            assert_eq!(mails.load(std::sync::atomic::Ordering::Relaxed), 2, "{tls:?}: nothing sent untrusted");
        }
    }

    #[tokio::test]
    async fn mails_go_over_pooled_connections_and_a_refusal_is_permanent() {
        let (port, mails) = sink().await;
        let smtp = Smtp::new(SmtpConfig { port, pool_size: 2, ..SmtpConfig::default() }, &Trust::default()).unwrap();
        for _ in 0..3 {
            match smtp.send(&action("c1@example.com")).await {
                Outcome::Accepted { reference } => assert_eq!(reference.as_deref(), Some("2.0.0 queued as q1")),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(mails.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(smtp.connections_opened(), 1, "one connection, kept and reused");
        assert!(matches!(smtp.send(&action("nobody@example.com")).await, Outcome::Permanent { .. }));
        // The refused transaction's connection is not reused.
        assert!(matches!(smtp.send(&action("c1@example.com")).await, Outcome::Accepted { .. }));
        assert_eq!(smtp.connections_opened(), 2);
        // Nobody listening: retried later, not a crash.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let smtp = Smtp::new(SmtpConfig { port, ..SmtpConfig::default() }, &Trust::default()).unwrap();
        assert!(matches!(smtp.send(&action("c1@example.com")).await, Outcome::Retry { .. }));
    }

    #[test]
    fn html_escapes_the_text() {
        assert_eq!(
            html_of("a <b> & c\nd\n\ne"),
            "<!DOCTYPE html>\n<html><body style=\"font-family:sans-serif\">\n<p>a &lt;b&gt; &amp; c<br>d</p>\n<p>e</p>\n</body></html>\n"
        );
    }

    // The pooled transport needs a runtime, even to be dropped.
    #[tokio::test]
    async fn a_bad_address_is_a_permanent_failure_not_a_crash() {
        assert!(smtp().message(&action("not an address")).unwrap_err().contains("invalid address"));
    }
}
