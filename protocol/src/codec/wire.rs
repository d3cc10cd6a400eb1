//! Wire primitives shared by the decoder and the encoder: the bounds-checked
//! [`Reader`] over one frame, and the [`Sink`] the encoder writes through
//! twice (once into a [`Counter`] to learn the remaining length, once into
//! the real buffer), so sizes and bytes can never disagree.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::{DecodeError, EncodeError};
use crate::packet::UserProperty;

/// Largest value of a variable byte integer: 4 bytes of 7 bits. [MQTT-1.5.5]
pub(crate) const VARINT_MAX: u32 = 268_435_455;

/// Cursor over the bytes of one frame, already fully received. Every read is
/// bounds-checked: running out of bytes inside a frame is a malformed packet,
/// never a panic. Slices share the frame's allocation (zero copy).
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed("packet shorter than its fields"));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer inside the frame. [MQTT-1.5.5]
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match parse_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::Malformed("truncated variable byte integer")),
        }
    }

    /// `n` bytes, sharing the frame's allocation.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left in the frame (a PUBLISH payload, SUBACK reason codes).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two byte length, then that many bytes. [MQTT-1.5.6]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.bytes(usize::from(len))
    }

    /// A UTF-8 encoded string. Invalid UTF-8 (surrogates included) and
    /// U+0000 make the packet malformed. [MQTT-1.5.4-1] [MQTT-1.5.4-2]
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed("string contains U+0000"));
        }
        ByteString::try_from(raw).map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))
    }

    /// A UTF-8 string pair (user property). [MQTT-1.5.7]
    pub(crate) fn string_pair(&mut self) -> Result<UserProperty, DecodeError> {
        Ok((self.string()?, self.string()?))
    }

    /// Splits off the next `len` bytes as their own reader (a property list).
    pub(crate) fn sub(&mut self, len: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.bytes(len)?))
    }

    /// Fails unless the whole frame has been consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes at the end of the packet",
            ))
        }
    }
}

/// Parses a variable byte integer at the front of `buf`. `Ok(None)` means the
/// encoding is not complete yet. More than 4 bytes, or a non-minimal encoding
/// (a final byte of 0 after a continuation), is malformed. [MQTT-1.5.5-1]
pub(crate) fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer not minimally encoded",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ));
    }
    Ok(None)
}

/// Where the encoder writes: a real buffer or a [`Counter`].
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that only counts bytes, to size a packet before writing it.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Number of bytes the variable byte integer encoding of `v` takes.
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer; values above [`VARINT_MAX`] do not fit.
pub(crate) fn put_varint<W: Sink>(w: &mut W, v: usize) -> Result<(), EncodeError> {
    let mut v = u32::try_from(v)
        .ok()
        .filter(|v| *v <= VARINT_MAX)
        .ok_or(EncodeError::PacketTooLarge(v))?;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            w.put_u8(byte);
            return Ok(());
        }
        w.put_u8(byte | 0x80);
    }
}

/// Binary data with its two byte length prefix. [MQTT-1.5.6]
pub(crate) fn put_binary<W: Sink>(w: &mut W, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::StringTooLong(data.len()))?;
    w.put_u16(len);
    w.put(data);
    Ok(())
}

/// A UTF-8 string; U+0000 is refused so that we never emit what we would
/// reject on decode. [MQTT-1.5.4-2]
pub(crate) fn put_string<W: Sink>(w: &mut W, s: &str) -> Result<(), EncodeError> {
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::Invalid("string contains U+0000"));
    }
    put_binary(w, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v).expect("fits");
            assert_eq!(buf.len(), varint_len(v));
            let parsed = parse_varint(&buf).expect("valid").expect("complete");
            assert_eq!(parsed, (v as u32, buf.len()));
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal() {
        let five = [0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        assert!(parse_varint(&five).is_err());
        assert!(parse_varint(&[0x80, 0x00]).is_err());
        assert_eq!(parse_varint(&[0x80, 0x80]), Ok(None));
        assert!(put_varint(&mut Counter::default(), 268_435_456).is_err());
    }
}
