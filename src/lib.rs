//! outage — the outage incident communication pipeline as a library.
//!
//! The binaries in `src/bin/` are thin: they parse flags and call into here.
//! The modules mirror the operator's picture (see ARCHITECTURE.md):
//! `sources` bring alarms in, `transforms` turn them into incidents and
//! plans, `sinks` carry actions out, `topology` wires them together.

/// mimalloc for every binary, test and bench that links this crate, so
/// the benches measure the allocator the daemon runs on. The pipeline
/// allocates on one thread and frees on another (records, events, actions
/// cross tasks); glibc's malloc spent about a quarter of the end-to-end
/// bench there, and mimalloc's thread-local free lists take most of it
/// (BENCHMARKS.md, session 10).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod config;
pub mod demo;
pub mod geodesy;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod redact;
pub mod refdata;
pub mod replay;
pub mod runtime;
pub mod simulate;
pub mod sinks;
pub mod sources;
pub mod tls;
pub mod topology;
pub mod transforms;
pub mod unsubscribe;
