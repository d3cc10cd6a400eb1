//! Column families and key layouts.
//!
//! | column family   | key                                         | value                 |
//! |-----------------|---------------------------------------------|-----------------------|
//! | `default`       | `roost.store`                               | `StoreMarker`         |
//! | `sessions`      | client id (UTF-8)                           | `SessionRecord`       |
//! | `session_msgs`  | `queue(c)` = `len(c) u16 BE` ++ `c`          | `QueueMeta`           |
//! | `session_msgs`  | `queue(c)` ++ `seq u64 BE` ++ `0x00`         | `QueuedMessage`       |
//! | `session_msgs`  | `queue(c)` ++ `seq u64 BE` ++ `0x01`         | `InflightState`       |
//! | `session_msgs`  | `queue(c)` ++ `u64::MAX BE` ++ `0x02`        | `AwaitingRel`         |
//! | `retained`      | topic (UTF-8)                               | `StoredMessage`       |
//! | `cluster`       | `member/<node name>` (roost-cluster)         | its `MemberRecord`    |
//! | `bridge_queues` | `fifo(q)` = `len(q) u16 BE` ++ `q`           | `FifoMeta`            |
//! | `bridge_queues` | `fifo(q)` ++ `seq u64 BE`                    | `FifoItem`            |
//!
//! The length prefix makes `queue(c)` prefix-free: every key that starts with
//! it belongs to client `c`, so one range is one session's queue, and
//! big-endian seqs sort a queue in FIFO order. A message's inflight state
//! sorts right after the message, so a page is one forward scan. The
//! inbound QoS 2 state of the session (packet ids awaiting PUBREL) sits at
//! the end of the queue's range (seq `u64::MAX` is never assigned), so it
//! goes with the queue when the session is deleted.
//!
//! `bridge_queues` holds named FIFO queues (`fifo.rs`: the overflow
//! mailboxes of bridges, later of cross-node forwarding). The same length
//! prefix makes `fifo(q)` prefix-free, so one range is one queue; the meta
//! record sorts first (the bare prefix) and the entries follow in seq order.
//! A queue name is at most 65,535 bytes (longer ones are refused, never
//! truncated: two long names must not share a queue).

/// The column families. `Default` holds the store marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnFamily {
    Default,
    Sessions,
    SessionMsgs,
    Retained,
    Cluster,
    BridgeQueues,
}

impl ColumnFamily {
    pub const ALL: [ColumnFamily; 6] = [
        ColumnFamily::Default,
        ColumnFamily::Sessions,
        ColumnFamily::SessionMsgs,
        ColumnFamily::Retained,
        ColumnFamily::Cluster,
        ColumnFamily::BridgeQueues,
    ];

    /// The RocksDB column family name (stable: it is on disk).
    pub fn name(self) -> &'static str {
        match self {
            ColumnFamily::Default => "default",
            ColumnFamily::Sessions => "sessions",
            ColumnFamily::SessionMsgs => "session_msgs",
            ColumnFamily::Retained => "retained",
            ColumnFamily::Cluster => "cluster",
            ColumnFamily::BridgeQueues => "bridge_queues",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Key of the store marker in the default column family.
pub(crate) const MARKER_KEY: &[u8] = b"roost.store";

const TAG_MESSAGE: u8 = 0;
const TAG_INFLIGHT: u8 = 1;
const TAG_AWAITING_REL: u8 = 2;

/// `len(c) u16 BE ++ c`: the queue prefix and the key of its `QueueMeta`.
/// MQTT bounds a client id to 65,535 bytes [MQTT-1.5.4], so the length fits.
pub(crate) fn queue_prefix(client_id: &str) -> Vec<u8> {
    let bytes = client_id.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + bytes.len() + 9);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes[..usize::from(len)]);
    key
}

fn entry_key(client_id: &str, seq: u64, tag: u8) -> Vec<u8> {
    let mut key = queue_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key.push(tag);
    key
}

pub(crate) fn message_key(client_id: &str, seq: u64) -> Vec<u8> {
    entry_key(client_id, seq, TAG_MESSAGE)
}

pub(crate) fn inflight_key(client_id: &str, seq: u64) -> Vec<u8> {
    entry_key(client_id, seq, TAG_INFLIGHT)
}

pub(crate) fn awaiting_rel_key(client_id: &str) -> Vec<u8> {
    entry_key(client_id, u64::MAX, TAG_AWAITING_REL)
}

/// The first key of `client_id`'s queue entries with a seq above `after`;
/// `None` when no seq can follow `after`.
pub(crate) fn entries_after(client_id: &str, after: u64) -> Option<Vec<u8>> {
    after
        .checked_add(1)
        .map(|seq| entry_key(client_id, seq, TAG_MESSAGE))
}

/// The end (exclusive) of the range of keys that start with `prefix`, for a
/// queue prefix: queue keys are the prefix plus at most 9 bytes, so the
/// prefix plus ten 0xFF bytes sorts after all of them and before any key
/// that does not start with the prefix.
pub(crate) fn queue_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = Vec::with_capacity(prefix.len() + 10);
    end.extend_from_slice(prefix);
    end.extend_from_slice(&[u8::MAX; 10]);
    end
}

/// `len(q) u16 BE ++ q`: the FIFO queue prefix and the key of its
/// `FifoMeta`; `None` when the name is longer than 65,535 bytes.
pub(crate) fn fifo_prefix(name: &str) -> Option<Vec<u8>> {
    let bytes = name.as_bytes();
    let len = u16::try_from(bytes.len()).ok()?;
    let mut key = Vec::with_capacity(2 + bytes.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(bytes);
    Some(key)
}

/// The key of entry `seq` of the FIFO queue with this prefix.
pub(crate) fn fifo_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of a FIFO entry key (`None`: the meta key); an error for a key
/// that is neither.
pub(crate) fn parse_fifo_key(prefix: &[u8], key: &[u8]) -> Result<Option<u64>, &'static str> {
    match key.strip_prefix(prefix) {
        None => Err("key outside its queue's range"),
        Some([]) => Ok(None),
        Some(&[s0, s1, s2, s3, s4, s5, s6, s7]) => {
            Ok(Some(u64::from_be_bytes([s0, s1, s2, s3, s4, s5, s6, s7])))
        }
        Some(_) => Err("fifo key suffix is not a seq (8 bytes)"),
    }
}

/// What a key inside one queue's range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueKey {
    Meta,
    Message(u64),
    Inflight(u64),
    AwaitingRel,
}

/// Parse a key of the `session_msgs` family that starts with `prefix`.
pub(crate) fn parse_queue_key(prefix: &[u8], key: &[u8]) -> Result<QueueKey, &'static str> {
    let suffix = key
        .strip_prefix(prefix)
        .ok_or("key outside its queue's range")?;
    if suffix.is_empty() {
        return Ok(QueueKey::Meta);
    }
    let (seq, tag) = match suffix {
        [s0, s1, s2, s3, s4, s5, s6, s7, tag] => (
            u64::from_be_bytes([*s0, *s1, *s2, *s3, *s4, *s5, *s6, *s7]),
            *tag,
        ),
        _ => return Err("queue key suffix is not seq (8 bytes) + tag (1 byte)"),
    };
    match tag {
        TAG_MESSAGE => Ok(QueueKey::Message(seq)),
        TAG_INFLIGHT => Ok(QueueKey::Inflight(seq)),
        TAG_AWAITING_REL if seq == u64::MAX => Ok(QueueKey::AwaitingRel),
        _ => Err("unknown queue key tag"),
    }
}

/// A key made printable for logs and reports: UTF-8 as is, other bytes
/// escaped.
pub(crate) fn printable(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}
