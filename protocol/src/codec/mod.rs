//! The MQTT 3.1.1 and 5.0 codec: bytes to [`Packet`] and back.
//!
//! One entry point per direction for both protocol versions: [`decode`] takes
//! the version negotiated by CONNECT (or `None` before it) and [`encode`]
//! the version to write. [`encode_publish`] is the delivery fast path.
//!
//! Why our own codec rather than mqttbytes: it has two disjoint type families
//! for 3.1.1 and 5.0, rejects valid 5.0 DISCONNECTs (remaining length 0 or a
//! lone reason code), lacks AUTH, prints a `dbg!` on every 5.0 UNSUBSCRIBE and
//! allocates a `String` per PUBLISH topic.
//!
//! Invariants:
//! - decoding never panics and never allocates in proportion to a length
//!   field before the bytes it announces have arrived: a frame is only parsed
//!   once complete, and every read inside it is bounds-checked;
//! - decoded strings and payloads are zero-copy slices of the read buffer;
//! - every decode error carries the 5.0 reason code to close the connection
//!   with ([`DecodeError::reason_code`]);
//! - the codec is symmetric: whatever [`encode`] writes, [`decode`] reads
//!   back unchanged; values [`decode`] would reject are refused by [`encode`]
//!   with an [`EncodeError`]. 5.0-only fields (properties, reason codes) are
//!   dropped, or mapped, when writing 3.1.1;
//! - the encoder writes the shortest form (5.0 acks, DISCONNECT and AUTH omit
//!   a success reason code and empty properties).
//!
//! Topic name and filter syntax (wildcards, `$` topics) is checked by
//! `crate::topic`, not here; the codec only checks the wire format.

mod decode;
mod encode;
mod props;
mod wire;

#[cfg(test)]
mod tests;

use bytes::{Buf, BytesMut};

use crate::packet::{reason, Packet, ProtocolVersion, Publish};

/// Why a byte stream could not be decoded. Each variant maps to the 5.0
/// reason code the connection is closed with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a valid encoding of any packet. [MQTT-1.2] (reason 0x81)
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well formed, but forbidden by the protocol. (reason 0x82)
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The whole packet, fixed header included, exceeds the receiver's
    /// Maximum Packet Size (spec 3.1.2.11.4 and 3.2.2.3.6). (reason 0x95)
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// CONNECT with a protocol level other than 4 or 5, or an MQTT 3.1
    /// ("MQIsdp") CONNECT; carries the level. [MQTT-3.1.2-2] (reason 0x84)
    #[error("unsupported protocol version {0}")]
    UnsupportedProtocolVersion(u8),
    /// PUBLISH with a topic alias of 0. [MQTT-3.3.2-8] (reason 0x94)
    #[error("topic alias 0 is not permitted")]
    TopicAliasInvalid,
}

impl DecodeError {
    /// The 5.0 reason code for the DISCONNECT (or CONNACK) that ends the
    /// connection. [MQTT-2.4]
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicAliasInvalid => reason::TOPIC_ALIAS_INVALID,
        }
    }
}

/// Why a packet could not be encoded. Nothing is appended to the buffer
/// when encoding fails.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes. [MQTT-1.5.4]
    #[error("field of {0} bytes exceeds 65535")]
    StringTooLong(usize),
    /// A remaining length (or property length) above 268,435,455. [MQTT-1.5.5]
    #[error("length {0} exceeds 268435455")]
    PacketTooLarge(usize),
    /// A value the protocol does not allow, which the decoder would reject
    /// (packet id 0, no topic filters, AUTH in 3.1.1, ...).
    #[error("cannot encode: {0}")]
    Invalid(&'static str),
}

// Control packet types, the high nibble of the first byte. [MQTT-2.1.2]
pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBSCRIBE: u8 = 10;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGREQ: u8 = 12;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;
pub(crate) const AUTH: u8 = 15;

/// Decodes one packet from the front of `buf`.
///
/// `Ok(None)`: the packet is not complete yet and `buf` is untouched. A bad
/// first byte, a bad remaining length or a size above `max_packet_size`
/// (the whole packet, fixed header included) is reported as soon as the
/// bytes showing it have arrived, without waiting for the rest.
/// `Ok(Some)`: the packet's bytes have been split off `buf` (zero copy).
///
/// `version` is `None` until CONNECT has been decoded: only CONNECT is then
/// accepted [MQTT-3.1.0-1]. CONNECT always decodes with its own level.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some((remaining, len_len)) = wire::parse_varint(&buf[1..])? else {
        return Ok(None);
    };
    let header_len = 1 + len_len;
    let size = header_len.saturating_add(usize::try_from(remaining).unwrap_or(usize::MAX));
    let max = usize::try_from(max_packet_size).unwrap_or(usize::MAX);
    if size > max {
        return Err(DecodeError::PacketTooLarge { size, max });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header_len);
    decode::packet(first, frame, version).map(Some)
}

/// Checks the packet type and its flags, the low nibble. [MQTT-2.1.3-1]
fn check_first_byte(first: u8, version: Option<ProtocolVersion>) -> Result<(), DecodeError> {
    let kind = first >> 4;
    let flags = first & 0x0F;
    if kind == 0 {
        return Err(DecodeError::Malformed("reserved packet type 0"));
    }
    if kind == AUTH && version == Some(ProtocolVersion::V311) {
        return Err(DecodeError::Malformed(
            "packet type 15 is reserved in MQTT 3.1.1",
        ));
    }
    if version.is_none() && kind != CONNECT {
        return Err(DecodeError::Protocol("first packet must be CONNECT"));
    }
    match kind {
        PUBLISH => check_publish_flags(flags),
        // [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags != 0b0010 => {
            Err(DecodeError::Malformed("reserved flags must be 0010"))
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Ok(()),
        _ if flags != 0 => Err(DecodeError::Malformed("reserved flags must be 0")),
        _ => Ok(()),
    }
}

/// PUBLISH flags: DUP, QoS, RETAIN.
fn check_publish_flags(flags: u8) -> Result<(), DecodeError> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        // [MQTT-3.3.1-4]
        return Err(DecodeError::Malformed("PUBLISH with QoS 3"));
    }
    if qos == 0 && flags & 0b1000 != 0 {
        // [MQTT-3.3.1-2]
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    Ok(())
}

/// Appends the encoding of `packet` for `version` to `buf`. On error nothing
/// is appended.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode::framed(packet, version, buf)
}

/// Appends the encoding of a PUBLISH: the same bytes as
/// `encode(&Packet::Publish(p.clone()), ..)` without the clone. The broker
/// calls this for every delivery.
pub fn encode_publish(
    p: &Publish,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode::framed(p, version, buf)
}
