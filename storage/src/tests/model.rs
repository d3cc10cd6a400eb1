//! A session queue under random appends, acks, inflight updates and pages
//! agrees with a `VecDeque` model, on both engines.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{client, queued, queued_index, session, Fixture};
use crate::{AppendOutcome, Batch, InflightStage, InflightState, Storage};

#[derive(Debug, Clone)]
enum QueueOp {
    /// Append this many messages (one batch).
    Append(u8),
    /// Ack the message at this position (modulo the length).
    AckAt(usize),
    /// Ack a seq that may never have existed.
    AckSeq(u64),
    /// Record a send of the message at this position.
    SetInflight(usize, u16, bool),
    /// Page from after the message at this position (0: from the start).
    Page(usize, usize),
}

fn op() -> impl Strategy<Value = QueueOp> {
    prop_oneof![
        3 => (1u8..6).prop_map(QueueOp::Append),
        2 => any::<usize>().prop_map(QueueOp::AckAt),
        1 => (0u64..40).prop_map(QueueOp::AckSeq),
        1 => (any::<usize>(), any::<u16>(), any::<bool>())
            .prop_map(|(at, id, rel)| QueueOp::SetInflight(at, id, rel)),
        2 => (any::<usize>(), 0usize..8).prop_map(|(at, limit)| QueueOp::Page(at, limit)),
    ]
}

/// The model: (seq, message index, inflight state) in FIFO order.
#[derive(Default)]
struct Model {
    queue: VecDeque<(u64, u64, Option<InflightState>)>,
    next_seq: u64,
    next_index: u64,
}

fn at(model: &Model, pos: usize) -> Option<usize> {
    (!model.queue.is_empty()).then(|| pos % model.queue.len())
}

fn apply(s: &Storage, model: &mut Model, op: &QueueOp) {
    let c = client("c");
    match *op {
        QueueOp::Append(n) => {
            let msgs: Vec<_> = (0..u64::from(n))
                .map(|i| queued(model.next_index + i))
                .collect();
            let got = s.append(&c, &msgs).unwrap();
            let first = model.next_seq;
            for i in 0..u64::from(n) {
                model
                    .queue
                    .push_back((first + i, model.next_index + i, None));
            }
            model.next_seq += u64::from(n);
            model.next_index += u64::from(n);
            assert_eq!(got, AppendOutcome::Queued(first..model.next_seq));
        }
        QueueOp::AckAt(pos) => {
            if let Some(i) = at(model, pos) {
                let (seq, ..) = model.queue.remove(i).unwrap();
                s.remove(&c, seq).unwrap();
            }
        }
        QueueOp::AckSeq(seq) => {
            model.queue.retain(|(s, ..)| *s != seq);
            s.remove(&c, seq).unwrap();
        }
        QueueOp::SetInflight(pos, packet_id, released) => {
            if let Some(i) = at(model, pos) {
                let stage = if released {
                    InflightStage::Released
                } else {
                    InflightStage::Published
                };
                let state = InflightState { packet_id, stage };
                model.queue[i].2 = Some(state);
                let mut batch = Batch::new();
                batch.set_inflight(&c, model.queue[i].0, state);
                s.commit(batch).unwrap();
            }
        }
        QueueOp::Page(pos, limit) => check_page(s, model, pos, limit),
    }
    assert_eq!(s.queue_len(&c).unwrap(), model.queue.len() as u64);
}

fn check_page(s: &Storage, model: &Model, pos: usize, limit: usize) {
    let after = at(model, pos).map_or(0, |i| model.queue[i].0);
    let page = s.page(&client("c"), after, limit).unwrap();
    let got: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.seq, queued_index(&e.message), e.inflight))
        .collect();
    let want: Vec<_> = model
        .queue
        .iter()
        .filter(|(seq, ..)| *seq > after)
        .take(limit)
        .copied()
        .collect();
    assert_eq!(got, want);
    assert!(page.corrupt.is_empty());
}

fn run(s: &Storage, ops: &[QueueOp]) {
    s.put_session(&client("c"), &session()).unwrap();
    let mut model = Model {
        next_seq: 1,
        ..Model::default()
    };
    for op in ops {
        apply(s, &mut model, op);
    }
    check_page(s, &model, 0, usize::MAX);
}

proptest! {
    #[test]
    fn memory_queue_agrees_with_vecdeque_model(ops in prop::collection::vec(op(), 0..80)) {
        run(&Fixture::memory().storage, &ops);
    }
}

proptest! {
    // Fewer cases: each opens a RocksDB store in a fresh dir.
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn rocksdb_queue_agrees_with_vecdeque_model(ops in prop::collection::vec(op(), 0..80)) {
        run(&Fixture::rocks("model").storage, &ops);
    }
}
