//! Durable state (issue #3), as an operator loses a node: a real `roost`
//! process is SIGKILLed and started again on the same data directory.
//! Persistent sessions keep their subscriptions, their queued messages
//! (every acknowledged one, in order), their unacknowledged inflight
//! messages (resent with DUP and their ids) and their expiry; clean
//! sessions are gone.
//!
//! Each test owns its child processes (`Proc` kills on drop) and its data
//! directory; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_packet, opts, persistent_v5, publish, temp_data_dir, Raw, QUIET};
use roost_protocol::packet::{Ack, Packet, ProtocolVersion, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_roost");

/// Kills the child on drop: a failed assertion must not leak a broker.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One node's data directory and MQTT port, kept across its lives.
struct Site {
    data: PathBuf,
    mqtt: SocketAddr,
}

impl Site {
    fn new() -> Site {
        let port = common::free_port();
        Site {
            data: temp_data_dir(),
            mqtt: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Start `roost` on this site and wait until it serves MQTT.
    async fn start(&self, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.arg("start")
            .args(["--mgmt", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
            .args(["--mqtt", &self.mqtt.to_string()])
            .arg("--data-dir")
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut p = Proc(cmd.spawn().expect("spawn roost"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(self.mqtt).await.is_ok() {
                return p;
            }
            if let Some(status) = p.0.try_wait().unwrap() {
                panic!("roost exited before serving: {status}");
            }
            assert!(Instant::now() < deadline, "roost did not listen in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// SIGKILL: no shutdown code runs, nothing is flushed.
fn kill9(mut p: Proc) {
    p.0.kill().unwrap();
    p.0.wait().unwrap();
}

fn data_dir_exists(p: &Path) -> bool {
    p.join("store").exists()
}

/// Publish `n` numbered QoS 1 messages on `topic`, each acknowledged.
async fn publish_numbered(addr: SocketAddr, topic: &str, n: u32) {
    let (mut p, _) = Raw::connect(addr, ProtocolVersion::V311, "publisher", true).await;
    for i in 0..n {
        let id = (i % 60_000 + 1) as u16;
        p.publish_qos1(topic, i.to_string(), id).await;
    }
    p.disconnect().await;
}

/// Receive `n` QoS 1 messages, acknowledging each, and check they are
/// 0..n in order.
async fn receive_numbered(c: &mut Raw, n: u32) {
    for i in 0..n {
        let m = c.expect_publish().await;
        assert_eq!(
            std::str::from_utf8(&m.payload).unwrap(),
            i.to_string(),
            "message {i} in order"
        );
        assert_eq!(m.qos, QoS::AtLeastOnce);
        c.puback(m.packet_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_qos1_to_an_offline_persistent_subscriber_survive_kill_9_in_order() {
    queued_messages_survive_kill_9(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_storage_sync_too() {
    queued_messages_survive_kill_9(&[("ROOST_STORAGE__SYNC", "true")]).await;
}

async fn queued_messages_survive_kill_9(env: &[(&str, &str)]) {
    let site = Site::new();
    let node = site.start(env).await;
    assert!(data_dir_exists(&site.data));
    let (mut sub, ack) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    assert!(!ack.session_present);
    sub.subscribe(1, "d/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    publish_numbered(site.mqtt, "d/x", 300).await;
    kill9(node);

    let _node = site.start(env).await;
    let (mut sub, ack) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    assert!(ack.session_present, "the session survived");
    receive_numbered(&mut sub, 300).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_deliveries_are_resent_with_dup_and_their_ids_after_kill_9() {
    let site = Site::new();
    let node = site.start(&[]).await;
    let (mut sub, _) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    sub.subscribe_opts(1, "i/#", opts(QoS::ExactlyOnce), None)
        .await;
    let (mut p, _) = Raw::connect(site.mqtt, ProtocolVersion::V311, "p", true).await;
    for i in 0..3 {
        p.publish_qos1("i/1", format!("q1-{i}"), i + 1).await;
    }
    p.send_publish(publish("i/2", "q2", QoS::ExactlyOnce, 10))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 10));
    p.pubrel(10).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(a)) if a.packet_id == 10));

    // Three QoS 1 messages never acknowledged; the QoS 2 one released
    // (PUBREC, PUBREL) but never completed.
    let mut sent = Vec::new();
    for _ in 0..4 {
        let m = sub.expect_publish().await;
        assert!(!m.dup);
        sent.push((m.packet_id, m.payload.clone(), m.qos));
    }
    let (q2_id, _, _) = sent[3].clone();
    sub.pubrec(q2_id).await;
    assert_eq!(
        sub.expect_packet().await,
        Packet::PubRel(Ack::new(q2_id)),
        "PUBREL after PUBREC"
    );
    kill9(node);

    let _node = site.start(&[]).await;
    let (mut sub, ack) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    assert!(ack.session_present);
    for (id, payload, qos) in &sent[..3] {
        let m = sub.expect_publish().await;
        assert!(m.dup, "resent with DUP [MQTT-4.4.0-1]");
        assert_eq!((&m.packet_id, &m.payload, &m.qos), (id, payload, qos));
    }
    assert_eq!(
        sub.expect_packet().await,
        Packet::PubRel(Ack::new(q2_id)),
        "the released QoS 2 message: its PUBREL again, not the message"
    );
    for (id, _, _) in &sent[..3] {
        sub.puback(*id).await;
    }
    sub.pubcomp(q2_id).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_expiry_run_across_kill_9_and_clean_sessions_are_gone() {
    let site = Site::new();
    let node = site.start(&[]).await;
    for (client, expiry, filter) in [("keep", 3600, "s/keep"), ("short", 1, "s/short")] {
        let (mut c, _) = Raw::connect_with(site.mqtt, persistent_v5(client, expiry)).await;
        c.subscribe(1, filter, QoS::AtLeastOnce).await;
        c.disconnect().await;
    }
    // Connected at the kill: a clean 3.1.1 session.
    let (mut clean, _) = Raw::connect(site.mqtt, ProtocolVersion::V311, "clean", true).await;
    clean.subscribe(1, "s/clean", QoS::AtLeastOnce).await;
    kill9(node);
    drop(clean);
    // "short" expires while the node is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let _node = site.start(&[]).await;
    let (mut p, _) = Raw::connect(site.mqtt, ProtocolVersion::V311, "p", true).await;
    p.publish_qos1("s/keep", "k", 1).await;
    p.publish_qos1("s/short", "s", 2).await;
    p.publish_qos1("s/clean", "c", 3).await;

    let (mut keep, ack) = Raw::connect_with(site.mqtt, persistent_v5("keep", 3600)).await;
    assert!(ack.session_present);
    let m = keep.expect_publish().await;
    assert_eq!((&m.topic[..], &m.payload[..]), ("s/keep", &b"k"[..]));
    keep.puback(m.packet_id).await;

    let (mut short, ack) = Raw::connect_with(site.mqtt, persistent_v5("short", 3600)).await;
    assert!(!ack.session_present, "expired while the node was down");
    short.expect_nothing(QUIET).await;

    let (mut clean, ack) = Raw::connect_with(
        site.mqtt,
        connect_packet(ProtocolVersion::V311, "clean", false),
    )
    .await;
    assert!(!ack.session_present, "clean sessions are not stored");
    clean.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_longer_than_memory_is_paged_in_order_and_a_full_one_refuses_the_newest() {
    let site = Site::new();
    let env = [("ROOST_MQTT__MAX_MQUEUE_LEN", "3000")];
    let node = site.start(&env).await;
    let (mut sub, _) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    sub.subscribe(1, "q", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    // 500 more than the queue holds: the last 500 are refused (counted),
    // the 3000 kept are the first ones, with no gap.
    publish_numbered(site.mqtt, "q", 3500).await;
    kill9(node);

    let _node = site.start(&env).await;
    let (mut sub, ack) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    assert!(ack.session_present);
    receive_numbered(&mut sub, 3000).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_qos2_message_released_after_kill_9_is_delivered_once() {
    let site = Site::new();
    let node = site.start(&[]).await;
    let (mut sub, _) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    sub.subscribe(1, "x", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    // PUBLISH, PUBREC; the PUBREL only comes after the restart.
    let (mut p, _) = Raw::connect_with(site.mqtt, persistent_v5("pub", 3600)).await;
    p.send_publish(publish("x", "once", QoS::ExactlyOnce, 7))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 7));
    kill9(node);

    let _node = site.start(&[]).await;
    let (mut p, ack) = Raw::connect_with(site.mqtt, persistent_v5("pub", 3600)).await;
    assert!(ack.session_present);
    // The client resends it with DUP [MQTT-4.3.3]: a duplicate, not a new
    // message.
    let mut again = publish("x", "once", QoS::ExactlyOnce, 7);
    again.dup = true;
    p.send_publish(again).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 7));
    p.pubrel(7).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(a)) if a.packet_id == 7));

    let (mut sub, _) = Raw::connect_with(site.mqtt, persistent_v5("sub", 3600)).await;
    let m = sub.expect_publish().await;
    assert_eq!(&m.payload[..], b"once");
    sub.puback(m.packet_id).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn clean_sessions_never_touch_the_store() {
    let b = common::Broker::start().await;
    let store = b
        .node()
        .ctx()
        .storage
        .clone()
        .expect("the node has a store");
    let before = store.stats().commits;
    let (mut sub, _) = Raw::connect(b.addr, ProtocolVersion::V5, "clean-sub", true).await;
    sub.subscribe_opts(1, "c/#", opts(QoS::ExactlyOnce), None)
        .await;
    let (mut p, _) = Raw::connect(b.addr, ProtocolVersion::V311, "clean-pub", true).await;
    p.publish_qos1("c/1", "one", 1).await;
    p.send_publish(publish("c/2", "two", QoS::ExactlyOnce, 2))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    p.pubrel(2).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    let m = sub.expect_publish().await;
    sub.puback(m.packet_id).await;
    let m = sub.expect_publish().await;
    sub.pubrec(m.packet_id).await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(_))));
    sub.pubcomp(m.packet_id).await;
    sub.disconnect().await;
    p.disconnect().await;
    assert_eq!(
        store.stats().commits,
        before,
        "clean sessions wrote to the store"
    );

    // A persistent session does write (the check above can fail).
    let (_c, _) = Raw::connect_with(b.addr, persistent_v5("durable", 60)).await;
    assert!(store.stats().commits > before);
    b.stop().await;
}
