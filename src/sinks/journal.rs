//! The JSONL journals' shared file discipline (`sms.jsonl`, `email.jsonl`,
//! `data_grant.jsonl`, `credits.jsonl`, `ivr.jsonl`, `held.jsonl`,
//! `grants.jsonl`, `deliveries.jsonl`): the one place a torn line is
//! handled, a line is appended, and a journal is made durable.
//!
//! - **Torn lines.** A crash (or a full disk) mid-write can leave the last
//!   line without its newline, or cut inside its JSON. [`recover`] cuts
//!   such a last line off when the journal is opened, logs a warning with
//!   the file and the byte offset, and counts it ([`torn_lines`],
//!   `outage_journal_torn_lines_total`); it is never a start-up failure,
//!   and the next append starts on a line of its own. What the cut line
//!   recorded is done again (at-least-once: the journals are idempotency
//!   records, and the platforms drop a repeat by its key).
//! - **Whole lines.** [`Journal::append`] hands the buffer a line and its
//!   newline in one write, so a flush writes whole lines only (a line
//!   larger than the buffer goes to the file in one `write_all`).
//! - **Durability.** [`Journal::sync`] flushes the buffer and `fsync`s the
//!   file's data (`sync_data`). Every journal's `flush` is a sync, and the
//!   dispatcher flushes its sinks and `held.jsonl` before it stores the
//!   batch's offsets: what a stored offset depends on is on disk first.

use super::SinkError;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Torn last lines cut off since the process started.
static TORN: AtomicU64 = AtomicU64::new(0);

/// Torn last lines cut off since the process started (`/metrics`).
pub fn torn_lines() -> u64 {
    TORN.load(Relaxed)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io { path: path.to_path_buf(), source }
}

/// Read `path`'s whole lines (none when it does not exist). A last line
/// without its newline, or whose JSON does not parse, is cut off the file
/// (truncated at the byte offset where it starts), warned about and
/// counted; earlier lines are returned as they are (bytes that are not
/// UTF-8 replaced), for the caller to judge.
pub fn recover(path: &Path) -> Result<Vec<String>, SinkError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io(path))?;
    let mut lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    let torn = lines.last().is_some_and(|last| {
        let whole = last.ends_with(b"\n");
        let body = last.strip_suffix(b"\n").unwrap_or(last);
        !whole || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err()
    });
    if torn {
        let cut = lines.pop().map_or(0, <[u8]>::len);
        let offset = bytes.len() - cut;
        tracing::warn!(
            path = %path.display(),
            offset,
            bytes = cut,
            "journal: torn last line cut off (a crash mid-write); what it recorded is done again"
        );
        TORN.fetch_add(1, Relaxed);
        file.set_len(offset as u64).map_err(io(path))?;
        file.seek(std::io::SeekFrom::End(0)).map_err(io(path))?;
        file.sync_data().map_err(io(path))?;
    }
    Ok(lines
        .into_iter()
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\n").unwrap_or(l)).into_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

/// A JSONL journal open for appending.
pub struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    line: Vec<u8>,
}

impl Journal {
    /// Recover `path` ([`recover`]) and open it for appending; returns the
    /// whole lines it held.
    pub fn open(path: PathBuf) -> Result<(Self, Vec<String>), SinkError> {
        let lines = recover(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        Ok((Journal { path, out: BufWriter::new(file), line: Vec::new() }, lines))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `record` as one line (its JSON and the newline in one write).
    pub fn append(&mut self, record: &impl serde::Serialize) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).map_err(|e| io(&self.path)(e.into()))?;
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(io(&self.path))
    }

    /// Append a line already serialized (`line` without its newline).
    pub fn append_raw(&mut self, line: &str) -> Result<(), SinkError> {
        self.line.clear();
        self.line.extend_from_slice(line.as_bytes());
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(io(&self.path))
    }

    /// Hand what is buffered to the kernel, without `fsync`: the line then
    /// survives the process (a kill -9), not the machine.
    pub fn write_through(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(io(&self.path))
    }

    /// Write what is buffered and `fsync` the file's data.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(io(&self.path))?;
        self.out.get_ref().sync_data().map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal whose last line was torn (no newline; or a newline but
    /// cut JSON) opens, keeps every whole line, and the next append is a
    /// line of its own.
    #[test]
    fn a_torn_last_line_is_cut_and_the_next_append_is_a_line_of_its_own() {
        let d = tempfile::tempdir().unwrap();
        for torn in [&b"{\"action_id\":\"c\",\"te"[..], b"{\"action_id\":\"c\",\"te\n", b"\xff\xfe"] {
            let path = d.path().join("j.jsonl");
            let mut body = b"{\"action_id\":\"a\"}\n{\"action_id\":\"b\"}\n".to_vec();
            let whole = body.len();
            body.extend_from_slice(torn);
            std::fs::write(&path, &body).unwrap();
            let before = torn_lines();
            let (mut j, lines) = Journal::open(path.clone()).unwrap();
            assert_eq!(lines, ["{\"action_id\":\"a\"}", "{\"action_id\":\"b\"}"]);
            assert!(torn_lines() > before);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64, "cut at the torn line's offset");
            j.append(&serde_json::json!({"action_id": "c"})).unwrap();
            j.sync().unwrap();
            let back = std::fs::read_to_string(&path).unwrap();
            assert_eq!(back, "{\"action_id\":\"a\"}\n{\"action_id\":\"b\"}\n{\"action_id\":\"c\"}\n");
            std::fs::remove_file(&path).unwrap();
        }
        // A sound journal, an empty one and a missing one are left alone.
        let path = d.path().join("ok.jsonl");
        assert!(Journal::open(path.clone()).unwrap().1.is_empty());
        std::fs::write(&path, "{}\n").unwrap();
        assert_eq!(Journal::open(path.clone()).unwrap().1, ["{}"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
    }
}
