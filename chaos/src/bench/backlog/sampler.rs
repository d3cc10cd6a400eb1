//! Samples the broker's RSS every period on a background task: the peak
//! since the last [`Sampler::take_peak`], and a timeline (one point per
//! second, the highest reading in it, with the phase it was taken in).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::report::TimelinePoint;

/// Timeline resolution.
const POINT_EVERY: Duration = Duration::from_secs(1);

struct Shared {
    peak: AtomicU64,
    last: AtomicU64,
    phase: Mutex<&'static str>,
    timeline: Mutex<Vec<TimelinePoint>>,
    error: Mutex<Option<String>>,
}

/// A running sampler; cloning shares it.
#[derive(Clone)]
pub struct Sampler {
    pid: u32,
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Sampler {
    /// Starts sampling `pid` every `every` (at least 10 ms).
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let shared = Arc::new(Shared {
            peak: AtomicU64::new(0),
            last: AtomicU64::new(0),
            phase: Mutex::new("idle"),
            timeline: Mutex::new(Vec::new()),
            error: Mutex::new(None),
        });
        let (stop, mut stopped) = watch::channel(false);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut point: Option<TimelinePoint> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let rss = match crate::procstat::sample(pid) {
                    Ok(p) => p.rss_bytes,
                    Err(e) => {
                        *lock(&s.error) = Some(format!("{e:#}"));
                        break;
                    }
                };
                s.last.store(rss, Ordering::Relaxed);
                s.peak.fetch_max(rss, Ordering::Relaxed);
                let t = started.elapsed();
                let second = (t.as_secs_f64() / POINT_EVERY.as_secs_f64()).floor();
                let phase = *lock(&s.phase);
                match &mut point {
                    Some(p) if p.t_s == second && p.phase == phase => {
                        p.rss_bytes = p.rss_bytes.max(rss)
                    }
                    _ => {
                        if let Some(p) = point.take() {
                            lock(&s.timeline).push(p);
                        }
                        point = Some(TimelinePoint {
                            t_s: second,
                            phase: phase.to_string(),
                            rss_bytes: rss,
                        });
                    }
                }
            }
            if let Some(p) = point {
                lock(&s.timeline).push(p);
            }
        });
        Sampler {
            pid,
            shared,
            stop: Arc::new(stop),
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Labels the following samples.
    pub fn phase(&self, name: &'static str) {
        *lock(&self.shared.phase) = name;
    }

    /// The highest RSS since the last call (including a reading taken now).
    pub fn take_peak(&self) -> u64 {
        let now = crate::procstat::sample(self.pid).map_or(0, |p| p.rss_bytes);
        self.shared.peak.swap(0, Ordering::Relaxed).max(now)
    }

    /// The latest reading.
    pub fn last(&self) -> u64 {
        self.shared.last.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the timeline and the error that stopped it
    /// early, if any.
    pub async fn stop(self) -> (Vec<TimelinePoint>, Option<String>) {
        let _ = self.stop.send(true);
        // The task pushes its last point when it sees the stop.
        let task = lock(&self.task).take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        let timeline = std::mem::take(&mut *lock(&self.shared.timeline));
        let error = lock(&self.shared.error).take();
        (timeline, error)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
