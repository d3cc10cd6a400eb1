//! The `backlog` scenario: an offline persistent session accumulates a large
//! queue, then its client comes back and drains it. It measures what such a
//! backlog costs the broker in memory (RSS before, during and after) and on
//! disk, and checks that every acknowledged message arrives exactly once and
//! in order.
//!
//! Phases:
//! 1. the subscriber connects with clean start false and a session expiry
//!    (3.1.1: clean session 0), subscribes to one topic at QoS 1 and
//!    disconnects: its session stays on the broker, offline;
//! 2. the publishers (clean sessions) send their share of the messages at
//!    QoS 1, each within a window of unacknowledged messages ([`publish`]),
//!    while the broker's RSS is sampled every `sample_every`;
//! 3. a pause (`settle`), then the subscriber reconnects (clean start
//!    false), must find its session, and receives and acknowledges the
//!    whole backlog ([`drain`]);
//! 4. the session is ended (a clean-start connection), best effort.
//!
//! Payloads are numbered (publisher, sequence: the [`super::payload`]
//! header) and the rest of each payload is pseudo-random bytes derived
//! from that number ([`filler`]): incompressible, like most real payloads
//! (RocksDB compresses its files with LZ4; zero padding would make the
//! on-disk figure meaningless), and checked byte for byte on delivery.
//!
//! Invariants:
//! - every wait on the broker is bounded: connects by `connect_timeout`,
//!   every PUBACK and every next delivery by `ack_timeout`, the whole run
//!   by `time_limit`;
//! - a failure (a refused, lost, duplicated, reordered or corrupted
//!   message, a missing PUBACK, a stalled drain, a lost session) is listed
//!   in [`BacklogReport::failures`], and the caller exits non-zero on any.

pub mod drain;
pub mod filler;
pub mod publish;
pub mod report;
pub mod sampler;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytestring::ByteString;
use roost_protocol::packet::{ProtocolVersion, QoS};
use tokio::time::Instant;

use super::load::CLOSE_WAIT;
use super::payload::HEADER_LEN;
use crate::client::{Client, ConnectOptions};
pub use report::BacklogReport;
use report::{BacklogParams, DataDirStats, RssStats};
use sampler::Sampler;

/// How often progress is printed on stderr during the long phases.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Everything the scenario needs.
#[derive(Debug, Clone)]
pub struct BacklogConfig {
    pub host: String,
    pub port: u16,
    /// The broker's pid: RSS figures.
    pub broker_pid: Option<u32>,
    /// The broker's data dir: its size on disk.
    pub data_dir: Option<PathBuf>,
    /// Messages in the backlog.
    pub messages: u64,
    /// Payload bytes of each (at least the 20-byte header).
    pub payload: usize,
    pub publishers: usize,
    /// Unacknowledged messages per publisher.
    pub window: usize,
    pub version: ProtocolVersion,
    /// 5.0 Session Expiry Interval of the subscriber, seconds.
    pub session_expiry: u32,
    pub connect_timeout: Duration,
    /// Longest wait for a PUBACK, or for the next delivery of the drain.
    pub ack_timeout: Duration,
    /// Bound on the whole run.
    pub time_limit: Duration,
    /// Pause after publishing (and after draining) before the next reading.
    pub settle: Duration,
    /// RSS sampling period.
    pub sample_every: Duration,
    /// Print progress lines on stderr.
    pub progress: bool,
    pub label: Option<String>,
}

impl BacklogConfig {
    fn options(&self, client_id: &str, clean_start: bool) -> ConnectOptions {
        let v5 = self.version == ProtocolVersion::V5;
        ConnectOptions {
            host: self.host.clone(),
            port: self.port,
            client_id: client_id.to_string(),
            version: self.version,
            // Clients never ping: keep alive longer than any run.
            keep_alive: u16::MAX,
            clean_start,
            timeout: self.connect_timeout,
            send_buffer: None,
            session_expiry: (v5 && !clean_start).then_some(self.session_expiry),
        }
    }

    /// Messages of publisher `i`: an even share, the remainder to the first.
    pub fn share(&self, i: usize) -> u64 {
        let n = self.publishers.max(1) as u64;
        self.messages / n + u64::from((i as u64) < self.messages % n)
    }
}

/// Messages of `payload` bytes that make at least `bytes` bytes.
pub fn messages_for_bytes(bytes: u64, payload: usize) -> u64 {
    let p = payload.max(HEADER_LEN) as u64;
    bytes.div_ceil(p)
}

/// Runs the scenario within `cfg.time_limit`. `Err` only when it could not
/// run at all (bad input, broker unreachable, time limit); what went wrong
/// with the messages is in the report's `failures`.
pub async fn run(cfg: &BacklogConfig) -> Result<BacklogReport> {
    if cfg.messages == 0 || cfg.publishers == 0 || cfg.window == 0 {
        bail!("backlog: messages, publishers and window must all be at least 1");
    }
    if cfg.payload < HEADER_LEN {
        bail!("backlog: --payload must be at least {HEADER_LEN} bytes");
    }
    let limit = cfg.time_limit;
    tokio::time::timeout(limit, phases(cfg))
        .await
        .map_err(|_| anyhow!("backlog: time limit of {limit:?} exceeded (--time-limit)"))?
}

async fn phases(cfg: &BacklogConfig) -> Result<BacklogReport> {
    let tag = std::process::id();
    let sub_id = format!("roost-bench-{tag}-backlog-sub");
    let topic = ByteString::from(format!("bench/backlog/{tag}"));
    let mut report = BacklogReport::new(params(cfg, &sub_id, &topic));
    report.label.clone_from(&cfg.label);
    let sampler = cfg
        .broker_pid
        .map(|pid| Sampler::start(pid, cfg.sample_every));

    // 1. The persistent subscriber, then offline.
    let mut sub = Client::connect(&cfg.options(&sub_id, false))
        .await
        .context("subscriber connect")?;
    if sub.session_present {
        bail!("backlog: the broker already has a session for {sub_id}; its old queue would be mixed into the count");
    }
    let granted = sub
        .subscribe(&topic, QoS::AtLeastOnce, cfg.connect_timeout)
        .await
        .context("subscriber subscribe")?;
    if granted != QoS::AtLeastOnce {
        bail!("backlog: the broker granted {granted:?} instead of QoS 1 for {topic}");
    }
    sub.disconnect(CLOSE_WAIT).await;

    // 2. Publish the backlog.
    let pubs = connect_publishers(cfg).await?;
    tokio::time::sleep(cfg.settle).await;
    let mut rss = RssStats {
        idle: read_rss(cfg)?,
        ..RssStats::default()
    };
    let mut disk = DataDirStats {
        idle: dir_size(cfg.data_dir.as_deref()),
        ..DataDirStats::default()
    };
    if let Some(s) = &sampler {
        s.phase("publish");
    }
    let started = Instant::now();
    let running = publish::start(cfg, &topic, pubs);
    let progress = progress_task(cfg, "publish", running.counters.clone(), sampler.clone());
    let published = running.finish().await;
    progress.abort();
    let publish_s = started.elapsed().as_secs_f64();
    rss.publish_end = read_rss(cfg)?;
    rss.publish_peak = sampler.as_ref().map(|s| s.take_peak());
    disk.after_publish = dir_size(cfg.data_dir.as_deref());
    report.set_publish(cfg, &published, publish_s);
    if !report.failures.is_empty() {
        report.rss = rss;
        report.data_dir = disk;
        finish_timeline(&mut report, sampler).await;
        return Ok(report);
    }

    // 3. Reconnect and drain.
    if let Some(s) = &sampler {
        s.phase("settle");
    }
    tokio::time::sleep(cfg.settle).await;
    rss.before_drain = read_rss(cfg)?;
    if let Some(s) = &sampler {
        s.take_peak();
        s.phase("drain");
    }
    let expected = published.accepted_total();
    let sub = Client::connect(&cfg.options(&sub_id, false))
        .await
        .context("subscriber reconnect")?;
    if !sub.session_present {
        report.failures.push(format!(
            "the subscriber's session was not found on reconnect (CONNACK session present = 0): \
             the backlog of {expected} messages is gone"
        ));
    }
    let counters = Arc::new(publish::Counters::default());
    let progress = progress_task(cfg, "drain", counters.clone(), sampler.clone());
    let drained = drain::run(cfg, sub, &published, counters).await;
    progress.abort();
    rss.drain_end = read_rss(cfg)?;
    rss.drain_peak = sampler.as_ref().map(|s| s.take_peak());
    if let Some(s) = &sampler {
        s.phase("after");
    }
    tokio::time::sleep(cfg.settle).await;
    rss.after_drain = read_rss(cfg)?;
    disk.after_drain = dir_size(cfg.data_dir.as_deref());
    report.set_drain(&drained, expected);
    report.rss = rss;
    report.data_dir = disk;

    // 4. End the session (best effort: the figures are taken).
    if let Ok(c) = Client::connect(&cfg.options(&sub_id, true)).await {
        c.disconnect(CLOSE_WAIT).await;
    }
    finish_timeline(&mut report, sampler).await;
    Ok(report)
}

async fn connect_publishers(cfg: &BacklogConfig) -> Result<Vec<Client>> {
    let tag = std::process::id();
    let mut out = Vec::with_capacity(cfg.publishers);
    for i in 0..cfg.publishers {
        let id = format!("roost-bench-{tag}-backlog-pub{i}");
        let c = Client::connect(&cfg.options(&id, true))
            .await
            .with_context(|| format!("publisher {i} connect"))?;
        out.push(c);
    }
    Ok(out)
}

fn read_rss(cfg: &BacklogConfig) -> Result<Option<u64>> {
    cfg.broker_pid
        .map(|pid| crate::procstat::sample(pid).map(|s| s.rss_bytes))
        .transpose()
        .context("broker RSS (did the broker exit?)")
}

async fn finish_timeline(report: &mut BacklogReport, sampler: Option<Sampler>) {
    if let Some(s) = sampler {
        let (timeline, error) = s.stop().await;
        report.rss_timeline = timeline;
        if let Some(e) = error {
            report.failures.push(format!("sampling broker RSS: {e}"));
        }
    }
}

/// Prints `phase: N messages, RSS` every [`PROGRESS_EVERY`] until aborted.
fn progress_task(
    cfg: &BacklogConfig,
    phase: &'static str,
    counters: Arc<publish::Counters>,
    sampler: Option<Sampler>,
) -> tokio::task::JoinHandle<()> {
    let (total, on) = (cfg.messages, cfg.progress);
    tokio::spawn(async move {
        if !on {
            return;
        }
        let started = Instant::now();
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let done = counters.acked.load(Ordering::Relaxed);
            let rss = sampler
                .as_ref()
                .map(|s| format!(", broker RSS {:.1} MiB", report::mib(s.last())))
                .unwrap_or_default();
            eprintln!(
                "  {phase}: {done}/{total} after {:.0}s{rss}",
                started.elapsed().as_secs_f64()
            );
        }
    })
}

/// Bytes of every file under `dir` (files that vanish meanwhile, as RocksDB
/// compacts, are skipped). `None` without a dir or when it cannot be read.
pub fn dir_size(dir: Option<&Path>) -> Option<u64> {
    fn walk(dir: &Path) -> std::io::Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                total += walk(&entry.path())?;
            } else {
                total += meta.len();
            }
        }
        Ok(total)
    }
    walk(dir?).ok()
}

fn params(cfg: &BacklogConfig, client_id: &str, topic: &str) -> BacklogParams {
    BacklogParams {
        messages: cfg.messages,
        payload: cfg.payload,
        bytes: cfg.messages * cfg.payload as u64,
        publishers: cfg.publishers,
        window: cfg.window,
        mqtt_version: cfg.version.level(),
        session_expiry_s: cfg.session_expiry,
        client_id: client_id.to_string(),
        topic: topic.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cover_the_bytes() {
        assert_eq!(messages_for_bytes(1 << 30, 1024), 1 << 20);
        assert_eq!(messages_for_bytes(1_000_000_000, 1024), 976_563);
        assert_eq!(messages_for_bytes(10, 1024), 1);
        assert_eq!(messages_for_bytes(100, 4), 5, "raised to the header");
    }

    #[test]
    fn shares_add_up() {
        let cfg = BacklogConfig {
            host: String::new(),
            port: 0,
            broker_pid: None,
            data_dir: None,
            messages: 10,
            payload: 64,
            publishers: 3,
            window: 1,
            version: ProtocolVersion::V5,
            session_expiry: 1,
            connect_timeout: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(1),
            time_limit: Duration::from_secs(1),
            settle: Duration::ZERO,
            sample_every: Duration::from_millis(100),
            progress: false,
            label: None,
        };
        assert_eq!((cfg.share(0), cfg.share(1), cfg.share(2)), (4, 3, 3));
    }

    #[test]
    fn dir_size_sums_nested_files() {
        let dir = std::env::temp_dir().join(format!("roost-chaos-dirsize-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("x"), [0u8; 10]).unwrap();
        std::fs::write(dir.join("a/y"), [0u8; 5]).unwrap();
        assert_eq!(dir_size(Some(&dir)), Some(15));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(dir_size(Some(&dir)), None);
        assert_eq!(dir_size(None), None);
    }
}
