//! The words customers read and callers hear, per language. Owns the
//! template set (`templates/notices.toml`, compiled in; a copy named by
//! `plan.templates` replaces it), language fallback (`es-MX` → `es` → the
//! default language), the cause in words, local-time rendering, and the
//! start-up check that every SMS fits its segment budget with the longest
//! values it can be given. Pure: the caller passes the times and the zone.

use super::classify::{CauseClass, Classifier};
use super::sms_text;
use crate::model::money::Currency;
use crate::model::{ActionKind, Channel, Message, Money};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shipped templates.
pub const DEFAULT_TEMPLATES: &str = include_str!("../../templates/notices.toml");

/// Message kinds with customer-facing text, in check order.
pub const NOTICE_KINDS: [ActionKind; 5] =
    [ActionKind::Down, ActionKind::EtrUpdate, ActionKind::StillWorking, ActionKind::Restored, ActionKind::Cancelled];

/// Cause keys every language must word, and the words in a free-text
/// cause (lower case) that select them when its class is unknown; the
/// first match wins and a cause that is already a key (a NOC update) is
/// taken as it is.
const CAUSES: [(&str, &[&str]); 10] = [
    ("power", &["power", "mains", "battery", "rectifier"]),
    ("fibre", &["fibre", "fiber", "cable", "los", "link down"]),
    ("transmission", &["transmission", "link", "signal", "backhaul"]),
    ("weather", &["weather", "storm", "flood", "wind", "lightning"]),
    ("maintenance", &["maintenance", "planned"]),
    ("equipment", &["equipment", "hardware", "card", "board", "radio"]),
    ("software", &["software"]),
    ("environment", &[]),
    ("congestion", &["congestion", "overload"]),
    ("fault", &[]),
];

/// The words a cause class is told in.
fn class_key(class: CauseClass) -> &'static str {
    match class {
        CauseClass::Power => "power",
        CauseClass::Transmission => "transmission",
        CauseClass::Equipment => "equipment",
        CauseClass::Environment => "environment",
        CauseClass::Software => "software",
        CauseClass::Capacity => "congestion",
        CauseClass::Security | CauseClass::Other => "fault",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("templates {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("template {lang}.{name}: {message}")]
    Template { lang: String, name: String, message: String },
    #[error("templates: {0:?} — language {1:?} has no templates")]
    NoDefault(String, String),
    #[error("SMS templates over the {limit}-segment limit with the longest values:\n  {}", .over.join("\n  "))]
    TooLong { limit: usize, over: Vec<String> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LanguageFile {
    /// strftime for a time on the day of the message.
    time: String,
    /// strftime for a time on another day.
    datetime: String,
    /// How an amount is written: `{amount}` and `{symbol}`.
    #[serde(default = "default_money")]
    money: String,
    /// The decimal separator of `{amount}`.
    #[serde(default = "default_decimal")]
    decimal: String,
    causes: BTreeMap<String, String>,
    sms: BTreeMap<String, String>,
    email: BTreeMap<String, String>,
    ivr: BTreeMap<String, String>,
}

fn default_money() -> String {
    "{amount} {symbol}".into()
}

fn default_decimal() -> String {
    ".".into()
}

struct Language {
    time: String,
    datetime: String,
    money: String,
    decimal: String,
    causes: BTreeMap<String, String>,
}

impl Language {
    /// `m` as this language writes money: `12,34 €`, `€12.34`.
    fn money(&self, m: &Money) -> String {
        let digits = m.currency.exponent();
        let (neg, abs) = (m.minor < 0, m.minor.unsigned_abs());
        let scale = 10u64.pow(digits);
        let mut amount = format!("{}{}", if neg { "-" } else { "" }, abs / scale);
        if digits > 0 {
            amount.push_str(&format!("{}{:0width$}", self.decimal, abs % scale, width = digits as usize));
        }
        let symbol = match m.currency.as_str() {
            "EUR" => "€",
            "GBP" => "£",
            "USD" => "$",
            "RUB" => "₽",
            code => code,
        };
        self.money.replace("{amount}", &amount).replace("{symbol}", symbol)
    }
}

/// What a notice is about. Times are UTC; they are shown in `tz`.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    pub operator: &'a str,
    pub area: &'a str,
    /// The incident's cause as recorded (an alarm's probable cause or a
    /// NOC's cause key).
    pub cause: &'a str,
    pub start: DateTime<Utc>,
    pub etr: Option<DateTime<Utc>>,
    pub data_until: Option<DateTime<Utc>>,
    /// "Down" notices may say a due credit comes without asking
    /// (compensation rules configured and `plan.compensation_promise`).
    pub compensation: bool,
    /// Restored notices: this customer's credit for the outage, if any.
    pub credit: Option<Money>,
    /// The NOC's own words (`--message`), if any.
    pub message: Option<&'a str>,
    pub incident: &'a str,
    pub url: &'a str,
    pub tz: Tz,
    /// When the message is written (decides "time" vs "date and time").
    pub now: DateTime<Utc>,
}

/// The loaded, compiled, checked template set.
pub struct Templates {
    /// Words a recorded cause by its class (see [`cause_key`]).
    classifier: Arc<Classifier>,
    env: minijinja::Environment<'static>,
    langs: BTreeMap<String, Language>,
    default_language: String,
    /// `plan.sms_max_segments`: an SMS carries the NOC's message only when
    /// the whole text still fits (see [`Templates::render`]).
    sms_budget: usize,
}

fn kind_name(kind: ActionKind) -> &'static str {
    kind.as_str()
}

/// Which cause key a recorded cause is worded by: a key as it is (a NOC's
/// cause), else its class (`classifier`: a standard probable cause or an
/// operator's rule), else words in free text, else `fault`.
pub fn cause_key(cause: &str, classifier: &Classifier) -> &'static str {
    let c = cause.trim().to_lowercase();
    if let Some((k, _)) = CAUSES.iter().find(|(k, _)| *k == c) {
        return k;
    }
    if let Some(class) = classifier.classify(cause) {
        return class_key(class);
    }
    CAUSES.iter().find(|(_, words)| words.iter().any(|w| c.contains(w))).map_or("fault", |(k, _)| k)
}

impl Templates {
    /// Word causes by `classifier`'s classes (the operator's `[causes]`
    /// rules as well as the standards' table).
    pub fn with_classifier(mut self, classifier: Arc<Classifier>) -> Self {
        self.classifier = classifier;
        self
    }

    /// The shipped set, or the file at `path`; every language must have
    /// every kind on every channel, every cause, and `default_language`.
    pub fn load(path: Option<&Path>, default_language: &str) -> Result<Self, TemplateError> {
        let (path, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| TemplateError::File { path: p.to_path_buf(), message: e.to_string() })?;
                (p.to_path_buf(), text)
            }
            None => (PathBuf::from("templates/notices.toml (built in)"), DEFAULT_TEMPLATES.to_string()),
        };
        Self::parse(&path, &text, default_language)
    }

    fn parse(path: &Path, text: &str, default_language: &str) -> Result<Self, TemplateError> {
        let file_err = |message: String| TemplateError::File { path: path.to_path_buf(), message };
        let files: BTreeMap<String, LanguageFile> = toml_from_str(text).map_err(file_err)?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut langs = BTreeMap::new();
        for (lang, f) in files {
            let missing = |what: String| file_err(format!("language {lang:?} has no {what}"));
            for (key, _) in CAUSES {
                if !f.causes.contains_key(key) {
                    return Err(missing(format!("causes.{key}")));
                }
            }
            let mut names = Vec::new();
            for kind in NOTICE_KINDS {
                let k = kind_name(kind);
                // A set written before `still_working` existed says it with
                // its `etr_update` (whose no-ETR branch says as much).
                let or = |m: &BTreeMap<String, String>, name: &str| {
                    let older = (kind == ActionKind::StillWorking).then(|| name.replace(k, "etr_update"));
                    m.get(name).or_else(|| older.and_then(|o| m.get(&o))).cloned()
                };
                names.push(("sms", k.to_string(), or(&f.sms, k)));
                names.push(("email", k.to_string(), or(&f.email, k)));
                let subject = format!("{k}_subject");
                names.push(("email", subject.clone(), or(&f.email, &subject)));
            }
            names.push(("ivr", "active".into(), f.ivr.get("active").cloned()));
            names.push(("ivr", "inactive".into(), f.ivr.get("inactive").cloned()));
            for (channel, name, source) in names {
                let source = source.ok_or_else(|| missing(format!("{channel}.{name}")))?;
                let full = format!("{lang}.{channel}.{name}");
                env.add_template_owned(full.clone(), source.trim().to_string()).map_err(|e| {
                    TemplateError::Template {
                        lang: lang.clone(),
                        name: format!("{channel}.{name}"),
                        message: e.to_string(),
                    }
                })?;
            }
            if !f.money.contains("{amount}") {
                return Err(file_err(format!("language {lang:?}: money {:?} has no {{amount}}", f.money)));
            }
            let (money, decimal) = (f.money, f.decimal);
            langs.insert(lang, Language { time: f.time, datetime: f.datetime, money, decimal, causes: f.causes });
        }
        if !langs.contains_key(default_language) {
            return Err(TemplateError::NoDefault(path.display().to_string(), default_language.to_string()));
        }
        Ok(Templates {
            classifier: Arc::default(),
            env,
            langs,
            default_language: default_language.to_string(),
            sms_budget: usize::MAX,
        })
    }

    /// Languages with templates.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.langs.keys().map(String::as_str)
    }

    /// The template language for a customer's BCP 47 tag: the whole tag,
    /// then shorter prefixes (`es-MX` → `es`), then the default.
    pub fn resolve(&self, tag: &str) -> &str {
        let tag = tag.trim().replace('_', "-").to_ascii_lowercase();
        let mut t = tag.as_str();
        loop {
            if let Some((k, _)) = self.langs.get_key_value(t) {
                return k;
            }
            match t.rfind('-') {
                Some(i) => t = &t[..i],
                None => return &self.default_language,
            }
        }
    }

    /// `cause` in the words of language `tag` (see [`cause_key`]).
    pub fn cause_words(&self, tag: &str, cause: &str) -> String {
        let lang = self.resolve(tag);
        self.langs.get(lang).and_then(|l| l.causes.get(cause_key(cause, &self.classifier))).cloned().unwrap_or_default()
    }

    fn context(&self, lang: &Language, v: &Vars<'_>) -> minijinja::Value {
        let local = |t: DateTime<Utc>| {
            let l = t.with_timezone(&v.tz);
            let f = if l.date_naive() == v.now.with_timezone(&v.tz).date_naive() { &lang.time } else { &lang.datetime };
            l.format(f).to_string()
        };
        let cause = lang.causes.get(cause_key(v.cause, &self.classifier)).cloned().unwrap_or_default();
        minijinja::context! {
            operator => v.operator,
            area => v.area,
            cause => cause,
            start => local(v.start),
            etr => v.etr.map(local),
            data_until => v.data_until.map(local),
            compensation => v.compensation,
            credit => v.credit.as_ref().filter(|m| m.minor > 0).map(|m| lang.money(m)),
            message => v.message.map(str::trim).filter(|m| !m.is_empty()),
            incident => v.incident,
            url => v.url,
        }
    }

    fn render_one(&self, lang: &str, name: &str, ctx: &minijinja::Value) -> Result<String, TemplateError> {
        let err = |e: minijinja::Error| TemplateError::Template {
            lang: lang.to_string(),
            name: name.to_string(),
            message: e.to_string(),
        };
        let t = self.env.get_template(&format!("{lang}.{name}")).map_err(err)?;
        Ok(t.render(ctx).map_err(err)?.trim().to_string())
    }

    /// SMS notices carry the NOC's message only when the whole text still
    /// fits `segments` (`plan.sms_max_segments`); e-mail and IVR always do.
    pub fn with_sms_budget(mut self, segments: usize) -> Self {
        self.sms_budget = segments;
        self
    }

    /// Render one customer notice in `lang` (a resolved language). An SMS
    /// that would exceed the segment budget with the NOC's message is
    /// rendered without it (`Message::message_left_out`).
    pub fn render(
        &self,
        kind: ActionKind,
        channel: Channel,
        lang: &str,
        v: &Vars<'_>,
    ) -> Result<Message, TemplateError> {
        let l = self.langs.get(lang).ok_or_else(|| TemplateError::NoDefault("templates".into(), lang.into()))?;
        let ctx = self.context(l, v);
        let k = kind_name(kind);
        match channel {
            Channel::Email => Ok(Message {
                subject: Some(self.render_one(lang, &format!("email.{k}_subject"), &ctx)?),
                text: self.render_one(lang, &format!("email.{k}"), &ctx)?,
            }),
            _ => {
                let text = self.render_one(lang, &format!("sms.{k}"), &ctx)?;
                if v.message.is_none() || sms_text::segments(&text).count <= self.sms_budget {
                    return Ok(Message { subject: None, text });
                }
                let ctx = self.context(l, &Vars { message: None, ..v.clone() });
                Ok(Message { subject: None, text: self.render_one(lang, &format!("sms.{k}"), &ctx)? })
            }
        }
    }

    /// The IVR announcement for a region.
    pub fn ivr(&self, active: bool, lang: &str, v: &Vars<'_>) -> Result<String, TemplateError> {
        let l = self.langs.get(lang).ok_or_else(|| TemplateError::NoDefault("templates".into(), lang.into()))?;
        self.render_one(lang, if active { "ivr.active" } else { "ivr.inactive" }, &self.context(l, v))
    }

    /// Render every SMS kind in every language with the longest values it
    /// can be given — `area` (the longest postcode), every cause, every
    /// optional part present, times on another day — and refuse the set if
    /// one needs more than `max_segments` segments. Also renders each with
    /// no optional part, so a template error surfaces now, not mid-incident.
    pub fn check(&self, max_segments: usize, operator: &str, url: &str, area: &str) -> Result<(), TemplateError> {
        let start: DateTime<Utc> = "2026-12-28T23:59:00Z".parse().unwrap_or_default();
        let mut over = Vec::new();
        for (lang, l) in &self.langs {
            for kind in NOTICE_KINDS {
                for (cause, _) in CAUSES {
                    for full in [true, false] {
                        let v = Vars {
                            operator,
                            area,
                            cause,
                            start,
                            etr: full.then_some(start + chrono::Duration::hours(10)),
                            data_until: full.then_some(start + chrono::Duration::days(2)),
                            compensation: full,
                            credit: full
                                .then(|| Currency::parse("EUR").map(|c| Money::new(9_999_999, c)).ok())
                                .flatten(),
                            message: None,
                            incident: "INC-20261228-ffffffff",
                            url,
                            tz: Tz::UTC,
                            now: start + chrono::Duration::days(30),
                        };
                        let m = self.render(kind, Channel::Sms, lang, &v)?;
                        self.render(kind, Channel::Email, lang, &v)?;
                        self.ivr(true, lang, &v)?;
                        // The NOC's message renders everywhere (an SMS
                        // leaves it out when over budget, so it is not
                        // part of the worst case).
                        let with_message = Vars { message: Some("Crews are on site."), ..v.clone() };
                        self.render(kind, Channel::Email, lang, &with_message)?;
                        self.ivr(true, lang, &with_message)?;
                        let s = sms_text::segments(&m.text);
                        if s.count > max_segments {
                            over.push(format!(
                                "{lang}.sms.{} with cause {:?}: {} segments ({:?}, {} units)",
                                kind_name(kind),
                                l.causes[cause],
                                s.count,
                                s.coding,
                                s.units
                            ));
                        }
                    }
                }
            }
        }
        over.dedup();
        if over.is_empty() {
            Ok(())
        } else {
            Err(TemplateError::TooLong { limit: max_segments, over })
        }
    }
}

/// TOML through figment's parser would lose positions; the `toml` crate is
/// already in the tree through figment.
fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn shipped() -> Templates {
        Templates::load(None, "en").unwrap()
    }

    fn vars(tz: Tz) -> Vars<'static> {
        Vars {
            operator: "Example Telecom",
            area: "28013",
            cause: "Mains power failure",
            start: t("2026-11-23T13:05:00Z"),
            etr: Some(t("2026-11-23T17:30:00Z")),
            data_until: Some(t("2026-11-24T17:30:00Z")),
            compensation: true,
            credit: None,
            message: None,
            incident: "INC-20261123-0000abcd",
            url: "https://status.example.net",
            tz,
            now: t("2026-11-23T13:10:00Z"),
        }
    }

    #[test]
    fn languages_fall_back_from_region_to_language_to_default() {
        let tpl = shipped();
        assert_eq!(tpl.resolve("es-MX"), "es");
        assert_eq!(tpl.resolve("ES_es"), "es");
        assert_eq!(tpl.resolve("nl-BE"), "nl");
        assert_eq!(tpl.resolve("ru"), "ru");
        assert_eq!(tpl.resolve("fr-CA"), "en", "no French: the default");
        assert_eq!(tpl.resolve(""), "en");
        assert_eq!(tpl.languages().collect::<Vec<_>>(), ["en", "es", "nl", "ru"]);
    }

    #[test]
    fn times_are_local_to_the_customer_and_dated_when_not_today() {
        let tpl = shipped();
        let madrid = tpl.render(ActionKind::Down, Channel::Email, "es", &vars(chrono_tz::Europe::Madrid)).unwrap();
        // 13:05Z is 14:05 in Madrid (CET, UTC+1 in November); the ETR is
        // today (18:30), the data grant ends tomorrow (date and time).
        assert!(madrid.text.contains("desde las 14:05"), "{}", madrid.text);
        assert!(madrid.text.contains("a las 18:30."), "{}", madrid.text);
        assert!(madrid.text.contains("hasta 24/11 18:30"), "{}", madrid.text);
        assert!(madrid.text.contains("corte eléctrico"), "the cause in words: {}", madrid.text);
        let ny = tpl.render(ActionKind::Down, Channel::Sms, "en", &vars(chrono_tz::America::New_York)).unwrap();
        assert!(ny.text.contains("since 08:05"), "13:05Z is 08:05 EST: {}", ny.text);
    }

    #[test]
    fn optional_parts_disappear_and_email_has_a_subject() {
        let tpl = shipped();
        let v = Vars { etr: None, data_until: None, compensation: false, ..vars(Tz::UTC) };
        let sms = tpl.render(ActionKind::Down, Channel::Sms, "en", &v).unwrap();
        assert!(!sms.text.contains("Fix expected") && !sms.text.contains("unlimited"), "{}", sms.text);
        let eur = |minor| Some(Money::new(minor, Currency::parse("EUR").unwrap()));
        let mail = tpl.render(ActionKind::Restored, Channel::Email, "ru", &Vars { credit: eur(42), ..vars(Tz::UTC) });
        let mail = mail.unwrap();
        assert_eq!(mail.subject.as_deref(), Some("Связь в 28013 восстановлена (INC-20261123-0000abcd)"));
        assert!(mail.text.contains("Компенсация за аварию (0,42 €)"), "{}", mail.text);
        for kind in NOTICE_KINDS {
            for lang in ["en", "es", "nl", "ru"] {
                let m = tpl.render(kind, Channel::Sms, lang, &vars(Tz::UTC)).unwrap();
                assert!(m.text.starts_with("Example Telecom:"), "{lang} {kind:?}: {}", m.text);
                assert!(!m.text.contains("{{") && !m.text.contains("{%"), "{lang} {kind:?}: {}", m.text);
            }
        }
    }

    #[test]
    fn credits_are_written_as_each_language_writes_money() {
        let tpl = shipped();
        let money = |cur: &str, minor| Some(Money::new(minor, Currency::parse(cur).unwrap()));
        let restored = |lang, credit| {
            tpl.render(ActionKind::Restored, Channel::Sms, lang, &Vars { credit, ..vars(Tz::UTC) }).unwrap().text
        };
        assert!(restored("en", money("EUR", 1234)).contains("A credit of €12.34 "));
        assert!(restored("es", money("EUR", 42)).contains("abono de 0,42 €"));
        assert!(restored("nl", money("EUR", 5)).contains("vergoeding van € 0,05"));
        assert!(restored("en", money("JPY", 500)).contains("A credit of JPY500 "), "no minor unit");
        assert!(!restored("en", None).contains("credit"), "none due: no promise");
        assert!(!restored("en", money("EUR", 0)).contains("credit"), "zero is none");
    }

    #[test]
    fn the_noc_message_is_in_every_channel_and_in_sms_only_when_it_fits() {
        let tpl = shipped().with_sms_budget(2);
        let short = Vars { message: Some("Crews are on site."), ..vars(Tz::UTC) };
        for kind in [ActionKind::Down, ActionKind::EtrUpdate] {
            let sms = tpl.render(kind, Channel::Sms, "en", &short).unwrap();
            assert!(sms.text.contains("Crews are on site."), "{kind:?}: {}", sms.text);
        }
        let long_words = "Crews are on site and the generator is on its way; ".repeat(6);
        let long = Vars { message: Some(&long_words), ..vars(Tz::UTC) };
        let sms = tpl.render(ActionKind::Down, Channel::Sms, "en", &long).unwrap();
        assert!(!sms.text.contains("generator"), "over the budget: left out");
        assert!(crate::transforms::sms_text::segments(&sms.text).count <= 2);
        let mail = tpl.render(ActionKind::Down, Channel::Email, "en", &long).unwrap();
        assert!(mail.text.contains("generator"), "e-mail always carries it");
        assert!(tpl.ivr(true, "es", &long).unwrap().contains("generator"), "and the IVR");
    }

    #[test]
    fn causes_are_worded_from_the_alarm_or_a_noc_key() {
        let c = Classifier::default();
        assert_eq!(cause_key("Mains power failure", &c), "power");
        assert_eq!(cause_key("LOS on fibre ring", &c), "fibre");
        assert_eq!(cause_key("weather", &c), "weather");
        assert_eq!(cause_key("X.733 communicationsAlarm", &c), "fault");
        // Standard causes by their class, in any spelling.
        assert_eq!(cause_key("powerProblem", &c), "power");
        assert_eq!(cause_key("LOSS_OF_SIGNAL", &c), "transmission");
        assert_eq!(cause_key("equipmentMalfunction", &c), "equipment");
        assert_eq!(cause_key("congestion", &c), "congestion");
        assert_eq!(cause_key("indeterminate", &c), "fault");
        // An operator's rule words a vendor code.
        let rules = crate::transforms::classify::CausesConfig {
            rules: vec![crate::transforms::classify::CauseRule {
                kind: crate::transforms::classify::MatchKind::Glob,
                pattern: "ALM-7*".into(),
                class: CauseClass::Power,
            }],
            ..Default::default()
        };
        assert_eq!(cause_key("ALM-7001", &Classifier::new(&rules).unwrap()), "power");
        assert_eq!(cause_key("ALM-7001", &c), "fault");
        let tpl = shipped();
        assert_eq!(tpl.cause_words("es-MX", "LOSS_OF_SIGNAL"), "fallo de enlace");
        assert_eq!(tpl.cause_words("en", "enclosureDoorOpen"), "a site problem");
        assert_eq!(tpl.cause_words("xx", "powerProblem"), "a power failure", "the default language");
    }

    #[test]
    fn shipped_sms_fit_two_segments_with_the_longest_values() {
        let tpl = shipped();
        tpl.check(2, "Example Telecom", "https://status.example.net", "02901").unwrap();
        // A long operator name pushes them over, and the error lists each.
        let err = tpl.check(2, &"Very Long Operator Name ".repeat(4), "https://status.example.net", "02901");
        match err {
            Err(TemplateError::TooLong { limit: 2, over }) => {
                assert!(over.iter().any(|o| o.starts_with("ru.sms.down")), "{over:?}");
            }
            other => panic!("expected TooLong, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_bad_template_file_names_what_is_wrong() {
        let broken = DEFAULT_TEMPLATES.replace("[ru.ivr]", "[ru.ivrx]");
        let e = Templates::parse(Path::new("t.toml"), &broken, "en").err().unwrap().to_string();
        assert!(e.contains("t.toml") && e.contains("ivrx"), "{e}");
        let missing = DEFAULT_TEMPLATES.replace("cancelled_subject = \"Negeer", "cancelled_subjekt = \"Negeer");
        let e = Templates::parse(Path::new("t.toml"), &missing, "en").err().unwrap().to_string();
        assert!(e.contains("\"nl\"") && e.contains("email.cancelled_subject"), "{e}");
        let syntax = DEFAULT_TEMPLATES.replace("{{ operator }}: storing in", "{{ operator }: storing in");
        let e = Templates::parse(Path::new("t.toml"), &syntax, "en").err().unwrap().to_string();
        assert!(e.contains("nl.sms."), "{e}");
        assert!(matches!(
            Templates::parse(Path::new("t.toml"), DEFAULT_TEMPLATES, "fr"),
            Err(TemplateError::NoDefault(..))
        ));
    }
}
