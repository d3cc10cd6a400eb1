//! What only a data dir has: reopening, the lock, a corrupt dir, the store
//! format marker.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use super::{client, full_message, full_session, queued, queued_index, raw_put, TempDir};
use crate::keys::{self, ColumnFamily};
use crate::{
    AppendOutcome, Batch, InflightStage, InflightState, Storage, StorageError, StorageOptions,
    SUPPORTED_FORMAT,
};

fn open(dir: &TempDir) -> Result<Storage, StorageError> {
    Storage::open(dir.path(), StorageOptions::default())
}

#[test]
fn reopen_after_drop_keeps_sessions_queues_inflight_retained_and_seqs() {
    let dir = TempDir::new("reopen");
    let c = client("c1");
    let inflight = InflightState {
        packet_id: 42,
        stage: InflightStage::Released,
    };
    {
        let s = open(&dir).unwrap();
        s.put_session(&c, &full_session()).unwrap();
        s.append(&c, &[queued(0), queued(1), queued(2)]).unwrap();
        s.set_inflight(&c, 1, inflight).unwrap();
        s.remove(&c, 3).unwrap();
        s.put_retained("r/1", &full_message("r/1")).unwrap();
    }
    let s = open(&dir).unwrap();
    assert_eq!(
        s.load_sessions().unwrap(),
        vec![(c.clone(), full_session())]
    );
    assert_eq!(s.load_retained().unwrap(), vec![full_message("r/1")]);
    assert_eq!(s.queue_len(&c).unwrap(), 2);
    let page = s.page(&c, 0, 10).unwrap();
    let entries: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.seq, queued_index(&e.message), e.inflight))
        .collect();
    assert_eq!(entries, [(1, 0, Some(inflight)), (2, 1, None)]);
    // Seqs continue after the highest ever assigned, not the highest left.
    assert_eq!(
        s.append(&c, &[queued(9)]).unwrap(),
        AppendOutcome::Queued(4..5)
    );
    // Sessions are known again after reopen: appends to them are accepted.
    assert_eq!(
        s.append(&client("nobody"), &[queued(9)]).unwrap(),
        AppendOutcome::NoSession
    );
    assert_eq!(s.stats().corrupt_records, 0);
}

#[test]
fn every_column_family_is_created() {
    let dir = TempDir::new("cfs");
    drop(open(&dir).unwrap());
    let mut names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    names.sort();
    let mut want: Vec<_> = ColumnFamily::ALL
        .iter()
        .map(|cf| cf.name().to_string())
        .collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn sync_batches_are_committed() {
    let dir = TempDir::new("sync");
    let c = client("c1");
    {
        let s = Storage::open(
            dir.path(),
            StorageOptions {
                sync: true,
                ..StorageOptions::default()
            },
        )
        .unwrap();
        s.put_session(&c, &full_session()).unwrap();
        let mut batch = Batch::new();
        batch.sync(false).append(&c, &[queued(0)]);
        s.commit(batch).unwrap();
        assert!(s.options().sync);
        assert_eq!(s.stats().commits, 2);
    }
    assert_eq!(open(&dir).unwrap().queue_len(&c).unwrap(), 1);
}

#[test]
fn second_open_of_the_same_dir_names_the_lock() {
    let dir = TempDir::new("locked");
    let first = open(&dir).unwrap();
    let err = open(&dir).unwrap_err();
    let StorageError::Locked { path, .. } = &err else {
        panic!("expected Locked, got {err:?}");
    };
    assert_eq!(path, &dir.path().join("LOCK"));
    let message = err.to_string();
    assert!(
        message.contains("LOCK") && message.contains("locked"),
        "{message}"
    );
    drop(first);
    open(&dir).expect("the lock is released when the store is dropped");
}

/// Env var that turns `lock_holder_child` into the child of
/// `open_held_by_another_process_names_the_lock`.
const LOCK_CHILD_ENV: &str = "ROOST_STORAGE_TEST_LOCK_CHILD";

/// What the child prints once it holds the store open.
const CHILD_HOLDS_LOCK: &str = "child-holds-the-store-lock";

/// Not a test on its own: run by the test below in a child process, where it
/// opens the store, says so, and holds it until its stdin closes.
#[test]
#[ignore = "helper process of open_held_by_another_process_names_the_lock"]
fn lock_holder_child() {
    let Ok(dir) = std::env::var(LOCK_CHILD_ENV) else {
        return;
    };
    let _s = Storage::open(&dir, StorageOptions::default()).expect("child opens the store");
    println!("{CHILD_HOLDS_LOCK}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn open_held_by_another_process_names_the_lock() {
    let dir = TempDir::new("locked-child");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "tests::rocks::lock_holder_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOCK_CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest may print its "test ... " prefix on the same line.
    while !line.contains(CHILD_HOLDS_LOCK) {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "child exited before opening"
        );
    }
    let err = open(&dir);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
    match err {
        Err(StorageError::Locked { path, .. }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn store_written_by_a_newer_roost_is_refused_at_open() {
    let dir = TempDir::new("newer-store");
    {
        let s = open(&dir).unwrap();
        raw_put(
            &s,
            ColumnFamily::Default,
            keys::MARKER_KEY,
            &[SUPPORTED_FORMAT + 1, 0],
        );
    }
    let err = open(&dir).unwrap_err();
    let StorageError::NewerFormat {
        what,
        found,
        supported,
    } = &err
    else {
        panic!("expected NewerFormat, got {err:?}");
    };
    assert_eq!((*found, *supported), (3, 2));
    assert!(what.contains(&*dir.path().to_string_lossy()), "{what}");
    // Never quarantined: the data belongs to a newer Roost.
    let quarantining = StorageOptions {
        quarantine_corrupt: true,
        ..StorageOptions::default()
    };
    assert!(matches!(
        Storage::open(dir.path(), quarantining),
        Err(StorageError::NewerFormat { .. })
    ));
    assert!(dir.path().exists());
}

#[test]
fn column_families_of_a_newer_roost_do_not_hide_the_format_error() {
    let dir = TempDir::new("newer-cf");
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["sessions", "from_the_future"]).unwrap();
        db.put(keys::MARKER_KEY, [SUPPORTED_FORMAT + 1]).unwrap();
    }
    assert!(matches!(
        open(&dir),
        Err(StorageError::NewerFormat { found: 3, .. })
    ));
}

#[test]
fn unreadable_store_marker_is_corrupt() {
    let dir = TempDir::new("bad-marker");
    {
        let s = open(&dir).unwrap();
        raw_put(&s, ColumnFamily::Default, keys::MARKER_KEY, b"\x01\xff\xff");
    }
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, .. } if path == dir.path()),
        "{err:?}"
    );
}

/// Damage the dir's CURRENT file (which names the live MANIFEST).
fn damage(dir: &TempDir) {
    {
        let s = open(dir).unwrap();
        s.put_session(&client("c1"), &full_session()).unwrap();
    }
    std::fs::write(dir.path().join("CURRENT"), b"MANIFEST-999999\n").unwrap();
}

#[test]
fn corrupt_data_dir_names_the_path_and_cause() {
    let dir = TempDir::new("corrupt-dir");
    damage(&dir);
    let err = open(&dir).unwrap_err();
    let StorageError::Corrupt { path, source } = &err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert_eq!(path, dir.path());
    assert!(source.to_string().contains("MANIFEST-999999"), "{source}");
    assert!(
        err.to_string().contains(&*dir.path().to_string_lossy()),
        "{err}"
    );
    assert!(dir.path().exists(), "nothing moved without the option");
}

#[test]
fn garbled_manifest_is_corrupt() {
    let dir = TempDir::new("garbled-manifest");
    {
        let s = open(&dir).unwrap();
        s.put_session(&client("c1"), &full_session()).unwrap();
    }
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let manifest = dir.path().join(current.trim());
    let mut bytes = std::fs::read(&manifest).unwrap();
    for b in bytes.iter_mut().skip(7) {
        *b ^= 0x5a;
    }
    std::fs::write(&manifest, bytes).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, .. } if path == dir.path()),
        "{err:?}"
    );
}

#[test]
fn quarantine_option_moves_a_corrupt_dir_aside_and_starts_empty() {
    let dir = TempDir::new("quarantine");
    damage(&dir);
    let options = StorageOptions {
        quarantine_corrupt: true,
        ..StorageOptions::default()
    };
    let s = Storage::open(dir.path(), options).unwrap();
    let moved = s.quarantined().expect("moved aside").to_path_buf();
    let name = moved.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!(
        "{}.corrupt-",
        dir.path().file_name().unwrap().to_string_lossy()
    );
    assert!(name.starts_with(&prefix), "{name}");
    assert!(
        moved.join("CURRENT").exists(),
        "the old dir is kept for inspection"
    );
    assert!(s.load_sessions().unwrap().is_empty());
}

#[test]
fn quarantine_never_overwrites_an_earlier_one() {
    let dir = TempDir::new("quarantine-twice");
    std::fs::create_dir_all(dir.path()).unwrap();
    let first = Storage::quarantine(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let second = Storage::quarantine(dir.path()).unwrap();
    assert_ne!(first, second);
    assert!(first.exists() && second.exists() && !dir.path().exists());
    let trailing_slash = format!("{}/", dir.path().display());
    std::fs::create_dir_all(dir.path()).unwrap();
    let third = Storage::quarantine(&trailing_slash).unwrap();
    assert_eq!(third.parent(), dir.path().parent());
}

#[test]
fn open_on_a_file_names_the_path() {
    let dir = TempDir::new("not-a-dir");
    std::fs::write(dir.path(), b"not a dir").unwrap();
    let err = open(&dir).unwrap_err();
    assert!(
        err.to_string().contains(&*dir.path().to_string_lossy()),
        "{err}"
    );
    std::fs::remove_file(dir.path()).unwrap();
}

#[test]
fn utc_stamp_formats_civil_time() {
    use crate::quarantine::utc_stamp;
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    assert_eq!(utc_stamp(1_700_000_000), "20231114T221320Z");
}

/// A store written by a V1 Roost is marked V2 when opened: it gets V2
/// records from then on, which a V1 Roost must refuse as a whole. Its V1
/// queued messages are still read (with no message identity).
#[test]
fn a_v1_store_is_marked_v2_when_opened_and_its_queue_still_read() {
    let dir = TempDir::new("v1-store");
    let c = client("old");
    {
        let s = open(&dir).unwrap();
        s.put_session(&c, &full_session()).unwrap();
        raw_put(
            &s,
            ColumnFamily::Default,
            keys::MARKER_KEY,
            &[crate::FORMAT_V1, 0],
        );
        assert_eq!(
            s.append(&c, &[queued(1)]).unwrap(),
            AppendOutcome::Queued(1..2)
        );
        // Rewritten as V1 wrote it: V2's bytes without the identity (two
        // zero varints).
        let mut v1 = crate::record::encode("queued", &queued(1)).unwrap();
        v1.truncate(v1.len() - 2);
        v1[0] = crate::FORMAT_V1;
        let key = keys::message_key("old", 1);
        raw_put(&s, ColumnFamily::SessionMsgs, &key, &v1);
    }
    let s = open(&dir).unwrap();
    let marker = s
        .engine()
        .get(ColumnFamily::Default, keys::MARKER_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(marker[0], crate::FORMAT_V2);
    let page = s.page(&c, 0, 10).unwrap();
    assert_eq!(page.entries.len(), 1, "{page:?}");
    assert_eq!(page.entries[0].message, queued(1));
}
