//! `bench backlog` against an in-process fake broker that keeps persistent
//! sessions: a session created without clean start outlives its connection,
//! and QoS 1 messages published while it is away queue in memory until it
//! comes back. Checks the scenario end to end (publish, reconnect, drain,
//! exact accounting) in about a second, and that a lost or duplicated
//! message fails the run.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use roost_chaos::bench::backlog::{self, BacklogConfig, BacklogReport};
use roost_protocol::codec::{decode, encode};
use roost_protocol::packet::{Ack, ConnAck, Packet, ProtocolVersion, Publish, QoS, SubAck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every test run is bounded by this.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Session {
    filters: Vec<String>,
    /// Messages waiting while the client is away.
    queue: VecDeque<Publish>,
    online: Option<mpsc::UnboundedSender<Packet>>,
    /// Ends with its connection.
    clean: bool,
}

/// What the fake does wrong, to check that the scenario notices.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Queue nothing for the n-th message published (0-based).
    drop_nth: Option<u64>,
    /// Queue the n-th message twice.
    duplicate_nth: Option<u64>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    published: u64,
}

#[derive(Clone)]
struct FakeBroker {
    state: Arc<Mutex<State>>,
    faults: Faults,
}

impl FakeBroker {
    async fn start(faults: Faults) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let broker = FakeBroker {
            state: Arc::default(),
            faults,
        };
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(broker.clone().serve(sock));
            }
        });
        port
    }

    async fn serve(self, sock: TcpStream) {
        let (mut rd, mut wr) = sock.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Packet>();
        let mut version = None;
        let mut client = None;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let writer = tokio::spawn(async move {
            let mut out = BytesMut::new();
            let mut next_id: u16 = 0;
            let mut v = ProtocolVersion::V311;
            while let Some(mut p) = rx.recv().await {
                if let Packet::Connect(c) = &p {
                    v = c.protocol; // how the reader passes the version on
                    continue;
                }
                if let Packet::Publish(publish) = &mut p {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    publish.packet_id = next_id;
                }
                encode(&p, v, &mut out).expect("encode");
                if rx.is_empty() || out.len() > 64 * 1024 {
                    if wr.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
        });
        loop {
            match decode(&mut buf, version, 1 << 20) {
                Ok(Some(packet)) => {
                    if let Packet::Connect(c) = &packet {
                        version = Some(c.protocol);
                        // Tell the writer the version (not sent on the wire).
                        let _ = tx.send(packet.clone());
                    }
                    if !self.handle(packet, &tx, &mut client) {
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
        if let Some(id) = client {
            let mut st = self.state.lock().expect("lock");
            let clean = st.sessions.get(&id).is_some_and(|s| s.clean);
            if clean {
                st.sessions.remove(&id);
            } else if let Some(s) = st.sessions.get_mut(&id) {
                s.online = None;
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    fn handle(
        &self,
        packet: Packet,
        tx: &mpsc::UnboundedSender<Packet>,
        client: &mut Option<String>,
    ) -> bool {
        let mut st = self.state.lock().expect("lock");
        match packet {
            Packet::Connect(c) => {
                let id = c.client_id.to_string();
                if c.clean_start {
                    st.sessions.remove(&id);
                }
                let present = st.sessions.contains_key(&id);
                let s = st.sessions.entry(id.clone()).or_default();
                s.clean = c.clean_start;
                let _ = tx.send(Packet::ConnAck(ConnAck {
                    session_present: present,
                    ..ConnAck::default()
                }));
                for p in s.queue.drain(..) {
                    let _ = tx.send(Packet::Publish(p));
                }
                s.online = Some(tx.clone());
                *client = Some(id);
            }
            Packet::Subscribe(sub) => {
                let Some(s) = client.as_ref().and_then(|id| st.sessions.get_mut(id)) else {
                    return false;
                };
                let mut codes = vec![];
                for f in &sub.filters {
                    s.filters.push(f.filter.to_string());
                    codes.push(f.options.qos as u8);
                }
                let _ = tx.send(Packet::SubAck(SubAck {
                    packet_id: sub.packet_id,
                    reason_codes: codes,
                    ..SubAck::default()
                }));
            }
            Packet::Publish(p) => {
                let n = st.published;
                st.published += 1;
                let copies = if self.faults.drop_nth == Some(n) {
                    0
                } else if self.faults.duplicate_nth == Some(n) {
                    2
                } else {
                    1
                };
                for s in st.sessions.values_mut() {
                    if !s.filters.iter().any(|f| *f == *p.topic) {
                        continue;
                    }
                    for _ in 0..copies {
                        let copy = Publish {
                            dup: false,
                            ..p.clone()
                        };
                        match &s.online {
                            Some(o) => {
                                let _ = o.send(Packet::Publish(copy));
                            }
                            None => s.queue.push_back(copy),
                        }
                    }
                }
                if p.qos == QoS::AtLeastOnce {
                    let _ = tx.send(Packet::PubAck(Ack::new(p.packet_id)));
                }
            }
            Packet::Disconnect(_) => return false,
            _ => {}
        }
        true
    }
}

fn config(
    port: u16,
    version: ProtocolVersion,
    data_dir: Option<std::path::PathBuf>,
) -> BacklogConfig {
    BacklogConfig {
        host: "127.0.0.1".into(),
        port,
        broker_pid: Some(std::process::id()),
        data_dir,
        messages: 3_001,
        payload: 100,
        publishers: 2,
        window: 16,
        version,
        session_expiry: 60,
        connect_timeout: Duration::from_secs(2),
        ack_timeout: Duration::from_secs(2),
        time_limit: Duration::from_secs(30),
        settle: Duration::from_millis(50),
        sample_every: Duration::from_millis(20),
        progress: false,
        label: Some("fake".into()),
    }
}

async fn run(cfg: &BacklogConfig) -> BacklogReport {
    tokio::time::timeout(TEST_DEADLINE, backlog::run(cfg))
        .await
        .expect("run within the test deadline")
        .expect("run completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_is_published_then_drained_exactly_once_in_order() {
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let port = FakeBroker::start(Faults::default()).await;
        let dir = std::env::temp_dir().join(format!("roost-chaos-backlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("f"), [0u8; 7]).expect("write");
        let cfg = config(port, version, Some(dir.clone()));
        let report = run(&cfg).await;
        std::fs::remove_dir_all(&dir).expect("rmdir");
        assert!(report.passed(), "{version:?}: {}", report.human());
        assert_eq!(report.publish.acked, 3_001);
        assert_eq!(report.publish.bytes_acked, 300_100);
        let d = report.drain.as_ref().expect("drain stats");
        assert!(d.complete);
        assert_eq!((d.expected, d.received, d.in_order), (3_001, 3_001, 3_001));
        assert_eq!(d.duplicates + d.reordered + d.lost + d.corrupt, 0);
        assert!(report.rss.idle.is_some() && report.rss.drain_peak.is_some());
        assert!(report.rss.publish_peak >= report.rss.idle);
        assert_eq!(report.data_dir.after_publish, Some(7));
        assert!(!report.rss_timeline.is_empty());
        let back: BacklogReport = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(back.publish.acked, 3_001);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_duplicated_message_fails_the_run() {
    let port = FakeBroker::start(Faults {
        drop_nth: Some(1_000),
        ..Faults::default()
    })
    .await;
    let mut cfg = config(port, ProtocolVersion::V5, None);
    cfg.ack_timeout = Duration::from_millis(500);
    let report = run(&cfg).await;
    assert!(!report.passed());
    let text = report.failures.join("\n");
    assert!(text.contains("drain stalled"), "{text}");
    assert!(text.contains("1 messages lost"), "{text}");
    assert_eq!(report.drain.as_ref().map(|d| d.lost), Some(1));

    let port = FakeBroker::start(Faults {
        duplicate_nth: Some(10),
        ..Faults::default()
    })
    .await;
    let report = run(&config(port, ProtocolVersion::V5, None)).await;
    let text = report.failures.join("\n");
    assert!(text.contains("1 messages duplicated"), "{text}");
    assert!(text.contains("arrived again"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_acknowledges_fails_within_the_timeout() {
    // Accepts the TCP connection, answers nothing: CONNECT times out.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mut cfg = config(port, ProtocolVersion::V5, None);
    cfg.connect_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = backlog::run(&cfg).await.expect_err("no CONNACK");
    assert!(format!("{err:#}").contains("CONNACK"), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
