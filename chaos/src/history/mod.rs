//! Recording load clients and the history checker of the chaos harness.
//!
//! [`Load::start`] runs publishers and subscribers against a set of broker
//! nodes while the harness injects faults; every message sent, every
//! acknowledgement and every delivery goes into a [`History`] with its
//! time; [`check`] then proves that no *acknowledged* QoS 1/2 message was
//! lost and no QoS 2 message delivered twice, and counts the rest
//! ([`Verdict`]).
//!
//! - Topics are `chaos/<run_id>/<publisher index>`; client ids
//!   `chaos-<run_id>-p<i>` and `chaos-<run_id>-s<j>`. Payloads are the
//!   bench stamp ([`crate::bench::payload`]: publisher, seq, send time),
//!   padded to `payload` bytes (at least its 20-byte header).
//! - Every client speaks MQTT 5 with a persistent session (Session Expiry
//!   one day, clean start only on its first connection), reconnects when
//!   its connection breaks or goes silent ([`conn`]), trying its own node
//!   first, then the next ones in order, with a 100 ms .. 1 s backoff,
//!   and resumes its session as MQTT requires (resends with DUP and the
//!   original packet ids, PUBREL for received QoS 2 messages). At the end
//!   every client disconnects with Session Expiry 0, so the broker forgets
//!   its session.
//! - Publishers are described in [`publisher`], subscribers in
//!   [`subscriber`], the recorder and its memory cap in [`record`]
//!   ([`MAX_RECORDS`]), the checker in `check.rs` ([`check()`]).
//!
//! Every wait is bounded; nothing panics on what a broker sends.
//!
//! Timing, for the scenario code:
//! - `start` takes milliseconds on a healthy cluster (bounds: 10 s per
//!   client to reach its node, 5 s for the SUBACKs, 10 s for the route
//!   probes);
//! - [`Load::stop_publishing`] returns once every publisher has the
//!   acknowledgements of its in-flight messages: milliseconds normally, at
//!   most [`DRAIN_TIMEOUT`] + 3 s (13 s) when a node does not answer;
//! - [`Load::finish`] returns as soon as everything acknowledged arrived
//!   (milliseconds when nothing is missing); otherwise after `quiet`
//!   without deliveries, or at `limit` (which includes the publishers'
//!   drain); closing the subscribers adds milliseconds (at most 4 s);
//! - a connection that goes silent (SIGSTOP, packets dropped) is given up
//!   5 to 5.25 s after its last packet ([`conn::PING_AFTER`] +
//!   [`conn::DEAD_AFTER`]); a connect attempt to a silent node after
//!   [`conn::CONNECT_TIMEOUT`] (8 s).
//!
//! Broker settings that matter: a subscriber's queue is bounded by the
//! broker (roost: `mqtt.max_mqueue_len`, 1000 by default, QoS 0 included
//! with `mqueue_store_qos0`); messages past it are dropped by design but
//! were acknowledged to the publisher, so the checker reports them lost.
//! Size it above (all publishers' rate) x (longest time a subscriber can
//! be away or stalled) when checking delivery across faults.

mod check;
pub mod conn;
pub mod publisher;
pub mod record;
pub mod subscriber;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytestring::ByteString;
pub use roost_protocol::packet::QoS;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use check::{check, duplicate_deliveries, lost_stretches, QosStats, Verdict};
pub use publisher::DRAIN_TIMEOUT;
pub use record::{
    Delivery, Event, FinishEnd, History, MessageRecord, PublisherHistory, SubscriberHistory,
    MAX_RECORDS,
};

use conn::{Dialer, CLOSE_WAIT, WRITE_TIMEOUT};
use publisher::Publisher;
use record::{lock, Recorder};
use subscriber::Subscriber;

/// How long `start` keeps trying to reach a client's node.
const START_CONNECT: Duration = Duration::from_secs(10);
/// How long `start` waits for the SUBACKs.
const START_SUBACK: Duration = Duration::from_secs(5);
/// How long `start` waits for every subscriber to see every publisher's
/// route probe.
const START_ROUTES: Duration = Duration::from_secs(10);
/// Between two route probes of the same publisher.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How often `finish` looks at what arrived.
const POLL: Duration = Duration::from_millis(20);
/// How long a task may take to end once told to stop, beyond its own drain.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What load to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Distinguishes runs: topics are `chaos/<run_id>/<publisher index>`;
    /// client ids `chaos-<run_id>-p<i>` / `-s<j>`. One topic level: no `/`,
    /// `+`, `#`.
    pub run_id: String,
    /// MQTT address of every node, by node index (stable across node restarts).
    pub nodes: Vec<SocketAddr>,
    /// One entry per publisher: (index of the node it connects to first,
    /// QoS of its messages).
    pub publishers: Vec<(usize, QoS)>,
    /// One entry per subscriber: the index of the node it connects to first.
    pub subscribers: Vec<usize>,
    /// Messages per second per publisher.
    pub rate: f64,
    /// Payload bytes; raised to the 20-byte header if smaller.
    pub payload: usize,
}

/// Counters of a running load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// New messages written to a socket (resends not counted).
    pub sent: u64,
    /// Messages acknowledged (QoS 0: written).
    pub acked: u64,
    /// Load messages received by subscribers, duplicates included.
    pub delivered: u64,
    /// Successful reconnections, all clients.
    pub reconnects: u64,
    pub publishers_connected: usize,
    pub subscribers_connected: usize,
}

/// A running load: publishers and subscribers recording into one history.
/// Dropping it without [`Load::finish`] aborts every client.
pub struct Load {
    rec: Arc<Recorder>,
    run_id: String,
    stop_pubs: watch::Sender<bool>,
    stop_subs: watch::Sender<bool>,
    pub_tasks: Mutex<Vec<JoinHandle<()>>>,
    sub_tasks: Vec<JoinHandle<()>>,
    publishing_stopped: Mutex<Option<Instant>>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_pubs.send_replace(true);
        self.stop_subs.send_replace(true);
        for t in lock(&self.pub_tasks).drain(..) {
            t.abort();
        }
        for t in self.sub_tasks.drain(..) {
            t.abort();
        }
    }
}

fn validate(spec: &LoadSpec) -> Result<()> {
    if spec.run_id.is_empty() || spec.run_id.contains(['/', '+', '#']) {
        bail!("run_id {:?} must be one non-empty topic level", spec.run_id);
    }
    if spec.nodes.is_empty() {
        bail!("no nodes");
    }
    let n = spec.nodes.len();
    if let Some((i, _)) = spec.publishers.iter().find(|(node, _)| *node >= n) {
        bail!("publisher node index {i} out of range (nodes: {n})");
    }
    if let Some(i) = spec.subscribers.iter().find(|&&node| node >= n) {
        bail!("subscriber node index {i} out of range (nodes: {n})");
    }
    if !(spec.rate.is_finite() && spec.rate > 0.0)
        || Duration::try_from_secs_f64(1.0 / spec.rate).is_err()
    {
        bail!("rate must be a positive number of messages per second");
    }
    if u32::try_from(spec.publishers.len()).is_err() {
        bail!("too many publishers");
    }
    Ok(())
}

impl Load {
    /// Connects and subscribes every subscriber (persistent MQTT 5
    /// sessions: clean start on the first connection only, session expiry
    /// one day, `chaos/<run_id>/#` at QoS 2), connects every publisher,
    /// waits until a probe from each publisher reached each subscriber (so
    /// routes between nodes are in place), then starts publishing.
    /// Initial connections go to the client's own node only. Err if a
    /// connection, a subscription or the route probes fail.
    pub async fn start(spec: LoadSpec) -> Result<Load> {
        validate(&spec)?;
        let qos: Vec<QoS> = spec.publishers.iter().map(|&(_, q)| q).collect();
        let rec = Arc::new(Recorder::new(&qos, spec.subscribers.len()));
        let prefix = format!("chaos/{}/", spec.run_id);
        let (stop_pubs, _) = watch::channel(false);
        let (stop_subs, _) = watch::channel(false);
        let mut load = Load {
            rec: rec.clone(),
            run_id: spec.run_id.clone(),
            stop_pubs,
            stop_subs,
            pub_tasks: Mutex::new(Vec::new()),
            sub_tasks: Vec::new(),
            publishing_stopped: Mutex::new(None),
        };
        let result = load.start_clients(&spec, &prefix).await;
        match result {
            Ok(()) => Ok(load),
            Err(e) => {
                // Let the subscribers end their sessions, briefly.
                load.stop_subs.send_replace(true);
                let tasks = std::mem::take(&mut load.sub_tasks);
                join_all(tasks, tokio::time::Instant::now() + CLOSE_WAIT).await;
                Err(e)
            }
        }
    }

    async fn start_clients(&mut self, spec: &LoadSpec, prefix: &str) -> Result<()> {
        let dialer = |kind: char, i: usize, home: usize| Dialer {
            nodes: spec.nodes.clone(),
            home,
            client_id: format!("chaos-{}-{kind}{i}", spec.run_id),
        };
        // Subscribers first: each connects, then its task subscribes.
        let mut connecting = Vec::new();
        for (j, &home) in spec.subscribers.iter().enumerate() {
            let d = dialer('s', j, home);
            connecting.push(tokio::spawn(async move {
                let c = d.connect_home(START_CONNECT).await;
                (d, c)
            }));
        }
        let mut ready = Vec::new();
        for (j, task) in connecting.into_iter().enumerate() {
            let (d, client) = task.await.context("connect task")?;
            let client = client?;
            let node = d.home;
            self.rec
                .sub_connected(j, format!("connected to node {node} (new session)"), false);
            let (tx, rx) = oneshot::channel();
            let sub = Subscriber {
                rec: self.rec.clone(),
                index: j,
                prefix: prefix.to_string(),
                dialer: d,
                stop: self.stop_subs.subscribe(),
                ready: Some(tx),
            };
            self.sub_tasks.push(tokio::spawn(sub.run(client)));
            ready.push(rx);
        }
        let deadline = tokio::time::Instant::now() + START_SUBACK;
        for (j, rx) in ready.into_iter().enumerate() {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(_granted))) => {}
                Ok(Ok(Err(e))) => bail!("subscriber {j}: {e}"),
                Ok(Err(_)) => bail!("subscriber {j} ended before its SUBACK"),
                Err(_) => bail!("subscriber {j}: no SUBACK within {START_SUBACK:?}"),
            }
        }

        // Publishers: connect, probe the routes, then run.
        let mut connecting = Vec::new();
        for (i, &(home, _)) in spec.publishers.iter().enumerate() {
            let d = dialer('p', i, home);
            connecting.push(tokio::spawn(async move {
                let c = d.connect_home(START_CONNECT).await;
                (d, c)
            }));
        }
        let mut clients = Vec::new();
        for task in connecting {
            let (d, client) = task.await.context("connect task")?;
            clients.push((d, client?));
        }
        for (i, (d, _)) in clients.iter().enumerate() {
            let what = format!("connected to node {} (new session)", d.home);
            self.rec.pub_connected(i, what, false);
        }
        self.probe_routes(&mut clients, prefix).await?;

        let interval = Duration::from_secs_f64(1.0 / spec.rate);
        let mut tasks = lock(&self.pub_tasks);
        for (i, (d, client)) in clients.into_iter().enumerate() {
            let p = Publisher {
                rec: self.rec.clone(),
                index: i,
                qos: spec.publishers[i].1,
                topic: ByteString::from(format!("{prefix}{i}")),
                payload: spec.payload,
                interval,
                dialer: d,
                stop: self.stop_pubs.subscribe(),
            };
            tasks.push(tokio::spawn(p.run(client)));
        }
        Ok(())
    }

    /// Publishes QoS 0 probes on `chaos/<run_id>/probe/<i>` until every
    /// subscriber has seen one from every publisher.
    async fn probe_routes(
        &self,
        clients: &mut [(Dialer, crate::client::Client)],
        prefix: &str,
    ) -> Result<()> {
        if self.rec.subs.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + START_ROUTES;
        let mut next_probe = vec![tokio::time::Instant::now(); clients.len()];
        loop {
            let mut waiting = 0;
            for (i, (_, client)) in clients.iter_mut().enumerate() {
                if self.rec.probed_by_all(i) {
                    continue;
                }
                waiting += 1;
                let now = tokio::time::Instant::now();
                if now < next_probe[i] {
                    continue;
                }
                next_probe[i] = now + PROBE_EVERY;
                let topic = ByteString::from(format!("{prefix}probe/{i}"));
                let probe = crate::client::publish(&topic, QoS::AtMostOnce, 0, "probe".into());
                client.writer.queue_publish(&probe)?;
                tokio::time::timeout(WRITE_TIMEOUT, client.writer.flush())
                    .await
                    .map_err(|_| anyhow!("publisher {i}: probe write blocked"))?
                    .with_context(|| format!("publisher {i}: probe"))?;
            }
            if waiting == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let missing: Vec<String> = (0..clients.len())
                    .filter(|&i| !self.rec.probed_by_all(i))
                    .map(|i| format!("p{i}"))
                    .collect();
                bail!(
                    "routes did not settle within {START_ROUTES:?}: probes of {} did not reach every subscriber",
                    missing.join(", ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops sending new messages: every publisher waits for the
    /// acknowledgements of its in-flight messages (reconnecting if need
    /// be) for at most [`DRAIN_TIMEOUT`], then disconnects. Returns when
    /// they all did. Calling it again returns at once.
    pub async fn stop_publishing(&self) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT + STOP_GRACE;
        self.stop_publishers(deadline).await;
    }

    async fn stop_publishers(&self, deadline: tokio::time::Instant) {
        lock(&self.publishing_stopped).get_or_insert_with(Instant::now);
        self.stop_pubs.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.pub_tasks));
        join_all(tasks, deadline).await;
    }

    /// Counters so far.
    pub fn progress(&self) -> Progress {
        let r = &self.rec;
        Progress {
            sent: r.sent.load(Ordering::Relaxed),
            acked: r.acked.load(Ordering::Relaxed),
            delivered: r.delivered.load(Ordering::Relaxed),
            reconnects: r.reconnects.load(Ordering::Relaxed),
            publishers_connected: r
                .pubs
                .iter()
                .filter(|p| p.connected.load(Ordering::Relaxed))
                .count(),
            subscribers_connected: r
                .subs
                .iter()
                .filter(|s| s.connected.load(Ordering::Relaxed))
                .count(),
        }
    }

    /// Stops publishing (if not done yet), then waits until every
    /// acknowledged QoS 1/2 message reached every subscriber, or nothing
    /// new arrived for `quiet` (counted from the end of publishing at the
    /// earliest), or `limit` (counted from this call, the publishers' drain
    /// included) passed; then disconnects every subscriber and returns the
    /// history. Takes at most `limit` plus about a second.
    pub async fn finish(mut self, quiet: Duration, limit: Duration) -> History {
        let begun = tokio::time::Instant::now();
        let deadline = begun + limit;
        let drain_end = begun + DRAIN_TIMEOUT + STOP_GRACE;
        self.stop_publishers(deadline.min(drain_end)).await;
        let published = Instant::now();

        // Per subscriber: the acknowledged QoS 1/2 messages it still lacks.
        let acked: Vec<(usize, u64)> = self
            .rec
            .pubs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                let log = lock(&p.log);
                log.messages
                    .iter()
                    .filter(|m| m.qos != QoS::AtMostOnce && m.acked_at.is_some())
                    .map(|m| (i, m.seq))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut missing: Vec<Vec<(usize, u64)>> = vec![acked; self.rec.subs.len()];
        let end = loop {
            for (s, list) in missing.iter_mut().enumerate() {
                if !list.is_empty() {
                    let log = lock(&self.rec.subs[s].log);
                    list.retain(|&(p, seq)| !log.seen[p].contains(seq));
                }
            }
            if missing.iter().all(Vec::is_empty) {
                break FinishEnd::AllDelivered;
            }
            let last = self
                .rec
                .last_delivery()
                .map_or(published, |t| t.max(published));
            if last.elapsed() >= quiet {
                break FinishEnd::Quiet;
            }
            if tokio::time::Instant::now() >= deadline {
                break FinishEnd::Limit;
            }
            tokio::time::sleep(POLL).await;
        };

        self.stop_subs.send_replace(true);
        let tasks = std::mem::take(&mut self.sub_tasks);
        join_all(tasks, tokio::time::Instant::now() + CLOSE_WAIT + STOP_GRACE).await;
        let stopped = *lock(&self.publishing_stopped);
        self.rec
            .take(std::mem::take(&mut self.run_id), stopped, end)
    }
}

/// Waits for `tasks` until `deadline`, then aborts those still running.
async fn join_all(tasks: Vec<JoinHandle<()>>, deadline: tokio::time::Instant) {
    for mut t in tasks {
        if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
            t.abort();
        }
    }
}
