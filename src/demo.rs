//! `outaged demo`: the whole pipeline on a laptop. Starts the embedded
//! Kafka, loads the committed demo data (`data/demo/`), publishes a
//! simulated storm (event times in the recent past, so the backlog replays
//! in event time and the clears are already due), runs the daemon's
//! topology with a progress line, and prints a summary.
//!
//! Owns nothing the daemon does not: it is a driver around
//! [`crate::topology::run`] plus a publisher and a report.

use crate::config::Config;
use crate::kafka::{Broker, BrokerError};
use crate::model::Channel;
use crate::refdata::{RefData, RefDataError};
use crate::runtime::{Clock, Shutdown, ShutdownTrigger, Stats, SystemClock};
use crate::simulate::{self, ScenarioConfig};
use crate::sinks::outbox::Outbox;
use crate::topology::{self, TopologyError};
use chrono::Utc;
use rdkafka::producer::FutureRecord;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operator token the demo's API accepts when the config has none.
pub const DEMO_TOKEN: &str = "demo-operator-token";

pub struct DemoOptions {
    /// Where the outbox files, the scenario and its ground truth go.
    pub out: PathBuf,
    /// Print the summary and exit instead of running until Ctrl-C.
    pub exit_when_done: bool,
    pub seed: u64,
    /// Show a progress bar (off when stderr is not a terminal).
    pub progress: bool,
    /// `plan.data_grant_grace` for the demo: short, so revokes come due.
    pub grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    RefData(#[from] RefDataError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("simulating the storm: {0}")]
    Simulate(#[from] simulate::SimulateError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("publishing alarms: {0}")]
    Publish(rdkafka::error::KafkaError),
    #[error("the demo did not settle within {0:?}: {1}")]
    Stuck(Duration, String),
}

/// What the demo prints at the end (and tests assert on).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub alarms: u64,
    pub dead_lettered: u64,
    pub incidents: u64,
    pub declared: u64,
    /// The declared incidents' ids, sorted: the same alarms give the same
    /// ids, run after run (ARCHITECTURE.md, "The incidents are a function
    /// of the alarms alone").
    pub declared_ids: Vec<String>,
    pub ground_truth_incidents: usize,
    /// Customers reached per channel: SMS, e-mail, data grant, credit.
    pub sms: u64,
    pub email: u64,
    pub data_grant: u64,
    /// Unlimited-data grants and revokes carried out, and revokes still
    /// waiting for restoration + grace.
    pub grants: u64,
    pub revokes: u64,
    pub revokes_waiting: u64,
    pub credits: u64,
    /// A few credits as billing gets them, with their calculation.
    pub credit_examples: Vec<crate::model::Credit>,
    /// Sum of queued credits per currency.
    pub credits_total: Vec<crate::model::Money>,
    pub ivr_upserts: u64,
    /// Postcodes told "restored" before their incident resolved.
    pub restored_early: u64,
    /// Event time: first alarm → first declaration (the IVR flips then).
    pub detect_seconds: Option<i64>,
    /// Wall time: first alarm published → first IVR flip written.
    pub wall_to_ivr_ms: Option<u128>,
    /// Declaration → IVR announcement set, the slowest incident (ms), and
    /// how many incidents were measured.
    pub declare_to_ivr_max_ms: u64,
    pub declare_to_ivr_count: u64,
    /// Wall time: first alarm published → first SMS written.
    pub wall_to_sms_ms: Option<u128>,
    pub elapsed_ms: u128,
    pub out: PathBuf,
    pub bootstrap: String,
}

pub async fn run(
    mut cfg: Config,
    opts: DemoOptions,
    shutdown: Shutdown,
    trigger: ShutdownTrigger,
) -> Result<Summary, DemoError> {
    let t0 = Instant::now();
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| DemoError::Io { path, source }
    };
    cfg.sinks.outbox_dir = opts.out.clone();
    cfg.plan.data_grant_grace = opts.grace;
    // A NOC token for trying the API against the demo (loopback only).
    if cfg.api.tokens.is_empty() {
        cfg.api.tokens.push(crate::api::ApiToken {
            name: "demo-noc".into(),
            role: crate::api::Role::Operator,
            token: DEMO_TOKEN.into(),
        });
    }
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    Outbox::reset(&opts.out).map_err(io(&opts.out))?;

    let refdata = Arc::new(RefData::load(&cfg.refdata)?);
    tracing::info!(
        sites = refdata.sites.len(),
        postcodes = refdata.postcodes.len(),
        customers = refdata.customers.len(),
        "reference data loaded"
    );
    let broker = Broker::connect(&cfg.kafka).await?;
    eprintln!(
        "Kafka (embedded mock cluster) at {} — attach with: kcat -b {} -L",
        broker.bootstrap(),
        broker.bootstrap()
    );

    // A storm whose events all lie in the past: start 5 h 30 min ago at
    // least, on a 6-hour grid, so that runs within the same six hours
    // publish the very same alarms (event times included) and so get the
    // very same incident ids (`IncidentId::derive` hashes the time).
    let grid = 6 * 3600;
    let latest = (Utc::now() - chrono::Duration::minutes(330)).timestamp();
    let start = chrono::DateTime::from_timestamp(latest - latest.rem_euclid(grid), 0).unwrap_or_else(Utc::now);
    let scenario_cfg = ScenarioConfig { seed: opts.seed, start, ..Default::default() };
    let scenario = simulate::generate(&refdata.sites, &scenario_cfg)?;
    let truth_path = opts.out.join("truth.json");
    simulate::write_truth(&scenario.truth, std::fs::File::create(&truth_path).map_err(io(&truth_path))?)
        .map_err(io(&truth_path))?;
    let alarms_path = opts.out.join("alarms.jsonl");
    simulate::write_jsonl(&scenario.alarms, std::fs::File::create(&alarms_path).map_err(io(&alarms_path))?)
        .map_err(io(&alarms_path))?;

    let published_at = Instant::now();
    let producer = broker.producer()?;
    let payloads: Vec<(String, String)> =
        scenario.alarms.iter().map(|a| (a.site_id.clone(), serde_json::to_string(a).unwrap_or_default())).collect();
    let sends = payloads.iter().map(|(k, v)| {
        producer.send(FutureRecord::to(&cfg.kafka.topics.alarms).key(k).payload(v), Duration::from_secs(30))
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| DemoError::Publish(e))?;
    }
    let published = payloads.len() as u64;
    // The storm is on the topic before the daemon starts: a backlog, read
    // in whatever batches the fetches make, gives the same incidents every
    // run (the watermark orders it); a daemon idle while the storm is
    // being published would see its wall clock pass the storm's 5 h-old
    // event times and take every alarm as late.
    let stats = Arc::new(Stats::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let daemon = {
        let (cfg, stats, shutdown, broker) = (cfg.clone(), stats.clone(), shutdown.clone(), broker.clone());
        let refdata = refdata.clone();
        tokio::spawn(async move { topology::run(&cfg, &broker, refdata, clock, stats, shutdown).await })
    };
    eprintln!(
        "published {published} alarms ({} ground-truth incidents, {} noise sites) to {}",
        scenario.truth.incidents.len(),
        scenario.truth.noise_sites.len(),
        cfg.kafka.topics.alarms
    );

    let bar = progress_bar(opts.progress, published);
    let limit = Duration::from_secs(300);
    let mut settled_since: Option<Instant> = None;
    let mut last_done = u64::MAX;
    loop {
        if daemon.is_finished() {
            break;
        }
        let s = &stats;
        let read = s.alarms_read.load(Relaxed);
        let planned = s.actions_planned.load(Relaxed);
        let dispatched = s.actions_dispatched.load(Relaxed);
        let open = s.incidents_open.load(Relaxed);
        bar.set_position(read.min(published));
        bar.set_message(format!(
            "incidents {} ({} declared, {open} open) · actions {dispatched}/{planned} dispatched",
            s.incidents_total.load(Relaxed),
            s.incidents_declared.load(Relaxed)
        ));
        // Settled: everything read and dispatched, and nothing delivered or
        // released from the held queue for a while.
        let done: u64 = Channel::ALL.iter().map(|c| s.delivered(*c)).sum::<u64>() + s.actions_waiting.load(Relaxed);
        let settled = read >= published && open == 0 && dispatched >= planned && done == last_done;
        last_done = done;
        settled_since = if settled { settled_since.or(Some(Instant::now())) } else { None };
        if settled_since.is_some_and(|t| t.elapsed() > Duration::from_millis(1500)) {
            break;
        }
        if t0.elapsed() > limit {
            trigger.trigger();
            return Err(DemoError::Stuck(limit, format!("read {read}/{published} alarms, {open} incidents open")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();

    let detect_seconds = {
        let first_alarm = scenario.alarms.iter().map(|a| a.event_time).min();
        let first_declared = *stats.first_declared_at.lock().unwrap_or_else(|p| p.into_inner());
        first_alarm.zip(first_declared).map(|(a, d)| (d - a).num_seconds())
    };
    let mut declared_ids = std::collections::BTreeSet::new();
    crate::kafka::read_to_end(&broker, &cfg.kafka.topics.incidents, Duration::from_millis(300), |_, _, b| {
        if let Ok(e) = serde_json::from_slice::<crate::model::IncidentEvent>(b) {
            if matches!(e.kind, crate::model::EventKind::Declared { .. }) {
                declared_ids.insert(e.incident_id.to_string());
            }
        }
    })?;
    let summary = Summary {
        declared_ids: declared_ids.into_iter().collect(),
        alarms: stats.alarms_read.load(Relaxed),
        dead_lettered: stats.alarms_dead_lettered.load(Relaxed),
        incidents: stats.incidents_total.load(Relaxed),
        declared: stats.incidents_declared.load(Relaxed),
        ground_truth_incidents: scenario.truth.incidents.len(),
        sms: stats.delivered(Channel::Sms),
        email: stats.delivered(Channel::Email),
        data_grant: stats.delivered(Channel::DataGrant),
        grants: kinds(&opts.out.join("data_grant.jsonl"), "grant"),
        revokes: kinds(&opts.out.join("data_grant.jsonl"), "revoke"),
        revokes_waiting: kinds(&opts.out.join("held.jsonl"), "revoke"),
        credits: stats.delivered(Channel::Credit),
        credit_examples: credit_examples(&opts.out.join("credits.jsonl"), 2),
        credits_total: crate::sinks::outbox::credit_totals(&opts.out).map_err(io(&opts.out))?,
        ivr_upserts: stats.ivr_upserts.load(Relaxed),
        restored_early: stats.postcodes_restored_early.load(Relaxed),
        detect_seconds,
        wall_to_ivr_ms: stats.first_ivr_flip.get().map(|t| t.duration_since(published_at).as_millis()),
        declare_to_ivr_max_ms: stats.declare_to_ivr_max_ms.load(Relaxed),
        declare_to_ivr_count: stats.declare_to_ivr_count.load(Relaxed),
        wall_to_sms_ms: stats.first_sms.get().map(|t| t.duration_since(published_at).as_millis()),
        elapsed_ms: t0.elapsed().as_millis(),
        out: opts.out.clone(),
        bootstrap: broker.bootstrap().to_string(),
    };
    if daemon.is_finished() {
        daemon.await.map_err(TopologyError::from)??;
        return Ok(summary);
    }
    if opts.exit_when_done {
        trigger.trigger();
    } else {
        print_summary(&summary);
        match cfg.api.listen {
            Some(addr) => eprintln!(
                "\nStill running (Kafka at {}). The NOC API and the status page:\n  \
                 http://{addr}/status\n  \
                 export OUTAGECTL_SERVER=http://{addr} OUTAGECTL_TOKEN={}\n  \
                 target/release/outagectl incidents\n  \
                 target/release/outagectl declare --postcode 02903,02905,02907 --cause 'fibre cut' --etr +2h\n\
                 (README: \"Try the NOC control plane\"). Ctrl-C to stop.",
                summary.bootstrap,
                token_in_force(&cfg.api.tokens).unwrap_or("<none: set OUTAGE_API__TOKENS>")
            ),
            None => eprintln!("still running (Kafka at {}); Ctrl-C to stop", summary.bootstrap),
        }
    }
    daemon.await.map_err(TopologyError::from)??;
    Ok(summary)
}

/// The token to try the API with: the first operator token in force (the
/// demo's own only when the configuration and `OUTAGE_API__TOKENS` gave
/// none), else the first token.
pub fn token_in_force(tokens: &[crate::api::ApiToken]) -> Option<&str> {
    tokens.iter().find(|t| t.role == crate::api::Role::Operator).or(tokens.first()).map(|t| t.token.as_str())
}

/// How many lines of a JSONL file have `kind` (an action's, or a held
/// action's) equal to `kind`.
fn kinds(path: &std::path::Path, kind: &str) -> u64 {
    let body = std::fs::read_to_string(path).unwrap_or_default();
    body.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == kind || v["hold"]["kind"] == kind)
        .count() as u64
}

/// The first `n` credits of `credits.jsonl`.
fn credit_examples(path: &std::path::Path, n: usize) -> Vec<crate::model::Credit> {
    let body = std::fs::read_to_string(path).unwrap_or_default();
    body.lines().filter_map(|l| serde_json::from_str(l).ok()).take(n).collect()
}

fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} alarms {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn print_summary(s: &Summary) {
    let money = |m: &[crate::model::Money]| {
        if m.is_empty() {
            return "none".to_string();
        }
        m.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
    };
    println!("outage demo summary");
    println!("  alarms read            {} ({} dead-lettered)", s.alarms, s.dead_lettered);
    println!(
        "  incidents              {} opened, {} declared (ground truth: {})",
        s.incidents, s.declared, s.ground_truth_incidents
    );
    println!("  declared ids           {}", s.declared_ids.join(" "));
    println!("  customers reached      SMS {} · e-mail {} · unlimited data {}", s.sms, s.email, s.data_grant);
    println!(
        "  unlimited data         {} granted · {} revoked after the grace · {} revokes waiting",
        s.grants, s.revokes, s.revokes_waiting
    );
    println!("  credits queued         {} totalling {}", s.credits, money(&s.credits_total));
    for c in &s.credit_examples {
        println!("    {} {} {} ({}): {}", c.customer_id, c.service, c.amount, c.rule_id, c.calculation);
    }
    println!("  IVR announcements      {} region updates", s.ivr_upserts);
    println!("  restored early         {} postcodes (their own sites back before the incident's)", s.restored_early);
    if let Some(d) = s.detect_seconds {
        println!("  first alarm → declared {d} s of event time (the correlator's rules)");
    }
    let ms = |v: Option<u128>| v.map_or("never".to_string(), |v| format!("{v} ms"));
    println!("  first alarm → IVR flip {} of wall time", ms(s.wall_to_ivr_ms));
    println!(
        "  declared → IVR flip    at most {} ms over {} incidents (target < 1 s)",
        s.declare_to_ivr_max_ms, s.declare_to_ivr_count
    );
    println!("  first alarm → SMS      {} of wall time", ms(s.wall_to_sms_ms));
    println!("  outboxes               {}", s.out.display());
    println!("  took                   {:.1} s", s.elapsed_ms as f64 / 1000.0);
}

#[cfg(test)]
mod tests {
    use crate::api::{ApiToken, Role};

    #[test]
    fn the_demo_names_the_operator_token_in_force() {
        let t = |name: &str, role, token: &str| ApiToken { name: name.into(), role, token: token.into() };
        let from_env = [t("ro", Role::Viewer, "viewer-secret"), t("noc", Role::Operator, "env-operator-token")];
        assert_eq!(super::token_in_force(&from_env), Some("env-operator-token"));
        assert_eq!(super::token_in_force(&from_env[..1]), Some("viewer-secret"));
        assert_eq!(super::token_in_force(&[]), None);
    }
}
