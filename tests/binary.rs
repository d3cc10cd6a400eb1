//! The `roost` binary as a user runs it: `start` with flags and `ROOST_*`
//! overrides, graceful shutdown on SIGTERM/SIGINT, `print-default-config`,
//! `check-config`, bad arguments, and its data directory: a second node on
//! it, a corrupt or newer-format store, retained messages across `kill -9`.
//!
//! Each test owns its child processes through `Proc`, which kills them if
//! the test fails, so no process outlives the test; every wait is bounded.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, publish, temp_data_dir, Raw, QUIET};
use roost_protocol::packet::{reason, Packet, ProtocolVersion, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_roost");

/// Kills the child on drop (a failed assertion must not leak a broker).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    // A free port for the management API: tests run in parallel.
    cmd.arg("start")
        .args(["--mgmt", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        .args(args);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
    Proc(start_command(args, env).spawn().expect("spawn roost"))
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("roost did not listen on {addr}");
}

fn wait_exit(p: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "roost did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn sigterm_sends_v5_clients_server_shutting_down_and_exits_zero() {
    let port = free_port();
    let data = temp_data_dir();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut p = start(
        &[
            "--mqtt",
            &addr.to_string(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    wait_listening(addr).await;
    let (mut v5, _) = Raw::connect(addr, ProtocolVersion::V5, "v5", true).await;
    let (mut v4, _) = Raw::connect(addr, ProtocolVersion::V311, "v4", true).await;
    v5.subscribe(1, "t", QoS::AtMostOnce).await;

    signal(&p, "-TERM");
    let got = v5.expect_closed().await;
    assert!(
        got.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.reason == reason::SERVER_SHUTTING_DOWN)
        ),
        "v5 client got {got:?}"
    );
    // A 3.1.1 client has no DISCONNECT from the server: just a close.
    assert!(v4.expect_closed().await.is_empty());
    let status = wait_exit(&mut p, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(data.is_dir(), "data dir created");
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test]
async fn env_override_sets_the_listener_and_sigint_stops() {
    let port = free_port();
    let data = temp_data_dir();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = addr.to_string();
    let mut p = start(
        &["--data-dir", data.to_str().unwrap()],
        &[("ROOST_MQTT__LISTEN", &listen)],
    );
    wait_listening(addr).await;
    let (_c, ack) = Raw::connect(addr, ProtocolVersion::V311, "c", true).await;
    assert_eq!(ack.code, 0);
    signal(&p, "-INT");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(15)).code(), Some(0));
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn print_default_config_is_a_valid_config() {
    let out = Command::new(BIN)
        .arg("print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = temp_data_dir().with_extension("toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn check_config_lists_every_problem_and_exits_one() {
    let path = temp_data_dir().with_extension("toml");
    std::fs::write(
        &path,
        "[mqtt]\nmax_inflght = 3\nmax_qos = 7\nlisten = 5\n[nodee]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    for needle in ["mqtt.max_inflght", "mqtt.max_qos", "mqtt.listen", "nodee"] {
        assert!(text.contains(needle), "{needle} not named in:\n{text}");
    }
    let _ = std::fs::remove_file(path);
}

#[test]
fn start_with_a_bad_config_file_fails_with_the_problem_named() {
    let path = temp_data_dir().with_extension("toml");
    std::fs::write(&path, "[mqtt]\nlisten = \"not an address\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["start", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.listen"));
    let _ = std::fs::remove_file(path);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["start", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A data directory removed on drop, with any store quarantined in it.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> DataDir {
        DataDir(temp_data_dir())
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn store(&self) -> PathBuf {
        self.0.join("store")
    }

    /// Entries of the data dir whose name starts with `prefix`.
    fn entries(&self, prefix: &str) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(prefix))
            .collect()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// `roost start` on `data` and `mqtt`, waited for until it serves MQTT.
async fn serve(data: &DataDir, mqtt: SocketAddr, env: &[(&str, &str)]) -> Proc {
    let mut p = start(
        &["--mqtt", &mqtt.to_string(), "--data-dir", data.arg()],
        env,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(mqtt).await.is_err() {
        if let Some(status) = p.0.try_wait().unwrap() {
            panic!("roost exited before serving: {status}");
        }
        assert!(Instant::now() < deadline, "roost did not listen on {mqtt}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

/// `roost start` on `data` that must fail: its exit code and stderr.
fn start_refused(data: &DataDir, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mqtt = local_addr().to_string();
    let mut cmd = start_command(&["--mqtt", &mqtt, "--data-dir", data.arg()], env);
    let mut p = Proc(cmd.stderr(Stdio::piped()).spawn().expect("spawn roost"));
    let status = wait_exit(&mut p, Duration::from_secs(20));
    let mut stderr = String::new();
    p.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// SIGKILL: no shutdown code runs, nothing is flushed.
fn kill9(mut p: Proc) {
    p.0.kill().unwrap();
    p.0.wait().unwrap();
}

fn assert_names(stderr: &str, needles: &[&str]) {
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn a_second_node_on_the_same_data_dir_is_refused_naming_the_lock() {
    let data = DataDir::new();
    let mqtt = local_addr();
    let mut first = serve(&data, mqtt, &[]).await;

    let (code, stderr) = start_refused(&data, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let lock = display(&data.store().join("LOCK"));
    assert_names(&stderr, &[&lock, "locked", "another Roost node"]);

    // The first node is untouched and still serves.
    assert!(first.0.try_wait().unwrap().is_none(), "first node exited");
    let (_c, ack) = Raw::connect(mqtt, ProtocolVersion::V311, "c", true).await;
    assert_eq!(ack.code, 0);
}

#[tokio::test]
async fn a_corrupt_store_is_refused_unless_quarantine_corrupt_moves_it_aside() {
    let data = DataDir::new();
    let mqtt = local_addr();
    kill9(serve(&data, mqtt, &[]).await);
    // CURRENT names the live MANIFEST: point it at one that does not exist.
    std::fs::write(data.store().join("CURRENT"), b"MANIFEST-999999\n").unwrap();

    let (code, stderr) = start_refused(&data, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let store = display(&data.store());
    assert_names(
        &stderr,
        &[
            &store,
            "corrupt",
            "MANIFEST-999999",
            "storage.quarantine_corrupt",
            "ROOST_STORAGE__QUARANTINE_CORRUPT=true",
        ],
    );
    assert!(data.entries("store.corrupt-").is_empty(), "nothing moved");

    let env = [("ROOST_STORAGE__QUARANTINE_CORRUPT", "true")];
    let _node = serve(&data, mqtt, &env).await;
    let moved = data.entries("store.corrupt-");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        data.0.join(&moved[0]).join("CURRENT").exists(),
        "kept whole"
    );
    // It serves, on a new empty store.
    let (mut c, ack) = Raw::connect(mqtt, ProtocolVersion::V311, "c", true).await;
    assert_eq!(ack.code, 0);
    assert!(data.store().join("CURRENT").exists());
    c.subscribe(1, "#", QoS::AtLeastOnce).await;
    c.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn a_store_of_a_newer_format_is_refused_even_with_quarantine() {
    let data = DataDir::new();
    std::fs::create_dir_all(&data.0).unwrap();
    roost_storage::test_support::mark_newer_format(data.store()).unwrap();
    for env in [vec![], vec![("ROOST_STORAGE__QUARANTINE_CORRUPT", "true")]] {
        let (code, stderr) = start_refused(&data, &env);
        assert_eq!(code, Some(1), "{stderr}");
        let store = display(&data.store());
        let found = format!("storage format {}", roost_storage::SUPPORTED_FORMAT + 1);
        let supported = format!("supports up to {}", roost_storage::SUPPORTED_FORMAT);
        assert_names(&stderr, &[&store, &found, &supported]);
        assert!(data.entries("store.corrupt-").is_empty(), "never moved");
    }
}

#[tokio::test]
async fn retained_messages_and_their_deletes_survive_kill_9() {
    let data = DataDir::new();
    let mqtt = local_addr();
    let node = serve(&data, mqtt, &[]).await;
    let (mut c, _) = Raw::connect(mqtt, ProtocolVersion::V5, "pub", true).await;
    for (id, topic, payload) in [
        (1, "r/kept", &b"kept"[..]),
        (2, "r/deleted", b"soon gone"),
        (3, "r/deleted", b""),
    ] {
        let mut p = publish(topic, payload, QoS::AtLeastOnce, id);
        p.retain = true;
        c.send_publish(p).await;
        match c.recv().await {
            Some(Packet::PubAck(a)) if a.packet_id == id => {}
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    kill9(node);

    let _node = serve(&data, mqtt, &[]).await;
    let (mut sub, _) = Raw::connect(mqtt, ProtocolVersion::V5, "sub", true).await;
    sub.subscribe(1, "r/#", QoS::AtLeastOnce).await;
    let m = sub.expect_publish().await;
    assert_eq!(
        (&m.topic[..], &m.payload[..], m.retain),
        ("r/kept", &b"kept"[..], true)
    );
    sub.expect_nothing(QUIET).await;
}
