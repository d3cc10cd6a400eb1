//! The management API over real HTTP against an in-process node (API on
//! 127.0.0.1:0): authentication, every endpoint, subtree restarts, health,
//! and `/metrics` agreeing with live state under connects, disconnects,
//! killed connection actors and session expiry.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, persistent_v5, temp_data_dir, Broker, Raw};
use roost::config::{Config, HumanDuration};
use roost::mgmt::types::{ClientDetail, ClientSummary, List, Ready, RouteEntry, Status, TreeEntry};
use roost::mgmt::LogControl;
use roost::node::{Node, NodeOptions};
use roost_actors::supervisor::SupervisorMsg;
use roost_actors::test_hooks::PANIC_CONNECTION_TOPIC;
use roost_protocol::packet::{reason, Packet, ProtocolVersion, QoS};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A real HTTP client (ureq, on a blocking thread) for one node's API.
struct Api {
    base: String,
    token: String,
}

impl Api {
    async fn of(b: &Broker) -> Api {
        let addr = b.node().mgmt_addr().await.expect("mgmt address");
        let token = roost::mgmt::token::read(&b.data_dir).expect("generated token");
        Api {
            base: format!("http://{addr}"),
            token,
        }
    }

    /// (status, body) of `method path` with this token, `token`, or none.
    async fn raw(
        &self,
        method: &'static str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let token = token.map(str::to_owned);
        let call = move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .proxy(None)
                .build()
                .into();
            let auth = token.map(|t| format!("Bearer {t}"));
            let resp = match (method, body) {
                ("GET", _) => with_auth(agent.get(&url), auth).call(),
                ("DELETE", _) => with_auth(agent.delete(&url), auth).call(),
                ("POST", Some(b)) => with_auth(agent.post(&url), auth).send(b.to_string()),
                ("PUT", Some(b)) => with_auth(agent.put(&url), auth).send(b.to_string()),
                ("POST", None) => with_auth(agent.post(&url), auth).send("{not json"),
                _ => unreachable!("method {method}"),
            };
            let mut resp = resp.expect("HTTP exchange");
            let status = resp.status().as_u16();
            (status, resp.body_mut().read_to_string().expect("body"))
        };
        tokio::time::timeout(Duration::from_secs(15), tokio::task::spawn_blocking(call))
            .await
            .expect("HTTP answer in time")
            .expect("HTTP thread")
    }

    async fn call(&self, method: &'static str, path: &str, body: Option<Value>) -> (u16, String) {
        self.raw(method, path, Some(self.token.as_str()), body)
            .await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Status and the `error` message of a failing call.
    async fn error(&self, method: &'static str, path: &str, body: Option<Value>) -> (u16, String) {
        let (status, text) = self.call(method, path, body).await;
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (
            status,
            v["error"]
                .as_str()
                .unwrap_or_else(|| panic!("no error in {text}"))
                .to_owned(),
        )
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let (status, text) = self.raw("GET", "/metrics", None, None).await;
        assert_eq!(status, 200);
        parse_metrics(&text)
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("authorization", a),
        None => req,
    }
}

/// `name{labels} value` lines -> map; panics on a negative value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        assert!(value >= 0.0, "negative metric: {line}");
        out.insert(name.to_owned(), value);
    }
    out
}

#[tokio::test]
async fn api_answers_401_without_a_valid_token_and_nothing_else() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    for path in [
        "/api/v1/status",
        "/api/v1/clients",
        "/api/v1/no-such",
        "/api/v2/status",
    ] {
        for token in [None, Some("wrong-token-0123456789")] {
            let (status, body) = api.raw("GET", path, token, None).await;
            assert_eq!(status, 401, "{path} {token:?}");
            assert_eq!(body, r#"{"error":"missing or invalid bearer token"}"#);
        }
    }
    let (status, _) = api
        .raw(
            "POST",
            "/api/v1/restart",
            None,
            Some(json!({"path": "broker"})),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        b.node()
            .tree()
            .await
            .unwrap()
            .find("broker")
            .unwrap()
            .restarts,
        0
    );
    // The generated token file is private, and opens the API.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(b.data_dir.join("mgmt.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let status: Status = api.get("/api/v1/status").await;
    assert_eq!(status.node, "roost@localhost");
    assert_eq!(api.error("GET", "/api/v1/no-such", None).await.0, 404);
    // Health and metrics need no token.
    assert_eq!(api.raw("GET", "/health/live", None, None).await.0, 200);
    assert_eq!(api.raw("GET", "/metrics", None, None).await.0, 200);
    b.stop().await;
}

/// c1 on `a/#` (QoS 1), c2 in shared group g on `a/b`, p1 offline.
async fn two_clients(b: &Broker) -> (Raw, Raw) {
    let (mut c1, _) = Raw::connect(b.addr, V5, "c1", true).await;
    c1.subscribe(1, "a/#", QoS::AtLeastOnce).await;
    let (mut c2, _) = Raw::connect(b.addr, V5, "c2", true).await;
    c2.subscribe(1, "$share/g/a/b", QoS::AtMostOnce).await;
    let (p1, _) = Raw::connect_with(b.addr, persistent_v5("p1", 60)).await;
    p1.disconnect().await;
    (c1, c2)
}

#[tokio::test]
async fn status_and_clients_show_live_state() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let _clients = two_clients(&b).await;

    let s: Status = api.get("/api/v1/status").await;
    assert_eq!(
        (
            s.connections,
            s.sessions_online,
            s.sessions_offline,
            s.subscriptions,
            s.routes,
            s.retained
        ),
        (2, 2, 1, 2, 2, 0),
        "{s:?}"
    );
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(s.listeners[0].name, "tcp:default");
    assert_eq!(s.listeners[0].addr, b.addr.to_string());

    let all: List<ClientSummary> = api.get("/api/v1/clients").await;
    let ids: Vec<(&str, bool)> = all
        .data
        .iter()
        .map(|c| (c.client_id.as_str(), c.connected))
        .collect();
    assert_eq!(ids, [("c1", true), ("c2", true), ("p1", false)]);
    let matched: List<ClientSummary> = api.get("/api/v1/clients?match=c").await;
    assert_eq!(matched.data.len(), 2);
    let c1_info: ClientDetail = api.get("/api/v1/clients/c1").await;
    assert_eq!(
        (c1_info.connected, c1_info.subscriptions.clone()),
        (true, vec!["a/#".to_owned()])
    );
    let (status, message) = api.error("GET", "/api/v1/clients/nobody", None).await;
    assert_eq!((status, message.as_str()), (404, "no client \"nobody\""));
    b.stop().await;
}

#[tokio::test]
async fn subscriptions_routes_and_kick_work_on_live_clients() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (c1, mut c2) = two_clients(&b).await;

    let subs: Value = api.get("/api/v1/subscriptions?client=c1").await;
    assert_eq!(
        subs,
        json!({"data": [{"client_id": "c1", "filter": "a/#", "qos": 1}]})
    );
    let subs: Value = api.get("/api/v1/subscriptions").await;
    assert_eq!(subs["data"].as_array().map(Vec::len), Some(2));
    let routes: List<RouteEntry> = api.get("/api/v1/routes").await;
    let routes: Vec<(&str, bool, u64)> = routes
        .data
        .iter()
        .map(|r| (r.topic.as_str(), r.shared, r.subscribers))
        .collect();
    assert_eq!(routes, [("a/#", false, 1), ("a/b", true, 1)]);

    // Kick: the v5 client is told why, and is gone from the live state.
    let kicked: Value = api
        .call("DELETE", "/api/v1/clients/c2", None)
        .await
        .1
        .parse()
        .unwrap();
    assert_eq!(kicked, json!({"client_id": "c2"}));
    let got = c2.expect_closed().await;
    assert!(
        got.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason == reason::ADMINISTRATIVE_ACTION)
        ),
        "{got:?}"
    );
    assert_eq!(api.error("DELETE", "/api/v1/clients/c2", None).await.0, 404);
    assert!(
        eventually(|| async { api.get::<Status>("/api/v1/status").await.connections == 1 }).await
    );
    drop(c1);
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_are_listed_shown_and_deleted_by_url_encoded_topic() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (mut c, _) = Raw::connect(b.addr, V5, "pub", true).await;
    c.publish("status/door", b"open", QoS::AtMostOnce, true, 0)
        .await;
    c.publish("bin/x", b"\xff\x00", QoS::AtMostOnce, true, 0)
        .await;
    assert!(eventually(|| async { b.node().ctx().retained.len() == 2 }).await);

    let list: Value = api.get("/api/v1/retained").await;
    assert_eq!(
        list["data"][1],
        json!({"topic": "status/door", "qos": 0, "payload_bytes": 4})
    );
    let door: Value = api.get("/api/v1/retained/status%2Fdoor").await;
    assert_eq!(door["payload_utf8"], "open");
    assert_eq!(door["payload_base64"], "b3Blbg==");
    // Unencoded slashes work too (the topic is the rest of the path).
    let same: Value = api.get("/api/v1/retained/status/door").await;
    assert_eq!(same, door);
    let bin: Value = api.get("/api/v1/retained/bin%2Fx").await;
    assert_eq!(
        (bin["payload_utf8"].clone(), bin["payload_base64"].clone()),
        (Value::Null, json!("/wA="))
    );

    let (status, body) = api
        .call("DELETE", "/api/v1/retained/status%2Fdoor", None)
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"topic":"status/door"}"#));
    assert_eq!(
        api.error("GET", "/api/v1/retained/status%2Fdoor", None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.error("DELETE", "/api/v1/retained/status%2Fdoor", None)
            .await
            .0,
        404
    );
    assert_eq!(b.node().ctx().retained.len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn restart_through_the_api_shows_in_the_tree_and_metrics() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let tree: TreeEntry = api.get("/api/v1/tree").await;
    let top: Vec<&str> = tree.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        (tree.name.as_str(), top),
        (
            "roost",
            vec![
                "storage",
                "broker",
                "bridges",
                "alarms",
                "listeners",
                "cluster",
                "evacuation",
                "sys",
                "mgmt"
            ]
        )
    );

    let (status, body) = api
        .call(
            "POST",
            "/api/v1/restart",
            Some(json!({"path": "broker/router"})),
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"path":"broker/router"}"#)
    );
    let restarted = eventually(|| async {
        let t: TreeEntry = api.get("/api/v1/tree").await;
        let broker = t.children.iter().find(|c| c.name == "broker").unwrap();
        let router = broker.children.iter().find(|c| c.name == "router").unwrap();
        router.restarts == 1 && router.status == "running" && broker.child_restarts >= 1
    })
    .await;
    assert!(restarted, "{:#?}", b.node().tree().await.unwrap());
    let m = api.metrics().await;
    assert_eq!(
        m[r#"roost_supervisor_restarts_total{path="broker/router"}"#],
        1.0
    );
    assert_eq!(
        m[r#"roost_supervisor_restarts_total{path="listeners/tcp:default"}"#],
        0.0
    );

    for (path, code, needle) in [
        ("", 400, "refusing to restart the root"),
        ("/", 400, "refusing to restart the root"),
        ("no/such", 404, "no actor at path \"no/such\""),
        ("broker/nope", 404, "no actor at path"),
    ] {
        let (status, message) = api
            .error("POST", "/api/v1/restart", Some(json!({ "path": path })))
            .await;
        assert_eq!(status, code, "{path:?}: {message}");
        assert!(message.contains(needle), "{path:?}: {message}");
    }
    let (status, message) = api.error("POST", "/api/v1/restart", None).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("invalid request body"), "{message}");
    b.stop().await;
}

#[tokio::test]
async fn the_api_restarts_itself_and_comes_back() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (status, _) = api
        .call("POST", "/api/v1/restart", Some(json!({"path": "mgmt"})))
        .await;
    assert_eq!(status, 200);
    // Port 0: the new instance may have another port; ask the node.
    let back = eventually(|| async {
        let Ok(addr) = b.node().mgmt_addr().await else {
            return false;
        };
        let api = Api {
            base: format!("http://{addr}"),
            token: api.token.clone(),
        };
        let t: TreeEntry = api.get("/api/v1/tree").await;
        t.children
            .iter()
            .any(|c| c.name == "mgmt" && c.restarts == 1 && c.status == "running")
    })
    .await;
    assert!(back, "{:#?}", b.node().tree().await.unwrap());
    b.stop().await;
}

#[tokio::test]
async fn ready_is_200_while_serving_and_503_without_the_listener() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (status, body) = api.raw("GET", "/health/ready", None, None).await;
    let ready: Ready = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, ready),
        (
            200,
            Ready {
                ready: true,
                listener: true,
                broker: true,
                storage: true,
                evacuating: false
            }
        )
    );

    // Remove the default listener from its supervisor: not ready any more.
    let root = b.node().root();
    let children = ractor::call!(root, SupervisorMsg::WhichChildren).unwrap();
    let listeners = children
        .into_iter()
        .find(|c| c.name == "listeners")
        .unwrap();
    let listeners: ractor::ActorRef<SupervisorMsg> = listeners.cell.unwrap().into();
    let removed = ractor::call!(
        listeners,
        SupervisorMsg::TerminateChild,
        "tcp:default".to_owned()
    )
    .unwrap();
    assert!(removed.is_ok());
    let (status, body) = api.raw("GET", "/health/ready", None, None).await;
    let ready: Ready = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, ready),
        (
            503,
            Ready {
                ready: false,
                listener: false,
                broker: true,
                storage: true,
                evacuating: false
            }
        )
    );
    assert_eq!(api.raw("GET", "/health/live", None, None).await.0, 200);
    b.stop().await;
}

#[tokio::test]
async fn ready_needs_the_store_and_metrics_show_its_counters() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (mut c, _) = Raw::connect(b.addr, V5, "c", true).await;
    c.publish("status/door", b"open", QoS::AtMostOnce, true, 0)
        .await;
    // The retained write is a commit of its own.
    let committed = eventually(|| async {
        let m = api.metrics().await;
        m.get("roost_storage_commits_total")
            .is_some_and(|n| *n >= 1.0)
    })
    .await;
    let m = api.metrics().await;
    assert!(committed, "{m:?}");
    assert_eq!(m["roost_storage_corrupt_records_total"], 0.0);
    assert_eq!(
        m[r#"roost_storage_write_errors_total{kind="retained"}"#],
        0.0
    );

    // Without its storage actor the node is not ready.
    let root = b.node().root();
    let removed = ractor::call!(root, SupervisorMsg::TerminateChild, "storage".to_owned()).unwrap();
    assert!(removed.is_ok());
    let (status, body) = api.raw("GET", "/health/ready", None, None).await;
    let ready: Ready = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, ready),
        (
            503,
            Ready {
                ready: false,
                listener: true,
                broker: true,
                storage: false,
                evacuating: false
            }
        )
    );
    b.stop().await;
}

/// The latest `$SYS/brokers/<node>/...` value of every topic, as a client
/// subscribed to `$SYS/brokers/+/#` sees them. The watcher is itself a
/// client: one connection, one online session, one subscription.
struct SysWatch {
    values: Arc<std::sync::Mutex<HashMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SysWatch {
    async fn start(b: &Broker) -> SysWatch {
        let (mut c, _) = Raw::connect(b.addr, V5, "sys-watch", true).await;
        c.subscribe(1, "$SYS/brokers/+/#", QoS::AtMostOnce).await;
        let values = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let v = values.clone();
        let task = tokio::spawn(async move {
            while let Some(p) = c.recv_within(Duration::from_secs(30)).await {
                if let Packet::Publish(p) = p {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    v.lock().unwrap().insert(p.topic.to_string(), payload);
                }
            }
        });
        SysWatch { values, task }
    }

    /// The value of `$SYS/brokers/roost@localhost/<path>`, which must be a
    /// whole number, never negative.
    fn get(&self, path: &str) -> Option<u64> {
        let topic = format!("$SYS/brokers/roost@localhost/{path}");
        let v = self.values.lock().unwrap().get(&topic).cloned()?;
        Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{topic} = {v:?}: not a count")),
        )
    }
}

impl Drop for SysWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the metrics must say, checked against `/metrics`, `status` and
/// `$SYS`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Expect {
    connections: u64,
    online: u64,
    offline: u64,
    subscriptions: u64,
}

async fn agrees(api: &Api, sys: &SysWatch, want: Expect) -> bool {
    let m = api.metrics().await;
    let s: Status = api.get("/api/v1/status").await;
    let got = Expect {
        connections: m[r#"roost_connections{listener="tcp:default"}"#] as u64,
        online: m[r#"roost_sessions{status="online"}"#] as u64,
        offline: m[r#"roost_sessions{status="offline"}"#] as u64,
        subscriptions: m["roost_subscriptions"] as u64,
    };
    let from_status = Expect {
        connections: s.connections,
        online: s.sessions_online,
        offline: s.sessions_offline,
        subscriptions: s.subscriptions,
    };
    let from_sys = Expect {
        connections: sys.get("connections/tcp:default").unwrap_or(u64::MAX),
        online: sys.get("sessions/online").unwrap_or(u64::MAX),
        offline: sys.get("sessions/offline").unwrap_or(u64::MAX),
        subscriptions: sys.get("subscriptions").unwrap_or(u64::MAX),
    };
    got == want && from_status == want && from_sys == want
}

/// `[connections, sessions online, sessions offline, subscriptions]`.
/// (The `$SYS` watcher's own connection, session and subscription are
/// added here.)
async fn assert_agrees(
    api: &Api,
    sys: &SysWatch,
    [connections, online, offline, subscriptions]: [u64; 4],
    step: &str,
) {
    let want = Expect {
        connections: connections + 1,
        online: online + 1,
        offline,
        subscriptions: subscriptions + 1,
    };
    if !eventually(|| agrees(api, sys, want)).await {
        let m = api.metrics().await;
        let s: Status = api.get("/api/v1/status").await;
        let v = sys.values.lock().unwrap().clone();
        panic!("{step}: want {want:?}\nstatus {s:?}\nmetrics {m:?}\n$SYS {v:?}");
    }
}

#[tokio::test]
async fn metrics_sys_topics_and_status_agree_through_churn_kills_and_expiry() {
    let b = Broker::start_with(|c| c.sys_topics.interval = HumanDuration::from_millis(100)).await;
    let api = Api::of(&b).await;
    let sys = SysWatch::start(&b).await;
    assert_agrees(&api, &sys, [0, 0, 0, 0], "empty").await;

    let mut clean = Vec::new();
    for i in 0..4 {
        let (mut c, _) = Raw::connect(b.addr, V5, &format!("clean-{i}"), true).await;
        c.subscribe(1, &format!("t/{i}"), QoS::AtMostOnce).await;
        clean.push(c);
    }
    let (mut stays, _) = Raw::connect_with(b.addr, persistent_v5("stays-offline", 600)).await;
    stays.subscribe(1, "s/#", QoS::AtLeastOnce).await;
    let (mut victim, _) = Raw::connect_with(b.addr, persistent_v5("victim", 1)).await;
    victim.subscribe(1, "v/#", QoS::AtLeastOnce).await;
    assert_agrees(&api, &sys, [6, 6, 0, 6], "connected").await;

    // Disconnects: clean sessions end, a persistent one goes offline.
    clean.pop().unwrap().disconnect().await;
    drop(clean.pop());
    stays.disconnect().await;
    assert_agrees(&api, &sys, [3, 3, 1, 4], "disconnected").await;

    // A killed connection actor: its session goes offline, then expires (1 s).
    victim
        .publish(PANIC_CONNECTION_TOPIC, b"boom", QoS::AtMostOnce, false, 0)
        .await;
    victim.expect_closed().await;
    let m = api.metrics().await;
    assert!(
        m[r#"roost_actor_failures_total{kind="connection"}"#] >= 1.0,
        "{m:?}"
    );
    assert_agrees(&api, &sys, [2, 2, 1, 3], "expired").await;

    // Reconnecting the offline session brings it back online.
    let (_back, ack) = Raw::connect_with(b.addr, persistent_v5("stays-offline", 600)).await;
    assert!(ack.session_present);
    assert_agrees(&api, &sys, [3, 3, 0, 3], "resumed").await;
    let m = api.metrics().await;
    assert!(m["roost_process_resident_memory_bytes"] > 0.0);
    assert!(m.contains_key("roost_messages_received_total"), "{m:?}");
    b.stop().await;
}

#[tokio::test]
async fn log_level_is_changed_at_runtime() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{reload, EnvFilter};

    // A reloadable filter on a subscriber kept alive (not installed
    // globally: tests share the process).
    let (layer, handle) = reload::Layer::new(EnvFilter::new("info"));
    let _subscriber = tracing_subscriber::registry().with(layer);
    let mut cfg = Config::default();
    cfg.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    cfg.mgmt.listen = "127.0.0.1:0".parse().unwrap();
    cfg.cluster.listen = "127.0.0.1:0".parse().unwrap();
    cfg.node.data_dir = temp_data_dir();
    let data_dir = cfg.node.data_dir.clone();
    let options = NodeOptions {
        log: Some(Arc::new(LogControl::new(handle, "info"))),
    };
    let node = Node::start_with(cfg, options).await.expect("node starts");
    let b = Broker {
        addr: node.mqtt_addr().await.unwrap(),
        node: Some(node),
        data_dir,
    };
    let api = Api::of(&b).await;

    let (status, body) = api
        .call("PUT", "/api/v1/log/level", Some(json!({"level": "debug"})))
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"level":"debug"}"#));
    let now: Value = api.get("/api/v1/log/level").await;
    assert_eq!(now, json!({"level": "debug"}));
    let (status, message) = api
        .error(
            "PUT",
            "/api/v1/log/level",
            Some(json!({"level": "roost=loud"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        message.contains("not a valid log filter directive"),
        "{message}"
    );
    b.stop().await;

    // Without a reload handle (an embedded node): 501, with a message.
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (status, message) = api
        .error("PUT", "/api/v1/log/level", Some(json!({"level": "debug"})))
        .await;
    assert_eq!(status, 501, "{message}");
    b.stop().await;
}

#[tokio::test]
async fn restarting_a_session_brings_a_persistent_one_back_from_the_store() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (mut durable, _) = Raw::connect_with(b.addr, persistent_v5("keeps/state", 600)).await;
    durable.subscribe(1, "rs/d", QoS::AtLeastOnce).await;
    let (mut clean, _) = Raw::connect(b.addr, V5, "clean-one", true).await;
    clean.subscribe(1, "rs/c", QoS::AtLeastOnce).await;

    // The id contains a `/`: everything after `sessions/` is the id.
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/restart",
            Some(json!({"path": "sessions/keeps/state"})),
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"path":"sessions/keeps/state","restored":true}"#)
    );
    durable.expect_closed().await;
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/restart",
            Some(json!({"path": "broker/sessions/clean-one"})),
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"path":"broker/sessions/clean-one","restored":false}"#
        )
    );
    clean.expect_closed().await;
    let (status, message) = api
        .error(
            "POST",
            "/api/v1/restart",
            Some(json!({"path": "sessions/nobody"})),
        )
        .await;
    assert_eq!(status, 404, "{message}");

    // The restarted session kept its subscription (and queues while away);
    // the clean one is gone.
    let (mut p, _) = Raw::connect(b.addr, V5, "pub", true).await;
    p.publish_qos1("rs/d", &b"kept"[..], 1).await;
    let (mut durable, ack) = Raw::connect_with(b.addr, persistent_v5("keeps/state", 600)).await;
    assert!(ack.session_present);
    assert_eq!(&durable.expect_publish().await.payload[..], b"kept");
    let (_, ack) = Raw::connect(b.addr, V5, "clean-one", false).await;
    assert!(!ack.session_present);
    b.stop().await;
}

/// Encoded size of a packet, as our codec writes it (and reads it).
fn wire_len(p: &Packet, version: ProtocolVersion) -> f64 {
    let mut buf = bytes::BytesMut::new();
    roost_protocol::codec::encode(p, version, &mut buf).unwrap();
    buf.len() as f64
}

#[tokio::test]
async fn byte_and_per_qos_publish_counters_are_exact() {
    let b = Broker::start_with(|c| c.sys_topics.interval = HumanDuration::ZERO).await;
    let api = Api::of(&b).await;
    let (mut sent, mut received) = (0.0, 0.0);
    let connect = common::connect_packet(V5, "sub", true);
    sent += wire_len(&Packet::Connect(Box::new(connect.clone())), V5);
    let (mut sub, ack) = Raw::connect_with(b.addr, connect).await;
    received += wire_len(&Packet::ConnAck(ack), V5);
    let subscribe = roost_protocol::packet::Subscribe {
        packet_id: 1,
        filters: vec![roost_protocol::packet::SubscribeFilter {
            filter: "q/#".into(),
            options: common::opts(QoS::ExactlyOnce),
        }],
        properties: Default::default(),
    };
    sent += wire_len(&Packet::Subscribe(subscribe.clone()), V5);
    sub.send(Packet::Subscribe(subscribe)).await;
    received += wire_len(&sub.expect_packet().await, V5);

    let connect = common::connect_packet(V5, "pub", true);
    sent += wire_len(&Packet::Connect(Box::new(connect.clone())), V5);
    let (mut p, ack) = Raw::connect_with(b.addr, connect).await;
    received += wire_len(&Packet::ConnAck(ack), V5);
    for (qos, id) in [
        (QoS::AtMostOnce, 0),
        (QoS::AtLeastOnce, 1),
        (QoS::ExactlyOnce, 2),
    ] {
        let publish = Packet::Publish(common::publish("q/t", &b"x"[..], qos, id));
        sent += wire_len(&publish, V5);
        p.send(publish).await;
        let mut exchange = vec![];
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => exchange.push(p.expect_packet().await),
            QoS::ExactlyOnce => {
                exchange.push(p.expect_packet().await); // PUBREC
                let rel = Packet::PubRel(roost_protocol::packet::Ack::new(id));
                sent += wire_len(&rel, V5);
                p.send(rel).await;
                exchange.push(p.expect_packet().await); // PUBCOMP
            }
        }
        // The subscriber's copy, and its acknowledgements.
        let m = sub.expect_packet().await;
        exchange.push(m.clone());
        let Packet::Publish(m) = m else { panic!() };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let ack = Packet::PubAck(roost_protocol::packet::Ack::new(m.packet_id));
                sent += wire_len(&ack, V5);
                sub.send(ack).await;
            }
            QoS::ExactlyOnce => {
                let rec = Packet::PubRec(roost_protocol::packet::Ack::new(m.packet_id));
                sent += wire_len(&rec, V5);
                sub.send(rec).await;
                let rel = sub.expect_packet().await;
                exchange.push(rel);
                let comp = Packet::PubComp(roost_protocol::packet::Ack::new(m.packet_id));
                sent += wire_len(&comp, V5);
                sub.send(comp).await;
            }
        }
        received += exchange.iter().map(|p| wire_len(p, V5)).sum::<f64>();
    }
    sub.expect_nothing(common::QUIET).await;

    let m = api.metrics().await;
    for q in ["0", "1", "2"] {
        assert_eq!(
            m[&format!(r#"roost_publish_received_total{{qos="{q}"}}"#)],
            1.0
        );
        assert_eq!(m[&format!(r#"roost_publish_sent_total{{qos="{q}"}}"#)], 1.0);
    }
    assert_eq!(m["roost_messages_delivered_total"], 3.0, "PUBLISH only");
    assert_eq!(m["roost_bytes_received_total"], sent, "{m:?}");
    assert_eq!(m["roost_bytes_sent_total"], received, "{m:?}");
    b.stop().await;
}

/// `/api/v1/evacuation` and `/api/v1/rebalance` on a node alone: wrong
/// bodies are refused with the reason and start nothing; a rebalance
/// needs a second node.
#[tokio::test]
async fn evacuation_and_rebalance_refuse_wrong_requests_with_the_reason() {
    let b = Broker::start().await;
    let api = Api::of(&b).await;
    let (status, msg) = api
        .error(
            "POST",
            "/api/v1/evacuation",
            Some(serde_json::json!({ "conn_evict_rat": 5 })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(msg.contains("conn_evict_rat"), "{msg}");
    let (status, msg) = api
        .error(
            "POST",
            "/api/v1/evacuation",
            Some(serde_json::json!({ "sess_evict_rate": 0 })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(msg.contains("at least 1"), "{msg}");
    let status: Value = api.get("/api/v1/evacuation").await;
    assert_eq!(status["stage"], "off");
    assert_eq!(api.error("DELETE", "/api/v1/evacuation", None).await.0, 409);

    let (status, msg) = api.error("POST", "/api/v1/evacuation", None).await;
    assert_eq!(status, 400, "not JSON");
    assert!(msg.contains("invalid request body"), "{msg}");
    let (status, msg) = api
        .error("POST", "/api/v1/rebalance", Some(json!({})))
        .await;
    assert_eq!(status, 400);
    assert!(msg.contains("at least two"), "{msg}");
    let (status, msg) = api
        .error(
            "POST",
            "/api/v1/rebalance",
            Some(serde_json::json!({ "rel_conn_threshold": 0.5 })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(msg.contains("rel_conn_threshold"), "{msg}");
    let status: Value = api.get("/api/v1/rebalance").await;
    assert_eq!(status["stage"], "off");
    assert_eq!(api.error("DELETE", "/api/v1/rebalance", None).await.0, 409);
    b.stop().await;
}
