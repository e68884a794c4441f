//! The daemon's configuration: one TOML file plus `OUTAGE_*` environment
//! overrides (`OUTAGE_KAFKA__BOOTSTRAP=host:9092` sets `kafka.bootstrap`).
//!
//! Every section denies unknown keys and names its defaults, so a typo is an
//! error that names the key instead of a silently ignored setting. The
//! documented example is `deploy/outage.example.toml`; a test keeps the two
//! in step.

use crate::kafka::KafkaConfig;
use crate::refdata::RefDataPaths;
use crate::sinks::SinksConfig;
use crate::sources::IngestConfig;
use crate::transforms::classify::CausesConfig;
use crate::transforms::correlate::CorrelatorConfig;
use crate::transforms::plan::PlanConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub ingest: IngestConfig,
    pub refdata: RefDataPaths,
    pub correlator: CorrelatorConfig,
    /// Probable-cause classification (`[causes]`): the operator's rules
    /// for vendor strings, and how the unclassified are reported.
    pub causes: CausesConfig,
    pub plan: PlanConfig,
    pub sinks: SinksConfig,
    /// The NOC's HTTP API (`[api]`): listen address and bearer tokens.
    pub api: crate::api::ApiConfig,
}

impl Default for RefDataPaths {
    fn default() -> Self {
        RefDataPaths {
            sites: "data/demo/sites.csv".into(),
            postcodes: "data/demo/postcodes.csv".into(),
            customers: "data/demo/customers.csv".into(),
            elements: None,
            default_country: None,
            max_bad_ratio: RefDataPaths::DEFAULT_MAX_BAD_RATIO,
            unsubscribes: "out/unsubscribes.jsonl".into(),
        }
    }
}

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    /// A check on a value, before it is located (see [`ConfigError::Keys`]).
    #[error("config: `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// Mistakes located like a compiler's errors: one line each,
    /// `file:line:column: `key`: what is wrong, and what was expected`.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Keys(Vec<KeyError>),
}

impl From<crate::runtime::InvalidSetting> for ConfigError {
    fn from(e: crate::runtime::InvalidSetting) -> Self {
        ConfigError::Invalid { key: e.key, message: e.message }
    }
}

/// One configuration mistake: where it is, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// `outage.toml:12:1` (the file as given, line and column of the key),
    /// the environment variable that set it (`OUTAGE_KAFKA__PARTITIONS`),
    /// or `config` when the value is a default.
    pub origin: String,
    /// The dotted key, no profile prefix: `correlator.hold_down`,
    /// `plan.compensation.rules[0].window_end`.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
    }
}

/// Splits a key as the checks write it (`a.b[0]."c.d"`) into segments.
fn key_segments(key: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    for ch in key.chars() {
        match ch {
            '"' => quoted = !quoted,
            '.' | '[' | ']' if !quoted => flush(&mut cur, &mut out),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Segments back to a dotted key: indexes as `[n]`, keys with dots quoted.
fn key_string(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && s.parse::<usize>().is_ok() {
            out.push_str(&format!("[{s}]"));
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        if s.contains('.') {
            out.push_str(&format!("{s:?}"));
        } else {
            out.push_str(s);
        }
    }
    out
}

/// The 1-based line and column of `key` (or of its deepest ancestor the
/// file has: a missing key is reported at its section) in TOML `src`.
fn locate(src: &str, key: &[String]) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut item = doc.as_item();
    let mut at = None;
    for seg in key {
        let next = match seg.parse::<usize>() {
            Ok(i) if item.is_array() || item.is_array_of_tables() => item.get(i),
            _ => {
                let key_span = item.as_table_like().and_then(|t| t.key(seg)).and_then(|k| k.span());
                let next = item.get(seg.as_str());
                at = key_span.or_else(|| next.and_then(|n| n.span())).map(|r| r.start).or(at);
                next
            }
        };
        let Some(next) = next else { break };
        if let (Ok(_), Some(span)) = (seg.parse::<usize>(), next.span()) {
            at = Some(span.start);
        }
        item = next;
    }
    let offset = at?;
    let before = src.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// Where the configuration came from, to say where a mistake is.
struct Sources<'a> {
    file: Option<(&'a Path, String)>,
    env_prefix: &'a str,
}

impl Sources<'_> {
    fn env_var(&self, key: &[String]) -> String {
        let keys: Vec<String> = key.iter().map(|k| k.to_ascii_uppercase()).collect();
        format!("{}{}", self.env_prefix, keys.join("__"))
    }

    /// The file and line holding `key`, else the environment variable
    /// setting it (or one of its sections), else `config`.
    fn origin(&self, key: &[String], from_env: bool) -> String {
        if !from_env {
            if let Some((path, src)) = &self.file {
                if let Some((line, col)) = locate(src, key) {
                    return format!("{}:{line}:{col}", path.display());
                }
            }
        }
        for n in (1..=key.len()).rev() {
            let var = self.env_var(&key[..n]);
            if std::env::var_os(&var).is_some() {
                return format!("environment variable {var}");
            }
        }
        match &self.file {
            Some((path, _)) => path.display().to_string(),
            None => "config".into(),
        }
    }

    /// A figment error as a located mistake, with what was expected.
    fn key_error(&self, e: &figment::Error) -> KeyError {
        let from_env = e.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
        let mut path = e.path.clone();
        let mut message = e.kind.to_string();
        let list = |names: &[&str]| names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        match &e.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                message = format!("unknown key `{field}`; expected one of {}", list(expected));
            }
            figment::error::Kind::UnknownVariant(value, expected) => {
                message = format!("unknown value `{value}`; expected one of {}", list(expected));
            }
            _ => {}
        }
        if let Some(hint) = expected_hint(&path, &e.kind) {
            message = match message.contains("expected a duration") {
                true => format!("{message} such as {hint}"),
                false => format!("{message}; expected a duration such as {hint}"),
            };
        }
        KeyError { origin: self.origin(&path, from_env), key: key_string(&path), message }
    }

    fn locate_invalid(&self, key: &str, message: String) -> KeyError {
        let segments = key_segments(key);
        KeyError { origin: self.origin(&segments, false), key: key.to_string(), message }
    }
}

/// What a key's value should look like, from its default, when serde's
/// message does not say (a duration that does not parse says "expected
/// number at 0").
fn expected_hint(path: &[String], kind: &figment::error::Kind) -> Option<String> {
    use figment::error::Kind;
    if !matches!(kind, Kind::Message(_) | Kind::InvalidValue(..)) {
        return None;
    }
    let defaults = Figment::from(Serialized::defaults(Config::default()));
    let value = defaults.find_value(&path.join(".")).ok()?;
    let text = value.as_str()?;
    if humantime::parse_duration(text).is_ok() {
        return Some(format!("`90s`, `10m` or `24h` (default `{text}`)"));
    }
    None
}

impl Config {
    /// Defaults, then the TOML file (if given), then `OUTAGE_<SECTION>__<KEY>`
    /// variables. Only names with a `__` are configuration: every key is in
    /// a section, and `OUTAGE_CONFIG` is `outaged --config`'s, while
    /// `OUTAGE_SERVER`, `OUTAGE_TOKEN` and `OUTAGE_CA_FILE` are older names
    /// `outagectl` still reads: exporting them must not stop the daemon.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::figment(path, "OUTAGE_")
    }

    fn env(prefix: &str) -> Env {
        Env::prefixed(prefix).filter(|k| k.as_str().contains("__")).split("__")
    }

    /// Errors name the file as given, the line and column of the key, the
    /// key without figment's profile (`default.`), and what was expected;
    /// every bad key of the file is reported at once.
    fn figment(path: Option<&Path>, env_prefix: &str) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        let mut sources = Sources { file: None, env_prefix };
        if let Some(p) = path {
            let src = std::fs::read_to_string(p).map_err(|e| ConfigError::Load(format!("{}: {e}", p.display())))?;
            if let Err(e) = toml_edit::ImDocument::parse(src.as_str()) {
                let at = e
                    .span()
                    .and_then(|r| src.get(..r.start))
                    .map(|b| (b.matches('\n').count() + 1, b.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1));
                let origin = match at {
                    Some((line, col)) => format!("{}:{line}:{col}", p.display()),
                    None => p.display().to_string(),
                };
                let message = e.message().trim().to_string();
                return Err(ConfigError::Load(format!("{origin}: not TOML: {message}")));
            }
            fig = fig.merge(Toml::file_exact(p));
            sources.file = Some((p, src));
        }
        let cfg: Config = fig
            .merge(Self::env(env_prefix))
            .extract()
            .map_err(|e| ConfigError::Keys(e.into_iter().map(|e| sources.key_error(&e)).collect()))?;
        cfg.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message } => ConfigError::Keys(vec![sources.locate_invalid(&key, message)]),
            other => other,
        })?;
        Ok(cfg)
    }

    /// Checks serde cannot express.
    /// The probable-cause classifier: the standards' table plus the
    /// `[causes]` rules (a bad rule names its key).
    /// What the NOC API takes of the configuration. The configuration is
    /// validated before the API starts, so the `[causes]` rules compile;
    /// the standards' table alone is the fallback.
    pub fn api_settings(&self) -> crate::api::ApiSettings {
        crate::api::ApiSettings {
            tokens: self.api.tokens.clone(),
            plan: self.plan.clone(),
            classifier: self.classifier().unwrap_or_default(),
            default_country: self.refdata.default_country.clone(),
            unsubscribe_secret: self.sinks.email.as_ref().and_then(|e| e.unsubscribe_secret.clone()),
        }
    }

    pub fn classifier(&self) -> Result<std::sync::Arc<crate::transforms::classify::Classifier>, ConfigError> {
        crate::transforms::classify::Classifier::new(&self.causes)
            .map(std::sync::Arc::new)
            .map_err(|e| ConfigError::Invalid { key: format!("causes.rules[{}].pattern", e.index), message: e.message })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| Err(ConfigError::Invalid { key: key.into(), message: message.into() });
        if self.kafka.bootstrap.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return bad("kafka.bootstrap", "empty; leave it out to use the embedded broker");
        }
        if self.kafka.partitions < 1 {
            return bad("kafka.partitions", "must be at least 1");
        }
        if self.kafka.replication_factor < 1 {
            return bad("kafka.replication_factor", "must be at least 1");
        }
        if self.kafka.group_id.is_empty() {
            return bad("kafka.group_id", "must not be empty");
        }
        if let Some(c) = &self.refdata.default_country {
            if !crate::refdata::known_countries().any(|k| k == c) {
                let known: Vec<&str> = crate::refdata::known_countries().collect();
                return bad("refdata.default_country", &format!("{c:?} is not one of {}", known.join(", ")));
            }
        }
        if !(0.0..=1.0).contains(&self.refdata.max_bad_ratio) {
            return bad("refdata.max_bad_ratio", "must be a share between 0 and 1 (0.001: one row in a thousand)");
        }
        if self.ingest.max_record_bytes < 64 {
            return bad("ingest.max_record_bytes", "must be at least 64");
        }
        crate::sources::elements::Elements::new(&self.ingest.elements)
            .map_err(|e| ConfigError::Invalid { key: e.key, message: e.message })?;
        let c = &self.correlator;
        if !(c.neighbour_gap_km.is_finite() && c.neighbour_gap_km >= 0.0) {
            return bad("correlator.neighbour_gap_km", "must be a finite distance >= 0");
        }
        if !(c.default_radius_km.is_finite() && c.default_radius_km > 0.0) {
            return bad("correlator.default_radius_km", "must be a finite distance > 0");
        }
        if c.min_sites < 1 {
            return bad("correlator.min_sites", "must be at least 1");
        }
        if c.declare_sites < c.min_sites {
            return bad("correlator.declare_sites", "must be at least correlator.min_sites");
        }
        if let Some(i) =
            c.service_affecting_causes.iter().position(|c| crate::transforms::classify::normalize(c).is_empty())
        {
            return bad(&format!("correlator.service_affecting_causes[{i}]"), "has no letters or digits");
        }
        self.classifier()?;
        if self.causes.report_top == 0 {
            return bad("causes.report_top", "must be at least 1");
        }
        if self.causes.report_every.is_zero() {
            return bad("causes.report_every", "must be longer than 0s");
        }
        if c.reorder_window > Duration::from_secs(24 * 3600) {
            return bad("correlator.reorder_window", "must be at most 24h (clears are remembered this long)");
        }
        if self.plan.ivr_region_prefix == 0 {
            return bad("plan.ivr_region_prefix", "must be at least 1");
        }
        if self.plan.default_language.is_empty() {
            return bad("plan.default_language", "must not be empty");
        }
        if self.plan.quiet_hours.as_ref().is_some_and(|q| q.start == q.end) {
            return bad("plan.quiet_hours.end", "must differ from plan.quiet_hours.start");
        }
        if let Some(ivr) = &self.sinks.ivr {
            ivr.validate()?;
        }
        self.plan
            .compensation
            .validate_at("plan.compensation")
            .map_err(|e| ConfigError::Invalid { key: e.key, message: e.message })?;
        for p in &self.sinks.sms {
            if p.url.is_empty() {
                return bad("sinks.sms.url", "must not be empty");
            }
            if p.rate_per_second == 0 {
                return bad("sinks.sms.rate_per_second", "must be at least 1");
            }
            if p.max_in_flight == 0 {
                return bad("sinks.sms.max_in_flight", "must be at least 1");
            }
        }
        if self.sinks.concurrency == 0 {
            return bad("sinks.concurrency", "must be at least 1");
        }
        if let Some(e) = &self.sinks.email {
            if e.rate_per_second == 0 || e.pool_size == 0 {
                return bad("sinks.email.rate_per_second", "rate_per_second and pool_size must be at least 1");
            }
            let links = e.unsubscribe_url.is_some() || e.unsubscribe_mailto.is_some();
            if links && e.unsubscribe_secret.as_deref().is_none_or(|s| s.chars().count() < 32) {
                return bad(
                    "sinks.email.unsubscribe_secret",
                    "required (at least 32 characters, random) when unsubscribe_url or unsubscribe_mailto is set: \
                     it signs each link so nobody can unsubscribe anyone else",
                );
            }
            if e.unsubscribe_valid_for.is_zero() {
                return bad("sinks.email.unsubscribe_valid_for", "must be longer than 0s");
            }
        }
        if self.sinks.retry.max_attempts == 0 {
            return bad("sinks.retry.max_attempts", "must be at least 1");
        }
        if self.sinks.retry.park_horizon.is_zero() {
            return bad("sinks.retry.park_horizon", "must be more than 0s");
        }
        if self.plan.sms_max_segments == 0 {
            return bad("plan.sms_max_segments", "must be at least 1");
        }
        if self.plan.default_timezone.parse::<chrono_tz::Tz>().is_err() {
            return bad("plan.default_timezone", "not an IANA time zone (e.g. Europe/Madrid)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(body: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outage.toml");
        std::fs::write(&p, body).unwrap();
        Config::figment(Some(&p), "OUTAGE_TEST_NOTHING_")
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn only_sectioned_variables_are_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OUTAGE_JAILTEST_SERVER", "http://127.0.0.1:8080");
            jail.set_env("OUTAGE_JAILTEST_CA_FILE", "/nowhere.pem");
            jail.set_env("OUTAGE_JAILTEST_KAFKA__PARTITIONS", "3");
            let cfg = Config::figment(None, "OUTAGE_JAILTEST_").map_err(|e| e.to_string())?;
            assert_eq!(cfg.kafka.partitions, 3);
            jail.set_env("OUTAGE_JAILTEST_KAFKA__PARTITONS", "3");
            let err = Config::figment(None, "OUTAGE_JAILTEST_").unwrap_err().to_string();
            assert!(err.contains("partitons"), "a typo in a sectioned key is still an error: {err}");
            assert!(
                err.starts_with(
                    "environment variable OUTAGE_JAILTEST_KAFKA__PARTITONS: `kafka.partitons`: unknown key"
                ),
                "an environment variable's mistake names the variable: {err}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/outage.example.toml");
        let cfg = Config::figment(Some(&p), "OUTAGE_TEST_NOTHING_").unwrap();
        assert_eq!(cfg, Config::default(), "deploy/outage.example.toml and Config::default() disagree");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = from_toml("[kafka]\npartitons = 3\n").unwrap_err().to_string();
        assert!(err.contains("partitons") && err.contains("kafka"), "{err}");
        let err = from_toml("[correlator]\nhold_down = \"ten minutes\"\n").unwrap_err().to_string();
        assert!(err.contains("correlator.hold_down"), "{err}");
        let err = from_toml("[correlator]\nmin_sites = 5\ndeclare_sites = 2\n").unwrap_err().to_string();
        assert!(err.contains("correlator.declare_sites"), "{err}");
        let err = from_toml("[correlator]\nmin_severity = \"loud\"\n").unwrap_err().to_string();
        assert!(err.contains("correlator.min_severity"), "{err}");
        let err = from_toml("[plan.quiet_hours]\nstart = \"9pm\"\n").unwrap_err().to_string();
        assert!(err.contains("plan.quiet_hours.start"), "{err}");
        let err = from_toml("[plan.quiet_hours]\nstart = \"08:00\"\n").unwrap_err().to_string();
        assert!(err.contains("plan.quiet_hours.end"), "{err}");
        let err = from_toml("[[plan.compensation.rules]]\nrule = \"es_rd899_internet\"\nwindow_start = \"23:00\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plan.compensation.rules[0].window_end"), "{err}");
        let err = from_toml("[[ingest.elements]]\nformat = \"ves\"\npattern = \"^(?P<site>S-\\\\d+\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.elements[0].pattern"), "{err}");
        let err =
            from_toml("[[ingest.elements]]\nformat = \"snmp\"\npattern = \"(?P<site>.+)\"\n").unwrap_err().to_string();
        assert!(err.contains("ingest.elements") && err.contains("snmp"), "{err}");
        let ok = from_toml("[refdata]\nelements = \"e.csv\"\n[[ingest.elements]]\nformat = \"stnddefined\"\npattern = \"ManagedElement=(?P<site>[^,]+)\"\n")
            .unwrap();
        assert_eq!((ok.ingest.elements.len(), ok.refdata.elements), (1, Some(std::path::PathBuf::from("e.csv"))));
        let q = from_toml("[plan.quiet_hours]\nstart = \"22:30\"\n").unwrap().plan.quiet_hours.unwrap();
        assert_eq!((q.start.to_string(), q.end.to_string()), ("22:30:00".into(), "08:00:00".into()));
    }

    /// The error for `body` as the file `outage.toml`, and that file's path.
    fn error_of(body: &str) -> (String, String) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outage.toml");
        std::fs::write(&p, body).unwrap();
        let err = Config::figment(Some(&p), "OUTAGE_TEST_NOTHING_").unwrap_err().to_string();
        (p.display().to_string(), err)
    }

    #[test]
    fn errors_name_file_line_and_key_like_a_compiler() {
        // An unknown key: its line, the section's known keys.
        let (file, err) = error_of("[kafka]\nbootstrap = \"k:9092\"\npartitons = 3\n");
        assert!(
            err.starts_with(&format!(
                "{file}:3:1: `kafka.partitons`: unknown key `partitons`; expected one of `bootstrap`, `partitions`"
            )),
            "{err}"
        );
        assert!(!err.contains("default."), "no figment profile in the key: {err}");
        // A wrong type: what was found and what was expected.
        let (file, err) = error_of("# comment\n\n[correlator]\nmin_sites = \"three\"\n");
        assert!(err.starts_with(&format!("{file}:4:1: `correlator.min_sites`: invalid type")), "{err}");
        assert!(err.contains("\"three\"") && err.contains("expected"), "{err}");
        // A bad value: a duration that does not parse says what a duration is.
        let (file, err) = error_of("[correlator]\nmin_sites = 3\nhold_down = \"ten minutes\"\n");
        assert!(err.starts_with(&format!("{file}:3:1: `correlator.hold_down`:")), "{err}");
        assert!(err.contains("a duration such as") && err.contains("default `10m`"), "{err}");
        // A value outside the known set: the values it may take.
        let (file, err) = error_of("[correlator]\n  min_severity = \"loud\"\n");
        assert!(err.starts_with(&format!("{file}:2:3: `correlator.min_severity`: unknown value `loud`")), "{err}");
        assert!(err.contains("`critical`") && err.contains("`major`"), "{err}");
        // A check serde cannot express, in an array of tables: the key's line.
        let (file, err) = error_of(
            "[plan]\noperator_name = \"X\"\n\n[[plan.compensation.rules]]\nrule = \"es_rd899_internet\"\nwindow_start = \"23:00\"\n",
        );
        assert!(err.starts_with(&format!("{file}:4:1: `plan.compensation.rules[0].window_end`:")), "{err}");
        let (file, err) = error_of("[correlator]\nmin_sites = 5\ndeclare_sites = 2\n");
        assert_eq!(err, format!("{file}:3:1: `correlator.declare_sites`: must be at least correlator.min_sites"));
        // Not TOML at all: the line and column of the syntax error.
        let (file, err) = error_of("[kafka]\npartitions = = 3\n");
        assert!(err.contains(&format!("{file}:2:")) && err.contains("not TOML"), "{err}");
    }

    #[test]
    fn keys_split_and_join() {
        assert_eq!(
            key_segments("plan.compensation.rules[0].window_end"),
            ["plan", "compensation", "rules", "0", "window_end"]
        );
        assert_eq!(key_segments("kafka.client.\"sasl.mechanism\""), ["kafka", "client", "sasl.mechanism"]);
        let s: Vec<String> = ["ingest", "elements", "1", "pattern"].map(String::from).to_vec();
        assert_eq!(key_string(&s), "ingest.elements[1].pattern");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn a_kafka_secret_from_the_environment_joins_the_files_properties() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outage.toml");
        std::fs::write(&p, "[kafka.client]\n\"sasl.username\" = \"outaged\"\n\"sasl.mechanism\" = \"PLAIN\"\n")
            .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("OUTAGE_KAFKA__CLIENT", r#"{"sasl.password"="s3cret"}"#);
            let cfg = Config::load(Some(&p)).map_err(|e| e.to_string())?;
            let keys: Vec<&str> = cfg.kafka.client.keys().map(String::as_str).collect();
            assert_eq!(keys, ["sasl.mechanism", "sasl.password", "sasl.username"]);
            assert_eq!(cfg.kafka.client["sasl.password"], "s3cret");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn environment_overrides_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outage.toml");
        std::fs::write(&p, "[kafka]\nbootstrap = \"file:9092\"\npartitions = 4\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("OUTAGE_KAFKA__BOOTSTRAP", "env:9092");
            jail.set_env("OUTAGE_CORRELATOR__HOLD_DOWN", "90s");
            let cfg = Config::load(Some(&p)).map_err(|e| e.to_string())?;
            assert_eq!(cfg.kafka.bootstrap.as_deref(), Some("env:9092"));
            assert_eq!(cfg.kafka.partitions, 4);
            assert_eq!(cfg.correlator.hold_down, Duration::from_secs(90));
            Ok(())
        });
    }
}
