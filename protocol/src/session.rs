//! Session bookkeeping: the outbound half of an MQTT session. [MQTT-4.1]
//!
//! Holds what the spec says survives a reconnect for the server -> client
//! direction: the subscriptions, the QoS 1/2 messages sent but not completely
//! acknowledged (the inflight window, keyed by packet id), the messages
//! waiting for room in the window or for the client to come back (the
//! bounded message queue), and the packet id allocator.
//!
//! Pure: no I/O, no clock of its own. Every operation takes `now` and appends
//! the packets to send to an `out` vector; the session actor writes them.
//!
//! Invariants:
//! - `inflight.len() <= window` except right after the window shrank on a
//!   reconnect (entries are never dropped to honour a smaller window);
//! - `mqueue.len() <= max_mqueue_len`: the oldest message is dropped and
//!   counted when a new one arrives at a full queue;
//! - messages leave the queue in arrival order and are redelivered in the
//!   order they were first sent [MQTT-4.6.0-1];
//! - every change to the state of a *stored* delivery (one with
//!   `Delivery::stored`, in a persistent session's durable queue) is
//!   recorded in the journal ([`SessionState::take_journal`]) by the same
//!   operation that produces the packets it implies: the session actor writes
//!   the journal to the store before it sends those packets, so the store
//!   never lags what the client has seen.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytestring::ByteString;

use crate::message::Delivery;
use crate::packet::{reason, Ack, Packet, QoS, SubscriptionOptions};

/// Limits of one session, taken from the broker config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our cap on unacknowledged outbound QoS 1/2 messages; the effective
    /// window is min(this, the client's Receive Maximum). [MQTT-3.3.4-9]
    pub max_inflight: u16,
    /// Messages queued while the window is full or the client is offline.
    pub max_mqueue_len: usize,
    /// Queue QoS 0 messages for an offline client (EMQX's mqueue_store_qos0).
    pub mqueue_store_qos0: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_inflight: 32,
            max_mqueue_len: 1000,
            mqueue_store_qos0: true,
        }
    }
}

/// One subscription of this session, keyed by its full filter (including a
/// `$share/group/` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// Counters of what this session dropped, by reason. Monotonic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub dropped_queue_full: u64,
    pub dropped_expired: u64,
    pub dropped_qos0_offline: u64,
}

/// A change to the state of a stored delivery, by its seq in the durable
/// queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Sent with this packet id; waiting for PUBACK (QoS 1) or PUBREC
    /// (QoS 2). Redelivered with DUP and the same id after a restart.
    Sent { seq: u64, packet_id: u16 },
    /// PUBREC received, PUBREL sent: after a restart the PUBREL is sent
    /// again, not the message.
    Released { seq: u64, packet_id: u16 },
    /// Finished with: acknowledged, sent at QoS 0, expired, dropped from a
    /// full queue or too large for the client. Remove it from the store.
    Done(u64),
}

#[derive(Debug, Clone)]
enum Stage {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Delivery),
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
struct Inflight {
    /// Send order, for in-order redelivery.
    seq: u64,
    /// Seq in the durable queue, for a stored delivery.
    stored: Option<u64>,
    stage: Stage,
}

/// An unexpected acknowledgement from the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no inflight message with packet id {0}")]
    UnknownPacketId(u16),
    #[error("packet id {0} is not in the state this acknowledgement expects")]
    WrongStage(u16),
}

/// The outbound state of one session.
#[derive(Debug, Clone)]
pub struct SessionState {
    config: SessionConfig,
    subscriptions: HashMap<ByteString, Subscription>,
    inflight: HashMap<u16, Inflight>,
    mqueue: VecDeque<Delivery>,
    window: u16,
    next_packet_id: u16,
    next_seq: u64,
    pub stats: SessionStats,
    journal: Vec<StoreOp>,
}

impl SessionState {
    pub fn new(config: SessionConfig) -> SessionState {
        let window = config.max_inflight.max(1);
        SessionState {
            config,
            subscriptions: HashMap::new(),
            inflight: HashMap::new(),
            mqueue: VecDeque::new(),
            window,
            next_packet_id: 1,
            next_seq: 0,
            stats: SessionStats::default(),
            journal: Vec::new(),
        }
    }

    /// Take the store changes recorded since the last call (empty for a
    /// session that holds no stored delivery).
    pub fn take_journal(&mut self, into: &mut Vec<StoreOp>) {
        into.append(&mut self.journal);
    }

    fn done(&mut self, d: &Delivery) {
        if let Some(seq) = d.stored {
            self.journal.push(StoreOp::Done(seq));
        }
    }

    /// Put back a message that was inflight when the node stopped (read
    /// from the store): it is resent on the next [`SessionState::resume`],
    /// with DUP and its original packet id, or as a PUBREL when `released`.
    /// Call in the original send order. Nothing is journaled: the store
    /// already has this state.
    pub fn restore_inflight(&mut self, packet_id: u16, d: Delivery, released: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored = d.stored;
        let stage = if released {
            Stage::Released
        } else {
            Stage::Publish(d)
        };
        self.inflight
            .insert(packet_id, Inflight { seq, stored, stage });
    }

    /// Room in the queue before it starts dropping the oldest message.
    pub fn mqueue_room(&self) -> usize {
        self.config.max_mqueue_len.saturating_sub(self.mqueue.len())
    }

    /// A connection attached: take its Receive Maximum (65535 when absent).
    pub fn set_client_receive_maximum(&mut self, receive_maximum: u16) {
        self.window = self.config.max_inflight.min(receive_maximum).max(1);
    }

    pub fn subscriptions(&self) -> &HashMap<ByteString, Subscription> {
        &self.subscriptions
    }

    /// Add or replace a subscription; true if it existed. [MQTT-3.8.4-3]
    pub fn subscribe(&mut self, filter: ByteString, sub: Subscription) -> bool {
        self.subscriptions.insert(filter, sub).is_some()
    }

    /// Remove a subscription; true if it existed.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    pub fn mqueue_len(&self) -> usize {
        self.mqueue.len()
    }

    /// Accept a message for this session. Online, it is sent at once when the
    /// window has room; otherwise it waits in the queue.
    pub fn deliver(&mut self, d: Delivery, online: bool, now: Instant, out: &mut Vec<Packet>) {
        if d.message.is_expired(now) {
            self.stats.dropped_expired += 1;
            self.done(&d);
            return;
        }
        if !online {
            if d.opts.qos == QoS::AtMostOnce && !self.config.mqueue_store_qos0 {
                self.stats.dropped_qos0_offline += 1;
                self.done(&d);
                return;
            }
            self.enqueue(d);
            return;
        }
        if d.opts.qos == QoS::AtMostOnce {
            // QoS 0 is not subject to the window. [MQTT-3.3.4-9]
            out.push(Packet::Publish(
                d.message.to_publish(&d.opts, 0, false, now),
            ));
            self.done(&d);
        } else if self.mqueue.is_empty() && self.window_has_room() {
            self.send_new(d, now, out);
        } else {
            self.enqueue(d);
        }
    }

    fn window_has_room(&self) -> bool {
        self.inflight.len() < usize::from(self.window)
    }

    fn enqueue(&mut self, d: Delivery) {
        if self.config.max_mqueue_len == 0 {
            self.stats.dropped_queue_full += 1;
            self.done(&d);
            return;
        }
        if self.mqueue.len() >= self.config.max_mqueue_len {
            if let Some(oldest) = self.mqueue.pop_front() {
                self.done(&oldest);
            }
            self.stats.dropped_queue_full += 1;
        }
        self.mqueue.push_back(d);
    }

    fn send_new(&mut self, d: Delivery, now: Instant, out: &mut Vec<Packet>) {
        let Some(packet_id) = self.allocate_packet_id() else {
            // Every id in use: cannot happen while window <= 65535 and the
            // window is honoured, but never lose the message.
            self.mqueue.push_front(d);
            return;
        };
        out.push(Packet::Publish(
            d.message.to_publish(&d.opts, packet_id, false, now),
        ));
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored = d.stored;
        if let Some(seq) = stored {
            self.journal.push(StoreOp::Sent { seq, packet_id });
        }
        self.inflight.insert(
            packet_id,
            Inflight {
                seq,
                stored,
                stage: Stage::Publish(d),
            },
        );
    }

    /// The exchange of `packet_id` is over.
    fn complete(&mut self, packet_id: u16) {
        if let Some(Inflight {
            stored: Some(seq), ..
        }) = self.inflight.remove(&packet_id)
        {
            self.journal.push(StoreOp::Done(seq));
        }
    }

    fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Move queued messages into the window while it has room.
    pub fn fill(&mut self, now: Instant, out: &mut Vec<Packet>) {
        while self.window_has_room() {
            let Some(d) = self.mqueue.pop_front() else {
                break;
            };
            if d.message.is_expired(now) {
                self.stats.dropped_expired += 1;
                self.done(&d);
            } else if d.opts.qos == QoS::AtMostOnce {
                out.push(Packet::Publish(
                    d.message.to_publish(&d.opts, 0, false, now),
                ));
                self.done(&d);
            } else {
                self.send_new(d, now, out);
            }
        }
    }

    /// PUBACK for a QoS 1 message. [MQTT-4.3.2]
    pub fn puback(
        &mut self,
        packet_id: u16,
        now: Instant,
        out: &mut Vec<Packet>,
    ) -> Result<(), AckError> {
        match self.inflight.get(&packet_id) {
            None => return Err(AckError::UnknownPacketId(packet_id)),
            Some(Inflight {
                stage: Stage::Publish(d),
                ..
            }) if d.opts.qos == QoS::AtLeastOnce => {}
            Some(_) => return Err(AckError::WrongStage(packet_id)),
        }
        self.complete(packet_id);
        self.fill(now, out);
        Ok(())
    }

    /// PUBREC for a QoS 2 message: answer PUBREL, or drop the message when
    /// the client refused it with a failure reason code. [MQTT-4.3.3]
    pub fn pubrec(
        &mut self,
        packet_id: u16,
        reason_code: u8,
        now: Instant,
        out: &mut Vec<Packet>,
    ) -> Result<(), AckError> {
        let entry = match self.inflight.get_mut(&packet_id) {
            Some(e) => e,
            None => {
                // [MQTT-4.3.3] answer with "Packet Identifier not found".
                out.push(Packet::PubRel(Ack::with_reason(
                    packet_id,
                    reason::PACKET_IDENTIFIER_NOT_FOUND,
                )));
                return Err(AckError::UnknownPacketId(packet_id));
            }
        };
        match &entry.stage {
            Stage::Publish(d) if d.opts.qos == QoS::ExactlyOnce => {}
            // A repeated PUBREC after our PUBREL: send PUBREL again.
            Stage::Released => {
                out.push(Packet::PubRel(Ack::new(packet_id)));
                return Ok(());
            }
            Stage::Publish(_) => return Err(AckError::WrongStage(packet_id)),
        }
        if reason_code >= 0x80 {
            self.complete(packet_id);
            self.fill(now, out);
        } else {
            entry.stage = Stage::Released;
            if let Some(seq) = entry.stored {
                self.journal.push(StoreOp::Released { seq, packet_id });
            }
            out.push(Packet::PubRel(Ack::new(packet_id)));
        }
        Ok(())
    }

    /// PUBCOMP: the QoS 2 exchange is complete.
    pub fn pubcomp(
        &mut self,
        packet_id: u16,
        now: Instant,
        out: &mut Vec<Packet>,
    ) -> Result<(), AckError> {
        match self.inflight.get(&packet_id) {
            None => return Err(AckError::UnknownPacketId(packet_id)),
            Some(Inflight {
                stage: Stage::Released,
                ..
            }) => {}
            Some(_) => return Err(AckError::WrongStage(packet_id)),
        }
        self.complete(packet_id);
        self.fill(now, out);
        Ok(())
    }

    /// The message with this packet id could not be sent (it is larger
    /// than the client's Maximum Packet Size): it is discarded and counts
    /// as delivered, freeing its slot in the window [MQTT-3.1.2-25]. Ids
    /// not awaiting a PUBACK or PUBREC are left alone.
    pub fn discard_unsendable(&mut self, packet_id: u16, now: Instant, out: &mut Vec<Packet>) {
        if let Some(Inflight {
            stage: Stage::Publish(_),
            ..
        }) = self.inflight.get(&packet_id)
        {
            self.complete(packet_id);
            self.fill(now, out);
        }
    }

    /// Everything this session still owes its client, for a handover to
    /// another node: the inflight exchanges in send order (packet id, and
    /// the delivery, or `None` when only the PUBREL is left), then the
    /// queue. Leaves the outbound state empty; nothing is journaled (the
    /// caller ends the session and its store).
    #[allow(clippy::type_complexity)]
    pub fn take_all(&mut self) -> (Vec<(u16, Option<Delivery>)>, Vec<Delivery>) {
        let mut inflight: Vec<(u64, u16, Stage)> = self
            .inflight
            .drain()
            .map(|(id, e)| (e.seq, id, e.stage))
            .collect();
        inflight.sort_unstable_by_key(|(seq, _, _)| *seq);
        let inflight = inflight
            .into_iter()
            .map(|(_, id, stage)| match stage {
                Stage::Publish(d) => (id, Some(d)),
                Stage::Released => (id, None),
            })
            .collect();
        self.journal.clear();
        (inflight, self.mqueue.drain(..).collect())
    }

    /// A connection (re)attached: resend every unacknowledged PUBLISH with
    /// DUP set and every PUBREL, in original order [MQTT-4.4.0-1], then fill
    /// the window from the queue.
    pub fn resume(&mut self, now: Instant, out: &mut Vec<Packet>) {
        let mut pending: Vec<(u64, u16)> =
            self.inflight.iter().map(|(id, e)| (e.seq, *id)).collect();
        pending.sort_unstable();
        for (_, id) in pending {
            // Onward delivery has started: resend even if the message expired
            // since. [MQTT-3.3.2-5] only drops copies not yet sent.
            let Some(entry) = self.inflight.get(&id) else {
                continue;
            };
            match &entry.stage {
                Stage::Publish(d) => out.push(Packet::Publish(
                    d.message.to_publish(&d.opts, id, true, now),
                )),
                Stage::Released => out.push(Packet::PubRel(Ack::new(id))),
            }
        }
        self.fill(now, out);
    }
}

#[cfg(test)]
mod tests;
