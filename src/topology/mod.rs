//! Wires the stages into running tasks (Vector's "topology"):
//!
//! ```text
//! noc.alarms ─► [pipeline: decode → correlate → log → plan] ─► outage.incidents
//!                    │ bad records                 │ actions (keyed by customer)
//!                    ▼                             ▼
//!              noc.alarms.dlq               outage.actions ─► [dispatcher] ─► ActionSink
//!                                      IVR desired state ─► IvrSink
//! ```
//!
//! Owns the ordering rules that make restarts safe:
//! 1. incident events are acknowledged by the broker before the alarms that
//!    caused them are acknowledged (offsets committed only after the effect
//!    is in the incident log);
//! 2. a plan's actions are acknowledged on `outage.actions` before the
//!    `planned` event that records them is appended, so a crash in between
//!    re-plans the same deterministic action ids and the sinks drop them;
//! 3. on start, incidents are rebuilt by folding the incident log, and every
//!    incident whose effects may be unfinished is re-planned.
//!
//! Time and shutdown are parameters ([`crate::runtime::Clock`],
//! [`crate::runtime::Shutdown`]).
//!
//! The folder: [`pipeline`] (alarms → incident log → actions, the IVR and
//! the NOC API's commands), [`dispatch`] (actions → sinks), and here the
//! error and the wiring of a process's role.
use crate::config::Config;
use crate::kafka::{Broker, BrokerError};
use crate::model::Action;
use crate::refdata::RefData;
use crate::runtime::{Clock, Shutdown, Stats};
use crate::sinks::deliveries::DeliveryLog;
use crate::sinks::SinkError;
use crate::sources::kafka::KafkaSource;
use crate::sources::SourceError;
use crate::transforms::correlate::CorrelateError;
use std::sync::Arc;

pub mod commands;
pub mod dispatch;
pub mod leadership;
pub mod pipeline;

use dispatch::count;
pub use dispatch::Dispatcher;
pub use pipeline::Pipeline;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Produce(#[from] crate::kafka::ProduceError),
    #[error("incident log: {0}")]
    Log(#[from] CorrelateError),
    #[error(transparent)]
    Templates(#[from] crate::transforms::templates::TemplateError),
    #[error("incident log record at {partition}/{offset} is not an incident event: {message}")]
    BadLogRecord { partition: i32, offset: i64, message: String },
    #[error("delivery-report endpoint: {0}")]
    Dlr(std::io::Error),
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the incident-log writer stopped")]
    LogWriterStopped,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// This correlator lost the leadership (`topology::leadership`): it
    /// stops, and its supervisor restarts it as a standby.
    #[error("no longer the leading correlator: {0}")]
    Deposed(String),
    #[error("NOC API on {0}: {1}")]
    Api(std::net::SocketAddr, std::io::Error),
}

impl From<crate::runtime::InvalidSetting> for TopologyError {
    fn from(e: crate::runtime::InvalidSetting) -> Self {
        TopologyError::Config(e.into())
    }
}

/// What one `outaged` process runs (`--role`). Every role reads the same
/// configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Everything in one process (the default; the demo).
    #[default]
    All,
    /// Alarms → incident log → actions, the IVR, and the NOC commands of
    /// every process's API — while elected (`leadership`): run two or more,
    /// one leads and the others stand by, following the log.
    Correlator,
    /// `outage.actions` → SMS, e-mail, grants, credits; delivery reports.
    /// Any number share the actions topic's partitions. Serves only
    /// `/healthz`, `/readyz` and `/metrics` on `api.listen`.
    Dispatcher,
    /// The NOC API's read side and `/status`, from a fold of the incident
    /// log it follows; writes nothing itself: commands go to the leading
    /// correlator through `outage.commands` (`commands`).
    Api,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::All, Role::Correlator, Role::Dispatcher, Role::Api];

    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Correlator => "correlator",
            Role::Dispatcher => "dispatcher",
            Role::Api => "api",
        }
    }

    fn correlates(self) -> bool {
        matches!(self, Role::All | Role::Correlator)
    }

    fn dispatches(self) -> bool {
        matches!(self, Role::All | Role::Dispatcher)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
            format!("unknown role `{s}`; one of: {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Start the whole daemon on `broker` with local outbox sinks, and run until
/// shutdown or the first task error: [`run_role`] with [`Role::All`].
pub async fn run(
    cfg: &Config,
    broker: &Broker,
    refdata: Arc<RefData>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), TopologyError> {
    run_role(Role::All, cfg, broker, refdata, clock, stats, shutdown).await
}

/// Run `role`'s tasks until shutdown or the first task error.
pub async fn run_role(
    role: Role,
    cfg: &Config,
    broker: &Broker,
    refdata: Arc<RefData>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), TopologyError> {
    use crate::sinks::billing::BillingCredits;
    use crate::sinks::notify::Notifier;
    use crate::sinks::outbox::Outbox;
    use crate::sinks::provision::Provisioner;
    use crate::sinks::route::Routes;
    tracing::info!(role = role.name(), "starting");
    // What outbound TLS trusts, read once for every HTTP and SMTP client.
    let trust = crate::tls::Trust::load(cfg.sinks.tls.ca_file.as_deref(), "sinks.tls.ca_file")
        .map_err(crate::runtime::InvalidSetting::from)?;
    if trust.extra_roots() > 0 {
        tracing::info!(
            extra_roots = trust.extra_roots(),
            "outbound TLS trusts sinks.tls.ca_file besides the built-in roots"
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    // The HTTP listener: bound first, so a taken port fails the start, not
    // later. The NOC API where incidents are (correlator, api); only the
    // probes and metrics on a dispatcher.
    let mut api_side = None;
    // The API's command channel into the pipeline, for the leader's relay.
    let mut into_pipeline = None;
    if let Some(addr) = cfg.api.listen {
        let (side, commands, snapshots) = crate::api::channels();
        into_pipeline = Some(commands.clone());
        let now_clock = clock.clone();
        let state = Arc::new(crate::api::ApiState::new(
            cfg.api_settings(),
            refdata.clone(),
            commands,
            snapshots,
            stats.clone(),
            Box::new(move || now_clock.now()),
        )?);
        let router = match role {
            Role::Dispatcher => {
                // Ready once the actions consumer is connected.
                let _ = side.snapshots.send(Arc::new(crate::api::Snapshot { ready: true, incidents: vec![] }));
                crate::api::ops_router(state)
            }
            _ => crate::api::router(state),
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| TopologyError::Api(addr, e))?;
        tracing::info!(%addr, tokens = cfg.api.tokens.len(), role = role.name(), "HTTP API listening");
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            crate::api::serve_router(listener, router, shutdown).await.map_err(|e| TopologyError::Api(addr, e))
        });
        api_side = Some(side);
    }
    if matches!(role, Role::Api | Role::Correlator) {
        let mut follower = Pipeline::new(
            cfg,
            broker,
            refdata.clone(),
            pipeline::NoSource,
            pipeline::NoIvr,
            clock.clone(),
            stats.clone(),
        )?;
        if let Some(side) = api_side.take() {
            follower = follower.with_api(side);
        }
        let forward = commands::Forwarder::start(broker, &cfg.kafka.topics.commands, shutdown.clone())?;
        if role == Role::Api {
            let broker = broker.clone();
            tasks.spawn(async move {
                follower.follow_until(&broker, shutdown, std::future::pending(), forward).await.map(drop)
            });
            return join(tasks).await;
        }
        // A standby until elected (`leadership`), then the one writer.
        let election =
            leadership::Election::join(broker, &cfg.kafka.group_id, &cfg.kafka.topics.control, shutdown.clone())?;
        tracing::info!(member = election.member(), "correlator standing by for election");
        let Some(pipeline::Followed { side, fence, read }) =
            follower.follow_until(broker, shutdown.clone(), election.elected(), forward).await?
        else {
            return Ok(());
        };
        let me = leadership::LeaderId { epoch: fence.next_epoch(), member: election.member().to_string() };
        let partitions = broker.partitions(&cfg.kafka.topics.incidents)?;
        if partitions != 1 {
            return Err(TopologyError::Config(crate::config::ConfigError::Invalid {
                key: "kafka.topics.incidents".into(),
                message: format!(
                    "`{}` has {partitions} partitions; --role correlator fences the log by its order and needs 1",
                    cfg.kafka.topics.incidents
                ),
            }));
        }
        let marks = broker.batch_producer()?;
        let record = leadership::mark(&me, clock.now());
        marks
            .produce_acked(&cfg.kafka.topics.incidents, &[record], |_| "leader", |r, buf| buf.extend_from_slice(r))
            .await?;
        tracing::warn!(leader = %me, "elected: this process correlates");
        // Commands from the other processes' APIs, into the same channel.
        let (side, into_pipeline) = match (side, into_pipeline) {
            (Some(side), Some(tx)) => (side, tx),
            _ => {
                let (side, tx, _) = crate::api::channels();
                (side, tx)
            }
        };
        let parts = Parts { cfg, broker, trust: &trust, clock: &clock, stats: &stats, shutdown: &shutdown };
        start_pipeline(parts, refdata, Some(side), Some(me.clone()), &mut tasks).await?;
        let (b, group, topic, now) =
            (broker.clone(), cfg.kafka.group_id.clone(), cfg.kafka.topics.commands.clone(), clock.clone());
        tasks.spawn(commands::relay(b, group, topic, into_pipeline, move || now.now(), shutdown.clone()));
        let mut joined = std::pin::pin!(join(tasks));
        // The log's marks from where the standby's fold stopped (its own
        // mark, then any successor's), not the whole log again.
        let log = KafkaSource::tail(broker, &cfg.kafka.topics.incidents, &read)?.with_stage("fence");
        let superseded = leadership::superseded(log, fence, me.clone());
        return tokio::select! {
            r = &mut joined => r,
            // A successor's mark: whatever the group says, this process
            // no longer writes anything anyone reads.
            r = superseded => match r {
                Ok(by) => Err(TopologyError::Deposed(format!("the incident log names {by} as its writer"))),
                Err(e) => Err(e.into()),
            },
            // Leaving the group on shutdown takes the leadership too.
            _ = election.deposed() => match shutdown.is_requested() {
                true => joined.await,
                false if election.session_lost() => Err(TopologyError::Deposed(
                    "its election session expired (paused or cut off); what it wrote since is fenced".into(),
                )),
                false => Err(TopologyError::Deposed("the group assigned the leadership elsewhere".into())),
            },
        };
    }
    if role.correlates() {
        let parts = Parts { cfg, broker, trust: &trust, clock: &clock, stats: &stats, shutdown: &shutdown };
        start_pipeline(parts, refdata.clone(), api_side.take(), None, &mut tasks).await?;
    }
    // A dispatcher alone reports its consumer's connections (`/readyz`).
    let alone = role == Role::Dispatcher;
    if role.dispatches() {
        let topic = (broker.producer()?, cfg.kafka.topics.deliveries.clone());
        let log = Arc::new(DeliveryLog::open(&cfg.sinks.outbox_dir, Some(topic))?);
        if let Some(addr) = cfg.sinks.dlr_listen {
            use crate::sources::dlr;
            let listener = dlr::bind(addr).await.map_err(TopologyError::Dlr)?;
            let (log, shutdown) = (log.clone(), shutdown.clone());
            tasks.spawn(async move { dlr::serve(listener, log, shutdown).await.map_err(TopologyError::Dlr) });
        }
        // Data grants to the provisioning API when configured. A dispatcher
        // lane waits for its grant's batch, so a batch never holds more than
        // `concurrency` grants: that is the batch size that goes at once.
        let grants = match &cfg.sinks.provisioning {
            Some(p) => {
                let p = crate::sinks::provision::ProvisioningConfig {
                    batch_size: p.batch_size.min(cfg.sinks.concurrency.max(1)),
                    ..p.clone()
                };
                Some(
                    Provisioner::open(&cfg.sinks.outbox_dir, p, &trust)?
                        .with_log(log.clone())
                        .with_clock(clock.clone()),
                )
            }
            None => None,
        };
        let ledger = cfg.kafka.topics.ledger.clone();
        let credits = BillingCredits::open(
            &cfg.sinks.outbox_dir,
            broker.producer()?,
            cfg.kafka.topics.credits.clone(),
            ledger.clone(),
            Some(ledger_reader(broker.clone(), ledger)),
        )?;
        // Notices through the configured gateways, or all to the outboxes.
        match Notifier::from_config(&cfg.sinks, &trust, log.clone())? {
            Some(notices) => {
                // Parked notices are settled by the notifier's retry loops.
                let (st, ck, now) = (stats.clone(), clock.clone(), clock.clone());
                let settled = move |a: &Action, d| drop(count(&st, a, Ok(d), ck.now()));
                notices.start(move || now.now(), settled, shutdown.clone());
                let sink = Routes { notices, grants, credits };
                tasks
                    .spawn(Dispatcher::new(broker, cfg, sink, log, clock, stats)?.reporting_health(alone).run(shutdown))
            }
            None => {
                let sink = Routes { notices: Outbox::open(&cfg.sinks.outbox_dir)?, grants, credits };
                tasks
                    .spawn(Dispatcher::new(broker, cfg, sink, log, clock, stats)?.reporting_health(alone).run(shutdown))
            }
        };
    }
    join(tasks).await
}

/// What starting a stage takes of the process.
struct Parts<'a> {
    cfg: &'a Config,
    broker: &'a Broker,
    trust: &'a crate::tls::Trust,
    clock: &'a Arc<dyn Clock>,
    stats: &'a Arc<Stats>,
    shutdown: &'a Shutdown,
}

/// The pipeline on the alarms, with the IVR platform's API (re-asserted by
/// a reconcile loop) or the IVR outbox, and the NOC API's channels; the
/// log folded before it runs. `leader`: the leadership it writes as.
async fn start_pipeline(
    p: Parts<'_>,
    refdata: Arc<RefData>,
    api_side: Option<crate::api::PipelineSide>,
    leader: Option<leadership::LeaderId>,
    tasks: &mut tokio::task::JoinSet<Result<(), TopologyError>>,
) -> Result<(), TopologyError> {
    use crate::sinks::ivr::{reconcile_loop, HttpIvr};
    use crate::sinks::outbox::IvrOutbox;
    let Parts { cfg, broker, trust, clock, stats, shutdown } = p;
    let source = KafkaSource::subscribe(broker, &cfg.kafka.group_id, &cfg.kafka.topics.alarms)?
        .with_stage("alarms")
        .reporting_to(stats.clone());
    macro_rules! start {
        ($ivr:expr) => {{
            let mut pipeline = Pipeline::new(cfg, broker, refdata, source, $ivr, clock.clone(), stats.clone())?;
            if let Some(l) = leader {
                pipeline = pipeline.leading(l);
            }
            if let Some(side) = api_side {
                pipeline = pipeline.with_api(side);
            }
            pipeline.restore(broker).await?;
            tasks.spawn(pipeline.run(shutdown.clone()));
        }};
    }
    match &cfg.sinks.ivr {
        Some(api) => {
            let ivr = Arc::new(tokio::sync::Mutex::new(HttpIvr::new(api.clone(), trust)?));
            start!(ivr.clone());
            let (every, clock, shutdown) = (api.reconcile_every, clock.clone(), shutdown.clone());
            tasks.spawn(async move {
                reconcile_loop(ivr, every, move || clock.now(), shutdown).await;
                Ok(())
            });
        }
        None => start!(IvrOutbox::open(&cfg.sinks.outbox_dir)?),
    }
    Ok(())
}

/// Wait for every task; the first error ends the daemon.
async fn join(mut tasks: tokio::task::JoinSet<Result<(), TopologyError>>) -> Result<(), TopologyError> {
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.map_err(TopologyError::from).and_then(|r| r) {
            tasks.abort_all();
            return Err(e);
        }
    }
    Ok(())
}

/// Reads the compensation ledger's records of some partitions back from
/// its topic (an undecodable record is logged by position and skipped).
fn ledger_reader(broker: Broker, topic: String) -> crate::sinks::billing::LedgerReader {
    Arc::new(move |parts: &[i32]| {
        let mut out = Vec::new();
        crate::kafka::read_to_end(
            &broker,
            &topic,
            std::time::Duration::from_millis(300),
            |partition, offset, bytes| {
                // No partitions known: every record (a reader that cannot say).
                if !parts.is_empty() && !parts.contains(&partition) {
                    return;
                }
                match serde_json::from_slice::<crate::transforms::ledger::LedgerRecord>(bytes) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::error!(partition, offset, error = %e, "undecodable ledger record skipped"),
                }
            },
        )
        .map_err(|source| SinkError::Read { topic: topic.clone(), source: Box::new(source) })?;
        Ok(out)
    })
}
