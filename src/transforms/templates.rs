//! The words customers read and callers hear, per language. Owns language
//! fallback (`es-MX` → `es` → the default language) and the texts of every
//! notice. Pure: the caller passes the context, including times.
//!
//! English and Spanish today; a language without templates falls back to
//! the configured default. Times are shown in UTC until quiet hours and
//! local-time rendering arrive with the SMS/e-mail issue.

use crate::model::{ActionKind, Channel, Message};
use chrono::{DateTime, Utc};

/// What a notice talks about.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageContext<'a> {
    pub operator_name: &'a str,
    pub incident_id: &'a str,
    /// Probable cause as the NOC wants it said, e.g. "power failure".
    pub cause: &'a str,
    pub etr: Option<DateTime<Utc>>,
    pub status_url: &'a str,
}

/// Languages with templates.
pub const LANGUAGES: [&str; 2] = ["en", "es"];

/// The template language for a customer's BCP 47 tag: exact, then primary
/// subtag, then `default`.
pub fn resolve<'a>(tag: &str, default: &'a str) -> &'a str {
    let primary = tag.split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    LANGUAGES.iter().find(|l| **l == primary).copied().unwrap_or(default)
}

fn hhmm(t: DateTime<Utc>) -> String {
    t.format("%H:%M UTC").to_string()
}

/// Render one customer notice. `lang` must be a resolved template language.
pub fn render(kind: ActionKind, channel: Channel, lang: &str, c: &MessageContext<'_>) -> Message {
    let es = lang == "es";
    let etr = c.etr.map(hhmm);
    let op = c.operator_name;
    let url = c.status_url;
    let text = match (kind, es) {
        (ActionKind::Down, false) => match &etr {
            Some(t) => {
                format!("{op}: outage in your area ({}). We expect service back by {t}. Updates: {url}", c.cause)
            }
            None => format!("{op}: outage in your area ({}). We are working on it. Updates: {url}", c.cause),
        },
        (ActionKind::Down, true) => match &etr {
            Some(t) => format!(
                "{op}: avería en su zona ({}). Prevemos restablecer el servicio a las {t}. Info: {url}",
                c.cause
            ),
            None => format!("{op}: avería en su zona ({}). Estamos trabajando en ello. Info: {url}", c.cause),
        },
        (ActionKind::Restored, false) => format!("{op}: service in your area is restored. Sorry for the disruption."),
        (ActionKind::Restored, true) => {
            format!("{op}: el servicio en su zona está restablecido. Disculpe las molestias.")
        }
        (ActionKind::Grant, false) => {
            format!("{op}: you have unlimited mobile data while we fix the outage in your area.")
        }
        (ActionKind::Grant, true) => format!("{op}: tiene datos móviles ilimitados mientras reparamos la avería."),
        (ActionKind::Revoke, false) => format!("{op}: your free unlimited data ends soon."),
        (ActionKind::Revoke, true) => format!("{op}: sus datos ilimitados gratuitos terminan pronto."),
        (ActionKind::Credit, false) => format!("{op}: a credit for the outage will appear on your next bill."),
        (ActionKind::Credit, true) => format!("{op}: verá un abono por la avería en su próxima factura."),
    };
    let subject = (channel == Channel::Email).then(|| match (kind, es) {
        (ActionKind::Down, false) => format!("Service outage in your area — {}", c.incident_id),
        (ActionKind::Down, true) => format!("Avería en su zona — {}", c.incident_id),
        (ActionKind::Restored, false) => format!("Service restored — {}", c.incident_id),
        (ActionKind::Restored, true) => format!("Servicio restablecido — {}", c.incident_id),
        (_, false) => format!("About the outage {}", c.incident_id),
        (_, true) => format!("Sobre la avería {}", c.incident_id),
    });
    let text = if channel == Channel::Email {
        let sign = if es { "Atentamente" } else { "Kind regards" };
        format!("{text}\n\nReference: {}\n\n{sign},\n{op}", c.incident_id)
    } else {
        text
    };
    Message { subject, text }
}

/// The IVR announcement for a region.
pub fn ivr_prompt(active: bool, lang: &str, c: &MessageContext<'_>) -> String {
    match (active, lang == "es") {
        (true, false) => format!(
            "We are aware of a service outage in your area caused by {}. {} You do not need to restart your equipment.",
            c.cause,
            c.etr.map_or("We are working to restore service.".to_string(), |t| format!(
                "We expect service back by {}.",
                hhmm(t)
            ))
        ),
        (true, true) => format!(
            "Sabemos que hay una avería en su zona causada por {}. {} No necesita reiniciar sus equipos.",
            c.cause,
            c.etr.map_or("Estamos trabajando para restablecer el servicio.".to_string(), |t| format!(
                "Prevemos restablecer el servicio a las {}.",
                hhmm(t)
            ))
        ),
        (false, false) => "There is no known outage in your area.".into(),
        (false, true) => "No hay ninguna avería conocida en su zona.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> MessageContext<'static> {
        MessageContext {
            operator_name: "Example Telecom",
            incident_id: "INC-20261123-0000abcd",
            cause: "mains power failure",
            etr: None,
            status_url: "https://status.example.net",
        }
    }

    #[test]
    fn languages_fall_back_by_primary_subtag_then_default() {
        assert_eq!(resolve("es-MX", "en"), "es");
        assert_eq!(resolve("ES", "en"), "es");
        assert_eq!(resolve("ru", "en"), "en");
        assert_eq!(resolve("", "es"), "es");
    }

    #[test]
    fn notices_speak_the_customers_language_and_email_has_a_subject() {
        let sms = render(ActionKind::Down, Channel::Sms, "es", &ctx());
        assert!(sms.text.contains("avería") && sms.subject.is_none(), "{sms:?}");
        let mail = render(ActionKind::Restored, Channel::Email, "en", &ctx());
        assert!(mail.subject.unwrap().contains("INC-20261123-0000abcd"));
        assert!(mail.text.contains("restored"));
        let with_etr = MessageContext { etr: "2026-11-23T09:30:00Z".parse().ok(), ..ctx() };
        assert!(render(ActionKind::Down, Channel::Sms, "en", &with_etr).text.contains("09:30 UTC"));
        assert!(ivr_prompt(true, "en", &with_etr).contains("09:30 UTC"));
        assert!(ivr_prompt(false, "es", &ctx()).contains("No hay"));
    }
}
