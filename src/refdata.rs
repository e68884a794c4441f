//! Loading and indexing reference data (sites, postcodes, customers, and the
//! optional network element → site table) from CSV.
//!
//! Owns: CSV parsing with errors that name file and line, validation of every
//! row, and the in-memory indexes the pure core queries (an R-tree of sites
//! and of postcodes, customers by postcode). Loading is the only I/O here;
//! everything after [`RefData::load`] is pure lookup.

use crate::geodesy::{self, GeoPoint};
use crate::model::money::{Currency, Money};
use crate::model::{Customer, OptOut, Postcode, Services, Site};
use foldhash::HashMap;
use rstar::RTree;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A reference-data error: always names the file and, for row errors, the
/// 1-based line number in that file (the header is line 1).
#[derive(Debug, thiserror::Error)]
pub enum RefDataError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Row { file: PathBuf, line: u64, message: String },
    /// More rows of a file were turned away than `refdata.max_bad_ratio`
    /// allows: an export this broken is not loaded at all.
    #[error("{file}: {bad} of {read} rows rejected, above the budget refdata.max_bad_ratio = {ratio}\n{summary}")]
    OverBudget { file: PathBuf, bad: u64, read: u64, ratio: f64, summary: String },
}

/// Why a row was turned away (the `problem` label of
/// `outage_refdata_rows_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// Not a row of this file: a missing or unparsable field, a bad
    /// coordinate, amount or id.
    Malformed,
    /// An id (customer, site, postcode, element) already given by an
    /// earlier line.
    DuplicateId,
    /// A customer's postcode is not in the postcodes file (or was rejected).
    UnknownPostcode,
    /// An element's site is not in the sites file (or was rejected).
    UnknownSite,
    /// An MSISDN that is not an E.164 number (nor a national one of
    /// `refdata.default_country`).
    BadMsisdn,
    /// An e-mail address that does not parse (RFC 5321/5322 syntax).
    BadEmail,
    /// A postcode's time zone is not an IANA zone.
    UnknownTimezone,
    /// A service other than mobile, voice, broadband.
    UnknownService,
    /// A currency that is not an active ISO 4217 code.
    UnknownCurrency,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Malformed => "malformed",
            Problem::DuplicateId => "duplicate_id",
            Problem::UnknownPostcode => "unknown_postcode",
            Problem::UnknownSite => "unknown_site",
            Problem::BadMsisdn => "bad_msisdn",
            Problem::BadEmail => "bad_email",
            Problem::UnknownTimezone => "unknown_timezone",
            Problem::UnknownService => "unknown_service",
            Problem::UnknownCurrency => "unknown_currency",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row turned away: file and line, why, and what (contacts masked).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// `sites`, `postcodes`, `customers` or `elements`.
    pub kind: &'static str,
    pub file: PathBuf,
    pub line: u64,
    pub problem: Problem,
    pub message: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Every row turned away while loading, and how many rows each file had.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rejections {
    pub rows: Vec<Rejected>,
    /// Per file (kind, path): data rows read, good and bad.
    pub read: Vec<(&'static str, PathBuf, u64)>,
}

impl Rejections {
    /// Rejected rows per (file kind, problem).
    pub fn counts(&self) -> std::collections::BTreeMap<(&'static str, Problem), u64> {
        let mut out = std::collections::BTreeMap::new();
        for r in &self.rows {
            *out.entry((r.kind, r.problem)).or_default() += 1;
        }
        out
    }

    /// Counts per file and problem, each with its first `examples` rows.
    pub fn summary(&self, examples: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for (kind, path, read) in &self.read {
            let bad: Vec<&Rejected> = self.rows.iter().filter(|r| r.kind == *kind).collect();
            let _ = writeln!(out, "{}: {read} rows, {} rejected", path.display(), bad.len());
            for ((k, problem), n) in self.counts() {
                if k != *kind {
                    continue;
                }
                let _ = writeln!(out, "  {problem}: {n}");
                for r in bad.iter().filter(|r| r.problem == problem).take(examples) {
                    let _ = writeln!(out, "    {r}");
                }
            }
        }
        out
    }

    /// `outage_refdata_rows_rejected_total{file,problem}` in Prometheus'
    /// text format (every file, even with nothing rejected).
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let name = "outage_refdata_rows_rejected_total";
        let mut out = format!(
            "# HELP {name} Reference data rows rejected at load, by file and problem.\n# TYPE {name} counter\n"
        );
        let counts = self.counts();
        for (kind, _, _) in &self.read {
            if !counts.keys().any(|(k, _)| k == kind) {
                let _ = writeln!(out, "{name}{{file=\"{kind}\",problem=\"none\"}} 0");
            }
        }
        for ((kind, problem), n) in counts {
            let _ = writeln!(out, "{name}{{file=\"{kind}\",problem=\"{problem}\"}} {n}");
        }
        out
    }

    /// The first file whose rejected share exceeds `max_ratio`.
    pub fn over_budget(&self, max_ratio: f64) -> Option<(PathBuf, u64, u64)> {
        self.read.iter().find_map(|(kind, path, read)| {
            let bad = self.rows.iter().filter(|r| r.kind == *kind).count() as u64;
            (bad > 0 && bad as f64 > max_ratio * *read as f64).then(|| (path.clone(), bad, *read))
        })
    }

    /// The first rejection as a hard error (the strict loaders).
    fn first_error(&self) -> Option<RefDataError> {
        self.rows.first().map(|r| RefDataError::Row {
            file: r.file.clone(),
            line: r.line,
            message: format!("{}: {}", r.problem, r.message),
        })
    }
}

/// How rows are checked beyond their columns' types.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// ISO 3166 alpha-2 country whose national numbers (`(401) 555-0100`,
    /// `612 345 678`) are accepted and written in E.164; none: only
    /// international numbers (`+…`, `00…`).
    pub default_country: Option<String>,
}

#[derive(Deserialize)]
struct SiteRow {
    site_id: String,
    lat: f64,
    lon: f64,
    radius_km: f64,
    #[serde(default)]
    group_id: Option<String>,
}

#[derive(Deserialize)]
struct ElementRow {
    element_id: String,
    site_id: String,
}

#[derive(Deserialize)]
struct PostcodeRow {
    postcode: String,
    lat: f64,
    lon: f64,
    #[serde(default)]
    population: Option<u64>,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Deserialize)]
struct CustomerRow {
    customer_id: String,
    #[serde(default)]
    msisdn: Option<String>,
    #[serde(default)]
    email: Option<String>,
    postcode: String,
    language: String,
    services: String,
    /// Optional column: `sms;email`, either, or empty.
    #[serde(default)]
    opt_out: Option<String>,
    /// Optional column: the day of the month (1–28) the customer's
    /// billing period starts; empty or absent: the configured default.
    #[serde(default)]
    billing_cycle_day: Option<String>,
    monthly_fee: String,
    avg_bill_3m: String,
    currency: String,
}

type RowResult<T> = Result<T, (Problem, String)>;

/// Read every row of a CSV file with a header into `T`, converting each with
/// `check`; a bad row is recorded in `rejected` (file, line, problem) and
/// skipped. Only a file that cannot be read, or its header, stops the load.
fn read_csv<R, T>(
    kind: &'static str,
    path: &Path,
    rejected: &mut Rejections,
    mut check: impl FnMut(R, u64) -> RowResult<T>,
) -> Result<Vec<T>, RefDataError>
where
    R: for<'de> Deserialize<'de>,
{
    let file = std::fs::File::open(path).map_err(|source| RefDataError::Io { file: path.to_path_buf(), source })?;
    let mut rdr =
        csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    let headers = rdr
        .headers()
        .map_err(|e| RefDataError::Row { file: path.to_path_buf(), line: 1, message: e.to_string() })?
        .clone();
    let mut read = 0u64;
    let mut reject = |line: u64, (problem, message): (Problem, String)| {
        rejected.rows.push(Rejected { kind, file: path.to_path_buf(), line, problem, message });
    };
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) if e.is_io_error() => {
                return Err(RefDataError::Row { file: path.to_path_buf(), line, message: e.to_string() })
            }
            Err(e) => {
                read += 1;
                let line = e.position().map(|p| p.line()).unwrap_or(line);
                reject(line, (Problem::Malformed, e.to_string()));
                continue;
            }
        }
        read += 1;
        let line = rec.position().map(|p| p.line()).unwrap_or(line);
        let row = match rec.deserialize::<R>(Some(&headers)) {
            Ok(row) => row,
            Err(e) => {
                reject(line, (Problem::Malformed, csv_message(&e)));
                continue;
            }
        };
        match check(row, line) {
            Ok(t) => out.push(t),
            Err(why) => reject(line, why),
        }
    }
    rejected.read.push((kind, path.to_path_buf(), read));
    Ok(out)
}

/// The csv crate's message without its own (record-relative) position.
fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(i) => format!("field {}: {}", i + 1, err.kind()),
            None => err.kind().to_string(),
        },
        _ => e.to_string(),
    }
}

fn check_coords(lat: f64, lon: f64) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!("coordinates out of range: lat {lat}, lon {lon}"));
    }
    Ok(())
}

fn nonempty(field: &str, v: String) -> Result<String, String> {
    if v.is_empty() {
        Err(format!("{field} is empty"))
    } else {
        Ok(v)
    }
}

/// Customer ids are part of action ids (`incident/customer/channel/kind`),
/// so they cannot hold a `/`.
fn customer_id(v: String) -> Result<String, String> {
    if v.contains('/') {
        return Err(format!("customer_id {v:?} contains '/'"));
    }
    nonempty("customer_id", v)
}

/// Malformed, with its message.
fn bad<T>(r: Result<T, String>) -> RowResult<T> {
    r.map_err(|m| (Problem::Malformed, m))
}

/// Ids seen so far in a file, with their line: a later duplicate is rejected.
#[derive(Default)]
struct Seen(HashMap<String, u64>);

impl Seen {
    fn first(&mut self, what: &str, id: &str, line: u64) -> RowResult<()> {
        match self.0.get(id) {
            Some(first) => Err((Problem::DuplicateId, format!("{what} {id:?} already at line {first}"))),
            None => {
                self.0.insert(id.to_string(), line);
                Ok(())
            }
        }
    }
}

fn sites_checked(path: &Path, rejected: &mut Rejections) -> Result<Vec<Site>, RefDataError> {
    let mut seen = Seen::default();
    read_csv("sites", path, rejected, |r: SiteRow, line| {
        bad(check_coords(r.lat, r.lon))?;
        if !(r.radius_km > 0.0 && r.radius_km <= 100.0) {
            return bad(Err(format!("radius_km {} is not in (0, 100]", r.radius_km)));
        }
        let site_id = bad(nonempty("site_id", r.site_id))?;
        seen.first("site_id", &site_id, line)?;
        Ok(Site {
            site_id,
            lat: r.lat,
            lon: r.lon,
            radius_km: r.radius_km,
            group_id: r.group_id.filter(|g| !g.is_empty()),
        })
    })
}

fn postcodes_checked(path: &Path, rejected: &mut Rejections) -> Result<Vec<Postcode>, RefDataError> {
    let mut seen = Seen::default();
    read_csv("postcodes", path, rejected, |r: PostcodeRow, line| {
        bad(check_coords(r.lat, r.lon))?;
        let postcode = bad(nonempty("postcode", r.postcode))?;
        let timezone = r.timezone.filter(|t| !t.is_empty());
        if let Some(tz) = &timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err((Problem::UnknownTimezone, format!("timezone {tz:?} is not an IANA time zone")));
            }
        }
        seen.first("postcode", &postcode, line)?;
        Ok(Postcode { postcode, lat: r.lat, lon: r.lon, population: r.population, timezone })
    })
}

/// The optional `billing_cycle_day` column: empty or absent is `None`, else
/// a day of the month from 1 to 28 (every month has it).
fn cycle_day(v: Option<&str>) -> Result<Option<u8>, String> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse::<u8>() {
            Ok(d @ 1..=28) => Ok(Some(d)),
            _ => Err(format!("billing_cycle_day {v:?} is not a day of the month from 1 to 28")),
        },
    }
}

/// `postcodes`: the known postcodes, when the customers are checked
/// against them.
fn customers_checked(
    path: &Path,
    rejected: &mut Rejections,
    checks: &Checks,
    postcodes: Option<&std::collections::HashSet<&str>>,
) -> Result<Vec<Customer>, RefDataError> {
    let mut seen = Seen::default();
    let country = checks.default_country.as_deref();
    read_csv("customers", path, rejected, |r: CustomerRow, line| {
        let currency = Currency::parse(&r.currency)
            .ok()
            .filter(|c| is_iso4217(c.as_str()))
            .ok_or_else(|| (Problem::UnknownCurrency, format!("currency {:?} is not an ISO 4217 code", r.currency)))?;
        let services = Services::parse(&r.services).map_err(|e| (Problem::UnknownService, format!("services: {e}")))?;
        let opt_out =
            bad(OptOut::parse(r.opt_out.as_deref().unwrap_or_default()).map_err(|e| format!("opt_out: {e}")))?;
        let monthly_fee = bad(Money::parse(&r.monthly_fee, currency).map_err(|e| format!("monthly_fee: {e}")))?;
        let avg_bill_3m = bad(Money::parse(&r.avg_bill_3m, currency).map_err(|e| format!("avg_bill_3m: {e}")))?;
        if monthly_fee.minor < 0 || avg_bill_3m.minor < 0 {
            return bad(Err("money fields must not be negative".into()));
        }
        let customer_id = bad(customer_id(r.customer_id))?;
        let postcode = bad(nonempty("postcode", r.postcode))?;
        let language = bad(nonempty("language", r.language))?;
        // Missing contact details are legal (the customer is skipped on
        // that channel with a counted reason); a bad one is not.
        let msisdn = match r.msisdn.filter(|m| !m.is_empty()) {
            Some(m) => Some(
                e164(&m, country)
                    .map_err(|why| (Problem::BadMsisdn, format!("msisdn {}: {why}", crate::redact::msisdn(&m))))?,
            ),
            None => None,
        };
        let email = r.email.filter(|m| !m.is_empty());
        if let Some(e) = &email {
            if let Err(why) = e.parse::<lettre::Address>() {
                return Err((Problem::BadEmail, format!("email {}: {why}", crate::redact::email(e))));
            }
        }
        if postcodes.is_some_and(|known| !known.contains(postcode.as_str())) {
            return Err((
                Problem::UnknownPostcode,
                format!("postcode {postcode:?} (of customer {customer_id}) is not in the postcodes file"),
            ));
        }
        let billing_cycle_day = bad(cycle_day(r.billing_cycle_day.as_deref()))?;
        seen.first("customer_id", &customer_id, line)?;
        Ok(Customer {
            customer_id,
            msisdn,
            email,
            postcode,
            language,
            services,
            opt_out,
            monthly_fee,
            avg_bill_3m,
            billing_cycle_day,
        })
    })
}

fn elements_checked(
    path: &Path,
    sites: &[Site],
    rejected: &mut Rejections,
) -> Result<Vec<(String, String)>, RefDataError> {
    let known: std::collections::HashSet<&str> = sites.iter().map(|s| s.site_id.as_str()).collect();
    let mut seen = Seen::default();
    read_csv("elements", path, rejected, |r: ElementRow, line| {
        let element = bad(nonempty("element_id", r.element_id))?;
        let site = bad(nonempty("site_id", r.site_id))?;
        if !known.contains(site.as_str()) {
            return Err((
                Problem::UnknownSite,
                format!("site_id {site:?} (of element {element:?}) is not in the sites file"),
            ));
        }
        seen.first("element_id", &element, line)
            .map_err(|(p, _)| (p, format!("element_id {element:?} is listed twice")))?;
        Ok((element, site))
    })
}

/// The rows, or the first bad row as an error (the strict loaders).
fn strict<T>(load: impl FnOnce(&mut Rejections) -> Result<T, RefDataError>) -> Result<T, RefDataError> {
    let mut rejected = Rejections::default();
    let rows = load(&mut rejected)?;
    match rejected.first_error() {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// Sites, every row checked; the first bad row is an error naming its file
/// and line. [`RefData::load`] skips and counts bad rows instead.
pub fn load_sites(path: &Path) -> Result<Vec<Site>, RefDataError> {
    strict(|r| sites_checked(path, r))
}

pub fn load_postcodes(path: &Path) -> Result<Vec<Postcode>, RefDataError> {
    strict(|r| postcodes_checked(path, r))
}

/// Customers with international MSISDNs only (no default country), not
/// checked against a postcode file.
pub fn load_customers(path: &Path) -> Result<Vec<Customer>, RefDataError> {
    strict(|r| customers_checked(path, r, &Checks::default(), None))
}

/// The network element → site table (CSV `element_id,site_id`): every
/// site must be in `sites`, every element listed once. Errors name file
/// and line.
pub fn load_elements(path: &Path, sites: &[Site]) -> Result<Vec<(String, String)>, RefDataError> {
    strict(|r| elements_checked(path, sites, r))
}

/// Country calling code, national significant number lengths and trunk
/// prefix of the countries `refdata.default_country` may name.
const COUNTRIES: &[(&str, &str, std::ops::RangeInclusive<usize>, &str)] = &[
    ("US", "1", 10..=10, "1"),
    ("CA", "1", 10..=10, "1"),
    ("GB", "44", 9..=10, "0"),
    ("IE", "353", 7..=9, "0"),
    ("ES", "34", 9..=9, ""),
    ("PT", "351", 9..=9, ""),
    ("FR", "33", 9..=9, "0"),
    ("BE", "32", 8..=9, "0"),
    ("NL", "31", 9..=9, "0"),
    ("DE", "49", 6..=13, "0"),
    ("AT", "43", 4..=13, "0"),
    ("CH", "41", 9..=9, "0"),
    ("IT", "39", 6..=11, ""),
    ("PL", "48", 9..=9, ""),
    ("SE", "46", 7..=9, "0"),
    ("NO", "47", 8..=8, ""),
    ("DK", "45", 8..=8, ""),
    ("FI", "358", 5..=12, "0"),
    ("RU", "7", 10..=10, "8"),
    ("MX", "52", 10..=10, ""),
    ("BR", "55", 10..=11, "0"),
    ("AR", "54", 10..=10, "0"),
    ("AU", "61", 9..=9, "0"),
    ("NZ", "64", 8..=10, "0"),
    ("ZA", "27", 9..=9, "0"),
    ("IN", "91", 10..=10, "0"),
];

/// The countries `refdata.default_country` may name.
pub fn known_countries() -> impl Iterator<Item = &'static str> {
    COUNTRIES.iter().map(|c| c.0)
}

/// An MSISDN in E.164 (`+` and 8 to 15 digits, no leading 0; NANP numbers
/// `+1` and ten digits whose area code and exchange do not start with 0
/// or 1). Separators (spaces, `-`, `.`, `/`, parentheses) are dropped, `00`
/// is read as `+`, and with a `default_country` a national number (its
/// trunk prefix dropped) gets the country's calling code. A syntax check
/// of the number's shape, not of each country's numbering plan.
pub fn e164(raw: &str, default_country: Option<&str>) -> Result<String, String> {
    let mut digits = String::with_capacity(raw.len());
    let mut plus = false;
    for (i, c) in raw.trim().chars().enumerate() {
        match c {
            '+' if i == 0 => plus = true,
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' | '(' | ')' => {}
            _ => return Err("not a phone number (only digits, a leading +, spaces, - . / ( ))".into()),
        }
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else {
        let Some((_, code, lengths, trunk)) = default_country.and_then(|c| COUNTRIES.iter().find(|k| k.0 == c)) else {
            return Err("not international (+ or 00) and no refdata.default_country for national numbers".into());
        };
        let national = match digits.strip_prefix(trunk) {
            Some(rest) if !trunk.is_empty() && lengths.contains(&rest.len()) => rest,
            _ => digits.as_str(),
        };
        if !lengths.contains(&national.len()) {
            return Err(format!(
                "a national number of {} digits; {} numbers have {}",
                national.len(),
                default_country.unwrap_or_default(),
                if lengths.start() == lengths.end() {
                    lengths.start().to_string()
                } else {
                    format!("{} to {}", lengths.start(), lengths.end())
                }
            ));
        }
        format!("{code}{national}")
    };
    if !(8..=15).contains(&international.len()) || international.starts_with('0') {
        return Err("not an E.164 number (8 to 15 digits after the country code's +, no leading 0)".into());
    }
    if let Some(nanp) = international.strip_prefix('1') {
        let b = nanp.as_bytes();
        if b.len() != 10 || b[0] < b'2' || b[3] < b'2' {
            return Err("not a North American number (+1, then ten digits: area code and exchange from 2)".into());
        }
    }
    Ok(format!("+{international}"))
}

/// Active ISO 4217 alphabetic codes.
fn is_iso4217(code: &str) -> bool {
    const CODES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP \
        BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF \
        GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD \
        LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR \
        PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY \
        TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";
    code.len() == 3 && CODES.split_ascii_whitespace().any(|c| c == code)
}

/// Where to load reference data from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefDataPaths {
    pub sites: PathBuf,
    pub postcodes: PathBuf,
    pub customers: PathBuf,
    /// Optional network element → site table (`element_id,site_id`), for
    /// feeds that name elements (`sourceName`, `alarmedObject.id`, DNs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<PathBuf>,
    /// ISO 3166 alpha-2 country of national MSISDNs (`(401) 555-0100`
    /// becomes `+14015550100`); none: every MSISDN must be international.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_country: Option<String>,
    /// Bad rows are skipped and counted; a file with a larger share of them
    /// is not loaded (the daemon does not start, `--check` fails). Default
    /// 0.001 ([`RefDataPaths::DEFAULT_MAX_BAD_RATIO`]: one row in a thousand).
    #[serde(default = "RefDataPaths::default_max_bad_ratio")]
    pub max_bad_ratio: f64,
    /// Opt-outs made through unsubscribe links (`GET/POST /unsubscribe`),
    /// journalled here and honoured with `customers.csv`'s `opt_out`.
    /// Default `out/unsubscribes.jsonl`.
    #[serde(default = "RefDataPaths::default_unsubscribes")]
    pub unsubscribes: PathBuf,
}

impl RefDataPaths {
    pub const DEFAULT_MAX_BAD_RATIO: f64 = 0.001;
    fn default_max_bad_ratio() -> f64 {
        Self::DEFAULT_MAX_BAD_RATIO
    }
    fn default_unsubscribes() -> PathBuf {
        "out/unsubscribes.jsonl".into()
    }
}

/// A site or postcode in an R-tree, by its index in the owning vector.
pub type Indexed = rstar::primitives::GeomWithData<[f64; 3], u32>;

/// The loaded, indexed reference data. Immutable once built; a reload builds
/// a new one and swaps the `Arc`.
pub struct RefData {
    pub sites: Vec<Site>,
    pub postcodes: Vec<Postcode>,
    pub customers: Vec<Customer>,
    /// Inline keys (ids up to 24 bytes live in the table itself): a lookup
    /// is one cache miss, not two, and every alarm makes one.
    site_by_id: HashMap<compact_str::CompactString, u32>,
    postcode_by_code: HashMap<String, u32>,
    site_tree: RTree<Indexed>,
    postcode_tree: RTree<Indexed>,
    /// Customers (indexes into `customers`) by billing postcode.
    customers_by_postcode: HashMap<String, Vec<u32>>,
    /// The largest site radius, to bound neighbour searches.
    max_radius_km: f64,
    /// Per site: the postcodes whose centroid its coverage contains.
    site_postcodes: Vec<Vec<u32>>,
    /// Power/backhaul group → its sites (a failure upstream takes them all).
    /// Per site: the members of its power/backhaul group (indexes into
    /// `groups`), so a raise finds its peers without hashing the group id.
    site_group: Vec<Option<u32>>,
    groups: Vec<Vec<u32>>,
    /// Network element → site (index into `sites`).
    element_site: HashMap<compact_str::CompactString, u32>,
    /// The rows [`RefData::load`] turned away (counted on `/metrics`).
    pub rejected: Rejections,
    /// Opt-outs made through unsubscribe links since the export, shared
    /// with the API that records them.
    pub opt_outs: std::sync::Arc<crate::unsubscribe::OptOuts>,
}

impl RefData {
    /// Loads every file, skipping bad rows: each is recorded with its file,
    /// line and problem (`rejected`, a warning per file and problem, the
    /// metric `outage_refdata_rows_rejected_total`). A file with more bad
    /// rows than `max_bad_ratio` allows is an error with the summary.
    pub fn load(paths: &RefDataPaths) -> Result<Self, RefDataError> {
        let mut rejected = Rejections::default();
        let checks = Checks { default_country: paths.default_country.clone() };
        let sites = sites_checked(&paths.sites, &mut rejected)?;
        let elements = paths.elements.as_deref().map(|p| elements_checked(p, &sites, &mut rejected)).transpose()?;
        let postcodes = postcodes_checked(&paths.postcodes, &mut rejected)?;
        let known: std::collections::HashSet<&str> = postcodes.iter().map(|p| p.postcode.as_str()).collect();
        let customers = customers_checked(&paths.customers, &mut rejected, &checks, Some(&known))?;
        drop(known);
        if let Some((file, bad, read)) = rejected.over_budget(paths.max_bad_ratio) {
            return Err(RefDataError::OverBudget {
                file,
                bad,
                read,
                ratio: paths.max_bad_ratio,
                summary: rejected.summary(3),
            });
        }
        for ((kind, problem), rows) in rejected.counts() {
            let first = rejected.rows.iter().find(|r| r.kind == kind && r.problem == problem);
            tracing::warn!(
                file = kind,
                %problem,
                rows,
                first = %first.map(ToString::to_string).unwrap_or_default(),
                "reference data rows rejected (skipped)"
            );
        }
        let mut rd = Self::build(sites, postcodes, customers).map_err(|(file, message)| RefDataError::Row {
            file: match file {
                "sites" => paths.sites.clone(),
                _ => paths.postcodes.clone(),
            },
            line: 0,
            message,
        })?;
        rd.rejected = rejected;
        rd.opt_outs =
            std::sync::Arc::new(crate::unsubscribe::OptOuts::open(&paths.unsubscribes).map_err(|e| {
                RefDataError::Row { file: paths.unsubscribes.clone(), line: 0, message: e.to_string() }
            })?);
        match (elements, &paths.elements) {
            (Some(rows), Some(file)) => {
                rd.with_elements(rows).map_err(|message| RefDataError::Row { file: file.clone(), line: 0, message })
            }
            _ => Ok(rd),
        }
    }

    /// These data with the network element → site table `rows`
    /// (`(element_id, site_id)`); fails on an unknown site or an element
    /// listed twice.
    pub fn with_elements(mut self, rows: Vec<(String, String)>) -> Result<Self, String> {
        let mut table = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for (element, site) in rows {
            let Some(i) = self.site_index(&site) else {
                return Err(format!("site_id {site:?} (of element {element:?}) is not in the sites file"));
            };
            if table.insert(compact_str::CompactString::from(element.as_str()), i).is_some() {
                return Err(format!("element_id {element:?} is listed twice"));
            }
        }
        self.element_site = table;
        Ok(self)
    }

    /// The site id of network element `element`, from the element table.
    pub fn element_site(&self, element: &str) -> Option<&str> {
        self.element_site.get(element).map(|&i| self.sites[i as usize].site_id.as_str())
    }

    /// Index already-validated rows. Fails on duplicate site ids or postcodes.
    pub fn build(
        sites: Vec<Site>,
        postcodes: Vec<Postcode>,
        customers: Vec<Customer>,
    ) -> Result<Self, (&'static str, String)> {
        let mut site_by_id = HashMap::with_capacity_and_hasher(sites.len(), Default::default());
        for (i, s) in sites.iter().enumerate() {
            if site_by_id.insert(compact_str::CompactString::from(s.site_id.as_str()), i as u32).is_some() {
                return Err(("sites", format!("duplicate site_id {}", s.site_id)));
            }
        }
        let site_tree = RTree::bulk_load(
            sites.iter().enumerate().map(|(i, s)| Indexed::new(GeoPoint::new(s.lat, s.lon).xyz(), i as u32)).collect(),
        );
        let mut postcode_by_code = HashMap::with_capacity_and_hasher(postcodes.len(), Default::default());
        for (i, p) in postcodes.iter().enumerate() {
            if postcode_by_code.insert(p.postcode.clone(), i as u32).is_some() {
                return Err(("postcodes", format!("duplicate postcode {}", p.postcode)));
            }
        }
        let postcode_tree = RTree::bulk_load(
            postcodes
                .iter()
                .enumerate()
                .map(|(i, p)| Indexed::new(GeoPoint::new(p.lat, p.lon).xyz(), i as u32))
                .collect(),
        );
        let mut customers_by_postcode: HashMap<String, Vec<u32>> = HashMap::default();
        for (i, c) in customers.iter().enumerate() {
            customers_by_postcode.entry(c.postcode.clone()).or_default().push(i as u32);
        }
        let max_radius_km = sites.iter().map(|s| s.radius_km).fold(0.0, f64::max);
        let site_postcodes = sites
            .iter()
            .map(|s| {
                let p = GeoPoint::new(s.lat, s.lon).xyz();
                postcode_tree.locate_within_distance(p, geodesy::chord2_for_km(s.radius_km)).map(|e| e.data).collect()
            })
            .collect();
        let (mut group_ids, mut groups): (HashMap<&str, u32>, Vec<Vec<u32>>) = Default::default();
        let site_group: Vec<Option<u32>> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let g = s.group_id.as_deref()?;
                let n = *group_ids.entry(g).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() as u32 - 1
                });
                groups[n as usize].push(i as u32);
                Some(n)
            })
            .collect();
        Ok(RefData {
            site_group,
            groups,
            sites,
            postcodes,
            customers,
            site_by_id,
            postcode_by_code,
            site_tree,
            postcode_tree,
            customers_by_postcode,
            max_radius_km,
            site_postcodes,
            element_site: HashMap::default(),
            rejected: Rejections::default(),
            opt_outs: Default::default(),
        })
    }

    pub fn site_index(&self, site_id: &str) -> Option<u32> {
        self.site_by_id.get(site_id).copied()
    }

    pub fn postcode_index(&self, postcode: &str) -> Option<u32> {
        self.postcode_by_code.get(postcode).copied()
    }

    pub fn site(&self, idx: u32) -> &Site {
        &self.sites[idx as usize]
    }

    pub fn max_radius_km(&self) -> f64 {
        self.max_radius_km
    }

    /// Sites whose centre is within `km` of `p` (great-circle).
    pub fn sites_within(&self, p: GeoPoint, km: f64) -> impl Iterator<Item = u32> + '_ {
        self.site_tree.locate_within_distance(p.xyz(), geodesy::chord2_for_km(km)).map(|e| e.data)
    }

    /// Postcodes whose centroid is within `km` of `p`.
    pub fn postcodes_within(&self, p: GeoPoint, km: f64) -> impl Iterator<Item = u32> + '_ {
        self.postcode_tree.locate_within_distance(p.xyz(), geodesy::chord2_for_km(km)).map(|e| e.data)
    }

    /// The other sites of site `idx`'s power/backhaul group.
    pub fn group_peers(&self, idx: u32) -> impl Iterator<Item = u32> + '_ {
        let group = self.site_group.get(idx as usize).copied().flatten().map(|g| &self.groups[g as usize]);
        group.into_iter().flatten().copied().filter(move |&i| i != idx)
    }

    /// Postcodes (indexes into `postcodes`) whose centroid lies in the
    /// coverage of site `idx`: the footprint's building block.
    pub fn site_postcodes(&self, idx: u32) -> &[u32] {
        &self.site_postcodes[idx as usize]
    }

    /// Sites (indexes into `sites`) whose coverage contains postcode `idx`'s
    /// centroid: the inverse of [`Self::site_postcodes`].
    pub fn postcode_sites(&self, idx: u32) -> impl Iterator<Item = u32> + '_ {
        let p = &self.postcodes[idx as usize];
        self.sites_within(GeoPoint::new(p.lat, p.lon), self.max_radius_km)
            .filter(move |&s| self.site_postcodes[s as usize].contains(&idx))
    }

    /// The channels `c` opted out of: the export's `opt_out` column and
    /// the unsubscribe links since.
    pub fn opt_out(&self, c: &Customer) -> OptOut {
        let link = self.opt_outs.get(&c.customer_id);
        OptOut { sms: c.opt_out.sms || link.sms, email: c.opt_out.email || link.email }
    }

    pub fn customers_in(&self, postcode: &str) -> &[u32] {
        self.customers_by_postcode.get(postcode).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(body.as_bytes()).unwrap();
        p
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "customers.csv",
            "customer_id,msisdn,email,postcode,language,services,monthly_fee,avg_bill_3m,currency\n\
             C1,+14015550100,a@example.com,02901,en,mobile;voice,35.00,40.10,USD\n\
             C2,,,02902,es,mobile;fax,35.00,40.10,USD\n",
        );
        let err = load_customers(&p).unwrap_err().to_string();
        assert!(err.contains("customers.csv:3:"), "{err}");
        assert!(err.contains("fax"), "{err}");

        let p = write(d.path(), "sites.csv", "site_id,lat,lon,radius_km\nS1,41.8,-71.4,2\nS2,141.8,-71.4,2\n");
        let err = load_sites(&p).unwrap_err().to_string();
        assert!(err.contains("sites.csv:3:") && err.contains("out of range"), "{err}");

        let p = write(d.path(), "postcodes.csv", "postcode,lat,lon\n02901,41.8,-71.4\n02902,north,-71.4\n");
        let err = load_postcodes(&p).unwrap_err().to_string();
        assert!(err.contains("postcodes.csv:3:") && err.contains("field 2"), "{err}");
    }

    fn damaged(max_bad_ratio: f64) -> Result<RefData, RefDataError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/refdata-damaged");
        RefData::load(&RefDataPaths {
            sites: dir.join("sites.csv"),
            postcodes: dir.join("postcodes.csv"),
            customers: dir.join("customers.csv"),
            elements: None,
            default_country: Some("US".into()),
            max_bad_ratio,
            unsubscribes: dir.join("no-unsubscribes.jsonl"),
        })
    }

    #[test]
    fn a_damaged_export_is_skipped_row_by_row_and_counted_by_problem() {
        let rd = damaged(1.0).unwrap();
        let ids: Vec<&str> = rd.customers.iter().map(|c| c.customer_id.as_str()).collect();
        assert_eq!(ids, ["C1", "C2", "C10"]);
        assert_eq!(rd.customers[1].msisdn.as_deref(), Some("+14015550102"), "a national number in E.164");
        assert_eq!((rd.sites.len(), rd.postcodes.len()), (2, 2));
        let got: Vec<(&str, u64, Problem)> = rd.rejected.rows.iter().map(|r| (r.kind, r.line, r.problem)).collect();
        use Problem::*;
        assert_eq!(
            got,
            [
                ("sites", 4, DuplicateId),
                ("postcodes", 4, UnknownTimezone),
                ("customers", 4, UnknownPostcode),
                ("customers", 5, BadMsisdn),
                ("customers", 6, BadEmail),
                ("customers", 7, DuplicateId),
                ("customers", 8, UnknownPostcode),
                ("customers", 9, UnknownService),
                ("customers", 10, UnknownCurrency),
                ("customers", 12, Malformed),
            ]
        );
        let text: Vec<String> = rd.rejected.rows.iter().map(ToString::to_string).collect();
        assert!(text[4].contains("customers.csv:6: email •••: "), "{}", text[4]);
        assert!(text[5].contains("customer_id \"C1\" already at line 2"), "{}", text[5]);
        assert!(text[1].contains("\"America/Providence\" is not an IANA time zone"), "{}", text[1]);
        let metrics = rd.rejected.metrics();
        assert!(metrics.contains("outage_refdata_rows_rejected_total{file=\"customers\",problem=\"bad_msisdn\"} 1"));
        assert!(
            metrics.contains("outage_refdata_rows_rejected_total{file=\"customers\",problem=\"unknown_postcode\"} 2")
        );
        let summary = rd.rejected.summary(1);
        assert!(summary.contains("customers.csv: 11 rows, 8 rejected\n"), "{summary}");
        assert!(summary.contains("  unknown_postcode: 2\n    ") && summary.contains("customers.csv:4:"), "{summary}");
        assert!(!summary.contains("customers.csv:8:"), "only the first example of each: {summary}");

        // Above the budget the file is not loaded, and the error says why.
        let err = damaged(RefDataPaths::DEFAULT_MAX_BAD_RATIO).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("sites.csv: 1 of 3 rows rejected, above the budget refdata.max_bad_ratio"), "{err}");
        assert!(err.contains("bad_msisdn: 1") && err.contains("customers.csv:5:"), "{err}");
    }

    #[test]
    fn msisdns_are_normalised_to_e164() {
        assert_eq!(e164("+1 (401) 555-0100", None).as_deref(), Ok("+14015550100"));
        assert_eq!(e164("0034 612 345 678", None).as_deref(), Ok("+34612345678"));
        assert_eq!(e164("612345678", Some("ES")).as_deref(), Ok("+34612345678"));
        assert_eq!(e164("1-401-555-0100", Some("US")).as_deref(), Ok("+14015550100"));
        assert_eq!(e164("020 7946 0018", Some("GB")).as_deref(), Ok("+442079460018"));
        assert_eq!(e164("8 912 345 67 89", Some("RU")).as_deref(), Ok("+79123456789"));
        for bad in ["not-a-number", "+1401555010", "+10015550100", "+0123456789", "4015550100", "+1234567890123456", ""]
        {
            assert!(e164(bad, None).is_err(), "{bad:?}");
        }
        assert!(e164("12345", Some("US")).unwrap_err().contains("US numbers have 10"));
    }

    #[test]
    fn money_is_parsed_exactly_and_contacts_are_optional() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "customers.csv",
            "customer_id,msisdn,email,postcode,language,services,monthly_fee,avg_bill_3m,currency\n\
             C1,,,02901,en,broadband,29.9,0.10,EUR\n",
        );
        let c = &load_customers(&p).unwrap()[0];
        assert_eq!(c.monthly_fee.minor, 2990);
        assert_eq!(c.avg_bill_3m.minor, 10);
        assert_eq!(c.msisdn, None);
        assert!(c.services.broadband && !c.services.mobile);
        assert_eq!(c.opt_out, OptOut::default(), "no opt_out column: no opt-outs");
    }

    #[test]
    fn billing_cycle_day_is_an_optional_column_from_1_to_28() {
        let d = tempfile::tempdir().unwrap();
        let header =
            "customer_id,msisdn,email,postcode,language,services,billing_cycle_day,monthly_fee,avg_bill_3m,currency\n";
        let p = write(
            d.path(),
            "customers.csv",
            &format!("{header}C1,,,02901,en,voice,15,1,1,EUR\nC2,,,02901,en,voice,,1,1,EUR\nC3,,,02901,en,voice,28,1,1,EUR\n"),
        );
        let days: Vec<Option<u8>> = load_customers(&p).unwrap().iter().map(|c| c.billing_cycle_day).collect();
        assert_eq!(days, [Some(15), None, Some(28)]);
        for bad in ["0", "29", "x"] {
            let p = write(d.path(), "bad.csv", &format!("{header}C1,,,02901,en,voice,{bad},1,1,EUR\n"));
            let err = load_customers(&p).unwrap_err().to_string();
            assert!(err.contains("bad.csv:2:") && err.contains("billing_cycle_day"), "{bad}: {err}");
        }
    }

    #[test]
    fn opt_outs_are_an_optional_column_checked_per_row() {
        let d = tempfile::tempdir().unwrap();
        let header = "customer_id,msisdn,email,postcode,language,services,opt_out,monthly_fee,avg_bill_3m,currency\n";
        let p = write(
            d.path(),
            "customers.csv",
            &format!("{header}C1,,,02901,en,voice,sms,1,1,EUR\nC2,,,02901,en,voice,,1,1,EUR\nC3,,,02901,en,voice,email;sms,1,1,EUR\n"),
        );
        let opt: Vec<OptOut> = load_customers(&p).unwrap().iter().map(|c| c.opt_out).collect();
        assert_eq!(opt, [OptOut { sms: true, email: false }, OptOut::default(), OptOut { sms: true, email: true }]);
        let p = write(
            d.path(),
            "bad.csv",
            &format!("{header}C1,,,02901,en,voice,fax,1,1,EUR\nC/2,,,02901,en,voice,,1,1,EUR\n"),
        );
        let err = load_customers(&p).unwrap_err().to_string();
        assert!(err.contains("bad.csv:2:") && err.contains("opt_out") && err.contains("fax"), "{err}");
        let p = write(d.path(), "slash.csv", &format!("{header}C/2,,,02901,en,voice,,1,1,EUR\n"));
        let err = load_customers(&p).unwrap_err().to_string();
        assert!(err.contains("slash.csv:2:") && err.contains("'/'"), "{err}");
    }

    #[test]
    fn spatial_queries_find_nearby_rows_only() {
        let site = |id: &str, lat, lon| Site { site_id: id.into(), lat, lon, radius_km: 2.0, group_id: None };
        let rd = RefData::build(
            vec![site("A", 41.80, -71.40), site("B", 41.81, -71.40), site("C", 42.50, -71.40)],
            vec![],
            vec![],
        )
        .unwrap();
        let mut near: Vec<_> = rd.sites_within(GeoPoint::new(41.80, -71.40), 5.0).collect();
        near.sort();
        assert_eq!(near, vec![0, 1]);
        assert!(RefData::build(vec![site("A", 0.0, 0.0), site("A", 1.0, 1.0)], vec![], vec![]).is_err());
    }

    #[test]
    fn the_element_table_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let sites = load_sites(&write(d.path(), "sites.csv", "site_id,lat,lon,radius_km\nS1,41.8,-71.4,2\n")).unwrap();
        let ok = write(d.path(), "elements.csv", "element_id,site_id\nENB-1,S1\nCELL-1-1,S1\n");
        let rows = load_elements(&ok, &sites).unwrap();
        let rd = RefData::build(sites.clone(), vec![], vec![]).unwrap().with_elements(rows).unwrap();
        assert_eq!((rd.element_site("CELL-1-1"), rd.element_site("S1")), (Some("S1"), None));
        let unknown = write(d.path(), "unknown.csv", "element_id,site_id\nENB-1,S1\nENB-2,S9\n");
        let err = load_elements(&unknown, &sites).unwrap_err().to_string();
        assert!(err.contains("unknown.csv:3") && err.contains("S9"), "{err}");
        let twice = write(d.path(), "twice.csv", "element_id,site_id\nENB-1,S1\nENB-1,S1\n");
        let err = load_elements(&twice, &sites).unwrap_err().to_string();
        assert!(err.contains("twice.csv:3") && err.contains("twice"), "{err}");
        let empty = write(d.path(), "empty.csv", "element_id,site_id\n,S1\n");
        assert!(load_elements(&empty, &sites).unwrap_err().to_string().contains("empty.csv:2"));
    }
}
