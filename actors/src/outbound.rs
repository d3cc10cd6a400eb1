//! The outbound side of one client connection: a bounded byte buffer that
//! the connection and session actors encode packets into, and the writer
//! task that flushes it to the socket.
//!
//! Why not a message per packet to the connection actor: under load every
//! delivery would cost an actor hop and a syscall. Here producers append
//! encoded bytes under a short lock and the writer takes everything that
//! accumulated in one `write_all`: socket writes batch by themselves, and the
//! publish path has no hop between the session and the socket.
//!
//! Bounded: past `limit` bytes waiting, the client is not keeping up; the
//! append fails and the caller disconnects it (EMQX's force_shutdown).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use roost_protocol::codec;
use roost_protocol::{Packet, ProtocolVersion};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Why an append was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The buffer is over its limit: the client does not read fast enough.
    Overflow,
    /// The connection is closing or closed.
    Closed,
    /// The packet is larger than the client's Maximum Packet Size; it was
    /// not sent. [MQTT-3.1.2-25]
    TooLarge,
    /// The packet could not be encoded (a field too long).
    Encode,
}

struct Inner {
    buf: BytesMut,
    closing: bool,
}

/// Shared between the connection actor, its session actor and the writer.
pub struct Outbound {
    inner: Mutex<Inner>,
    notify: Notify,
    limit: usize,
    /// Largest packet the client accepts (its CONNECT Maximum Packet Size).
    max_packet_size: std::sync::atomic::AtomicU32,
}

impl Outbound {
    pub fn new(limit: usize) -> Arc<Outbound> {
        Arc::new(Outbound {
            inner: Mutex::new(Inner {
                buf: BytesMut::with_capacity(4096),
                closing: false,
            }),
            notify: Notify::new(),
            limit,
            max_packet_size: std::sync::atomic::AtomicU32::new(u32::MAX),
        })
    }

    pub fn set_max_packet_size(&self, max: u32) {
        self.max_packet_size.store(max, Ordering::Relaxed);
    }

    /// Bytes that may wait before the client counts as not keeping up.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The client's Maximum Packet Size (u32::MAX when it set none).
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size.load(Ordering::Relaxed)
    }

    /// Encode and queue one packet.
    pub fn send(&self, packet: &Packet, version: ProtocolVersion) -> Result<(), SendError> {
        self.append(|buf| codec::encode(packet, version, buf).map_err(|_| SendError::Encode))
    }

    /// Encode under one lock with the caller's own per-packet decisions:
    /// the session applies topic aliases and the client's Maximum Packet
    /// Size packet by packet, because whether one PUBLISH is written decides
    /// how the next one may refer to its topic. Past the limit: `Overflow`.
    pub fn encode_with<R>(&self, encode: impl FnOnce(&mut BytesMut) -> R) -> Result<R, SendError> {
        let mut inner = self.inner.lock();
        if inner.closing {
            return Err(SendError::Closed);
        }
        let r = encode(&mut inner.buf);
        let over = inner.buf.len() > self.limit;
        drop(inner);
        self.notify.notify_one();
        if over {
            return Err(SendError::Overflow);
        }
        Ok(r)
    }

    fn append(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let max = self.max_packet_size.load(Ordering::Relaxed) as usize;
        let mut inner = self.inner.lock();
        if inner.closing {
            return Err(SendError::Closed);
        }
        let start = inner.buf.len();
        if let Err(e) = encode(&mut inner.buf) {
            inner.buf.truncate(start);
            return Err(e);
        }
        if inner.buf.len() - start > max {
            inner.buf.truncate(start);
            return Err(SendError::TooLarge);
        }
        let over = inner.buf.len() > self.limit;
        drop(inner);
        self.notify.notify_one();
        if over {
            return Err(SendError::Overflow);
        }
        Ok(())
    }

    /// Stop accepting packets; the writer flushes what is queued, then
    /// shuts the socket down.
    pub fn close(&self) {
        self.inner.lock().closing = true;
        self.notify.notify_one();
    }

    /// The writer loop: runs until `close` (after a flush) or a write error.
    pub async fn run_writer<W: AsyncWrite + Unpin>(&self, mut w: W) -> std::io::Result<()> {
        let mut spare = BytesMut::new();
        loop {
            let has_data = {
                let mut inner = self.inner.lock();
                if inner.buf.is_empty() {
                    if inner.closing {
                        break;
                    }
                    false
                } else {
                    std::mem::swap(&mut inner.buf, &mut spare);
                    true
                }
            };
            if !has_data {
                self.notify.notified().await;
                continue;
            }
            w.write_all(&spare).await?;
            spare.clear();
            // Do not keep a big buffer around after a burst: an idle
            // connection should cost next to nothing.
            if spare.capacity() > 64 * 1024 {
                spare = BytesMut::new();
            }
        }
        w.shutdown().await
    }
}
