//! The bench scenarios against an in-process fake broker: a tokio
//! `TcpListener` that speaks just enough MQTT (CONNECT -> CONNACK,
//! SUBSCRIBE -> SUBACK, PUBLISH -> PUBACK and a copy to every matching
//! subscriber). It checks the load client's encode/decode path and the
//! accounting end to end, in about a second per run, without any real broker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use roost_chaos::bench::report::DrainEnd;
use roost_chaos::bench::{self, BenchConfig, Report, Scenario};
use roost_protocol::codec::{decode, encode};
use roost_protocol::packet::{
    Ack, ConnAck, Packet, ProtocolVersion, Publish, QoS, SubAck, Subscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every test run is bounded by this.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

/// A subscription: filter, granted QoS, the subscriber's outbound queue.
type Route = (String, QoS, mpsc::Sender<Packet>);

#[derive(Clone, Default)]
struct FakeBroker {
    routes: Arc<Mutex<Vec<Route>>>,
}

/// `a/#` matches everything under `a/`; anything else matches exactly.
fn matches(filter: &str, topic: &str) -> bool {
    match filter.strip_suffix('#') {
        Some(prefix) => topic.starts_with(prefix),
        None => filter == topic,
    }
}

impl FakeBroker {
    async fn start() -> (FakeBroker, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let broker = FakeBroker::default();
        let b = broker.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(b.clone().serve(sock));
            }
        });
        (broker, port)
    }

    /// One connection: reads packets, answers, routes publishes.
    async fn serve(self, sock: TcpStream) {
        let (mut rd, wr) = sock.into_split();
        let (tx, rx) = mpsc::channel::<Packet>(4096);
        let mut version = None;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut writer = None;
        let mut rx = Some(rx);
        let mut wr = Some(wr);
        loop {
            match decode(&mut buf, version, 1 << 20) {
                Ok(Some(packet)) => {
                    if let Packet::Connect(c) = &packet {
                        version = Some(c.protocol);
                        let (w, r) = (wr.take(), rx.take());
                        if let (Some(w), Some(r)) = (w, r) {
                            writer = Some(tokio::spawn(write_loop(w, r, c.protocol)));
                        }
                    }
                    if !self.handle(packet, &tx).await {
                        break;
                    }
                }
                Ok(None) => match rd.read_buf(&mut buf).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                },
                Err(_) => break,
            }
        }
        drop(tx);
        if let Some(w) = writer {
            let _ = w.await;
        }
    }

    /// Answers one packet; false to close the connection.
    async fn handle(&self, packet: Packet, tx: &mpsc::Sender<Packet>) -> bool {
        let reply = match packet {
            Packet::Connect(_) => Packet::ConnAck(ConnAck::default()),
            Packet::Subscribe(s) => self.subscribe(s, tx),
            Packet::Publish(p) => {
                let ack =
                    (p.qos == QoS::AtLeastOnce).then(|| Packet::PubAck(Ack::new(p.packet_id)));
                self.route(p).await;
                match ack {
                    Some(a) => a,
                    None => return true,
                }
            }
            Packet::Disconnect(_) => return false,
            _ => return true,
        };
        tx.send(reply).await.is_ok()
    }

    fn subscribe(&self, s: Subscribe, tx: &mpsc::Sender<Packet>) -> Packet {
        let mut codes = vec![];
        let mut routes = self.routes.lock().expect("lock");
        for f in &s.filters {
            routes.push((f.filter.to_string(), f.options.qos, tx.clone()));
            codes.push(f.options.qos as u8);
        }
        Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reason_codes: codes,
            ..SubAck::default()
        })
    }

    /// Copies `p` to every matching subscriber (packet ids: the writer's job).
    async fn route(&self, p: Publish) {
        let targets: Vec<(QoS, mpsc::Sender<Packet>)> = {
            let routes = self.routes.lock().expect("lock");
            routes
                .iter()
                .filter(|(f, _, tx)| matches(f, &p.topic) && !tx.is_closed())
                .map(|(_, q, tx)| (*q.min(&p.qos), tx.clone()))
                .collect()
        };
        for (qos, tx) in targets {
            let copy = Publish {
                qos,
                packet_id: 0,
                dup: false,
                ..p.clone()
            };
            let _ = tx.send(Packet::Publish(copy)).await;
        }
    }
}

/// Writes queued packets in batches, numbering outgoing QoS 1 publishes.
async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Packet>, v: ProtocolVersion) {
    let mut buf = BytesMut::new();
    let mut next_id: u16 = 0;
    while let Some(first) = rx.recv().await {
        let mut packet = Some(first);
        while let Some(mut p) = packet.take() {
            if let Packet::Publish(publish) = &mut p {
                if publish.qos == QoS::AtLeastOnce {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    publish.packet_id = next_id;
                }
            }
            encode(&p, v, &mut buf).expect("encode");
            if buf.len() < 64 * 1024 {
                packet = rx.try_recv().ok();
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
}

fn config(port: u16, qos: QoS, version: ProtocolVersion) -> BenchConfig {
    BenchConfig {
        host: "127.0.0.1".into(),
        port,
        sub_port: None,
        settle: Duration::ZERO,
        broker_pid: Some(std::process::id()),
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        qos,
        payload: 64,
        version,
        window: 100,
        connect_timeout: Duration::from_secs(2),
        label: Some("fake".into()),
    }
}

async fn run(cfg: &BenchConfig, scenario: Scenario) -> Report {
    tokio::time::timeout(TEST_DEADLINE, bench::run(cfg, &scenario))
        .await
        .expect("run within the test deadline")
        .expect("run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_at_qos1_delivers_every_acknowledged_message_exactly_once() {
    let (_broker, port) = FakeBroker::start().await;
    let cfg = config(port, QoS::AtLeastOnce, ProtocolVersion::V311);
    let report = run(&cfg, Scenario::FanIn { publishers: 4 }).await;
    let f = report.flow.as_ref().expect("flow stats");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(f.sent > 0, "{}", report.human());
    assert_eq!(f.acked, Some(f.sent));
    assert_eq!(f.expected, f.sent);
    assert!(f.received <= f.sent);
    assert_eq!(f.lost, 0, "{}", report.human());
    assert_eq!((f.received, f.unique), (f.sent, f.sent));
    assert_eq!((f.duplicates, f.reordered, f.unexpected), (0, 0, 0));
    assert_eq!(f.drain, DrainEnd::Complete);
    assert!(f.receive_rate > 0.0);
    assert!(report.latency_us.is_some());
    assert!(report.broker.is_some(), "broker stats with --broker-pid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_at_qos0_over_mqtt5_counts_every_delivery() {
    let (_broker, port) = FakeBroker::start().await;
    let cfg = config(port, QoS::AtMostOnce, ProtocolVersion::V5);
    let report = run(&cfg, Scenario::FanOut { subscribers: 3 }).await;
    let f = report.flow.as_ref().expect("flow stats");
    assert!(f.sent > 0);
    assert_eq!(f.expected, 3 * f.sent);
    assert!(f.received <= f.expected);
    assert_eq!(f.unique + f.lost, f.expected, "{}", report.human());
    assert_eq!(f.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_at_a_fixed_rate_reports_percentiles() {
    let (_broker, port) = FakeBroker::start().await;
    let cfg = config(port, QoS::AtLeastOnce, ProtocolVersion::V5);
    let report = run(&cfg, Scenario::Latency { rate: 500.0 }).await;
    let f = report.flow.as_ref().expect("flow stats");
    // 1.2 s at 500/s: about 600 messages.
    assert!((500..=700).contains(&f.sent), "{}", report.human());
    assert_eq!(f.lost, 0);
    let l = report.latency_us.as_ref().expect("latency");
    assert!(l.count > 400 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_opened_and_counted() {
    let (_broker, port) = FakeBroker::start().await;
    let mut cfg = config(port, QoS::AtMostOnce, ProtocolVersion::V311);
    cfg.warmup = Duration::ZERO;
    let report = run(&cfg, Scenario::Idle { connections: 200 }).await;
    let i = report.idle.as_ref().expect("idle stats");
    assert_eq!((i.established, i.failed), (200, 0), "{}", report.human());
    assert!(i.connections_per_s > 0.0);
    assert!(i.rss_per_connection_bytes.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_not_there_fails_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let cfg = config(port, QoS::AtMostOnce, ProtocolVersion::V311);
    let started = std::time::Instant::now();
    let result = bench::run(&cfg, &Scenario::Pairs { pairs: 2 }).await;
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}
