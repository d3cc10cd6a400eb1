//! What crosses the network between nodes, and how.
//!
//! Exactly two actors per node have network-serializable message types (and
//! so are mirrored to every peer by ractor_cluster, through the process
//! groups below): the membership actor ([`Control`]) and the ingress actor
//! ([`Data`]). Every other actor's messages are local-only. A message is one
//! enum encoded with postcard behind a version byte; a peer that sends a
//! version we do not know is logged and ignored, never trusted.
//!
//! Node names, not ractor_cluster's node ids, identify the sender: node ids
//! are per-connection counters that a restarted peer reuses.

use bytes::Bytes;
use ractor::message::BoxedDowncastErr;
use ractor::message::SerializedMessage;
use serde::{Deserialize, Serialize};

/// Process group of the membership actors (control plane).
pub const CONTROL_GROUP: &str = "roost.cluster.control";
/// Process group of the ingress actors (forwarded messages).
pub const DATA_GROUP: &str = "roost.cluster.data";

/// Bumped on an incompatible change of [`Control`] or [`Data`].
///
/// 2: a forwarded entry is a postcard byte string (length, then the bytes)
/// instead of a sequence of `u8`s, and the receiver reads entries in place
/// ([`DataRef`]). The bytes on the wire happen to be the same as version
/// 1's, but the version marks the change of declared types.
///
/// 3: `Hello` and `Heartbeat` carry the sender's cluster epoch, the
/// heartbeat the peers it sees up, route updates the epoch they belong to;
/// [`Control::Partition`] (issue #5).
///
/// 4: message identity after each forward entry and in hand-overs.
///
/// 5: `TakeoverWire::Piece` (a takeover message over 32 KiB goes in
/// pieces), which a version 4 peer cannot read.
///
/// 6: `TakeoverWire::Rebalance` and `RebalanceAnswer` (a rebalance
/// coordinator's orders to the donors).
pub const WIRE_VERSION: u8 = 6;

/// Membership, heartbeat and route replication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Control {
    /// Sent by both sides once a link is ready, and answered by nothing: the
    /// other side's own `Hello` is the answer.
    Hello(Hello),
    /// The sender will not keep this link (cluster name differs, ...).
    Refused {
        from: String,
        reason: String,
    },
    /// Every `heartbeat_interval` to every peer that is up. Carries the
    /// sender's route version: a receiver whose copy is behind asks for a
    /// snapshot, so routes converge even when a delta was lost.
    /// Also carries the peers the sender sees up: a node that has one of
    /// them down sees a partition.
    Heartbeat {
        from: String,
        epoch: u64,
        routes_version: u64,
        up: Vec<String>,
    },
    Routes(RouteUpdate),
    /// Please send a full route snapshot.
    RoutesWanted {
        from: String,
    },
    /// The sender leaves the cluster (`roost ctl cluster leave`): forget it.
    Leaving {
        from: String,
    },
    /// `roost ctl cluster force-leave NODE` on the sender: forget `node`.
    Forget {
        from: String,
        node: String,
    },
    /// Between partition supervisors: healing after a partition.
    Partition(crate::partition::PartitionWire),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster: String,
    pub from: String,
    /// Start time of the sender's process (ms since the Unix epoch), to
    /// tell a restarted peer from a reconnected one.
    pub incarnation: u64,
    /// Start of the sender's current cluster subtree ([`crate::ClusterShared::epoch`]).
    pub epoch: u64,
    /// `host:port` peers dial to reach the sender (a name, resolved again
    /// on every attempt).
    pub advertise: String,
    /// The members the sender knows, with their advertised addresses: a
    /// joining node learns the whole cluster from any one member.
    pub members: Vec<(String, String)>,
    /// Answer with a `Hello` of your own (the first one on a link, and one
    /// sent to repair a link only one side considers up).
    pub want_reply: bool,
}

/// The filters of the sender's sessions: a full snapshot, or a delta on top
/// of version `version - 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteUpdate {
    pub from: String,
    /// The sender's cluster epoch: versions count from 0 in each.
    pub epoch: u64,
    pub version: u64,
    pub snapshot: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// Forwarded messages, and their acknowledgements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Data {
    /// Messages published on `from`, in order. `seq`s increase within one
    /// incarnation of the sender; the receiver skips what it already applied.
    Forward {
        from: String,
        incarnation: u64,
        /// (seq, `forward::Forwarded` encoded with postcard): the forward
        /// queue's own bytes, shared, never copied until the frame is
        /// written.
        entries: Vec<(u64, Bytes)>,
    },
    /// Everything up to `through` of the receiver's queue to `from` arrived
    /// (and was published there). Cumulative; sent after each `Forward`, and
    /// also in the middle of one whose publication waited a long time for
    /// congested subscribers.
    Ack {
        from: String,
        incarnation: u64,
        through: u64,
    },
}

/// [`Data`] as the ingress reads it: borrowed from the received frame, so
/// a batch costs one allocation (the entry list), not one per entry.
/// Declared like [`Data`], variant for variant and field for field.
#[derive(Debug, PartialEq, Deserialize)]
pub enum DataRef<'a> {
    Forward {
        from: &'a str,
        incarnation: u64,
        #[serde(borrow)]
        entries: Vec<(u64, &'a [u8])>,
    },
    Ack {
        from: &'a str,
        incarnation: u64,
        through: u64,
    },
}

impl Data {
    /// Bytes of the encoded message, or a little more (sizes the buffer
    /// once: no regrowth and copy while a batch is encoded).
    pub fn encoded_len_hint(&self) -> usize {
        match self {
            Data::Forward { from, entries, .. } => {
                // A varint is at most 10 bytes (u64), a length 5 (u32).
                let body: usize = entries.iter().map(|(_, e)| e.len() + 15).sum();
                16 + from.len() + 15 + body
            }
            Data::Ack { from, .. } => 32 + from.len(),
        }
    }
}

/// Encode a wire message for ractor_cluster.
pub fn encode<T: Serialize>(msg: &T) -> Result<SerializedMessage, BoxedDowncastErr> {
    encode_sized(msg, 64)
}

/// [`encode`] into a buffer of `capacity` bytes first (the version byte and
/// the body in one buffer, written once).
pub fn encode_sized<T: Serialize>(
    msg: &T,
    capacity: usize,
) -> Result<SerializedMessage, BoxedDowncastErr> {
    let mut buf = Vec::with_capacity(capacity.max(1));
    buf.push(WIRE_VERSION);
    let args = postcard::to_extend(msg, buf).map_err(|e| {
        tracing::error!(error = %e, "cluster_encode_failed");
        BoxedDowncastErr
    })?;
    Ok(SerializedMessage::Cast {
        variant: String::new(),
        args,
        metadata: None,
    })
}

/// Encode a [`Data`] (the buffer sized from the batch).
pub fn encode_data(msg: &Data) -> Result<SerializedMessage, BoxedDowncastErr> {
    encode_sized(msg, msg.encoded_len_hint())
}

/// A frame from a peer whose version is ours, kept whole (version byte
/// included) to be read in place with [`read_data`].
pub fn check_frame(msg: SerializedMessage) -> Result<Vec<u8>, BoxedDowncastErr> {
    let SerializedMessage::Cast { args, .. } = msg else {
        tracing::warn!("cluster_unexpected_call: peers only cast to cluster actors");
        return Err(BoxedDowncastErr);
    };
    match args.first() {
        Some(&WIRE_VERSION) => Ok(args),
        Some(v) => {
            tracing::warn!(
                version = v,
                ours = WIRE_VERSION,
                "cluster_wire_version_mismatch: a peer runs an incompatible Roost"
            );
            Err(BoxedDowncastErr)
        }
        None => Err(BoxedDowncastErr),
    }
}

/// Read a frame [`check_frame`] accepted.
pub fn read_data(frame: &[u8]) -> Result<DataRef<'_>, postcard::Error> {
    match frame.split_first() {
        Some((&WIRE_VERSION, body)) => postcard::from_bytes(body),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

/// The remote member of process group `group` on the node behind
/// ractor_cluster session `node_id` (each node's cluster actors join their
/// group; ractor node ids are per connection).
pub fn remote_member(group: &str, node_id: u64) -> Option<ractor::ActorCell> {
    ractor::pg::get_members(&group.to_string())
        .into_iter()
        .find(|c| !c.get_id().is_local() && c.get_id().node() == node_id)
}

/// Decode a wire message from a peer. Anything unexpected is logged and
/// dropped (ractor drops a message whose decoding fails).
pub fn decode<T: for<'de> Deserialize<'de>>(msg: SerializedMessage) -> Result<T, BoxedDowncastErr> {
    let frame = check_frame(msg)?;
    postcard::from_bytes(&frame[1..]).map_err(|e| {
        tracing::warn!(error = %e, "cluster_decode_failed");
        BoxedDowncastErr
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_data_round_trip() {
        let msgs = vec![
            Control::Hello(Hello {
                cluster: "c".into(),
                from: "a@h".into(),
                incarnation: 7,
                epoch: 8,
                advertise: "h:4370".into(),
                members: vec![("b@h".into(), "h:4371".into())],
                want_reply: true,
            }),
            Control::Heartbeat {
                from: "a@h".into(),
                epoch: 8,
                routes_version: 2,
                up: vec!["b@h".into()],
            },
            Control::Partition(crate::partition::PartitionWire::ViewWanted {
                from: "a@h".into(),
                round: 5,
            }),
            Control::Routes(RouteUpdate {
                from: "a@h".into(),
                epoch: 8,
                version: 3,
                snapshot: false,
                added: vec!["a/+".into()],
                removed: vec!["$share/g/x".into()],
            }),
        ];
        for m in msgs {
            let back: Control = decode(encode(&m).unwrap()).unwrap();
            assert_eq!(back, m);
        }
        let d = Data::Forward {
            from: "a@h".into(),
            incarnation: 1,
            entries: vec![(1, Bytes::from_static(&[1, 2, 3])), (9, Bytes::new())],
        };
        let back: Data = decode(encode(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn data_is_read_in_place_and_the_size_hint_holds() {
        let payload = Bytes::from(vec![7u8; 300]);
        let d = Data::Forward {
            from: "a@h".into(),
            incarnation: u64::MAX,
            entries: (0..100).map(|i| (u64::MAX - i, payload.clone())).collect(),
        };
        let SerializedMessage::Cast { args, .. } = encode_data(&d).unwrap() else {
            unreachable!()
        };
        assert!(args.len() <= d.encoded_len_hint(), "{}", args.len());
        let frame = check_frame(SerializedMessage::Cast {
            variant: String::new(),
            args,
            metadata: None,
        })
        .unwrap();
        let DataRef::Forward {
            from,
            incarnation,
            entries,
        } = read_data(&frame).unwrap()
        else {
            panic!("not a forward")
        };
        assert_eq!((from, incarnation, entries.len()), ("a@h", u64::MAX, 100));
        assert!(entries
            .iter()
            .enumerate()
            .all(|(i, (seq, e))| *seq == u64::MAX - i as u64 && *e == &payload[..]));
        let ack = Data::Ack {
            from: "b@h".into(),
            incarnation: 3,
            through: 42,
        };
        let SerializedMessage::Cast { args, .. } = encode_data(&ack).unwrap() else {
            unreachable!()
        };
        assert_eq!(
            read_data(&args).unwrap(),
            DataRef::Ack {
                from: "b@h",
                incarnation: 3,
                through: 42
            }
        );
        let mut other = args.clone();
        other[0] = WIRE_VERSION - 1;
        assert!(read_data(&other).is_err());
        assert!(check_frame(SerializedMessage::Cast {
            variant: String::new(),
            args: other,
            metadata: None,
        })
        .is_err());
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let SerializedMessage::Cast { mut args, .. } =
            encode(&Control::Leaving { from: "a".into() }).unwrap()
        else {
            unreachable!()
        };
        args[0] = WIRE_VERSION + 1;
        let newer = SerializedMessage::Cast {
            variant: String::new(),
            args,
            metadata: None,
        };
        assert!(decode::<Control>(newer).is_err());
        let garbage = SerializedMessage::Cast {
            variant: String::new(),
            args: vec![WIRE_VERSION, 0xff, 0xff, 0xff],
            metadata: None,
        };
        assert!(decode::<Control>(garbage).is_err());
        let empty = SerializedMessage::Cast {
            variant: String::new(),
            args: vec![],
            metadata: None,
        };
        assert!(decode::<Data>(empty).is_err());
    }
}
