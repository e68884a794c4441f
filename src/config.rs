//! The daemon's configuration: one TOML file plus `OUTAGE_*` environment
//! overrides (`OUTAGE_KAFKA__BOOTSTRAP=host:9092` sets `kafka.bootstrap`).
//!
//! Every section denies unknown keys and names its defaults, so a typo is an
//! error that names the key instead of a silently ignored setting. The
//! documented example is `deploy/outage.example.toml`; a test keeps the two
//! in step.

use crate::model::Severity;
use crate::refdata::RefDataPaths;
use crate::transforms::classify::{CauseClass, CausesConfig};
use crate::transforms::compensate::CompensationConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port,...` of the cluster. Empty: start librdkafka's in-process
    /// mock cluster (the embedded default) and log its address.
    pub bootstrap: Option<String>,
    /// Partitions for topics we create. Actions are keyed by customer, so
    /// this bounds how many dispatchers share the work. Default 8.
    pub partitions: i32,
    /// Replication factor for topics we create on a real cluster. Default 1.
    pub replication_factor: i32,
    /// Consumer group of the daemon. Default `outaged`.
    pub group_id: String,
    pub topics: Topics,
    /// Extra librdkafka properties for every client (security, tuning),
    /// e.g. `"security.protocol" = "SASL_SSL"`, `"sasl.mechanism" =
    /// "SCRAM-SHA-512"`, `"ssl.ca.location" = "/etc/outage/kafka-ca.pem"`.
    /// librdkafka checks them when a client is made (`outaged --check`
    /// makes every client once); `sasl.password` and other secrets are
    /// never logged. Default: none.
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap: None,
            partitions: 8,
            replication_factor: 1,
            group_id: "outaged".into(),
            topics: Topics::default(),
            client: BTreeMap::new(),
        }
    }
}

/// Topic names; the defaults are the names DESIGN.md uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Alarm feed in (`noc.alarms`).
    pub alarms: String,
    /// Undecodable alarms with their reason (`noc.alarms.dlq`).
    pub dlq: String,
    /// The incident log, keyed by incident id (`outage.incidents`).
    pub incidents: String,
    /// Per-customer actions, keyed by customer id (`outage.actions`).
    pub actions: String,
    /// Credits for billing (`billing.credits`).
    pub credits: String,
    /// Every send attempt, its result and every delivery report, keyed by
    /// customer (`outage.deliveries`): where "why did customer X not get
    /// message Y?" is answered.
    pub deliveries: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            alarms: "noc.alarms".into(),
            dlq: "noc.alarms.dlq".into(),
            incidents: "outage.incidents".into(),
            actions: "outage.actions".into(),
            credits: "billing.credits".into(),
            deliveries: "outage.deliveries".into(),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&str; 6] {
        [&self.alarms, &self.dlq, &self.incidents, &self.actions, &self.credits, &self.deliveries]
    }
}

impl Default for RefDataPaths {
    fn default() -> Self {
        RefDataPaths {
            sites: "data/demo/sites.csv".into(),
            postcodes: "data/demo/postcodes.csv".into(),
            customers: "data/demo/customers.csv".into(),
            elements: None,
        }
    }
}

/// What the alarm source refuses before correlation (to the dead-letter
/// topic, with the reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Larger records are dead-lettered unread. Default 1 MiB.
    pub max_record_bytes: usize,
    /// Alarms whose event time is further ahead of the clock are
    /// dead-lettered. Default 5m.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// `[[ingest.elements]]`: rules that find the site in a network
    /// element's name, per input format, tried in order after the element
    /// table (`sources::elements`). Default none.
    pub elements: Vec<crate::sources::elements::ElementRule>,
    /// How far out of event-time order alarms may arrive and still be
    /// applied in order (`transforms::order`): an alarm is applied once
    /// every assigned partition has shown an alarm this much later, so
    /// the incidents do not depend on batching or partition interleaving.
    /// Later arrivals are applied at once, in arrival order, and counted
    /// (`outage_alarms_late_total`). It delays declarations and
    /// resolutions by as much (wall clock; event-time latencies are unchanged).
    /// Default 30s ([`IngestConfig::DEFAULT_LATENESS`]): above the delivery
    /// jitter of NMS feeds (the simulator's is 20 s).
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    /// A partition that delivered nothing for this long (wall clock) no
    /// longer holds the watermark back; when every partition is that idle,
    /// the watermark follows the wall clock minus `lateness`, so timers
    /// still run on an idle feed. Default 10s ([`IngestConfig::DEFAULT_IDLE_AFTER`]).
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
}

impl IngestConfig {
    pub const DEFAULT_LATENESS: Duration = Duration::from_secs(30);
    pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(10);
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_record_bytes: 1 << 20,
            max_future: Duration::from_secs(300),
            elements: Vec::new(),
            lateness: Self::DEFAULT_LATENESS,
            idle_after: Self::DEFAULT_IDLE_AFTER,
        }
    }
}

impl IngestConfig {
    pub fn limits(&self) -> crate::sources::decode::Limits {
        crate::sources::decode::Limits {
            max_bytes: self.max_record_bytes,
            max_future: chrono::Duration::from_std(self.max_future).unwrap_or(chrono::Duration::MAX),
        }
    }
}

/// When sites down together become an incident, and when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelatorConfig {
    /// Two down sites join one incident when their coverage circles are at
    /// most this far apart. Default 10 km.
    pub neighbour_gap_km: f64,
    /// Sites down together before an incident may be declared. Default 3.
    pub min_sites: usize,
    /// ...and for how long, so a blip is not announced. Default 2m.
    #[serde(with = "humantime_serde")]
    pub min_duration: Duration,
    /// Declare at once when this many sites are down. Default 10.
    pub declare_sites: usize,
    /// ... or when at least `min_sites` are down and their coverage holds
    /// this many customers (billing postcodes). Default 1000.
    pub declare_customers: u64,
    /// All sites must stay up this long before "restored". Default 10m.
    #[serde(with = "humantime_serde")]
    pub hold_down: Duration,
    /// Alarms below this severity are not service-affecting: X.733 defines
    /// critical and major as the service-affecting severities. Default major.
    pub min_severity: Severity,
    /// Cause classes (`transforms::classify`) that never take service down,
    /// whatever the severity. Default `["environment", "security"]`:
    /// temperature, humidity, an open door, an intrusion attempt.
    pub not_service_affecting_classes: Vec<CauseClass>,
    /// Whether a cause neither the standards' table nor `[causes]` rules
    /// know counts (by its severity, as X.733 says). Either way it is
    /// counted by value on `/metrics` and in the log. Default true.
    pub unclassified_service_affecting: bool,
    /// If not empty, only these probable causes (any spelling: case and
    /// separators are ignored) are service-affecting. Default: empty (every
    /// cause not excluded by its class).
    pub service_affecting_causes: Vec<String>,
    /// Radius for sites the inventory lacks but the alarm locates. Default 2 km.
    pub default_radius_km: f64,
    /// How far out of event-time order a raise may arrive after its own
    /// clear and still be known as stale (not applied): feeds re-send
    /// active alarms, and a re-send crossing the clear would leave the site
    /// down. Clears are remembered this long of feed time. `0s` turns it
    /// off. Default 5m.
    #[serde(with = "humantime_serde")]
    pub reorder_window: Duration,
    /// Temporal coherence: a down site joins an open incident only if its
    /// failure starts within this of the failure start of a member site
    /// within reach (`neighbour_gap_km`), or of the incident's onset. A site
    /// failing later than that opens (or joins) a separate incident, so
    /// unrelated failures hours apart never chain. Default 30m
    /// ([`CorrelatorConfig::DEFAULT_JOIN_WINDOW`]).
    #[serde(with = "humantime_serde")]
    pub join_window: Duration,
    /// The same for a member of the site's power/backhaul group
    /// (`group_id`), at any distance: shared infrastructure is strong
    /// evidence. Default 1h ([`CorrelatorConfig::DEFAULT_GROUP_JOIN_WINDOW`]).
    #[serde(with = "humantime_serde")]
    pub group_join_window: Duration,
    /// A site failure shorter than this is a blip and never widens the
    /// audience: cleared within it, the site is dropped from a probable
    /// incident; a site enters a declared incident's footprint (its
    /// customers are told) only once it has been down this long — the
    /// declaration itself is not delayed. `0s` turns it off.
    /// Default 5m ([`CorrelatorConfig::DEFAULT_BLIP_WINDOW`]).
    #[serde(with = "humantime_serde")]
    pub blip_window: Duration,
}

impl CorrelatorConfig {
    /// Storms cross 10-15 km (a site's reach) in about 15-20 minutes at
    /// 40-70 km/h; a power failure's sites go down within minutes.
    pub const DEFAULT_JOIN_WINDOW: Duration = Duration::from_secs(30 * 60);
    /// A group's sites may report a shared failure late (batteries), but a
    /// storm takes single members of many groups: an hour, not the day.
    pub const DEFAULT_GROUP_JOIN_WINDOW: Duration = Duration::from_secs(3600);
    /// Link flaps last seconds to a few minutes.
    pub const DEFAULT_BLIP_WINDOW: Duration = Duration::from_secs(5 * 60);
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            neighbour_gap_km: 10.0,
            min_sites: 3,
            min_duration: Duration::from_secs(120),
            declare_sites: 10,
            declare_customers: 1000,
            hold_down: Duration::from_secs(600),
            min_severity: Severity::Major,
            not_service_affecting_classes: vec![CauseClass::Environment, CauseClass::Security],
            unclassified_service_affecting: true,
            service_affecting_causes: Vec::new(),
            default_radius_km: 2.0,
            reorder_window: Duration::from_secs(300),
            join_window: Self::DEFAULT_JOIN_WINDOW,
            group_join_window: Self::DEFAULT_GROUP_JOIN_WINDOW,
            blip_window: Self::DEFAULT_BLIP_WINDOW,
        }
    }
}

/// Who is told what, and what they are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanConfig {
    /// IVR regions are postcode prefixes of this length (3: US SCF). Default 3.
    pub ivr_region_prefix: usize,
    /// Language of IVR prompts and of customers whose language has no
    /// template. Default `en`.
    pub default_language: String,
    /// Unlimited data lasts until restoration plus this grace. Default 24h.
    #[serde(with = "humantime_serde")]
    pub data_grant_grace: Duration,
    /// Outages shorter than this earn no credit. Default 1h.
    #[serde(with = "humantime_serde")]
    pub credit_min_outage: Duration,
    /// Operator name used in messages. Default `Example Telecom`.
    pub operator_name: String,
    /// Where customers read updates, quoted in messages.
    pub status_url: String,
    /// Notice templates replacing the built-in `templates/notices.toml`.
    /// Default: none (the built-in set).
    pub templates: Option<PathBuf>,
    /// Most SMS segments a notice may take; every template is checked at
    /// start-up with the longest values. Default 2.
    pub sms_max_segments: usize,
    /// IANA zone for customers whose postcode has none. Default `UTC`.
    pub default_timezone: String,
    /// Notices promise automatic compensation. Default true.
    pub compensation_promise: bool,
    /// Hold SMS notices planned at night until the customer's local
    /// morning. Default: none (send at once).
    pub quiet_hours: Option<QuietHoursConfig>,
    /// Which credits customers get, per jurisdiction and service
    /// (`[[plan.compensation.rules]]`; see `transforms::compensate`).
    /// Default: the monthly fee prorated by the outage, for everyone.
    pub compensation: CompensationConfig,
    /// Incidents whose cause contains one of these (any case) are force
    /// majeure, which the regulated rules treat differently (e.g. Spain's
    /// art. 15 pays only the prorated fee). Default: none.
    pub force_majeure_causes: Vec<String>,
    /// A "down" fan-out to more customers than this waits for a NOC
    /// operator's approval (`POST /v1/incidents/{id}/approve`, after a look
    /// at `…/preview`); the IVR announcement does not wait. Default: none
    /// (never wait).
    pub approve_above_customers: Option<u64>,
}

/// When SMS notices must not wake customers, in each customer's local time
/// (their postcode's zone). E-mail is not held: it wakes nobody.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHoursConfig {
    /// Local time quiet hours begin, `HH:MM`. Default `21:00`.
    pub start: chrono::NaiveTime,
    /// Local time they end (the next day's when earlier than `start`),
    /// `HH:MM`. Default `08:00`.
    pub end: chrono::NaiveTime,
    /// A severe incident is told at once, night or not: one whose told
    /// postcodes hold at least this many customers. Default 100000.
    pub severe_customers: u64,
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        QuietHoursConfig {
            start: chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap_or_default(),
            end: chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
            severe_customers: 100_000,
        }
    }
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            ivr_region_prefix: 3,
            default_language: "en".into(),
            data_grant_grace: Duration::from_secs(24 * 3600),
            credit_min_outage: Duration::from_secs(3600),
            operator_name: "Example Telecom".into(),
            status_url: "https://status.example.net".into(),
            templates: None,
            sms_max_segments: 2,
            default_timezone: "UTC".into(),
            compensation_promise: true,
            quiet_hours: None,
            compensation: CompensationConfig::default(),
            force_majeure_causes: Vec::new(),
            approve_above_customers: None,
        }
    }
}

/// Where actions go. Without `sms` providers or `email`, notices go to the
/// JSONL outboxes only (the demo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Directory of the JSONL outboxes (sms, email, ivr, data_grant,
    /// credits) and of `deliveries.jsonl`, the record of every send.
    /// Sent notices are journalled here too: it is what makes a restart
    /// re-send nothing. Default `out`.
    pub outbox_dir: PathBuf,
    /// SMS providers, tried in order: the next takes over while one keeps
    /// failing. Default none.
    pub sms: Vec<SmsProviderConfig>,
    /// The SMTP relay. Default none.
    pub email: Option<SmtpConfig>,
    /// Retries of retriable failures.
    pub retry: RetryConfig,
    /// Notices the dispatcher has in flight at once, in lanes by customer
    /// (one customer's notices stay in order). Also the most a crash can
    /// re-send: each lane has at most one notice sent and not yet
    /// journalled. Default 64.
    pub concurrency: usize,
    /// Where to listen for Kannel's delivery reports (`GET /dlr`); the
    /// providers' `dlr_url` should point here. Default none (no reports).
    pub dlr_listen: Option<std::net::SocketAddr>,
    /// The IVR platform's HTTP API (`schemas/ivr-api.v1.openapi.json`).
    /// Default none: IVR upserts go to `ivr.jsonl`.
    pub ivr: Option<crate::sinks::ivr::IvrApiConfig>,
    /// The data-grant provisioning API
    /// (`schemas/provisioning-api.v1.openapi.json`). Default none: grants
    /// and revokes go to `data_grant.jsonl`.
    pub provisioning: Option<crate::sinks::provision::ProvisioningConfig>,
    /// What outbound TLS (HTTPS to the SMS gateways, the IVR platform and
    /// the provisioning API; SMTP with STARTTLS or TLS) trusts.
    pub tls: TlsConfig,
}

/// The roots outbound TLS trusts (`crate::tls`): the built-in Mozilla
/// roots, plus a CA file's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// A PEM bundle of CA certificates trusted besides the built-in roots
    /// (an operator's private CA). Read at start-up; an unreadable file or
    /// one without a certificate is an error. Default: none.
    pub ca_file: Option<PathBuf>,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            outbox_dir: "out".into(),
            sms: vec![],
            email: None,
            retry: RetryConfig::default(),
            concurrency: 64,
            dlr_listen: None,
            ivr: None,
            provisioning: None,
            tls: TlsConfig::default(),
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub unsubscribe_url: Option<String>,
    pub unsubscribe_mailto: Option<String>,
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
        }
    }
}

/// Exponential backoff with full jitter, for retriable failures only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per message across all providers. Default 6.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    /// First backoff. Default 200ms.
    pub base: Duration,
    #[serde(with = "humantime_serde")]
    /// Longest backoff. Default 30s.
    pub max: Duration,
    /// Consecutive failures after which a provider is passed over for
    /// `cooldown`. Default 5.
    pub failover_after: u32,
    #[serde(with = "humantime_serde")]
    /// Default 30s.
    pub cooldown: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
            failover_after: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl Config {
    /// Defaults, then the TOML file (if given), then `OUTAGE_<SECTION>__<KEY>`
    /// variables. Only names with a `__` are configuration: every key is in
    /// a section, and `OUTAGE_CONFIG` is `outaged --config`'s, while
    /// `OUTAGE_SERVER`, `OUTAGE_TOKEN` and `OUTAGE_CA_FILE` are older names
    /// `outagectl` still reads: exporting them must not stop the daemon.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::figment(path, Self::env("OUTAGE_"))
    }

    fn env(prefix: &str) -> Env {
        Env::prefixed(prefix).filter(|k| k.as_str().contains("__")).split("__")
    }

    fn figment(path: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigError::Load(format!("{}: no such file", p.display())));
            }
            fig = fig.merge(Toml::file_exact(p));
        }
        let cfg: Config = fig.merge(env).extract().map_err(|e| ConfigError::Load(describe(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks serde cannot express.
    /// The probable-cause classifier: the standards' table plus the
    /// `[causes]` rules (a bad rule names its key).
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
        }
        if self.sinks.retry.max_attempts == 0 {
            return bad("sinks.retry.max_attempts", "must be at least 1");
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

/// figment's errors name the key (`for key "kafka.partitions"`); keep every
/// error of a chain so all bad keys are reported at once.
fn describe(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(body: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outage.toml");
        std::fs::write(&p, body).unwrap();
        Config::figment(Some(&p), Env::prefixed("OUTAGE_TEST_NOTHING_"))
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn only_sectioned_variables_are_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OUTAGE_JAILTEST_SERVER", "http://127.0.0.1:8080");
            jail.set_env("OUTAGE_JAILTEST_CA_FILE", "/nowhere.pem");
            jail.set_env("OUTAGE_JAILTEST_KAFKA__PARTITIONS", "3");
            let cfg = Config::figment(None, Config::env("OUTAGE_JAILTEST_")).map_err(|e| e.to_string())?;
            assert_eq!(cfg.kafka.partitions, 3);
            jail.set_env("OUTAGE_JAILTEST_KAFKA__PARTITONS", "3");
            let err = Config::figment(None, Config::env("OUTAGE_JAILTEST_")).unwrap_err().to_string();
            assert!(err.contains("partitons"), "a typo in a sectioned key is still an error: {err}");
            Ok(())
        });
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/outage.example.toml");
        let cfg = Config::figment(Some(&p), Env::prefixed("OUTAGE_TEST_NOTHING_")).unwrap();
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
        assert_eq!((ok.ingest.elements.len(), ok.refdata.elements), (1, Some(PathBuf::from("e.csv"))));
        let q = from_toml("[plan.quiet_hours]\nstart = \"22:30\"\n").unwrap().plan.quiet_hours.unwrap();
        assert_eq!((q.start.to_string(), q.end.to_string()), ("22:30:00".into(), "08:00:00".into()));
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
