//! The one metric type the plain counters of `runtime::Stats` cannot be: a
//! Prometheus histogram with fixed buckets, lock-free to observe and
//! rendered in the text exposition format by `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the latency buckets: from a second to two
/// hours, the range of "first alarm → declared / first notice".
pub const BUCKETS_S: [u64; 12] = [1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];

/// Observations of a duration, by bucket (non-cumulative; the last slot is
/// `+Inf`), with their count and sum.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_S.len() + 1],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    /// Record one duration; a negative one (clock skew) counts as zero.
    pub fn observe(&self, d: chrono::Duration) {
        let ms = u64::try_from(d.num_milliseconds()).unwrap_or(0);
        let i = BUCKETS_S.iter().position(|&b| ms <= b * 1000).unwrap_or(BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ms.fetch_add(ms, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// `# HELP`, `# TYPE`, the cumulative `_bucket{le=…}` lines, `_sum`
    /// (seconds) and `_count`.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Relaxed);
            match BUCKETS_S.get(i) {
                Some(le) => _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}"),
                None => _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}"),
            }
        }
        let sum = self.sum_ms.load(Relaxed);
        let _ = writeln!(out, "{name}_sum {}.{:03}\n{name}_count {}", sum / 1000, sum % 1000, self.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe(chrono::Duration::milliseconds(400));
        h.observe(chrono::Duration::seconds(45));
        h.observe(chrono::Duration::hours(3));
        h.observe(chrono::Duration::seconds(-2));
        let mut out = String::new();
        h.render("outage_x_seconds", "X.", &mut out);
        assert!(out.starts_with("# HELP outage_x_seconds X.\n# TYPE outage_x_seconds histogram\n"), "{out}");
        assert!(out.contains("outage_x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("outage_x_seconds_bucket{le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("outage_x_seconds_bucket{le=\"60\"} 3\n"), "{out}");
        assert!(out.contains("outage_x_seconds_bucket{le=\"7200\"} 3\n"), "{out}");
        assert!(out.contains("outage_x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("outage_x_seconds_sum 10845.400\noutage_x_seconds_count 4\n"), "{out}");
    }
}
