//! The outbound side of one client connection: a bounded byte buffer that
//! the connection and session actors encode packets into, and the writer
//! task that flushes it to the socket, running only while there is
//! something to write.
//!
//! Why not a message per packet to the connection actor: under load every
//! delivery would cost an actor hop and a syscall. Here producers append
//! encoded bytes under a short lock and the writer takes everything that
//! accumulated in one `write_all`: socket writes batch by themselves, and the
//! publish path has no hop between the session and the socket.
//!
//! Why the writer task is not permanent: an idle connection would pay a task
//! (~400 B) for nothing. The first append to an empty, unwatched buffer
//! spawns it (where a permanent writer would have been woken: the same
//! batching); it ends, handing the socket back, when the buffer is empty.
//! Producers do not write to the socket themselves: one syscall per
//! acknowledgement would cost more than the task (measured: QoS 1 at a
//! third of the throughput).
//!
//! Bounded: past `limit` bytes waiting, the client is not keeping up; the
//! append fails and the caller disconnects it (EMQX's force_shutdown).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use ractor::ActorRef;
use roost_protocol::codec;
use roost_protocol::{Packet, ProtocolVersion};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::AbortHandle;

use crate::broker::{BrokerCtx, Counters};
use crate::connection::ConnectionMsg;

/// Buffer capacity kept once everything is written (acknowledgements, small
/// messages); a bigger one, after a burst, is freed: an idle connection
/// should hold next to nothing.
const KEEP_CAPACITY: usize = 1024;

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
    /// Bytes not taken by the writer yet.
    buf: BytesMut,
    /// `None` while the writer task has it, and once shut down.
    socket: Option<OwnedWriteHalf>,
    /// The writer task, while one runs.
    writer: Option<AbortHandle>,
    closing: bool,
    /// Shut down or failed: `conn` was told.
    done: bool,
}

/// Shared between the connection actor, its session actor and the writer
/// task while it runs.
pub struct Outbound {
    inner: Mutex<Inner>,
    limit: usize,
    /// Largest packet the client accepts (its CONNECT Maximum Packet Size).
    max_packet_size: AtomicU32,
    /// Gets `WriterDone` once the socket is shut down or failed.
    conn: ActorRef<ConnectionMsg>,
    /// Bytes written to the socket are counted here (`bytes_sent`).
    ctx: Arc<BrokerCtx>,
}

impl Outbound {
    pub fn new(
        limit: usize,
        socket: OwnedWriteHalf,
        conn: ActorRef<ConnectionMsg>,
        ctx: Arc<BrokerCtx>,
    ) -> Arc<Outbound> {
        Arc::new(Outbound {
            // Empty until the first packet: most connections are idle most
            // of the time.
            inner: Mutex::new(Inner {
                buf: BytesMut::new(),
                socket: Some(socket),
                writer: None,
                closing: false,
                done: false,
            }),
            limit,
            max_packet_size: AtomicU32::new(u32::MAX),
            conn,
            ctx,
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
    pub fn send(
        self: &Arc<Self>,
        packet: &Packet,
        version: ProtocolVersion,
    ) -> Result<(), SendError> {
        self.append(|buf| codec::encode(packet, version, buf).map_err(|_| SendError::Encode))
    }

    /// Encode under one lock with the caller's own per-packet decisions:
    /// the session applies topic aliases and the client's Maximum Packet
    /// Size packet by packet, because whether one PUBLISH is written decides
    /// how the next one may refer to its topic. Past the limit: `Overflow`.
    pub fn encode_with<R>(
        self: &Arc<Self>,
        encode: impl FnOnce(&mut BytesMut) -> R,
    ) -> Result<R, SendError> {
        let mut inner = self.inner.lock();
        if inner.closing {
            return Err(SendError::Closed);
        }
        let r = encode(&mut inner.buf);
        let over = inner.buf.len() > self.limit;
        self.write(&mut inner);
        if over {
            return Err(SendError::Overflow);
        }
        Ok(r)
    }

    fn append(
        self: &Arc<Self>,
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
        self.write(&mut inner);
        if over {
            return Err(SendError::Overflow);
        }
        Ok(())
    }

    /// Stop accepting packets; what is queued is written, then the socket
    /// is shut down and the connection gets `WriterDone`.
    pub fn close(self: &Arc<Self>) {
        let mut inner = self.inner.lock();
        inner.closing = true;
        self.write(&mut inner);
    }

    /// The connection actor is gone: drop the socket and stop the writer
    /// task, written or not.
    pub fn abort(&self) {
        let mut inner = self.inner.lock();
        inner.closing = true;
        inner.done = true;
        inner.socket = None;
        inner.buf = BytesMut::new();
        if let Some(writer) = inner.writer.take() {
            writer.abort();
        }
    }

    /// Have what is queued written: start the writer task unless it runs
    /// (it takes what is appended meanwhile), or shut down once closing
    /// and everything is written.
    fn write(self: &Arc<Self>, inner: &mut Inner) {
        let Some(socket) = inner.socket.take() else {
            return; // the writer task has it, or we are done
        };
        if !inner.buf.is_empty() {
            let task = tokio::spawn(self.clone().run_writer(socket));
            inner.writer = Some(task.abort_handle());
        } else if inner.closing {
            drop(socket);
            self.finish(inner, None);
        } else {
            inner.socket = Some(socket);
        }
    }

    /// The writer task: writes everything that queued up, with one
    /// `write_all` per round, and gives the socket back once nothing is left.
    async fn run_writer(self: Arc<Self>, mut socket: OwnedWriteHalf) {
        let mut chunk = BytesMut::new();
        loop {
            {
                let mut inner = self.inner.lock();
                if inner.buf.is_empty() {
                    // Keep one buffer for the next round, if small.
                    let cap = chunk.capacity();
                    if cap <= KEEP_CAPACITY && cap > inner.buf.capacity() {
                        std::mem::swap(&mut inner.buf, &mut chunk);
                    }
                    if inner.buf.capacity() > KEEP_CAPACITY {
                        inner.buf = BytesMut::new();
                    }
                    inner.writer = None;
                    inner.socket = Some(socket);
                    // Shuts down now if closing.
                    return self.write(&mut inner);
                }
                std::mem::swap(&mut inner.buf, &mut chunk);
            }
            if let Err(e) = socket.write_all(&chunk).await {
                let mut inner = self.inner.lock();
                inner.writer = None;
                return self.finish(&mut inner, Some(e));
            }
            Counters::add(&self.ctx.counters.bytes_sent, chunk.len() as u64);
            chunk.clear();
        }
    }

    /// Shut the socket down (dropping the write half sends FIN) and tell
    /// the connection, once.
    fn finish(&self, inner: &mut Inner, error: Option<io::Error>) {
        inner.closing = true;
        inner.socket = None;
        if !std::mem::replace(&mut inner.done, true) {
            let _ = self.conn.cast(ConnectionMsg::WriterDone(error));
        }
    }
}
