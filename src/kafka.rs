//! The Kafka edge: which cluster we talk to, the topics we need on it, and
//! the client settings every producer and consumer shares.
//!
//! With no `kafka.bootstrap` configured, [`Broker::connect`] starts
//! librdkafka's in-process mock cluster (bundled in `rdkafka`), sets its
//! group initial rebalance delay to 0 and creates the topics through the mock
//! API (the mock has no CreateTopics). With a bootstrap, missing topics are
//! created through the admin API and existing ones are left alone.
//!
//! Facts this module relies on (DESIGN.md, scripts/kafka_smoke.py): the mock
//! drops the oldest batches beyond ~5 MiB per partition, and Tansu reports a
//! wrong LATEST offset after multi-record batches, so readers never trust a
//! high watermark alone (see [`read_to_end`]).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureProducer, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The correlators' election (`outage.control`, no records): the
    /// `--role correlator` process assigned its partition 0 correlates
    /// (`topology::leadership`).
    pub control: String,
    /// NOC commands from any process's API to the leading correlator, and
    /// its answers (`outage.commands`; `topology::commands`).
    pub commands: String,
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
            control: "outage.control".into(),
            commands: "outage.commands".into(),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&str; 9] {
        [
            &self.alarms,
            &self.dlq,
            &self.incidents,
            &self.actions,
            &self.credits,
            &self.deliveries,
            &self.control,
            &self.commands,
            &self.ledger,
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("kafka: {context}: {source}")]
    Kafka { context: String, source: KafkaError },
    #[error("kafka: could not start the embedded mock cluster")]
    Embedded,
    #[error("kafka: creating topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
    /// librdkafka refused a property (unknown, or a bad value). The value
    /// is left out: it may be a secret.
    #[error("config: `kafka.client.\"{key}\"`: {message}")]
    Property { key: String, message: String },
    /// librdkafka accepted each property but not the client they make
    /// (an SSL file it cannot read, a SASL mechanism it lacks, missing
    /// credentials). `keys`: the `kafka.client` entries its words point at.
    #[error("config: `kafka.client{keys}`: librdkafka cannot make a client: {message}")]
    Client { keys: String, message: String },
}

fn ctx(context: impl Into<String>) -> impl FnOnce(KafkaError) -> BrokerError {
    let context = context.into();
    move |source| match source {
        KafkaError::ClientConfig(_, message, key, _value) => BrokerError::Property { key, message },
        source => BrokerError::Kafka { context, source },
    }
}

/// The largest message our producers send: librdkafka's
/// `message.max.bytes`, set explicitly on every producer (after the
/// operator's `kafka.client` properties, so it always holds). Kafka
/// brokers accept 1 048 588 bytes by default, Tansu more.
pub const MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The largest key + value handed to a producer: [`MESSAGE_MAX_BYTES`]
/// less room for the record's and the batch's framing. Every record is
/// checked against it before it is produced ([`check_record`]).
pub const RECORD_MAX_BYTES: usize = MESSAGE_MAX_BYTES - 16 * 1024;

/// Why a record was not produced.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Refused before producing: it would never fit.
    #[error("a record for {topic} ({what}) is {bytes} bytes, above the {limit}-byte record limit")]
    TooLarge { topic: String, what: String, bytes: usize, limit: usize },
    /// The broker or librdkafka refused it for good (see [`is_transient`]).
    #[error("producing to {topic}: {source}")]
    Kafka { topic: String, source: KafkaError },
}

/// Refuse a record that would exceed [`RECORD_MAX_BYTES`], naming it.
pub fn check_record(
    topic: &str,
    what: impl FnOnce() -> String,
    key: &[u8],
    payload: &[u8],
) -> Result<(), ProduceError> {
    let bytes = key.len() + payload.len();
    if bytes > RECORD_MAX_BYTES {
        return Err(ProduceError::TooLarge { topic: topic.into(), what: what(), bytes, limit: RECORD_MAX_BYTES });
    }
    Ok(())
}

/// Whether librdkafka's error code is transient: the brokers, the network
/// or the cluster's leadership will likely change and the same request
/// then succeed. Everything else (authentication, authorization, unknown
/// topics, invalid configuration, a record too large, the idempotent
/// producer's fatal states) is permanent: retrying cannot help, and the
/// process says so and stops. The one place this is decided.
pub fn code_is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        // Local: the connection, the brokers, timeouts, queues.
        BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | MessageTimedOut
            | OperationTimedOut
            | TimedOutQueue
            | QueueFull
            | WaitingForCoordinator
            | WaitCache
            | InProgress
            | PreviousInProgress
            | Retry
            | Interrupted
            | NodeUpdate
            | ISRInsufficient
            | PollExceeded
            | AssignmentLost
            | Outdated
            | DestroyBroker
            | BrokerDestroy
            | UnknownBroker
            // The broker's: leadership moving, replicas catching up,
            // coordinators loading, group membership changing.
            | LeaderNotAvailable
            | NotLeaderForPartition
            | RequestTimedOut
            | BrokerNotAvailable
            | ReplicaNotAvailable
            | NetworkException
            | CoordinatorLoadInProgress
            | CoordinatorNotAvailable
            | NotCoordinator
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | NotController
            | IllegalGeneration
            | UnknownMemberId
            | RebalanceInProgress
            | MemberIdRequired
            | KafkaStorageError
            | FetchSessionIdNotFound
            | InvalidFetchSessionEpoch
            | FencedLeaderEpoch
            | UnknownLeaderEpoch
            | OffsetNotAvailable
            | PreferredLeaderNotAvailable
            | EligibleLeadersNotAvailable
            | UnstableOffsetCommit
            | ThrottlingQuotaExceeded
            | ConcurrentTransactions
            | StaleBrokerEpoch
            | ReassignmentInProgress
    )
}

/// Whether `e` is transient ([`code_is_transient`]); an error without a
/// librdkafka code (configuration, client creation, a cancelled request)
/// is not, except a wait that simply saw no message.
pub fn is_transient(e: &KafkaError) -> bool {
    match e {
        KafkaError::NoMessageReceived => true,
        KafkaError::MessageConsumptionFatal(_) => false,
        e => e.rdkafka_error_code().is_some_and(code_is_transient),
    }
}

/// Capped, jittered exponential backoff for retrying Kafka operations:
/// the n-th wait is uniform in [cap/2, cap] of min(`MAX`, 100 ms × 2ⁿ).
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// The next wait (and count the attempt).
    pub fn next_delay(&mut self) -> Duration {
        let cap = Self::FIRST.saturating_mul(1 << self.attempt.min(10)).min(Self::MAX);
        self.attempt = self.attempt.saturating_add(1);
        cap.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Transient Kafka errors retried, by stage (`alarms`, `actions`, a topic
/// produced to, …): process-wide, for `/metrics`
/// (`outage_kafka_retries_total{stage}`).
static RETRIES: std::sync::Mutex<std::collections::BTreeMap<String, RetryCount>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

#[derive(Debug, Clone, Copy)]
struct RetryCount {
    total: u64,
    /// When the last log line about this stage was written, and the total then.
    logged: Option<(Instant, u64)>,
}

/// How often a stage's retries are logged at most.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(10);

/// Count a transient error at `stage` and say so (at most once per
/// [`RETRY_LOG_EVERY`] per stage, with the count since the last line).
pub fn note_retry(stage: &str, e: &dyn std::fmt::Display) {
    let mut all = RETRIES.lock().unwrap_or_else(|p| p.into_inner());
    let c = all.entry(stage.to_string()).or_insert(RetryCount { total: 0, logged: None });
    c.total += 1;
    let due = c.logged.is_none_or(|(at, _)| at.elapsed() >= RETRY_LOG_EVERY);
    if due {
        let since = c.total - c.logged.map_or(0, |(_, n)| n);
        tracing::warn!(stage, error = %e, retries = since, "Kafka unavailable: retrying (transient error)");
        c.logged = Some((Instant::now(), c.total));
    }
}

/// Transient Kafka errors retried so far, by stage.
pub fn retries() -> Vec<(String, u64)> {
    RETRIES.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, c)| (k.clone(), c.total)).collect()
}

/// Make one client of every kind the daemon makes (its producers, a group
/// consumer, the admin client) from `cfg`, without `bootstrap.servers`, and
/// drop them: librdkafka checks every property — names, values, the
/// security protocol and SASL mechanism this build supports, SSL files,
/// SASL settings — without connecting anywhere. `outaged --check` runs it.
pub fn check_clients(cfg: &KafkaConfig) -> Result<(), BrokerError> {
    // A creation error is librdkafka's sentence; name the properties it
    // mentions, by name or by value (never repeating a value ourselves).
    let ctx = |context: &'static str| {
        move |e: KafkaError| match e {
            KafkaError::ClientCreation(message) => {
                let named: Vec<String> = cfg
                    .client
                    .iter()
                    .filter(|(k, v)| message.contains(k.as_str()) || (v.len() >= 3 && message.contains(v.as_str())))
                    .map(|(k, _)| format!(".\"{k}\""))
                    .collect();
                BrokerError::Client { keys: named.join("`, `kafka.client"), message }
            }
            e => ctx(context)(e),
        }
    };
    let broker = Broker { bootstrap: String::new(), client: cfg.client.clone().into_iter().collect(), embedded: None };
    let offline = |mut c: ClientConfig| {
        c.remove("bootstrap.servers");
        c
    };
    let mut gapless = offline(broker.producer_config());
    gapless.set("enable.gapless.guarantee", "true");
    let _: BaseProducer<Offline> = gapless.create_with_context(Offline).map_err(ctx("checking the producer"))?;
    let consumer = offline(broker.consumer_config(&cfg.group_id));
    let _: BaseConsumer<Offline> = consumer.create_with_context(Offline).map_err(ctx("checking the group consumer"))?;
    let admin = offline(broker.base_config());
    let _: AdminClient<Offline> = admin.create_with_context(Offline).map_err(ctx("checking the admin client"))?;
    Ok(())
}

/// [`check_clients`]' context: librdkafka's warnings about what the check
/// leaves out on purpose (no bootstrap, the gapless flag) are not shown.
struct Offline;

impl ClientContext for Offline {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "CONFWARN" && (message.contains("bootstrap.servers") || message.contains("enable.gapless.guarantee"))
        {
            return;
        }
        DefaultClientContext.log(level, fac, message)
    }
}

impl ProducerContext for Offline {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

impl rdkafka::consumer::ConsumerContext for Offline {}

/// librdkafka's mock cluster, alive as long as this value.
pub struct EmbeddedCluster {
    /// The client whose handle owns the cluster's threads; dropped last.
    _handle: BaseProducer,
    mock: *mut rdkafka_sys::rd_kafka_mock_cluster_t,
    bootstrap: String,
}

// SAFETY: librdkafka's mock cluster API is thread-safe (every call goes
// through the cluster's own ops queue), and the pointer is only destroyed in
// Drop, when no other reference can exist.
unsafe impl Send for EmbeddedCluster {}
unsafe impl Sync for EmbeddedCluster {}

impl EmbeddedCluster {
    pub fn start(brokers: i32) -> Result<Self, BrokerError> {
        let handle: BaseProducer = ClientConfig::new()
            // No bootstrap: this client only hosts the mock cluster.
            .set("log_level", "3")
            .create()
            .map_err(ctx("creating the mock cluster's host client"))?;
        // SAFETY: `handle` outlives `mock` (Drop destroys `mock` first).
        let mock = unsafe { rdkafka_sys::rd_kafka_mock_cluster_new(handle.client().native_ptr(), brokers) };
        if mock.is_null() {
            return Err(BrokerError::Embedded);
        }
        // SAFETY: `mock` is a live cluster; the returned string is owned by it.
        let bootstrap = unsafe {
            rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(mock, 0);
            CStr::from_ptr(rdkafka_sys::rd_kafka_mock_cluster_bootstraps(mock)).to_string_lossy().into_owned()
        };
        Ok(EmbeddedCluster { _handle: handle, mock, bootstrap })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Take the mock broker `id` (1-based) down — it drops its connections
    /// and refuses new ones — or bring it back: the fault the reliability
    /// tests inject.
    pub fn set_broker_up(&self, id: i32, up: bool) -> Result<(), BrokerError> {
        // SAFETY: `mock` is live; the call goes through the cluster's ops queue.
        let err = unsafe {
            if up {
                rdkafka_sys::rd_kafka_mock_broker_set_up(self.mock, id)
            } else {
                rdkafka_sys::rd_kafka_mock_broker_set_down(self.mock, id)
            }
        };
        if err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(BrokerError::Kafka {
                context: format!("mock broker {id} {}", if up { "up" } else { "down" }),
                source: KafkaError::MockCluster(err.into()),
            });
        }
        Ok(())
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), BrokerError> {
        let name = CString::new(topic)
            .map_err(|_| BrokerError::CreateTopic { topic: topic.into(), message: "contains NUL".into() })?;
        // SAFETY: `mock` is live; librdkafka copies the name.
        let err = unsafe { rdkafka_sys::rd_kafka_mock_topic_create(self.mock, name.as_ptr(), partitions, 1) };
        if err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(BrokerError::CreateTopic {
                topic: topic.into(),
                message: RDKafkaErrorCode::from(err).to_string(),
            });
        }
        Ok(())
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_mock_cluster_new, destroyed once, and
        // before `_handle` (field drop order runs after this body).
        unsafe { rdkafka_sys::rd_kafka_mock_cluster_destroy(self.mock) };
    }
}

/// The cluster the daemon talks to, with the shared client settings.
/// Cheap to clone; the embedded cluster lives until the last clone drops.
#[derive(Clone)]
pub struct Broker {
    bootstrap: String,
    /// Extra librdkafka properties from `kafka.client`.
    client: Vec<(String, String)>,
    /// Set when we run the embedded mock; keeps it alive.
    embedded: Option<std::sync::Arc<EmbeddedCluster>>,
}

impl Broker {
    /// Connect to `cfg.bootstrap`, or start the embedded cluster; then make
    /// sure every configured topic exists.
    pub async fn connect(cfg: &KafkaConfig) -> Result<Self, BrokerError> {
        let client = cfg.client.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let broker = match &cfg.bootstrap {
            None => {
                let embedded = EmbeddedCluster::start(1)?;
                for t in cfg.topics.all() {
                    embedded.create_topic(t, cfg.partitions)?;
                }
                tracing::info!(bootstrap = embedded.bootstrap(), "embedded Kafka (librdkafka mock cluster) started");
                Broker {
                    bootstrap: embedded.bootstrap().to_string(),
                    client,
                    embedded: Some(std::sync::Arc::new(embedded)),
                }
            }
            Some(b) => {
                let broker = Broker { bootstrap: b.clone(), client, embedded: None };
                broker.ensure_topics(&cfg.topics.all(), cfg.partitions, cfg.replication_factor).await?;
                broker
            }
        };
        Ok(broker)
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The embedded mock cluster, when that is what we run on.
    pub fn embedded(&self) -> Option<&EmbeddedCluster> {
        self.embedded.as_deref()
    }

    /// Create the topics that do not exist yet; existing ones are kept as
    /// they are (partitions included). While the brokers cannot be reached
    /// (a transient error, [`is_transient`]) it waits and tries again with
    /// [`Backoff`], saying so at most every 10 s: a daemon started while
    /// the brokers are down comes up when they do.
    pub async fn ensure_topics(&self, topics: &[&str], partitions: i32, replication: i32) -> Result<(), BrokerError> {
        if let Some(e) = &self.embedded {
            for t in topics {
                e.create_topic(t, partitions)?;
            }
            return Ok(());
        }
        let mut backoff = Backoff::default();
        let mut said: Option<std::time::Instant> = None;
        loop {
            match self.create_topics(topics, partitions, replication).await {
                // An admin operation's code is not `rdkafka_error_code`'s.
                Err(BrokerError::Kafka { context, source })
                    if is_transient(&source) || matches!(source, KafkaError::AdminOp(c) if code_is_transient(c)) =>
                {
                    if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(error = %source, context, "the brokers cannot create the topics yet; retrying");
                        said = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                r => return r,
            }
        }
    }

    async fn create_topics(&self, topics: &[&str], partitions: i32, replication: i32) -> Result<(), BrokerError> {
        let admin: AdminClient<DefaultClientContext> =
            self.base_config().create().map_err(ctx("creating the admin client"))?;
        let new: Vec<NewTopic> =
            topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication))).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin.create_topics(&new, &opts).await.map_err(ctx("CreateTopics"))? {
            match r {
                Ok(t) => tracing::info!(topic = t, partitions, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) if code_is_transient(e) => {
                    return Err(BrokerError::Kafka {
                        context: format!("creating topic {t}"),
                        source: KafkaError::AdminOp(e),
                    })
                }
                Err((t, e)) => return Err(BrokerError::CreateTopic { topic: t, message: e.to_string() }),
            }
        }
        Ok(())
    }

    /// bootstrap.servers plus the operator's `kafka.client` properties.
    pub fn base_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    /// An idempotent, acks=all producer: a retry never duplicates a record
    /// within a partition.
    /// How many partitions `topic` has, as the cluster says.
    pub fn partitions(&self, topic: &str) -> Result<usize, BrokerError> {
        let consumer: BaseConsumer = self.base_config().create().map_err(ctx("creating a metadata client"))?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(ctx("metadata"))?;
        Ok(md.topics().iter().map(|t| t.partitions().len()).sum())
    }

    /// Per partition of `topic`, the offset of its last record (-1: empty):
    /// where a reader that wants only what comes next starts after.
    pub fn ends(&self, topic: &str) -> Result<std::collections::HashMap<i32, i64>, BrokerError> {
        let consumer: BaseConsumer = self.base_config().create().map_err(ctx("creating a metadata client"))?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(ctx("metadata"))?;
        let mut ends = std::collections::HashMap::new();
        for p in md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())) {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).map_err(ctx("watermarks"))?;
            ends.insert(p, high - 1);
        }
        Ok(ends)
    }

    pub fn producer(&self) -> Result<FutureProducer, BrokerError> {
        self.producer_config().create().map_err(ctx("creating a producer"))
    }

    /// The same producer settings, for records acknowledged a batch at a
    /// time ([`BatchProducer`]), and gapless: the incident log's readers
    /// fold events by `seq`, so a record that failed for good while later
    /// ones of its partition succeeded would be a gap. With
    /// `enable.gapless.guarantee` librdkafka raises a fatal error instead,
    /// the write fails and the pipeline stops at that step. So that an
    /// outage of the brokers, however long, is no such failure, its
    /// records never time out (`message.timeout.ms` 0): the writer waits
    /// for the brokers to come back, holding the step's offsets.
    pub fn batch_producer(&self) -> Result<BatchProducer, BrokerError> {
        let mut c = self.producer_config();
        c.set("enable.gapless.guarantee", "true").set("message.timeout.ms", "0");
        let producer = c.create_with_context(BatchAcks).map_err(ctx("creating a producer"))?;
        Ok(BatchProducer { producer })
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "5");
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        // Ours, whatever `kafka.client` says: every record is checked
        // against it before producing (`check_record`).
        c.set("message.max.bytes", MESSAGE_MAX_BYTES.to_string());
        // Ours too: a dispatcher tells which customers a partition holds
        // with [`partition_of`], which must be this partitioner.
        c.set("partitioner", "consistent_random");
        c
    }

    /// Settings for a group consumer that commits only offsets it stored
    /// itself, after their effect is durable. `session.timeout.ms` 6000 keeps
    /// group joins at ~3 s on Tansu (20 s with the default).
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// The partition a record keyed `key` goes to among `partitions`, as our
/// producers place it (librdkafka's `consistent_random`, which every
/// producer here is set to: CRC-32 of the key modulo the count). What lets
/// a dispatcher tell the customers of its partitions from the others'.
pub fn partition_of(key: &[u8], partitions: usize) -> i32 {
    (crc32fast::hash(key) as u64 % partitions.max(1) as u64) as i32
}

/// Read every record of `topic` from the beginning, without a consumer
/// group, and return the payloads in per-partition order (partitions in
/// order). Stops once every partition has answered a fetch at its end
/// (partition EOF), reached its high watermark, and no record arrived for
/// `settle`: neither the watermark alone (Tansu under-reports it, and a
/// watermark queried before the first fetch can be stale) nor a quiet spell
/// before the first fetch answered is taken for the end, and everything
/// fetched is drained.
///
/// Reads uncommitted records: nothing here writes transactions, and a
/// `read_committed` reader (librdkafka's default) sees nothing past a
/// partition's last stable offset, which a transaction left open by
/// another producer (or a broker that mis-tracks it) holds back.
pub fn read_to_end(
    broker: &Broker,
    topic: &str,
    settle: Duration,
    f: impl FnMut(i32, i64, &[u8]),
) -> Result<u64, BrokerError> {
    read_from(broker, topic, None, settle, f)
}

/// [`read_to_end`] of some partitions only, each from the offset given
/// (`from`: partition → first offset; `None`: every partition from its
/// beginning).
pub fn read_from(
    broker: &Broker,
    topic: &str,
    from: Option<&std::collections::BTreeMap<i32, i64>>,
    settle: Duration,
    mut f: impl FnMut(i32, i64, &[u8]),
) -> Result<u64, BrokerError> {
    if from.is_some_and(|m| m.is_empty()) {
        return Ok(0);
    }
    let consumer: BaseConsumer<ReaderContext> = broker
        .base_config()
        .set("group.id", "outage-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_uncommitted")
        .create_with_context(ReaderContext)
        .map_err(ctx("creating a reader"))?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(ctx("metadata"))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .filter(|p| from.is_none_or(|m| m.contains_key(p)))
        .collect();
    let start = |p: i32| from.and_then(|m| m.get(&p)).copied().unwrap_or(0);
    let mut tpl = TopicPartitionList::new();
    let mut high = std::collections::HashMap::new();
    for &p in &parts {
        let at = if start(p) > 0 { Offset::Offset(start(p)) } else { Offset::Beginning };
        tpl.add_partition_offset(topic, p, at).map_err(ctx("assign"))?;
        let (_, h) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).map_err(ctx("watermarks"))?;
        high.insert(p, h);
    }
    consumer.assign(&tpl).map_err(ctx("assign"))?;
    let mut pos: std::collections::HashMap<i32, i64> = parts.iter().map(|&p| (p, start(p))).collect();
    let mut at_end: std::collections::HashSet<i32> = std::collections::HashSet::new();
    let mut n = 0;
    let mut last = Instant::now();
    loop {
        let fetched = at_end.len() == parts.len();
        let reached = pos.iter().all(|(p, o)| *o >= high[p]);
        if reached && last.elapsed() >= settle {
            if fetched {
                break;
            }
            // A broker that never says "end of partition": the watermark
            // and a long quiet spell will do.
            if last.elapsed() >= settle.max(Duration::from_secs(10)) {
                tracing::warn!(
                    topic,
                    partitions = parts.len(),
                    at_end = at_end.len(),
                    "reading to the end without end-of-partition from every partition"
                );
                break;
            }
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                pos.insert(m.partition(), m.offset() + 1);
                f(m.partition(), m.offset(), m.payload().unwrap_or_default());
                n += 1;
                last = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) if at_end.insert(p) => last = Instant::now(),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) if is_transient(&e) => note_retry("incident-log", &e),
            Some(Err(e)) => return Err(ctx("reading")(e)),
            None => {}
        }
    }
    Ok(n)
}

/// [`read_to_end`]'s client: an end of partition is what it waits for,
/// not an error to log.
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is what a reader waits for, not an error;
        // librdkafka reports it as a global error too.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        DefaultClientContext.error(error, reason)
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// Produce `(key, value)` records and wait until the broker acknowledged
/// every one. Records of one key keep their order (enqueued in order, one
/// chunk at a time, well below the producer queue's capacity).
///
/// Every record is checked against [`RECORD_MAX_BYTES`] first (nothing is
/// produced if one is too large). A record that fails with a transient
/// error ([`is_transient`]: the brokers gone, a timeout, a leader change)
/// is produced again after a capped, jittered backoff, counted in
/// [`retries`] under the topic's name, until it is acknowledged; only a
/// permanent error ends the call. A record retried after later ones of
/// its chunk were acknowledged can land after them: callers key their
/// records by idempotency keys, never by position.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, String)],
) -> Result<(), ProduceError> {
    use rdkafka::producer::FutureRecord;
    for (k, v) in records {
        check_record(topic, || format!("key {k}"), k.as_bytes(), v.as_bytes())?;
    }
    for chunk in records.chunks(10_000) {
        let mut todo: Vec<&(String, String)> = chunk.iter().collect();
        let mut backoff = Backoff::default();
        loop {
            let sends = todo
                .iter()
                .map(|(k, v)| producer.send(FutureRecord::to(topic).key(k).payload(v), Duration::from_secs(60)));
            let mut failed = Vec::new();
            let mut last = None;
            for (r, rec) in futures::future::join_all(sends).await.into_iter().zip(&todo) {
                if let Err((e, _)) = r {
                    if !is_transient(&e) {
                        return Err(ProduceError::Kafka { topic: topic.into(), source: e });
                    }
                    failed.push(*rec);
                    last = Some(e);
                }
            }
            let Some(e) = last else { break };
            note_retry(topic, &e);
            tokio::time::sleep(backoff.next_delay()).await;
            todo = failed;
        }
    }
    Ok(())
}

/// An idempotent producer whose records are produced and acknowledged a
/// batch at a time: one counter per batch instead of a channel and a future
/// per record (what [`produce_all`] costs), for the incident log's
/// thousands of records a step.
pub struct BatchProducer {
    producer: ThreadedProducer<BatchAcks>,
}

/// Counts a batch's acknowledgements down (librdkafka's polling thread
/// calls [`ProducerContext::delivery`] once per record).
pub struct BatchAcks;

/// One batch in flight: records not acknowledged yet (plus one while the
/// batch is still being enqueued), and the first failure.
pub struct BatchInFlight {
    left: AtomicUsize,
    failed: std::sync::Mutex<Option<KafkaError>>,
    done: tokio::sync::Notify,
}

impl BatchInFlight {
    fn settle_one(&self) {
        if self.left.fetch_sub(1, AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

impl ClientContext for BatchAcks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        // `enable.gapless.guarantee` is set on purpose (`batch_producer`);
        // librdkafka's "experimental" notice is no warning for operators.
        if fac == "CONFWARN" && message.contains("enable.gapless.guarantee") {
            tracing::debug!(target: "librdkafka", "{fac} {message}");
            return;
        }
        rdkafka::client::DefaultClientContext.log(level, fac, message)
    }
}

impl ProducerContext for BatchAcks {
    type DeliveryOpaque = Arc<BatchInFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<BatchInFlight>) {
        if let Err((e, _)) = result {
            batch.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.clone());
        }
        batch.settle_one();
    }
}

impl BatchProducer {
    /// Produce `(key, payload)` records to `topic` in order and wait until
    /// the broker acknowledged every one; the first failure is the error.
    /// A record above [`RECORD_MAX_BYTES`] fails the call before it is
    /// enqueued (records before it may be written: the caller stops).
    /// `payload` writes a record's value into the buffer it is given
    /// (reused; librdkafka copies it).
    pub async fn produce_acked<T>(
        &self,
        topic: &str,
        records: &[T],
        key: impl Fn(&T) -> &str,
        mut payload: impl FnMut(&T, &mut Vec<u8>),
    ) -> Result<(), ProduceError> {
        let failed = |source| ProduceError::Kafka { topic: topic.into(), source };
        let batch =
            Arc::new(BatchInFlight { left: AtomicUsize::new(1), failed: Default::default(), done: Default::default() });
        let mut buf = Vec::new();
        for r in records {
            buf.clear();
            payload(r, &mut buf);
            if let Err(e) = check_record(topic, || format!("key {}", key(r)), key(r).as_bytes(), &buf) {
                batch.settle_one(); // the enqueuing hold
                return Err(e);
            }
            batch.left.fetch_add(1, AcqRel);
            let mut rec = BaseRecord::with_opaque_to(topic, batch.clone()).key(key(r)).payload(&buf[..]);
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // Full of earlier records: let the broker take some.
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        batch.settle_one();
                        batch.settle_one(); // the enqueuing hold
                        return Err(failed(e));
                    }
                }
            }
        }
        batch.settle_one(); // every record is enqueued
        while batch.left.load(Acquire) > 0 {
            batch.done.notified().await;
        }
        let failed_with = batch.failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        failed_with.map_or(Ok(()), |e| Err(failed(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_client(props: &[(&str, &str)]) -> KafkaConfig {
        let client = props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KafkaConfig { client, ..Default::default() }
    }

    #[test]
    fn a_property_librdkafka_refuses_fails_the_check_naming_it() {
        let e = check_clients(&with_client(&[("bogus.prop", "1")])).unwrap_err().to_string();
        assert!(e.contains("kafka.client.\"bogus.prop\""), "{e}");
        let e = check_clients(&with_client(&[("security.protocol", "SASL_PLAINTEXTISH")])).unwrap_err().to_string();
        assert!(e.contains("kafka.client.\"security.protocol\""), "{e}");
        // A bad SSL file is found at client creation, and named by librdkafka.
        let e =
            check_clients(&with_client(&[("security.protocol", "SSL"), ("ssl.ca.location", "/nonexistent/ca.pem")]))
                .unwrap_err()
                .to_string();
        assert!(e.contains("ssl.ca.location"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partition_of_is_where_our_producers_put_a_key_whatever_kafka_client_says() {
        let mut cfg = with_client(&[("partitioner", "murmur2")]);
        cfg.bootstrap = None;
        let broker = Broker::connect(&cfg).await.unwrap();
        broker.ensure_topics(&["keys"], 5, 1).await.unwrap();
        let records: Vec<(String, String)> = (0..60).map(|i| (format!("C{i}"), format!("{i}"))).collect();
        produce_all(&broker.producer().unwrap(), "keys", &records).await.unwrap();
        let mut seen = Vec::new();
        read_to_end(&broker, "keys", Duration::from_millis(300), |p, _, v| {
            seen.push((String::from_utf8_lossy(v).into_owned(), p))
        })
        .unwrap();
        assert_eq!(seen.len(), 60);
        let spread: std::collections::BTreeSet<i32> = seen.iter().map(|(_, p)| *p).collect();
        assert_eq!(spread.len(), 5, "keys land on every partition");
        for (i, p) in seen {
            assert_eq!(partition_of(format!("C{i}").as_bytes(), 5), p, "key C{i}");
        }
    }

    #[test]
    fn this_build_has_ssl_and_sasl_scram_plain_and_oauthbearer() {
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
            let cfg = with_client(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "outaged"),
                ("sasl.password", "s3cret-never-shown"),
            ]);
            check_clients(&cfg).unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        }
        let oauth = with_client(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "true"),
            ("sasl.oauthbearer.config", "principal=outaged"),
        ]);
        check_clients(&oauth).unwrap();
        let ssl = with_client(&[("security.protocol", "SSL"), ("ssl.endpoint.identification.algorithm", "https")]);
        check_clients(&ssl).unwrap();
    }

    #[tokio::test]
    async fn every_compression_codec_round_trips() {
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            let mut cfg = with_client(&[("compression.type", codec)]);
            cfg.partitions = 1;
            check_clients(&cfg).unwrap_or_else(|e| panic!("{codec}: {e}"));
            let broker = Broker::connect(&cfg).await.unwrap();
            let p = broker.producer().unwrap();
            let body = format!("{codec} {}", "outage ".repeat(200));
            let rec = rdkafka::producer::FutureRecord::to("noc.alarms").key("k").payload(&body);
            p.send(rec, Duration::from_secs(5)).await.unwrap_or_else(|(e, _)| panic!("{codec}: {e}"));
            let mut got = vec![];
            read_to_end(&broker, "noc.alarms", Duration::from_millis(100), |_, _, b| got.push(b.to_vec())).unwrap();
            assert_eq!(got, vec![body.into_bytes()], "{codec}");
        }
    }

    /// The restart's fold reads every record: on every partition (one
    /// empty), records of an idempotent producer and of a transaction
    /// left open (a `read_committed` reader stops at the last stable
    /// offset), and only once each partition answered a fetch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_to_end_reads_every_record_written_even_of_an_open_transaction() {
        use rdkafka::producer::{FutureRecord, Producer};
        let cfg = KafkaConfig { partitions: 3, ..Default::default() };
        let broker = Broker::connect(&cfg).await.unwrap();
        let topic = cfg.topics.incidents.clone();
        let idem = broker.producer().unwrap();
        for i in 0..20 {
            let rec = FutureRecord::to(&topic).partition(i % 2).key("k").payload("x");
            idem.send(rec, Duration::from_secs(5)).await.unwrap();
        }
        let tx: FutureProducer = broker.producer_config().set("transactional.id", "read-to-end-test").create().unwrap();
        tx.init_transactions(Duration::from_secs(10)).unwrap();
        tx.begin_transaction().unwrap();
        for _ in 0..5 {
            tx.send(FutureRecord::to(&topic).partition(1).key("k").payload("open"), Duration::from_secs(5))
                .await
                .unwrap();
        }
        tx.flush(Duration::from_secs(5)).unwrap();
        let mut seen = Vec::new();
        let n =
            read_to_end(&broker, &topic, Duration::from_millis(200), |p, o, b| seen.push((p, o, b.to_vec()))).unwrap();
        assert_eq!(n, 25);
        assert_eq!(seen.iter().filter(|(_, _, b)| b == b"open").count(), 5);
        assert!(seen.iter().all(|(p, _, _)| *p < 2), "partition 2 is empty");
    }

    #[test]
    fn transient_and_permanent_errors_are_told_apart() {
        use RDKafkaErrorCode::*;
        for code in [
            AllBrokersDown,
            BrokerTransportFailure,
            MessageTimedOut,
            OperationTimedOut,
            RequestTimedOut,
            LeaderNotAvailable,
            NotLeaderForPartition,
            NotCoordinator,
            CoordinatorNotAvailable,
            NetworkException,
            QueueFull,
        ] {
            assert!(code_is_transient(code), "{code:?}");
            assert!(is_transient(&KafkaError::MessageConsumption(code)), "{code:?}");
            assert!(is_transient(&KafkaError::MessageProduction(code)), "{code:?}");
        }
        for code in [
            SaslAuthenticationFailed,
            Authentication,
            SSL,
            TopicAuthorizationFailed,
            GroupAuthorizationFailed,
            ClusterAuthorizationFailed,
            UnknownTopicOrPartition,
            UnknownTopic,
            MessageSizeTooLarge,
            InvalidConfig,
            Fatal,
            ProducerFenced,
        ] {
            assert!(!code_is_transient(code), "{code:?}");
            assert!(!is_transient(&KafkaError::MessageProduction(code)), "{code:?}");
        }
        assert!(!is_transient(&KafkaError::MessageConsumptionFatal(AllBrokersDown)));
        assert!(!is_transient(&KafkaError::ClientCreation("bad".into())));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Backoff::MAX), "{waits:?}");
        assert!(waits[19] >= Backoff::MAX / 2, "{waits:?}");
    }

    /// The broker down for 3 s with a 1 s message timeout: the record times
    /// out (transient), is produced again after a backoff, counted, and
    /// lands once. A record too large is refused before producing, named.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn produce_all_retries_through_an_outage_and_refuses_a_record_too_large() {
        let mut cfg = with_client(&[("message.timeout.ms", "1000")]);
        cfg.partitions = 1;
        cfg.topics.dlq = "retry.dlq".into();
        let broker = Broker::connect(&cfg).await.unwrap();
        let p = broker.producer().unwrap();
        let big = vec![("k".to_string(), "x".repeat(RECORD_MAX_BYTES))];
        match produce_all(&p, "retry.dlq", &big).await {
            Err(ProduceError::TooLarge { topic, bytes, .. }) => {
                assert_eq!((topic.as_str(), bytes), ("retry.dlq", RECORD_MAX_BYTES + 1))
            }
            other => panic!("{other:?}"),
        }
        let count = || retries().iter().find(|(s, _)| s == "retry.dlq").map_or(0, |(_, n)| *n);
        let before = count();
        broker.embedded().unwrap().set_broker_up(1, false).unwrap();
        let records = vec![("k".to_string(), "during the outage".to_string())];
        let send = tokio::spawn(async move { produce_all(&p, "retry.dlq", &records).await });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!send.is_finished());
        broker.embedded().unwrap().set_broker_up(1, true).unwrap();
        send.await.unwrap().unwrap();
        assert!(count() > before, "the timeout was retried and counted");
        let mut got = vec![];
        read_to_end(&broker, "retry.dlq", Duration::from_millis(200), |_, _, b| got.push(b.to_vec())).unwrap();
        assert_eq!(got, vec![b"during the outage".to_vec()]);
    }

    #[tokio::test]
    async fn embedded_cluster_creates_topics_and_round_trips() {
        let cfg = KafkaConfig { partitions: 3, ..Default::default() };
        let broker = Broker::connect(&cfg).await.unwrap();
        assert!(broker.is_embedded());
        assert!(broker.bootstrap().contains(':'), "{}", broker.bootstrap());
        let p = broker.producer().unwrap();
        for i in 0..10 {
            let body = format!("r{i}");
            let rec = rdkafka::producer::FutureRecord::to("outage.incidents").key("k").payload(&body);
            p.send(rec, Duration::from_secs(5)).await.unwrap();
        }
        let mut got = vec![];
        let n = read_to_end(&broker, "outage.incidents", Duration::from_millis(100), |_, _, b| {
            got.push(String::from_utf8(b.to_vec()).unwrap())
        })
        .unwrap();
        assert_eq!(n, 10);
        assert_eq!(got, (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>(), "one key keeps its order");
        let md = p.client().fetch_metadata(Some("noc.alarms"), Duration::from_secs(5)).unwrap();
        assert_eq!(md.topics()[0].partitions().len(), 3);
    }
}
