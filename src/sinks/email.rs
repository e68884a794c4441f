//! E-mail over SMTP (lettre, pooled connections, TLS as configured). Owns
//! how a notice becomes a message: multipart text + HTML (the HTML escaped
//! from the text), a `Message-ID` derived from the action's idempotency key
//! (so a re-send is recognisably the same message), and `List-Unsubscribe` /
//! `List-Unsubscribe-Post` (RFC 8058 one-click) headers.

use super::sms::Outcome;
use crate::config::{SmtpConfig, SmtpTls};
use crate::model::Action;
use crate::tls::Trust;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

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

pub struct Smtp {
    cfg: SmtpConfig,
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    /// `trust`: the roots STARTTLS and TLS trust (`sinks.tls`); the relay's
    /// certificate must name `host`.
    pub fn new(cfg: SmtpConfig, trust: &Trust) -> Result<Self, EmailError> {
        let from: Mailbox = cfg.from.parse().map_err(|e| EmailError::Config(format!("from {:?}: {e}", cfg.from)))?;
        let tls = || trust.smtp(&cfg.host).map_err(|e| EmailError::Config(format!("tls for host {:?}: {e}", cfg.host)));
        // builder_dangerous is lettre's builder without TLS; the TLS
        // parameters (our roots) are set on it here.
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host);
        let builder = match cfg.tls {
            SmtpTls::None => builder,
            SmtpTls::Starttls => builder.tls(Tls::Required(tls()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls()?)),
        };
        let mut builder = builder.port(cfg.port).timeout(Some(cfg.timeout)).pool_config(
            // The notifier holds sends to `pool_size` at once; lettre hands a
            // connection back to its pool in a task of its own, after the
            // next send may have started. Room for twice as many keeps the
            // returning connection instead of closing it (with exactly
            // pool_size, 20 000 mails opened 308 connections).
            PoolConfig::new().max_size(cfg.pool_size.saturating_mul(2)),
        );
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(Smtp { transport: builder.build(), from, cfg })
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
        if let Some(mailto) = &self.cfg.unsubscribe_mailto {
            targets.push(format!("<mailto:{mailto}?subject=unsubscribe%20{}>", a.customer_id));
        }
        if let Some(url) = &self.cfg.unsubscribe_url {
            let sep = if url.contains('?') { '&' } else { '?' };
            targets.push(format!("<{url}{sep}customer={}>", a.customer_id));
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
        match self.transport.send(msg).await {
            Ok(r) => Outcome::Accepted { reference: r.message().next().map(str::to_string) },
            Err(e) if e.is_permanent() => Outcome::Permanent { reason: e.to_string() },
            Err(e) => Outcome::Retry { reason: e.to_string() },
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
        }
    }

    fn smtp() -> Smtp {
        Smtp::new(
            SmtpConfig {
                unsubscribe_url: Some("https://example.net/unsub".into()),
                unsubscribe_mailto: Some("unsubscribe@example.net".into()),
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
        assert!(raw.contains("<https://example.net/unsub?customer=C1>"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
        assert!(raw.contains("Subject: =?utf-8?"), "a non-ASCII subject is encoded: {raw}");
        assert_ne!(message_id("a", "x"), message_id("b", "x"));
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
