//! JSONL outbox files, one per channel: `sms.jsonl`, `email.jsonl`,
//! `data_grant.jsonl` (action records, `schemas/action.v1`), `credits.jsonl`
//! (credit records, `schemas/credit.v1`) and `ivr.jsonl` (IVR upserts,
//! `schemas/ivr-upsert.v1`). The local stand-in for the gateways, and what
//! the demo and the tests read.
//!
//! Idempotent across restarts: opening an outbox reads back the keys already
//! written, and a record whose key is there is not written again.

use super::journal::Journal;
use super::{ActionSink, Delivery, IvrSink, SinkError};
use crate::model::{Action, Channel, Credit, IvrUpsert, Money};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One JSONL file and the keys it holds.
pub(crate) struct KeyedFile {
    out: Journal,
    keys: HashSet<String>,
}

impl KeyedFile {
    /// Open `path` ([`Journal::open`]: a torn last line is cut off, and
    /// what it recorded is written again, which is what at-least-once
    /// wants) and read back its keys.
    pub(crate) fn open(path: PathBuf, key_of: fn(&serde_json::Value) -> Option<String>) -> Result<Self, SinkError> {
        let (out, lines) = Journal::open(path)?;
        let keys = lines.iter().filter_map(|l| serde_json::from_str(l).ok().as_ref().and_then(key_of)).collect();
        Ok(KeyedFile { out, keys })
    }

    pub(crate) fn write(&mut self, key: String, record: &impl serde::Serialize) -> Result<Delivery, SinkError> {
        if self.keys.contains(&key) {
            return Ok(Delivery::Duplicate);
        }
        self.out.append(record)?;
        self.keys.insert(key);
        Ok(Delivery::Done)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Written through to the kernel (survives the process, not the machine).
    pub(crate) fn write_through(&mut self) -> Result<(), SinkError> {
        self.out.write_through()
    }

    /// Durable: written and `fsync`ed ([`Journal::sync`]).
    pub(crate) fn flush(&mut self) -> Result<(), SinkError> {
        self.out.sync()
    }
}

fn str_field(v: &serde_json::Value, f: &str) -> Option<String> {
    v.get(f)?.as_str().map(str::to_string)
}

/// One line per announcement as callers hear it: a new line when its
/// words change (a new ETR, the NOC's message), none when only
/// `valid_until` moves. (Keys are recomputed from the lines on open, so
/// the digest need only be stable within one build.)
fn ivr_key(u: &IvrUpsert) -> String {
    use std::hash::BuildHasher;
    let words = foldhash::fast::FixedState::with_seed(0).hash_one((&u.message, &u.language, &u.messages));
    format!("{}/{}/{}/{words:016x}", u.region, u.incident_id, u.active)
}

/// The per-customer action outboxes. Shared by the dispatcher's lanes: each
/// call holds the lock only for an in-memory write, never across an await.
pub struct Outbox {
    dir: PathBuf,
    files: Mutex<Files>,
}

struct Files {
    sms: KeyedFile,
    email: KeyedFile,
    data_grant: KeyedFile,
    credits: KeyedFile,
}

impl Files {
    fn of(&mut self, c: Channel) -> &mut KeyedFile {
        match c {
            Channel::Sms => &mut self.sms,
            Channel::Email => &mut self.email,
            Channel::DataGrant => &mut self.data_grant,
            Channel::Credit => &mut self.credits,
        }
    }
}

/// The IVR outbox (`ivr.jsonl`), written by the pipeline stage.
pub struct IvrOutbox {
    ivr: KeyedFile,
}

impl IvrOutbox {
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        Ok(IvrOutbox {
            ivr: KeyedFile::open(dir.join("ivr.jsonl"), |v| {
                let u: IvrUpsert = serde_json::from_value(v.clone()).ok()?;
                Some(ivr_key(&u))
            })?,
        })
    }
}

impl Outbox {
    pub const FILES: [&'static str; 5] = ["sms.jsonl", "email.jsonl", "data_grant.jsonl", "credits.jsonl", "ivr.jsonl"];

    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io { path: dir.into(), source })?;
        let action = |v: &serde_json::Value| str_field(v, "action_id");
        let files = Files {
            sms: KeyedFile::open(dir.join("sms.jsonl"), action)?,
            email: KeyedFile::open(dir.join("email.jsonl"), action)?,
            data_grant: KeyedFile::open(dir.join("data_grant.jsonl"), action)?,
            credits: KeyedFile::open(dir.join("credits.jsonl"), |v| str_field(v, "credit_id"))?,
        };
        Ok(Outbox { dir: dir.into(), files: Mutex::new(files) })
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        // A panic mid-write leaves at worst a torn line, which open() skips.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Remove the outbox files of `dir` and the other sinks' journals (for
    /// a fresh demo run).
    pub fn reset(dir: &Path) -> std::io::Result<()> {
        for f in Self::FILES.iter().chain(&["deliveries.jsonl", "held.jsonl", "grants.jsonl"]) {
            match std::fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The key an action is recorded under: its credit's id for credits,
    /// else its action id.
    fn key(a: &Action) -> Option<String> {
        match (a.channel, &a.credit) {
            (Channel::Credit, Some(c)) => Some(c.credit_id.to_string()),
            (Channel::Credit, None) => None,
            _ => Some(a.action_id.clone()),
        }
    }

    /// Whether this action (or its credit) was delivered before.
    pub fn contains(&self, a: &Action) -> bool {
        Self::key(a).is_some_and(|k| self.holds(a.channel, &k))
    }

    /// Whether `key` was delivered on `channel`.
    pub fn holds(&self, channel: Channel, key: &str) -> bool {
        self.files().of(channel).keys.contains(key)
    }

    /// Take what another dispatcher sent from the partitions just taken as
    /// sent here (in memory: it is read again from the deliveries topic at
    /// every start), so it is a repeat here too.
    pub(crate) fn remember(&self, handover: &super::handover::Handover) {
        let mut files = self.files();
        for (id, channel) in &handover.sent {
            if *channel != Channel::Credit {
                files.of(*channel).keys.insert(id.clone());
            }
        }
    }

    pub(crate) fn deliver_now(&self, a: &Action) -> Result<Delivery, SinkError> {
        let key = Self::key(a).ok_or_else(|| SinkError::Invalid {
            action_id: a.action_id.clone(),
            message: "credit action without a credit".into(),
        })?;
        let mut files = self.files();
        match &a.credit {
            Some(c) if a.channel == Channel::Credit => files.credits.write(key, c),
            _ => files.of(a.channel).write(key, a),
        }
    }

    /// `channel`'s journal written through to the kernel, not synced: a
    /// crashed process loses nothing written so far; the `fsync` comes
    /// with [`Outbox::flush_now`], before the batch's offsets are stored.
    pub(crate) fn write_through(&self, channel: Channel) -> Result<(), SinkError> {
        self.files().of(channel).write_through()
    }

    pub(crate) fn flush_now(&self) -> Result<(), SinkError> {
        let mut files = self.files();
        for c in Channel::ALL {
            files.of(c).flush()?;
        }
        Ok(())
    }
}

impl ActionSink for Outbox {
    async fn deliver(&self, action: &Action) -> Result<Delivery, SinkError> {
        self.deliver_now(action)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.flush_now()
    }

    async fn assigned(&self, handover: &super::handover::Handover) -> Result<(), SinkError> {
        self.remember(handover);
        Ok(())
    }
}

impl IvrSink for IvrOutbox {
    async fn upsert(&mut self, u: &IvrUpsert) -> Result<Delivery, SinkError> {
        let d = self.ivr.write(ivr_key(u), u)?;
        self.ivr.flush()?;
        Ok(d)
    }
}

/// Totals of the credits in `dir/credits.jsonl`, one per currency.
pub fn credit_totals(dir: &Path) -> std::io::Result<Vec<Money>> {
    let path = dir.join("credits.jsonl");
    let mut totals: std::collections::BTreeMap<String, Money> = Default::default();
    if !path.exists() {
        return Ok(vec![]);
    }
    for line in BufReader::new(File::open(path)?).lines() {
        if let Ok(c) = serde_json::from_str::<Credit>(&line?) {
            let t =
                totals.entry(c.amount.currency.to_string()).or_insert(Money { minor: 0, currency: c.amount.currency });
            t.minor += c.amount.minor;
        }
    }
    Ok(totals.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionKind, IncidentId, Message};
    use chrono::{TimeZone, Utc};

    fn sms(customer: &str) -> Action {
        let inc = IncidentId("INC-20261123-00000001".into());
        Action {
            action_id: Action::key(&inc, customer, Channel::Sms, ActionKind::Down),
            incident_id: inc,
            customer_id: customer.into(),
            channel: Channel::Sms,
            kind: ActionKind::Down,
            to: Some("+15550000001".into()),
            language: "en".into(),
            message: Some(Message { subject: None, text: "outage".into() }),
            until: None,
            credit: None,
            planned_at: Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap(),
            not_before: None,
            follows: None,
            skip: None,
        }
    }

    #[tokio::test]
    async fn the_ivr_outbox_writes_an_announcement_again_only_when_its_words_change() {
        let d = tempfile::tempdir().unwrap();
        let on = IvrUpsert {
            region: "029".into(),
            active: true,
            message: "An outage in your area; expected back by 14:00.".into(),
            language: "en".into(),
            messages: Default::default(),
            incident_id: IncidentId("INC-20261123-00000001".into()),
            valid_until: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
        };
        let mut o = IvrOutbox::open(d.path()).unwrap();
        assert_eq!(o.upsert(&on).await.unwrap(), Delivery::Done);
        let later = IvrUpsert { valid_until: on.valid_until + chrono::Duration::hours(1), ..on.clone() };
        assert_eq!(o.upsert(&later).await.unwrap(), Delivery::Duplicate, "only valid_until moved");
        let new_etr = IvrUpsert { message: "An outage in your area; expected back by 16:00.".into(), ..on.clone() };
        assert_eq!(o.upsert(&new_etr).await.unwrap(), Delivery::Done, "a new ETR is a new announcement");
        drop(o);
        let mut o = IvrOutbox::open(d.path()).unwrap();
        assert_eq!(o.upsert(&new_etr).await.unwrap(), Delivery::Duplicate, "across a restart");
        let off = IvrUpsert { active: false, ..new_etr };
        assert_eq!(o.upsert(&off).await.unwrap(), Delivery::Done);
        assert_eq!(std::fs::read_to_string(d.path().join("ivr.jsonl")).unwrap().lines().count(), 3);
    }

    #[tokio::test]
    async fn a_reopened_outbox_does_not_write_a_key_twice() {
        let d = tempfile::tempdir().unwrap();
        let o = Outbox::open(d.path()).unwrap();
        assert_eq!(o.deliver(&sms("C1")).await.unwrap(), Delivery::Done);
        assert_eq!(o.deliver(&sms("C1")).await.unwrap(), Delivery::Duplicate);
        o.flush().await.unwrap();
        drop(o);
        let o = Outbox::open(d.path()).unwrap();
        assert_eq!(o.deliver(&sms("C1")).await.unwrap(), Delivery::Duplicate);
        assert_eq!(o.deliver(&sms("C2")).await.unwrap(), Delivery::Done);
        o.flush().await.unwrap();
        let body = std::fs::read_to_string(d.path().join("sms.jsonl")).unwrap();
        assert_eq!(body.lines().count(), 2);
        let mut credit = sms("C3");
        credit.channel = Channel::Credit;
        assert!(matches!(o.deliver(&credit).await, Err(SinkError::Invalid { .. })));
    }

    /// A crash mid-write left `sms.jsonl`'s last line without its end: the
    /// outbox opens, keeps both whole lines (their notices stay sent), cuts
    /// the torn one (its notice is sent again) and writes on a line of its own.
    #[tokio::test]
    async fn a_torn_outbox_opens_keeps_whole_lines_and_appends_on_a_new_line() {
        let d = tempfile::tempdir().unwrap();
        let o = Outbox::open(d.path()).unwrap();
        for c in ["C1", "C2", "C3"] {
            o.deliver(&sms(c)).await.unwrap();
        }
        o.flush().await.unwrap();
        drop(o);
        let path = d.path().join("sms.jsonl");
        let body = std::fs::read_to_string(&path).unwrap();
        let torn = &body[..body.len() - 20];
        std::fs::write(&path, torn).unwrap();
        let o = Outbox::open(d.path()).unwrap();
        assert_eq!(o.deliver(&sms("C1")).await.unwrap(), Delivery::Duplicate);
        assert_eq!(o.deliver(&sms("C2")).await.unwrap(), Delivery::Duplicate);
        assert_eq!(o.deliver(&sms("C3")).await.unwrap(), Delivery::Done, "the torn line's notice goes again");
        o.flush().await.unwrap();
        let back: Vec<serde_json::Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ids: Vec<&str> = back.iter().map(|v| v["customer_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["C1", "C2", "C3"]);
    }
}
