//! The on-disk format: every record type round-trips, V1 bytes are pinned,
//! and decoding arbitrary bytes never panics.

use proptest::prelude::*;

use super::{full_message, full_session, queued};
use crate::error::RecordError;
use crate::record::{decode, decode_queued, encode, FifoMeta, QueueMeta, StoreMarker};
use crate::{
    FifoItem, InflightStage, InflightState, QueuedMessage, SessionRecord, StoredMessage,
    StoredMessageId, FORMAT_V2,
};

fn round_trip<T>(record: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode("test record", record).unwrap();
    assert_eq!(bytes[0], FORMAT_V2);
    assert_eq!(&decode::<T>(&bytes).unwrap(), record);
}

#[test]
fn every_record_type_round_trips() {
    round_trip(&full_session());
    round_trip(&super::session());
    round_trip(&full_message("a/b"));
    round_trip(&StoredMessage::default());
    let mut q = queued(3);
    q.message = full_message("q");
    q.id = StoredMessageId {
        boot: u64::MAX,
        seq: 12,
    };
    round_trip(&q);
    assert_eq!(decode_queued(&encode("q", &q).unwrap()).unwrap(), q);
    round_trip(&InflightState {
        packet_id: 65535,
        stage: InflightStage::Released,
    });
    round_trip(&QueueMeta {
        next_seq: u64::MAX,
        len: 3,
    });
    round_trip(&fifo_item());
    round_trip(&FifoMeta {
        next_seq: u64::MAX,
        first_seq: 7,
        len: 3,
        bytes: 1 << 40,
    });
    round_trip(&StoreMarker {
        created_by: "roost 0.1.0".into(),
    });
}

fn fifo_item() -> FifoItem {
    FifoItem {
        enqueued_at_ms: 1_700_000_123_456,
        payload: bytes::Bytes::from_static(b"\x00opaque\xff"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// FORMAT_V2 is frozen: if this fails, a record type in `record.rs` changed
/// shape. Do not update the expected bytes: add a new format version. V2 is
/// V1 with the format byte 2, and a queued message's identity at its end.
#[test]
fn format_v2_bytes_are_frozen() {
    let v2 = |v1: &str| format!("02{}", &v1[2..]);
    let session = encode("session", &full_session()).unwrap();
    assert_eq!(hex(&session), v2(SESSION_V1));
    let mut q = queued(1);
    q.message = full_message("t");
    q.id = StoredMessageId { boot: 258, seq: 7 };
    let queued = encode("queued", &q).unwrap();
    assert_eq!(hex(&queued), format!("{}820207", v2(QUEUED_V1)));
    let inflight = encode(
        "inflight",
        &InflightState {
            packet_id: 300,
            stage: InflightStage::Released,
        },
    )
    .unwrap();
    assert_eq!(hex(&inflight), "02ac0201");
    let meta = encode(
        "meta",
        &QueueMeta {
            next_seq: 5,
            len: 2,
        },
    )
    .unwrap();
    assert_eq!(hex(&meta), "020502");
    let item = encode("fifo item", &fifo_item()).unwrap();
    assert_eq!(hex(&item), "02c0949dffbc3108006f7061717565ff");
    let fifo_meta = FifoMeta {
        next_seq: 300,
        first_seq: 5,
        len: 2,
        bytes: 70_000,
    };
    let fifo_meta = encode("fifo meta", &fifo_meta).unwrap();
    assert_eq!(hex(&fifo_meta), "02ac020502f0a204");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What V1 wrote is still read: the same records, a queued message with
/// no identity.
#[test]
fn format_v1_bytes_are_still_read() {
    assert_eq!(
        decode::<SessionRecord>(&unhex(SESSION_V1)).unwrap(),
        full_session()
    );
    let mut q = queued(1);
    q.message = full_message("t");
    assert_eq!(decode_queued(&unhex(QUEUED_V1)).unwrap(), q);
    assert_eq!(
        decode::<InflightState>(&unhex("01ac0201")).unwrap(),
        InflightState {
            packet_id: 300,
            stage: InflightStage::Released,
        }
    );
    assert_eq!(
        decode::<FifoItem>(&unhex("01c0949dffbc3108006f7061717565ff")).unwrap(),
        fifo_item()
    );
}

const SESSION_V1: &str = concat!(
    "01010205612f2b2f630101010101070c2473686172652f672f782f230000000000901c0180d095ffbc31010a77696c",
    "6c2f746f70696304676f6e650100011e013c0101010a746578742f706c61696e010a7265706c792f68657265010600",
    "636f7272ff02016b0176016b0276320201ffff03"
);
const QUEUED_V1: &str = concat!(
    "010100010101740b7061796c6f6164200001fe02010b7075626c69736865722d3101c0949dffbc310101010a746578",
    "742f706c61696e010a7265706c792f68657265010600636f7272ff02016b0176016b027632"
);

#[test]
fn trailing_bytes_empty_values_and_unknown_formats_are_errors() {
    let mut bytes = encode("session", &full_session()).unwrap();
    bytes.push(0);
    assert_eq!(
        decode::<SessionRecord>(&bytes),
        Err(RecordError::TrailingBytes(1))
    );
    assert_eq!(decode::<SessionRecord>(&[]), Err(RecordError::Empty));
    assert_eq!(
        decode::<SessionRecord>(&[0, 1]),
        Err(RecordError::UnknownFormat(0))
    );
    assert_eq!(
        decode::<SessionRecord>(&[9]),
        Err(RecordError::NewerFormat {
            found: 9,
            supported: 2
        })
    );
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode::<SessionRecord>(&bytes);
        let _ = decode::<QueuedMessage>(&bytes);
        let _ = decode_queued(&bytes);
        let _ = decode::<StoredMessage>(&bytes);
        let _ = decode::<InflightState>(&bytes);
        let _ = decode::<QueueMeta>(&bytes);
        let _ = decode::<FifoItem>(&bytes);
        let _ = decode::<FifoMeta>(&bytes);
    }

    #[test]
    fn decoding_a_damaged_record_never_panics(flip in any::<(usize, u8)>()) {
        let mut bytes = encode("session", &full_session()).unwrap();
        let at = 1 + flip.0 % (bytes.len() - 1);
        bytes[at] ^= flip.1;
        let _ = decode::<SessionRecord>(&bytes);
    }
}
