//! The pure core: alarms → incidents → plans. Nothing in here does I/O or
//! reads the clock; time comes in as a parameter, so every rule is tested
//! without Kafka, files or sleeping.

pub mod classify;
pub mod compensate;
pub mod correlate;
pub mod ledger;
pub mod order;
pub mod plan;
pub mod restore;
pub mod sms_text;
pub mod templates;
pub mod threads;
