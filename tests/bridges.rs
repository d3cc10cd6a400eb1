//! MQTT egress bridges (issue #6) against a real remote: Debian's
//! `mosquitto` (installed by scripts/setup.sh), run on a free loopback port
//! with a minimal config in a temp dir and killed on drop. The broker side
//! is an in-process node; publishers and the remote subscriber are raw MQTT
//! clients. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use roost::config::{BridgeBufferConfig, BridgeConfig, Config, HumanDuration};
use roost_actors::bridge::{BridgeHandle, LinkState};
use roost_protocol::packet::*;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto process on 127.0.0.1:`port`, killed (and its dir removed)
/// on drop. Persistence is on, so a subscriber's persistent session and its
/// queued messages survive a stop (SIGTERM) and start.
struct Mosquitto {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Mosquitto {
    fn start(port: u16) -> Mosquitto {
        let dir = temp_data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        // Started as root, mosquitto drops to its own user: it must be
        // able to write its persistence file here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut m = Mosquitto {
            child: None,
            dir,
            port,
        };
        // A "free" port may be taken by another test's process meanwhile:
        // mosquitto then exits, and the port answers for someone else.
        for _ in 0..3 {
            if m.try_spawn() {
                return m;
            }
            m.port = free_port();
        }
        panic!("mosquitto did not start on 3 free ports");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Start it again on its port (a restart: the bridge dials that port).
    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "mosquitto exited right after its start: port {} taken by another process?",
            self.port
        );
    }

    /// Start it; false if it exited instead of serving (port taken).
    fn try_spawn(&mut self) -> bool {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {dir}/\nmax_queued_messages 0\nautosave_interval 0\n",
                port = self.port,
                dir = self.dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts (scripts/setup.sh installs it)");
        // Bounded wait until it accepts connections.
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(self.addr()).is_err() {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto listens in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The port answered: still ours only if mosquitto did not exit
        // (it fails its bind at once when the port is taken).
        std::thread::sleep(Duration::from_millis(50));
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        self.child = Some(child);
        true
    }

    /// SIGTERM (mosquitto saves its persistent sessions) and wait for exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + WAIT;
            while c.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bridge(name: &str, port: u16, buffer: BridgeBufferConfig) -> BridgeConfig {
    BridgeConfig {
        name: name.into(),
        remote: format!("127.0.0.1:{port}"),
        protocol: "3.1.1".into(),
        local_topics: vec!["sensors/#".into()],
        remote_prefix: "edge/".into(),
        qos: 1,
        max_inflight: 8,
        connect_timeout: HumanDuration::from_secs(2),
        reconnect_min: HumanDuration::from_millis(50),
        reconnect_max: HumanDuration::from_millis(200),
        buffer,
        ..BridgeConfig::default()
    }
}

fn buffer(mode: &str, memory_bytes: u64, max_bytes: u64) -> BridgeBufferConfig {
    BridgeBufferConfig {
        mode: mode.into(),
        memory_bytes: roost::config::ByteSize::bytes(memory_bytes),
        max_bytes: roost::config::ByteSize::bytes(max_bytes),
        request_ttl: None,
    }
}

async fn start_node(bridges: Vec<BridgeConfig>) -> Broker {
    Broker::start_with(move |c: &mut Config| c.bridges = bridges).await
}

fn handle(b: &Broker, name: &str) -> Arc<BridgeHandle> {
    b.node().ctx().bridges.get(name).expect("bridge registered")
}

async fn wait_state(h: &BridgeHandle, want: LinkState) {
    assert!(
        eventually(|| async { h.state() == want }).await,
        "bridge {} never {:?} (is {:?})",
        h.name(),
        want,
        h.state()
    );
}

/// A persistent QoS 1 subscriber on the remote (3.1.1, clean session 0).
async fn remote_subscriber(addr: SocketAddr, filter: &str) -> Raw {
    let (mut sub, ack) = Raw::connect(addr, ProtocolVersion::V311, "remote-sub", false).await;
    assert_eq!(ack.code, 0);
    sub.subscribe(1, filter, QoS::AtLeastOnce).await;
    sub
}

/// The next `n` PUBLISHes (acknowledged), as (topic, payload).
async fn receive(sub: &mut Raw, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let p = sub.expect_publish().await;
        if p.qos == QoS::AtLeastOnce {
            sub.puback(p.packet_id).await;
        }
        got.push((
            p.topic.to_string(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
    got
}

async fn publish_local(addr: SocketAddr, topic: &str, payloads: &[String]) {
    let (mut c, _) = Raw::connect(addr, ProtocolVersion::V5, "local-pub", true).await;
    for (i, p) in payloads.iter().enumerate() {
        c.publish_qos1(topic, p.clone().into_bytes(), (i % 60_000 + 1) as u16)
            .await;
    }
    c.disconnect().await;
}

fn payloads(n: usize, width: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:0width$}")).collect()
}

fn expected(topic: &str, payloads: &[String]) -> Vec<(String, String)> {
    payloads
        .iter()
        .map(|p| (topic.to_string(), p.clone()))
        .collect()
}

/// The remote broker these tests need: a missing mosquitto is a failed
/// test, never a silently skipped one (scripts/test.sh installs it).
fn require_mosquitto() {
    assert!(
        Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} missing: run scripts/setup.sh (the README's test command does)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_publishes_reach_the_remote_with_the_prefix_in_order() {
    require_mosquitto();
    let remote = Mosquitto::start(free_port());
    let mut sub = remote_subscriber(remote.addr(), "edge/#").await;
    let node = start_node(vec![bridge(
        "up",
        remote.port,
        buffer("durable", 1 << 20, 1 << 24),
    )])
    .await;
    let h = handle(&node, "up");
    wait_state(&h, LinkState::Connected).await;

    let sent = payloads(200, 4);
    publish_local(node.addr, "sensors/t", &sent).await;
    // Not bridged: another topic.
    publish_local(node.addr, "other/t", &payloads(1, 1)).await;
    assert_eq!(
        receive(&mut sub, 200).await,
        expected("edge/sensors/t", &sent)
    );
    sub.expect_nothing(QUIET).await;
    assert!(eventually(|| async { h.stats().sent == 200 && h.stats().mailbox.acked == 200 }).await);

    // The bridge is not a session and its filter is not a subscription.
    let text = scrape(&node).await;
    for line in [
        "roost_bridge_connected{bridge=\"up\"} 1",
        "roost_bridge_sent_total{bridge=\"up\"} 200",
        "roost_bridge_queued_messages{bridge=\"up\",where=\"memory\"} 0",
        "roost_bridge_queued_messages{bridge=\"up\",where=\"disk\"} 0",
        "roost_bridge_dropped_total{bridge=\"up\",reason=\"queue_full\"} 0",
        "roost_sessions{status=\"online\"} 0",
        "roost_subscriptions 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }

    // Restartable on its own, through the supervisor's path logic.
    let tree = node.node().tree().await.unwrap();
    assert!(tree.find("bridges/up").is_some(), "{tree:?}");
    node.node().restart("bridges/up").await.unwrap();
    wait_state(&h, LinkState::Connected).await;
    let more = payloads(5, 5);
    publish_local(node.addr, "sensors/t", &more).await;
    assert_eq!(
        receive(&mut sub, 5).await,
        expected("edge/sensors/t", &more)
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_queues_in_memory_then_on_disk_and_replays_in_order() {
    require_mosquitto();
    let mut remote = Mosquitto::start(free_port());
    let sub = remote_subscriber(remote.addr(), "edge/#").await;
    drop(sub);
    // ~1 KB of memory: a few records in memory, the rest on disk.
    let node = start_node(vec![bridge(
        "up",
        remote.port,
        buffer("durable", 1_000, 1 << 24),
    )])
    .await;
    let h = handle(&node, "up");
    wait_state(&h, LinkState::Connected).await;

    remote.stop();
    wait_state(&h, LinkState::Disconnected).await;
    let sent = payloads(300, 100);
    publish_local(node.addr, "sensors/t", &sent).await;
    let s = h.stats().mailbox;
    assert_eq!(s.memory_messages + s.disk_messages, 300, "{s:?}");
    assert!(s.memory_messages > 0 && s.disk_messages > 0, "{s:?}");
    assert!(s.memory_bytes <= 1_000, "{s:?}");
    let text = scrape(&node).await;
    assert!(
        text.lines()
            .any(|l| l == "roost_bridge_connected{bridge=\"up\"} 0"),
        "{text}"
    );
    let disk = format!(
        "roost_bridge_queued_messages{{bridge=\"up\",where=\"disk\"}} {}",
        s.disk_messages
    );
    assert!(
        text.lines().any(|l| l == disk),
        "{disk:?} missing in:\n{text}"
    );

    remote.spawn();
    wait_state(&h, LinkState::Connected).await;
    let (mut sub, ack) =
        Raw::connect(remote.addr(), ProtocolVersion::V311, "remote-sub", false).await;
    assert!(
        ack.session_present,
        "mosquitto kept the subscriber's session"
    );
    let got = receive(&mut sub, 300).await;
    assert_eq!(got, expected("edge/sensors/t", &sent));
    sub.expect_nothing(QUIET).await;
    assert!(eventually(|| async { h.stats().mailbox.acked == 300 }).await);
    let stats = h.stats();
    assert!(stats.dropped.iter().all(|(_, n)| *n == 0), "{stats:?}");
    assert_eq!(
        stats.mailbox.memory_messages + stats.mailbox.disk_messages,
        0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_bytes_the_oldest_are_dropped_and_counted_exactly() {
    require_mosquitto();
    let topic = "sensors/t";
    let sent = payloads(50, 40);
    let rec = roost_actors::bridge::record_len(topic, sent[0].as_bytes()) as u64;
    for mode in ["durable", "volatile_offload", "memory"] {
        // The subscriber's persistent session exists on the remote, which is
        // then stopped: the node starts with its remote down.
        let mut remote = Mosquitto::start(free_port());
        drop(remote_subscriber(remote.addr(), "edge/#").await);
        remote.stop();
        let node = start_node(vec![bridge(
            "up",
            remote.port,
            buffer(mode, 3 * rec, 10 * rec),
        )])
        .await;
        let h = handle(&node, "up");
        publish_local(node.addr, topic, &sent).await;
        let s = h.stats();
        assert_eq!(
            s.mailbox.memory_messages + s.mailbox.disk_messages,
            10,
            "{mode}: {s:?}"
        );
        assert_eq!(s.mailbox.dropped_queue_full, 40, "{mode}: {s:?}");
        let text = scrape(&node).await;
        let line = "roost_bridge_dropped_total{bridge=\"up\",reason=\"queue_full\"} 40";
        assert!(
            text.lines().any(|l| l == line),
            "{mode}: {line:?} missing in:\n{text}"
        );

        remote.spawn();
        let (mut sub, ack) =
            Raw::connect(remote.addr(), ProtocolVersion::V311, "remote-sub", false).await;
        assert!(ack.session_present, "{mode}");
        // Exactly the newest 10 arrive, in order: the 40 counted are the 40 missing.
        let got = receive(&mut sub, 10).await;
        assert_eq!(got, expected("edge/sensors/t", &sent[40..]), "{mode}");
        sub.expect_nothing(QUIET).await;
        assert_eq!(h.stats().mailbox.dropped_queue_full, 40, "{mode}");
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_queues_and_resume_delivers_in_order_over_the_api() {
    require_mosquitto();
    let remote = Mosquitto::start(free_port());
    let mut sub = remote_subscriber(remote.addr(), "edge/#").await;
    let node = start_node(vec![bridge(
        "up",
        remote.port,
        buffer("durable", 1 << 20, 1 << 24),
    )])
    .await;
    let h = handle(&node, "up");
    wait_state(&h, LinkState::Connected).await;

    // Unknown bridges: 404 with a JSON error, for every endpoint.
    for (method, path) in [
        ("GET", "/api/v1/bridges/nope"),
        ("POST", "/api/v1/bridges/nope/pause"),
        ("POST", "/api/v1/bridges/nope/resume"),
    ] {
        let (status, body) = api(&node, method, path).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"], "no bridge \"nope\"", "{body}");
    }

    let (status, body) = api(&node, "POST", "/api/v1/bridges/up/pause").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused", "{body}");
    assert!(h.is_paused());
    let sent = payloads(20, 3);
    publish_local(node.addr, "sensors/t", &sent).await;
    sub.expect_nothing(QUIET).await;

    let (status, list) = api(&node, "GET", "/api/v1/bridges").await;
    assert_eq!(status, 200, "{list}");
    let row = &list["data"][0];
    assert_eq!(row["name"], "up", "{list}");
    assert_eq!(row["kind"], "mqtt", "{list}");
    assert_eq!(
        row["remote"],
        format!("127.0.0.1:{}", remote.port),
        "{list}"
    );
    assert_eq!(row["state"], "paused", "{list}");
    // Connected but taking nothing: blocked.
    assert_eq!(row["link"], "blocked", "{list}");
    assert_eq!(row["queued"]["memory_messages"], 20, "{list}");
    assert_eq!(row["queued"]["disk_messages"], 0, "{list}");
    let rec = roost_actors::bridge::record_len("sensors/t", sent[0].as_bytes()) as u64;
    assert_eq!(row["queued"]["memory_bytes"], 20 * rec, "{list}");
    assert_eq!(row["inflight"], 0, "{list}");
    assert_eq!(row["sent"], 0, "{list}");
    assert_eq!(row["dropped"]["queue_full"], 0, "{list}");
    // Paused is not disconnected: the link is up.
    let text = scrape(&node).await;
    assert!(
        text.lines()
            .any(|l| l == "roost_bridge_connected{bridge=\"up\"} 1"),
        "{text}"
    );

    let (status, one) = api(&node, "GET", "/api/v1/bridges/up").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["state"], "paused", "{one}");
    assert_eq!(one["queued"]["memory_messages"], 20, "{one}");
    let config = &one["config"];
    assert_eq!(config["local_topics"][0], "sensors/#", "{one}");
    assert_eq!(config["remote_prefix"], "edge/", "{one}");
    assert_eq!(config["protocol"], "3.1.1", "{one}");
    assert_eq!(config["qos"], 1, "{one}");
    assert_eq!(config["buffer_mode"], "durable", "{one}");
    assert_eq!(config["password_set"], false, "{one}");
    assert!(config.get("password").is_none(), "{one}");

    let (status, body) = api(&node, "POST", "/api/v1/bridges/up/resume").await;
    assert_eq!(status, 200, "{body}");
    assert!(!h.is_paused());
    assert_eq!(
        receive(&mut sub, 20).await,
        expected("edge/sensors/t", &sent)
    );
    sub.expect_nothing(QUIET).await;
    assert!(eventually(|| async { h.stats().sent == 20 && h.stats().mailbox.acked == 20 }).await);
    let (_, list) = api(&node, "GET", "/api/v1/bridges").await;
    let row = &list["data"][0];
    assert_eq!(row["state"], "connected", "{list}");
    assert_eq!(row["sent"], 20, "{list}");
    assert_eq!(row["queued"]["memory_messages"], 0, "{list}");
    node.stop().await;
}

/// (status, JSON body) of an authenticated API call (`POST` with `{}`).
async fn api(b: &Broker, method: &'static str, path: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{}{path}", b.node().mgmt_addr().await.unwrap());
    let token = roost::mgmt::token::read(&b.data_dir).expect("generated token");
    let call = move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let auth = format!("Bearer {token}");
        let resp = match method {
            "GET" => agent.get(&url).header("authorization", auth).call(),
            _ => agent.post(&url).header("authorization", auth).send("{}"),
        };
        let mut resp = resp.expect("HTTP exchange");
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&body).expect("JSON body"))
    };
    tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(call))
        .await
        .expect("API answer in time")
        .expect("API thread")
}

/// `GET /metrics` (no token needed), bounded.
async fn scrape(b: &Broker) -> String {
    let url = format!("http://{}/metrics", b.node().mgmt_addr().await.unwrap());
    let call = move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .proxy(None)
            .build()
            .into();
        let mut resp = agent.get(&url).call().expect("scrape");
        resp.body_mut().read_to_string().expect("body")
    };
    tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(call))
        .await
        .expect("scrape in time")
        .expect("scrape thread")
}

fn ingress(name: &str, port: u16) -> BridgeConfig {
    BridgeConfig {
        kind: "mqtt_ingress".into(),
        client_id: format!("ingress-{name}"),
        clean_start: false,
        local_topics: Vec::new(),
        remote_topics: vec!["edge/in/#".into()],
        remote_prefix: "edge/".into(),
        local_prefix: "site/".into(),
        ..bridge(name, port, buffer("memory", 0, 1))
    }
}

/// A publisher on the remote: `n` QoS 1 messages on `topic`, acknowledged.
async fn publish_remote(addr: SocketAddr, topic: &str, payloads: &[String]) {
    let (mut c, ack) = Raw::connect(addr, ProtocolVersion::V311, "remote-pub", true).await;
    assert_eq!(ack.code, 0);
    for (i, p) in payloads.iter().enumerate() {
        c.publish_qos1(topic, p.clone().into_bytes(), (i % 60_000 + 1) as u16)
            .await;
    }
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_publishes_remote_messages_locally_rewritten_in_order() {
    require_mosquitto();
    let remote = Mosquitto::start(free_port());
    let node = start_node(vec![ingress("down", remote.port)]).await;
    let h = handle(&node, "down");
    wait_state(&h, LinkState::Connected).await;
    let (mut local, _) = Raw::connect(node.addr, ProtocolVersion::V5, "local-sub", true).await;
    local.subscribe(1, "site/#", QoS::AtLeastOnce).await;

    let sent = payloads(100, 3);
    publish_remote(remote.addr(), "edge/in/x", &sent).await;
    // Not subscribed by the bridge.
    publish_remote(remote.addr(), "edge/other", &payloads(1, 1)).await;
    assert_eq!(receive(&mut local, 100).await, expected("site/in/x", &sent));
    local.expect_nothing(QUIET).await;
    assert!(eventually(|| async { h.stats().received == 100 && h.stats().sent == 100 }).await);

    // Paused: the bridge leaves the remote, whose persistent session
    // queues for it; resumed: the backlog arrives, in order.
    let (status, body) = api(&node, "POST", "/api/v1/bridges/down/pause").await;
    assert_eq!(status, 200, "{body}");
    wait_state(&h, LinkState::Disconnected).await;
    let more = payloads(10, 4);
    publish_remote(remote.addr(), "edge/in/y", &more).await;
    local.expect_nothing(QUIET).await;
    let (status, _) = api(&node, "POST", "/api/v1/bridges/down/resume").await;
    assert_eq!(status, 200);
    assert_eq!(receive(&mut local, 10).await, expected("site/in/y", &more));
    wait_state(&h, LinkState::Connected).await;
    let (_, list) = api(&node, "GET", "/api/v1/bridges").await;
    assert_eq!(list["data"][0]["kind"], "mqtt_ingress", "{list}");
    assert_eq!(h.stats().received, 110);
    node.stop().await;
}

/// SIGSTOP / SIGCONT a process (a remote that is alive but not taking).
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_stops_acknowledging_is_blocked_then_drains_in_order() {
    require_mosquitto();
    let remote = Mosquitto::start(free_port());
    let mut sub = remote_subscriber(remote.addr(), "edge/#").await;
    let mut cfg = bridge("up", remote.port, buffer("durable", 1 << 20, 1 << 24));
    cfg.ack_timeout = HumanDuration::from_millis(300);
    let node = start_node(vec![cfg]).await;
    let h = handle(&node, "up");
    wait_state(&h, LinkState::Connected).await;

    // Stopped, not dead: the TCP connection stays up, PUBACKs stop.
    signal(remote.child.as_ref().unwrap(), "STOP");
    let sent = payloads(50, 3);
    publish_local(node.addr, "sensors/t", &sent).await;
    wait_state(&h, LinkState::Blocked).await;
    // Sent, unacknowledged, within the window of 8 (refilled by halves).
    let inflight = h.stats().inflight;
    assert!((1..=8).contains(&inflight), "inflight {inflight}");
    let text = scrape(&node).await;
    for line in [
        "roost_bridge_state{bridge=\"up\",state=\"blocked\"} 1",
        "roost_bridge_state{bridge=\"up\",state=\"connected\"} 0",
        "roost_bridge_connected{bridge=\"up\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }

    signal(remote.child.as_ref().unwrap(), "CONT");
    assert_eq!(
        receive(&mut sub, 50).await,
        expected("edge/sensors/t", &sent)
    );
    wait_state(&h, LinkState::Connected).await;
    assert!(eventually(|| async { h.stats().sent == 50 }).await);
    // Every acknowledged message is in the latency histogram once.
    let text = scrape(&node).await;
    for line in [
        "roost_bridge_latency_seconds_count{bridge=\"up\"} 50",
        "roost_bridge_latency_seconds_bucket{le=\"+Inf\",bridge=\"up\"} 50",
        "roost_bridge_state{bridge=\"up\",state=\"connected\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }
    node.stop().await;
}
