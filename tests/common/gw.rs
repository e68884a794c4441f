//! What the tests through the real gateways share (`tests/gateways.rs`,
//! `tests/faults.rs`; both under `make e2e`): the gateways' settings from
//! the environment `scripts/e2e.sh` sets, the daemon as a child process,
//! waiting for conditions, and what Kannel's fake SMSC and the SMTP sink
//! received.

use outage::sinks::email::{SmtpConfig, SmtpTls};
use outage::sinks::sms::SmsProviderConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| d.into())
}

/// Kannel's sendsms (HTTPS under `make e2e`), by address: its certificate
/// names 127.0.0.1.
pub fn kannel() -> SmsProviderConfig {
    SmsProviderConfig {
        url: env_or("KANNEL_SENDSMS_URL", "https://127.0.0.1:13013/cgi-bin/sendsms"),
        username: Some("outage".into()),
        password: Some(env_or("KANNEL_PASSWORD", "outage-e2e")),
        ..Default::default()
    }
}

/// The relay's STARTTLS-only listener, by address: its certificate names
/// 127.0.0.1.
pub fn starttls() -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: env_or("SMTP_TLS_PORT", "2526").parse().unwrap(),
        tls: SmtpTls::Starttls,
        ..Default::default()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn start_daemon(config_path: &Path, log: &Path) -> Child {
    start_role(config_path, log, "all")
}

/// `outaged --role ROLE` with that config, its log appended to `log`.
pub fn start_role(config_path: &Path, log: &Path, role: &str) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_outaged"))
        .arg("--config")
        .arg(config_path)
        .arg("--role")
        .arg(role)
        .env("RUST_LOG", "info")
        // Every OUTAGE_ variable is configuration to outaged.
        .env_remove("OUTAGE_TEST_BOOTSTRAP")
        .env_remove("OUTAGE_TEST_GATEWAYS")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

pub async fn wait_for(what: &str, limit: Duration, daemon: &mut Child, log: &Path, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("outaged exited ({status}) while waiting for {what}:\n{}", tail(log));
        }
        assert!(t.elapsed() < limit, "timed out waiting for {what}:\n{}", tail(log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    // A backtrace's frames would push the error itself out of the tail.
    let frame = |l: &&str| {
        let t = l.trim_start();
        t.starts_with("at ") || t.split_once(": ").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
    };
    s.lines().filter(|l| !frame(l)).rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// One whole SMS as the SMSC got it.
#[derive(Debug)]
pub struct Received {
    pub to: String,
    pub parts: usize,
    pub text: String,
}

pub fn unquote(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).collect()
}

pub fn decode(bytes: &[u8]) -> String {
    // 7-bit text is UTF-8 and holds no NUL; UCS-2 of Latin/Cyrillic does.
    if bytes.contains(&0) {
        let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// `fakesmsc.log` → whole messages, concatenated parts joined (line format:
/// scripts/kannel.sh).
pub fn received_sms(path: &Path) -> Vec<Received> {
    let body = std::fs::read(path).unwrap_or_default();
    let body = String::from_utf8_lossy(&body);
    let mut out = vec![];
    let mut groups: BTreeMap<(String, u8, u8), BTreeMap<u8, Vec<u8>>> = BTreeMap::new();
    for line in body.lines() {
        let Some(i) = line.find("Got message ") else { continue };
        let Some(lt) = line[i..].find('<') else { continue };
        let wire = line[i + lt + 1..].trim_end_matches('>');
        let f: Vec<&str> = wire.splitn(4, ' ').collect();
        if f.len() < 4 {
            continue;
        }
        let (to, kind, rest) = (f[1].trim_start_matches('+').to_string(), f[2], f[3]);
        match kind {
            "text" => out.push(Received { to, parts: 1, text: rest.into() }),
            "ucs-2" | "data" => out.push(Received { to, parts: 1, text: decode(&unquote(rest)) }),
            "udh" => {
                let mut p = rest.splitn(3, ' ');
                let (udh, _, payload) = (unquote(p.next().unwrap()), p.next(), p.next().unwrap_or_default());
                assert_eq!(&udh[..3], b"\x05\x00\x03", "concatenation UDH: {line}");
                let (reference, total, seq) = (udh[3], udh[4], udh[5]);
                let g = groups.entry((to.clone(), reference, total)).or_default();
                g.insert(seq, unquote(payload));
                if g.len() == total as usize {
                    let whole: Vec<u8> = g.values().flatten().copied().collect();
                    out.push(Received { to, parts: total as usize, text: decode(&whole) });
                    groups.remove(&(f[1].trim_start_matches('+').to_string(), reference, total));
                }
            }
            other => panic!("unexpected fakesmsc type {other}: {line}"),
        }
    }
    out
}

/// One mail as the SMTP server got it.
#[derive(Debug)]
pub struct Mail {
    pub to: String,
    pub message_id: String,
    pub subject: String,
    pub text: String,
    /// The TLS version, when it came over STARTTLS.
    pub tls: Option<String>,
}

pub fn received_mail(path: &Path) -> Vec<Mail> {
    jsonl::<serde_json::Value>(path)
        .iter()
        .map(|r| {
            let raw = r["data"].as_str().unwrap();
            let m = mailparse::parse_mail(raw.as_bytes()).unwrap();
            let header =
                |k: &str| m.headers.iter().find(|h| h.get_key().eq_ignore_ascii_case(k)).map(|h| h.get_value());
            let plain = m.subparts.iter().find(|p| p.ctype.mimetype == "text/plain").expect("a text/plain part");
            Mail {
                to: r["rcpt_tos"][0].as_str().unwrap().into(),
                message_id: header("Message-ID").unwrap_or_default(),
                subject: header("Subject").unwrap_or_default(),
                text: plain.get_body().unwrap(),
                tls: r["tls"]["version"].as_str().map(String::from),
            }
        })
        .collect()
}
