//! `outaged`: the daemon, and `outaged demo`, the whole pipeline on a laptop.

use anyhow::Context;
use clap::{Parser, Subcommand};
use outage::config::Config;
use outage::kafka::Broker;
use outage::refdata::RefData;
use outage::runtime::{Shutdown, Stats, SystemClock};
use outage::topology;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

/// Outage incident communication daemon: alarms in, incidents, notices,
/// remedies and credits out.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration (see deploy/outage.example.toml). Every key can be
    /// overridden by OUTAGE_<SECTION>__<KEY> environment variables.
    #[arg(long, short, global = true, env = "OUTAGE_CONFIG")]
    config: Option<PathBuf>,
    /// What this process runs: `all` (one process), `correlator` (alarms →
    /// incidents → actions, the IVR and every API's commands while elected;
    /// run two: one leads, one stands by), `dispatcher` (actions →
    /// gateways; run any number) or `api` (the NOC API and /status from the
    /// incident log, commands forwarded to the leader; any number). See
    /// README, "Running in production".
    #[arg(long, env = "OUTAGE_ROLE", default_value = "all", value_name = "ROLE")]
    role: topology::Role,
    /// Check the configuration and reference data, then exit.
    #[arg(long)]
    check: bool,
    /// With --check: run this alarm file (one record per line, any accepted
    /// format) through decoding and classification, and list the elements
    /// and probable causes the configuration does not cover (exit 1 if any).
    #[arg(long, requires = "check", value_name = "FILE")]
    alarms: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Embedded Kafka + demo data + a simulated storm through the whole
    /// pipeline, then a summary.
    Demo {
        /// Directory for the outbox files, the alarms and the ground truth.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Exit after the summary instead of running until Ctrl-C.
        #[arg(long)]
        exit_when_done: bool,
        /// Seed of the simulated storm.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Unlimited data lasts this long after an area's restoration (the
        /// daemon's `plan.data_grant_grace`, shortened so the revokes happen
        /// while you watch).
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
}

/// SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and systemd send to stop a
/// process): either drains and stops. Returns which.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `--check` beyond parsing: the Kafka clients librdkafka would make (every
/// `kafka.client` property checked, nothing connected), the CA file, and
/// the gateways' clients with their TLS settings.
fn check_clients(cfg: &Config) -> anyhow::Result<()> {
    outage::kafka::check_clients(&cfg.kafka)?;
    let trust = outage::tls::Trust::load(cfg.sinks.tls.ca_file.as_deref(), "sinks.tls.ca_file")?;
    for p in &cfg.sinks.sms {
        outage::sinks::sms::Provider::new(p.clone(), &trust)?;
    }
    if let Some(e) = &cfg.sinks.email {
        outage::sinks::email::Smtp::new(e.clone(), &trust)?;
    }
    if let Some(ivr) = &cfg.sinks.ivr {
        outage::sinks::ivr::HttpIvr::new(ivr.clone(), &trust)?;
    }
    Ok(())
}

/// A mistake in what the operator gave us (configuration, reference data,
/// a CA file, a Kafka property, a port already taken) or an expected stop
/// (deposed): its message says what to fix, and a backtrace of our code
/// would only bury it.
fn is_user_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<outage::config::ConfigError>()
            || c.is::<outage::refdata::RefDataError>()
            || c.is::<outage::tls::CaFileError>()
            || c.is::<outage::sinks::email::EmailError>()
            || c.is::<std::io::Error>()
            // A setting the topology checks (`kafka.topics.*` partitions),
            // a port taken, or a leader deposed (expected: its supervisor
            // restarts it as a standby).
            || matches!(
                c.downcast_ref::<outage::topology::TopologyError>(),
                Some(
                    outage::topology::TopologyError::Config(_)
                        | outage::topology::TopologyError::Api(..)
                        | outage::topology::TopologyError::Dlr(_)
                        | outage::topology::TopologyError::Deposed(_)
                )
            )
            || matches!(
                c.downcast_ref::<outage::kafka::BrokerError>(),
                Some(outage::kafka::BrokerError::Property { .. } | outage::kafka::BrokerError::Client { .. })
            )
    })
}

/// Errors are printed like a compiler's, `error: ` and the whole chain
/// (`{:#}`), never as `Debug`; with `RUST_BACKTRACE` set, a backtrace
/// follows only errors that are not the operator's mistake (bugs).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let bt = e.backtrace();
            if !is_user_error(&e) && bt.status() == std::backtrace::BacktraceStatus::Captured {
                eprintln!("\nbacktrace (a bug, please report it):\n{bt}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    let (trigger, shutdown) = Shutdown::new();
    match cli.command {
        Some(Command::Demo { out, exit_when_done, seed, grace }) => {
            init_tracing("warn");
            let trigger_on_signal = trigger.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                trigger_on_signal.trigger();
            });
            let progress = std::io::stderr().is_terminal();
            let opts = outage::demo::DemoOptions { out, exit_when_done, seed, progress, grace };
            let summary = outage::demo::run(cfg, opts, shutdown, trigger).await?;
            if exit_when_done {
                outage::demo::print_summary(&summary);
            }
            if summary.declared == 0 {
                anyhow::bail!("the demo declared no incident");
            }
            Ok(())
        }
        None => {
            init_tracing("info");
            let refdata = Arc::new(RefData::load(&cfg.refdata).context("loading reference data")?);
            tracing::info!(
                sites = refdata.sites.len(),
                postcodes = refdata.postcodes.len(),
                customers = refdata.customers.len(),
                "reference data loaded"
            );
            if cli.check {
                check_clients(&cfg)?;
                if refdata.rejected.rows.is_empty() {
                    println!("configuration and reference data OK");
                } else {
                    // Within refdata.max_bad_ratio (above it, loading failed
                    // with the same summary): the daemon would skip these.
                    print!("{}", refdata.rejected.summary(3));
                    println!(
                        "configuration OK; reference data OK but for the rows above, which the daemon skips \
                         (within refdata.max_bad_ratio = {})",
                        cfg.refdata.max_bad_ratio
                    );
                }
                if let Some(path) = &cli.alarms {
                    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
                    let lines = std::io::BufRead::split(std::io::BufReader::new(file), b'\n');
                    let report =
                        outage::replay::replay(lines, refdata, &cfg).with_context(|| path.display().to_string())?;
                    let (text, covered) = outage::replay::coverage(&report);
                    print!("{}: {text}", path.display());
                    if !covered {
                        std::process::exit(1);
                    }
                }
                return Ok(());
            }
            let broker = Broker::connect(&cfg.kafka).await?;
            tracing::info!(bootstrap = broker.bootstrap(), embedded = broker.is_embedded(), "kafka ready");
            tokio::spawn(async move {
                let signal = stop_signal().await;
                tracing::info!(signal, "shutting down");
                trigger.trigger();
            });
            let stats = Arc::new(Stats::default());
            topology::run_role(cli.role, &cfg, &broker, refdata, Arc::new(SystemClock), stats, shutdown).await?;
            Ok(())
        }
    }
}
