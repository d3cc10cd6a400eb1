//! Exact accounting of what one subscriber received: per publisher, a bitmap
//! of the sequence numbers seen, so loss, duplicates and reordering are
//! counted exactly rather than estimated.
//!
//! Definitions (per publisher, then summed):
//! - *duplicate*: a sequence number already received;
//! - *reordered*: a new sequence number lower than the highest one seen;
//! - *lost*: sent by the publisher but never received (`sent - unique`).

use serde::{Deserialize, Serialize};

/// Sequence numbers at or above this are treated as garbage, which bounds
/// the bitmap a corrupt payload could make us allocate (512 MiB).
const MAX_SEQ: u64 = 1 << 32;

/// What recording one message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    Reordered,
    Duplicate,
    /// Not from a publisher this subscriber expects, or a nonsense sequence.
    Unexpected,
}

#[derive(Debug, Default, Clone)]
struct PublisherTrack {
    bits: Vec<u64>,
    highest: Option<u64>,
    unique: u64,
}

/// Totals over every publisher a tracker saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Every delivery, duplicates included.
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub unexpected: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.received += o.received;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
    }
}

/// The receive history of one subscriber.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    publishers: Vec<PublisherTrack>,
    counts: Counts,
}

impl SeqTracker {
    /// A tracker for messages from publishers `0..publishers`.
    pub fn new(publishers: usize) -> SeqTracker {
        SeqTracker {
            publishers: vec![PublisherTrack::default(); publishers],
            counts: Counts::default(),
        }
    }

    pub fn record(&mut self, publisher: u32, seq: u64) -> Seen {
        self.counts.received += 1;
        let track = usize::try_from(publisher)
            .ok()
            .and_then(|i| self.publishers.get_mut(i));
        let Some(track) = track.filter(|_| seq < MAX_SEQ) else {
            self.counts.unexpected += 1;
            return Seen::Unexpected;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if track.bits.len() <= word {
            track.bits.resize(word + 1, 0);
        }
        if track.bits[word] & bit != 0 {
            self.counts.duplicates += 1;
            return Seen::Duplicate;
        }
        track.bits[word] |= bit;
        track.unique += 1;
        self.counts.unique += 1;
        match track.highest {
            Some(h) if seq < h => {
                self.counts.reordered += 1;
                Seen::Reordered
            }
            _ => {
                track.highest = Some(seq);
                Seen::InOrder
            }
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Distinct messages received from `publisher`.
    pub fn unique_from(&self, publisher: u32) -> u64 {
        usize::try_from(publisher)
            .ok()
            .and_then(|i| self.publishers.get(i))
            .map_or(0, |t| t.unique)
    }

    /// Messages the given publishers sent that never arrived here.
    /// `sent[p]` is what publisher `p` sent.
    pub fn lost(&self, sent: &[u64], sources: &[u32]) -> u64 {
        sources
            .iter()
            .map(|&p| {
                let s = usize::try_from(p)
                    .ok()
                    .and_then(|i| sent.get(i))
                    .copied()
                    .unwrap_or(0);
                s.saturating_sub(self.unique_from(p))
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_anomalies() {
        let mut t = SeqTracker::new(2);
        for seq in 0..1000 {
            assert_eq!(t.record(1, seq), Seen::InOrder);
        }
        let c = t.counts();
        assert_eq!(
            (c.received, c.unique, c.duplicates, c.reordered),
            (1000, 1000, 0, 0)
        );
        assert_eq!(t.lost(&[0, 1000], &[0, 1]), 0);
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_counted_exactly() {
        let mut t = SeqTracker::new(1);
        for seq in [0, 1, 3, 2, 3, 70, 5] {
            t.record(0, seq);
        }
        let c = t.counts();
        assert_eq!(c.received, 7);
        assert_eq!(c.unique, 6);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.reordered, 2, "2 after 3, 5 after 70");
        // sent 0..=70: 71 messages, 6 distinct received.
        assert_eq!(t.lost(&[71], &[0]), 65);
    }

    #[test]
    fn unknown_publishers_and_absurd_sequences_are_unexpected() {
        let mut t = SeqTracker::new(1);
        assert_eq!(t.record(5, 0), Seen::Unexpected);
        assert_eq!(t.record(0, u64::MAX), Seen::Unexpected);
        assert_eq!(t.counts().unexpected, 2);
        assert_eq!(t.counts().unique, 0);
    }
}
