//! `roost ctl` as an operator runs it: the real binary against a running
//! `roost start` process (free ports, temporary data directory), every
//! command, the error paths and the exit codes (0 ok, 1 failed, 2 usage).
//!
//! The node process is killed when its guard drops, also when a test fails.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, persistent_v5, temp_data_dir, Raw};
use roost_protocol::packet::{reason, Packet, ProtocolVersion, QoS};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_roost");
const V5: ProtocolVersion = ProtocolVersion::V5;

/// A `roost start` process, killed on drop, and how to reach it.
struct NodeProc {
    child: Child,
    mqtt: SocketAddr,
    url: String,
    data: PathBuf,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts a node and waits until MQTT and the API answer.
fn start_node() -> NodeProc {
    start_node_with(None)
}

/// [`start_node`] with a configuration file of this content (written into
/// the data directory).
fn start_node_with(config: Option<&str>) -> NodeProc {
    let (mqtt, mgmt, data) = (free_addr(), free_addr(), temp_data_dir());
    let mut cmd = Command::new(BIN);
    if let Some(text) = config {
        std::fs::create_dir_all(&data).unwrap();
        let file = data.join("roost.toml");
        std::fs::write(&file, text).unwrap();
        cmd.arg("start").arg("--config").arg(file);
    } else {
        cmd.arg("start");
    }
    let child = cmd
        .args(["--mqtt", &mqtt.to_string(), "--mgmt", &mgmt.to_string()])
        .args(["--cluster-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn roost start");
    let node = NodeProc {
        child,
        mqtt,
        url: format!("http://{mgmt}"),
        data,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(mgmt).is_err() || std::net::TcpStream::connect(mqtt).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "roost did not start on {mqtt} / {mgmt}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

impl NodeProc {
    /// `roost ctl --node URL --data-dir DATA <args>`.
    fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = ctl();
        cmd.args(["--node", &self.url])
            .arg("--data-dir")
            .arg(&self.data);
        run(cmd.args(args))
    }

    /// Runs ctl, expects exit 0, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs ctl with `--json`, expects exit 0, returns the JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Runs ctl, expects exit `code`, returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }
}

/// `roost ctl`, without a `ROOST_TOKEN` inherited from the test's shell.
fn ctl() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl").env_remove("ROOST_TOKEN");
    cmd
}

/// Runs a command with a deadline (a hung ctl fails the test, not the suite).
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn roost ctl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("roost ctl did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// sensor-1 online on `sensors/#` (QoS 1), offline-1 offline.
async fn clients(node: &NodeProc) -> Raw {
    let (mut c1, _) = Raw::connect(node.mqtt, V5, "sensor-1", true).await;
    c1.subscribe(1, "sensors/#", QoS::AtLeastOnce).await;
    let (off, _) = Raw::connect_with(node.mqtt, persistent_v5("offline-1", 600)).await;
    off.disconnect().await;
    c1
}

#[tokio::test]
async fn status_and_clients() {
    let node = start_node();
    let _c1 = clients(&node).await;

    let status = node.ok(&["status"]);
    for needle in [
        "roost@localhost",
        "connections    1",
        "1 online, 1 offline",
        "subscriptions  1",
    ] {
        assert!(status.contains(needle), "{needle:?} not in:\n{status}");
    }
    let json = node.json(&["status"]);
    assert_eq!(
        (
            json["connections"].as_u64(),
            json["sessions_offline"].as_u64()
        ),
        (Some(1), Some(1))
    );

    let list = node.ok(&["clients", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("CLIENT ID"), "{list}");
    assert!(
        lines[1].starts_with("offline-1") && lines[1].contains(" no "),
        "{list}"
    );
    assert!(
        lines[2].starts_with("sensor-1") && lines[2].contains(" yes "),
        "{list}"
    );
    let matched = node.json(&["clients", "list", "--match", "sens"]);
    assert_eq!(matched["data"].as_array().map(Vec::len), Some(1));
    let show = node.ok(&["clients", "show", "sensor-1"]);
    assert!(
        show.contains("connected") && show.contains("  sensors/#"),
        "{show}"
    );
}

#[tokio::test]
async fn subscriptions_routes_and_kick() {
    let node = start_node();
    let mut c1 = clients(&node).await;
    let subs = node.ok(&["subscriptions", "list", "--client", "sensor-1"]);
    assert_eq!(subs, "CLIENT ID  FILTER     QOS\nsensor-1   sensors/#  1\n");
    let routes = node.ok(&["routes", "list"]);
    assert!(
        routes.contains("sensors/#  roost@localhost  direct  1"),
        "{routes}"
    );

    let err = node.fails(&["clients", "kick", "nobody"], 1);
    assert!(err.contains("no client \"nobody\" (HTTP 404)"), "{err}");
    assert!(node
        .fails(&["clients", "show", "nobody"], 1)
        .contains("HTTP 404"));
    assert_eq!(
        node.ok(&["clients", "kick", "sensor-1"]),
        "kicked sensor-1\n"
    );
    let got = c1.expect_closed().await;
    assert!(
        got.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason == reason::ADMINISTRATIVE_ACTION)
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn retained_list_show_delete() {
    let node = start_node();
    let (mut c, _) = Raw::connect(node.mqtt, V5, "pub", true).await;
    c.publish("status/door", b"open", QoS::AtLeastOnce, true, 1)
        .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));

    assert_eq!(
        node.ok(&["retained", "list"]),
        "TOPIC        QOS  BYTES\nstatus/door  1    4\n"
    );
    let show = node.ok(&["retained", "show", "status/door"]);
    assert!(show.contains("payload  open"), "{show}");
    assert_eq!(
        node.ok(&["retained", "delete", "status/door"]),
        "deleted the retained message on status/door\n"
    );
    assert_eq!(node.ok(&["retained", "list"]), "(no retained messages)\n");
    assert!(node
        .fails(&["retained", "show", "status/door"], 1)
        .contains("HTTP 404"));
    assert!(node
        .fails(&["retained", "delete", "status/door"], 1)
        .contains("HTTP 404"));
}

#[tokio::test]
async fn tree_restart_metrics_and_log_level() {
    let node = start_node();
    let tree = node.ok(&["tree"]);
    for row in [
        "roost ",
        "├── storage ",
        "├── broker ",
        "│   ├── router ",
        "├── listeners ",
        "│   └── tcp:default ",
        "└── mgmt ",
    ] {
        assert!(
            tree.lines().any(|l| l.starts_with(row)),
            "{row:?} not in:\n{tree}"
        );
    }
    assert_eq!(
        node.ok(&["restart", "broker/router"]),
        "restart of broker/router scheduled (watch it with `roost ctl tree`)\n"
    );
    let restarted = eventually(|| async {
        let t = node.json(&["tree"]);
        let router = &t["children"][1]["children"][0];
        router["name"] == "router" && router["restarts"] == 1 && router["status"] == "running"
    })
    .await;
    assert!(restarted, "{}", node.ok(&["tree"]));
    let err = node.fails(&["restart", "no/such"], 1);
    assert!(
        err.contains("no actor at path \"no/such\"") && err.contains("HTTP 404"),
        "{err}"
    );
    let err = node.fails(&["restart", "/"], 1);
    assert!(
        err.contains("refusing to restart the root") && err.contains("HTTP 400"),
        "{err}"
    );

    let metrics = node.ok(&["metrics"]);
    assert!(
        metrics.contains("roost_supervisor_restarts_total{path=\"broker/router\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("roost_connections")),
        "{metrics}"
    );

    assert_eq!(node.ok(&["log", "level", "debug"]), "log level: debug\n");
    assert_eq!(node.ok(&["log", "level"]), "log level: debug\n");
    let err = node.fails(&["log", "level", "roost=loud"], 1);
    assert!(
        err.contains("not a valid log filter directive") && err.contains("HTTP 400"),
        "{err}"
    );
}

#[tokio::test]
async fn tokens_unreachable_nodes_and_usage_errors() {
    let node = start_node();
    // The token from ROOST_TOKEN or --token, instead of the data directory.
    let token = std::fs::read_to_string(node.data.join("mgmt.token")).unwrap();
    let mut cmd = ctl();
    cmd.args(["--node", &node.url, "--data-dir", "/nonexistent", "status"]);
    let out = run(cmd.env("ROOST_TOKEN", token.trim()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(ctl().args(["--node", &node.url, "--token", token.trim(), "status"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let err = node.fails(&["--token", "wrong-token-0123456789", "status"], 1);
    assert!(err.contains("rejected the token (HTTP 401)"), "{err}");
    let out = run(ctl().args(["--node", &node.url, "--data-dir", "/nonexistent", "status"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no management token"),
        "{}",
        text(&out.stderr)
    );

    // Nothing listens there: exit 1, naming the URL.
    let nowhere = format!("http://{}", free_addr());
    let out = run(ctl().args(["--node", &nowhere, "--token", "t", "status"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&nowhere) && err.contains("connection refused"),
        "{err}"
    );

    for usage in [
        &["clients"][..],
        &["frobnicate"],
        &["restart"],
        &["clients", "show"],
        &["--node", "ftp://x", "status"],
    ] {
        node.fails(usage, 2);
    }
}

#[tokio::test]
async fn bridges_list_show_pause_resume() {
    // Nothing listens on the remote's port: the bridge keeps retrying.
    let remote = free_addr();
    let node = start_node_with(Some(&format!(
        "[[bridges]]\nname = \"up\"\nremote = \"{remote}\"\nlocal_topics = [\"sensors/#\"]\n\
         remote_prefix = \"edge/\"\n"
    )));

    let table = node.ok(&["bridges", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{table}");
    assert!(lines[1].starts_with("up "), "{table}");
    assert!(lines[1].contains(&remote.to_string()), "{table}");
    assert!(
        lines[1].contains(" connecting ") || lines[1].contains(" disconnected "),
        "{table}"
    );
    let list = node.json(&["bridges", "list"]);
    let row = &list["data"][0];
    assert_eq!(row["name"], "up", "{list}");
    assert!(
        row["state"] == "connecting" || row["state"] == "disconnected",
        "{list}"
    );

    let show = node.ok(&["bridges", "show", "up"]);
    assert!(
        show.contains("local topics") && show.contains("sensors/#"),
        "{show}"
    );
    let detail = node.json(&["bridges", "show", "up"]);
    assert_eq!(detail["config"]["remote_prefix"], "edge/", "{detail}");

    let out = node.ok(&["bridges", "pause", "up"]);
    assert!(out.starts_with("paused up"), "{out}");
    assert_eq!(node.json(&["bridges", "show", "up"])["state"], "paused");
    let out = node.ok(&["bridges", "resume", "up"]);
    assert!(out.starts_with("resumed up"), "{out}");
    assert_ne!(
        node.json(&["bridges", "list"])["data"][0]["state"],
        "paused"
    );
    let out = node.ok(&["bridges", "restart", "up"]);
    assert!(out.contains("bridges/up"), "{out}");

    for cmd in [
        &["bridges", "show", "nope"][..],
        &["bridges", "pause", "nope"],
        &["bridges", "resume", "nope"],
        &["bridges", "restart", "nope"],
    ] {
        let err = node.fails(cmd, 1);
        assert!(err.contains("nope"), "{cmd:?}: {err}");
    }
    node.fails(&["bridges", "show"], 2);
    node.fails(&["bridges"], 2);
}
