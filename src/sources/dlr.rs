//! Delivery reports in: the HTTP endpoint Kannel calls back on (`dlr-url`,
//! see [`crate::sinks::sms::Kannel::query`]). Owns turning
//! `GET /dlr?action_id=…&type=%d&answer=%A` into a [`DeliveryRecord`] on the
//! [`DeliveryLog`] (file and deliveries topic), so a notice's record runs
//! from the first attempt to the handset.

use crate::runtime::Shutdown;
use crate::sinks::deliveries::{DeliveryLog, DeliveryOutcome, DeliveryRecord};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

/// What Kannel substitutes into the `dlr-url` we hand it.
#[derive(Debug, serde::Deserialize)]
pub struct Report {
    pub action_id: String,
    /// `%d`: 1 delivered, 2 undelivered, 4 buffered, 8 SMSC accepted,
    /// 16 SMSC rejected.
    #[serde(rename = "type")]
    pub kind: u32,
    /// `%A`: the SMSC's answer text.
    #[serde(default)]
    pub answer: String,
}

/// The record a report becomes, or why it is refused.
pub fn record(r: &Report, at: chrono::DateTime<chrono::Utc>) -> Result<DeliveryRecord, &'static str> {
    let outcome = DeliveryOutcome::from_kannel_type(r.kind).ok_or("unknown report type")?;
    DeliveryRecord::report(&r.action_id, outcome, &r.answer, at).ok_or("not one of our action ids")
}

async fn report(State(log): State<Arc<DeliveryLog>>, Query(r): Query<Report>) -> (StatusCode, &'static str) {
    let rec = match record(&r, chrono::Utc::now()) {
        Ok(rec) => rec,
        Err(why) => {
            tracing::warn!(action_id = %r.action_id, kind = r.kind, why, "delivery report refused");
            return (StatusCode::BAD_REQUEST, why);
        }
    };
    match log.record(&rec) {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(error = %e, "delivery report not recorded");
            return (StatusCode::SERVICE_UNAVAILABLE, "not recorded");
        }
    }
    if let Err(e) = log.flush().await {
        // Kannel retries a report that did not get a 2xx.
        tracing::error!(error = %e, "delivery report not produced");
        return (StatusCode::SERVICE_UNAVAILABLE, "not recorded");
    }
    (StatusCode::OK, "recorded")
}

pub fn router(log: Arc<DeliveryLog>) -> Router {
    Router::new().route("/dlr", get(report)).with_state(log)
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serve reports until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    log: Arc<DeliveryLog>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "delivery-report endpoint listening");
    axum::serve(listener, router(log)).with_graceful_shutdown(async move { shutdown.requested().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_become_records_of_their_action() {
        let at = chrono::Utc::now();
        let r = Report { action_id: "INC-1/C7/sms/restored".into(), kind: 1, answer: "id:9 stat:DELIVRD".into() };
        let rec = record(&r, at).unwrap();
        assert_eq!(rec.customer_id, "C7");
        assert_eq!(rec.outcome, DeliveryOutcome::Delivered);
        assert!(record(&Report { kind: 3, ..r }, at).is_err());
        let stray = Report { action_id: "x".into(), kind: 1, answer: String::new() };
        assert_eq!(record(&stray, at).unwrap_err(), "not one of our action ids");
    }
}
