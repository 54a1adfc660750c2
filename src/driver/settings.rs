//! Everything one connection slot needs, validated by the consumer's builder.

use std::sync::Arc;
use std::time::Duration;

use super::codec::{Codec, ConnectParams};
use super::Backoff;
use crate::config::{Config, QoS};
use crate::disposition::AckPolicy;
use crate::event::Hook;
use crate::message::Origin;

/// Everything a connection driver needs, validated.
pub(crate) struct Settings {
    pub(crate) config: Config,
    pub(crate) client_id: String,
    /// Filters as sent in SUBSCRIBE (with the `$share/<group>/` prefix when grouped).
    pub(crate) subscriptions: Vec<(String, QoS)>,
    pub(crate) shared_group: Option<String>,
    /// Filters as the user gave them.
    pub(crate) filters: Arc<[String]>,
    pub(crate) concurrency: usize,
    pub(crate) max_inflight: usize,
    pub(crate) policy: AckPolicy,
    pub(crate) drain_timeout: Duration,
    pub(crate) redeliver_after: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_reconnect_attempts: Option<u32>,
    pub(crate) codec: Codec,
    pub(crate) hook: Option<Hook>,
}

impl Settings {
    pub(crate) fn connect_params<'a>(&'a self, origin: &'a Origin) -> ConnectParams<'a> {
        let v5 = self.codec == Codec::V5;
        let c = &self.config;
        ConnectParams {
            client_id: &origin.client_id,
            keepalive_secs: c.keepalive.as_secs() as u16,
            clean_start: c.clean_start,
            username: c.username.as_deref(),
            password: c.password.as_ref().map(|p| p.0.as_str()),
            session_expiry: (v5 && !c.clean_start).then_some(c.session_expiry.as_secs() as u32),
            receive_maximum: v5.then_some(self.max_inflight as u16),
            // Deliberately not sent: MQTT 5 lets a broker silently discard a message over
            // the client's Maximum Packet Size. Unannounced, an oversized packet reaches
            // us, fails loudly (DownReason::PacketTooLarge) and stays on the broker.
            max_packet_size: None,
            will: c.will.as_ref(),
            bridge_mode: c.bridge_mode,
            properties: v5.then_some(&c.properties),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("client_id", &self.client_id)
            .field("subscriptions", &self.subscriptions)
            .field("max_inflight", &self.max_inflight)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
