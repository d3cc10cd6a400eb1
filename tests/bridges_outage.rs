//! The bridge outage proof (issue #6), with real processes: the `roost`
//! binary with a durable MQTT egress bridge to a real `mosquitto`, which
//! is SIGSTOPped (alive, taking nothing) while a publisher sends a large
//! volume into the bridged topic at full speed (QoS 1, a window of
//! unacknowledged publishes). Checked:
//! - the broker's RSS (VmRSS of /proc/<pid>/status, sampled every 50 ms)
//!   stays under `idle + RSS_BOUND`;
//! - the drop counter equals exactly what did not fit in `max_bytes`;
//! - the broker is SIGKILLed during the outage and started again on the
//!   same data dir; then mosquitto resumes, and every message that was
//!   accepted (PUBACKed) and not counted as dropped reaches the remote
//!   subscriber, in order (the inflight window of the killed broker may
//!   arrive twice: at least once).
//!
//! Volume: `BRIDGE_OUTAGE_BYTES` (default 64 MB, a CI-sized run) and
//! `BRIDGE_OUTAGE_MAX_BYTES` (the bridge's `max_bytes`, default 40 MB); not
//! `ROOST_*`, which the broker would read as configuration.
//! The 1 GB run of docs/BENCHMARKS.md is this test in release mode:
//! `BRIDGE_OUTAGE_BYTES=1000000000 BRIDGE_OUTAGE_MAX_BYTES=800000000 cargo
//! test --release -p roost --test bridges_outage -- --nocapture`.
//!
//! Every child process is killed on drop; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use common::{free_port, temp_data_dir};
use roost_protocol::codec;
use roost_protocol::packet::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_roost");
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const PAYLOAD: usize = 1_000;
const TOPIC: &str = "sensors/load";
/// The bound on RSS growth while the backlog builds (issue #6 target).
const RSS_BOUND: u64 = 150 << 20;
/// Bounds every wait for the next packet.
/// The bridge actor's own mailbox: `READ_AHEAD` (64) packets from the remote
/// and one wake-up (actors/src/bridge/actor_queue.rs).
const ACTOR_BOUND: u64 = 64 + 1;
const ACTOR_PEAK: &str = "roost_bridge_actor_queued_messages_peak{bridge=\"up\"}";
const PACKET_WAIT: Duration = Duration::from_secs(30);

/// Kills the child on drop: a failed assertion must not leak a process.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL ends a SIGSTOPped process too.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.0.id().to_string())
        .status()
        .expect("kill runs");
    assert!(ok.success(), "kill -{sig}");
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples a process's RSS every 50 ms until dropped; keeps the peak.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssPeak {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The broker's site: data dir, config, ports; kept across its lives.
struct Site {
    dir: PathBuf,
    mqtt: SocketAddr,
    mgmt: SocketAddr,
}

impl Site {
    fn new(remote_port: u16, max_bytes: u64) -> Site {
        let dir = temp_data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let site = Site {
            mqtt: SocketAddr::from(([127, 0, 0, 1], free_port())),
            mgmt: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
        };
        let config = format!(
            r#"
[[bridges]]
name = "up"
kind = "mqtt"
remote = "127.0.0.1:{remote_port}"
protocol = "3.1.1"
local_topics = ["sensors/#"]
remote_prefix = "edge/"
qos = 1
max_inflight = 32
keep_alive = "600s"
connect_timeout = "1s"
reconnect_min = "100ms"
reconnect_max = "500ms"
ack_timeout = "1s"

[bridges.buffer]
mode = "durable"
memory_bytes = "4MiB"
max_bytes = {max_bytes}
"#
        );
        std::fs::write(site.dir.join("roost.toml"), config).unwrap();
        site
    }

    async fn start(&self) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg("start")
            .arg("--config")
            .arg(self.dir.join("roost.toml"))
            .args(["--cluster-listen", "127.0.0.1:0"])
            .args(["--mqtt", &self.mqtt.to_string()])
            .args(["--mgmt", &self.mgmt.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("roost.log")).unwrap());
        let mut p = Proc(cmd.spawn().expect("spawn roost"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(self.mqtt).await.is_ok() {
                return p;
            }
            if let Some(status) = p.0.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("roost.log")).unwrap_or_default();
                panic!("roost exited before serving: {status}\n{log}");
            }
            assert!(Instant::now() < deadline, "roost did not listen in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every `roost_bridge_*` sample of `/metrics` (for failure messages).
    async fn bridge_metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.mgmt);
        let call = move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .proxy(None)
                .build()
                .into();
            let text = agent
                .get(&url)
                .call()
                .expect("scrape")
                .body_mut()
                .read_to_string()
                .expect("body");
            text.lines()
                .filter(|l| l.starts_with("roost_bridge_") && !l.contains("latency"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(call))
            .await
            .expect("scrape in time")
            .expect("scrape thread")
    }

    /// One sample of `/metrics`, e.g. `roost_bridge_inflight{bridge="up"}`.
    async fn metric(&self, series: &str) -> u64 {
        let url = format!("http://{}/metrics", self.mgmt);
        let series = format!("{series} ");
        let call = move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .proxy(None)
                .build()
                .into();
            let text = agent
                .get(&url)
                .call()
                .expect("scrape")
                .body_mut()
                .read_to_string()
                .expect("body");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .unwrap_or_else(|| panic!("{series:?} missing in:\n{text}"))
                .trim()
                .parse()
                .expect("a number")
        };
        tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(call))
            .await
            .expect("scrape in time")
            .expect("scrape thread")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// mosquitto on 127.0.0.1:`port`, no persistence needed (it is never
/// restarted, only stopped and continued).
fn start_mosquitto(dir: &std::path::Path, port: u16) -> Proc {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
    )
    .unwrap();
    let p = Proc(
        Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (scripts/setup.sh installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto listens in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// A minimal MQTT client for volume: pipelined publishes, batched writes.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    version: ProtocolVersion,
}

impl Wire {
    async fn connect(addr: SocketAddr, client_id: &str, clean_start: bool) -> Wire {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let mut w = Wire {
            stream,
            buf: BytesMut::new(),
            out: BytesMut::new(),
            version: ProtocolVersion::V311,
        };
        w.queue(&Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V311,
            clean_start,
            // No keep alive: the run may outlast any fixed one.
            keep_alive: 0,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        })));
        w.flush().await;
        match w.next().await {
            Packet::ConnAck(a) if a.code == 0 => w,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn queue(&mut self, p: &Packet) {
        codec::encode(p, self.version, &mut self.out).expect("encode");
    }

    async fn flush(&mut self) {
        self.stream.write_all(&self.out).await.expect("write");
        self.out.clear();
    }

    async fn next(&mut self) -> Packet {
        loop {
            if let Some(p) =
                codec::decode(&mut self.buf, Some(self.version), 1 << 24).expect("decode")
            {
                return p;
            }
            let n = tokio::time::timeout(PACKET_WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a packet in time")
                .expect("read");
            assert!(n > 0, "closed by the peer");
        }
    }
}

/// The bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn payload(i: u64) -> Bytes {
    let mut p = format!("{i:012}").into_bytes();
    // Incompressible-ish filler derived from the number.
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while p.len() < PAYLOAD {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(b'a' + (x % 26) as u8);
    }
    Bytes::from(p)
}

fn seq_of(payload: &[u8]) -> u64 {
    std::str::from_utf8(&payload[..12])
        .unwrap()
        .parse()
        .unwrap()
}

/// Publish messages 0..n at QoS 1 with `window` unacknowledged at most;
/// returns when all are acknowledged (accepted).
async fn publish_all(addr: SocketAddr, n: u64, window: u64) {
    let mut w = Wire::connect(addr, "loader", true).await;
    let topic = ByteString::from(TOPIC);
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < n {
        while sent < n && sent - acked < window {
            let id = (sent % 65_000 + 1) as u16;
            w.queue(&Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                topic: topic.clone(),
                packet_id: id,
                payload: payload(sent),
                ..Default::default()
            }));
            sent += 1;
        }
        w.flush().await;
        match w.next().await {
            Packet::PubAck(_) => acked += 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
        // Take every PUBACK already read without waiting.
        while let Ok(Some(p)) = codec::decode(&mut w.buf, Some(w.version), 1 << 24) {
            assert!(matches!(p, Packet::PubAck(_)), "{p:?}");
            acked += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_bridge_outage_is_bounded_in_memory_counts_drops_exactly_and_survives_kill_9() {
    assert!(
        std::path::Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} missing: run scripts/setup.sh"
    );
    let volume = env_u64("BRIDGE_OUTAGE_BYTES", 64_000_000);
    let max_bytes = env_u64("BRIDGE_OUTAGE_MAX_BYTES", 40_000_000);
    let n = volume / PAYLOAD as u64;
    let record = (4 + TOPIC.len() + PAYLOAD) as u64;
    let capacity = max_bytes / record;

    let mq_dir = temp_data_dir();
    std::fs::create_dir_all(&mq_dir).unwrap();
    let mq_port = free_port();
    let mosquitto = start_mosquitto(&mq_dir, mq_port);
    let mq_addr = SocketAddr::from(([127, 0, 0, 1], mq_port));
    // The remote subscriber stays connected throughout.
    let mut sub = Wire::connect(mq_addr, "remote-sub", false).await;
    sub.queue(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: ByteString::from("edge/#"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
        properties: Default::default(),
    }));
    sub.flush().await;
    assert!(matches!(sub.next().await, Packet::SubAck(_)));

    let site = Site::new(mq_port, max_bytes);
    let broker = site.start().await;
    let pid = broker.0.id();
    let connected = "roost_bridge_state{bridge=\"up\",state=\"connected\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while site.metric(connected).await != 1 {
        assert!(Instant::now() < deadline, "bridge connected in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_bytes(pid);

    // The outage: mosquitto alive but taking nothing.
    signal(&mosquitto, "STOP");
    let rss = RssPeak::start(pid);
    let t = Instant::now();
    publish_all(site.mqtt, n, 256).await;
    let publish_secs = t.elapsed().as_secs_f64();
    let peak = rss.finish();
    let inflight = site.metric("roost_bridge_inflight{bridge=\"up\"}").await;
    let dropped = site
        .metric("roost_bridge_dropped_total{bridge=\"up\",reason=\"queue_full\"}")
        .await;
    let queued = site
        .metric("roost_bridge_queued_messages{bridge=\"up\",where=\"memory\"}")
        .await
        + site
            .metric("roost_bridge_queued_messages{bridge=\"up\",where=\"disk\"}")
            .await;
    // No PUBACK for ack_timeout (1 s): blocked.
    let blocked_series = "roost_bridge_state{bridge=\"up\",state=\"blocked\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut blocked = site.metric(blocked_series).await;
    while blocked != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        blocked = site.metric(blocked_series).await;
    }
    eprintln!(
        "outage: published {n} x {PAYLOAD} B in {publish_secs:.1} s ({:.0} msg/s); \
         RSS idle {} MiB, peak {} MiB (+{} MiB); inflight {inflight}, queued {queued}, \
         dropped {dropped}, blocked {blocked}",
        n as f64 / publish_secs,
        idle >> 20,
        peak >> 20,
        peak.saturating_sub(idle) >> 20
    );
    assert!(
        peak < idle + RSS_BOUND,
        "RSS peak {peak} above idle {idle} + {RSS_BOUND}"
    );
    let disk = dir_bytes(&site.dir.join("data"));
    eprintln!("data dir after publish: {} MiB", disk >> 20);
    let all = site.bridge_metrics().await;
    // The actor's own (ractor) mailbox stayed bounded while producers
    // pushed at full speed: one wake-up at a time, READ_AHEAD packets.
    let actor_peak = site.metric(ACTOR_PEAK).await;
    eprintln!("bridge actor mailbox: at most {actor_peak} messages during the publish");
    assert!(
        actor_peak <= ACTOR_BOUND,
        "actor mailbox peak {actor_peak}:\n{all}"
    );
    assert_eq!(
        blocked, 1,
        "a stopped remote with a full window is blocked:\n{all}"
    );
    assert!((1..=32).contains(&inflight), "a window was sent:\n{all}");
    // Every accepted message is in flight, queued, or counted as dropped;
    // the queue is at its cap (a drop frees at least max_bytes / 64).
    assert_eq!(dropped, n - inflight - queued, "the drops add up:\n{all}");
    let chunk = (max_bytes / 64).div_ceil(record) + 1;
    assert!(
        queued <= capacity && queued + chunk >= capacity,
        "queued {queued} of capacity {capacity}:\n{all}"
    );

    // kill -9 during the outage, start again on the same data dir.
    let mut broker = broker;
    broker.0.kill().unwrap();
    broker.0.wait().unwrap();
    drop(broker);
    let broker = site.start().await;
    let restored = site
        .metric("roost_bridge_queued_messages{bridge=\"up\",where=\"disk\"}")
        .await;
    assert_eq!(
        restored,
        queued + inflight,
        "the window and the queue are back from disk"
    );

    // The remote comes back: everything accepted and not dropped arrives,
    // in order; the old window may come twice (at least once).
    signal(&mosquitto, "CONT");
    let t = Instant::now();
    let want: Vec<u64> = (0..inflight).chain(n - queued..n).collect();
    let mut next = 0usize;
    let mut dups = 0u64;
    while next < want.len() {
        match sub.next().await {
            Packet::Publish(p) => {
                assert_eq!(&*p.topic, "edge/sensors/load");
                let seq = seq_of(&p.payload);
                assert_eq!(p.payload, payload(seq), "payload {seq} intact");
                if seq == want[next] {
                    next += 1;
                } else {
                    assert!(
                        seq < inflight && want[..next].contains(&seq),
                        "message {seq} out of order or unexpected (want {})",
                        want[next]
                    );
                    dups += 1;
                }
                sub.queue(&Packet::PubAck(Ack::new(p.packet_id)));
                if sub.buf.is_empty() {
                    sub.flush().await;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    sub.flush().await;
    let replay_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "replay: {} messages in order in {replay_secs:.1} s ({:.0} msg/s), {dups} duplicates of the killed broker's window",
        want.len(),
        want.len() as f64 / replay_secs
    );
    let actor_peak = site.metric(ACTOR_PEAK).await;
    eprintln!("bridge actor mailbox: at most {actor_peak} messages during the replay");
    assert!(actor_peak <= ACTOR_BOUND, "actor mailbox peak {actor_peak}");
    // Nothing more than the window's duplicates.
    let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    if let Ok(Packet::Publish(p)) = &extra {
        let seq = seq_of(&p.payload);
        assert!(seq < inflight, "unexpected extra message {seq}");
    }
    drop(broker);
    drop(mosquitto);
    let _ = std::fs::remove_dir_all(&mq_dir);
}
