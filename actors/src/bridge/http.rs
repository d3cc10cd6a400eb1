//! The HTTP sink bridge: takes records from the overflow mailbox and POSTs
//! them as JSON to a URL, one request at a time, in order.
//!
//! # Semantics
//! - A batch is taken (at most `batch_size` records) and POSTed; the next
//!   batch only after this one is settled, so the sink sees messages in
//!   mailbox order, also across retries.
//! - 2xx: delivered (`sent`), acknowledged to the mailbox (in `durable`
//!   mode the records leave the store only now), next batch.
//! - 5xx, 408, 429, a connection error or no answer within
//!   `request_timeout`: the same batch (the same body) again after a
//!   backoff (`reconnect_min` doubling to `reconnect_max`), counted in
//!   `retried`, for as long as it takes (`request_ttl` bounds how old a
//!   message may get while queued, not while in flight).
//! - Any other status (3xx, 4xx): not retried; the batch is acknowledged
//!   and counted as dropped (`http_rejected`), with a warning at most
//!   every 10 s.
//! - States: `connecting` until the first connection; `connected` after a
//!   2xx or a successful connect; `blocked` after a 5xx/408/429 or a
//!   timeout (alive but not taking) and while paused; `disconnected` when
//!   the connection fails. An idle bridge checks its sink by connecting
//!   (health check) at start and after a failure.
//!
//! # Body
//! One message: `{"topic": "...", "payload": "...", "payload_encoding":
//! "utf8" | "base64", "retain": false, "enqueued_at_ms": 1700000000000}`.
//! With `batch_size > 1`: a JSON array of such objects (1 to `batch_size`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use super::actor::{open_mailbox, BridgeArgs};
use super::http_client::{exchange, Conn, Outcome, Target};
use super::{decode_record, BridgeHandle, BridgeSink, HttpSinkConfig, LinkState, Queued};
use crate::broker::unix_ms;
use crate::overflow::{OverflowEntry, OverflowMailbox};
use crate::AbortOnDrop;

pub struct HttpBridge;

pub enum HttpBridgeMsg {
    /// The mailbox has entries (at most one pending).
    Wake(Queued),
    /// Backoff over: resend the batch, or check the sink.
    Retry { gen: u64 },
    /// An exchange ended; the connection comes back when reusable.
    Answered {
        gen: u64,
        conn: Option<Box<Conn>>,
        outcome: Outcome,
    },
}

// Local-only (ractor's `cluster` feature: see the workspace Cargo.toml).
impl ractor::Message for HttpBridgeMsg {}

/// The batch being delivered.
struct Batch {
    /// The mailbox seq of its last record (acknowledged through).
    last_seq: u64,
    /// Push times of its messages (latency).
    enqueued_at_ms: Vec<u64>,
    body: Bytes,
}

pub struct HttpBridgeState {
    handle: Arc<BridgeHandle>,
    mailbox: Arc<OverflowMailbox>,
    sink: HttpSinkConfig,
    target: Arc<Target>,
    /// Tags exchanges and timers: stale ones are ignored.
    gen: u64,
    /// The idle kept-alive connection.
    conn: Option<Box<Conn>>,
    /// The exchange in flight.
    request: Option<AbortOnDrop>,
    /// A retry or health check is scheduled.
    timer: Option<AbortOnDrop>,
    batch: Option<Batch>,
    backoff: Duration,
}

impl Drop for HttpBridgeState {
    fn drop(&mut self) {
        // Also after a panic (ractor does not call post_stop then); the
        // request and timer tasks are aborted with their fields.
        self.handle.set_state(LinkState::Disconnected);
    }
}

impl Actor for HttpBridge {
    type Msg = HttpBridgeMsg;
    type State = HttpBridgeState;
    type Arguments = BridgeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HttpBridgeMsg>,
        args: BridgeArgs,
    ) -> Result<HttpBridgeState, ActorProcessingErr> {
        let BridgeArgs { handle, ctx } = args;
        let super::BridgeKind::Http(sink) = handle.config.kind.clone() else {
            return Err(format!("bridge {}: not an HTTP bridge", handle.name()).into());
        };
        let target = Arc::new(Target::parse(&handle.config.remote, &sink.headers)?);
        let mailbox = open_mailbox(&handle, &ctx).await?;
        let (me, queue) = (myself.clone(), handle.actor_queue.clone());
        mailbox.set_wake(Box::new(move || {
            let _ = me.cast(HttpBridgeMsg::Wake(queue.enter()));
        }));
        let bridge_sink = Arc::new(BridgeSink {
            mailbox: mailbox.clone(),
        });
        ctx.routes
            .attach_sink(handle.name(), &handle.config.local_topics, bridge_sink);
        handle.set_state(LinkState::Connecting);
        let mut st = HttpBridgeState {
            backoff: handle.config.reconnect_min,
            handle,
            mailbox,
            sink,
            target,
            gen: 0,
            conn: None,
            request: None,
            timer: None,
            batch: None,
        };
        // Health check: connect now, even with nothing to send.
        st.start_exchange(&myself, None);
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<HttpBridgeMsg>,
        msg: HttpBridgeMsg,
        st: &mut HttpBridgeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HttpBridgeMsg::Wake(_queued) => st.pump(&myself),
            HttpBridgeMsg::Retry { gen } if gen == st.gen => {
                st.timer = None;
                let body = st.batch.as_ref().map(|b| b.body.clone());
                if let Some(b) = &st.batch {
                    let n = b.enqueued_at_ms.len() as u64;
                    st.handle.counters.retried.fetch_add(n, Ordering::Relaxed);
                }
                st.start_exchange(&myself, body);
            }
            HttpBridgeMsg::Answered { gen, conn, outcome } if gen == st.gen => {
                st.request = None;
                st.conn = conn;
                st.answered(&myself, outcome);
            }
            // A stale timer or exchange.
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<HttpBridgeMsg>,
        st: &mut HttpBridgeState,
    ) -> Result<(), ActorProcessingErr> {
        info!(bridge = st.handle.name(), "bridge_stopped");
        Ok(())
    }
}

impl HttpBridgeState {
    fn name(&self) -> &str {
        self.handle.name()
    }

    /// Run one exchange in a task (the actor stays responsive); its result
    /// comes back as `Answered` tagged with a new generation.
    fn start_exchange(&mut self, myself: &ActorRef<HttpBridgeMsg>, body: Option<Bytes>) {
        self.gen += 1;
        let (gen, conn, target) = (self.gen, self.conn.take(), self.target.clone());
        let timeout = self.sink.request_timeout;
        let me = myself.clone();
        self.request = Some(AbortOnDrop(tokio::spawn(async move {
            let (conn, outcome) = exchange(conn.map(|c| *c), &target, body, timeout).await;
            let _ = me.cast(HttpBridgeMsg::Answered {
                gen,
                conn: conn.map(Box::new),
                outcome,
            });
        })));
    }

    /// Take the next batch and POST it, unless one is in flight, a retry
    /// is pending or the bridge is paused.
    fn pump(&mut self, myself: &ActorRef<HttpBridgeMsg>) {
        if self.handle.is_paused()
            || self.request.is_some()
            || self.timer.is_some()
            || self.batch.is_some()
        {
            return;
        }
        let entries = match self.mailbox.take(self.sink.batch_size.max(1)) {
            Ok(e) if e.is_empty() => return,
            Ok(e) => e,
            Err(e) => {
                warn!(bridge = self.name(), error = %e, "bridge_mailbox_read_failed");
                return;
            }
        };
        let Some(batch) = self.encode(entries) else {
            // Nothing decodable: settled already.
            return self.pump(myself);
        };
        let body = batch.body.clone();
        self.handle
            .inflight
            .store(batch.enqueued_at_ms.len() as u64, Ordering::Relaxed);
        self.batch = Some(batch);
        self.start_exchange(myself, Some(body));
    }

    /// The JSON body of `entries` (corrupt records are counted and left
    /// out); `None` when none was decodable (they are acknowledged).
    fn encode(&mut self, entries: Vec<OverflowEntry>) -> Option<Batch> {
        let last_seq = entries.last().map(|e| e.seq)?;
        let array = self.sink.batch_size > 1;
        let mut body = BytesMut::new();
        let mut enqueued_at_ms = Vec::with_capacity(entries.len());
        if array {
            body.put_u8(b'[');
        }
        for e in &entries {
            let Some((topic, retain, payload)) = decode_record(&e.payload) else {
                self.handle
                    .counters
                    .dropped_corrupt
                    .fetch_add(1, Ordering::Relaxed);
                warn!(bridge = self.name(), seq = e.seq, "bridge_record_corrupt");
                continue;
            };
            if !enqueued_at_ms.is_empty() {
                body.put_u8(b',');
            }
            json_message(&mut body, &topic, retain, &payload, e.enqueued_at_ms);
            enqueued_at_ms.push(e.enqueued_at_ms);
        }
        if array {
            body.put_u8(b']');
        }
        if enqueued_at_ms.is_empty() {
            self.ack(last_seq);
            return None;
        }
        Some(Batch {
            last_seq,
            enqueued_at_ms,
            body: body.freeze(),
        })
    }

    fn answered(&mut self, myself: &ActorRef<HttpBridgeMsg>, outcome: Outcome) {
        let cfg = &self.handle.config;
        match outcome {
            Outcome::Connected => {
                self.backoff = cfg.reconnect_min;
                self.handle.set_state(LinkState::Connected);
                self.pump(myself);
            }
            Outcome::Status(s) if (200..300).contains(&s) => {
                self.backoff = cfg.reconnect_min;
                self.handle.set_state(LinkState::Connected);
                if let Some(b) = self.batch.take() {
                    let c = &self.handle.counters;
                    c.sent
                        .fetch_add(b.enqueued_at_ms.len() as u64, Ordering::Relaxed);
                    let now = unix_ms();
                    for t in &b.enqueued_at_ms {
                        self.handle.latency.observe_ms(now.saturating_sub(*t));
                    }
                    self.ack(b.last_seq);
                }
                self.pump(myself);
            }
            Outcome::Status(s) if s >= 500 || s == 408 || s == 429 => {
                self.handle.set_state(LinkState::Blocked);
                self.failed(myself, &format!("HTTP status {s}"));
            }
            Outcome::Status(s) => {
                // The sink refuses these messages: retrying would not help.
                self.handle.set_state(LinkState::Connected);
                if let Some(b) = self.batch.take() {
                    let c = &self.handle.counters;
                    let n = b.enqueued_at_ms.len() as u64;
                    let total = c.dropped_http_rejected.fetch_add(n, Ordering::Relaxed) + n;
                    if c.may_log_drop() {
                        warn!(
                            bridge = self.name(),
                            status = s,
                            dropped = n,
                            dropped_http_rejected = total,
                            "bridge_http_rejected"
                        );
                    }
                    self.ack(b.last_seq);
                }
                self.pump(myself);
            }
            Outcome::TimedOut => {
                self.handle.set_state(LinkState::Blocked);
                let why = format!("no answer within {:?}", self.sink.request_timeout);
                self.failed(myself, &why);
            }
            Outcome::ConnectFailed(e) | Outcome::Failed(e) => {
                self.handle.set_state(LinkState::Disconnected);
                self.failed(myself, &e);
            }
        }
    }

    /// Retry (the batch, or the health check) after the backoff.
    fn failed(&mut self, myself: &ActorRef<HttpBridgeMsg>, reason: &str) {
        let c = &self.handle.counters;
        if c.may_log_drop() {
            warn!(
                bridge = self.name(),
                url = %self.handle.config.remote,
                reason,
                pending = self.batch.as_ref().map_or(0, |b| b.enqueued_at_ms.len()),
                retry_in_ms = self.backoff.as_millis() as u64,
                "bridge_http_failed"
            );
        }
        let (gen, me, backoff) = (self.gen, myself.clone(), self.backoff);
        self.timer = Some(AbortOnDrop(tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = me.cast(HttpBridgeMsg::Retry { gen });
        })));
        self.backoff = (self.backoff * 2).min(self.handle.config.reconnect_max);
    }

    fn ack(&mut self, seq: u64) {
        if let Err(e) = self.mailbox.ack(seq) {
            warn!(bridge = self.name(), error = %e, "bridge_mailbox_ack_failed");
        }
        self.handle.inflight.store(0, Ordering::Relaxed);
    }
}

/// One message as a JSON object (see the module doc).
fn json_message(out: &mut BytesMut, topic: &str, retain: bool, payload: &[u8], at_ms: u64) {
    let mut w = out.writer();
    // Writing JSON strings into memory cannot fail.
    let _ = std::io::Write::write_all(&mut w, b"{\"topic\":");
    let _ = serde_json::to_writer(&mut w, topic);
    let _ = std::io::Write::write_all(&mut w, b",\"payload\":");
    let encoding = match std::str::from_utf8(payload) {
        Ok(text) => {
            let _ = serde_json::to_writer(&mut w, text);
            "utf8"
        }
        Err(_) => {
            let _ = serde_json::to_writer(&mut w, &base64(payload));
            "base64"
        }
    };
    let out = w.into_inner();
    out.put_slice(b",\"payload_encoding\":\"");
    out.put_slice(encoding.as_bytes());
    out.put_slice(b"\",\"retain\":");
    out.put_slice(if retain { b"true" } else { b"false" });
    out.put_slice(b",\"enqueued_at_ms\":");
    out.put_slice(at_ms.to_string().as_bytes());
    out.put_u8(b'}');
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn messages_encode_as_json_text_or_base64() {
        let mut b = BytesMut::new();
        json_message(&mut b, "a/\"b", true, b"hi\n", 7);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"topic": "a/\"b", "payload": "hi\n",
                "payload_encoding": "utf8", "retain": true, "enqueued_at_ms": 7})
        );
        let mut b = BytesMut::new();
        json_message(&mut b, "t", false, &[0xff, 0], 1);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["payload"], "/wA=");
        assert_eq!(v["payload_encoding"], "base64");
    }
}
