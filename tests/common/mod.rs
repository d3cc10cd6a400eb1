//! Shared test harness: an in-process broker on 127.0.0.1:0, and a raw MQTT
//! client built on roost-protocol's codec for byte-exact assertions (reason
//! codes, DUP flags, session present) that a high-level client hides.
//!
//! Every wait is bounded: `recv` gives up after `WAIT`, so a broken broker
//! fails a test instead of hanging it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use roost::config::Config;
use roost::node::Node;
use roost_protocol::codec;
use roost_protocol::packet::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(5);

/// A unique, empty data directory under the system temp dir.
/// A loopback port nothing listens on now, never handed out before by this
/// test process: a port bound and released can come back at once, and two
/// tests running in parallel (or one node's two listeners) would then share
/// it, one of them talking to the other's server.
#[allow(dead_code)] // not every test binary uses it
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn temp_data_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "roost-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub struct Broker {
    pub node: Option<Node>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Broker {
    pub async fn start() -> Broker {
        Broker::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Broker {
        let mut cfg = Config::default();
        cfg.mqtt.listen = "127.0.0.1:0".parse().unwrap();
        cfg.mgmt.listen = "127.0.0.1:0".parse().unwrap();
        cfg.cluster.listen = "127.0.0.1:0".parse().unwrap();
        cfg.node.data_dir = temp_data_dir();
        tweak(&mut cfg);
        let data_dir = cfg.node.data_dir.clone();
        let node = Node::start(cfg).await.expect("broker starts");
        let addr = node.mqtt_addr().await.expect("listener address");
        Broker {
            node: Some(node),
            addr,
            data_dir,
        }
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("running")
    }

    pub async fn stop(mut self) {
        if let Some(n) = self.node.take() {
            tokio::time::timeout(Duration::from_secs(20), n.shutdown())
                .await
                .expect("shutdown in time");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A raw MQTT client: sends and receives whole packets with our codec.
pub struct Raw {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect_tcp(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("tcp connect");
        Raw {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// TCP connect + CONNECT + CONNACK; returns the CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
    ) -> (Raw, ConnAck) {
        Raw::connect_with(addr, connect_packet(version, client_id, clean_start)).await
    }

    pub async fn connect_with(addr: SocketAddr, c: Connect) -> (Raw, ConnAck) {
        let mut raw = Raw::connect_tcp(addr, c.protocol).await;
        raw.send(Packet::Connect(Box::new(c))).await;
        match raw.recv().await {
            Some(Packet::ConnAck(a)) => (raw, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        codec::encode(&p, self.version, &mut out).expect("encode");
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next packet, or None when the server closed the connection.
    /// Panics after `WAIT` without either.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .expect("a packet or a close in time")
    }

    /// The next packet if one arrives within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Packet> {
        tokio::time::timeout(d, self.recv_inner())
            .await
            .ok()
            .flatten()
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Ok(Some(p)) = codec::decode(&mut self.buf, Some(self.version), 268_435_455) {
                return Some(p);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    pub async fn subscribe(&mut self, packet_id: u16, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_opts(
            packet_id,
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            None,
        )
        .await
    }

    pub async fn subscribe_opts(
        &mut self,
        packet_id: u16,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> SubAck {
        let s = Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: ByteString::from(filter),
                options,
            }],
            properties: SubscribeProperties {
                subscription_identifier: id,
                ..Default::default()
            },
        };
        self.send(Packet::Subscribe(s)).await;
        match self.recv().await {
            Some(Packet::SubAck(a)) => a,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &'static [u8],
        qos: QoS,
        retain: bool,
        packet_id: u16,
    ) {
        let p = Publish {
            qos,
            retain,
            topic: ByteString::from(topic),
            packet_id,
            payload: bytes::Bytes::from_static(payload),
            ..Default::default()
        };
        self.send(Packet::Publish(p)).await;
    }

    /// The next PUBLISH, skipping nothing else: any other packet panics.
    pub async fn expect_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts no packet arrives within `d`.
    pub async fn expect_nothing(&mut self, d: Duration) {
        if let Some(p) = self.recv_within(d).await {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Waits for the server to close the connection; returns any packets
    /// received before the close.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }
}

pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start,
        keep_alive: 60,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// Poll `f` until it returns true or `WAIT` passes.
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Short waits for "nothing else arrives" checks: long enough for a packet
/// already on its way over loopback, short enough to keep the suite fast.
pub const QUIET: Duration = Duration::from_millis(300);

impl Raw {
    /// The next packet; panics if the server closed the connection.
    pub async fn expect_packet(&mut self) -> Packet {
        match self.recv().await {
            Some(p) => p,
            None => panic!("expected a packet, the connection was closed"),
        }
    }

    /// Every byte the server sends until it closes the connection (bounded
    /// by `WAIT`), for byte-exact assertions on refusals.
    pub async fn read_raw_until_closed(&mut self) -> Vec<u8> {
        let mut got = self.buf.split().to_vec();
        let read = async {
            let mut chunk = [0u8; 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("the server closes the connection in time");
        got
    }

    pub async fn send_publish(&mut self, p: Publish) {
        self.send(Packet::Publish(p)).await;
    }

    pub async fn puback(&mut self, packet_id: u16) {
        self.send(Packet::PubAck(Ack::new(packet_id))).await;
    }

    pub async fn pubrec(&mut self, packet_id: u16) {
        self.send(Packet::PubRec(Ack::new(packet_id))).await;
    }

    pub async fn pubrel(&mut self, packet_id: u16) {
        self.send(Packet::PubRel(Ack::new(packet_id))).await;
    }

    pub async fn pubcomp(&mut self, packet_id: u16) {
        self.send(Packet::PubComp(Ack::new(packet_id))).await;
    }

    /// A normal DISCONNECT, then waits for the server to close.
    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Disconnect::default())).await;
        let rest = self.expect_closed().await;
        assert!(rest.is_empty(), "nothing after DISCONNECT, got {rest:?}");
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish_qos1(&mut self, topic: &str, payload: impl Into<bytes::Bytes>, id: u16) {
        self.send_publish(publish(topic, payload, QoS::AtLeastOnce, id))
            .await;
        match self.recv().await {
            Some(Packet::PubAck(a)) if a.packet_id == id => {}
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
}

/// A PUBLISH without properties.
pub fn publish(topic: &str, payload: impl Into<bytes::Bytes>, qos: QoS, packet_id: u16) -> Publish {
    Publish {
        qos,
        topic: ByteString::from(topic),
        packet_id,
        payload: payload.into(),
        ..Default::default()
    }
}

/// A 5.0 CONNECT with clean start off and a session expiry interval.
pub fn persistent_v5(client_id: &str, session_expiry: u32) -> Connect {
    let mut c = connect_packet(ProtocolVersion::V5, client_id, false);
    c.properties.session_expiry_interval = Some(session_expiry);
    c
}

/// A will message without properties.
pub fn will(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: ByteString::from(topic),
        payload: bytes::Bytes::from_static(payload),
        qos,
        retain,
        properties: WillProperties::default(),
    }
}

/// Subscription options with only the QoS set.
pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..Default::default()
    }
}
