//! Reading the store: loading sessions and retained messages at start, and
//! paging a session's queue.
//!
//! Every read decodes through [`Storage::decode_or_report`]: a corrupt record
//! is logged, counted and skipped; a record of a newer format fails the read.

use roost_protocol::ClientId;

use crate::error::{RecordError, Result, StorageError};
use crate::keys::{self, ColumnFamily, QueueKey};
use crate::record::{
    AwaitingRel, InflightState, QueueMeta, QueuedMessage, SessionRecord, StoredMessage,
};
use crate::storage::Storage;

/// One message of a session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub seq: u64,
    pub message: QueuedMessage,
    /// Set once the message was sent (QoS 1/2) and not yet acknowledged.
    pub inflight: Option<InflightState>,
}

/// A page of a session's queue, in seq order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<QueueEntry>,
    /// Seqs in this page whose message could not be decoded (reported and
    /// counted). They stay in the queue, and in `queue_len`, until removed:
    /// the caller removes them to drop them.
    pub corrupt: Vec<u64>,
}

impl Page {
    /// The last seq this page covered: continue with `page(c, last, n)`.
    /// `None` when the page is empty (the end of the queue).
    pub fn last_seq(&self) -> Option<u64> {
        let entry = self.entries.last().map(|e| e.seq);
        let corrupt = self.corrupt.last().copied();
        entry.max(corrupt)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.corrupt.is_empty()
    }
}

impl Storage {
    /// Every stored session, in client id byte order. Corrupt records are
    /// skipped (reported, counted).
    pub fn load_sessions(&self) -> Result<Vec<(ClientId, SessionRecord)>> {
        let mut sessions = Vec::new();
        let mut failed = None;
        self.engine()
            .scan(ColumnFamily::Sessions, &[], None, &mut |key, value| {
                match self.decode_session(key, value) {
                    Ok(Some(session)) => sessions.push(session),
                    Ok(None) => {}
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
                true
            })?;
        failed.map_or(Ok(sessions), Err)
    }

    /// One stored session (`None`: absent, or corrupt and reported).
    pub fn load_session(&self, client_id: &ClientId) -> Result<Option<SessionRecord>> {
        let key = client_id.as_str().as_bytes();
        match self.engine().get(ColumnFamily::Sessions, key)? {
            None => Ok(None),
            Some(value) => Ok(self.decode_session(key, &value)?.map(|(_, record)| record)),
        }
    }

    fn decode_session(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<(ClientId, SessionRecord)>> {
        let Ok(client) = std::str::from_utf8(key) else {
            let why = RecordError::BadKey("client id is not UTF-8");
            self.report_corrupt(ColumnFamily::Sessions, key, &why);
            return Ok(None);
        };
        let record: Option<SessionRecord> =
            self.decode_or_report(ColumnFamily::Sessions, key, value)?;
        let Some(mut record) = record else {
            return Ok(None);
        };
        // The inbound QoS 2 state written since the record
        // (`Batch::set_awaiting_rel`) joins the record's own.
        let cf = ColumnFamily::SessionMsgs;
        let rel_key = keys::awaiting_rel_key(client);
        if let Some(value) = self.engine().get(cf, &rel_key)? {
            let ids: Option<AwaitingRel> = self.decode_or_report(cf, &rel_key, &value)?;
            for id in ids.map(|a| a.0).unwrap_or_default() {
                if !record.awaiting_pubrel.contains(&id) {
                    record.awaiting_pubrel.push(id);
                }
            }
        }
        Ok(Some((ClientId::new(client.to_string()), record)))
    }

    /// Every retained message, in topic byte order. Corrupt records (and
    /// records whose topic differs from their key) are skipped, reported and
    /// counted.
    pub fn load_retained(&self) -> Result<Vec<StoredMessage>> {
        let mut messages = Vec::new();
        let mut failed = None;
        let cf = ColumnFamily::Retained;
        self.engine().scan(cf, &[], None, &mut |key, value| {
            match self.decode_or_report::<StoredMessage>(cf, key, value) {
                Ok(Some(m)) if m.topic.as_bytes() == key => messages.push(m),
                Ok(Some(_)) => {
                    let why = RecordError::KeyMismatch("retained topic differs from its key");
                    self.report_corrupt(cf, key, &why);
                }
                Ok(None) => {}
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
            true
        })?;
        failed.map_or(Ok(messages), Err)
    }

    /// Every cluster record whose key starts with `prefix`, in key order, as
    /// (key, record). Corrupt records are skipped, reported and counted; a
    /// record of a newer format is an error.
    pub fn load_cluster<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        let mut failed = None;
        let cf = ColumnFamily::Cluster;
        self.engine()
            .scan(cf, prefix.as_bytes(), None, &mut |key, value| {
                if !key.starts_with(prefix.as_bytes()) {
                    return false;
                }
                match self.decode_or_report::<T>(cf, key, value) {
                    Ok(Some(record)) => match std::str::from_utf8(key) {
                        Ok(k) => out.push((k.to_owned(), record)),
                        Err(_) => {
                            let why = RecordError::KeyMismatch("cluster key is not UTF-8");
                            self.report_corrupt(cf, key, &why);
                        }
                    },
                    Ok(None) => {}
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
                true
            })?;
        failed.map_or(Ok(out), Err)
    }

    /// Up to `limit` messages of a session's queue with a seq above
    /// `after_seq` (0: from the start), with their inflight state. Memory use
    /// is bounded by `limit`, whatever the queue's length: page a long queue
    /// in with successive calls (`after_seq` = the previous page's
    /// [`Page::last_seq`]).
    pub fn page(&self, client_id: &ClientId, after_seq: u64, limit: usize) -> Result<Page> {
        let client = client_id.as_str();
        let prefix = keys::queue_prefix(client);
        let Some(lower) = keys::entries_after(client, after_seq) else {
            return Ok(Page::default());
        };
        let upper = keys::queue_end(&prefix);
        let mut pager = Pager {
            storage: self,
            prefix: &prefix,
            limit,
            page: Page::default(),
            failed: None,
        };
        self.engine().scan(
            ColumnFamily::SessionMsgs,
            &lower,
            Some(&upper),
            &mut |key, value| pager.visit(key, value),
        )?;
        match pager.failed {
            Some(e) => Err(e),
            None => Ok(pager.page),
        }
    }

    /// A queue's meta record; rebuilt by scanning the queue when it is
    /// missing or corrupt (reported).
    pub(crate) fn load_queue_meta(&self, client: &str) -> Result<QueueMeta> {
        let cf = ColumnFamily::SessionMsgs;
        let prefix = keys::queue_prefix(client);
        if let Some(value) = self.engine().get(cf, &prefix)? {
            if let Some(meta) = self.decode_or_report(cf, &prefix, &value)? {
                return Ok(meta);
            }
        }
        let mut meta = QueueMeta::EMPTY;
        let upper = keys::queue_end(&prefix);
        self.engine()
            .scan(cf, &prefix, Some(&upper), &mut |key, _| {
                if let Ok(QueueKey::Message(seq)) = keys::parse_queue_key(&prefix, key) {
                    meta.len += 1;
                    meta.next_seq = meta.next_seq.max(seq.saturating_add(1));
                }
                true
            })?;
        Ok(meta)
    }
}

/// The state of one [`Storage::page`] scan.
struct Pager<'a> {
    storage: &'a Storage,
    prefix: &'a [u8],
    limit: usize,
    page: Page,
    failed: Option<StorageError>,
}

impl Pager<'_> {
    fn messages(&self) -> usize {
        self.page.entries.len() + self.page.corrupt.len()
    }

    /// One key of the scan; false to stop.
    fn visit(&mut self, key: &[u8], value: &[u8]) -> bool {
        let cf = ColumnFamily::SessionMsgs;
        let result = match keys::parse_queue_key(self.prefix, key) {
            Ok(QueueKey::Message(seq)) => {
                if self.messages() >= self.limit {
                    return false;
                }
                self.message(seq, key, value)
            }
            Ok(QueueKey::Inflight(seq)) => self.inflight(seq, key, value),
            Ok(QueueKey::Meta | QueueKey::AwaitingRel) => Ok(()),
            Err(why) => {
                self.storage
                    .report_corrupt(cf, key, &RecordError::BadKey(why));
                Ok(())
            }
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    fn message(&mut self, seq: u64, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = ColumnFamily::SessionMsgs;
        let decode = crate::record::decode_queued;
        match self.storage.decode_or_report_with(cf, key, value, decode)? {
            Some(message) => self.page.entries.push(QueueEntry {
                seq,
                message,
                inflight: None,
            }),
            None => self.page.corrupt.push(seq),
        }
        Ok(())
    }

    /// An inflight state sorts right after its message. A corrupt one is
    /// reported and the message is treated as not sent yet (it will be sent
    /// again: at least once still holds).
    fn inflight(&mut self, seq: u64, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = ColumnFamily::SessionMsgs;
        match self.page.entries.last_mut() {
            Some(entry) if entry.seq == seq => {
                entry.inflight = self.storage.decode_or_report(cf, key, value)?;
            }
            _ if self.page.corrupt.last() == Some(&seq) => {}
            _ => {
                let why = RecordError::KeyMismatch("inflight state without its message");
                self.storage.report_corrupt(cf, key, &why);
            }
        }
        Ok(())
    }
}
