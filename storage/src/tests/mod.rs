//! Tests. `suite.rs` is the behaviour suite every engine passes (each test
//! runs once against RocksDB and once in memory); `rocks.rs` covers what
//! only a data dir has (reopen, lock, corrupt dir, format marker);
//! `model.rs` checks a queue against a `VecDeque` model with proptest;
//! `format.rs` pins the on-disk bytes; `fifo.rs` has the same three kinds
//! of tests for the FIFO queues of `bridge_queues`.
//!
//! Every RocksDB test uses its own fresh dir under `std::env::temp_dir()`
//! and removes it.

mod fifo;
mod format;
mod model;
mod rocks;
mod suite;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::engine::Op;
use crate::keys::ColumnFamily;
use crate::{
    ClientId, DeliveryRecord, ForwardedProperties, QueuedMessage, SessionRecord, Storage,
    StorageOptions, StoredMessage, StoredProtocol, StoredQos, StoredRetainHandling,
    StoredSubscription, StoredSubscriptionOptions, StoredWill,
};

/// A fresh, unique dir under the system temp dir, removed on drop (with any
/// quarantined sibling `<dir>.corrupt-*`).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "roost-storage-test-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let (Some(parent), Some(name)) = (self.0.parent(), self.0.file_name()) else {
            return;
        };
        let prefix = format!("{}.corrupt-", name.to_string_lossy());
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A store under test. The store is dropped before its dir is removed
/// (fields drop in declaration order).
pub(crate) struct Fixture {
    pub(crate) storage: Storage,
    /// Held only to remove the dir on drop, after the store.
    _dir: Option<TempDir>,
}

impl Fixture {
    pub(crate) fn memory() -> Fixture {
        Fixture {
            storage: Storage::in_memory(StorageOptions::default()),
            _dir: None,
        }
    }

    pub(crate) fn rocks(name: &str) -> Fixture {
        let dir = TempDir::new(name);
        let storage = Storage::open(dir.path(), StorageOptions::default()).expect("open store");
        Fixture {
            storage,
            _dir: Some(dir),
        }
    }
}

/// Write raw bytes under a key, bypassing the record layer (the RocksDB
/// handle or the memory maps), to plant corrupt or future records.
pub(crate) fn raw_put(storage: &Storage, cf: ColumnFamily, key: &[u8], value: &[u8]) {
    let op = Op::Put(cf, key.to_vec(), value.to_vec());
    storage.engine().write(vec![op], false).expect("raw write");
}

pub(crate) fn client(id: &str) -> ClientId {
    ClientId::new(id.to_string())
}

fn props() -> ForwardedProperties {
    ForwardedProperties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr\xff")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
    }
}

/// A message with every field set.
pub(crate) fn full_message(topic: &str) -> StoredMessage {
    StoredMessage {
        topic: topic.into(),
        payload: Bytes::from_static(b"payload \x00\x01\xfe"),
        qos: StoredQos::ExactlyOnce,
        retain: true,
        publisher: "publisher-1".into(),
        expires_at_ms: Some(1_700_000_123_456),
        properties: props(),
    }
}

/// A session record with every field set.
pub(crate) fn full_session() -> SessionRecord {
    let options = StoredSubscriptionOptions {
        qos: StoredQos::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: StoredRetainHandling::OnNewSubscribe,
    };
    SessionRecord {
        protocol: StoredProtocol::V5,
        subscriptions: vec![
            StoredSubscription {
                filter: "a/+/c".into(),
                options,
                identifier: Some(7),
            },
            StoredSubscription {
                filter: "$share/g/x/#".into(),
                options: StoredSubscriptionOptions::default(),
                identifier: None,
            },
        ],
        expiry_interval_secs: 3600,
        disconnected_at_ms: Some(1_700_000_000_000),
        will: Some(StoredWill {
            topic: "will/topic".into(),
            payload: Bytes::from_static(b"gone"),
            qos: StoredQos::AtLeastOnce,
            retain: false,
            delay_interval_secs: Some(30),
            message_expiry_interval_secs: Some(60),
            properties: props(),
        }),
        awaiting_pubrel: vec![1, 65535],
    }
}

/// A minimal session record.
pub(crate) fn session() -> SessionRecord {
    SessionRecord {
        protocol: StoredProtocol::V311,
        subscriptions: Vec::new(),
        expiry_interval_secs: 60,
        disconnected_at_ms: None,
        will: None,
        awaiting_pubrel: Vec::new(),
    }
}

/// Queue entry number `i`: its topic and payload carry `i`.
pub(crate) fn queued(i: u64) -> QueuedMessage {
    QueuedMessage {
        delivery: DeliveryRecord {
            qos: StoredQos::AtLeastOnce,
            retain: false,
            subscription_ids: vec![1],
        },
        message: StoredMessage {
            topic: format!("t/{i}"),
            payload: Bytes::from(i.to_be_bytes().to_vec()),
            qos: StoredQos::AtLeastOnce,
            ..StoredMessage::default()
        },
        id: crate::StoredMessageId::default(),
    }
}

/// The `i` a [`queued`] entry was built from.
pub(crate) fn queued_index(m: &QueuedMessage) -> u64 {
    let bytes: [u8; 8] = m.message.payload[..].try_into().expect("8-byte payload");
    u64::from_be_bytes(bytes)
}

/// The broker shares one `Storage` between actors, hands batches across
/// threads, and wraps errors in anyhow at the binary edge.
#[test]
fn storage_is_send_sync_and_batch_is_send() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send_sync::<Storage>();
    send::<crate::Batch>();
    error::<crate::StorageError>();
}
