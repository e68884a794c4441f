//! outage — the outage incident communication pipeline as a library.
//!
//! The binaries in `src/bin/` are thin: they parse flags and call into here.
//! The modules mirror the operator's picture (see ARCHITECTURE.md):
//! `sources` bring alarms in, `transforms` turn them into incidents and
//! plans, `sinks` carry actions out, `topology` wires them together.

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
pub mod simulate;
pub mod sinks;
pub mod sources;
pub mod topology;
pub mod transforms;
