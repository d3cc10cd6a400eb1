//! The recording load clients and the checker against one real `roost`
//! node killed with SIGKILL in the middle of the run and restarted on the
//! same data directory and ports: every acknowledged QoS 1/2 message must
//! still reach both subscribers, no QoS 2 message twice.
//!
//! The broker binary: `ROOST_BIN`, else `roost` next to this test's
//! target directory (`cargo test --workspace` builds it), else
//! `~/.cache/roost/target/debug/roost`. A missing binary fails the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roost_chaos::history::{check, Load, LoadSpec, QoS};

/// Bounds the whole test.
const TEST_DEADLINE: Duration = Duration::from_secs(50);
/// Bounds a node start (until it accepts MQTT connections).
const NODE_START: Duration = Duration::from_secs(15);

fn roost_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ROOST_BIN") {
        return PathBuf::from(bin);
    }
    let mut candidates = Vec::new();
    // target/debug/deps/history_roost-<hash> -> target/debug/roost
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            candidates.push(dir.join("roost"));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/roost/target/debug/roost"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no roost binary (tried ROOST_BIN, {candidates:?}): \
                 build it with `cargo build --workspace --offline` or set ROOST_BIN"
            )
        })
}

/// A loopback port nothing listens on now, never handed out before by this
/// process.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One `roost` node process; killed (and its directory removed) on drop,
/// panics included.
struct Node {
    bin: PathBuf,
    dir: PathBuf,
    mqtt: SocketAddr,
    mgmt: SocketAddr,
    cluster: SocketAddr,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    fn new() -> Node {
        let dir = std::env::temp_dir().join(format!(
            "roost-chaos-history-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test directory");
        Node {
            bin: roost_bin(),
            dir,
            mqtt: local(free_port()),
            mgmt: local(free_port()),
            cluster: local(free_port()),
            child: None,
            starts: 0,
        }
    }

    /// Starts the process and waits until it accepts MQTT connections.
    async fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("node-{}.log", self.starts)))
            .expect("create the node log");
        let mut cmd = Command::new(&self.bin);
        // roost reads `ROOST_*` variables as configuration (`ROOST_BIN`
        // would be an unknown key `bin`): none of the caller's reach it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROOST_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg("start")
            .args(["--node-name", "a@localhost"])
            .args(["--mqtt", &self.mqtt.to_string()])
            .args(["--mgmt", &self.mgmt.to_string()])
            .args(["--cluster-listen", &self.cluster.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + NODE_START;
        loop {
            if tokio::net::TcpStream::connect(self.mqtt).await.is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("roost exited before serving: {status}\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "roost did not listen on {} within {NODE_START:?}\n{}",
                self.mqtt,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The tail of every log of this node, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let text =
                std::fs::read_to_string(self.dir.join(format!("node-{n}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out += &format!(
                "--- node log {n} (last {} lines)\n{}\n",
                tail.len(),
                tail.join("\n")
            );
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_acknowledged_messages_survive_kill_9_and_restart() {
    tokio::time::timeout(TEST_DEADLINE, kill_and_restart())
        .await
        .expect("test deadline exceeded");
}

async fn kill_and_restart() {
    let mut node = Node::new();
    node.start().await;
    let spec = LoadSpec {
        run_id: format!("it{}", std::process::id()),
        nodes: vec![node.mqtt],
        publishers: vec![(0, QoS::AtLeastOnce), (0, QoS::ExactlyOnce)],
        subscribers: vec![0, 0],
        rate: 200.0,
        payload: 64,
    };
    let load = Load::start(spec).await.expect("start the load");
    let began = Instant::now();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = load.progress();
    assert!(
        before.acked > 0,
        "no acknowledgement before the kill: {before:?}"
    );
    node.kill();
    let killed = Instant::now();
    node.start().await;
    let restarted = Instant::now();
    eprintln!(
        "killed after {:?} ({before:?}), serving again {:?} later",
        killed - began,
        restarted - killed
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(began.elapsed())).await;

    load.stop_publishing().await;
    let history = load
        .finish(Duration::from_secs(5), Duration::from_secs(20))
        .await;
    let verdict = check(&history);
    eprintln!("{}", verdict.table());
    eprintln!(
        "finish ended with {:?}, {:?} after the start",
        history.finish_end,
        history.finished - began
    );
    eprint!("{}", history.events_text());
    assert!(verdict.passed(), "{}\n{}", verdict.table(), node.logs());
    for qos in [1, 2] {
        let s = verdict
            .per_qos
            .iter()
            .find(|s| s.qos == qos)
            .unwrap_or_else(|| panic!("no QoS {qos} row"));
        assert!(s.acknowledged > 0, "QoS {qos}: nothing acknowledged");
        assert!(s.delivered > 0, "QoS {qos}: nothing delivered");
    }
    // The fault was exercised: every client reconnected, and deliveries
    // resumed after the restart.
    for p in &history.publishers {
        assert!(p.connects >= 2, "publisher {} never reconnected", p.index);
    }
    for s in &history.subscribers {
        assert!(s.connects >= 2, "subscriber {} never reconnected", s.index);
    }
    assert!(
        history.deliveries_after(restarted) > 0,
        "no delivery after the restart"
    );
    assert!(history.first_delivery_after(killed).is_some());
}
