//! Opening a connection: the transport, then CONNECT and its CONNACK.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::codec::{Codec, ConnAckInfo, ConnectParams, Decoded, Inbound};
use super::io::{Buffered, READ_CHUNK};
use super::settings::Settings;
use crate::config::Config;
use crate::error::DownReason;
use crate::message::Origin;
use crate::transport::down_reason;

/// Open the transport (TCP, TLS, websocket) to the endpoint `config` is aimed at
/// ([`Failover`](super::Failover)), send CONNECT, wait for a successful CONNACK. The
/// connection comes back with anything read past the CONNACK still in its read buffer.
pub(super) async fn open(
    config: Arc<Config>,
    settings: Arc<Settings>,
    origin: Arc<Origin>,
) -> Result<(Buffered, ConnAckInfo), DownReason> {
    let params = settings.connect_params(&origin);
    connect(&config, settings.codec(), &params).await
}

/// [`open`] for any connection of `config` (the publisher's too): CONNECT with `params`,
/// to `config`'s first endpoint.
pub(crate) async fn connect(
    config: &Config,
    codec: Codec,
    params: &ConnectParams<'_>,
) -> Result<(Buffered, ConnAckInfo), DownReason> {
    let attempt = async {
        let (mut io, connect_rtt) = crate::transport::connect(config).await?;

        let mut wbuf = BytesMut::with_capacity(256);
        codec.encode_connect(params, &mut wbuf);
        io.write_all_buf(&mut wbuf).await.map_err(down_reason)?;
        io.flush().await.map_err(down_reason)?;

        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            match codec.decode(&mut rbuf, config.max_packet_size)? {
                Decoded::Packet(Inbound::ConnAck(info)) => {
                    if let Some(reason) = info.refused {
                        return Err(reason);
                    }
                    return Ok((Buffered::new(io, rbuf, connect_rtt), info));
                }
                Decoded::Packet(Inbound::Disconnect { code }) => {
                    return Err(DownReason::ServerDisconnect { code })
                }
                Decoded::Packet(other) => {
                    return Err(DownReason::Protocol(format!(
                        "expected CONNACK, got {other:?}"
                    )))
                }
                Decoded::NeedMore(_) => {
                    if io.read_buf(&mut rbuf).await.map_err(down_reason)? == 0 {
                        return Err(DownReason::Closed);
                    }
                }
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or(Err(DownReason::Timeout))
}
