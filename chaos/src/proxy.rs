//! The chaos harness's fault proxy: a TCP proxy on loopback between every
//! ordered pair of nodes, whose links it can stall, slow down and reset.
//!
//! For nodes `i != j` the proxy listens on [`FaultProxy::addr`]`(i, j)` and
//! forwards to node `j`'s real cluster port: node `i` dials that address
//! (its `cluster.seeds` and `cluster.peer_addresses` name it). Bytes from
//! the dialer to `j` are the *flow* `i -> j`, the answers are `j -> i`.
//!
//! Rules are set per directed flow and apply at once to the connections
//! that exist and to new ones:
//! - **blocked**: nothing is forwarded on the flow, and the proxy stops
//!   reading from the sender once its buffer is full, like a firewall DROP
//!   (TCP keeps the bytes; none is lost, and they go on in order once the
//!   flow is unblocked). A connection accepted while either direction of
//!   its pair is blocked is not connected onward until both are unblocked
//!   (a SYN that does not get through): the dialer's handshake times out,
//!   and if the dialer gives up, nothing of it ever reaches the node;
//! - **latency**: every chunk is held this long after it was read, in order;
//! - **bandwidth**: at most this many bytes per second are forwarded;
//! - [`FaultProxy::reset`]: every connection between two nodes is closed
//!   with a TCP RST on both sides.
//!
//! Each direction of a connection buffers at most [`BUFFER`] bytes. The
//! proxy's tasks end when it is dropped (its connections are reset).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

/// Bytes buffered at most per direction of a connection.
pub const BUFFER: usize = 64 * 1024;
/// Largest read, hence largest chunk a latency applies to.
const CHUNK: usize = 16 * 1024;
/// Bound on connecting to a node's real cluster port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The rule of one directed flow. The default forwards freely.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowRule {
    /// Nothing is forwarded (and new connections of the pair are not connected).
    pub blocked: bool,
    /// Added to every chunk's delivery time.
    pub latency: Duration,
    /// Bytes per second at most; `None`: unlimited.
    pub bandwidth: Option<u64>,
}

/// Every flow's rule, and a counter per node pair bumped by each reset.
#[derive(Debug, Clone)]
struct Rules {
    n: usize,
    flows: Vec<FlowRule>,
    resets: Vec<u64>,
}

impl Rules {
    fn flow(&self, from: usize, to: usize) -> FlowRule {
        self.flows[from * self.n + to]
    }

    /// Resets so far between `a` and `b` (either order).
    fn epoch(&self, a: usize, b: usize) -> u64 {
        self.resets[a.min(b) * self.n + a.max(b)]
    }

    /// Whether a new connection of the pair would get through.
    fn open(&self, a: usize, b: usize) -> bool {
        !self.flow(a, b).blocked && !self.flow(b, a).blocked
    }
}

/// What every task of the proxy shares.
struct Shared {
    n: usize,
    /// Bytes forwarded per flow, `from * n + to`.
    forwarded: Vec<AtomicU64>,
    /// Connection tasks alive.
    live: AtomicUsize,
}

/// The fault proxy. See the module documentation.
pub struct FaultProxy {
    n: usize,
    /// Listening address per flow, `from * n + to` (`None` on the diagonal).
    addrs: Vec<Option<SocketAddr>>,
    rules: watch::Sender<Rules>,
    shared: Arc<Shared>,
    listeners: Vec<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens for every ordered pair of the nodes whose real cluster ports
    /// are `cluster_ports` (node `j` listens on `127.0.0.1:cluster_ports[j]`).
    /// Must be called within a tokio runtime.
    pub async fn start(cluster_ports: Vec<u16>) -> io::Result<FaultProxy> {
        let n = cluster_ports.len();
        let (rules, _) = watch::channel(Rules {
            n,
            flows: vec![FlowRule::default(); n * n],
            resets: vec![0; n * n],
        });
        let shared = Arc::new(Shared {
            n,
            forwarded: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
            live: AtomicUsize::new(0),
        });
        let mut proxy = FaultProxy {
            n,
            addrs: vec![None; n * n],
            rules,
            shared,
            listeners: Vec::new(),
        };
        for from in 0..n {
            for (to, &port) in cluster_ports.iter().enumerate() {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
                let addr = listener.local_addr()?;
                proxy.addrs[from * n + to] = Some(addr);
                let upstream = SocketAddr::from(([127, 0, 0, 1], port));
                proxy.listeners.push(tokio::spawn(accept_loop(
                    listener,
                    from,
                    to,
                    upstream,
                    proxy.rules.subscribe(),
                    proxy.shared.clone(),
                )));
            }
        }
        Ok(proxy)
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.n
    }

    /// The address node `from` dials to reach node `to` (`None` if either is
    /// out of range or they are the same node).
    pub fn addr(&self, from: usize, to: usize) -> Option<SocketAddr> {
        self.index(from, to).and_then(|k| self.addrs[k])
    }

    /// The rule of the flow `from -> to` (the default one when out of range).
    pub fn rule(&self, from: usize, to: usize) -> FlowRule {
        self.index(from, to)
            .map(|k| self.rules.borrow().flows[k])
            .unwrap_or_default()
    }

    /// Bytes forwarded so far on the flow `from -> to`.
    pub fn forwarded(&self, from: usize, to: usize) -> u64 {
        self.index(from, to)
            .map_or(0, |k| self.shared.forwarded[k].load(Ordering::Relaxed))
    }

    /// Connections being served (tests: none left after a drop).
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// Nodes in different groups cannot talk (both directions blocked);
    /// nodes in the same group can. A node in no group is a group of its
    /// own. Replaces every flow's `blocked`; latencies and throttles stay.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let group_of = |node: usize| {
            groups
                .iter()
                .position(|g| g.contains(&node))
                .unwrap_or(usize::MAX - node)
        };
        self.rules.send_modify(|r| {
            for from in 0..r.n {
                for to in 0..r.n {
                    r.flows[from * r.n + to].blocked = from != to && group_of(from) != group_of(to);
                }
            }
        });
    }

    /// Blocks the flow `from -> to` only (the other direction is unchanged).
    pub fn block_one_way(&self, from: usize, to: usize) {
        self.set_blocked(from, to, true);
    }

    /// Blocks or unblocks the flow `from -> to`.
    pub fn set_blocked(&self, from: usize, to: usize, blocked: bool) {
        self.modify(from, to, |f| f.blocked = blocked);
    }

    /// Adds `latency` to every chunk of the flow `from -> to` (zero: none).
    pub fn set_latency(&self, from: usize, to: usize, latency: Duration) {
        self.modify(from, to, |f| f.latency = latency);
    }

    /// Forwards at most `bytes_per_sec` on the flow `from -> to` (0: unlimited).
    pub fn throttle(&self, from: usize, to: usize, bytes_per_sec: u64) {
        self.modify(from, to, |f| {
            f.bandwidth = (bytes_per_sec > 0).then_some(bytes_per_sec);
        });
    }

    /// Clears every rule: nothing blocked, no latency, no throttle.
    pub fn heal(&self) {
        self.rules
            .send_modify(|r| r.flows.fill(FlowRule::default()));
    }

    /// Closes every connection between `a` and `b` (either direction) with
    /// an RST to both ends. New connections are served as before.
    pub fn reset(&self, a: usize, b: usize) {
        if self.index(a, b).is_some() {
            self.rules
                .send_modify(|r| r.resets[a.min(b) * r.n + a.max(b)] += 1);
        }
    }

    fn index(&self, from: usize, to: usize) -> Option<usize> {
        (from < self.n && to < self.n && from != to).then_some(from * self.n + to)
    }

    fn modify(&self, from: usize, to: usize, f: impl FnOnce(&mut FlowRule)) {
        if let Some(k) = self.index(from, to) {
            self.rules.send_modify(|r| f(&mut r.flows[k]));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
        // Dropping `rules` closes the channel: every connection task ends.
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("nodes", &self.n)
            .field("live_connections", &self.live_connections())
            .finish()
    }
}

async fn accept_loop(
    listener: TcpListener,
    from: usize,
    to: usize,
    upstream: SocketAddr,
    mut rules: watch::Receiver<Rules>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.live.fetch_add(1, Ordering::Relaxed);
                    let (rules, shared) = (rules.clone(), shared.clone());
                    tokio::spawn(async move {
                        serve(client, from, to, upstream, rules, &shared).await;
                        shared.live.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                // Out of file descriptors and the like: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            closed = rules.changed() => if closed.is_err() { return },
        }
    }
}

/// One proxied connection from node `from` to node `to`, until both sides
/// closed, either failed, the pair is reset, or the proxy is dropped.
async fn serve(
    mut client: TcpStream,
    from: usize,
    to: usize,
    upstream: SocketAddr,
    mut rules: watch::Receiver<Rules>,
    shared: &Shared,
) {
    let epoch = rules.borrow().epoch(from, to);
    // Not connected onward while the pair is blocked; what the dialer
    // sends meanwhile is kept (up to BUFFER), and if it gives up, the node
    // never hears of it.
    let mut early = BytesMut::new();
    loop {
        {
            let r = rules.borrow_and_update();
            if r.epoch(from, to) != epoch {
                return abort(&client);
            }
            if r.open(from, to) {
                break;
            }
        }
        if early.len() >= BUFFER {
            if rules.changed().await.is_err() {
                return abort(&client);
            }
            continue;
        }
        let mut buf = [0u8; 4096];
        let room = (BUFFER - early.len()).min(buf.len());
        tokio::select! {
            read = client.read(&mut buf[..room]) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => early.extend_from_slice(&buf[..n]),
            },
            closed = rules.changed() => if closed.is_err() { return abort(&client) },
        }
    }
    let server = tokio::select! {
        s = timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)) => match s {
            Ok(Ok(s)) => s,
            // Like a refused connection: the dialer sees a reset.
            _ => return abort(&client),
        },
        () = reset_or_closed(rules.clone(), from, to, epoch) => return abort(&client),
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let clean = {
        let up = pump(
            &mut client_r,
            &mut server_w,
            early.freeze(),
            (from, to),
            rules.clone(),
            shared,
        );
        let down = pump(
            &mut server_r,
            &mut client_w,
            Bytes::new(),
            (to, from),
            rules.clone(),
            shared,
        );
        tokio::select! {
            done = async { tokio::try_join!(up, down) } => done.is_ok(),
            () = reset_or_closed(rules, from, to, epoch) => false,
        }
    };
    if !clean {
        // Both ends see an RST, as when a middlebox resets a connection.
        let _ = client_w.as_ref().set_zero_linger();
        let _ = server_w.as_ref().set_zero_linger();
    }
}

/// Closes `s` with an RST (dropping it closes the socket).
fn abort(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// Returns once the pair is reset after `epoch`, or the proxy is dropped.
async fn reset_or_closed(mut rules: watch::Receiver<Rules>, a: usize, b: usize, epoch: u64) {
    loop {
        if rules.borrow_and_update().epoch(a, b) != epoch {
            return;
        }
        if rules.changed().await.is_err() {
            return;
        }
    }
}

/// Forwards one direction (`flow = (from, to)`): a reader filling a bounded
/// queue of chunks, a writer applying the flow's rule to each. Ends `Ok`
/// once the source's EOF has been passed on (write side shut down).
async fn pump(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    first: Bytes,
    flow: (usize, usize),
    mut rules: watch::Receiver<Rules>,
    shared: &Shared,
) -> io::Result<()> {
    let (tx, mut queue) = mpsc::channel::<(Instant, Bytes)>(BUFFER / CHUNK);
    let counter = &shared.forwarded[flow.0 * shared.n + flow.1];
    let read = async move {
        if !first.is_empty() && tx.send((Instant::now(), first)).await.is_err() {
            return Ok(());
        }
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            if src.read_buf(&mut buf).await? == 0 {
                return Ok::<(), io::Error>(()); // `tx` dropped: EOF for the writer
            }
            if tx.send((Instant::now(), buf.freeze())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        // When the next byte may go under a throttle.
        let mut pace = Instant::now();
        while let Some((arrived, mut data)) = queue.recv().await {
            while !data.is_empty() {
                let rule = ready(&mut rules, flow, arrived, pace).await?;
                let piece = match rule.bandwidth {
                    // Pieces of 1/20 s, so a throttle is smooth.
                    Some(bw) => data
                        .len()
                        .min(usize::try_from(bw / 20).unwrap_or(CHUNK).max(1)),
                    None => data.len(),
                };
                let part = data.split_to(piece);
                dst.write_all(&part).await?;
                counter.fetch_add(part.len() as u64, Ordering::Relaxed);
                if let Some(bw) = rule.bandwidth {
                    pace = pace.max(Instant::now())
                        + Duration::from_secs_f64(part.len() as f64 / bw as f64);
                }
            }
        }
        dst.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// Waits until a chunk read at `arrived` may be written on `flow`: the flow
/// is not blocked, its latency has passed and, under a throttle, `pace`
/// has come. The rule then in force; an error once the proxy is dropped.
async fn ready(
    rules: &mut watch::Receiver<Rules>,
    (from, to): (usize, usize),
    arrived: Instant,
    pace: Instant,
) -> io::Result<FlowRule> {
    let closed = |_| io::Error::new(io::ErrorKind::ConnectionAborted, "fault proxy dropped");
    loop {
        let rule = rules.borrow_and_update().flow(from, to);
        if rule.blocked {
            rules.changed().await.map_err(closed)?;
            continue;
        }
        let mut due = arrived + rule.latency;
        if rule.bandwidth.is_some() {
            due = due.max(pace);
        }
        if due <= Instant::now() {
            return Ok(rule);
        }
        tokio::select! {
            () = sleep_until(due) => {}
            changed = rules.changed() => changed.map_err(closed)?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; its port.
    async fn echo_server() -> u16 {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    /// A proxy in front of two echo servers (nodes 0 and 1).
    async fn setup() -> FaultProxy {
        let ports = vec![echo_server().await, echo_server().await];
        FaultProxy::start(ports).await.unwrap()
    }

    async fn read_exact_within(s: &mut TcpStream, n: usize, limit: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        match timeout(limit, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[tokio::test]
    async fn forwards_both_ways_and_counts_bytes() {
        let p = setup().await;
        let mut s = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let got = read_exact_within(&mut s, 5, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"hello"[..]));
        assert_eq!(p.forwarded(0, 1), 5);
        assert_eq!(p.forwarded(1, 0), 5);
        assert_eq!(p.forwarded(1, 2), 0, "out of range");
        assert!(p.addr(0, 0).is_none() && p.addr(0, 7).is_none());
    }

    #[tokio::test]
    async fn a_blocked_flow_stalls_then_resumes_without_loss_or_reordering() {
        let p = setup().await;
        let mut s = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        s.write_all(b"warm").await.unwrap();
        read_exact_within(&mut s, 4, Duration::from_secs(5))
            .await
            .unwrap();

        p.partition(&[vec![0], vec![1]]);
        // More than the proxy buffers: the writer finishes (kernel buffers
        // take the rest) but nothing comes back while blocked.
        let data = pattern(300 * 1024, 7);
        let (mut r, mut w) = s.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w
        });
        let mut probe = [0u8; 1];
        assert!(
            timeout(Duration::from_millis(500), r.read(&mut probe))
                .await
                .is_err(),
            "nothing passes a blocked flow"
        );
        let stalled = p.forwarded(0, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(p.forwarded(0, 1), stalled, "stalled");
        assert!(p.rule(0, 1).blocked && p.rule(1, 0).blocked);

        p.heal();
        let mut got = vec![0u8; data.len()];
        timeout(Duration::from_secs(10), r.read_exact(&mut got))
            .await
            .expect("resumed")
            .unwrap();
        assert!(got == data, "every byte, in order");
        let _w = writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_new_connection_is_not_connected_while_blocked_and_dropped_if_abandoned() {
        let p = setup().await;
        p.block_one_way(1, 0); // the answer direction only: no handshake either
        let mut s = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        s.write_all(b"syn").await.unwrap();
        assert!(read_exact_within(&mut s, 3, Duration::from_millis(400))
            .await
            .is_none());
        assert_eq!(p.forwarded(0, 1), 0, "not connected onward");
        // An abandoned attempt never reaches the node.
        let mut gave_up = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        gave_up.write_all(b"lost").await.unwrap();
        drop(gave_up);
        tokio::time::sleep(Duration::from_millis(100)).await;

        p.set_blocked(1, 0, false);
        let got = read_exact_within(&mut s, 3, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"syn"[..]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(p.forwarded(0, 1), 3, "the abandoned bytes were not sent");
    }

    #[tokio::test]
    async fn one_way_block_stops_only_that_direction() {
        let p = setup().await;
        let mut s = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        s.write_all(b"a").await.unwrap();
        read_exact_within(&mut s, 1, Duration::from_secs(5))
            .await
            .unwrap();
        p.block_one_way(1, 0);
        s.write_all(b"bc").await.unwrap();
        assert!(read_exact_within(&mut s, 2, Duration::from_millis(400))
            .await
            .is_none());
        // The request direction still flows: the echo server got the bytes.
        assert_eq!(p.forwarded(0, 1), 3);
        assert_eq!(p.forwarded(1, 0), 1);
        p.heal();
        let got = read_exact_within(&mut s, 2, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"bc"[..]));
    }

    #[tokio::test]
    async fn latency_delays_each_chunk_and_keeps_order() {
        let p = setup().await;
        p.set_latency(0, 1, Duration::from_millis(150));
        p.set_latency(1, 0, Duration::from_millis(150));
        let mut s = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        let t0 = Instant::now();
        for i in 0..20u8 {
            s.write_all(&[i]).await.unwrap();
        }
        let got = read_exact_within(&mut s, 20, Duration::from_secs(5))
            .await
            .unwrap();
        let took = t0.elapsed();
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn throttle_bounds_the_rate() {
        let p = setup().await;
        p.throttle(0, 1, 40_000);
        let mut s = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        let data = pattern(40_000, 3);
        let t0 = Instant::now();
        s.write_all(&data).await.unwrap();
        let got = read_exact_within(&mut s, data.len(), Duration::from_secs(10))
            .await
            .unwrap();
        let took = t0.elapsed();
        assert!(got == data);
        // 40 kB at 40 kB/s: about a second (the first piece goes at once).
        assert!(took >= Duration::from_millis(800), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        p.throttle(0, 1, 0);
        assert_eq!(p.rule(0, 1), FlowRule::default());
    }

    #[tokio::test]
    async fn reset_closes_existing_connections_and_allows_new_ones() {
        let p = setup().await;
        let mut s = TcpStream::connect(p.addr(1, 0).unwrap()).await.unwrap();
        s.write_all(b"x").await.unwrap();
        read_exact_within(&mut s, 1, Duration::from_secs(5))
            .await
            .unwrap();
        p.reset(0, 1);
        let mut buf = [0u8; 8];
        let r = timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed promptly");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        let mut again = TcpStream::connect(p.addr(0, 1).unwrap()).await.unwrap();
        again.write_all(b"y").await.unwrap();
        let got = read_exact_within(&mut again, 1, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"y"[..]));
    }

    #[tokio::test]
    async fn dropping_the_proxy_ends_its_connections_and_listeners() {
        let p = setup().await;
        let addr = p.addr(0, 1).unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut pending = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"x").await.unwrap();
        read_exact_within(&mut s, 1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p.live_connections(), 2);
        p.partition(&[vec![0], vec![1]]);
        let shared = p.shared.clone();
        drop(p);
        for c in [&mut s, &mut pending] {
            let mut buf = [0u8; 8];
            let r = timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("closed promptly");
            assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        }
        let t0 = Instant::now();
        while shared.live.load(Ordering::Relaxed) > 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "tasks left");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "listener closed");
    }
}
