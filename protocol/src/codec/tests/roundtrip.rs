//! Property tests: encode/decode round trips for both versions, incomplete
//! prefixes, and a bounded fuzz of the decoder (random bytes and mutations
//! of valid encodings) that must never panic.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies::packet;
use super::*;
use crate::codec::encode_publish;

/// The version to decode `packet` with: CONNECT comes before any version.
fn decode_version(packet: &Packet, v: ProtocolVersion) -> Option<ProtocolVersion> {
    match packet {
        Packet::Connect(_) => None,
        _ => Some(v),
    }
}

fn round_trip(packet: &Packet, v: ProtocolVersion) -> Result<(), TestCaseError> {
    let bytes = enc(packet, v);
    let mut buf = BytesMut::from(&bytes[..]);
    let decoded = decode(&mut buf, decode_version(packet, v), u32::MAX);
    prop_assert_eq!(decoded, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty());
    if let Packet::Publish(p) = packet {
        let mut fast = BytesMut::new();
        encode_publish(p, v, &mut fast).expect("encodable");
        prop_assert_eq!(&fast[..], &bytes[..]);
    }
    Ok(())
}

/// Decodes every packet in `bytes` until an error or an incomplete tail.
/// Every packet decoded must survive an encode/decode round trip.
fn decode_all(bytes: &[u8], version: Option<ProtocolVersion>, max: u32) {
    let mut buf = BytesMut::from(bytes);
    let mut version = version;
    while let Ok(Some(packet)) = decode(&mut buf, version, max) {
        let v = match &packet {
            Packet::Connect(c) => c.protocol,
            _ => version.expect("only CONNECT decodes without a version"),
        };
        let mut again = BytesMut::new();
        encode(&packet, v, &mut again).expect("a decoded packet re-encodes");
        let back = decode(&mut again, decode_version(&packet, v), u32::MAX);
        assert_eq!(back, Ok(Some(packet)));
        version = Some(v);
    }
}

/// A mutation applied to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: &usize| i % bytes.len();
    match m {
        Mutation::Set(i, b) => {
            let i = at(i);
            bytes[i] = *b;
        }
        Mutation::Flip(i, bit) => {
            let i = at(i);
            bytes[i] ^= 1 << bit;
        }
        Mutation::Insert(i, b) => {
            let i = at(i);
            bytes.insert(i, *b);
        }
        Mutation::Remove(i) => {
            let i = at(i);
            bytes.remove(i);
        }
    }
}

fn any_version() -> impl Strategy<Value = Option<ProtocolVersion>> {
    prop_oneof![Just(None), Just(V311), Just(V5)]
}

fn both_versions() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)]
}

proptest! {
    #[test]
    fn round_trip_v311(p in packet(ProtocolVersion::V311)) {
        round_trip(&p, ProtocolVersion::V311)?;
    }

    #[test]
    fn round_trip_v5(p in packet(ProtocolVersion::V5)) {
        round_trip(&p, ProtocolVersion::V5)?;
    }

    #[test]
    fn incomplete_prefix_is_none_and_untouched(
        (v, p) in both_versions().prop_flat_map(|v| (Just(v), packet(v))),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = enc(&p, v);
        let cut = cut.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..cut]);
        prop_assert_eq!(decode(&mut buf, decode_version(&p, v), u32::MAX), Ok(None));
        prop_assert_eq!(&buf[..], &bytes[..cut]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_random_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..96),
        version in any_version(),
        max in prop_oneof![Just(u32::MAX), 0u32..128],
    ) {
        decode_all(&bytes, version, max);
    }

    #[test]
    fn fuzz_mutated_encodings_never_panic(
        (v, p) in both_versions().prop_flat_map(|v| (Just(v), packet(v))),
        mutations in vec(mutation(), 1..4),
        version in any_version(),
    ) {
        let mut bytes = enc(&p, v);
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        decode_all(&bytes, version, u32::MAX);
        decode_all(&bytes, decode_version(&p, v), u32::MAX);
    }
}
