//! Backlog payloads: the numbered header of [`crate::bench::payload`], then
//! pseudo-random bytes that depend only on (publisher, sequence), so the
//! receiver can check every byte without the sender's help, and so the
//! store cannot compress the backlog away.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bench::payload::{Stamp, HEADER_LEN};

/// splitmix64: a tiny, good-enough generator for filler bytes.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed(publisher: u32, seq: u64) -> u64 {
    (u64::from(publisher) << 40) ^ seq ^ 0x5EED_F00D_BAC0_1060
}

/// Writes the filler of (`publisher`, `seq`) into `out`, `len` bytes.
fn fill(publisher: u32, seq: u64, len: usize, out: &mut BytesMut) {
    let mut state = seed(publisher, seq);
    let mut left = len;
    while left >= 8 {
        out.put_u64_le(next(&mut state));
        left -= 8;
    }
    if left > 0 {
        out.put_slice(&next(&mut state).to_le_bytes()[..left]);
    }
}

/// Builds payloads of a fixed size out of one large buffer.
pub struct Builder {
    len: usize,
    scratch: BytesMut,
}

impl Builder {
    pub fn new(len: usize) -> Builder {
        Builder {
            len: len.max(HEADER_LEN),
            scratch: BytesMut::new(),
        }
    }

    pub fn build(&mut self, stamp: Stamp) -> Bytes {
        if self.scratch.capacity() < self.len {
            self.scratch.reserve(self.len.max(256 * 1024));
        }
        self.scratch.put_u32(stamp.publisher);
        self.scratch.put_u64(stamp.seq);
        self.scratch.put_u64(stamp.sent_ns);
        fill(
            stamp.publisher,
            stamp.seq,
            self.len - HEADER_LEN,
            &mut self.scratch,
        );
        self.scratch.split().freeze()
    }
}

/// Checks a received payload: its size, then that its filler is the one of
/// the (publisher, seq) in its header. `Err` says what is wrong.
pub struct Checker {
    len: usize,
    expected: BytesMut,
}

impl Checker {
    pub fn new(len: usize) -> Checker {
        Checker {
            len: len.max(HEADER_LEN),
            expected: BytesMut::new(),
        }
    }

    pub fn check(&mut self, payload: &[u8]) -> Result<Stamp, String> {
        let stamp = Stamp::parse(payload).ok_or_else(|| {
            format!(
                "payload of {} bytes is too short to be numbered",
                payload.len()
            )
        })?;
        if payload.len() != self.len {
            return Err(format!(
                "message {}/{}: {} bytes instead of {}",
                stamp.publisher,
                stamp.seq,
                payload.len(),
                self.len
            ));
        }
        self.expected.clear();
        fill(
            stamp.publisher,
            stamp.seq,
            self.len - HEADER_LEN,
            &mut self.expected,
        );
        if payload[HEADER_LEN..] != self.expected[..] {
            return Err(format!(
                "message {}/{}: payload bytes differ from what was published",
                stamp.publisher, stamp.seq
            ));
        }
        Ok(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u32, seq: u64) -> Stamp {
        Stamp {
            publisher,
            seq,
            sent_ns: 42,
        }
    }

    #[test]
    fn built_payloads_pass_the_check_and_differ_from_each_other() {
        let mut b = Builder::new(1024);
        let mut c = Checker::new(1024);
        let p1 = b.build(stamp(0, 1));
        let p2 = b.build(stamp(0, 2));
        assert_eq!(p1.len(), 1024);
        assert_eq!(c.check(&p1).map(|s| s.seq), Ok(1));
        assert_eq!(c.check(&p2).map(|s| s.seq), Ok(2));
        assert_ne!(p1[HEADER_LEN..], p2[HEADER_LEN..]);
        // Odd sizes: the tail is filled too.
        let mut b = Builder::new(37);
        let mut c = Checker::new(37);
        assert!(c.check(&b.build(stamp(3, 9))).is_ok());
    }

    #[test]
    fn corruption_and_wrong_sizes_are_reported() {
        let mut b = Builder::new(64);
        let mut c = Checker::new(64);
        let mut p = b.build(stamp(1, 5)).to_vec();
        p[40] ^= 1;
        assert!(c.check(&p).unwrap_err().contains("differ"));
        assert!(c.check(&p[..63]).unwrap_err().contains("63 bytes"));
        assert!(c.check(&p[..10]).unwrap_err().contains("too short"));
        // A header renumbered to another message does not match its filler.
        let mut q = b.build(stamp(1, 6)).to_vec();
        q[4..12].copy_from_slice(&7u64.to_be_bytes());
        assert!(c.check(&q).is_err());
    }

    #[test]
    fn filler_does_not_compress() {
        // Distinct 8-byte words: no repetition for LZ4 to find.
        let mut b = Builder::new(4096);
        let p = b.build(stamp(0, 0));
        let mut words: Vec<&[u8]> = p[HEADER_LEN..].chunks(8).collect();
        let n = words.len();
        words.sort();
        words.dedup();
        assert_eq!(words.len(), n);
    }
}
