//! The history checker: loss, duplicates and reordering per QoS, and the
//! verdict.
//!
//! Definitions, per QoS of the publisher (each subscriber counts apart):
//! - *delivered*: distinct (message, subscriber) pairs received;
//! - *lost*: (acknowledged message, subscriber) pairs never received;
//! - *duplicated*: deliveries of a message to a subscriber beyond its first;
//! - *reordered*: first deliveries to a subscriber of a message with a seq
//!   lower than one from the same publisher it already received.
//!
//! Failures: an acknowledged QoS 1/2 message lost; a QoS 2 message
//! duplicated; a delivery of a message that was never sent; a history that
//! overflowed its cap (the verdict would be incomplete). QoS 0 loss, QoS 1
//! duplicates and any reordering are counted, not failures: MQTT allows
//! them (a resend after a reconnection may overtake newer messages).

use std::fmt::Write as _;

use roost_protocol::packet::QoS;
use serde::Serialize;

use super::record::{History, SeqSet};

/// Examples listed per failure line, at most.
const EXAMPLES: usize = 8;

/// The counts of one QoS level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QosStats {
    pub qos: u8,
    pub sent: u64,
    pub acknowledged: u64,
    /// Unique (publisher, seq) x subscriber pairs delivered.
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// What the checker concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// One entry per QoS some publisher used, by QoS.
    pub per_qos: Vec<QosStats>,
    /// Human-readable; empty = pass.
    pub failures: Vec<String>,
    /// Observations that are not failures (refused messages, lost
    /// sessions, QoS 0 loss, QoS 1 duplicates, reordering, a capped history).
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// An aligned text table of the counts, then PASS or FAIL with the
    /// failures and the notes.
    pub fn table(&self) -> String {
        let header = [
            "qos",
            "sent",
            "acknowledged",
            "delivered",
            "lost",
            "duplicated",
            "reordered",
        ];
        let rows: Vec<[String; 7]> = self
            .per_qos
            .iter()
            .map(|s| {
                [
                    s.qos.to_string(),
                    s.sent.to_string(),
                    s.acknowledged.to_string(),
                    s.delivered.to_string(),
                    s.lost.to_string(),
                    s.duplicated.to_string(),
                    s.reordered.to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                let _ = write!(l, "{cell:>w$}");
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut out, &header);
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&mut out, &cells);
        }
        if self.passed() {
            out.push_str("PASS\n");
        } else {
            let _ = writeln!(out, "FAIL ({} failures)", self.failures.len());
            for f in &self.failures {
                let _ = writeln!(out, "  failure: {f}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}

/// Counts of one QoS seen by one subscriber, with examples for the report.
#[derive(Default)]
struct SubCounts {
    lost: Vec<(usize, u64)>,
    lost_n: u64,
    dup: Vec<(usize, u64)>,
    dup_n: u64,
    reordered: u64,
    delivered: u64,
}

fn examples(list: &[(usize, u64)]) -> String {
    let mut s: Vec<String> = list.iter().map(|(p, seq)| format!("p{p}#{seq}")).collect();
    if s.len() >= EXAMPLES {
        s.push("...".into());
    }
    s.join(", ")
}

fn push_example(list: &mut Vec<(usize, u64)>, p: usize, seq: u64) {
    if list.len() < EXAMPLES {
        list.push((p, seq));
    }
}

/// The acknowledged messages each subscriber never received, as stretches
/// of consecutive seqs per publisher, one per line:
/// `s0 p8 (QoS 1): #5559..#6818 (1260), sent 120.112s..147.301s`, with
/// times since [`History::started`]. For a kept run's `history.txt`: a
/// loss reads as a window in time that lines up with a fault.
pub fn lost_stretches(h: &History) -> String {
    let mut out = String::new();
    let secs = |at: std::time::Instant| at.saturating_duration_since(h.started).as_secs_f64();
    for s in &h.subscribers {
        let mut seen = vec![SeqSet::default(); h.publishers.len()];
        for d in &s.deliveries {
            if let Some(set) = seen.get_mut(d.publisher as usize) {
                set.insert(d.seq);
            }
        }
        for (p, ph) in h.publishers.iter().enumerate() {
            let mut run: Option<(u64, u64)> = None;
            let flush = |run: (u64, u64), out: &mut String| {
                let (a, b) = run;
                let at = |seq: u64| secs(ph.messages[seq as usize].sent_at);
                let _ = writeln!(
                    out,
                    "s{} p{} (QoS {}): #{a}..#{b} ({}), sent {:.3}s..{:.3}s",
                    s.index,
                    ph.index,
                    ph.qos as u8,
                    b - a + 1,
                    at(a),
                    at(b)
                );
            };
            for m in ph.messages.iter().filter(|m| m.acked_at.is_some()) {
                if seen[p].contains(m.seq) {
                    continue;
                }
                run = match run {
                    Some((a, b)) if b + 1 == m.seq => Some((a, m.seq)),
                    Some(r) => {
                        flush(r, &mut out);
                        Some((m.seq, m.seq))
                    }
                    None => Some((m.seq, m.seq)),
                };
            }
            if let Some(r) = run {
                flush(r, &mut out);
            }
        }
    }
    out
}

/// Repeated QoS 2 deliveries listed in `history.txt`, per subscriber.
const DUPLICATES_LISTED: usize = 300;

/// Every repeated delivery of a QoS 2 message, per subscriber, one per
/// line: `s4 p10 (QoS 2): #1795 sent 35.201s, first 35.210s, again
/// 37.050s DUP`, with times since [`History::started`] (at most
/// [`DUPLICATES_LISTED`] per subscriber, then how many more). For a kept
/// run's `history.txt`: when each copy came, against the faults and the
/// subscriber's reconnections.
pub fn duplicate_deliveries(h: &History) -> String {
    let mut out = String::new();
    let secs = |at: std::time::Instant| at.saturating_duration_since(h.started).as_secs_f64();
    for s in &h.subscribers {
        let mut first: std::collections::HashMap<(u32, u64), std::time::Instant> =
            std::collections::HashMap::new();
        let mut listed = 0usize;
        let mut more = 0u64;
        for d in &s.deliveries {
            let Some(m) = h.publishers.get(d.publisher as usize).and_then(|ph| {
                ph.messages
                    .get(usize::try_from(d.seq).unwrap_or(usize::MAX))
            }) else {
                continue;
            };
            if m.qos != QoS::ExactlyOnce {
                continue;
            }
            let Some(&at) = first.get(&(d.publisher, d.seq)) else {
                first.insert((d.publisher, d.seq), d.at);
                continue;
            };
            if listed == DUPLICATES_LISTED {
                more += 1;
                continue;
            }
            listed += 1;
            let _ = writeln!(
                out,
                "s{} p{} (QoS 2): #{} sent {:.3}s, first {:.3}s, again {:.3}s{}",
                s.index,
                d.publisher,
                d.seq,
                secs(m.sent_at),
                secs(at),
                secs(d.at),
                if d.dup { " DUP" } else { "" }
            );
        }
        if more > 0 {
            let _ = writeln!(out, "s{} ... and {more} more", s.index);
        }
    }
    out
}

/// Checks a history.
pub fn check(h: &History) -> Verdict {
    let mut v = Verdict::default();
    let levels: Vec<QoS> = {
        let mut l: Vec<QoS> = h.publishers.iter().map(|p| p.qos).collect();
        l.sort();
        l.dedup();
        l
    };
    for &q in &levels {
        let mut stats = QosStats {
            qos: q as u8,
            ..QosStats::default()
        };
        for p in h.publishers.iter().filter(|p| p.qos == q) {
            stats.sent += p.messages.len() as u64;
            stats.acknowledged += p.messages.iter().filter(|m| m.acked_at.is_some()).count() as u64;
        }
        v.per_qos.push(stats);
    }
    let level_of = |q: QoS| levels.iter().position(|&l| l == q);

    for s in &h.subscribers {
        // Per publisher: seqs seen and the highest first-delivered seq.
        let mut seen = vec![SeqSet::default(); h.publishers.len()];
        let mut highest: Vec<Option<u64>> = vec![None; h.publishers.len()];
        let mut counts: Vec<SubCounts> = levels.iter().map(|_| SubCounts::default()).collect();
        let mut phantoms: Vec<(usize, u64)> = Vec::new();
        let mut phantom_n = 0u64;
        let mut wrong_qos = 0u64;
        for d in &s.deliveries {
            let p = d.publisher as usize;
            let Some(m) = h.publishers.get(p).and_then(|ph| {
                ph.messages
                    .get(usize::try_from(d.seq).unwrap_or(usize::MAX))
            }) else {
                phantom_n += 1;
                push_example(&mut phantoms, p, d.seq);
                continue;
            };
            if d.qos != m.qos.min(s.granted.unwrap_or(QoS::ExactlyOnce)) {
                wrong_qos += 1;
            }
            let Some(li) = level_of(m.qos) else { continue };
            let c = &mut counts[li];
            if !seen[p].insert(d.seq) {
                c.dup_n += 1;
                push_example(&mut c.dup, p, d.seq);
                continue;
            }
            c.delivered += 1;
            match highest[p] {
                Some(top) if d.seq < top => c.reordered += 1,
                _ => highest[p] = Some(d.seq),
            }
        }
        for (p, ph) in h.publishers.iter().enumerate() {
            let Some(li) = level_of(ph.qos) else { continue };
            let c = &mut counts[li];
            for m in ph.messages.iter().filter(|m| m.acked_at.is_some()) {
                if !seen[p].contains(m.seq) {
                    c.lost_n += 1;
                    push_example(&mut c.lost, p, m.seq);
                }
            }
        }
        for (li, c) in counts.iter().enumerate() {
            let q = levels[li];
            let stats = &mut v.per_qos[li];
            stats.delivered += c.delivered;
            stats.lost += c.lost_n;
            stats.duplicated += c.dup_n;
            stats.reordered += c.reordered;
            let who = format!("QoS {}: subscriber {}", q as u8, s.index);
            if c.lost_n > 0 {
                let msg = format!(
                    "{who} never received {} acknowledged messages: {}",
                    c.lost_n,
                    examples(&c.lost)
                );
                if q == QoS::AtMostOnce {
                    v.notes.push(msg);
                } else {
                    v.failures.push(msg);
                }
            }
            if c.dup_n > 0 {
                let msg = format!(
                    "{who} received {} duplicate deliveries: {}",
                    c.dup_n,
                    examples(&c.dup)
                );
                if q == QoS::ExactlyOnce {
                    v.failures.push(msg);
                } else {
                    v.notes.push(msg);
                }
            }
            if c.reordered > 0 {
                v.notes.push(format!(
                    "{who} received {} messages out of order",
                    c.reordered
                ));
            }
        }
        if phantom_n > 0 {
            v.failures.push(format!(
                "subscriber {} received {phantom_n} messages that were never sent: {}",
                s.index,
                examples(&phantoms)
            ));
        }
        if wrong_qos > 0 {
            v.notes.push(format!(
                "subscriber {} received {wrong_qos} deliveries at another QoS than min(published, granted)",
                s.index
            ));
        }
        if s.sessions_lost > 0 {
            v.notes.push(format!(
                "subscriber {} reconnected {} times without its session (subscribed again)",
                s.index, s.sessions_lost
            ));
        }
        if s.foreign > 0 {
            v.notes.push(format!(
                "subscriber {} received {} messages not of this run",
                s.index, s.foreign
            ));
        }
    }
    for p in &h.publishers {
        let refused = p.messages.iter().filter(|m| m.refused.is_some()).count();
        if refused > 0 {
            v.notes.push(format!(
                "publisher {} (QoS {}): {refused} messages refused by the broker",
                p.index, p.qos as u8
            ));
        }
        if p.sessions_lost > 0 {
            v.notes.push(format!(
                "publisher {} (QoS {}) reconnected {} times without its session",
                p.index, p.qos as u8, p.sessions_lost
            ));
        }
    }
    if h.unrecorded > 0 {
        v.failures.push(format!(
            "history overflow: {} deliveries were not recorded (cap {} records); the verdict is incomplete",
            h.unrecorded,
            super::record::MAX_RECORDS
        ));
    }
    if h.publishing_capped {
        v.notes.push(format!(
            "publishers stopped early: the history reached its cap of {} records",
            super::record::MAX_RECORDS
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::record::{
        Delivery, FinishEnd, History, MessageRecord, PublisherHistory, SubscriberHistory,
    };
    use super::*;

    fn publisher(index: usize, qos: QoS, n: u64, acked: impl Fn(u64) -> bool) -> PublisherHistory {
        let t = Instant::now();
        PublisherHistory {
            index,
            qos,
            messages: (0..n)
                .map(|seq| MessageRecord {
                    seq,
                    qos,
                    sent_at: t,
                    acked_at: acked(seq).then_some(t + Duration::from_millis(1)),
                    refused: None,
                })
                .collect(),
            connects: 1,
            sessions_lost: 0,
            events: Vec::new(),
            events_dropped: 0,
        }
    }

    /// A subscriber that received `(publisher, seq)` in this order, at the
    /// QoS of its publisher.
    fn subscriber(
        index: usize,
        pubs: &[PublisherHistory],
        got: &[(u32, u64)],
    ) -> SubscriberHistory {
        let t = Instant::now();
        SubscriberHistory {
            index,
            deliveries: got
                .iter()
                .enumerate()
                .map(|(i, &(publisher, seq))| Delivery {
                    publisher,
                    seq,
                    qos: pubs
                        .get(publisher as usize)
                        .map_or(QoS::AtMostOnce, |p| p.qos),
                    at: t + Duration::from_millis(i as u64),
                    dup: false,
                })
                .collect(),
            granted: Some(QoS::ExactlyOnce),
            connects: 1,
            sessions_lost: 0,
            qos2_repeats: 0,
            foreign: 0,
            events: Vec::new(),
            events_dropped: 0,
        }
    }

    fn history(publishers: Vec<PublisherHistory>, subscribers: Vec<SubscriberHistory>) -> History {
        let t = Instant::now();
        History {
            run_id: "test".into(),
            started: t,
            publishing_stopped: Some(t),
            finished: t,
            finish_end: FinishEnd::AllDelivered,
            publishers,
            subscribers,
            publishing_capped: false,
            unrecorded: 0,
        }
    }

    fn all(p: u32, n: u64) -> Vec<(u32, u64)> {
        (0..n).map(|s| (p, s)).collect()
    }

    fn stats(v: &Verdict, qos: u8) -> QosStats {
        *v.per_qos.iter().find(|s| s.qos == qos).expect("qos row")
    }

    #[test]
    fn complete_delivery_passes() {
        let pubs = vec![
            publisher(0, QoS::AtLeastOnce, 10, |_| true),
            publisher(1, QoS::ExactlyOnce, 10, |_| true),
        ];
        let mut got = all(0, 10);
        got.extend(all(1, 10));
        let subs = vec![subscriber(0, &pubs, &got), subscriber(1, &pubs, &got)];
        let v = check(&history(pubs, subs));
        assert!(v.passed(), "{}", v.table());
        let s1 = stats(&v, 1);
        assert_eq!(
            (s1.sent, s1.acknowledged, s1.delivered, s1.lost),
            (10, 10, 20, 0)
        );
        assert_eq!(stats(&v, 2).delivered, 20);
        assert!(v.notes.is_empty(), "{:?}", v.notes);
    }

    #[test]
    fn an_acknowledged_message_missing_at_one_subscriber_is_lost() {
        let pubs = vec![publisher(0, QoS::AtLeastOnce, 5, |_| true)];
        let subs = vec![
            subscriber(0, &pubs, &all(0, 5)),
            subscriber(1, &pubs, &[(0, 0), (0, 1), (0, 3), (0, 4)]),
        ];
        let v = check(&history(pubs, subs));
        assert!(!v.passed());
        assert_eq!(stats(&v, 1).lost, 1);
        assert_eq!(stats(&v, 1).delivered, 9);
        assert_eq!(v.failures.len(), 1);
        assert!(v.failures[0].contains("subscriber 1"), "{}", v.failures[0]);
        assert!(v.failures[0].contains("p0#2"), "{}", v.failures[0]);
    }

    #[test]
    fn unacknowledged_messages_may_be_missing() {
        let pubs = vec![publisher(0, QoS::ExactlyOnce, 5, |seq| seq < 3)];
        let subs = vec![subscriber(0, &pubs, &all(0, 3))];
        let v = check(&history(pubs, subs));
        assert!(v.passed(), "{}", v.table());
        let s = stats(&v, 2);
        assert_eq!((s.sent, s.acknowledged, s.lost), (5, 3, 0));
    }

    #[test]
    fn each_subscriber_counts_its_own_losses() {
        let pubs = vec![publisher(0, QoS::AtLeastOnce, 4, |_| true)];
        let subs = vec![subscriber(0, &pubs, &[]), subscriber(1, &pubs, &[(0, 1)])];
        let v = check(&history(pubs, subs));
        assert_eq!(stats(&v, 1).lost, 4 + 3);
        assert_eq!(v.failures.len(), 2);
    }

    #[test]
    fn qos1_duplicates_and_reorders_are_counted_but_pass() {
        let pubs = vec![publisher(0, QoS::AtLeastOnce, 4, |_| true)];
        let got = [(0, 0), (0, 2), (0, 1), (0, 2), (0, 3), (0, 0)];
        let subs = vec![subscriber(0, &pubs, &got)];
        let v = check(&history(pubs, subs));
        assert!(v.passed(), "{}", v.table());
        let s = stats(&v, 1);
        assert_eq!(
            (s.delivered, s.duplicated, s.reordered, s.lost),
            (4, 2, 1, 0)
        );
        assert_eq!(v.notes.len(), 2, "{:?}", v.notes);
    }

    #[test]
    fn reordering_is_per_publisher_and_per_subscriber() {
        let pubs = vec![
            publisher(0, QoS::AtLeastOnce, 3, |_| true),
            publisher(1, QoS::AtLeastOnce, 3, |_| true),
        ];
        // Interleaved publishers, each in order: no reordering.
        let a = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)];
        // Subscriber 1 gets publisher 1 backwards: 2 reorders.
        let b = [(1, 2), (0, 0), (1, 1), (0, 1), (1, 0), (0, 2)];
        let subs = vec![subscriber(0, &pubs, &a), subscriber(1, &pubs, &b)];
        let v = check(&history(pubs, subs));
        assert_eq!(stats(&v, 1).reordered, 2);
        assert!(v.passed());
    }

    #[test]
    fn qos2_duplicate_fails() {
        let pubs = vec![publisher(0, QoS::ExactlyOnce, 3, |_| true)];
        let subs = vec![subscriber(0, &pubs, &[(0, 0), (0, 1), (0, 1), (0, 2)])];
        let v = check(&history(pubs, subs));
        assert!(!v.passed());
        assert_eq!(stats(&v, 2).duplicated, 1);
        assert_eq!(stats(&v, 2).lost, 0);
        assert!(v.failures[0].contains("duplicate"), "{:?}", v.failures);
        assert!(v.table().contains("FAIL"));
    }

    #[test]
    fn qos2_loss_fails() {
        let pubs = vec![publisher(0, QoS::ExactlyOnce, 3, |_| true)];
        let subs = vec![subscriber(0, &pubs, &[(0, 0), (0, 2)])];
        let v = check(&history(pubs, subs));
        assert!(!v.passed());
        assert_eq!(stats(&v, 2).lost, 1);
    }

    #[test]
    fn qos0_never_fails() {
        let pubs = vec![publisher(0, QoS::AtMostOnce, 6, |_| true)];
        let got = [(0, 0), (0, 3), (0, 1), (0, 3)];
        let subs = vec![subscriber(0, &pubs, &got), subscriber(1, &pubs, &[])];
        let v = check(&history(pubs, subs));
        assert!(v.passed(), "{}", v.table());
        let s = stats(&v, 0);
        assert_eq!(
            (
                s.sent,
                s.acknowledged,
                s.delivered,
                s.lost,
                s.duplicated,
                s.reordered
            ),
            (6, 6, 3, 3 + 6, 1, 1)
        );
        assert!(!v.notes.is_empty());
    }

    #[test]
    fn deliveries_of_messages_never_sent_fail() {
        let pubs = vec![publisher(0, QoS::AtLeastOnce, 2, |_| true)];
        let subs = vec![subscriber(0, &pubs, &[(0, 0), (0, 1), (0, 9), (3, 0)])];
        let v = check(&history(pubs, subs));
        assert!(!v.passed());
        assert!(v.failures[0].contains("never sent"), "{:?}", v.failures);
        assert_eq!(stats(&v, 1).delivered, 2);
    }

    #[test]
    fn lost_stretches_group_consecutive_seqs_per_publisher() {
        let pubs = vec![
            publisher(0, QoS::AtLeastOnce, 10, |_| true),
            publisher(1, QoS::ExactlyOnce, 4, |seq| seq != 2),
        ];
        let mut got: Vec<(u32, u64)> = [0, 1, 5, 6, 8].iter().map(|&s| (0, s)).collect();
        got.push((1, 0));
        let text = lost_stretches(&history(pubs.clone(), vec![subscriber(3, &pubs, &got)]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].starts_with("s3 p0 (QoS 1): #2..#4 (3), sent "),
            "{text}"
        );
        assert!(lines[1].starts_with("s3 p0 (QoS 1): #7..#7 (1)"), "{text}");
        assert!(lines[2].starts_with("s3 p0 (QoS 1): #9..#9 (1)"), "{text}");
        // p1#2 was never acknowledged: not lost; it ends a stretch.
        assert!(lines[3].starts_with("s3 p1 (QoS 2): #1..#1 (1)"), "{text}");
        assert!(lines[4].starts_with("s3 p1 (QoS 2): #3..#3 (1)"), "{text}");
    }

    #[test]
    fn duplicate_deliveries_list_each_repeat_of_a_qos2_message() {
        let pubs = vec![
            publisher(0, QoS::AtLeastOnce, 3, |_| true),
            publisher(1, QoS::ExactlyOnce, 3, |_| true),
        ];
        // p0#1 twice (QoS 1: allowed, not listed), p1#2 three times.
        let got = [(0, 0), (0, 1), (0, 1), (1, 2), (1, 0), (1, 2), (1, 2)];
        let text = duplicate_deliveries(&history(pubs.clone(), vec![subscriber(4, &pubs, &got)]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in lines {
            assert!(l.starts_with("s4 p1 (QoS 2): #2 sent "), "{text}");
            assert!(l.contains(", first ") && l.contains(", again "), "{text}");
        }
    }

    #[test]
    fn an_overflowed_history_fails() {
        let mut h = history(vec![publisher(0, QoS::AtLeastOnce, 0, |_| true)], vec![]);
        h.unrecorded = 1;
        assert!(!check(&h).passed());
    }

    #[test]
    fn table_is_aligned() {
        let pubs = vec![
            publisher(0, QoS::AtMostOnce, 1000, |_| true),
            publisher(1, QoS::AtLeastOnce, 7, |_| true),
        ];
        let mut got = all(0, 1000);
        got.extend(all(1, 7));
        let v = check(&history(pubs.clone(), vec![subscriber(0, &pubs, &got)]));
        let table = v.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].trim_start().starts_with("qos"));
        assert_eq!(lines[0].len(), lines[1].len(), "{table}");
        assert_eq!(lines[1].len(), lines[2].len(), "{table}");
        assert_eq!(lines[3], "PASS");
        // Serializes for the scenario's JSON report.
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"acknowledged\":1000"), "{json}");
    }
}
