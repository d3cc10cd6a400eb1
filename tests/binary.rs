//! The `roost` binary as a user runs it: `start` with flags and `ROOST_*`
//! overrides, graceful shutdown on SIGTERM/SIGINT, `print-default-config`,
//! `check-config`, and bad arguments.
//!
//! Each test owns its child process through `Child` and kills it if the test
//! fails, so no process outlives the test.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{temp_data_dir, Raw};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    // A free port for the management API: tests run in parallel.
    cmd.arg("start").args(["--mgmt", "127.0.0.1:0"]).args(args);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn roost"))
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
