//! `outagectl`: the NOC engineer's CLI. Offline tools (`simulate`,
//! `replay`) and incident commands against the daemon's HTTP API
//! (`incidents`, `show`, `declare`, `preview`, `approve`, `update`, `link`,
//! `resolve`, `cancel`, `impact`; the client and the tables live in
//! `outage::api::client`), `publish` (an alarm file onto the alarm topic)
//! and `completions` (with incident ids from the daemon, through the
//! hidden `__complete-ids`).

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
  2  bad command line (clap's message): also a bad --server URL, a missing --ca-file,
     --ctl-config or --polygon file, an invalid polygon, coordinates out of range
  3  daemon unreachable (not running at --server? connection refused, DNS, timeout)
  4  unauthorized or forbidden (no or bad token; a viewer token asking for an operator action)
  5  not found (e.g. unknown incident)
  6  request refused (400/409/422: invalid values, incident not in a state that allows it)";

/// `outagectl --version`: the crate's version and the git commit it was
/// built from (`build.rs`).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("OUTAGE_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "outagectl", version = VERSION, about = "NOC command line for the outage pipeline", after_help = EXIT_CODES)]
struct Cli {
    /// How to reach the daemon: accepted before or after the command.
    #[command(flatten)]
    opts: ServerOpts,
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
    /// Put an alarm file (native JSON lines, VES or TMF642, as the daemon
    /// reads them) onto the alarm topic, keyed by site: rehearse with a
    /// past feed.
    Publish(PublishArgs),
    /// Print shell completions, e.g. `outagectl completions bash >
    /// /etc/bash_completion.d/outagectl`. Incident ids are completed from
    /// the daemon (`OUTAGECTL_SERVER`/`OUTAGECTL_TOKEN` or the config
    /// file), for bash, zsh and fish.
    Completions { shell: clap_complete::Shell },
    /// The ids of the daemon's incidents, one per line (what the
    /// completion scripts call; prints nothing when the daemon does not answer).
    #[command(name = "__complete-ids", hide = true)]
    CompleteIds,
}

/// How to reach the daemon; global: `outagectl --server X incidents` and
/// `outagectl incidents --server X` are the same.
#[derive(clap::Args)]
#[command(next_help_heading = "Daemon")]
struct ServerOpts {
    /// The daemon's API base URL (http:// or https://; `host:port` means
    /// http://host:port). Default: the config file's `server`, else
    /// http://127.0.0.1:8080.
    #[arg(long, global = true, env = "OUTAGECTL_SERVER", value_name = "URL", value_parser = parse_server)]
    server: Option<String>,
    /// Bearer token. Prefer the environment variable or the config file: a
    /// flag is visible in the process list. Never printed.
    #[arg(long, global = true, env = "OUTAGECTL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Where `server`, `token` and `ca_file` are read from when neither flag nor
    /// environment gives them (TOML). Default
    /// `$XDG_CONFIG_HOME/outagectl/config.toml` (`~/.config/…`), if it exists.
    #[arg(long = "ctl-config", global = true, env = "OUTAGECTL_CONFIG", value_name = "FILE", value_parser = existing_file)]
    ctl_config: Option<PathBuf>,
    /// A PEM bundle of CA certificates trusted for an https:// server
    /// besides the built-in roots (a private CA, or a TLS proxy's).
    /// Default: the config file's `ca_file`, else none.
    #[arg(long, global = true, env = "OUTAGECTL_CA_FILE", value_name = "PEM", value_parser = existing_file)]
    ca_file: Option<PathBuf>,
    /// Give up on a request after this long (e.g. 10s, 1m).
    #[arg(long, global = true, env = "OUTAGECTL_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Print the answer as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `--server`: a usable base URL, else a usage error (exit 2). Empty (an
/// exported but empty `OUTAGECTL_SERVER`) is no value.
fn parse_server(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    client::base_url(s).map(|_| s.trim().to_string()).map_err(|e| e.to_string())
}

/// `--timeout`; empty is the default.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    if s.trim().is_empty() {
        return Ok(DEFAULT_TIMEOUT);
    }
    humantime::parse_duration(s.trim()).map_err(|e| e.to_string())
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A file that exists (a usage error, exit 2, when it does not). Empty (an
/// exported but empty variable) is no value.
fn existing_file(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Ok(PathBuf::new());
    }
    let p = PathBuf::from(s);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(_) => Err(format!("{s}: not a file")),
        Err(e) => Err(format!("{s}: {e}")),
    }
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
        // An empty value (an exported but empty variable) is none.
        let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let path = |v: &Option<PathBuf>| v.clone().filter(|p| !p.as_os_str().is_empty());
        let server = given(&self.server).or_else(|| legacy("OUTAGE_SERVER"));
        let token = given(&self.token).or_else(|| legacy("OUTAGE_TOKEN"));
        let ca_file = path(&self.ca_file).or_else(|| legacy("OUTAGE_CA_FILE").map(PathBuf::from));
        let file = if server.is_some() && token.is_some() && ca_file.is_some() {
            CtlConfig::default()
        } else {
            CtlConfig::load(path(&self.ctl_config).as_deref())?
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
}

#[derive(clap::Args)]
struct ShowArgs {
    /// Incident id, e.g. INC-20261123-3f9a1c2e.
    #[arg(value_parser = non_empty)]
    id: String,
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
    /// geometry, or a Feature with one; read and checked (valid, simple
    /// polygons) before anything is sent.
    #[arg(long, value_name = "FILE", value_parser = parse_polygon_arg)]
    polygon: Option<PolygonArg>,
    /// A circle: `LAT,LON,RADIUS_KM`, e.g. `41.82,-71.41,3` (latitude
    /// -90..90, longitude -180..180, radius above 0 and at most 500 km).
    #[arg(long, value_name = "LAT,LON,KM", value_parser = parse_circle, allow_hyphen_values = true)]
    circle: Option<Area>,
    /// The cause, in words.
    #[arg(long, value_parser = non_empty)]
    cause: String,
    /// When service went, if before now: RFC 3339 or ago (-45m, -2h).
    #[arg(long, value_parser = parse_since_arg, allow_hyphen_values = true)]
    since: Option<DateTime<Utc>>,
    /// Expected restoration: RFC 3339 (2026-11-23T18:00:00Z) or from now (+90m, +2h).
    #[arg(long, value_parser = parse_etr_arg, allow_hyphen_values = true)]
    etr: Option<DateTime<Utc>>,
    /// Customer-facing message.
    #[arg(long)]
    message: Option<String>,
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
        match &self.polygon {
            Some(PolygonArg::Area(a)) => Ok(a.clone()),
            Some(PolygonArg::Stdin) => {
                let text = std::io::read_to_string(std::io::stdin()).context("reading the polygon from stdin")?;
                polygon_area(&text).map_err(|e| usage_error(&format!("--polygon -: {e}")))
            }
            None => anyhow::bail!("give --postcode, --site, --polygon or --circle"),
        }
    }
}

/// `--polygon`: the area read from a file at parse time (a missing file or
/// bad GeoJSON is a usage error, exit 2), or stdin, read when needed.
#[derive(Clone, Debug)]
enum PolygonArg {
    Area(Area),
    Stdin,
}

fn parse_polygon_arg(s: &str) -> Result<PolygonArg, String> {
    if s == "-" {
        return Ok(PolygonArg::Stdin);
    }
    let text = std::fs::read_to_string(s).map_err(|e| format!("{s}: {e}"))?;
    polygon_area(&text).map(PolygonArg::Area).map_err(|e| format!("{s}: {e}"))
}

/// GeoJSON text (a Polygon or MultiPolygon, or a Feature with one) as an
/// area, checked as the daemon checks it: positions in range, rings
/// closed, no ring crossing itself.
fn polygon_area(text: &str) -> Result<Area, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    // A Feature carries its geometry.
    let geometry = if v.get("type").and_then(|t| t.as_str()) == Some("Feature") {
        v.get("geometry").cloned().unwrap_or_default()
    } else {
        v
    };
    let area = Area::Polygon(geometry);
    area.check_geometry().map_err(|e| e.to_string())?;
    Ok(area)
}

/// A usage error found after parsing: clap's message format, exit 2.
fn usage_error(msg: &str) -> anyhow::Error {
    use clap::CommandFactory;
    Cli::command().error(clap::error::ErrorKind::ValueValidation, msg).exit()
}

#[derive(clap::Args)]
struct LinkArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
    /// The incident to link it with.
    #[arg(value_parser = non_empty)]
    other: String,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["etr", "cause", "message"])))]
struct UpdateArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
    /// New expected restoration: RFC 3339 (2026-11-23T18:00:00Z) or from now (+90m, +2h).
    #[arg(long, value_parser = parse_etr_arg, allow_hyphen_values = true)]
    etr: Option<DateTime<Utc>>,
    /// New cause, in words.
    #[arg(long, value_parser = non_empty)]
    cause: Option<String>,
    /// New customer-facing message.
    #[arg(long)]
    message: Option<String>,
}

#[derive(clap::Args)]
struct ResolveArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
}

#[derive(clap::Args)]
struct CancelArgs {
    /// Incident id.
    #[arg(value_parser = non_empty)]
    id: String,
    /// Why it was a false positive (kept in the incident's timeline).
    #[arg(long, value_parser = non_empty)]
    reason: String,
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

/// `LAT,LON,RADIUS_KM`: finite numbers, a latitude and longitude in range
/// and a radius the daemon accepts (a usage error otherwise, exit 2: never
/// a NaN sent as `null`).
fn parse_circle(s: &str) -> Result<Area, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let nums: Vec<f64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    let [lat, lon, radius_km] = nums[..] else {
        return Err(format!("{s:?} is not LAT,LON,RADIUS_KM (e.g. 41.82,-71.41,3)"));
    };
    if parts.len() != 3 {
        return Err(format!("{s:?} is not LAT,LON,RADIUS_KM (e.g. 41.82,-71.41,3)"));
    }
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(format!("latitude {lat} is not between -90 and 90"));
    }
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(format!("longitude {lon} is not between -180 and 180"));
    }
    let max = outage::model::area::MAX_RADIUS_KM;
    if !(radius_km.is_finite() && radius_km > 0.0 && radius_km <= max) {
        return Err(format!("radius {radius_km} km is not above 0 and at most {max}"));
    }
    Ok(Area::Circle { lat, lon, radius_km })
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
    let other = if sign == '+' { '-' } else { '+' };
    if let Some(rel) = s.strip_prefix(other) {
        if humantime::parse_duration(rel.trim()).is_ok() {
            return Err(format!(
                "{s:?} is {}: {words} is written {examples}",
                if other == '-' { "in the past" } else { "in the future" }
            ));
        }
    }
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
    /// Write the credits the incidents would queue (one JSON credit per
    /// line, as on `billing.credits`), under the config's
    /// `[[plan.compensation.rules]]`: a rule change checked before it goes
    /// live. Rules with a period threshold (RD 899/2009) are accrued per
    /// customer and billing period; what never became due follows as one
    /// `{"status":"below_threshold",…}` line per customer, rule and period.
    /// Needs `--customers`.
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
    let Cli { opts, command } = Cli::parse();
    let result = match command {
        Command::Simulate(a) => simulate_cmd(a).await,
        Command::Replay(a) => replay_cmd(a, opts.json),
        Command::Publish(a) => publish::run(a).await,
        Command::Completions { shell } => completions(shell),
        Command::CompleteIds => {
            complete_ids(&opts).await;
            Ok(())
        }
        api => return api_main(api, &opts).await,
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

/// The subcommands whose positional arguments are incident ids.
const ID_COMMANDS: [&str; 7] = ["show", "preview", "approve", "link", "update", "resolve", "cancel"];

/// clap_complete's script for `shell`, with incident ids completed from
/// the daemon through `outagectl __complete-ids` where a command takes one.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    std::io::stdout().write_all(completion_script(shell)?.as_bytes())?;
    Ok(())
}

fn completion_script(shell: clap_complete::Shell) -> anyhow::Result<String> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "outagectl", &mut buf);
    let script = String::from_utf8(buf).context("completion script")?;
    let ids = ID_COMMANDS.join(" ");
    let script = match shell {
        Shell::Bash => {
            let hook = format!(
                r#"
# Incident ids from the daemon (outagectl __complete-ids) for: {ids}
_outagectl_with_ids() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" w sub=""
    for w in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$w" in {alts}) sub="$w"; break ;; esac
    done
    if [[ -n "$sub" && "$cur" != -* && ( "$prev" != --* || "$prev" == --json ) ]]; then
        COMPREPLY=( $(compgen -W "$(outagectl __complete-ids 2>/dev/null)" -- "$cur") )
        return 0
    fi
    _outagectl "$@"
}}
"#,
                alts = ID_COMMANDS.join("|")
            );
            script.replace("complete -F _outagectl ", "complete -F _outagectl_with_ids ") + &hook
        }
        Shell::Zsh => {
            let hook = "\n_outagectl_incident_ids() {\n    local -a ids\n    ids=(${(f)\"$(outagectl __complete-ids 2>/dev/null)\"})\n    compadd -a ids\n}\n";
            let mut out = String::new();
            for line in script.lines() {
                let is_id = line.starts_with("':id -- ") || line.starts_with("':other -- ");
                match line.strip_suffix(":_default' \\") {
                    Some(head) if is_id => out.push_str(&format!("{head}:_outagectl_incident_ids' \\")),
                    _ => out.push_str(line),
                }
                out.push('\n');
                if line.starts_with("#compdef") {
                    out.push_str(hook);
                }
            }
            out
        }
        Shell::Fish => {
            let conds = ID_COMMANDS.join(" ");
            script + &format!("complete -c outagectl -n \"__fish_seen_subcommand_from {conds}\" -f -a \"(outagectl __complete-ids 2>/dev/null)\"\n")
        }
        _ => script,
    };
    Ok(script)
}

/// `__complete-ids`: every incident the daemon lists but dismissed and
/// merged ones, open ones first; nothing (and exit 0) when it does not
/// answer within 3 s: a completion must never hang a shell or print errors.
async fn complete_ids(opts: &ServerOpts) {
    let Ok(c) = opts.client() else { return };
    let Ok(Ok(mut list)) = tokio::time::timeout(Duration::from_secs(3), c.incidents(None)).await else { return };
    client::drop_untold(&mut list);
    list.sort_by_key(|i| (!i.state.is_open(), std::cmp::Reverse(i.updated_at)));
    let mut out = std::io::stdout().lock();
    for i in list {
        if writeln!(out, "{}", client::sanitize(&i.id.0)).is_err() {
            return;
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The API commands: `outagectl: <message>` on stderr and the documented
/// exit code on failure.
async fn api_main(cmd: Command, opts: &ServerOpts) -> ExitCode {
    match api_cmd(cmd, opts).await {
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

async fn api_cmd(cmd: Command, opts: &ServerOpts) -> anyhow::Result<()> {
    match cmd {
        Command::Incidents(a) => {
            let mut list = opts.client()?.incidents(a.state).await?;
            let hidden = if a.all || a.state.is_some() { 0 } else { client::drop_untold(&mut list) };
            client::sort_incidents(&mut list);
            output(opts.json, &list, || {
                let mut out = client::incidents_table(&list);
                if hidden > 0 {
                    out.push_str(&format!("({hidden} dismissed or merged not shown: --all lists them)\n"));
                }
                out
            })
        }
        Command::Show(a) => {
            let inc = opts.client()?.incident(&IncidentId(a.id.into())).await?;
            output(opts.json, &inc, || client::incident_details(&inc))
        }
        Command::Declare(a) => {
            let area = a.area()?;
            let req = DeclareRequest { cause: a.cause, area, since: a.since, etr: a.etr, message: a.message };
            let inc = opts.client()?.declare(&req).await?;
            output(opts.json, &inc, || {
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
            let p = opts.client()?.preview(&IncidentId(a.id.into())).await?;
            output(opts.json, &p, || client::preview_table(&p))
        }
        Command::Approve(a) => {
            let inc = opts.client()?.approve(&IncidentId(a.id.into())).await?;
            output(opts.json, &inc, || format!("approved {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Link(a) => {
            let inc = opts.client()?.link(&IncidentId(a.id.into()), &IncidentId(a.other.into())).await?;
            output(opts.json, &inc, || format!("linked {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Update(a) => {
            let req = UpdateRequest { cause: a.cause, etr: a.etr, message: a.message };
            let inc = opts.client()?.update(&IncidentId(a.id.into()), &req).await?;
            output(opts.json, &inc, || format!("updated {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Resolve(a) => {
            let inc = opts.client()?.resolve(&IncidentId(a.id.into())).await?;
            output(opts.json, &inc, || format!("resolved {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Cancel(a) => {
            let inc = opts.client()?.cancel(&IncidentId(a.id.into()), &CancelRequest { reason: a.reason }).await?;
            output(opts.json, &inc, || format!("cancelled {}\n\n{}", inc.id, client::incident_details(&inc)))
        }
        Command::Impact(a) => {
            let q = match (a.postcode, a.msisdn, a.customer_id) {
                (Some(p), _, _) => ImpactQuery::Postcode(p),
                (_, Some(m), _) => ImpactQuery::Msisdn(m),
                (_, _, Some(c)) => ImpactQuery::CustomerId(c),
                // clap's "who" group requires exactly one.
                (None, None, None) => anyhow::bail!("give --postcode, --msisdn or --customer-id"),
            };
            let r = opts.client()?.impact(&q).await?;
            output(opts.json, &r, || client::impact_text(&r))
        }
        Command::Simulate(_)
        | Command::Replay(_)
        | Command::Publish(_)
        | Command::Completions { .. }
        | Command::CompleteIds => anyhow::bail!("offline commands are run by main"),
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

fn replay_cmd(a: ReplayArgs, json: bool) -> anyhow::Result<()> {
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
    let mut below = Vec::new();
    let report =
        outage::replay::replay_with_ledger(lines, std::sync::Arc::new(refdata), &cfg, &mut write_credit, &mut |b| {
            below.push(b);
            Ok(())
        })
        .with_context(|| a.alarms.display().to_string())?;
    if let Some((mut w, path)) = credits_out {
        let mut unpaid = std::collections::BTreeMap::<String, outage::model::Money>::new();
        for b in &below {
            serde_json::to_writer(&mut w, b).map_err(std::io::Error::from)?;
            w.write_all(b"\n")?;
            let zero = outage::model::Money { minor: 0, currency: b.amount.currency };
            unpaid.entry(b.amount.currency.to_string()).or_insert(zero).minor += b.amount.minor;
        }
        w.flush().with_context(|| path.display().to_string())?;
        let totals: Vec<String> = totals.values().map(|m| m.to_string()).collect();
        eprintln!("{n} credits written to {} ({})", path.display(), totals.join(", "));
        if !below.is_empty() {
            let unpaid: Vec<String> = unpaid.values().map(|m| m.to_string()).collect();
            eprintln!(
                "{} customer billing periods below their threshold, not credited ({})",
                below.len(),
                unpaid.join(", ")
            );
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
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

#[derive(clap::Args)]
struct PublishArgs {
    /// The alarm file: JSON records one after another — JSON lines as
    /// `simulate --out` writes them, pretty-printed documents, or a JSON
    /// array of records — in any format the daemon reads (native v1, VES
    /// incl. stndDefined and `eventList`, TMF642; detected per record).
    #[arg(value_name = "FILE", value_parser = existing_file)]
    file: PathBuf,
    /// Kafka bootstrap servers (`host:port,…`). Default: the `--config`
    /// file's `kafka.bootstrap`.
    #[arg(long, value_name = "BOOTSTRAP")]
    kafka: Option<String>,
    /// The topic. Default: the `--config` file's `kafka.topics.alarms`, else noc.alarms.
    #[arg(long)]
    topic: Option<String>,
    /// The daemon's configuration (TOML, with its `OUTAGE_*` variables):
    /// its `[kafka.client]` properties (TLS, SASL) are used as the daemon
    /// uses them, its bootstrap and alarm topic are the defaults.
    #[arg(long, value_name = "FILE", value_parser = existing_file)]
    config: Option<PathBuf>,
    /// Messages per second (default: as fast as the broker takes them).
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: Option<f64>,
    /// `now`: shift every event time so that the earliest alarm is now,
    /// keeping the spacing (a past feed replayed as if it happened today).
    #[arg(long, value_enum)]
    retime: Option<publish::Retime>,
    /// Leave out records the daemon would dead-letter (undecodable, no
    /// alarm change, unsupported) instead of refusing the file.
    #[arg(long)]
    skip_invalid: bool,
}

/// `--rate`: a finite number above 0.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a rate above 0 (messages per second)")),
    }
}

/// `outagectl publish`: an alarm file onto the alarm topic.
mod publish {
    use super::PublishArgs;
    use anyhow::Context;
    use chrono::{DateTime, Utc};
    use outage::sources::decode::decode_formats;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use serde_json::Value;
    use std::time::Duration;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
    pub enum Retime {
        /// The earliest alarm at the moment of publishing.
        Now,
    }

    /// One record to produce: its key (the site of its first alarm), the
    /// payload, and its alarms' event times.
    #[derive(Debug)]
    pub struct Record {
        pub key: String,
        pub value: Value,
        pub times: Vec<DateTime<Utc>>,
    }

    /// The records of a file: consecutive JSON values (JSON lines,
    /// pretty-printed documents, or arrays of records), each decoded as the
    /// daemon would. A record the daemon would dead-letter is an error
    /// naming it and why, or left out with `skip_invalid`; a record carrying
    /// no alarm (a VES heartbeat) is left out. Returns the records and how
    /// many were left out.
    pub fn read(text: &str, skip_invalid: bool) -> anyhow::Result<(Vec<Record>, usize)> {
        let mut values = Vec::new();
        for (i, v) in serde_json::Deserializer::from_str(text).into_iter::<Value>().enumerate() {
            match v.with_context(|| format!("record {}: not JSON", i + 1))? {
                Value::Array(items) => values.extend(items),
                v => values.push(v),
            }
        }
        let (mut records, mut bad, mut skipped) = (Vec::new(), Vec::new(), 0usize);
        for (i, value) in values.into_iter().enumerate() {
            let payload = serde_json::to_vec(&value)?;
            let decoded = decode_formats(&payload);
            let errors: Vec<String> = decoded
                .iter()
                .filter_map(|(f, r)| r.as_ref().err().map(|e| format!("record {} ({f}): {e}", i + 1)))
                .collect();
            if !errors.is_empty() {
                skipped += 1;
                bad.extend(errors);
                continue;
            }
            let alarms: Vec<_> = decoded.into_iter().filter_map(|(_, r)| r.ok()).collect();
            let Some(first) = alarms.first() else {
                skipped += 1;
                continue;
            };
            records.push(Record {
                key: first.site_id.clone(),
                times: alarms.iter().map(|a| a.event_time).collect(),
                value,
            });
        }
        if !bad.is_empty() && !skip_invalid {
            let more = if bad.len() > 5 { format!("\n  … and {} more", bad.len() - 5) } else { String::new() };
            anyhow::bail!(
                "{} of the file's alarms would be dead-lettered (nothing was published; --skip-invalid leaves them out):\n  {}{more}",
                bad.len(),
                bad[..bad.len().min(5)].join("\n  ")
            );
        }
        Ok((records, skipped))
    }

    /// Every event time in `v` shifted by `by`: RFC 3339 strings under keys
    /// ending in `Time`/`_time` (`event_time`, `eventTime`,
    /// `alarmRaisedTime`, …) and VES epochs (`…EpochMicrosec`, numbers or
    /// quoted numbers), at any depth; the rest untouched.
    pub fn shift(v: &mut Value, by: chrono::Duration) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let time_key = k.ends_with("Time") || k.ends_with("_time");
                    if k.ends_with("EpochMicrosec") {
                        let micros = match x {
                            Value::Number(n) => n.as_f64(),
                            Value::String(s) => s.trim().parse::<f64>().ok(),
                            _ => None,
                        };
                        if let Some(m) = micros {
                            let shifted = (m + by.num_microseconds().unwrap_or(0) as f64).round() as i64;
                            *x = if x.is_string() { Value::String(shifted.to_string()) } else { shifted.into() };
                        }
                    } else if let (true, Value::String(s)) = (time_key, &*x) {
                        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                            let t = t.with_timezone(&Utc) + by;
                            *x = Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
                        }
                    } else {
                        shift(x, by);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| shift(x, by)),
            _ => {}
        }
    }

    /// Shift every record so the earliest alarm is at `now`, and check
    /// that each record's alarms moved by exactly that (within a
    /// millisecond: VES epochs may be written as floats).
    pub fn retime(records: &mut [Record], now: DateTime<Utc>) -> anyhow::Result<chrono::Duration> {
        let Some(first) = records.iter().flat_map(|r| r.times.iter()).min().copied() else {
            return Ok(chrono::Duration::zero());
        };
        let by = now - first;
        for (i, r) in records.iter_mut().enumerate() {
            shift(&mut r.value, by);
            let payload = serde_json::to_vec(&r.value)?;
            let times: Vec<DateTime<Utc>> =
                decode_formats(&payload).into_iter().filter_map(|(_, a)| a.ok()).map(|a| a.event_time).collect();
            let moved = times.len() == r.times.len()
                && times.iter().zip(&r.times).all(|(t, o)| (*t - (*o + by)).num_milliseconds().abs() <= 1);
            anyhow::ensure!(
                moved,
                "record {}: its event times could not be shifted (a time field this tool does not know)",
                i + 1
            );
            r.times = times;
        }
        Ok(by)
    }

    pub async fn run(a: PublishArgs) -> anyhow::Result<()> {
        let cfg = match &a.config {
            Some(p) => Some(outage::config::Config::load(Some(p))?),
            None => None,
        };
        let bootstrap = a
            .kafka
            .clone()
            .or_else(|| cfg.as_ref().and_then(|c| c.kafka.bootstrap.clone()))
            .context("give --kafka BOOTSTRAP (or a --config with kafka.bootstrap)")?;
        let topic = a
            .topic
            .clone()
            .or_else(|| cfg.as_ref().map(|c| c.kafka.topics.alarms.clone()))
            .unwrap_or_else(|| "noc.alarms".into());
        let text = std::fs::read_to_string(&a.file).with_context(|| a.file.display().to_string())?;
        let (mut records, skipped) = read(&text, a.skip_invalid).with_context(|| a.file.display().to_string())?;
        anyhow::ensure!(!records.is_empty(), "{}: no alarm to publish", a.file.display());
        if a.retime == Some(Retime::Now) {
            let by = retime(&mut records, Utc::now())?;
            eprintln!("event times shifted by {}", humantime::format_duration(by.to_std().unwrap_or_default()));
        }
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &bootstrap);
        for (k, v) in cfg.iter().flat_map(|c| c.kafka.client.iter()) {
            c.set(k, v);
        }
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", outage::kafka::MESSAGE_MAX_BYTES.to_string());
        let producer: FutureProducer = c.create().context("creating the Kafka producer")?;
        let bar = indicatif::ProgressBar::new(records.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records · {per_sec} · eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut pace = a.rate.map(|r| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        let payloads: Vec<(String, String)> = records.iter().map(|r| (r.key.clone(), r.value.to_string())).collect();
        let mut pending = futures::stream::FuturesUnordered::new();
        for (key, payload) in &payloads {
            outage::kafka::check_record(&topic, || format!("key {key}"), key.as_bytes(), payload.as_bytes())?;
        }
        use futures::StreamExt;
        let acked = |r: Result<_, (rdkafka::error::KafkaError, _)>| {
            r.map(|_| ()).map_err(|(e, _)| e).with_context(|| format!("publishing to {topic} on {bootstrap}"))
        };
        for (key, payload) in &payloads {
            if let Some(p) = pace.as_mut() {
                // Wait for the next slot, counting acknowledgements meanwhile.
                loop {
                    tokio::select! {
                        _ = p.tick() => break,
                        Some(r) = pending.next(), if !pending.is_empty() => {
                            acked(r)?;
                            bar.inc(1);
                        }
                    }
                }
            }
            pending.push(producer.send(FutureRecord::to(&topic).key(key).payload(payload), Duration::from_secs(30)));
        }
        while let Some(r) = pending.next().await {
            acked(r)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let left =
            if skipped > 0 { format!(" ({skipped} records without a usable alarm left out)") } else { String::new() };
        eprintln!("published {} records to {topic} on {bootstrap}{left}", records.len());
        Ok(())
    }
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
        for sub in Cli::command().get_subcommands().filter(|s| !s.is_hide_set()) {
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
    fn ca_file_is_read_and_a_missing_one_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let args = ["incidents", "--server", "https://noc:8443", "--token", "t", "--ca-file"];
        let e = parse(&[&args[..], &[missing.to_str().unwrap()]].concat()).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--ca-file") && e.to_string().contains("missing.pem"), "{e}");
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
        let cli = parse(&[&args[..], &[ca]].concat()).unwrap();
        assert_eq!(cli.opts.client().unwrap().server(), "https://noc:8443/");
        // A file that is not PEM is named when the client is made.
        let not_pem = dir.path().join("x.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let cli = parse(&[&args[..], &[not_pem.to_str().unwrap()]].concat()).unwrap();
        let e = format!("{:#}", cli.opts.client().unwrap_err());
        assert!(e.contains("--ca-file") && e.contains("x.pem"), "{e}");
    }

    #[test]
    fn server_options_are_global_and_the_token_never_shown() {
        // Before and after the command alike.
        for args in [
            &["--server", "h:1", "--json", "incidents", "--state", "declared", "--token", "tok"][..],
            &["incidents", "--state", "declared", "--json", "--token", "tok", "--server", "h:1"][..],
        ] {
            let cli = parse(args).unwrap();
            assert!(cli.opts.json && cli.opts.server.as_deref() == Some("h:1"), "{args:?}");
            assert_eq!(cli.opts.token.as_deref(), Some("tok"));
            assert!(matches!(cli.command, Command::Incidents(_)));
        }
        let mut cmd = Cli::command();
        cmd.build();
        for sub in ["incidents", "show", "declare", "update", "resolve", "cancel", "impact"] {
            let sub = cmd.find_subcommand_mut(sub).unwrap();
            let token = sub.get_arguments().find(|a| a.get_id() == "token").unwrap();
            assert!(token.is_hide_env_values_set() && token.is_global_set());
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Exit codes"), "{help}");
            // Optional, so not in the usage line.
            let usage = sub.render_usage().to_string();
            assert!(!usage.contains("--server") && !usage.contains("--token"), "{usage}");
        }
    }

    #[test]
    fn empty_values_are_no_values() {
        // What exported but empty OUTAGECTL_* variables give.
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, "").unwrap();
        let cli = parse(&["--server", "", "incidents", "--ca-file", "", "--timeout", " ", "--ctl-config"])
            .err()
            .map(|e| e.kind());
        assert!(cli.is_some(), "--ctl-config needs a value");
        let args =
            ["--server", "", "incidents", "--ca-file", "", "--timeout", " ", "--ctl-config", cfg.to_str().unwrap()];
        let cli = parse(&args).unwrap();
        assert_eq!(cli.opts.timeout, DEFAULT_TIMEOUT);
        assert_eq!(cli.opts.client().unwrap().server(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn version_says_the_crate_version_and_the_commit() {
        let v = Cli::command().render_version().to_string();
        assert!(v.starts_with(&format!("outagectl {} (git ", env!("CARGO_PKG_VERSION"))), "{v}");
        assert!(v.trim_end().ends_with(')') && !v.contains("(git )"), "{v}");
    }

    #[test]
    fn usage_errors_are_clap_errors_exit_2() {
        let kind = |args: &[&str]| parse(args).err().map(|e| (e.kind(), e.exit_code()));
        let invalid = Some((clap::error::ErrorKind::ValueValidation, 2));
        assert_eq!(kind(&["--server", "ftp://noc", "incidents"]), invalid);
        assert_eq!(kind(&["incidents", "--server", "http://"]), invalid);
        assert_eq!(kind(&["declare", "--cause", "x", "--polygon", "/nonexistent/area.geojson"]), invalid);
        for circle in
            ["NaN,-71.4,3", "41.8,inf,3", "91,-71.4,3", "41.8,-181,3", "41.8,-71.4,0", "41.8,-71.4,NaN", "1,2"]
        {
            assert_eq!(kind(&["declare", "--cause", "x", "--circle", circle]), invalid, "{circle}");
        }
        let cli = parse(&["declare", "--cause", "x", "--circle", "-33.92,18.42,3"]).unwrap();
        let Command::Declare(a) = cli.command else { panic!("not declare") };
        assert_eq!(a.area().unwrap(), Area::Circle { lat: -33.92, lon: 18.42, radius_km: 3.0 });
    }

    #[test]
    fn a_polygon_file_is_read_and_checked_at_parse_time() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: serde_json::Value| {
            let p = dir.path().join(name);
            std::fs::write(&p, v.to_string()).unwrap();
            p.to_str().unwrap().to_string()
        };
        let ring = |pts: &[[f64; 2]]| serde_json::json!({"type": "Polygon", "coordinates": [pts]});
        let square = [[-71.4, 41.8], [-71.3, 41.8], [-71.3, 41.9], [-71.4, 41.9], [-71.4, 41.8]];
        let bow_tie = [[-71.4, 41.8], [-71.3, 41.9], [-71.3, 41.8], [-71.4, 41.9], [-71.4, 41.8]];
        let ok = write("ok.geojson", serde_json::json!({"type": "Feature", "geometry": ring(&square)}));
        let cli = parse(&["declare", "--cause", "x", "--polygon", &ok]).unwrap();
        let Command::Declare(a) = cli.command else { panic!("not declare") };
        assert_eq!(a.area().unwrap(), Area::Polygon(ring(&square)));
        let bad = write("bow.geojson", ring(&bow_tie));
        let e = parse(&["declare", "--cause", "x", "--polygon", &bad]).err().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("self-intersection"), "{e}");
        let not_json = dir.path().join("x.geojson");
        std::fs::write(&not_json, "{").unwrap();
        assert!(parse(&["declare", "--cause", "x", "--polygon", not_json.to_str().unwrap()]).is_err());
    }

    #[test]
    fn negative_relative_times_are_values_not_flags() {
        let cli = parse(&["declare", "--postcode", "1", "--cause", "x", "--since", "-45m"]).unwrap();
        let Command::Declare(a) = cli.command else { panic!("not declare") };
        let ago = Utc::now() - a.since.unwrap();
        assert!((44..=45).contains(&ago.num_minutes()), "{ago}");
        // `--etr -1h` is read as the value -1h, and refused in words.
        for args in [&["update", "INC-1", "--etr", "-1h"][..], &["update", "INC-1", "--etr=-1h"][..]] {
            let e = parse(args).err().unwrap();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
            assert!(e.to_string().contains("in the past") && e.to_string().contains("+90m"), "{e}");
        }
        assert!(parse(&["declare", "--postcode", "1", "--cause", "x", "--since=-2h"]).is_ok());
    }

    #[test]
    fn completion_scripts_call_for_incident_ids() {
        use clap_complete::Shell;
        let bash = completion_script(Shell::Bash).unwrap();
        assert!(bash.contains("complete -F _outagectl_with_ids ") && !bash.contains("complete -F _outagectl "));
        // The hook parses (bash is on every machine the project runs on).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outagectl.bash");
        std::fs::write(&path, &bash).unwrap();
        let check = std::process::Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        assert!(bash.contains("outagectl __complete-ids") && bash.contains("show|preview|approve|link|update"));
        let zsh = completion_script(Shell::Zsh).unwrap();
        let ids: Vec<&str> = zsh.lines().filter(|l| l.ends_with(":_outagectl_incident_ids' \\")).collect();
        // show, preview, approve, update, resolve, cancel: id; link: id and other.
        assert_eq!(ids.len(), 8, "{ids:#?}");
        assert!(zsh.contains("_outagectl_incident_ids() {") && zsh.contains("outagectl __complete-ids"));
        let fish = completion_script(Shell::Fish).unwrap();
        assert!(
            fish.contains("__fish_seen_subcommand_from show preview") && fish.contains("(outagectl __complete-ids")
        );
    }

    #[test]
    fn publish_reads_every_format_and_keys_by_site() {
        let feeds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/feeds");
        let read = |p: &str| std::fs::read_to_string(format!("{feeds}/{p}")).unwrap();
        let native = r#"{"alarm_id":"A1","site_id":"S-RI-000241","state":"raised","severity":"critical","probable_cause":"powerProblem","event_time":"2026-11-23T04:00:00Z"}"#;
        let text = format!(
            "{native}\n{}\n{}\n{}",
            read("ves/fault-7.2-los-raise.json"),
            read("tmf642/alarm-create-event-los.json"),
            read("ves/fault-7.0-onap-exponent-epoch.json")
        );
        let (mut records, skipped) = publish::read(&text, false).unwrap();
        assert_eq!((records.len(), skipped), (4, 0));
        assert_eq!(records[0].key, "S-RI-000241");
        let now: DateTime<Utc> = "2030-01-01T12:00:00Z".parse().unwrap();
        let before: Vec<_> = records.iter().map(|r| r.times.clone()).collect();
        let by = publish::retime(&mut records, now).unwrap();
        let first = records.iter().flat_map(|r| r.times.iter()).min().copied().unwrap();
        assert_eq!(first, now);
        for (r, b) in records.iter().zip(&before) {
            assert_eq!(r.times, b.iter().map(|t| *t + by).collect::<Vec<_>>(), "spacing kept");
        }
        // A record the daemon would dead-letter stops the file, named.
        let ack = read("stnddefined/notify-ack-state-changed.json");
        let e = publish::read(&format!("{native}\n{ack}"), false).unwrap_err().to_string();
        assert!(e.contains("record 2") && e.contains("--skip-invalid"), "{e}");
        let (records, skipped) = publish::read(&format!("{native}\n{ack}"), true).unwrap();
        assert_eq!((records.len(), skipped), (1, 1));
    }
}
