//! The store against real redb files and real data files in a temporary folder.

use std::fs;
use std::time::Duration;

use p2pmodel_protocol::chunks::{CHUNK_SIZE, chunk_count};
use p2pmodel_protocol::{Hash, Manifest, ManifestEntry, Outboard, Sha256};
use p2pmodel_store::{BlobState, Error, ExportMethod, OpenError, PartialKey, PartialMode, Store};

fn blob(size: u64, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| ((i * 31 + u64::from(seed)) % 251) as u8)
        .collect()
}

#[test]
fn imported_file_is_listed_exported_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let data = blob(3 * CHUNK_SIZE + 5, 1);
    let source = dir.path().join("model.bin");
    fs::write(&source, &data).unwrap();

    let hash = store.import_file(&source).unwrap();
    assert_eq!(hash, Hash::of(&data));
    assert!(store.has(hash).unwrap());
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, BlobState::Complete);
    assert!(
        fs::metadata(store.blob_path(hash))
            .unwrap()
            .permissions()
            .readonly()
    );

    let dest = dir.path().join("out/copy.bin");
    assert_eq!(store.export(hash, &dest).unwrap(), ExportMethod::HardLink);
    assert_eq!(fs::read(&dest).unwrap(), data);
    // Exporting again replaces the file and leaves no staging file behind.
    store.export(hash, &dest).unwrap();
    assert_eq!(fs::read_dir(dir.path().join("out")).unwrap().count(), 1);
}

#[test]
fn a_second_open_of_a_store_in_use_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(error @ OpenError::InUse { .. }) => {
            assert!(
                error
                    .to_string()
                    .contains("in use by another p2pmodel process"),
                "{error}"
            );
        }
        other => panic!("expected InUse, got {other:?}"),
    }
}

#[test]
fn committed_chunks_survive_a_reopen_and_uncommitted_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(4 * CHUNK_SIZE, 2);
    let hash = Hash::of(&data);
    {
        let store = Store::open(dir.path()).unwrap();
        let partial = store
            .open_partial(
                PartialKey::Blob(hash),
                data.len() as u64,
                PartialMode::Verified,
            )
            .unwrap();
        partial
            .write_chunks(0, &data[..2 * CHUNK_SIZE as usize])
            .unwrap();
        partial.commit().unwrap();
        partial
            .write_chunks(3, &data[3 * CHUNK_SIZE as usize..])
            .unwrap();
        // Dropped without a commit: like a crash inside the window.
    }
    let store = Store::open(dir.path()).unwrap();
    let partial = store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    assert_eq!(partial.missing(), vec![2..4]);
    assert_eq!(partial.present_bytes(), 2 * CHUNK_SIZE);
}

#[test]
fn a_complete_partial_is_published_only_when_its_hash_matches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(2 * CHUNK_SIZE + 100, 3);
    let hash = Hash::of(&data);
    let unverified = PartialMode::Unverified {
        source: "http://mirror/x".into(),
        validator: Some("\"v1\"".into()),
    };

    let mut wrong = data.clone();
    wrong[7] ^= 1;
    let partial = store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            unverified.clone(),
        )
        .unwrap();
    partial.write_chunks(0, &wrong).unwrap();
    match partial.finish() {
        Err(Error::HashMismatch { expected, .. }) => assert_eq!(expected, hash),
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    assert!(!store.has(hash).unwrap());
    assert!(!store.blob_path(hash).exists());

    let partial = store
        .open_partial(PartialKey::Blob(hash), data.len() as u64, unverified)
        .unwrap();
    assert_eq!(partial.present_bytes(), 0, "a mismatch empties the partial");
    partial.write_chunks(0, &data).unwrap();
    assert_eq!(partial.finish().unwrap(), hash);
    assert!(store.has(hash).unwrap());
    assert_eq!(fs::read(store.blob_path(hash)).unwrap(), data);
    assert!(store.outboard(hash).unwrap().is_some());
    assert_eq!(store.list().unwrap().len(), 1, "no partial record is left");
}

#[test]
fn a_url_download_is_published_under_the_hash_of_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(CHUNK_SIZE / 2, 4);
    let key = PartialKey::Url("http://mirror/file".into());
    let mode = PartialMode::Unverified {
        source: "http://mirror/file".into(),
        validator: None,
    };
    let partial = store.open_partial(key, data.len() as u64, mode).unwrap();
    partial.write_chunks(0, &data).unwrap();
    assert_eq!(partial.finish().unwrap(), Hash::of(&data));
}

#[test]
fn a_changed_source_validator_discards_unverified_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(2 * CHUNK_SIZE, 5);
    let key = PartialKey::Blob(Hash::of(&data));
    let v1 = PartialMode::Unverified {
        source: "http://m/a".into(),
        validator: Some("\"1\"".into()),
    };
    let v2 = PartialMode::Unverified {
        source: "http://m/a".into(),
        validator: Some("\"2\"".into()),
    };
    let partial = store
        .open_partial(key.clone(), data.len() as u64, v1.clone())
        .unwrap();
    partial
        .write_chunks(0, &data[..CHUNK_SIZE as usize])
        .unwrap();
    partial.commit().unwrap();
    drop(partial);
    assert_eq!(
        store
            .open_partial(key.clone(), data.len() as u64, v1)
            .unwrap()
            .present_bytes(),
        CHUNK_SIZE
    );
    assert_eq!(
        store
            .open_partial(key, data.len() as u64, v2)
            .unwrap()
            .present_bytes(),
        0
    );
}

#[test]
fn verify_turns_a_damaged_blob_into_a_partial_missing_only_the_bad_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(5 * CHUNK_SIZE, 6);
    let hash = store.import_bytes(&data).unwrap();
    assert!(store.verify().unwrap().is_clean());

    let path = store.blob_path(hash);
    let mut damaged = data.clone();
    damaged[(3 * CHUNK_SIZE + 1) as usize] ^= 0xff;
    let mut permissions = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    fs::set_permissions(&path, permissions).unwrap();
    fs::write(&path, &damaged).unwrap();

    let report = store.verify().unwrap();
    assert_eq!(report.blobs_damaged, vec![hash]);
    assert!(!store.has(hash).unwrap());
    let partial = store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    assert_eq!(partial.missing(), vec![3..4]);
    partial
        .write_chunks(3, &data[3 * CHUNK_SIZE as usize..4 * CHUNK_SIZE as usize])
        .unwrap();
    assert_eq!(partial.finish().unwrap(), hash);
}

#[test]
fn verify_recovers_written_chunks_lost_in_the_window_and_drops_torn_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(4 * CHUNK_SIZE, 7);
    let outboard = Outboard::compute(&data[..], data.len() as u64).unwrap();
    let hash = outboard.hash();
    let store = Store::open(dir.path()).unwrap();
    store.put_partial_outboard(&outboard).unwrap();
    let partial = store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    partial
        .write_chunks(0, &data[..CHUNK_SIZE as usize])
        .unwrap();
    partial.commit().unwrap();
    partial
        .write_chunks(2, &data[2 * CHUNK_SIZE as usize..3 * CHUNK_SIZE as usize])
        .unwrap();
    drop(partial);
    // Tear chunk 0 on disk behind the store's back.
    let data_file = fs::read_dir(dir.path().join("partial"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "data"))
        .unwrap();
    let mut torn = fs::read(&data_file).unwrap();
    torn[10] ^= 1;
    fs::write(&data_file, torn).unwrap();

    let report = store.verify().unwrap();
    assert_eq!((report.chunks_dropped, report.chunks_recovered), (1, 1));
    let partial = store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    assert_eq!(partial.missing(), vec![0..2, 3..4]);
}

#[test]
fn gc_removes_abandoned_partials_and_strays_but_keeps_recent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(CHUNK_SIZE, 8);
    let partial = store
        .open_partial(
            PartialKey::Blob(Hash::of(&data)),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    drop(partial);
    fs::write(dir.path().join("tmp/import-leftover.99999"), b"junk").unwrap();

    let report = store.gc(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        (report.partials_removed, report.stray_files_removed),
        (0, 1)
    );
    assert_eq!(store.list().unwrap().len(), 1);

    let report = store.gc(Duration::ZERO).unwrap();
    assert_eq!(report.partials_removed, 1);
    assert!(store.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(dir.path().join("partial")).unwrap().count(), 0);
}

#[test]
fn manifests_and_aliases_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(100, 9);
    let hash = store.import_bytes(&data).unwrap();
    let sha = Sha256([7; 32]);
    store.put_alias(sha, hash).unwrap();
    assert_eq!(store.alias(sha).unwrap(), Some(hash));
    let other = Sha256([3; 32]);
    store.put_alias(other, hash).unwrap();
    assert_eq!(store.aliases().unwrap(), vec![(other, hash), (sha, hash)]);

    let entry = ManifestEntry {
        path: "weights/a.gguf".into(),
        size: 100,
        hash,
        sha256: Some(sha),
        mirrors: vec![],
    };
    let manifest = Manifest::new(vec![entry]).unwrap();
    let model = store.put_manifest(&manifest).unwrap();
    assert_eq!(model, manifest.hash());
    assert_eq!(store.manifest(model).unwrap(), Some(manifest));
    assert!(
        store
            .list()
            .unwrap()
            .iter()
            .any(|info| info.hash == model && info.is_model)
    );

    let out = dir.path().join("export");
    let written = store.export_model(model, &out).unwrap();
    assert_eq!(fs::read(&written[0]).unwrap(), data);
    assert!(written[0].ends_with("weights/a.gguf"));
}

#[test]
fn chunk_count_matches_partial_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let size = 3 * CHUNK_SIZE + 1;
    let partial = store
        .open_partial(
            PartialKey::Blob(Hash::of(b"x")),
            size,
            PartialMode::Verified,
        )
        .unwrap();
    assert_eq!(partial.missing(), vec![0..chunk_count(size)]);
}

#[test]
fn gc_of_a_partial_forgets_its_outboard_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(2 * CHUNK_SIZE, 10);
    let outboard = Outboard::compute(&data[..], data.len() as u64).unwrap();
    store.put_partial_outboard(&outboard).unwrap();
    let partial = store
        .open_partial(
            PartialKey::Blob(outboard.hash()),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    drop(partial);
    assert!(store.outboard(outboard.hash()).unwrap().is_some());
    store.gc(Duration::ZERO).unwrap();
    assert!(
        store.outboard(outboard.hash()).unwrap().is_none(),
        "a removed partial's outboard is forgotten"
    );
}

#[test]
fn remove_deletes_the_blob_and_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let hash = store.import_bytes(&blob(1000, 11)).unwrap();
    store.remove(hash).unwrap();
    assert!(!store.has(hash).unwrap());
    assert!(!store.blob_path(hash).exists());
    assert!(store.outboard(hash).unwrap().is_none());
    assert!(matches!(store.remove(hash), Err(Error::NotFound(_))));
}

#[test]
fn a_store_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        let db = redb::Database::open(dir.path().join("p2pmodel.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(p2pmodel_store::tables::META)
            .unwrap()
            .insert("schema", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    match Store::open(dir.path()) {
        Err(OpenError::Schema {
            found: 99,
            expected,
            ..
        }) => assert_eq!(expected, p2pmodel_store::tables::SCHEMA_VERSION),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[test]
fn a_partial_whose_data_file_vanished_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(2 * CHUNK_SIZE, 12);
    let key = PartialKey::Url("http://m/f".into());
    let mode = PartialMode::Unverified {
        source: "http://m/f".into(),
        validator: Some("\"1\"".into()),
    };
    let partial = store
        .open_partial(key.clone(), data.len() as u64, mode.clone())
        .unwrap();
    partial.write_chunks(0, &data).unwrap();
    partial.commit().unwrap();
    drop(partial);
    for entry in fs::read_dir(dir.path().join("partial")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let partial = store.open_partial(key, data.len() as u64, mode).unwrap();
    assert_eq!(
        partial.present_bytes(),
        0,
        "recorded chunks without their bytes are not trusted"
    );
}

#[test]
fn an_unverified_partial_without_a_validator_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(2 * CHUNK_SIZE, 13);
    let key = PartialKey::Url("http://m/g".into());
    let mode = PartialMode::Unverified {
        source: "http://m/g".into(),
        validator: None,
    };
    let partial = store
        .open_partial(key.clone(), data.len() as u64, mode.clone())
        .unwrap();
    partial
        .write_chunks(0, &data[..CHUNK_SIZE as usize])
        .unwrap();
    partial.commit().unwrap();
    drop(partial);
    let partial = store.open_partial(key, data.len() as u64, mode).unwrap();
    assert_eq!(
        partial.present_bytes(),
        0,
        "no validator, no way to know the content is the same"
    );
}

#[test]
fn a_verified_partial_that_fails_its_final_hash_keeps_its_good_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = blob(4 * CHUNK_SIZE, 14);
    let outboard = Outboard::compute(&data[..], data.len() as u64).unwrap();
    let hash = outboard.hash();
    store.put_partial_outboard(&outboard).unwrap();
    let partial = store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    let mut rotten = data.clone();
    rotten[(2 * CHUNK_SIZE + 9) as usize] ^= 1;
    partial.write_chunks(0, &rotten).unwrap();
    assert!(matches!(partial.finish(), Err(Error::HashMismatch { .. })));
    let partial = store
        .open_partial(
            PartialKey::Blob(hash),
            data.len() as u64,
            PartialMode::Verified,
        )
        .unwrap();
    assert_eq!(
        partial.missing(),
        vec![2..3],
        "only the rotten chunk is fetched again"
    );
}

#[test]
fn a_publish_cut_short_by_a_crash_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(3 * CHUNK_SIZE, 15);
    let outboard = Outboard::compute(&data[..], data.len() as u64).unwrap();
    let hash = outboard.hash();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_partial_outboard(&outboard).unwrap();
        let partial = store
            .open_partial(
                PartialKey::Blob(hash),
                data.len() as u64,
                PartialMode::Verified,
            )
            .unwrap();
        partial.write_chunks(0, &data).unwrap();
        partial.commit().unwrap();
        // The crash: the data was renamed into blobs/, nothing else happened.
        fs::rename(
            dir.path().join(format!("partial/{hash}.data")),
            store.blob_path(hash),
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(store.has(hash).unwrap());
    assert!(store.outboard(hash).unwrap().is_some());
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn verify_rebuilds_a_torn_outboard_of_a_good_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let hash = store.import_bytes(&blob(5 * CHUNK_SIZE, 16)).unwrap();
    let obao = dir.path().join(format!("blobs/{hash}.obao"));
    let torn = fs::read(&obao).unwrap();
    fs::write(&obao, &torn[..torn.len() / 2]).unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(fs::read(&obao).unwrap(), torn);
}
