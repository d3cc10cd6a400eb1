//! Connection handling shared by the recording publishers and subscribers:
//! connecting with fail-over and backoff, and noticing a dead connection.
//!
//! A connection that breaks (node killed, RST) ends with a read or write
//! error; one that goes silent (node stopped with SIGSTOP, partition that
//! drops packets) is noticed by [`Liveness`]: a PINGREQ after
//! [`PING_AFTER`] without input, the connection declared dead when nothing
//! at all arrived [`DEAD_AFTER`] after it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use roost_protocol::packet::ProtocolVersion;
use tokio::time::Instant;

use crate::client::{Client, ConnectOptions};

/// Bounds the TCP connect and the CONNACK wait, each. Longer than a
/// broker's session takeover may take (roost: up to 5 s when the node
/// holding the session is slow): a client that gives up after 2 s, as this
/// one did, tries the next node while the first still moves its session,
/// and its session moves from node to node. Real clients wait longer still
/// (Paho: 30 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// Bounds every write of a batch of packets.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds a DISCONNECT and socket shutdown.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Backoff between connection attempts, doubling from the first to the second.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A PINGREQ is sent after this long without input.
pub const PING_AFTER: Duration = Duration::from_secs(1);
/// The connection is dead when nothing arrived this long after a PINGREQ:
/// a silent node is noticed 5 to 5.25 s after its last packet.
pub const DEAD_AFTER: Duration = Duration::from_secs(4);
/// How often a connection checks its liveness.
pub const TICK: Duration = Duration::from_millis(250);
/// The keep alive announced in CONNECT (seconds): well above [`PING_AFTER`].
const KEEP_ALIVE: u16 = 30;
/// The Session Expiry Interval of every load session: one day.
pub const SESSION_EXPIRY: u32 = 24 * 60 * 60;

/// Where and as whom one client connects.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub nodes: Vec<SocketAddr>,
    /// The node tried first, every time.
    pub home: usize,
    pub client_id: String,
}

/// A successful connection.
pub struct Connected {
    pub client: Client,
    pub node: usize,
    /// Attempts that failed before this one.
    pub failures: u32,
    pub last_error: Option<String>,
}

impl Dialer {
    fn options(&self, node: usize, clean_start: bool) -> ConnectOptions {
        let addr = self.nodes[node];
        ConnectOptions {
            host: addr.ip().to_string(),
            port: addr.port(),
            client_id: self.client_id.clone(),
            version: ProtocolVersion::V5,
            keep_alive: KEEP_ALIVE,
            clean_start,
            timeout: CONNECT_TIMEOUT,
            send_buffer: None,
            session_expiry: Some(SESSION_EXPIRY),
        }
    }

    /// One attempt on `node`.
    pub async fn connect_to(&self, node: usize, clean_start: bool) -> Result<Client> {
        Client::connect(&self.options(node, clean_start)).await
    }

    /// Connects with clean start off: the home node first, then the next
    /// ones in order (wrapping), with backoff between attempts. Never gives
    /// up: callers race it against their own stop condition (dropping the
    /// future abandons the attempt in progress).
    pub async fn reconnect(&self) -> Connected {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        let mut last_error = None;
        let n = self.nodes.len().max(1);
        loop {
            let node = (self.home + failures as usize) % n;
            match self.connect_to(node, false).await {
                Ok(client) => {
                    return Connected {
                        client,
                        node,
                        failures,
                        last_error,
                    }
                }
                Err(e) => last_error = Some(format!("node {node}: {e:#}")),
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Tries the home node only, with backoff, until `within` passes.
    pub async fn connect_home(&self, within: Duration) -> Result<Client> {
        let deadline = Instant::now() + within;
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.connect_to(self.home, true).await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() + backoff >= deadline => {
                    return Err(e.context(format!(
                        "{} could not connect to node {} ({}) within {within:?}",
                        self.client_id, self.home, self.nodes[self.home]
                    )))
                }
                Err(_) => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// What a liveness check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Fine,
    SendPing,
    Dead,
}

/// Input-based liveness of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    last_input: Instant,
    ping_sent: Option<Instant>,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness::new()
    }
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness {
            last_input: Instant::now(),
            ping_sent: None,
        }
    }

    /// Any packet arrived.
    pub fn input(&mut self) {
        self.last_input = Instant::now();
        self.ping_sent = None;
    }

    pub fn check(&mut self) -> Check {
        let now = Instant::now();
        match self.ping_sent {
            Some(at) if now.duration_since(at) >= DEAD_AFTER => Check::Dead,
            Some(_) => Check::Fine,
            None if now.duration_since(self.last_input) >= PING_AFTER => {
                self.ping_sent = Some(now);
                Check::SendPing
            }
            None => Check::Fine,
        }
    }
}

/// A DISCONNECT ending the session on the broker (5.0: Session Expiry
/// Interval 0), for the end of a run.
pub fn final_disconnect() -> roost_protocol::packet::Disconnect {
    let mut d = roost_protocol::packet::Disconnect::default();
    d.properties.session_expiry_interval = Some(0);
    d
}
