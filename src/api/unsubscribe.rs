//! `GET/POST /unsubscribe?token=…`: the one-click unsubscribe link of the
//! notice e-mails (RFC 8058), served without a bearer token — the signed
//! token is the authority ([`crate::unsubscribe::Signer`]).
//!
//! `GET` only checks the token and shows a page with a button (mail
//! scanners fetch links; a GET must change nothing); `POST` (the button,
//! or a mail client's one-click `List-Unsubscribe=One-Click`) records the
//! opt-out in `refdata.unsubscribes` and the planner honours it from the
//! next plan on. A forged, altered or expired token: 403, nothing recorded.

use super::{ApiState, Shared};
use crate::model::Channel;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif\"><h1>{title}</h1>{body}</body></html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; form-action 'self'"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

fn channel_words(c: Channel) -> &'static str {
    match c {
        Channel::Sms => "text messages",
        _ => "e-mails",
    }
}

/// The customer and channel of a genuine token, else the 403 (or 404 when
/// links are not configured).
fn verify(st: &ApiState, token: &str) -> Result<(String, Channel), Box<Response>> {
    let Some(signer) = &st.unsubscribe else {
        return Err(Box::new(html(StatusCode::NOT_FOUND, "Not found", "<p>Unsubscribe links are not enabled.</p>")));
    };
    signer.verify(token, (st.now)()).map_err(|e| {
        tracing::info!(reason = %e, "unsubscribe link refused");
        Box::new(html(
            StatusCode::FORBIDDEN,
            "This link does not work",
            "<p>The link is not valid or has expired. Use the link in a recent message.</p>",
        ))
    })
}

pub(super) async fn page(State(st): Shared, Query(q): Query<TokenQuery>) -> Response {
    match verify(&st, &q.token) {
        Ok((_, channel)) => html(
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "<p>Stop outage {} to you?</p><form method=\"post\" action=\"\">\
                 <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
                 <button type=\"submit\">Unsubscribe</button></form>",
                channel_words(channel)
            ),
        ),
        Err(r) => *r,
    }
}

pub(super) async fn confirm(State(st): Shared, Query(q): Query<TokenQuery>) -> Response {
    let (customer, channel) = match verify(&st, &q.token) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match st.refdata.opt_outs.record(&customer, channel, (st.now)()) {
        Ok(()) => {
            tracing::info!(customer = %customer, channel = channel.as_str(), "opt-out recorded (unsubscribe link)");
            html(
                StatusCode::OK,
                "Unsubscribed",
                &format!("<p>You will get no more outage {}.</p>", channel_words(channel)),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "recording an opt-out failed");
            html(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "<p>Your request could not be recorded.</p>")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::api::{channels, router, ApiState};
    use crate::model::{Channel, Customer, OptOut};
    use crate::refdata::RefData;
    use crate::unsubscribe::{OptOuts, Signer};
    use chrono::{DateTime, Utc};
    use std::sync::Arc;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    #[tokio::test]
    async fn only_a_genuine_unexpired_token_unsubscribes_and_only_by_post() {
        let d = tempfile::tempdir().unwrap();
        let journal = d.path().join("unsubscribes.jsonl");
        let mut rd = RefData::build(vec![], vec![], vec![]).unwrap();
        rd.opt_outs = Arc::new(OptOuts::open(&journal).unwrap());
        let rd = Arc::new(rd);
        let mut cfg = crate::config::Config::default();
        cfg.sinks.email = Some(crate::sinks::email::SmtpConfig {
            unsubscribe_url: Some("https://example.net/unsubscribe".into()),
            unsubscribe_secret: Some(SECRET.into()),
            ..Default::default()
        });
        let (_side, commands, snapshots) = channels();
        let state =
            ApiState::new(cfg.api_settings(), rd.clone(), commands, snapshots, Default::default(), Box::new(|| t(0)))
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router(Arc::new(state))).await });
        let http = crate::tls::http_client(&Default::default()).build().unwrap();
        let url = |token: &str| format!("http://{addr}/unsubscribe?token={token}");
        let get = |token: String| {
            let r = http.get(url(&token)).send();
            async move { r.await.unwrap().status().as_u16() }
        };
        let post = |token: String| {
            let r = http
                .post(url(&token))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click")
                .send();
            async move { r.await.unwrap().status().as_u16() }
        };
        let signer = Signer::new(SECRET);
        let good = signer.token("C0007636", Channel::Email, t(3600));
        let expired = signer.token("C0007636", Channel::Email, t(-1));
        let forged = Signer::new("guessed-secret-guessed-secret-guessed").token("C0007636", Channel::Email, t(3600));
        for bad in [&forged, &expired, &"C0007636".to_string(), &String::new()] {
            assert_eq!(get(bad.clone()).await, 403, "{bad}");
            assert_eq!(post(bad.clone()).await, 403, "{bad}");
        }
        assert_eq!(get(good.clone()).await, 200, "GET shows the button");
        assert_eq!(rd.opt_outs.get("C0007636"), OptOut::default(), "a GET records nothing (mail scanners fetch links)");
        assert!(!journal.exists(), "nothing refused or fetched was recorded");
        assert_eq!(post(good.clone()).await, 200);
        assert_eq!(rd.opt_outs.get("C0007636"), OptOut { sms: false, email: true });
        let c = Customer {
            customer_id: "C0007636".into(),
            msisdn: None,
            email: Some("c@example.com".into()),
            postcode: "02901".into(),
            language: "en".into(),
            services: crate::model::Services { voice: true, ..Default::default() },
            opt_out: OptOut::default(),
            monthly_fee: crate::model::Money {
                minor: 0,
                currency: crate::model::money::Currency::parse("USD").unwrap(),
            },
            avg_bill_3m: crate::model::Money {
                minor: 0,
                currency: crate::model::money::Currency::parse("USD").unwrap(),
            },
        };
        assert!(rd.opt_out(&c).email, "the planner's view includes the link's opt-out");
        let again = OptOuts::open(&journal).unwrap();
        assert_eq!(again.get("C0007636"), OptOut { sms: false, email: true }, "journalled for the next start");
        server.abort();
    }
}
