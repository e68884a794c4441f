//! Which sink carries which action: notices (SMS, e-mail) to the notice
//! sink (the delivery engine, or the outbox without gateways), data grants
//! to the provisioning API when one is configured (else the notice sink's
//! outbox), credits to billing. One [`ActionSink`] for the dispatcher, so
//! its lanes, ordering and acknowledgement rules hold for every channel.

use super::handover::Handover;
use super::provision::Provisioner;
use super::{ActionSink, Delivery, SinkError};
use crate::model::{Action, Channel};

/// `credits` is [`super::billing::BillingCredits`] in the daemon.
pub struct Routes<N: ActionSink, C: ActionSink> {
    pub notices: N,
    pub grants: Option<Provisioner>,
    pub credits: C,
}

impl<N: ActionSink, C: ActionSink> ActionSink for Routes<N, C> {
    async fn deliver(&self, a: &Action) -> Result<Delivery, SinkError> {
        match (a.channel, &self.grants) {
            (Channel::Credit, _) => self.credits.deliver(a).await,
            (Channel::DataGrant, Some(g)) => g.deliver(a).await,
            _ => self.notices.deliver(a).await,
        }
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.notices.flush().await?;
        if let Some(g) = &self.grants {
            g.flush().await?;
        }
        self.credits.flush().await
    }

    async fn assigned(&self, handover: &Handover) -> Result<(), SinkError> {
        self.notices.assigned(handover).await?;
        if let Some(g) = &self.grants {
            g.assigned(handover).await?;
        }
        self.credits.assigned(handover).await
    }
}
