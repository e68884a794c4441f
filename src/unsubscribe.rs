//! Unsubscribe links that cannot be forged, and the opt-outs they record.
//!
//! A link carries a token: `base64url(payload) "." base64url(HMAC-SHA256(
//! secret, payload))`, the payload `v1:{channel}:{expires unix s}:{customer
//! id}`. Only the holder of `sinks.email.unsubscribe_secret` can make one;
//! it names one customer and one channel and expires (`planned_at` +
//! `sinks.email.unsubscribe_valid_for`, so a re-sent mail is the same
//! mail). Verification is constant-time (`ring::hmac::verify`).
//!
//! An opt-out made through a link is journalled (`refdata.unsubscribes`,
//! one JSON line each, `fsync`ed) and kept in [`OptOuts`], beside the
//! reference data's `opt_out` column: the planner honours both
//! ([`crate::refdata::RefData::opt_out`]). The journal is read again with
//! the reference data at start-up.

use crate::model::{Channel, OptOut};
use base64::Engine;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a token was refused (all of them answered 403).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not an unsubscribe token")]
    Malformed,
    #[error("the token's signature does not match")]
    Forged,
    #[error("the token expired at {0}")]
    Expired(DateTime<Utc>),
}

/// Makes and checks tokens with the configured secret.
pub struct Signer {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Signer { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()) }
    }

    /// The token opting `customer_id` out of `channel`, valid until `expires`.
    pub fn token(&self, customer_id: &str, channel: Channel, expires: DateTime<Utc>) -> String {
        let payload = format!("v1:{}:{}:{customer_id}", channel.as_str(), expires.timestamp());
        let tag = ring::hmac::sign(&self.key, payload.as_bytes());
        format!("{}.{}", B64.encode(payload), B64.encode(tag.as_ref()))
    }

    /// The customer and channel a genuine, unexpired token names.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<(String, Channel), TokenError> {
        let (payload, tag) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let payload = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        ring::hmac::verify(&self.key, &payload, &tag).map_err(|_| TokenError::Forged)?;
        // Signed by us: the payload is ours, but still parsed without panics.
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let mut parts = payload.splitn(4, ':');
        let (Some("v1"), Some(channel), Some(expires), Some(customer)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let channel = match channel {
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            _ => return Err(TokenError::Malformed),
        };
        let expires =
            expires.parse::<i64>().ok().and_then(|s| DateTime::from_timestamp(s, 0)).ok_or(TokenError::Malformed)?;
        if expires <= now {
            return Err(TokenError::Expired(expires));
        }
        Ok((customer.to_string(), channel))
    }
}

/// One journalled opt-out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptOutRecord {
    pub customer_id: String,
    pub channel: Channel,
    pub at: DateTime<Utc>,
    /// How it was made (`link`).
    pub via: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OptOutError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
}

/// Opt-outs made since the reference data was exported (through links),
/// shared by the API that records them and the planner that honours them.
#[derive(Debug, Default)]
pub struct OptOuts {
    by_customer: RwLock<HashMap<String, OptOut>>,
    /// Where they are journalled; none: kept in memory only (tests).
    journal: Option<PathBuf>,
}

impl OptOuts {
    /// The opt-outs journalled in `path` (none yet if it does not exist).
    /// A torn last line (a crash mid-write) is ignored; any other bad line
    /// is an error naming it.
    pub fn open(path: &Path) -> Result<Self, OptOutError> {
        let io = |source| OptOutError::Io { path: path.to_path_buf(), source };
        let mut map: HashMap<String, OptOut> = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
                for (i, line) in complete.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let r: OptOutRecord = serde_json::from_str(line).map_err(|e| OptOutError::Line {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: e.to_string(),
                    })?;
                    set(map.entry(r.customer_id).or_default(), r.channel);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        Ok(OptOuts { by_customer: RwLock::new(map), journal: Some(path.to_path_buf()) })
    }

    /// What the links added for `customer_id`.
    pub fn get(&self, customer_id: &str) -> OptOut {
        let map = self.by_customer.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return OptOut::default();
        }
        map.get(customer_id).copied().unwrap_or_default()
    }

    /// Record that `customer_id` opted out of `channel`: journalled (and
    /// synced) first, then honoured. Recording it twice is harmless.
    pub fn record(&self, customer_id: &str, channel: Channel, at: DateTime<Utc>) -> Result<(), OptOutError> {
        if let Some(path) = &self.journal {
            let io = |source| OptOutError::Io { path: path.clone(), source };
            let rec = OptOutRecord { customer_id: customer_id.to_string(), channel, at, via: "link".into() };
            let mut line = serde_json::to_vec(&rec).map_err(|e| io(std::io::Error::other(e)))?;
            line.push(b'\n');
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
            f.write_all(&line).map_err(io)?;
            f.sync_data().map_err(io)?;
        }
        let mut map = self.by_customer.write().unwrap_or_else(|p| p.into_inner());
        set(map.entry(customer_id.to_string()).or_default(), channel);
        Ok(())
    }
}

fn set(o: &mut OptOut, channel: Channel) {
    match channel {
        Channel::Sms => o.sms = true,
        Channel::Email => o.email = true,
        Channel::DataGrant | Channel::Credit => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_token_names_one_customer_and_channel_and_cannot_be_forged_or_outlive_its_expiry() {
        let s = Signer::new("a-long-random-secret-from-config");
        let tok = s.token("C0007636", Channel::Email, t(3600));
        assert!(!tok.contains("C0007636"), "the id is not readable in the link: {tok}");
        assert_eq!(s.verify(&tok, t(0)), Ok(("C0007636".into(), Channel::Email)));
        assert_eq!(s.verify(&tok, t(3600)), Err(TokenError::Expired(t(3600))));
        // Another secret, another customer's payload with this signature,
        // a flipped byte, junk: all refused.
        assert_eq!(Signer::new("another-secret").verify(&tok, t(0)), Err(TokenError::Forged));
        let other = s.token("C0007637", Channel::Email, t(3600));
        let spliced = format!("{}.{}", other.split_once('.').unwrap().0, tok.split_once('.').unwrap().1);
        assert_eq!(s.verify(&spliced, t(0)), Err(TokenError::Forged));
        let payload = B64.encode(format!("v1:email:{}:C0007636", t(3600).timestamp()));
        assert_eq!(s.verify(&format!("{payload}.AAAA"), t(0)), Err(TokenError::Forged));
        for junk in ["", ".", "C0007636", "a.b.c", "%%%.%%%"] {
            assert!(s.verify(junk, t(0)).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn opt_outs_are_journalled_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("unsubscribes.jsonl");
        let o = OptOuts::open(&path).unwrap();
        assert_eq!(o.get("C1"), OptOut::default());
        o.record("C1", Channel::Email, t(0)).unwrap();
        o.record("C1", Channel::Email, t(1)).unwrap();
        assert_eq!(o.get("C1"), OptOut { sms: false, email: true });
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"customer_id\":\"C2\"").unwrap();
        let again = OptOuts::open(&path).unwrap();
        assert_eq!((again.get("C1"), again.get("C2")), (OptOut { sms: false, email: true }, OptOut::default()));
    }
}
