//! [`Stats`]: the counters and gauges the stages write and `/metrics`, the
//! demo and the tests read, and the small snapshot types the stages publish
//! on it ([`Health`], [`Counts`], [`TallySummary`]).

use crate::model::{Channel, IncidentId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// Counters the demo, the tests and (later) the metrics endpoint read.
#[derive(Default)]
pub struct Stats {
    pub alarms_read: AtomicU64,
    /// Alarms whose effects are acknowledged by the broker and whose
    /// offsets are stored for commit.
    pub alarms_acked: AtomicU64,
    pub alarms_dead_lettered: AtomicU64,
    /// Alarms that arrived after the watermark had passed their event time
    /// (`ingest.lateness`): applied in arrival order, the one way arrival
    /// order reaches the incidents.
    pub alarms_late: AtomicU64,
    /// Alarms read again after a restart that the incident log already
    /// accounts for (at or below its watermark).
    pub alarms_replayed: AtomicU64,
    /// Alarms waiting for the watermark, as of the last step.
    pub alarms_buffered: AtomicU64,
    /// Dead letters by class (`not_json`, `unknown_site`, …).
    pub dead_letters: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Alarms the correlator took but did not apply (repeated raises,
    /// clears without a raise, not service-affecting, stale raises), as of
    /// the last step.
    pub alarms_ignored: std::sync::Mutex<Counts>,
    /// Raises by cause class and the most frequent unclassified causes, as
    /// of the last step.
    pub causes: std::sync::Mutex<TallySummary>,
    pub events_appended: AtomicU64,
    pub actions_planned: AtomicU64,
    /// Actions the dispatcher took off the topic (delivered or duplicate).
    pub actions_dispatched: AtomicU64,
    /// Delivered per channel, in [`Channel::ALL`] order.
    pub delivered: [AtomicU64; 4],
    pub duplicates: AtomicU64,
    pub ivr_upserts: AtomicU64,
    /// Notices a gateway refused for good or that ran out of retries.
    pub notices_failed: AtomicU64,
    /// Notices not sent for a bad or missing contact, by reason.
    pub notices_skipped: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Postcodes told "restored" while their incident was still declared.
    pub postcodes_restored_early: AtomicU64,
    /// Actions held until their `not_before` (SMS in quiet hours, data
    /// revokes until restoration + grace), each counted once, when held.
    pub actions_held: AtomicU64,
    /// Held actions waiting right now.
    pub actions_waiting: AtomicU64,
    pub incidents_open: AtomicU64,
    pub incidents_declared: AtomicU64,
    pub incidents_total: AtomicU64,
    pub first_ivr_flip: OnceLock<Instant>,
    /// Wall time from the start of the step that declared an incident to
    /// its IVR announcement being set, the longest seen (ms).
    pub declare_to_ivr_max_ms: AtomicU64,
    /// Incidents whose declaration → IVR flip was measured.
    pub declare_to_ivr_count: AtomicU64,
    /// From an incident's first alarm (event time; a NOC incident's
    /// `since`) to its declaration.
    pub first_alarm_to_declared: crate::metrics::Histogram,
    /// From an incident's first alarm to the first "down" notice a gateway
    /// took (wall time).
    pub first_alarm_to_first_notice: crate::metrics::Histogram,
    /// Declared incidents whose first notice has not gone yet: their first
    /// alarm's time.
    pub awaiting_first_notice: std::sync::Mutex<HashMap<IncidentId, DateTime<Utc>>>,
    /// The alarm source's consumer lag and broker connections, as it last
    /// knew them.
    pub source: std::sync::Mutex<Health>,
    /// Event time of the earliest `declared` event appended.
    pub first_declared_at: std::sync::Mutex<Option<DateTime<Utc>>>,
    pub first_sms: OnceLock<Instant>,
}

impl Stats {
    pub fn delivered(&self, c: Channel) -> u64 {
        let i = Channel::ALL.iter().position(|x| *x == c).unwrap_or(0);
        self.delivered[i].load(Relaxed)
    }
}

/// What the correlator saw but did not turn into events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Raises of an alarm already active (feeds re-send).
    pub repeated_raises: u64,
    /// Clears of an alarm no open incident holds.
    pub clears_without_raise: u64,
    /// Raises below the severity or outside the causes that count.
    pub not_service_affecting: u64,
    /// Raises that arrived after their own clear (a re-sent raise crossing
    /// the clear, or a short condition delivered in reverse): the condition
    /// is over, so they are not applied.
    pub stale_raises: u64,
}

impl Counts {
    /// Each count with the reason it is published under (`/metrics`,
    /// the replay report).
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("repeated_raise", self.repeated_raises),
            ("clear_without_raise", self.clears_without_raise),
            ("not_service_affecting", self.not_service_affecting),
            ("stale_raise", self.stale_raises),
        ]
    }
}

/// A cause tally (`transforms::classify`) as published: small enough to copy every step.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TallySummary {
    pub by_class: [u64; 8],
    pub top: Vec<(String, u64)>,
    pub unclassified: u64,
}

/// A source's view of its feed; `None`: not known (yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Records waiting on the feed (the consumer lag).
    pub lag: Option<u64>,
    /// Brokers the client is connected to.
    pub brokers_up: Option<u64>,
}
