//! `outagectl`: the NOC engineer's CLI. Offline tools today (`simulate`);
//! incident commands against the daemon's HTTP API come with the API.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use outage::refdata::load_sites;
use outage::simulate::{self, ScenarioConfig, WireFormat};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "NOC command line for the outage pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a realistic alarm storm (power failures, a storm track, flaps,
    /// repeated raises, then the clears) to Kafka or a JSONL file, with its
    /// ground truth.
    Simulate(SimulateArgs),
    /// Run the daemon's correlator offline over an alarm file (JSONL) and
    /// print each incident: times, sites, postcodes, customers, footprint.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Alarms, one JSON record per line (as `simulate --out` writes them), in
    /// any accepted format (native v1, VES, TMF642; detected per line).
    #[arg(long)]
    alarms: PathBuf,
    #[arg(long, default_value = "data/demo/sites.csv")]
    sites: PathBuf,
    #[arg(long, default_value = "data/demo/postcodes.csv")]
    postcodes: PathBuf,
    /// Customers, for customer counts per postcode.
    #[arg(long)]
    customers: Option<PathBuf>,
    /// Thresholds to try (the daemon's TOML; only `[correlator]` and
    /// `[plan]` matter here).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the credits the incidents would queue (one JSON credit per
    /// line, as on `billing.credits`), under the config's
    /// `[[plan.compensation.rules]]`: a rule change checked before it goes
    /// live. Needs `--customers`.
    #[arg(long, requires = "customers")]
    credits: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Sites CSV the storm is drawn on.
    #[arg(long, default_value = "data/demo/sites.csv")]
    sites: PathBuf,
    /// Seed: the same seed and sites give the same storm.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the scenario start (RFC 3339); default: now.
    #[arg(long)]
    start: Option<DateTime<Utc>>,
    /// Whole power/backhaul groups that fail.
    #[arg(long, default_value_t = 2)]
    power_failures: usize,
    /// Storm tracks across the region.
    #[arg(long, default_value_t = 1)]
    storms: usize,
    /// Isolated single-site flaps (noise).
    #[arg(long, default_value_t = 20)]
    flaps: usize,
    /// Write alarms as JSONL to this file ...
    #[arg(long, conflicts_with = "kafka", required_unless_present = "kafka")]
    out: Option<PathBuf>,
    /// ... or publish them to this Kafka bootstrap (keyed by site id).
    #[arg(long)]
    kafka: Option<String>,
    /// Topic to publish to.
    #[arg(long, default_value = "noc.alarms")]
    topic: String,
    /// Wire format of the alarms: native v1, ONAP VES 7.x or TMF642.
    #[arg(long, value_enum, default_value_t = WireFormat::Native)]
    format: WireFormat,
    /// VES only: consecutive alarms per `eventList` record in a file (on
    /// Kafka every VES record is one `event`, keyed by its site, as ONAP's
    /// collector publishes them).
    #[arg(long, default_value_t = 8)]
    ves_batch: usize,
    /// Where to write the ground truth (JSON).
    #[arg(long, default_value = "truth.json")]
    truth: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").init();
    let result = match Cli::parse().command {
        Command::Simulate(a) => simulate_cmd(a).await,
        Command::Replay(a) => replay_cmd(a),
    };
    // A reader that stops early (`| head`) is not an error.
    match result {
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            Ok(())
        }
        other => other,
    }
}

async fn simulate_cmd(a: SimulateArgs) -> anyhow::Result<()> {
    let sites = load_sites(&a.sites)?;
    let cfg = ScenarioConfig {
        seed: a.seed,
        start: a.start.unwrap_or_else(Utc::now),
        power_failures: a.power_failures,
        storms: a.storms,
        flaps: a.flaps,
        ..Default::default()
    };
    let scenario = simulate::generate(&sites, &cfg)?;
    let truth = std::fs::File::create(&a.truth).with_context(|| a.truth.display().to_string())?;
    simulate::write_truth(&scenario.truth, truth).with_context(|| a.truth.display().to_string())?;
    match (&a.out, &a.kafka) {
        (Some(out), _) => {
            let f = std::fs::File::create(out).with_context(|| out.display().to_string())?;
            let mut w = std::io::BufWriter::new(f);
            for (_, value) in simulate::encode(&scenario.alarms, a.format, a.ves_batch) {
                writeln!(w, "{value}").with_context(|| out.display().to_string())?;
            }
            w.flush().with_context(|| out.display().to_string())?;
            eprintln!("wrote {} alarms ({:?}) to {}", scenario.alarms.len(), a.format, out.display());
        }
        (None, Some(bootstrap)) => {
            let producer: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("enable.idempotence", "true")
                .create()?;
            let records = simulate::encode(&scenario.alarms, a.format, 1);
            let sends = records
                .iter()
                .map(|(k, v)| producer.send(FutureRecord::to(&a.topic).key(k).payload(v), Duration::from_secs(30)));
            for r in futures::future::join_all(sends).await {
                r.map_err(|(e, _)| e).context("publishing")?;
            }
            eprintln!("published {} alarms ({:?}) to {} on {bootstrap}", records.len(), a.format, a.topic);
        }
        (None, None) => anyhow::bail!("give --out FILE or --kafka BOOTSTRAP"),
    }
    eprintln!(
        "ground truth: {} incidents, {} noise sites → {}",
        scenario.truth.incidents.len(),
        scenario.truth.noise_sites.len(),
        a.truth.display()
    );
    Ok(())
}

fn replay_cmd(a: ReplayArgs) -> anyhow::Result<()> {
    use outage::refdata::{load_customers, load_postcodes, RefData};
    use std::io::BufRead;
    let cfg = outage::config::Config::load(a.config.as_deref())?;
    let customers = a.customers.as_deref().map(load_customers).transpose()?.unwrap_or_default();
    let refdata = RefData::build(load_sites(&a.sites)?, load_postcodes(&a.postcodes)?, customers)
        .map_err(|(file, msg)| anyhow::anyhow!("{file}: {msg}"))?;
    let file = std::fs::File::open(&a.alarms).with_context(|| a.alarms.display().to_string())?;
    let lines = std::io::BufReader::new(file).split(b'\n');
    let mut credits_out = match &a.credits {
        Some(p) => {
            Some((std::io::BufWriter::new(std::fs::File::create(p).with_context(|| p.display().to_string())?), p))
        }
        None => None,
    };
    let (mut n, mut totals) = (0u64, std::collections::BTreeMap::<String, outage::model::Money>::new());
    let mut write_credit = |c: outage::model::Credit| -> std::io::Result<()> {
        let Some((w, _)) = credits_out.as_mut() else { return Ok(()) };
        serde_json::to_writer(&mut *w, &c)?;
        w.write_all(b"\n")?;
        n += 1;
        let zero = outage::model::Money { minor: 0, currency: c.amount.currency };
        totals.entry(c.amount.currency.to_string()).or_insert(zero).minor += c.amount.minor;
        Ok(())
    };
    let report = outage::replay::replay_with_credits(lines, std::sync::Arc::new(refdata), &cfg, &mut write_credit)
        .with_context(|| a.alarms.display().to_string())?;
    if let Some((mut w, path)) = credits_out {
        w.flush().with_context(|| path.display().to_string())?;
        let totals: Vec<String> = totals.values().map(|m| m.to_string()).collect();
        eprintln!("{n} credits written to {} ({})", path.display(), totals.join(", "));
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} alarms, {} dead-lettered, {} incidents",
        report.alarms,
        report.dead_lettered.values().sum::<u64>(),
        report.incidents.len()
    )?;
    for (reason, n) in &report.dead_lettered {
        writeln!(out, "  dead letter ×{n}: {reason}")?;
    }
    let time = |t: Option<chrono::DateTime<Utc>>| t.map_or("-".to_string(), |t| t.format("%H:%M:%S").to_string());
    for i in &report.incidents {
        writeln!(
            out,
            "{} {:?} opened {} declared {} restored {} · {} sites · {} postcodes · {} customers · {}",
            i.id,
            i.state,
            i.opened_at.format("%Y-%m-%d %H:%M:%S"),
            time(i.declared_at),
            time(i.restored_at),
            i.sites.len(),
            i.postcodes.len(),
            i.customers,
            i.cause
        )?;
    }
    Ok(())
}
