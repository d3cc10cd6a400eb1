//! The history: what every publisher sent and had acknowledged, what every
//! subscriber received, with times; and the shared recorder the load tasks
//! write it into while they run.
//!
//! The recorder is the only unbounded-by-design memory of a run, so it is
//! capped by [`MAX_RECORDS`] (messages plus deliveries, all clients
//! together):
//! - a publisher creates a message only if it can reserve a record for the
//!   message and one for its first delivery to each subscriber, within
//!   [`PUBLISH_BUDGET`] (90% of the cap); past it, publishers stop creating
//!   messages and the history says so ([`History::publishing_capped`]) —
//!   the history stays complete, only shorter;
//! - first deliveries of known messages use those reservations; duplicate
//!   and never-sent ("phantom") deliveries take records from the remaining
//!   10%; past the cap they are counted ([`History::unrecorded`]) and the
//!   checker fails the run (its verdict would be incomplete).
//!
//! A record is about 40 bytes, so a full history is about 200 MB.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use roost_protocol::packet::QoS;

/// Messages plus deliveries kept in memory by one run, at most.
pub const MAX_RECORDS: u64 = 5_000_000;
/// The share of [`MAX_RECORDS`] publishers may reserve.
pub const PUBLISH_BUDGET: u64 = MAX_RECORDS / 10 * 9;
/// Events (connects, losses of connection) kept per client.
pub const MAX_EVENTS: usize = 256;

/// One message a publisher created and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Its sequence number: also its index in [`PublisherHistory::messages`].
    pub seq: u64,
    pub qos: QoS,
    /// When it was first queued for the socket.
    pub sent_at: Instant,
    /// QoS 0: written to the socket; QoS 1: successful PUBACK; QoS 2:
    /// PUBCOMP after a successful PUBREC (whatever the PUBCOMP's reason: a
    /// broker that accepted the message with PUBREC owns it).
    pub acked_at: Option<Instant>,
    /// The 5.0 reason code (>= 0x80) of a PUBACK or PUBREC refusing it.
    pub refused: Option<u8>,
}

/// One PUBLISH a subscriber received and counted. A QoS 2 PUBLISH whose
/// packet id was still awaiting PUBREL is the same delivery and is not
/// recorded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Publisher index (from the payload).
    pub publisher: u32,
    pub seq: u64,
    /// The QoS of the PUBLISH as delivered.
    pub qos: QoS,
    /// When the socket read carrying it completed.
    pub at: Instant,
    /// The PUBLISH's DUP flag.
    pub dup: bool,
}

/// Something that happened to a client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Instant,
    pub what: String,
}

/// Everything one publisher did.
#[derive(Debug, Clone)]
pub struct PublisherHistory {
    pub index: usize,
    pub qos: QoS,
    /// Indexed by seq.
    pub messages: Vec<MessageRecord>,
    /// Successful connections (CONNACK), the first one included.
    pub connects: u32,
    /// Reconnections the broker answered with Session Present = 0: the
    /// in-flight QoS 2 messages were then abandoned (never acknowledged),
    /// the QoS 1 ones sent again.
    pub sessions_lost: u32,
    /// Connection history, at most [`MAX_EVENTS`] (then `events_dropped`).
    pub events: Vec<Event>,
    pub events_dropped: u64,
}

/// Everything one subscriber received.
#[derive(Debug, Clone)]
pub struct SubscriberHistory {
    pub index: usize,
    /// In arrival order.
    pub deliveries: Vec<Delivery>,
    /// The QoS the broker granted the subscription (the last SUBACK).
    pub granted: Option<QoS>,
    /// Successful connections (CONNACK), the first one included.
    pub connects: u32,
    /// Reconnections answered with Session Present = 0 (it subscribed again).
    pub sessions_lost: u32,
    /// QoS 2 PUBLISHes repeated while their packet id awaited PUBREL (the
    /// same delivery, answered with PUBREC again, not recorded).
    pub qos2_repeats: u64,
    /// PUBLISHes that were not load messages of this run.
    pub foreign: u64,
    pub events: Vec<Event>,
    pub events_dropped: u64,
}

/// How [`crate::history::Load::finish`] ended its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FinishEnd {
    /// Every acknowledged QoS 1/2 message reached every subscriber.
    AllDelivered,
    /// Nothing arrived for the `quiet` period.
    Quiet,
    /// The `limit` passed.
    Limit,
}

/// The history of one load run.
#[derive(Debug, Clone)]
pub struct History {
    pub run_id: String,
    /// When [`crate::history::Load::start`] began.
    pub started: Instant,
    /// When publishers were told to stop.
    pub publishing_stopped: Option<Instant>,
    /// When the subscribers were told to stop.
    pub finished: Instant,
    pub finish_end: FinishEnd,
    pub publishers: Vec<PublisherHistory>,
    pub subscribers: Vec<SubscriberHistory>,
    /// Publishers stopped creating messages: the record budget was spent.
    pub publishing_capped: bool,
    /// Deliveries not recorded because the cap was reached.
    pub unrecorded: u64,
}

impl History {
    /// Deliveries (duplicates included) recorded strictly after `t`.
    pub fn deliveries_after(&self, t: Instant) -> u64 {
        self.subscribers
            .iter()
            .map(|s| s.deliveries.iter().filter(|d| d.at > t).count() as u64)
            .sum()
    }

    /// The first delivery strictly after `t`: when delivery resumed after a
    /// fault injected at `t`.
    pub fn first_delivery_after(&self, t: Instant) -> Option<Instant> {
        self.subscribers
            .iter()
            .flat_map(|s| s.deliveries.iter().map(|d| d.at))
            .filter(|&at| at > t)
            .min()
    }

    pub fn last_delivery(&self) -> Option<Instant> {
        self.subscribers
            .iter()
            .flat_map(|s| s.deliveries.iter().map(|d| d.at))
            .max()
    }

    /// The first acknowledgement strictly after `t`: when publishing resumed.
    pub fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.publishers
            .iter()
            .flat_map(|p| p.messages.iter().filter_map(|m| m.acked_at))
            .filter(|&at| at > t)
            .min()
    }

    /// Every client's connection events, one per line, in time order, with
    /// seconds since [`History::started`]: for a report or a failed test.
    pub fn events_text(&self) -> String {
        let mut lines: Vec<(Instant, String)> = Vec::new();
        for p in &self.publishers {
            for e in &p.events {
                lines.push((
                    e.at,
                    format!("p{} (QoS {}): {}", p.index, p.qos as u8, e.what),
                ));
            }
            if p.events_dropped > 0 {
                lines.push((
                    self.finished,
                    format!("p{}: {} more events", p.index, p.events_dropped),
                ));
            }
        }
        for s in &self.subscribers {
            for e in &s.events {
                lines.push((e.at, format!("s{}: {}", s.index, e.what)));
            }
            if s.events_dropped > 0 {
                lines.push((
                    self.finished,
                    format!("s{}: {} more events", s.index, s.events_dropped),
                ));
            }
        }
        lines.sort_by_key(|(at, _)| *at);
        let mut out = String::new();
        for (at, what) in lines {
            let secs = at.saturating_duration_since(self.started).as_secs_f64();
            out.push_str(&format!("{secs:>9.3}s {what}\n"));
        }
        out
    }

    /// Acknowledgements recorded strictly after `t`.
    pub fn acks_after(&self, t: Instant) -> u64 {
        self.publishers
            .iter()
            .map(|p| {
                p.messages
                    .iter()
                    .filter(|m| m.acked_at.is_some_and(|a| a > t))
                    .count() as u64
            })
            .sum()
    }
}

/// A growable bitmap of sequence numbers.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet(Vec<u64>);

impl SeqSet {
    pub(crate) fn contains(&self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        self.0
            .get(word)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Adds `seq`; false if it was there already.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }
}

/// Locks, ignoring poisoning: the data is plain records, still meaningful.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn push_event(events: &mut Vec<Event>, dropped: &mut u64, what: String) {
    if events.len() < MAX_EVENTS {
        events.push(Event {
            at: Instant::now(),
            what,
        });
    } else {
        *dropped += 1;
    }
}

/// What the shared recorder holds for one publisher.
pub(crate) struct PubSlot {
    pub(crate) log: Mutex<PublisherHistory>,
    /// Messages created so far: a delivered seq at or above it was never sent.
    pub(crate) created: AtomicU64,
    pub(crate) connected: AtomicBool,
}

/// What the shared recorder holds for one subscriber.
pub(crate) struct SubSlot {
    pub(crate) log: Mutex<SubLog>,
    pub(crate) connected: AtomicBool,
}

pub(crate) struct SubLog {
    pub(crate) history: SubscriberHistory,
    /// Per publisher: the seqs delivered at least once.
    pub(crate) seen: Vec<SeqSet>,
    /// Per publisher: a route probe arrived (see `Load::start`).
    pub(crate) probed: Vec<bool>,
}

/// The recorder every task of a run shares.
pub(crate) struct Recorder {
    pub(crate) started: Instant,
    pub(crate) pubs: Vec<PubSlot>,
    pub(crate) subs: Vec<SubSlot>,
    /// Records reserved or taken, against [`MAX_RECORDS`].
    records: AtomicU64,
    unrecorded: AtomicU64,
    capped: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// Nanoseconds after `started` of the last recorded delivery, plus one
    /// (0: none yet).
    last_delivery: AtomicU64,
}

impl Recorder {
    pub(crate) fn new(pub_qos: &[QoS], subscribers: usize) -> Recorder {
        let pubs = pub_qos
            .iter()
            .enumerate()
            .map(|(index, &qos)| PubSlot {
                log: Mutex::new(PublisherHistory {
                    index,
                    qos,
                    messages: Vec::new(),
                    connects: 0,
                    sessions_lost: 0,
                    events: Vec::new(),
                    events_dropped: 0,
                }),
                created: AtomicU64::new(0),
                connected: AtomicBool::new(false),
            })
            .collect();
        let subs = (0..subscribers)
            .map(|index| SubSlot {
                log: Mutex::new(SubLog {
                    history: SubscriberHistory {
                        index,
                        deliveries: Vec::new(),
                        granted: None,
                        connects: 0,
                        sessions_lost: 0,
                        qos2_repeats: 0,
                        foreign: 0,
                        events: Vec::new(),
                        events_dropped: 0,
                    },
                    seen: vec![SeqSet::default(); pub_qos.len()],
                    probed: vec![false; pub_qos.len()],
                }),
                connected: AtomicBool::new(false),
            })
            .collect();
        Recorder {
            started: Instant::now(),
            pubs,
            subs,
            records: AtomicU64::new(0),
            unrecorded: AtomicU64::new(0),
            capped: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
        }
    }

    /// Creates the next message of publisher `p`: its seq and send time, or
    /// `None` when the record budget is spent.
    pub(crate) fn new_message(&self, p: usize, qos: QoS) -> Option<(u64, Instant)> {
        let need = 1 + self.subs.len() as u64;
        let before = self.records.fetch_add(need, Ordering::Relaxed);
        if before + need > PUBLISH_BUDGET {
            self.records.fetch_sub(need, Ordering::Relaxed);
            self.capped.store(true, Ordering::Relaxed);
            return None;
        }
        let slot = &self.pubs[p];
        let mut log = lock(&slot.log);
        let seq = log.messages.len() as u64;
        let sent_at = Instant::now();
        log.messages.push(MessageRecord {
            seq,
            qos,
            sent_at,
            acked_at: None,
            refused: None,
        });
        // Before the PUBLISH is written: a subscriber that sees this seq
        // must find it created.
        slot.created.store(seq + 1, Ordering::Release);
        Some((seq, sent_at))
    }

    /// The record of message `seq` of publisher `p`, for rebuilding its
    /// payload: when it was sent.
    pub(crate) fn sent_at(&self, p: usize, seq: u64) -> Option<Instant> {
        let log = lock(&self.pubs[p].log);
        log.messages.get(seq as usize).map(|m| m.sent_at)
    }

    /// Marks messages of publisher `p` acknowledged now.
    pub(crate) fn acked(&self, p: usize, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut log = lock(&self.pubs[p].log);
        let mut n = 0;
        for &seq in seqs {
            if let Some(m) = log.messages.get_mut(seq as usize) {
                if m.acked_at.is_none() {
                    m.acked_at = Some(now);
                    n += 1;
                }
            }
        }
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, p: usize, seq: u64, reason: u8) {
        let mut log = lock(&self.pubs[p].log);
        if let Some(m) = log.messages.get_mut(seq as usize) {
            m.refused = Some(reason);
        }
    }

    pub(crate) fn pub_event(&self, p: usize, what: String) {
        let mut log = lock(&self.pubs[p].log);
        let log = &mut *log;
        push_event(&mut log.events, &mut log.events_dropped, what);
    }

    /// A publisher connected; `lost`: a reconnection without its session.
    pub(crate) fn pub_connected(&self, p: usize, what: String, lost: bool) {
        let mut log = lock(&self.pubs[p].log);
        let log = &mut *log;
        if log.connects > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        log.connects += 1;
        if lost {
            log.sessions_lost += 1;
        }
        push_event(&mut log.events, &mut log.events_dropped, what);
        self.pubs[p].connected.store(true, Ordering::Relaxed);
    }

    pub(crate) fn sub_connected(&self, s: usize, what: String, lost: bool) {
        let mut log = lock(&self.subs[s].log);
        let h = &mut log.history;
        if h.connects > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        h.connects += 1;
        if lost {
            h.sessions_lost += 1;
        }
        push_event(&mut h.events, &mut h.events_dropped, what);
        self.subs[s].connected.store(true, Ordering::Relaxed);
    }

    pub(crate) fn sub_event(&self, s: usize, what: String) {
        let mut log = lock(&self.subs[s].log);
        let h = &mut log.history;
        push_event(&mut h.events, &mut h.events_dropped, what);
    }

    /// Records what subscriber `s` received in one socket read.
    pub(crate) fn deliveries(&self, s: usize, batch: &[Incoming], at: Instant) {
        if batch.is_empty() {
            return;
        }
        let mut log = lock(&self.subs[s].log);
        let log = &mut *log;
        let mut counted = 0;
        for item in batch {
            match *item {
                Incoming::Probe(p) => {
                    if let Some(seen) = log.probed.get_mut(p) {
                        *seen = true;
                    }
                }
                Incoming::Foreign => log.history.foreign += 1,
                Incoming::Repeat => log.history.qos2_repeats += 1,
                Incoming::Message {
                    publisher,
                    seq,
                    qos,
                    dup,
                } => {
                    counted += 1;
                    let known = self
                        .pubs
                        .get(publisher as usize)
                        .is_some_and(|p| seq < p.created.load(Ordering::Acquire));
                    // A first delivery of a created message was reserved
                    // by its publisher; anything else takes a new record.
                    let reserved = known && log.seen[publisher as usize].insert(seq);
                    if !reserved && !self.take_record() {
                        self.unrecorded.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    log.history.deliveries.push(Delivery {
                        publisher,
                        seq,
                        qos,
                        at,
                        dup,
                    });
                }
            }
        }
        if counted > 0 {
            self.delivered.fetch_add(counted, Ordering::Relaxed);
            let ns = u64::try_from(at.saturating_duration_since(self.started).as_nanos())
                .unwrap_or(u64::MAX - 1);
            self.last_delivery.fetch_max(ns + 1, Ordering::Relaxed);
        }
    }

    fn take_record(&self) -> bool {
        let before = self.records.fetch_add(1, Ordering::Relaxed);
        if before < MAX_RECORDS {
            true
        } else {
            self.records.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// When the last load message arrived at any subscriber.
    pub(crate) fn last_delivery(&self) -> Option<Instant> {
        match self.last_delivery.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.started + std::time::Duration::from_nanos(ns - 1)),
        }
    }

    /// Whether every subscriber received a probe from publisher `p`.
    pub(crate) fn probed_by_all(&self, p: usize) -> bool {
        self.subs.iter().all(|s| lock(&s.log).probed[p])
    }

    /// Takes the history out (the recorder keeps empty logs).
    pub(crate) fn take(
        &self,
        run_id: String,
        publishing_stopped: Option<Instant>,
        finish_end: FinishEnd,
    ) -> History {
        let publishers = self
            .pubs
            .iter()
            .map(|p| {
                let mut log = lock(&p.log);
                let empty = PublisherHistory {
                    index: log.index,
                    qos: log.qos,
                    messages: Vec::new(),
                    connects: log.connects,
                    sessions_lost: log.sessions_lost,
                    events: Vec::new(),
                    events_dropped: 0,
                };
                std::mem::replace(&mut *log, empty)
            })
            .collect();
        let subscribers = self
            .subs
            .iter()
            .map(|s| {
                let mut log = lock(&s.log);
                let h = &mut log.history;
                SubscriberHistory {
                    index: h.index,
                    deliveries: std::mem::take(&mut h.deliveries),
                    granted: h.granted,
                    connects: h.connects,
                    sessions_lost: h.sessions_lost,
                    qos2_repeats: h.qos2_repeats,
                    foreign: h.foreign,
                    events: std::mem::take(&mut h.events),
                    events_dropped: h.events_dropped,
                }
            })
            .collect();
        History {
            run_id,
            started: self.started,
            publishing_stopped,
            finished: Instant::now(),
            finish_end,
            publishers,
            subscribers,
            publishing_capped: self.capped.load(Ordering::Relaxed),
            unrecorded: self.unrecorded.load(Ordering::Relaxed),
        }
    }
}

/// What a subscriber made of one received PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    Message {
        publisher: u32,
        seq: u64,
        qos: QoS,
        dup: bool,
    },
    /// A route probe from this publisher index.
    Probe(usize),
    /// A QoS 2 PUBLISH repeated while its packet id awaited PUBREL.
    Repeat,
    /// Not one of ours.
    Foreign,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_set_inserts_once() {
        let mut s = SeqSet::default();
        assert!(!s.contains(130));
        assert!(s.insert(130));
        assert!(!s.insert(130));
        assert!(s.contains(130));
        assert!(!s.contains(129));
    }

    #[test]
    fn first_deliveries_use_reservations_and_phantoms_are_recorded() {
        let r = Recorder::new(&[QoS::AtLeastOnce], 1);
        assert_eq!(r.new_message(0, QoS::AtLeastOnce).map(|m| m.0), Some(0));
        let at = Instant::now();
        let msg = |seq| Incoming::Message {
            publisher: 0,
            seq,
            qos: QoS::AtLeastOnce,
            dup: false,
        };
        r.deliveries(0, &[msg(0), msg(0), msg(7), Incoming::Foreign], at);
        assert_eq!(r.records.load(Ordering::Relaxed), 2 + 2);
        let h = r.take("t".into(), None, FinishEnd::Quiet);
        assert_eq!(h.subscribers[0].deliveries.len(), 3);
        assert_eq!(h.subscribers[0].foreign, 1);
        assert_eq!(h.last_delivery(), Some(at));
    }
}
