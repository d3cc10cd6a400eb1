//! Overload protection at the door: the node-wide state that decides whether
//! a new connection is served ([`Overload`], in `BrokerCtx`), and the
//! refusal of one that is not ([`Refusals`]). An evacuation (the cluster
//! layer's `evacuation` actor) refuses through the same door.
//!
//! A refused connection never gets a connection actor (two actors and a
//! reader task would be the very cost being refused). A small task reads its
//! CONNECT (short timeout, small size limit), answers with a CONNACK that
//! says why in the client's protocol version (5.0: the reason code; 3.1.1:
//! return code 3, server unavailable) and closes. At most
//! [`REFUSALS_IN_FLIGHT`] such tasks run per listener: past that, sockets
//! are closed at once, unanswered (still counted), so a flood of refused
//! clients costs a bounded amount of memory. The tasks belong to the
//! listener's accept loop and end with it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use parking_lot::RwLock;
use roost_protocol::codec::{self, DecodeError};
use roost_protocol::packet::{reason, ConnAck, ConnAckProperties, Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tracing::debug;

use crate::broker::Counters;

/// Refusal tasks running at once per listener.
pub const REFUSALS_IN_FLIGHT: usize = 64;
/// Largest CONNECT a refusal decodes (a client id, credentials, a token).
/// A larger one (a big will) is answered from its protocol level alone.
pub const REFUSAL_MAX_CONNECT: u32 = 8 * 1024;
/// Longest a refusal waits for the CONNECT and then for the client to
/// close (at most `mqtt.handshake_timeout` when that is shorter).
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Node-wide overload state, shared by the listeners (readers, at every
/// accept) and the `alarms` actor (the writer).
#[derive(Debug, Default)]
pub struct Overload {
    /// Process RSS above which the memory alarm is raised; 0 = off. Starts
    /// at `node.memory_high_watermark`; may be changed at runtime.
    memory_high_watermark: AtomicU64,
    /// Raised by the `alarms` actor while the RSS is above the watermark:
    /// new connections are refused meanwhile.
    memory_alarm: AtomicBool,
    /// The [`Evacuation`] stage, set by the evacuation actor.
    evacuation: AtomicU8,
    /// Where an evacuating node sends clients (MQTT 5 Server Reference:
    /// `host:port`, several separated by spaces), on the CONNACK that
    /// refuses them and on the DISCONNECT that evicts them.
    server_reference: RwLock<Option<ByteString>>,
}

/// How far an evacuation has gone, as the door sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evacuation {
    /// No evacuation: served as usual.
    Off,
    /// `/health/ready` answers 503 so load balancers take the node out;
    /// new connections are still served (`wait_health_check`).
    Draining,
    /// New connections are refused with 0x9C (use another server).
    Refusing,
}

impl Overload {
    pub fn new(memory_high_watermark: u64) -> Overload {
        Overload {
            memory_high_watermark: AtomicU64::new(memory_high_watermark),
            memory_alarm: AtomicBool::new(false),
            evacuation: AtomicU8::new(0),
            server_reference: RwLock::new(None),
        }
    }

    pub fn evacuation(&self) -> Evacuation {
        match self.evacuation.load(Ordering::Acquire) {
            0 => Evacuation::Off,
            1 => Evacuation::Draining,
            _ => Evacuation::Refusing,
        }
    }

    /// Set by the evacuation actor; `server_reference` is what refused
    /// and evicted 5.0 clients are told to use instead.
    pub fn set_evacuation(&self, stage: Evacuation, server_reference: Option<String>) {
        *self.server_reference.write() = server_reference.map(ByteString::from);
        let v = match stage {
            Evacuation::Off => 0,
            Evacuation::Draining => 1,
            Evacuation::Refusing => 2,
        };
        self.evacuation.store(v, Ordering::Release);
    }

    /// The Server Reference of an evacuation, if one was given.
    pub fn server_reference(&self) -> Option<ByteString> {
        self.server_reference.read().clone()
    }

    pub fn memory_high_watermark(&self) -> u64 {
        self.memory_high_watermark.load(Ordering::Relaxed)
    }

    /// Takes effect at the next memory check (`node.memory_check_interval`).
    pub fn set_memory_high_watermark(&self, bytes: u64) {
        self.memory_high_watermark.store(bytes, Ordering::Relaxed);
    }

    pub fn memory_alarm(&self) -> bool {
        self.memory_alarm.load(Ordering::Relaxed)
    }

    pub(crate) fn set_memory_alarm(&self, raised: bool) {
        self.memory_alarm.store(raised, Ordering::Relaxed);
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener has `mqtt.max_connections` live connections.
    MaxConnections,
    /// The memory alarm is raised (`node.memory_high_watermark`).
    Memory,
    /// The node is being evacuated (`roost ctl evacuation start`).
    Evacuating,
}

impl Refusal {
    /// The 5.0 CONNACK reason code; 3.1.1 clients get return code 3
    /// (server unavailable) for both (the codec maps it).
    pub fn reason_code(self) -> u8 {
        match self {
            // An administrative limit: 0x97 quota exceeded.
            Refusal::MaxConnections => reason::QUOTA_EXCEEDED,
            // Transient, the node is short of memory: 0x89 server busy,
            // which tells the client to try again later.
            Refusal::Memory => reason::SERVER_BUSY,
            // 0x9C use another server, with the evacuation's Server
            // Reference when it has one [MQTT-4.11].
            Refusal::Evacuating => reason::USE_ANOTHER_SERVER,
        }
    }

    /// The `reason` label of `roost_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::Memory => "memory",
            Refusal::Evacuating => "evacuation",
        }
    }

    fn counter(self, c: &Counters) -> &AtomicU64 {
        match self {
            Refusal::MaxConnections => &c.connections_refused,
            Refusal::Memory => &c.connections_refused_memory,
            Refusal::Evacuating => &c.connections_refused_evacuation,
        }
    }
}

/// One listener's refusals: bounded in number and in time, owned by its
/// accept loop (they end with it: a listener restart or shutdown leaves
/// none behind).
pub struct Refusals {
    tasks: JoinSet<()>,
    timeout: Duration,
}

impl Refusals {
    pub fn new(handshake_timeout: Duration) -> Refusals {
        Refusals {
            tasks: JoinSet::new(),
            timeout: handshake_timeout.min(REFUSAL_TIMEOUT),
        }
    }

    /// Counts the refusal and answers it in a task of its own, or, with
    /// [`REFUSALS_IN_FLIGHT`] already running, closes the socket at once.
    /// `server_reference` goes on a 5.0 CONNACK.
    pub fn refuse(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        why: Refusal,
        server_reference: Option<ByteString>,
        counters: &Counters,
    ) {
        Counters::inc(why.counter(counters));
        // Finished refusals leave the set here: it holds running ones only.
        while self.tasks.try_join_next().is_some() {}
        if self.tasks.len() >= REFUSALS_IN_FLIGHT {
            debug!(%peer, reason = why.label(), "connection_refused_unanswered");
            return;
        }
        debug!(%peer, reason = why.label(), "connection_refused");
        let timeout = self.timeout;
        self.tasks.spawn(async move {
            let answer = answer(stream, why.reason_code(), server_reference);
            let _ = tokio::time::timeout(timeout, answer).await;
        });
    }
}

/// Reads the CONNECT, writes a CONNACK with `code` in its protocol version,
/// and closes once the client has. The caller bounds it in time.
async fn answer(mut stream: TcpStream, code: u8, server_reference: Option<ByteString>) {
    let mut buf = BytesMut::with_capacity(512);
    let Some(version) = read_connect_version(&mut stream, &mut buf).await else {
        // Not a CONNECT, or no CONNECT: closed without CONNACK, as a
        // served connection would be [MQTT-3.1.4-1].
        return;
    };
    let ack = Packet::ConnAck(ConnAck {
        code,
        properties: ConnAckProperties {
            server_reference,
            ..ConnAckProperties::default()
        },
        ..ConnAck::default()
    });
    buf.clear();
    if codec::encode(&ack, version, &mut buf).is_err() || stream.write_all(&buf).await.is_err() {
        return;
    }
    // [MQTT-3.2.2-7] (5.0, [MQTT-3.2.2-5] 3.1.1): the server closes the
    // connection after a CONNACK with a failure code. Half-close, then
    // read until the client closes: closing with unread bytes (a pipelined
    // SUBSCRIBE) would reset the connection, and a reset can discard the
    // CONNACK before the client has read it.
    let _ = stream.shutdown().await;
    loop {
        buf.clear();
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The protocol version of the CONNECT at the front of the stream; `None`
/// if the stream ends or is not a CONNECT.
async fn read_connect_version(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Option<ProtocolVersion> {
    loop {
        match codec::decode(buf, None, REFUSAL_MAX_CONNECT) {
            Ok(Some(Packet::Connect(c))) => return Some(c.protocol),
            Ok(Some(_)) => return None,
            // A refusal needs no more than the level: 3.1 ("MQIsdp") and
            // unknown levels get the 3.1.1 format, which they read.
            Err(DecodeError::UnsupportedProtocolVersion(_)) => return Some(ProtocolVersion::V311),
            Err(DecodeError::PacketTooLarge { .. }) => {
                if let Some(v) = connect_version(buf) {
                    return Some(v);
                }
            }
            Err(_) => return None,
            Ok(None) => {}
        }
        if buf.len() > REFUSAL_MAX_CONNECT as usize {
            return None;
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The version of a CONNECT from its first bytes (fixed header, protocol
/// name, level), without the rest of the packet. [MQTT-3.1.2.1]
fn connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    // Remaining Length: 1 to 4 bytes, the high bit says "more follow".
    let len_len = buf[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let name_at = 1 + len_len;
    let name_len = usize::from(u16::from_be_bytes([
        *buf.get(name_at)?,
        *buf.get(name_at + 1)?,
    ]));
    let level = *buf.get(name_at + 2 + name_len)?;
    Some(if level == 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(version: ProtocolVersion, client_id: &str) -> BytesMut {
        let c = roost_protocol::packet::Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        };
        let mut buf = BytesMut::new();
        codec::encode(&Packet::Connect(Box::new(c)), version, &mut buf).unwrap();
        buf
    }

    #[test]
    fn the_version_is_read_from_the_first_bytes_of_a_connect() {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let long_id = "x".repeat(300); // a two-byte Remaining Length
            for id in ["c", long_id.as_str()] {
                let bytes = connect_bytes(v, id);
                assert_eq!(connect_version(&bytes), Some(v));
                // Enough with the header, the name and the level.
                let header = if id.len() > 100 { 3 } else { 2 };
                assert_eq!(connect_version(&bytes[..header + 7]), Some(v));
                assert_eq!(connect_version(&bytes[..header + 6]), None);
            }
        }
        assert_eq!(connect_version(&[0x30, 0x00]), None, "a PUBLISH");
        assert_eq!(connect_version(&[]), None);
    }

    #[test]
    fn refusal_codes_are_quota_exceeded_server_busy_and_use_another_server() {
        assert_eq!(Refusal::MaxConnections.reason_code(), 0x97);
        assert_eq!(Refusal::Memory.reason_code(), 0x89);
        assert_eq!(Refusal::Evacuating.reason_code(), 0x9C);
        // All are "server unavailable" (3) for a 3.1.1 client.
        for r in [
            Refusal::MaxConnections,
            Refusal::Memory,
            Refusal::Evacuating,
        ] {
            let mut buf = BytesMut::new();
            let ack = Packet::ConnAck(ConnAck {
                code: r.reason_code(),
                ..ConnAck::default()
            });
            codec::encode(&ack, ProtocolVersion::V311, &mut buf).unwrap();
            assert_eq!(&buf[..], &[0x20, 0x02, 0x00, 0x03]);
        }
    }
}
