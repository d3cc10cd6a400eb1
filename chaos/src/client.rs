//! A minimal async MQTT client over a tokio `TcpStream`, built on the
//! roost-protocol codec. It is a load client, not a general-purpose library:
//! no reconnection and no session state here. The codec speaks every packet,
//! so callers that need QoS 2 or a resumed session run the PUBREC / PUBREL /
//! PUBCOMP exchanges and the resends themselves (`crate::history` does).
//!
//! The connection splits into a [`PacketReader`] and a [`PacketWriter`] so a
//! load task can read acknowledgements while another writes. The writer
//! batches: callers queue many packets into one `BytesMut` and write them
//! with a single [`PacketWriter::flush`].
//!
//! Invariants:
//! - every step that waits on the broker (TCP connect, CONNACK, SUBACK) is
//!   bounded by a timeout;
//! - malformed input from the broker is an error value, never a panic;
//! - buffers start small (idle connections are cheap) and grow with traffic.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use bytestring::ByteString;
use roost_protocol::codec::{decode, encode, encode_publish};
use roost_protocol::packet::{
    Connect, ConnectProperties, Disconnect, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio::time::timeout;

/// The largest packet we accept from a broker.
const MAX_PACKET: u32 = 64 * 1024 * 1024;
/// First read buffer size: small, so 10,000 idle connections stay cheap.
const MIN_READ_CHUNK: usize = 4 * 1024;
/// Largest read size a busy connection grows to.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// How to open one MQTT connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub version: ProtocolVersion,
    /// Seconds; the client never sends PINGREQ, so pick one longer than the run.
    pub keep_alive: u16,
    pub clean_start: bool,
    /// Bounds the TCP connect and the wait for CONNACK, each.
    pub timeout: Duration,
    /// `SO_SNDBUF` for the socket; `None` leaves the kernel's autotuning.
    /// A publisher that writes as fast as TCP allows queues up to this much
    /// in its own kernel buffer, on top of what the broker buffers.
    pub send_buffer: Option<u32>,
    /// 5.0 Session Expiry Interval, seconds (`None`: absent, the session
    /// ends with the connection). Ignored by 3.1.1, where a persistent
    /// session is `clean_start: false`.
    pub session_expiry: Option<u32>,
}

/// A connected client: CONNACK received with a success code.
pub struct Client {
    pub reader: PacketReader,
    pub writer: PacketWriter,
    /// The broker's Receive Maximum (5.0 CONNACK): QoS 1 publishes it
    /// accepts unacknowledged. [MQTT-3.3.4-7]
    pub receive_maximum: Option<u16>,
    /// The CONNACK's Session Present flag: the broker resumed a session.
    pub session_present: bool,
}

impl Client {
    /// Opens the TCP connection, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(opts: &ConnectOptions) -> Result<Client> {
        let stream = timeout(opts.timeout, tcp_connect(opts))
            .await
            .map_err(|_| anyhow!("tcp connect to {}:{} timed out", opts.host, opts.port))?
            .with_context(|| format!("tcp connect to {}:{}", opts.host, opts.port))?;
        let (rd, wr) = stream.into_split();
        let mut client = Client {
            reader: PacketReader::new(rd, opts.version),
            writer: PacketWriter::new(wr, opts.version),
            receive_maximum: None,
            session_present: false,
        };
        client
            .writer
            .queue(&Packet::Connect(Box::new(connect_packet(opts))))?;
        client.writer.flush().await?;
        let connack = timeout(opts.timeout, client.reader.next())
            .await
            .map_err(|_| anyhow!("no CONNACK within {:?}", opts.timeout))??;
        match connack {
            Some(Packet::ConnAck(ack)) if ack.code == 0 => {
                client.receive_maximum = ack.properties.receive_maximum;
                client.session_present = ack.session_present;
                Ok(client)
            }
            Some(Packet::ConnAck(ack)) => bail!("CONNECT refused with code {:#04x}", ack.code),
            Some(other) => bail!("expected CONNACK, got {}", other.kind()),
            None => bail!("connection closed before CONNACK"),
        }
    }

    /// Subscribes to `filter` and waits for the SUBACK; fails if the broker
    /// refuses the filter. Packets other than the SUBACK are discarded.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS, wait: Duration) -> Result<QoS> {
        let packet_id = self.writer.next_packet_id();
        let subscribe = Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: ByteString::from(filter),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: Default::default(),
        };
        self.writer.queue(&Packet::Subscribe(subscribe))?;
        self.writer.flush().await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let packet = tokio::time::timeout_at(deadline, self.reader.next())
                .await
                .map_err(|_| anyhow!("no SUBACK for {filter:?} within {wait:?}"))??;
            match packet {
                Some(Packet::SubAck(ack)) if ack.packet_id == packet_id => {
                    let code = ack.reason_codes.first().copied().unwrap_or(0x80);
                    return QoS::from_u8(code)
                        .ok_or_else(|| anyhow!("SUBSCRIBE {filter:?} refused with {code:#04x}"));
                }
                Some(_) => continue,
                None => bail!("connection closed before SUBACK"),
            }
        }
    }

    pub fn split(self) -> (PacketReader, PacketWriter) {
        (self.reader, self.writer)
    }

    /// Sends DISCONNECT and closes the socket, bounded by `wait`.
    pub async fn disconnect(self, wait: Duration) {
        self.writer.disconnect(wait).await;
    }
}

/// Resolves the host and connects to the first address that accepts.
async fn tcp_connect(opts: &ConnectOptions) -> Result<TcpStream> {
    let mut last_error = anyhow!("{} resolves to no address", opts.host);
    for addr in lookup_host((opts.host.as_str(), opts.port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = opts.send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last_error = e.into(),
        }
    }
    Err(last_error)
}

fn connect_packet(opts: &ConnectOptions) -> Connect {
    Connect {
        protocol: opts.version,
        clean_start: opts.clean_start,
        keep_alive: opts.keep_alive,
        client_id: ByteString::from(opts.client_id.as_str()),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: opts.session_expiry,
            ..ConnectProperties::default()
        },
    }
}

/// The read half: a growing buffer and the codec.
pub struct PacketReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    version: ProtocolVersion,
    chunk: usize,
}

impl PacketReader {
    fn new(rd: OwnedReadHalf, version: ProtocolVersion) -> PacketReader {
        PacketReader {
            rd,
            buf: BytesMut::new(),
            version,
            chunk: MIN_READ_CHUNK,
        }
    }

    /// Reads more bytes from the socket. `Ok(false)` on end of stream.
    /// Cancel safe: a cancelled call loses no data.
    pub async fn fill(&mut self) -> Result<bool> {
        if self.buf.capacity() - self.buf.len() < self.chunk / 2 {
            self.buf.reserve(self.chunk);
        }
        let n = self
            .rd
            .read_buf(&mut self.buf)
            .await
            .context("socket read")?;
        if n >= self.chunk && self.chunk < MAX_READ_CHUNK {
            self.chunk *= 2;
        }
        Ok(n > 0)
    }

    /// The next complete packet already in the buffer, if any.
    pub fn next_buffered(&mut self) -> Result<Option<Packet>> {
        decode(&mut self.buf, Some(self.version), MAX_PACKET)
            .map_err(|e| anyhow!("malformed packet from broker: {e}"))
    }

    /// The next packet, reading as needed. `Ok(None)` on a clean end of
    /// stream; a stream ending inside a packet is an error.
    pub async fn next(&mut self) -> Result<Option<Packet>> {
        loop {
            if let Some(packet) = self.next_buffered()? {
                return Ok(Some(packet));
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed inside a packet");
            }
        }
    }
}

/// The write half: packets are queued into one buffer and written together.
pub struct PacketWriter {
    wr: OwnedWriteHalf,
    buf: BytesMut,
    version: ProtocolVersion,
    last_packet_id: u16,
}

impl PacketWriter {
    fn new(wr: OwnedWriteHalf, version: ProtocolVersion) -> PacketWriter {
        PacketWriter {
            wr,
            buf: BytesMut::new(),
            version,
            last_packet_id: 0,
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Appends `packet` to the write buffer.
    pub fn queue(&mut self, packet: &Packet) -> Result<()> {
        encode(packet, self.version, &mut self.buf).map_err(|e| anyhow!("encode: {e}"))
    }

    /// Appends a PUBLISH to the write buffer (no clone of the packet).
    pub fn queue_publish(&mut self, publish: &Publish) -> Result<()> {
        encode_publish(publish, self.version, &mut self.buf).map_err(|e| anyhow!("encode: {e}"))
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything queued in one `write_all`.
    pub async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.wr.write_all(&self.buf).await.context("socket write")?;
        self.buf.clear();
        Ok(())
    }

    /// The next packet identifier, 1..=65535 then wrapping. [MQTT-2.2.1-3]
    pub fn next_packet_id(&mut self) -> u16 {
        self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
        self.last_packet_id
    }

    /// Best effort: discards what is queued, sends DISCONNECT, shuts the
    /// socket down. Bounded by `wait`; errors are ignored (the broker may
    /// already be gone).
    pub async fn disconnect(self, wait: Duration) {
        self.disconnect_with(Disconnect::default(), wait).await;
    }

    /// [`PacketWriter::disconnect`] with a given DISCONNECT, e.g. one whose
    /// 5.0 Session Expiry Interval of 0 ends a persistent session. What was
    /// queued before is written first (acknowledgements still owed).
    pub async fn close_with(mut self, disconnect: Disconnect, wait: Duration) {
        if self.queue(&Packet::Disconnect(disconnect)).is_err() {
            return;
        }
        let _ = timeout(wait, async {
            self.flush().await?;
            self.wr.shutdown().await.context("shutdown")
        })
        .await;
    }

    /// Discards what is queued, then [`PacketWriter::close_with`].
    pub async fn disconnect_with(mut self, disconnect: Disconnect, wait: Duration) {
        self.buf.clear();
        self.close_with(disconnect, wait).await;
    }
}

/// Builds a PUBLISH (any QoS; `packet_id` is ignored on the wire at QoS 0).
pub fn publish(topic: &ByteString, qos: QoS, packet_id: u16, payload: bytes::Bytes) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.clone(),
        packet_id,
        properties: Default::default(),
        payload,
    }
}
