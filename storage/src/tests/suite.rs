//! The behaviour suite: every test body takes a `&Storage` and runs against
//! both engines (`suite::rocksdb::*` and `suite::memory::*`).

use super::{client, full_message, full_session, queued, queued_index, raw_put, session, Fixture};
use crate::keys::{self, ColumnFamily};
use crate::{
    AppendOutcome, Batch, InflightStage, InflightState, Storage, StorageError, StoredMessage,
    FORMAT_V1, SUPPORTED_FORMAT,
};

/// Instantiate each generic test body once per engine.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod rocksdb {
            $(#[test] fn $name() {
                let f = super::Fixture::rocks(stringify!($name));
                super::$name(&f.storage);
            })*
        }
        mod memory {
            $(#[test] fn $name() {
                let f = super::Fixture::memory();
                super::$name(&f.storage);
            })*
        }
    };
}

both_engines!(
    session_record_round_trips,
    put_session_replaces_the_record,
    load_sessions_lists_every_session_in_client_id_order,
    retained_message_round_trips_and_deletes,
    cluster_records_round_trip_by_prefix,
    queued_message_round_trips_with_every_field,
    append_assigns_consecutive_seqs_in_fifo_order,
    append_to_client_without_session_is_refused,
    bounded_append_refuses_what_does_not_fit_and_keeps_the_rest,
    awaiting_rel_joins_the_record_and_goes_with_the_session,
    page_of_100k_messages_is_bounded_and_in_order,
    remove_acks_one_message_and_updates_len,
    removing_an_absent_seq_changes_nothing,
    inflight_state_round_trips_and_goes_with_its_message,
    set_inflight_on_absent_message_does_nothing,
    delete_session_removes_its_queue_only,
    one_batch_appends_to_many_sessions,
    failed_batch_writes_nothing_for_any_session,
    batch_operations_see_earlier_ones_in_the_same_batch,
    corrupt_session_record_is_skipped_counted_and_reported,
    corrupt_queued_message_is_skipped_counted_and_reported,
    corrupt_retained_message_is_skipped_counted_and_reported,
    corrupt_queue_meta_is_reported_and_rebuilt,
    newer_format_record_is_refused,
    queue_len_without_session_is_zero,
);

fn session_record_round_trips(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &full_session()).unwrap();
    assert_eq!(s.load_session(&c).unwrap(), Some(full_session()));
    assert_eq!(s.load_session(&client("other")).unwrap(), None);
}

fn put_session_replaces_the_record(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &full_session()).unwrap();
    s.put_session(&c, &session()).unwrap();
    assert_eq!(s.load_sessions().unwrap(), vec![(c, session())]);
}

fn load_sessions_lists_every_session_in_client_id_order(s: &Storage) {
    for id in ["b", "a", "ä-unicode", "c"] {
        s.put_session(&client(id), &session()).unwrap();
    }
    let ids: Vec<String> = s
        .load_sessions()
        .unwrap()
        .into_iter()
        .map(|(c, _)| c.to_string())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "ä-unicode"]);
}

fn retained_message_round_trips_and_deletes(s: &Storage) {
    s.put_retained("a/b", &full_message("a/b")).unwrap();
    s.put_retained("a/c", &full_message("a/c")).unwrap();
    let replaced = StoredMessage {
        payload: "new".into(),
        ..full_message("a/b")
    };
    s.put_retained("a/b", &replaced).unwrap();
    assert_eq!(
        s.load_retained().unwrap(),
        vec![replaced, full_message("a/c")]
    );
    s.delete_retained("a/c").unwrap();
    s.delete_retained("never/stored").unwrap();
    assert_eq!(s.load_retained().unwrap().len(), 1);
}

fn cluster_records_round_trip_by_prefix(s: &Storage) {
    let mut b = Batch::new();
    b.put_cluster("member/b@h", &(2u64, "two".to_string()));
    b.put_cluster("member/a@h", &(1u64, "one".to_string()));
    b.put_cluster("other/x", &(9u64, "x".to_string()));
    s.commit(b).unwrap();
    let members: Vec<(String, (u64, String))> = s.load_cluster("member/").unwrap();
    assert_eq!(
        members,
        vec![
            ("member/a@h".to_string(), (1, "one".to_string())),
            ("member/b@h".to_string(), (2, "two".to_string())),
        ]
    );
    let mut b = Batch::new();
    b.delete_cluster("member/a@h")
        .delete_cluster("member/never");
    s.commit(b).unwrap();
    let members: Vec<(String, (u64, String))> = s.load_cluster("member/").unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(s.load_cluster::<(u64, String)>("other/").unwrap().len(), 1);
}

fn queued_message_round_trips_with_every_field(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    let mut m = queued(1);
    m.message = full_message("x/y");
    m.delivery.subscription_ids = vec![1, 268_435_455];
    assert_eq!(
        s.append(&c, &[m.clone()]).unwrap(),
        AppendOutcome::Queued(1..2)
    );
    let page = s.page(&c, 0, 10).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].message, m);
    assert_eq!(page.entries[0].inflight, None);
}

fn append_assigns_consecutive_seqs_in_fifo_order(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    assert_eq!(
        s.append(&c, &[queued(0), queued(1)]).unwrap(),
        AppendOutcome::Queued(1..3)
    );
    assert_eq!(s.append(&c, &[]).unwrap(), AppendOutcome::Queued(3..3));
    assert_eq!(
        s.append(&c, &[queued(2)]).unwrap(),
        AppendOutcome::Queued(3..4)
    );
    let page = s.page(&c, 0, 100).unwrap();
    let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    let order: Vec<u64> = page
        .entries
        .iter()
        .map(|e| queued_index(&e.message))
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(order, [0, 1, 2]);
    assert_eq!(s.queue_len(&c).unwrap(), 3);
}

fn append_to_client_without_session_is_refused(s: &Storage) {
    let c = client("nobody");
    assert_eq!(
        s.append(&c, &[queued(1)]).unwrap(),
        AppendOutcome::NoSession
    );
    assert!(s.page(&c, 0, 10).unwrap().is_empty());
    s.put_session(&c, &session()).unwrap();
    s.delete_session(&c).unwrap();
    assert_eq!(
        s.append(&c, &[queued(1)]).unwrap(),
        AppendOutcome::NoSession
    );
}

fn bounded_append_refuses_what_does_not_fit_and_keeps_the_rest(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    let mut b = Batch::new();
    b.append_bounded(&c, &[queued(0), queued(1), queued(2)], 2);
    assert_eq!(s.commit(b).unwrap().seqs(&c), Some(1..3));
    let mut b = Batch::new();
    b.append_bounded(&c, &[queued(3)], 2);
    assert_eq!(s.commit(b).unwrap().seqs(&c), Some(3..3));
    // An acknowledgement makes room again, and seqs stay consecutive.
    s.remove(&c, 1).unwrap();
    let mut b = Batch::new();
    b.append_bounded(&c, &[queued(4), queued(5)], 2);
    assert_eq!(s.commit(b).unwrap().seqs(&c), Some(3..4));
    let order: Vec<u64> = s
        .page(&c, 0, 10)
        .unwrap()
        .entries
        .iter()
        .map(|e| queued_index(&e.message))
        .collect();
    assert_eq!(order, [1, 4]);
    assert_eq!(s.queue_len(&c).unwrap(), 2);
}

fn awaiting_rel_joins_the_record_and_goes_with_the_session(s: &Storage) {
    let c = client("c1");
    // No session: ignored.
    let mut b = Batch::new();
    b.set_awaiting_rel(&c, &[1]);
    s.commit(b).unwrap();
    let mut rec = session();
    rec.awaiting_pubrel = vec![5];
    s.put_session(&c, &rec).unwrap();
    s.append(&c, &[queued(0)]).unwrap();
    let mut b = Batch::new();
    b.set_awaiting_rel(&c, &[5, 9]);
    s.commit(b).unwrap();
    let loaded = s.load_session(&c).unwrap().unwrap();
    assert_eq!(loaded.awaiting_pubrel, vec![5, 9]);
    assert_eq!(s.load_sessions().unwrap()[0].1.awaiting_pubrel, vec![5, 9]);
    // Not a queue entry.
    assert_eq!(s.page(&c, 0, 10).unwrap().entries.len(), 1);
    assert_eq!(s.queue_len(&c).unwrap(), 1);
    let mut b = Batch::new();
    b.set_awaiting_rel(&c, &[]);
    s.commit(b).unwrap();
    assert_eq!(
        s.load_session(&c).unwrap().unwrap().awaiting_pubrel,
        vec![5]
    );
    let mut b = Batch::new();
    b.set_awaiting_rel(&c, &[7]);
    s.commit(b).unwrap();
    s.delete_session(&c).unwrap();
    s.put_session(&c, &session()).unwrap();
    assert!(s
        .load_session(&c)
        .unwrap()
        .unwrap()
        .awaiting_pubrel
        .is_empty());
}

/// A long queue is read in pages of at most `limit` messages, continuing
/// from the last seq, without ever holding the queue in memory.
fn page_of_100k_messages_is_bounded_and_in_order(s: &Storage) {
    const N: u64 = 100_000;
    const LIMIT: usize = 1000;
    let c = client("big");
    s.put_session(&c, &session()).unwrap();
    s.put_session(&client("big2"), &session()).unwrap();
    for start in (0..N).step_by(5000) {
        let chunk: Vec<_> = (start..start + 5000).map(queued).collect();
        let mut batch = Batch::new();
        batch
            .append(&c, &chunk)
            .append(&client("big2"), &chunk[..1]);
        s.commit(batch).unwrap();
    }
    assert_eq!(s.queue_len(&c).unwrap(), N);
    let (mut after, mut seen, mut pages) = (0, 0, 0);
    loop {
        let page = s.page(&c, after, LIMIT).unwrap();
        let Some(last) = page.last_seq() else { break };
        assert!(page.entries.len() <= LIMIT);
        for e in &page.entries {
            assert_eq!(e.seq, seen + 1);
            assert_eq!(queued_index(&e.message), seen);
            seen += 1;
        }
        after = last;
        pages += 1;
    }
    assert_eq!((seen, pages), (N, N / LIMIT as u64));
}

fn remove_acks_one_message_and_updates_len(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    s.append(&c, &[queued(0), queued(1), queued(2)]).unwrap();
    s.remove(&c, 2).unwrap();
    let seqs: Vec<u64> = s
        .page(&c, 0, 10)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(s.queue_len(&c).unwrap(), 2);
    // Seqs are never reused after an ack.
    assert_eq!(
        s.append(&c, &[queued(3)]).unwrap(),
        AppendOutcome::Queued(4..5)
    );
}

fn removing_an_absent_seq_changes_nothing(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    s.append(&c, &[queued(0)]).unwrap();
    s.remove(&c, 1).unwrap();
    s.remove(&c, 1).unwrap();
    s.remove(&c, 99).unwrap();
    s.remove(&client("nobody"), 1).unwrap();
    let mut batch = Batch::new();
    batch.remove(&c, 1).remove(&c, 1);
    s.commit(batch).unwrap();
    assert_eq!(s.queue_len(&c).unwrap(), 0);
    assert!(s.page(&c, 0, 10).unwrap().is_empty());
}

fn inflight_state_round_trips_and_goes_with_its_message(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    s.append(&c, &[queued(0), queued(1), queued(2)]).unwrap();
    let published = InflightState {
        packet_id: 10,
        stage: InflightStage::Published,
    };
    let released = InflightState {
        packet_id: 11,
        stage: InflightStage::Released,
    };
    s.set_inflight(&c, 1, published).unwrap();
    s.set_inflight(&c, 2, published).unwrap();
    s.set_inflight(&c, 2, released).unwrap();
    let states: Vec<_> = s
        .page(&c, 0, 10)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.inflight)
        .collect();
    assert_eq!(states, [Some(published), Some(released), None]);
    // A page that ends at a message still carries that message's state.
    assert_eq!(
        s.page(&c, 0, 1).unwrap().entries[0].inflight,
        Some(published)
    );
    s.remove(&c, 2).unwrap();
    s.append(&c, &[queued(3)]).unwrap();
    let states: Vec<_> = s
        .page(&c, 1, 10)
        .unwrap()
        .entries
        .iter()
        .map(|e| (e.seq, e.inflight))
        .collect();
    assert_eq!(states, [(3, None), (4, None)]);
}

fn set_inflight_on_absent_message_does_nothing(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    s.append(&c, &[queued(0)]).unwrap();
    s.remove(&c, 1).unwrap();
    let state = InflightState {
        packet_id: 1,
        stage: InflightStage::Published,
    };
    s.set_inflight(&c, 1, state).unwrap();
    s.set_inflight(&client("nobody"), 1, state).unwrap();
    assert!(s.page(&c, 0, 10).unwrap().is_empty());
    assert_eq!(s.stats().corrupt_records, 0, "no orphan inflight state");
}

fn delete_session_removes_its_queue_only(s: &Storage) {
    let (a, b) = (client("a"), client("ab"));
    s.put_session(&a, &session()).unwrap();
    s.put_session(&b, &session()).unwrap();
    s.append(&a, &[queued(0), queued(1)]).unwrap();
    s.append(&b, &[queued(5)]).unwrap();
    s.set_inflight(
        &a,
        1,
        InflightState {
            packet_id: 1,
            stage: InflightStage::Published,
        },
    )
    .unwrap();
    s.delete_session(&a).unwrap();
    assert_eq!(s.load_session(&a).unwrap(), None);
    assert!(s.page(&a, 0, 10).unwrap().is_empty());
    assert_eq!(s.queue_len(&a).unwrap(), 0);
    assert_eq!(s.page(&b, 0, 10).unwrap().entries.len(), 1);
    // Nothing of `a` is left on disk, not even its queue meta.
    let prefix = keys::queue_prefix("a");
    let mut left = 0;
    s.engine()
        .scan(
            ColumnFamily::SessionMsgs,
            &prefix,
            Some(&keys::queue_end(&prefix)),
            &mut |_, _| {
                left += 1;
                true
            },
        )
        .unwrap();
    assert_eq!(left, 0);
    // A new session with the same client id starts an empty queue.
    s.put_session(&a, &session()).unwrap();
    assert_eq!(
        s.append(&a, &[queued(9)]).unwrap(),
        AppendOutcome::Queued(1..2)
    );
}

fn one_batch_appends_to_many_sessions(s: &Storage) {
    let subscribers: Vec<_> = (0..10).map(|i| client(&format!("sub-{i}"))).collect();
    for c in &subscribers {
        s.put_session(c, &session()).unwrap();
    }
    s.append(&subscribers[3], &[queued(0)]).unwrap();
    let mut batch = Batch::new();
    for c in &subscribers {
        batch.append(c, &[queued(7)]);
    }
    batch.append(&client("gone"), &[queued(7)]);
    batch.put_retained("t/7", &full_message("t/7"));
    let receipt = s.commit(batch).unwrap();
    assert_eq!(receipt.appends.len(), 11);
    assert_eq!(receipt.seqs(&subscribers[0]), Some(1..2));
    assert_eq!(receipt.seqs(&subscribers[3]), Some(2..3));
    assert_eq!(receipt.appends[10].1, AppendOutcome::NoSession);
    for c in &subscribers {
        let page = s.page(c, 0, 10).unwrap();
        assert_eq!(queued_index(&page.entries.last().unwrap().message), 7);
    }
    assert_eq!(s.load_retained().unwrap().len(), 1);
}

/// A batch that fails (here: one session's queue meta is from a newer
/// format) writes nothing, for any session.
fn failed_batch_writes_nothing_for_any_session(s: &Storage) {
    let (ok, bad) = (client("ok"), client("bad"));
    s.put_session(&ok, &session()).unwrap();
    s.put_session(&bad, &session()).unwrap();
    raw_put(
        s,
        ColumnFamily::SessionMsgs,
        &keys::queue_prefix("bad"),
        &[SUPPORTED_FORMAT + 1, 0],
    );
    let mut batch = Batch::new();
    batch
        .append(&ok, &[queued(1)])
        .put_retained("r", &full_message("r"))
        .append(&bad, &[queued(1)]);
    assert!(matches!(
        s.commit(batch),
        Err(StorageError::NewerFormat { found: 3, .. })
    ));
    assert!(s.page(&ok, 0, 10).unwrap().is_empty());
    assert_eq!(s.queue_len(&ok).unwrap(), 0);
    assert!(s.load_retained().unwrap().is_empty());
    assert_eq!(
        s.append(&ok, &[queued(1)]).unwrap(),
        AppendOutcome::Queued(1..2)
    );
}

fn batch_operations_see_earlier_ones_in_the_same_batch(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    s.append(&c, &[queued(0), queued(1)]).unwrap();
    let mut batch = Batch::new();
    batch
        .remove(&c, 1)
        .append(&c, &[queued(2)])
        .delete_session(&c)
        .append(&c, &[queued(3)])
        .put_session(&c, &full_session())
        .append(&c, &[queued(4), queued(5)])
        .remove(&c, 1);
    let receipt = s.commit(batch).unwrap();
    let outcomes: Vec<_> = receipt.appends.into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        outcomes,
        [
            AppendOutcome::Queued(3..4),
            AppendOutcome::NoSession,
            AppendOutcome::Queued(1..3)
        ]
    );
    let order: Vec<_> = s
        .page(&c, 0, 10)
        .unwrap()
        .entries
        .iter()
        .map(|e| (e.seq, queued_index(&e.message)))
        .collect();
    assert_eq!(order, [(2, 5)]);
    assert_eq!(s.queue_len(&c).unwrap(), 1);
    assert_eq!(s.load_session(&c).unwrap(), Some(full_session()));
}

fn corrupt_session_record_is_skipped_counted_and_reported(s: &Storage) {
    s.put_session(&client("good"), &session()).unwrap();
    raw_put(
        s,
        ColumnFamily::Sessions,
        b"broken",
        &[FORMAT_V1, 0xff, 0xff, 0xff],
    );
    raw_put(s, ColumnFamily::Sessions, b"empty", &[]);
    let loaded = s.load_sessions().unwrap();
    assert_eq!(loaded, vec![(client("good"), session())]);
    let stats = s.stats();
    assert_eq!(stats.corrupt_records, 2);
    let last = stats.last_corrupt.unwrap();
    assert_eq!((last.cf, last.key.as_str()), ("sessions", "empty"));
    assert_eq!(s.load_session(&client("broken")).unwrap(), None);
    assert_eq!(s.stats().last_corrupt.unwrap().key, "broken");
}

fn corrupt_queued_message_is_skipped_counted_and_reported(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    s.append(&c, &[queued(0), queued(1), queued(2)]).unwrap();
    raw_put(
        s,
        ColumnFamily::SessionMsgs,
        &keys::message_key("c1", 2),
        b"\x01garbage",
    );
    let page = s.page(&c, 0, 10).unwrap();
    let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!((seqs, page.corrupt.clone()), (vec![1, 3], vec![2]));
    assert_eq!(s.page(&c, 0, 2).unwrap().last_seq(), Some(2));
    let stats = s.stats();
    assert_eq!(stats.corrupt_records, 2);
    let last = stats.last_corrupt.unwrap();
    assert_eq!(last.cf, "session_msgs");
    assert!(last.key.starts_with("\\x00\\x02c1"), "{}", last.key);
    // The caller drops it like any other message.
    s.remove(&c, 2).unwrap();
    assert_eq!(s.queue_len(&c).unwrap(), 2);
    assert!(s.page(&c, 0, 10).unwrap().corrupt.is_empty());
}

fn corrupt_retained_message_is_skipped_counted_and_reported(s: &Storage) {
    s.put_retained("a", &full_message("a")).unwrap();
    raw_put(s, ColumnFamily::Retained, b"b", b"\x01\x02");
    s.put_retained("c", &full_message("not-c")).unwrap();
    assert_eq!(s.load_retained().unwrap(), vec![full_message("a")]);
    assert_eq!(s.stats().corrupt_records, 2);
}

fn corrupt_queue_meta_is_reported_and_rebuilt(s: &Storage) {
    let c = client("c1");
    s.put_session(&c, &session()).unwrap();
    s.append(&c, &[queued(0), queued(1), queued(2)]).unwrap();
    s.remove(&c, 1).unwrap();
    // As after a restart: queue metas are read again on first use.
    s.forget_queue_metas();
    raw_put(
        s,
        ColumnFamily::SessionMsgs,
        &keys::queue_prefix("c1"),
        b"\x01",
    );
    assert_eq!(s.queue_len(&c).unwrap(), 2);
    assert_eq!(
        s.append(&c, &[queued(3)]).unwrap(),
        AppendOutcome::Queued(4..5)
    );
    assert_eq!(s.stats().corrupt_records, 1);
}

fn newer_format_record_is_refused(s: &Storage) {
    s.put_session(&client("good"), &session()).unwrap();
    raw_put(
        s,
        ColumnFamily::Sessions,
        b"future",
        &[SUPPORTED_FORMAT + 1, 1, 2, 3],
    );
    let err = s.load_sessions().unwrap_err();
    match &err {
        StorageError::NewerFormat {
            what,
            found: 3,
            supported: 2,
        } => {
            assert_eq!(what, "record sessions/future");
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    assert!(err.to_string().contains("newer Roost"), "{err}");
    assert_eq!(
        s.stats().corrupt_records,
        0,
        "a newer record is not corrupt"
    );
}

fn queue_len_without_session_is_zero(s: &Storage) {
    assert_eq!(s.queue_len(&client("nobody")).unwrap(), 0);
}
