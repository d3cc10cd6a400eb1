//! The load payload: every message carries who sent it, its sequence number
//! and when it was sent, so a subscriber can count exactly what it received.
//!
//! Layout (big endian), then zero padding up to the requested size:
//! `publisher: u32 | seq: u64 | sent_ns: u64`, where `sent_ns` is
//! nanoseconds since an `Instant` shared by every task of the run.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes taken by the header; smaller payload sizes are raised to this.
pub const HEADER_LEN: usize = 20;

/// The header of one load message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Stamp {
    /// Reads the header; `None` if the payload is too short to be ours.
    pub fn parse(payload: &[u8]) -> Option<Stamp> {
        let header = payload.get(..HEADER_LEN)?;
        let publisher = u32::from_be_bytes(header[0..4].try_into().ok()?);
        let seq = u64::from_be_bytes(header[4..12].try_into().ok()?);
        let sent_ns = u64::from_be_bytes(header[12..20].try_into().ok()?);
        Some(Stamp {
            publisher,
            seq,
            sent_ns,
        })
    }
}

/// Builds payloads of a fixed size, carving them out of one large buffer so
/// a message costs no allocation of its own.
pub struct PayloadBuilder {
    len: usize,
    scratch: BytesMut,
}

impl PayloadBuilder {
    pub fn new(len: usize) -> PayloadBuilder {
        PayloadBuilder {
            len: len.max(HEADER_LEN),
            scratch: BytesMut::new(),
        }
    }

    pub fn build(&mut self, stamp: Stamp) -> Bytes {
        if self.scratch.capacity() < self.len {
            self.scratch.reserve(self.len.max(64 * 1024));
        }
        self.scratch.put_u32(stamp.publisher);
        self.scratch.put_u64(stamp.seq);
        self.scratch.put_u64(stamp.sent_ns);
        self.scratch.put_bytes(0, self.len - HEADER_LEN);
        self.scratch.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_payload_has_the_requested_size() {
        let mut b = PayloadBuilder::new(64);
        let stamp = Stamp {
            publisher: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let p = b.build(stamp);
        assert_eq!(p.len(), 64);
        assert_eq!(Stamp::parse(&p), Some(stamp));
    }

    #[test]
    fn small_sizes_are_raised_to_the_header_and_short_input_is_rejected() {
        let mut b = PayloadBuilder::new(4);
        let p = b.build(Stamp {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        });
        assert_eq!(p.len(), HEADER_LEN);
        assert_eq!(Stamp::parse(&p[..HEADER_LEN - 1]), None);
    }
}
