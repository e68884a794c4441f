//! What every bench binary shares: one child process per case (so each
//! case's peak RSS is its own), smoke-sized under `cargo test`, one JSON
//! document out; and the memory figures from /proc.

use serde_json::{json, Value};

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// `--case NAME`: run that case (`run` answers `None` for an unknown name)
/// and print its figures. Otherwise run every case in a child of its own
/// and print them as one document. `cargo bench` passes `--bench`;
/// `cargo test --all-targets` runs the binary without it, and then each
/// child gets the `smoke` variables (those not set already): a small run
/// that checks the cases still work.
pub fn main(cases: &[&str], smoke_env: &[(&str, &str)], run: impl Fn(&str) -> Option<Value>) {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let case = args.get(i + 1).map(String::as_str).unwrap_or_default();
        match run(case) {
            Some(figures) => println!("{figures}"),
            None => {
                eprintln!("unknown case {case:?}; cases: {cases:?}");
                std::process::exit(2);
            }
        }
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let exe = std::env::current_exe().expect("the bench binary knows its path");
    let mut results = Vec::new();
    for case in cases {
        eprintln!("bench: {case}{} …", if smoke { " (smoke run)" } else { "" });
        let mut cmd = std::process::Command::new(&exe);
        if smoke {
            for (k, v) in smoke_env {
                if std::env::var_os(k).is_none() {
                    cmd.env(k, v);
                }
            }
        }
        let out =
            cmd.args(["--case", case]).stderr(std::process::Stdio::inherit()).output().expect("spawn a bench case");
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) if out.status.success() => results.push(v),
            _ => {
                eprintln!("bench: {case} failed ({}): {text}", out.status);
                std::process::exit(1);
            }
        }
    }
    let doc = json!({
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
        "cases": results,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

/// Peak resident set of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// A `/proc/self/status` memory line (`VmHWM:`, `VmRSS:`), in MiB (Linux).
#[allow(dead_code)] // not every bench reads more than the peak
pub fn proc_status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix(key))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// CPU time this thread has run, in seconds (`/proc/thread-self/schedstat`,
/// ns; Linux). On a shared machine a thread waits for a core as well as
/// running on it: alarms per CPU-second is the figure that noise leaves
/// alone, and the one a "per core" target means.
#[allow(dead_code)] // not every bench reads it
pub fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}
