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
    /// The compensation ledger: each accrued entitlement of a rule with a
    /// period threshold and the credit it made due, keyed by customer
    /// (`outage.ledger`). Created with the actions topic's partition count
    /// (`kafka.partitions`), so it is co-partitioned with it.
    pub ledger: String,
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
            ledger: "outage.ledger".into(),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&str; 7] {
        [&self.alarms, &self.dlq, &self.incidents, &self.actions, &self.credits, &self.deliveries, &self.ledger]
    }
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
    /// With no ETR, a grant is provisioned until now plus this (the revoke
    /// at restoration ends it, a grace later); no end is quoted to the
    /// customer. With an ETR it lasts until the ETR plus the grace, and is
    /// extended whenever the ETR moves. Default 7d.
    #[serde(with = "humantime_serde")]
    pub data_grant_horizon: Duration,
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
    /// IANA zone of the IVR's fallback and of a postcode whose row names
    /// no zone and whose centroid lies in none (a postcode's own zone, or
    /// its centroid's, comes first). Default `UTC`.
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
    /// An approved incident whose audience grows past this many times the
    /// audience approved asks again (`approval_required` anew; what was
    /// told stays told, the rest waits). Default 2.
    pub reapprove_growth: u64,
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
            data_grant_horizon: Duration::from_secs(7 * 24 * 3600),
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
            reapprove_growth: 2,
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

/// Retriable failures (timeouts, refused connections, 5xx, 429, SMTP 4xx):
/// a few attempts in line, then the notice is parked (`parked_*.jsonl`) and
/// retried with capped exponential backoff until a gateway takes it, its
/// incident ends or `park_horizon` passes. Permanent refusals are final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in line (across providers) before a notice is parked for
    /// the retry loop. Default 2.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    /// First backoff. Default 200ms.
    pub base: Duration,
    #[serde(with = "humantime_serde")]
    /// Longest backoff (in line and parked). Default 30s.
    pub max: Duration,
    /// Consecutive retriable failures after which a provider is down:
    /// passed over while another is up, and its channel's notices parked
    /// while none is. Default 5.
    pub failover_after: u32,
    #[serde(with = "humantime_serde")]
    /// A down provider is tried again this long after its last failure
    /// while another one carries its traffic (failback). Default 30s.
    pub cooldown: Duration,
    #[serde(with = "humantime_serde")]
    /// How long a parked notice is retried before it is given up
    /// (`gave_up`, reason `park_horizon`). Default 6h.
    pub park_horizon: Duration,
    #[serde(with = "humantime_serde")]
    /// A notice that cannot get a sending slot on its channel within this
    /// is parked, so a slow channel never holds the action consumer (and
    /// with it the other channels). Default 1s.
    pub queue_after: Duration,
}

impl RetryConfig {
    /// `park_horizon`'s default.
    pub const PARK_HORIZON: Duration = Duration::from_secs(6 * 3600);
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 2,
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
            failover_after: 5,
            cooldown: Duration::from_secs(30),
            park_horizon: Self::PARK_HORIZON,
            queue_after: Duration::from_secs(1),
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
        assert_eq!((ok.ingest.elements.len(), ok.refdata.elements), (1, Some(PathBuf::from("e.csv"))));
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
