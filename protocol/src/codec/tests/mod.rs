//! Codec tests: hand-written edge cases, proptest round trips, a bounded
//! fuzz of the decoder, and a differential test against mqttbytes (3.1.1).

use bytes::BytesMut;

use super::{decode, encode, DecodeError};
use crate::packet::{Packet, ProtocolVersion};

mod differential;
mod edge_acks;
mod edge_frame;
mod roundtrip;
mod strategies;

const V311: Option<ProtocolVersion> = Some(ProtocolVersion::V311);
const V5: Option<ProtocolVersion> = Some(ProtocolVersion::V5);

/// A frame with a one byte remaining length.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).expect("test bodies are short");
    assert!(len < 128);
    let mut out = vec![first, len];
    out.extend_from_slice(body);
    out
}

/// Decodes `bytes` with no size limit.
fn dec(bytes: &[u8], v: Option<ProtocolVersion>) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), v, u32::MAX)
}

/// Decodes exactly one complete packet, which must consume all of `bytes`.
fn dec_one(bytes: &[u8], v: Option<ProtocolVersion>) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, v, u32::MAX)
        .expect("valid")
        .expect("complete");
    assert!(buf.is_empty(), "packet left {} bytes", buf.len());
    packet
}

fn enc(packet: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, v, &mut buf).expect("encodable");
    buf.to_vec()
}

fn malformed(r: Result<Option<Packet>, DecodeError>) -> bool {
    matches!(r, Err(DecodeError::Malformed(_)))
}

fn protocol(r: Result<Option<Packet>, DecodeError>) -> bool {
    matches!(r, Err(DecodeError::Protocol(_)))
}
