//! The bridge's MQTT client connection over our codec: resolve, TCP
//! connect, CONNECT / CONNACK (bounded by `connect_timeout`), then a reader
//! task that hands every packet to the bridge actor.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use roost_protocol::codec;
use roost_protocol::packet::{ConnAck, Connect, ConnectProperties, Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::actor_queue::{ActorQueue, Queued};
use super::BridgeConfig;

/// Largest packet an egress bridge accepts from the remote (it only sends
/// acks).
pub(crate) const MAX_ACK_PACKET: u32 = 1 << 20;

/// A connection the remote accepted.
pub struct Established {
    pub writer: OwnedWriteHalf,
    pub reader: OwnedReadHalf,
    /// Bytes read after the CONNACK.
    pub buf: BytesMut,
    pub connack: ConnAck,
}

/// Resolve `remote` (again on every attempt), connect, CONNECT, wait for a
/// successful CONNACK; all within `connect_timeout`. `max_packet` is the
/// largest packet we accept (announced to a 5.0 remote).
pub(crate) async fn establish(cfg: &BridgeConfig, max_packet: u32) -> Result<Established, String> {
    match tokio::time::timeout(cfg.connect_timeout, attempt(cfg, max_packet)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no CONNACK within {:?}", cfg.connect_timeout)),
    }
}

async fn attempt(cfg: &BridgeConfig, max_packet: u32) -> Result<Established, String> {
    let addrs: Vec<_> = tokio::net::lookup_host(&cfg.remote)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", cfg.remote))?
        .collect();
    let mut last = format!("{} resolved to no address", cfg.remote);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    let stream = stream.ok_or(last)?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut out = BytesMut::new();
    codec::encode(
        &Packet::Connect(Box::new(connect_packet(cfg, max_packet))),
        cfg.protocol,
        &mut out,
    )
    .map_err(|e| format!("encode CONNECT: {e}"))?;
    writer
        .write_all(&out)
        .await
        .map_err(|e| format!("write CONNECT: {e}"))?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match codec::decode(&mut buf, Some(cfg.protocol), max_packet) {
            Ok(Some(Packet::ConnAck(a))) if a.code == 0 => {
                return Ok(Established {
                    writer,
                    reader,
                    buf,
                    connack: a,
                })
            }
            Ok(Some(Packet::ConnAck(a))) => {
                return Err(format!("CONNACK refused with code {:#04x}", a.code))
            }
            Ok(Some(p)) => return Err(format!("expected CONNACK, got {}", p.kind())),
            Ok(None) => {}
            Err(e) => return Err(format!("undecodable reply: {e}")),
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return Err("closed before CONNACK".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn connect_packet(cfg: &BridgeConfig, max_packet: u32) -> Connect {
    let session_expiry = (cfg.protocol == ProtocolVersion::V5 && cfg.session_expiry > 0)
        .then_some(cfg.session_expiry);
    Connect {
        protocol: cfg.protocol,
        clean_start: cfg.clean_start,
        keep_alive: u16::try_from(cfg.keep_alive.as_secs()).unwrap_or(u16::MAX),
        client_id: ByteString::from(cfg.client_id.as_str()),
        will: None,
        username: cfg.username.as_deref().map(ByteString::from),
        password: cfg
            .password
            .as_ref()
            .map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
        properties: ConnectProperties {
            session_expiry_interval: session_expiry,
            maximum_packet_size: (cfg.protocol == ProtocolVersion::V5).then_some(max_packet),
            ..Default::default()
        },
    }
}

/// Reads packets until the connection ends, handing each to `on_packet`
/// (which returns false to stop: the actor is gone) with its place in the
/// actor's `queue`, then the reason to `on_lost`. It waits while
/// [`READ_AHEAD`](super::actor_queue::READ_AHEAD) packets are queued and
/// not handled (the remote then waits on TCP). The callers tag both with
/// the connection's generation, so the actor ignores stale ones.
pub(crate) async fn read_loop(
    mut reader: OwnedReadHalf,
    mut buf: BytesMut,
    version: ProtocolVersion,
    max_packet: u32,
    queue: Arc<ActorQueue>,
    mut on_packet: impl FnMut(Packet, Queued) -> bool,
    on_lost: impl FnOnce(String),
) {
    let reason = loop {
        match codec::decode(&mut buf, Some(version), max_packet) {
            Ok(Some(packet)) => {
                let queued = queue.enter_packet().await;
                if !on_packet(packet, queued) {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break format!("undecodable packet from the remote: {e}"),
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => break "closed by the remote".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read: {e}"),
        }
    };
    on_lost(reason);
}

/// Write `bytes`, bounded by `timeout` (a remote that stopped reading must
/// not hold the actor).
pub(crate) async fn write(
    writer: &mut OwnedWriteHalf,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err(format!("write blocked for {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::READ_AHEAD;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// A remote that sends far more than the actor handles: the reader
    /// hands over `READ_AHEAD` packets, then waits until the actor is done
    /// with some; the count and its peak never pass the bound.
    #[tokio::test]
    async fn the_reader_stops_at_read_ahead_until_the_actor_handles_packets() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let total = 1000;
        let remote = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut out = BytesMut::new();
            for _ in 0..total {
                codec::encode(&Packet::PingResp, ProtocolVersion::V311, &mut out).unwrap();
            }
            sock.write_all(&out).await.unwrap();
            // Hold the connection open until the test ends.
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        let (reader, _writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let queue = Arc::new(ActorQueue::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reading = tokio::spawn(read_loop(
            reader,
            BytesMut::new(),
            ProtocolVersion::V311,
            1024,
            queue.clone(),
            move |p, queued| tx.send((p, queued)).is_ok(),
            |_| {},
        ));

        // The actor handles nothing: exactly READ_AHEAD arrive.
        let mut held = Vec::new();
        while held.len() < READ_AHEAD {
            held.push(rx.recv().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            rx.try_recv().is_err(),
            "the reader went past its read-ahead"
        );
        assert_eq!(queue.queued(), READ_AHEAD as u64);

        // Handled ones make room for as many more; then all of them come.
        held.truncate(READ_AHEAD - 10);
        for _ in 0..10 {
            held.push(rx.recv().await.unwrap());
        }
        assert!(rx.try_recv().is_err());
        let mut got = READ_AHEAD + 10;
        held.clear();
        while got < total {
            let (p, queued) = rx.recv().await.unwrap();
            assert_eq!(p, Packet::PingResp);
            drop(queued);
            got += 1;
        }
        assert_eq!(queue.queued(), 0);
        assert_eq!(queue.peak(), READ_AHEAD as u64);
        reading.abort();
        remote.abort();
    }
}
