//! HTTP sink bridges (issue #6) against a real HTTP server: an axum server
//! on 127.0.0.1 started by the test, scripted to answer 2xx, an error
//! status or nothing (hang), and stopped and started again on the same
//! port for an outage. The broker is an in-process node; publishers are
//! raw MQTT clients. Every wait is bounded; the server task is aborted on
//! drop.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use roost::config::{BridgeBufferConfig, BridgeConfig, ByteSize, Config, HumanDuration};
use roost_actors::bridge::{BridgeHandle, LinkState};
use roost_protocol::packet::*;
use serde_json::Value;

/// How the server answers the next request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Answer 200 only after this long (longer than the bridge's timeout).
    Hang(Duration),
}

#[derive(Default)]
struct Script {
    /// Answers for the next requests, in order; then 200.
    next: VecDeque<Answer>,
    /// Every request's body, in arrival order, with the status it got
    /// (a hung one is recorded as 0).
    requests: Vec<(u16, Value)>,
    /// The `x-token` header of the last request.
    token: Option<String>,
}

type Shared = Arc<Mutex<Script>>;

async fn hook(State(s): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let answer = {
        let mut s = s.lock().unwrap();
        s.token = headers
            .get("x-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.next.pop_front().unwrap_or(Answer::Status(200))
    };
    match answer {
        Answer::Status(code) => {
            s.lock().unwrap().requests.push((code, body));
            StatusCode::from_u16(code).unwrap()
        }
        Answer::Hang(d) => {
            s.lock().unwrap().requests.push((0, body));
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
    }
}

/// An HTTP server on 127.0.0.1:`port`: `stop` closes the listener and
/// every connection (an outage: connections are refused), `start` serves
/// again on the same port.
struct Sink {
    script: Shared,
    addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sink {
    async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = Sink {
            script: Shared::default(),
            addr,
            server: None,
            stop: None,
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(self.script.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Stop serving: graceful shutdown closes idle keep-alive connections
    /// and the listener.
    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = tokio::time::timeout(WAIT, h).await;
        }
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn script(&self, answers: &[Answer]) {
        self.script
            .lock()
            .unwrap()
            .next
            .extend(answers.iter().copied());
    }

    fn requests(&self) -> Vec<(u16, Value)> {
        self.script.lock().unwrap().requests.clone()
    }

    /// The messages of every 2xx request, in order, flattened:
    /// (topic, payload).
    fn delivered(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (status, body) in self.requests() {
            if status != 200 {
                continue;
            }
            let items = match body {
                Value::Array(items) => items,
                one => vec![one],
            };
            for m in items {
                out.push((
                    m["topic"].as_str().unwrap().to_owned(),
                    m["payload"].as_str().unwrap().to_owned(),
                ));
            }
        }
        out
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

fn http_bridge(name: &str, url: &str, batch_size: u32, buffer: BridgeBufferConfig) -> BridgeConfig {
    BridgeConfig {
        name: name.into(),
        kind: "http".into(),
        url: url.into(),
        remote: String::new(),
        headers: [("x-token".to_string(), "secret-1".to_string())].into(),
        request_timeout: HumanDuration::from_millis(500),
        batch_size,
        local_topics: vec!["sensors/#".into()],
        reconnect_min: HumanDuration::from_millis(50),
        reconnect_max: HumanDuration::from_millis(200),
        buffer,
        ..BridgeConfig::default()
    }
}

fn buffer(mode: &str, memory_bytes: u64, max_bytes: u64) -> BridgeBufferConfig {
    BridgeBufferConfig {
        mode: mode.into(),
        memory_bytes: ByteSize::bytes(memory_bytes),
        max_bytes: ByteSize::bytes(max_bytes),
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

/// Wait until the sink got `n` messages with 2xx, then check nothing more
/// comes.
async fn delivered(sink: &Sink, n: usize) -> Vec<(String, String)> {
    let got = eventually(|| async { sink.delivered().len() >= n }).await;
    assert!(got, "{} of {n} delivered", sink.delivered().len());
    tokio::time::sleep(QUIET).await;
    sink.delivered()
}

fn dropped(h: &BridgeHandle, reason: &str) -> u64 {
    h.stats()
        .dropped
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_posted_as_json_in_order_one_by_one_or_in_batches() {
    let sink = Sink::start().await;
    let mut batched = http_bridge(
        "batched",
        &sink.url(),
        10,
        buffer("durable", 1 << 20, 1 << 24),
    );
    batched.local_topics = vec!["batch/#".into()];
    let node = start_node(vec![
        http_bridge("one", &sink.url(), 1, buffer("durable", 1 << 20, 1 << 24)),
        batched,
    ])
    .await;
    let one = handle(&node, "one");
    wait_state(&one, LinkState::Connected).await;

    let sent = payloads(50, 3);
    publish_local(node.addr, "sensors/t", &sent).await;
    assert_eq!(delivered(&sink, 50).await, expected("sensors/t", &sent));
    let reqs = sink.requests();
    assert_eq!(reqs.len(), 50, "one POST per message");
    assert_eq!(reqs[0].1["payload_encoding"], "utf8");
    assert_eq!(reqs[0].1["retain"], false);
    assert!(reqs[0].1["enqueued_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        sink.script.lock().unwrap().token.as_deref(),
        Some("secret-1")
    );
    assert!(
        eventually(|| async { one.stats().sent == 50 && one.stats().mailbox.acked == 50 }).await
    );
    let s = one.stats();
    assert_eq!((s.retried, s.inflight), (0, 0), "{s:?}");
    assert!(s.dropped.iter().all(|(_, n)| *n == 0), "{s:?}");
    assert_eq!(
        s.latency.count, 50,
        "every acknowledged message observed once"
    );

    // Batches: arrays of at most 10, the messages in order.
    let batched = handle(&node, "batched");
    let more = payloads(95, 3);
    publish_local(node.addr, "batch/x", &more).await;
    assert!(eventually(|| async { batched.stats().sent == 95 }).await);
    let arrays: Vec<_> = sink.requests()[50..].to_vec();
    assert!(arrays
        .iter()
        .all(|(_, b)| b.as_array().is_some_and(|a| !a.is_empty() && a.len() <= 10)));
    assert_eq!(sink.delivered()[50..].to_vec(), expected("batch/x", &more));
    assert_eq!(batched.stats().latency.count, 95);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_in_order_and_client_errors_dropped_and_counted() {
    let sink = Sink::start().await;
    let node = start_node(vec![http_bridge(
        "hook",
        &sink.url(),
        1,
        buffer("durable", 1 << 20, 1 << 24),
    )])
    .await;
    let h = handle(&node, "hook");
    wait_state(&h, LinkState::Connected).await;

    // The first message meets 500, 503 and 429, then succeeds; the rest
    // follow it in order.
    sink.script(&[
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(429),
    ]);
    let sent = payloads(5, 2);
    publish_local(node.addr, "sensors/a", &sent).await;
    assert_eq!(delivered(&sink, 5).await, expected("sensors/a", &sent));
    let statuses: Vec<u16> = sink.requests().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [500, 503, 429, 200, 200, 200, 200, 200]);
    // The same body was sent again each time.
    let reqs = sink.requests();
    assert!(reqs[..4].iter().all(|r| r.1 == reqs[0].1));
    assert!(eventually(|| async { h.stats().sent == 5 }).await);
    assert_eq!(h.stats().retried, 3);
    assert_eq!(h.state(), LinkState::Connected);

    // 400 and 404: not retried, dropped with their own reason; the next
    // messages go on.
    sink.script(&[Answer::Status(400), Answer::Status(404)]);
    let more = payloads(4, 3);
    publish_local(node.addr, "sensors/b", &more).await;
    assert_eq!(
        delivered(&sink, 7).await[5..],
        expected("sensors/b", &more[2..])
    );
    assert_eq!(sink.requests().len(), 8 + 4, "no retry after a 4xx");
    assert!(eventually(|| async { h.stats().sent == 7 }).await);
    let s = h.stats();
    assert_eq!(dropped(&h, "http_rejected"), 2, "{s:?}");
    assert_eq!(s.retried, 3, "{s:?}");
    assert_eq!(s.mailbox.acked, 9, "{s:?}");
    assert_eq!(s.mailbox.memory_messages + s.mailbox.disk_messages, 0);
    let text = scrape(&node).await;
    for line in [
        "roost_bridge_dropped_total{bridge=\"hook\",reason=\"http_rejected\"} 2",
        "roost_bridge_sent_total{bridge=\"hook\"} 7",
        "roost_bridge_retried_total{bridge=\"hook\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in:\n{text}"
        );
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_does_not_answer_is_blocked_then_retried() {
    let sink = Sink::start().await;
    let node = start_node(vec![http_bridge(
        "hook",
        &sink.url(),
        1,
        buffer("durable", 1 << 20, 1 << 24),
    )])
    .await;
    let h = handle(&node, "hook");
    wait_state(&h, LinkState::Connected).await;

    // Hangs three times (each longer than the 500 ms request timeout).
    let hang = Answer::Hang(Duration::from_secs(3));
    sink.script(&[hang, hang, hang]);
    let sent = payloads(3, 1);
    publish_local(node.addr, "sensors/t", &sent).await;
    wait_state(&h, LinkState::Blocked).await;
    assert_eq!(h.stats().inflight, 1);
    assert_eq!(delivered(&sink, 3).await, expected("sensors/t", &sent));
    assert_eq!(h.state(), LinkState::Connected);
    let s = h.stats();
    assert_eq!((s.sent, s.retried), (3, 3), "{s:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_queues_on_disk_and_replays_everything_in_order() {
    let mut sink = Sink::start().await;
    // ~1 KB of memory: the rest of the backlog waits on disk.
    let node = start_node(vec![http_bridge(
        "hook",
        &sink.url(),
        20,
        buffer("durable", 1_000, 1 << 24),
    )])
    .await;
    let h = handle(&node, "hook");
    wait_state(&h, LinkState::Connected).await;

    sink.stop().await;
    let sent = payloads(300, 100);
    publish_local(node.addr, "sensors/t", &sent).await;
    wait_state(&h, LinkState::Disconnected).await;
    let s = h.stats().mailbox;
    assert!(s.disk_messages > 0, "{s:?}");
    assert!(s.memory_bytes <= 1_000, "{s:?}");

    sink.restart().await;
    let got = delivered(&sink, 300).await;
    assert_eq!(got, expected("sensors/t", &sent), "all, in order, once");
    assert!(eventually(|| async { h.stats().mailbox.acked == 300 }).await);
    let s = h.stats();
    assert_eq!(s.sent, 300);
    assert!(s.dropped.iter().all(|(_, n)| *n == 0), "{s:?}");
    assert_eq!(s.mailbox.memory_messages + s.mailbox.disk_messages, 0);
    node.stop().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_older_than_request_ttl_are_dropped_and_counted_as_expired() {
    let sink = Sink::start().await;
    let mut cfg = http_bridge("hook", &sink.url(), 1, buffer("durable", 1 << 20, 1 << 24));
    cfg.buffer.request_ttl = Some(HumanDuration::from_millis(800));
    let node = start_node(vec![cfg]).await;
    let h = handle(&node, "hook");
    wait_state(&h, LinkState::Connected).await;

    // Paused: nothing is taken, so everything waits in the buffer.
    assert!(h.pause());
    let old = payloads(10, 2);
    publish_local(node.addr, "sensors/old", &old).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let fresh = payloads(5, 3);
    publish_local(node.addr, "sensors/new", &fresh).await;
    assert!(h.resume());
    assert_eq!(delivered(&sink, 5).await, expected("sensors/new", &fresh));
    assert!(eventually(|| async { h.stats().mailbox.acked == 5 }).await);
    assert_eq!(dropped(&h, "expired"), 10);
    let s = h.stats();
    assert_eq!(
        s.mailbox.memory_messages + s.mailbox.disk_messages,
        0,
        "{s:?}"
    );
    let text = scrape(&node).await;
    let line = "roost_bridge_dropped_total{bridge=\"hook\",reason=\"expired\"} 10";
    assert!(
        text.lines().any(|l| l == line),
        "{line:?} missing in:\n{text}"
    );
    node.stop().await;
}
