//! `outagectl`: the NOC engineer's CLI. Offline tools (`simulate`,
//! `replay`) and incident commands against the daemon's HTTP API
//! (`incidents`, `show`, `declare`, `preview`, `approve`, `update`, `link`,
//! `resolve`, `cancel`, `impact`; the client and the tables live in
//! `outage::api::client`).

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Parser, Subcommand};
use outage::api::client::{self, Client, ClientError, ImpactQuery};
use outage::api::types::{CancelRequest, DeclareRequest, UpdateRequest};
use outage::model::{Area, IncidentId, IncidentState};
use outage::refdata::load_sites;
use outage::simulate::{self, ScenarioConfig, WireFormat};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Shown under `--help` of the CLI and of every command that calls the daemon.
const EXIT_CODES: &str = "\
Exit codes (commands that call the daemon):
  0  success
  1  other error (daemon error such as 503 not ready, unexpected answer)
  2  bad command line
  3  daemon unreachable (not running at --server? connection refused, DNS, timeout)
  4  unauthorized or forbidden (no or bad token; a viewer token asking for an operator action)
  5  not found (e.g. unknown incident)
  6  request refused (400/409/422: invalid values, incident not in a state that allows it)";

#[derive(Parser)]
#[command(version, about = "NOC command line for the outage pipeline", after_help = EXIT_CODES)]
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
    /// List incidents: id, state, cause, declared, ETR, sites down/total,
    /// postcodes, customers.
    #[command(after_help = EXIT_CODES)]
    Incidents(IncidentsArgs),
    /// Show one incident in full, with its timeline.
    #[command(after_help = EXIT_CODES)]
    Show(ShowArgs),
    /// Declare an incident over postcodes, sites, a GeoJSON polygon or a
    /// circle (operator token).
    #[command(after_help = EXIT_CODES)]
    Declare(DeclareArgs),
    /// What an incident's fan-out still to go would send: customers and
    /// actions per channel and IVR region.
    #[command(after_help = EXIT_CODES)]
    Preview(ResolveArgs),
    /// Release a fan-out that waits for approval (operator token).
    #[command(after_help = EXIT_CODES)]
    Approve(ResolveArgs),
    /// Link two incidents that are one problem; both stay (operator token).
    #[command(after_help = EXIT_CODES)]
    Link(LinkArgs),
    /// Change an incident's ETR, cause or customer message (operator token;
    /// at least one of them).
    #[command(after_help = EXIT_CODES)]
    Update(UpdateArgs),
    /// Resolve an incident: service is back (operator token).
    #[command(after_help = EXIT_CODES)]
    Resolve(ResolveArgs),
    /// Cancel an incident declared by mistake; customers already told get a
    /// correction (operator token).
    #[command(after_help = EXIT_CODES)]
    Cancel(CancelArgs),
    /// Which open incidents affect a postcode, phone number or customer,
    /// and what customers are told.
    #[command(after_help = EXIT_CODES)]
    Impact(ImpactArgs),
    /// Print shell completions, e.g. `outagectl completions bash >
    /// /etc/bash_completion.d/outagectl`.
    Completions { shell: clap_complete::Shell },
}

/// How to reach the daemon; every API command takes these.
#[derive(clap::Args)]
#[command(next_help_heading = "Daemon")]
struct ServerOpts {
    /// The daemon's API base URL (http:// or https://; `host:port` means
    /// http://host:port). Default: the config file's `server`, else
    /// http://127.0.0.1:8080.
    #[arg(long, env = "OUTAGECTL_SERVER")]
    server: Option<String>,
    /// Bearer token. Prefer the environment variable or the config file: a
    /// flag is visible in the process list. Never printed.
    #[arg(long, env = "OUTAGECTL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Where `server`, `token` and `ca_file` are read from when neither flag nor
    /// environment gives them (TOML). Default
    /// `$XDG_CONFIG_HOME/outagectl/config.toml` (`~/.config/…`), if it exists.
    #[arg(long = "ctl-config", env = "OUTAGECTL_CONFIG", value_name = "FILE")]
    ctl_config: Option<PathBuf>,
    /// A PEM bundle of CA certificates trusted for an https:// server
    /// besides the built-in roots (a private CA, or a TLS proxy's).
    /// Default: the config file's `ca_file`, else none.
    #[arg(long, env = "OUTAGECTL_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Give up on a request after this long (e.g. 10s, 1m).
    #[arg(long, env = "OUTAGECTL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the daemon's answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `outagectl`'s own config file: where the daemon is and the token.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlConfig {
    server: Option<String>,
    token: Option<String>,
    /// Like `--ca-file`; relative to the working directory.
    ca_file: Option<PathBuf>,
}

impl CtlConfig {
    /// The file named, or the default one if it exists, or nothing.
    fn load(named: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let default = || {
            let base = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
            Some(base.join("outagectl").join("config.toml")).filter(|p| p.exists())
        };
        let Some(path) = named.map(PathBuf::from).or_else(default) else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let cfg: CtlConfig =
            toml::from_str(&text).with_context(|| format!("{}: bad outagectl config", path.display()))?;
        #[cfg(unix)]
        if cfg.token.is_some() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode()).unwrap_or(0);
            if mode & 0o077 != 0 {
                eprintln!("outagectl: warning: {} holds a token and others can read it (chmod 600 it)", path.display());
            }
        }
        Ok(cfg)
    }
}

impl ServerOpts {
    /// The client: flags first, then `OUTAGECTL_*`, then the older
    /// `OUTAGE_SERVER`/`OUTAGE_TOKEN`/`OUTAGE_CA_FILE` (still read, by the
    /// CLI only), then the config file.
    fn client(&self) -> anyhow::Result<Client> {
        let legacy = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let server = self.server.clone().or_else(|| legacy("OUTAGE_SERVER"));
        let token = self.token.clone().or_else(|| legacy("OUTAGE_TOKEN"));
        let ca_file = self.ca_file.clone().or_else(|| legacy("OUTAGE_CA_FILE").map(PathBuf::from));
        let file = if server.is_some() && token.is_some() && ca_file.is_some() {
            CtlConfig::default()
        } else {
            CtlConfig::load(self.ctl_config.as_deref())?
        };
        let server = server.or(file.server).unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let (ca_file, key) = match (ca_file, file.ca_file) {
            (Some(f), _) => (Some(f), "--ca-file"),
            (None, f) => (f, "ca_file (outagectl config)"),
        };
        let trust = outage::tls::Trust::load(ca_file.as_deref(), key)?;
        Ok(Client::with_trust(&server, token.or(file.token), self.timeout, &trust)?)
    }
}

/// `--state`: one of the API's incident states, as the contracts spell them
/// (offered by shell completion).
fn state_parser() -> impl clap::builder::TypedValueParser<Value = IncidentState> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(IncidentState::ALL.map(IncidentState::as_str))
        .map(|s| IncidentState::ALL.into_iter().find(|x| x.as_str() == s).unwrap_or(IncidentState::Declared))
}

#[derive(clap::Args)]
struct IncidentsArgs {
    /// Only incidents in this state.
    #[arg(long, value_parser = state_parser())]
    state: Option<IncidentState>,
    /// Also list dismissed and merged incidents (flaps and probable
    /// incidents nobody was told of), which are left out by default.
    #[arg(long, conflicts_with = "state")]
    all: bool,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(clap::Args)]
struct ShowArgs {
    /// Incident id, e.g. INC-20261123-3f9a1c2e.
    #[arg(value_parser = non_empty)]
    id: String,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("area").required(true).args(["postcodes", "sites", "polygon", "circle"])))]
struct DeclareArgs {
    /// Postcodes in the area; repeat the flag or separate with commas.
    #[arg(long = "postcode", value_name = "POSTCODE", value_delimiter = ',', value_parser = non_empty)]
    postcodes: Vec<String>,
    /// Sites whose coverage is the area; repeat the flag or separate with commas.
    #[arg(long = "site", value_name = "SITE", value_delimiter = ',', value_parser = non_empty)]
    sites: Vec<String>,
    /// A GeoJSON file (`-`: stdin) holding a Polygon or MultiPolygon
    /// geometry, or a Feature with one.
    #[arg(long, value_name = "FILE")]
    polygon: Option<PathBuf>,
    /// A circle: `LAT,LON,RADIUS_KM`, e.g. `41.82,-71.41,3`.
    #[arg(long, value_name = "LAT,LON,KM", value_parser = parse_circle)]
    circle: Option<Area>,
    /// The cause, in words.
    #[arg(long, value_parser = non_empty)]
    cause: String,
    /// When service went, if before now: RFC 3339 or ago (-45m, -2h).
    #[arg(long, value_parser = parse_since_arg, allow_hyphen_values = true)]
    since: Option<DateTime<Utc>>,
    /// Expected restoration: RFC 3339 (2026-11-23T18:00:00Z) or from now (+90m, +2h).
    #[arg(long, value_parser = parse_etr_arg)]
    etr: Option<DateTime<Utc>>,
    /// Customer-facing message.
    #[arg(long)]
    message: Option<String>,
    #[command(flatten)]
    server: ServerOpts,
}

impl DeclareArgs {
    /// The one area the flags give (clap's "area" group requires one).
    fn area(&self) -> anyhow::Result<Area> {
        let dedup = |v: &[String]| {
            let mut out: Vec<String> = Vec::with_capacity(v.len());
            for p in v {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            out
        };
        if !self.postcodes.is_empty() {
            return Ok(Area::Postcodes(dedup(&self.postcodes)));
        }
        if !self.sites.is_empty() {
            return Ok(Area::Sites(dedup(&self.sites)));
        }
        if let Some(c) = &self.circle {
            return Ok(c.clone());
        }
        let Some(path) = &self.polygon else { anyhow::bail!("give --postcode, --site, --polygon or --circle") };
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading the polygon from stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| path.display().to_string())?
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        // A Feature carries its geometry; the server checks the geometry.
        let geometry = if v.get("type").and_then(|t| t.as_str()) == Some("Feature") {
            v.get("geometry").cloned().unwrap_or_default()
        } else {
            v
        };
        Ok(Area::Polygon(geometry))
    }
}

#[derive(clap::Args)]
struct LinkArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
    /// The incident to link it with.
    #[arg(value_parser = non_empty)]
    other: String,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["etr", "cause", "message"])))]
struct UpdateArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
    /// New expected restoration: RFC 3339 (2026-11-23T18:00:00Z) or from now (+90m, +2h).
    #[arg(long, value_parser = parse_etr_arg)]
    etr: Option<DateTime<Utc>>,
    /// New cause, in words.
    #[arg(long, value_parser = non_empty)]
    cause: Option<String>,
    /// New customer-facing message.
    #[arg(long)]
    message: Option<String>,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(clap::Args)]
struct ResolveArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(clap::Args)]
struct CancelArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
    /// Why it was a false positive (kept in the incident's timeline).
    #[arg(long, value_parser = non_empty)]
    reason: String,
    #[command(flatten)]
    server: ServerOpts,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("who").required(true).args(["postcode", "msisdn", "customer_id"])))]
struct ImpactArgs {
    /// A postcode.
    #[arg(long, value_parser = non_empty)]
    postcode: Option<String>,
    /// A customer's phone number (MSISDN).
    #[arg(long, value_parser = non_empty)]
    msisdn: Option<String>,
    /// A customer id.
    #[arg(long, value_parser = non_empty)]
    customer_id: Option<String>,
    #[command(flatten)]
    server: ServerOpts,
}

/// A value with surrounding blanks removed; empty is refused.
fn non_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// `LAT,LON,RADIUS_KM`.
fn parse_circle(s: &str) -> Result<Area, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let nums: Vec<f64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    match nums[..] {
        [lat, lon, radius_km] if parts.len() == 3 => Ok(Area::Circle { lat, lon, radius_km }),
        _ => Err(format!("{s:?} is not LAT,LON,RADIUS_KM (e.g. 41.82,-71.41,3)")),
    }
}

fn parse_since_arg(s: &str) -> Result<DateTime<Utc>, String> {
    parse_since(s, Utc::now())
}

/// When service went: RFC 3339, or a duration ago written `-45m`, `-2h`.
fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    parse_time(s, now, Toward::Past)
}

fn parse_etr_arg(s: &str) -> Result<DateTime<Utc>, String> {
    parse_etr(s, Utc::now())
}

/// An ETR: RFC 3339 (`2026-11-23T18:00:00Z`, any offset, kept as UTC) or a
/// duration from `now` written `+90m`, `+2h`, `+1h 30m`.
fn parse_etr(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    parse_time(s, now, Toward::Future)
}

/// Which way a relative time goes from now, and how it is written.
#[derive(Clone, Copy)]
enum Toward {
    /// `+90m`
    Future,
    /// `-45m`
    Past,
}

/// RFC 3339 (any offset, kept as UTC), or a duration from `now` with the
/// sign `toward` asks for.
fn parse_time(s: &str, now: DateTime<Utc>, toward: Toward) -> Result<DateTime<Utc>, String> {
    let (sign, words, examples, too_far) = match toward {
        Toward::Future => ('+', "a time from now", "+90m, +2h", "in the future"),
        Toward::Past => ('-', "a time ago", "-45m, -2h", "in the past"),
    };
    let s = s.trim();
    if let Some(rel) = s.strip_prefix(sign) {
        let d =
            humantime::parse_duration(rel.trim()).map_err(|e| format!("{s:?}: {e} ({words} looks like {examples})"))?;
        let d = chrono::Duration::from_std(d).ok();
        let t = match toward {
            Toward::Future => d.and_then(|d| now.checked_add_signed(d)),
            Toward::Past => d.and_then(|d| now.checked_sub_signed(d)),
        };
        return t.ok_or_else(|| format!("{s:?} is too far {too_far}"));
    }
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        let hint =
            if humantime::parse_duration(s).is_ok() { format!("; {words}, write {sign}{s}") } else { String::new() };
        format!("{s:?} is not RFC 3339 (2026-11-23T18:00:00Z) nor {words} ({examples}): {e}{hint}")
    })
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Alarms, one JSON record per line (as `simulate --out` writes them), in
    /// any accepted format (native v1, VES incl. stndDefined, TMF642;
    /// detected per line).
    #[arg(long)]
    alarms: PathBuf,
    #[arg(long, default_value = "data/demo/sites.csv")]
    sites: PathBuf,
    #[arg(long, default_value = "data/demo/postcodes.csv")]
    postcodes: PathBuf,
    /// Customers, for customer counts per postcode.
    #[arg(long)]
    customers: Option<PathBuf>,
    /// Network element → site table (CSV `element_id,site_id`); default:
    /// the config's `refdata.elements`, if any.
    #[arg(long)]
    elements: Option<PathBuf>,
    /// Thresholds to try (the daemon's TOML; `[correlator]`, `[plan]` and
    /// `[[ingest.elements]]` matter here).
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
    /// Background flaps at site density, anywhere and any time of the day,
    /// beside the real incidents too (noise).
    #[arg(long, default_value_t = 0)]
    city_flaps: usize,
    /// Isolated single-site outages of 1-6 hours at site density (noise).
    #[arg(long, default_value_t = 0)]
    long_outages: usize,
    /// Single sites locked for planned works for 30-120 minutes (noise).
    #[arg(long, default_value_t = 0)]
    maintenance: usize,
    /// Power failures that strike the same group again later the same day.
    #[arg(long, default_value_t = 0)]
    recurrences: usize,
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
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").init();
    let result = match Cli::parse().command {
        Command::Simulate(a) => simulate_cmd(a).await,
        Command::Replay(a) => replay_cmd(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "outagectl", &mut std::io::stdout());
            Ok(())
        }
        api => return api_main(api).await,
    };
    // A reader that stops early (`| head`) is not an error.
    match result {
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Ok(()) => ExitCode::SUCCESS,
        // As `main` returning the error would print it.
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The API commands: `outagectl: <message>` on stderr and the documented
/// exit code on failure.
async fn api_main(cmd: Command) -> ExitCode {
    match api_cmd(cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(ce) => {
                eprintln!("outagectl: {ce}");
                ExitCode::from(ce.exit_code())
            }
            None => {
                eprintln!("outagectl: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn api_cmd(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Incidents(a) => {
            let mut list = a.server.client()?.incidents(a.state).await?;
            let hidden = if a.all || a.state.is_some() { 0 } else { client::drop_untold(&mut list) };
            output(a.server.json, &list, || {
                let mut out = client::incidents_table(&list);
                if hidden > 0 {
                    out.push_str(&format!("({hidden} dismissed or merged not shown: --all lists them)\n"));
                }
                out
            })
        }
        Command::Show(a) => {
            let inc = a.server.client()?.incident(&IncidentId(a.id.into())).await?;
            output(a.server.json, &inc, || client::incident_details(&inc))
        }
        Command::Declare(a) => {
            let area = a.area()?;
            let req = DeclareRequest { cause: a.cause, area, since: a.since, etr: a.etr, message: a.message };
            let inc = a.server.client()?.declare(&req).await?;
            output(a.server.json, &inc, || {
                let mut out = format!("declared {}\n\n{}", inc.id, client::incident_details(&inc));
                if inc.awaiting_approval {
                    out.push_str(&format!(
                        "\nThe fan-out to {} customers waits for approval: outagectl preview {id}, then outagectl approve {id}\n",
                        inc.customers,
                        id = inc.id
                    ));
                }
                out
            })
        }
        Command::Preview(a) => {
            let p = a.server.client()?.preview(&IncidentId(a.id.into())).await?;
            output(a.server.json, &p, || client::preview_table(&p))
        }
        Command::Approve(a) => {
            let inc = a.server.client()?.approve(&IncidentId(a.id.into())).await?;
            output(a.server.json, &inc, || format!("approved {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Link(a) => {
            let inc = a.server.client()?.link(&IncidentId(a.id.into()), &IncidentId(a.other.into())).await?;
            output(a.server.json, &inc, || format!("linked {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Update(a) => {
            let req = UpdateRequest { cause: a.cause, etr: a.etr, message: a.message };
            let inc = a.server.client()?.update(&IncidentId(a.id.into()), &req).await?;
            output(a.server.json, &inc, || format!("updated {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Resolve(a) => {
            let inc = a.server.client()?.resolve(&IncidentId(a.id.into())).await?;
            output(a.server.json, &inc, || format!("resolved {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Cancel(a) => {
            let inc = a.server.client()?.cancel(&IncidentId(a.id.into()), &CancelRequest { reason: a.reason }).await?;
            output(a.server.json, &inc, || format!("cancelled {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Impact(a) => {
            let q = match (a.postcode, a.msisdn, a.customer_id) {
                (Some(p), _, _) => ImpactQuery::Postcode(p),
                (_, Some(m), _) => ImpactQuery::Msisdn(m),
                (_, _, Some(c)) => ImpactQuery::CustomerId(c),
                // clap's "who" group requires exactly one.
                (None, None, None) => anyhow::bail!("give --postcode, --msisdn or --customer-id"),
            };
            let r = a.server.client()?.impact(&q).await?;
            output(a.server.json, &r, || client::impact_text(&r))
        }
        Command::Simulate(_) | Command::Replay(_) | Command::Completions { .. } => {
            unreachable!("offline commands are run by main")
        }
    }
}

/// Print the answer: pretty JSON, or the human text.
fn output<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        out.write_all(human().as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

async fn simulate_cmd(a: SimulateArgs) -> anyhow::Result<()> {
    let sites = load_sites(&a.sites)?;
    let cfg = ScenarioConfig {
        seed: a.seed,
        start: a.start.unwrap_or_else(Utc::now),
        power_failures: a.power_failures,
        storms: a.storms,
        flaps: a.flaps,
        city_flaps: a.city_flaps,
        long_outages: a.long_outages,
        maintenance: a.maintenance,
        recurrences: a.recurrences,
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
    let sites = load_sites(&a.sites)?;
    let elements = match a.elements.as_ref().or(cfg.refdata.elements.as_ref()) {
        Some(p) => outage::refdata::load_elements(p, &sites)?,
        None => Vec::new(),
    };
    let refdata = RefData::build(sites, load_postcodes(&a.postcodes)?, customers)
        .map_err(|(file, msg)| anyhow::anyhow!("{file}: {msg}"))?
        .with_elements(elements)
        .map_err(|msg| anyhow::anyhow!("element table: {msg}"))?;
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
        "{} alarms, {} dead-lettered, {} ignored, {} incidents",
        report.alarms,
        report.dead_lettered.values().sum::<u64>(),
        report.ignored.values().sum::<u64>(),
        report.incidents.len()
    )?;
    for (reason, n) in &report.dead_lettered {
        writeln!(out, "  dead letter ×{n}: {reason}")?;
    }
    for (reason, n) in &report.ignored {
        writeln!(out, "  ignored ×{n}: {reason}")?;
    }
    if !report.cause_classes.is_empty() {
        let classes: Vec<String> = report.cause_classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        writeln!(out, "  raises by cause class: {}", classes.join(", "))?;
    }
    for u in &report.unclassified_causes {
        match u.cause.as_str() {
            "" => writeln!(out, "  unclassified cause ×{}: (other causes)", u.raises)?,
            c => writeln!(out, "  unclassified cause ×{}: {c:?}", u.raises)?,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn completions_cover_every_subcommand() {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "outagectl", &mut out);
        let script = String::from_utf8(out).unwrap();
        for sub in Cli::command().get_subcommands() {
            assert!(script.contains(sub.get_name()), "{} missing from the bash completions", sub.get_name());
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn etr_rfc3339_and_relative() {
        let now = t("2026-11-23T14:00:00Z");
        assert_eq!(parse_etr("2026-11-23T18:00:00Z", now), Ok(t("2026-11-23T18:00:00Z")));
        assert_eq!(parse_etr(" 2026-11-23T19:00:00+01:00 ", now), Ok(t("2026-11-23T18:00:00Z")));
        assert_eq!(parse_etr("+90m", now), Ok(t("2026-11-23T15:30:00Z")));
        assert_eq!(parse_etr("+2h", now), Ok(t("2026-11-23T16:00:00Z")));
        assert_eq!(parse_etr("+1h 30m", now), Ok(t("2026-11-23T15:30:00Z")));
    }

    #[test]
    fn etr_errors_say_what_is_accepted() {
        let now = t("2026-11-23T14:00:00Z");
        let e = parse_etr("2h", now).unwrap_err();
        assert!(e.contains("write +2h"), "{e}");
        let e = parse_etr("tomorrow", now).unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("+90m"), "{e}");
        assert!(parse_etr("+soon", now).unwrap_err().contains("+90m"));
        assert!(parse_etr("2026-11-23 18:00", now).is_err());
        assert!(parse_etr("+", now).is_err());
    }

    #[test]
    fn the_config_file_gives_server_and_token_and_names_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "server = \"https://noc-1:8443\"\ntoken = \"t\"\nca_file = \"/etc/noc/ca.pem\"\n")
            .unwrap();
        let cfg = CtlConfig::load(Some(&path)).unwrap();
        assert_eq!((cfg.server.as_deref(), cfg.token.as_deref()), (Some("https://noc-1:8443"), Some("t")));
        assert_eq!(cfg.ca_file.as_deref(), Some(std::path::Path::new("/etc/noc/ca.pem")));
        std::fs::write(&path, "sever = \"x\"\n").unwrap();
        let e = format!("{:#}", CtlConfig::load(Some(&path)).unwrap_err());
        assert!(e.contains("config.toml") && e.contains("sever"), "{e}");
        assert!(CtlConfig::load(Some(&dir.path().join("missing.toml"))).is_err(), "a named file must exist");
    }

    #[test]
    fn since_is_rfc3339_or_a_time_ago() {
        let now = t("2026-11-23T14:00:00Z");
        assert_eq!(parse_since("-45m", now), Ok(t("2026-11-23T13:15:00Z")));
        assert_eq!(parse_since("2026-11-23T13:00:00Z", now), Ok(t("2026-11-23T13:00:00Z")));
        let e = parse_since("45m", now).unwrap_err();
        assert!(e.contains("write -45m"), "{e}");
        assert!(parse_since("+45m", now).unwrap_err().contains("-45m, -2h"));
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("outagectl").chain(args.iter().copied()))
    }

    #[test]
    fn declare_takes_repeated_and_comma_separated_postcodes() {
        let cli = parse(&[
            "declare",
            "--postcode",
            "AB1 2CD,AB1 3EF",
            "--postcode",
            "AB1 4GH",
            "--cause",
            "fibre cut",
            "--etr",
            "+2h",
        ])
        .unwrap();
        let Command::Declare(a) = cli.command else { panic!("not declare") };
        assert_eq!(a.postcodes, ["AB1 2CD", "AB1 3EF", "AB1 4GH"]);
        assert!(a.etr.is_some());
        assert!(parse(&["declare", "--cause", "x"]).is_err(), "a postcode is required");
        assert!(parse(&["declare", "--postcode", "A", "--cause", "x", "--etr", "later"]).is_err());
    }

    #[test]
    fn update_needs_a_change_and_impact_exactly_one_key() {
        let e = parse(&["update", "INC-1"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(parse(&["update", "INC-1", "--message", "on site"]).is_ok());
        assert!(parse(&["impact"]).is_err());
        assert!(parse(&["impact", "--postcode", "A", "--msisdn", "1"]).is_err());
        assert!(parse(&["impact", "--customer-id", "C1"]).is_ok());
        assert!(parse(&["cancel", "INC-1"]).is_err(), "a reason is required");
    }

    #[test]
    fn ca_file_is_read_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let args = ["incidents", "--server", "https://noc:8443", "--token", "t", "--ca-file"];
        let cli = parse(&[&args[..], &[missing.to_str().unwrap()]].concat()).unwrap();
        let Command::Incidents(a) = cli.command else { panic!("not incidents") };
        let e = format!("{:#}", a.server.client().unwrap_err());
        assert!(e.contains("--ca-file") && e.contains("missing.pem"), "{e}");
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
        let cli = parse(&[&args[..], &[ca]].concat()).unwrap();
        let Command::Incidents(a) = cli.command else { panic!("not incidents") };
        assert_eq!(a.server.client().unwrap().server(), "https://noc:8443/");
    }

    #[test]
    fn server_options_and_token_never_shown() {
        let cli = parse(&["incidents", "--state", "declared", "--json", "--token", "tok", "--server", "h:1"]).unwrap();
        let Command::Incidents(a) = cli.command else { panic!("not incidents") };
        assert!(a.server.json && a.server.server.as_deref() == Some("h:1"));
        let mut cmd = Cli::command();
        for sub in ["incidents", "show", "declare", "update", "resolve", "cancel", "impact"] {
            let sub = cmd.find_subcommand_mut(sub).unwrap();
            let token = sub.get_arguments().find(|a| a.get_id() == "token").unwrap();
            assert!(token.is_hide_env_values_set());
            assert!(sub.render_long_help().to_string().contains("Exit codes"));
        }
    }
}
