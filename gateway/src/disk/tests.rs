use super::format::{file_size_for, HEADER_LEN};
use super::*;
use bytes::Bytes;
use codec::BlobId;
use std::time::{Duration, Instant};

fn id(n: u8) -> BlobId {
    BlobId([n; 32])
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn wait_ready(cache: &DiskCache) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cache.index_ready() {
        assert!(Instant::now() < deadline, "index rebuild did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn open(dir: &std::path::Path, capacity: u64) -> Arc<DiskCache> {
    let cache = DiskCache::open(dir, capacity, DiskMetrics::default()).unwrap();
    wait_ready(&cache);
    cache
}

fn read(
    cache: &Arc<DiskCache>,
    id: &BlobId,
    range: std::ops::Range<u64>,
) -> Result<Option<Vec<u8>>, DiskError> {
    let Some(mut reader) = cache.reader(id, range)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

fn file_of(dir: &std::path::Path, id: &BlobId) -> std::path::PathBuf {
    let name = id.to_string();
    dir.join("blobs").join(&name[..2]).join(name)
}

#[test]
fn a_lookup_indexes_a_file_the_rebuild_has_not_reached() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (content(3000, 1), content(5000, 2));
    {
        let cache = open(dir.path(), 1 << 20);
        cache.insert(id(1), &[Bytes::from(a.clone())]).unwrap();
        cache.insert(id(2), &[Bytes::from(b.clone())]).unwrap();
    }
    std::fs::write(file_of(dir.path(), &id(2)), b"not a cache file").unwrap();
    // Straight after opening, before (or while) the background rebuild runs.
    let cache = DiskCache::open(dir.path(), 1 << 20, DiskMetrics::default()).unwrap();
    assert_eq!(cache.probe(&id(1)), Some(3000));
    assert_eq!(read(&cache, &id(1), 0..3000).unwrap(), Some(a));
    assert_eq!(cache.probe(&id(2)), None, "a bad file is not indexed");
    assert!(!file_of(dir.path(), &id(2)).exists(), "and is quarantined");
    assert_eq!(cache.probe(&id(3)), None);
    wait_ready(&cache);
    assert_eq!(cache.len_of(&id(1)), Some(3000));
    assert_eq!(cache.len_of(&id(2)), None);

    // A file the index has never seen (here: copied in after the rebuild) is found by probe.
    let other = tempfile::tempdir().unwrap();
    let c = content(4000, 3);
    open(other.path(), 1 << 20)
        .insert(id(3), &[Bytes::from(c.clone())])
        .unwrap();
    let target = file_of(dir.path(), &id(3));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(file_of(other.path(), &id(3)), &target).unwrap();
    assert_eq!(cache.len_of(&id(3)), None);
    assert_eq!(cache.probe(&id(3)), Some(4000));
    assert_eq!(read(&cache, &id(3), 0..4000).unwrap(), Some(c));
}

#[test]
fn round_trips_whole_blobs_and_ranges_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let len = 2 * CHUNK_SIZE as usize + 12345;
    let data = content(len, 3);
    let mut writer = cache.writer(id(1), len as u64).unwrap();
    for piece in data.chunks(100_000) {
        writer.write(piece).unwrap();
    }
    writer.commit().unwrap();
    assert_eq!(read(&cache, &id(1), 0..len as u64).unwrap().unwrap(), data);
    for (a, b) in [
        (0u64, 1u64),
        (5, 5),
        (1_048_570, 1_048_590),
        (len as u64 - 1, len as u64),
        (100, 2_100_000),
    ] {
        assert_eq!(
            read(&cache, &id(1), a..b).unwrap().unwrap(),
            &data[a as usize..b as usize],
            "{a}..{b}"
        );
    }
    // Empty blob.
    cache.insert(id(2), &[]).unwrap();
    assert_eq!(
        read(&cache, &id(2), 0..0).unwrap().unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(cache.len_of(&id(2)), Some(0));
    assert!(read(&cache, &id(9), 0..1).unwrap().is_none());
}

#[test]
fn a_flipped_byte_is_never_served_and_the_file_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let len = CHUNK_SIZE as usize + 10;
    let data = content(len, 5);
    // Flip a content byte in the second chunk, in the table, and in the header.
    for (n, offset) in [
        (1u8, 128 + CHUNK_SIZE as u64 + 3),
        (2, 128 + len as u64 + 5),
        (3, 60),
    ] {
        cache.insert(id(n), &[Bytes::from(data.clone())]).unwrap();
        let path = file_of(dir.path(), &id(n));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
        let result = cache.reader(&id(n), 0..len as u64);
        match result {
            Err(DiskError::Corrupt { .. }) => {}
            Ok(Some(mut reader)) => {
                // Content corruption: the first chunk is good, the second never comes out.
                let first = reader.next_chunk().unwrap().unwrap();
                assert_eq!(&first[..], &data[..CHUNK_SIZE as usize]);
                assert!(matches!(
                    reader.next_chunk(),
                    Err(DiskError::Corrupt { .. })
                ));
            }
            other => panic!(
                "case {n}: corrupt file was not detected: {:?}",
                other.map(|r| r.is_some())
            ),
        }
        assert!(!cache.contains(&id(n)), "case {n}: still indexed");
        assert!(!path.exists(), "case {n}: not moved aside");
        assert!(read(&cache, &id(n), 0..1).unwrap().is_none());
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        3
    );
}

#[test]
fn small_reads_reuse_the_open_file_and_still_check_every_byte() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let data = content(5000, 7);
    cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
    // Not opened yet: the caller must take the blocking path.
    assert!(cache.read_small_now(&id(1)).is_none());
    assert_eq!(read(&cache, &id(1), 0..5000).unwrap().unwrap(), data);
    // Open and in the page cache now (ext4, xfs, btrfs and tmpfs honour RWF_NOWAIT).
    let again = cache
        .read_small_now(&id(1))
        .expect("served without blocking");
    assert_eq!(&again.unwrap()[..], &data[..]);
    // A byte flipped in place (same file, through the page cache) is caught by the open
    // handle's next read: never served, quarantined, forgotten.
    let file = OpenOptions::new()
        .write(true)
        .open(file_of(dir.path(), &id(1)))
        .unwrap();
    file.write_all_at(&[data[100] ^ 1], HEADER_LEN + 100)
        .unwrap();
    assert!(matches!(
        cache.read_small_now(&id(1)),
        Some(Err(DiskError::Corrupt { .. }))
    ));
    assert!(!cache.contains(&id(1)));
    assert!(cache.read_small_now(&id(1)).is_none());
    assert!(read(&cache, &id(1), 0..1).unwrap().is_none());
    // A purge closes the handle with the entry.
    cache.insert(id(2), &[Bytes::from(data.clone())]).unwrap();
    assert_eq!(read(&cache, &id(2), 0..10).unwrap().unwrap(), &data[..10]);
    assert!(cache.purge(&id(2)).unwrap());
    assert!(cache.read_small_now(&id(2)).is_none());
    assert!(read(&cache, &id(2), 0..10).unwrap().is_none());
}

#[test]
fn a_file_cut_short_after_it_was_opened_is_caught_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let len = CHUNK_SIZE as usize + 10;
    let data = content(len, 3);
    cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
    assert_eq!(read(&cache, &id(1), 0..10).unwrap().unwrap(), &data[..10]);
    let path = file_of(dir.path(), &id(1));
    // Cut short under a reader already open: its next chunk is caught.
    let mut reader = cache.reader(&id(1), 0..len as u64).unwrap().unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(HEADER_LEN + CHUNK_SIZE as u64 / 2).unwrap();
    assert!(matches!(
        reader.next_chunk(),
        Err(DiskError::Corrupt { .. })
    ));
    assert!(!cache.contains(&id(1)));
}

#[test]
fn a_file_cut_short_under_a_kept_handle_fails_the_open_not_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let len = 2 * CHUNK_SIZE as usize;
    let data = content(len, 4);
    cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
    // Opened once: the checked handle is kept for later reads.
    assert_eq!(read(&cache, &id(1), 0..10).unwrap().unwrap(), &data[..10]);
    let path = file_of(dir.path(), &id(1));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // The next open sees the short file before handing out a reader: a miss, quarantined.
    assert!(matches!(
        cache.reader(&id(1), 0..len as u64),
        Err(DiskError::Corrupt { .. })
    ));
    assert!(!cache.contains(&id(1)));
    assert!(!path.exists());
    assert!(cache.reader(&id(1), 0..1).unwrap().is_none());
    // And a refill brings it back whole.
    cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
    assert_eq!(read(&cache, &id(1), 0..len as u64).unwrap().unwrap(), data);
}

#[test]
fn concurrent_pin_changes_are_all_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let ids: Vec<BlobId> = (0..100u8).map(id).collect();
    std::thread::scope(|scope| {
        for chunk in ids.chunks(10) {
            let cache = &cache;
            scope.spawn(move || {
                for id in chunk {
                    assert!(cache.set_pinned(*id, true).unwrap());
                }
            });
        }
    });
    let file: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.path().join("pins.json")).unwrap())
            .expect("pins.json is valid JSON");
    assert_eq!(file.len(), 100);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "no temporary file left"
    );
    drop(cache);
    let cache = open(dir.path(), 1 << 30);
    for id in &ids {
        assert!(cache.is_pinned(id), "{id} lost across the restart");
    }
    assert!(!cache.set_pinned(id(5), true).unwrap(), "already pinned");
    assert!(cache.set_pinned(id(5), false).unwrap());
    assert_eq!(cache.stats(0).pinned, 99);
}

#[test]
fn a_corrupt_pins_file_keeps_what_it_can_and_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = open(dir.path(), 1 << 30);
        for n in 1..=3 {
            cache.set_pinned(id(n), true).unwrap();
        }
    }
    // Cut off in the middle of the last ID written: the other two are still readable.
    let path = dir.path().join("pins.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let (cut, last) = (1..=3u8)
        .map(|n| (text.find(&id(n).to_string()).unwrap(), n))
        .max()
        .unwrap();
    std::fs::write(&path, &text[..cut + 10]).unwrap();
    let kept: Vec<BlobId> = (1..=3u8).filter(|n| *n != last).map(id).collect();
    let cache = open(dir.path(), 1 << 30);
    assert!(kept.iter().all(|id| cache.is_pinned(id)));
    assert_eq!(cache.stats(0).pinned, 2);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pins.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for the operator");
    // What was kept is written back, so it survives the next restart too.
    drop(cache);
    let cache = open(dir.path(), 1 << 30);
    assert!(kept.iter().all(|id| cache.is_pinned(id)));
    assert_eq!(cache.stats(0).pinned, 2);
}

#[test]
fn a_pin_change_that_cannot_be_saved_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    cache.set_pinned(id(1), true).unwrap();
    let before = std::fs::read(dir.path().join("pins.json")).unwrap();
    // tmp/ is now a file: every save fails, as on a read-only device.
    std::fs::remove_dir(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp"), b"not a directory").unwrap();
    assert!(cache.set_pinned(id(2), true).is_err());
    assert!(cache.set_pinned(id(1), false).is_err());
    assert!(!cache.is_pinned(&id(2)));
    assert!(cache.is_pinned(&id(1)));
    assert_eq!(std::fs::read(dir.path().join("pins.json")).unwrap(), before);
}

#[test]
fn a_purge_the_device_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let data = content(3000, 1);
    cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
    // Unlinking a directory fails (EISDIR): stand-in for a read-only remount, which
    // needs root privileges to stage and does not stop root anyway.
    let path = file_of(dir.path(), &id(1));
    let saved = dir.path().join("saved");
    std::fs::rename(&path, &saved).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(cache.purge(&id(1)).is_err());
    assert!(cache.contains(&id(1)), "a failed purge leaves the entry");
    std::fs::remove_dir(&path).unwrap();
    std::fs::rename(&saved, &path).unwrap();
    assert_eq!(read(&cache, &id(1), 0..3000).unwrap().unwrap(), data);
    assert!(cache.purge(&id(1)).unwrap());
    assert!(!cache.contains(&id(1)));
}

#[test]
fn a_deleted_cache_directory_is_recreated_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let cache = open(&root, 1 << 30);
    cache
        .insert(id(1), &[Bytes::from(content(3000, 1))])
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    let data = content(5000, 2);
    cache.insert(id(2), &[Bytes::from(data.clone())]).unwrap();
    assert_eq!(read(&cache, &id(2), 0..5000).unwrap().unwrap(), data);
    // Only what is on the device now counts against the bound.
    let stats = cache.stats(0);
    assert_eq!((stats.entries, stats.bytes), (1, file_size_for(5000)));
    // The deleted blob is forgotten at its next read, not served.
    assert!(read(&cache, &id(1), 0..1).unwrap().is_none());
    // Only blobs/ deleted: the commit recreates it and forgets what went with it.
    std::fs::remove_dir_all(root.join("blobs")).unwrap();
    cache.insert(id(4), &[Bytes::from(data.clone())]).unwrap();
    let stats = cache.stats(0);
    assert_eq!((stats.entries, stats.bytes), (1, file_size_for(5000)));
    assert!(cache.contains(&id(4)));
    cache.insert(id(2), &[Bytes::from(data.clone())]).unwrap();
    cache.set_pinned(id(2), true).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    cache.set_pinned(id(3), true).unwrap();
    drop(cache);
    let cache = open(&root, 1 << 30);
    assert!(cache.is_pinned(&id(2)) && cache.is_pinned(&id(3)));
}

#[test]
fn a_full_device_evicts_lowers_the_bound_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let blob = 100_000usize;
    let per_file = file_size_for(blob as u64);
    // Configured for 100 files, but the device only holds 5 and a half.
    let cache = open(dir.path(), per_file * 100);
    cache
        .device_size
        .store(per_file * 11 / 2, Ordering::Relaxed);
    for n in 1..=20u8 {
        cache
            .insert(id(n), &[Bytes::from(content(blob, n))])
            .unwrap_or_else(|e| panic!("insert {n}: {e}"));
        assert!(cache.contains(&id(n)));
    }
    let stats = cache.stats(0);
    assert_eq!(stats.entries, 5);
    assert!(stats.effective_capacity < per_file * 6);
    assert!(stats.effective_capacity >= per_file * 5);
    assert!(cache.contains(&id(20)) && !cache.contains(&id(1)));
    assert_eq!(walk_files(&dir.path().join("blobs")), 5);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // Space freed on the device raises the bound again (never above the configured one).
    cache.device_size.store(per_file * 1000, Ordering::Relaxed);
    cache
        .insert(id(21), &[Bytes::from(content(blob, 21))])
        .unwrap();
    assert_eq!(cache.effective_capacity(), per_file * 100);
    assert_eq!(cache.stats(0).entries, 6);

    // A pin that finds the device full evicts an unpinned blob to be saved.
    cache
        .device_size
        .store(cache.stats(0).bytes, Ordering::Relaxed);
    assert!(cache.set_pinned(id(21), true).unwrap());
    assert!(cache.is_pinned(&id(21)));
    assert_eq!(cache.stats(0).entries, 5);
    assert!(cache.contains(&id(21)));
}

#[test]
fn quarantined_files_count_against_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let blob = 100_000usize;
    let per_file = file_size_for(blob as u64);
    let cache = open(dir.path(), per_file * 4);
    for n in 1..=4u8 {
        cache
            .insert(id(n), &[Bytes::from(content(blob, n))])
            .unwrap();
    }
    // Corrupt two: their files move to quarantine, still on the device.
    for n in [1u8, 2] {
        let path = file_of(dir.path(), &id(n));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[60] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(cache.reader(&id(n), 0..1).is_err());
    }
    let stats = cache.stats(0);
    assert_eq!(stats.quarantine_bytes, 2 * per_file);
    assert_eq!(stats.bytes + stats.quarantine_bytes, 4 * per_file);
    // A new blob makes room by deleting quarantined files first, not cached blobs.
    cache
        .insert(id(5), &[Bytes::from(content(blob, 5))])
        .unwrap();
    let stats = cache.stats(0);
    assert!(stats.bytes + stats.quarantine_bytes <= 4 * per_file);
    assert_eq!(stats.entries, 3);
    assert!(cache.contains(&id(3)) && cache.contains(&id(4)));
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        1
    );
    // Counted again after a restart.
    drop(cache);
    let cache = open(dir.path(), per_file * 4);
    assert_eq!(cache.stats(0).quarantine_bytes, per_file);
}

#[test]
fn a_short_file_is_detected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    cache
        .insert(id(1), &[Bytes::from(content(5000, 1))])
        .unwrap();
    let path = file_of(dir.path(), &id(1));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(
        cache.reader(&id(1), 0..10),
        Err(DiskError::Corrupt { .. })
    ));
    assert!(!cache.contains(&id(1)));
}

#[test]
fn restart_rebuilds_the_index_and_drops_partial_writes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = open(dir.path(), 1 << 30);
        for n in 1..=20u8 {
            cache
                .insert(id(n), &[Bytes::from(content(1000 + usize::from(n), n))])
                .unwrap();
        }
        // A fill that never committed: a crash mid-write leaves its temporary file behind.
        // (Written by hand: leaking a writer would keep this cache, and its directory lock,
        // alive for the rest of the process.)
        let partial = dir.path().join("tmp").join(format!("{}.1.2.tmp", id(99)));
        std::fs::write(partial, content(5000, 9)).unwrap();
        // A committed file corrupted while the gateway was down.
        let path = file_of(dir.path(), &id(7));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[200] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        1
    );
    let cache = open(dir.path(), 1 << 30);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert!(!cache.contains(&id(99)));
    assert_eq!(cache.indexed_at_start(), 20);
    for n in 1..=20u8 {
        let got = read(&cache, &id(n), 0..1000 + u64::from(n));
        if n == 7 {
            // Header and table are intact, so the rebuild indexed it; the chunk check catches it.
            assert!(matches!(got, Err(DiskError::Corrupt { .. })));
        } else {
            assert_eq!(got.unwrap().unwrap(), content(1000 + usize::from(n), n));
        }
    }
}

#[test]
fn the_bound_holds_and_pinned_blobs_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let blob = 100_000usize;
    let per_file = file_size_for(blob as u64);
    let cache = open(dir.path(), per_file * 5);
    cache.set_pinned(id(1), true).unwrap();
    for n in 1..=30u8 {
        cache
            .insert(id(n), &[Bytes::from(content(blob, n))])
            .unwrap();
        let stats = cache.stats(0);
        assert!(
            stats.bytes <= per_file * 5,
            "bound exceeded after {n}: {}",
            stats.bytes
        );
        // Keep blob 2 hot: it is used after every insert and must not be the LRU victim.
        if n >= 2 {
            assert!(
                read(&cache, &id(2), 0..1).unwrap().is_some(),
                "hot blob evicted at {n}"
            );
        }
    }
    assert!(cache.contains(&id(1)), "pinned blob was evicted");
    assert!(cache.contains(&id(30)));
    assert!(!cache.contains(&id(3)));
    let on_disk = walk_files(&dir.path().join("blobs"));
    assert_eq!(on_disk, 5);
    // Pins persist across a restart.
    drop(cache);
    let cache = open(dir.path(), per_file * 5);
    assert!(cache.is_pinned(&id(1)));
    assert!(matches!(
        cache.writer(id(50), per_file * 5),
        Err(DiskError::TooLarge { .. })
    ));
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn an_unwritable_cache_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    // Replace tmp/ with a file: creating temporary files now fails, as on a broken disk.
    std::fs::remove_dir(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp"), b"not a directory").unwrap();
    assert!(matches!(cache.writer(id(1), 10), Err(DiskError::Io(_))));
    assert!(!cache.contains(&id(1)));
}

#[test]
fn a_purge_during_a_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let mut writer = cache.writer(id(1), 3).unwrap();
    writer.write(b"abc").unwrap();
    assert!(cache.purge(&id(1)).unwrap());
    writer.commit().unwrap();
    assert!(!cache.contains(&id(1)));
    assert_eq!(walk_files(&dir.path().join("blobs")), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // A later write of the same blob is not affected.
    cache.insert(id(1), &[Bytes::from_static(b"abc")]).unwrap();
    assert!(cache.contains(&id(1)));
}

#[test]
fn wrong_lengths_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let mut w = cache.writer(id(1), 10).unwrap();
    assert!(matches!(
        w.write(&[0u8; 11]),
        Err(DiskError::WrongLength { .. })
    ));
    w.write(&[0u8; 5]).unwrap();
    assert!(matches!(w.commit(), Err(DiskError::WrongLength { .. })));
    assert!(!cache.contains(&id(1)));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(walk_files(&dir.path().join("blobs")), 0);
}

#[test]
fn thousands_of_entries_are_reindexed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = open(dir.path(), 1 << 40);
        for n in 0..2000u32 {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            cache
                .insert(BlobId(bytes), &[Bytes::from(n.to_le_bytes().to_vec())])
                .unwrap();
        }
    }
    let cache = open(dir.path(), 1 << 40);
    assert_eq!(cache.stats(0).entries, 2000);
}

/// Copy the format-1 fixture (written by the release before format 2) into `dir`.
fn copy_v1_fixture(dir: &std::path::Path) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/disk-v1");
    for (id, _) in V1_BLOBS {
        let id: BlobId = id.parse().unwrap();
        let to = file_of(dir, &id);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file_of(&fixture, &id), &to).unwrap();
    }
}

/// The fixture's blobs: (Blob ID, content rule multiplier and offset, length).
const V1_BLOBS: [(&str, (u64, u64, u64)); 2] = [
    (
        "VBqM5CsXNhScpgDZxab4-g8jqRW5cf2j7rHspy_auyY",
        (31, 7, 1572864),
    ),
    (
        "aLVbMiwMeggirYfOQXs5bXPTEJIhgJDCg2Zrez-wHYU",
        (131, 3, 4000),
    ),
];

#[test]
fn format_1_files_are_read_alongside_format_2_and_checked_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    copy_v1_fixture(dir.path());
    let cache = open(dir.path(), 1 << 30);
    for (text, (mul, add, len)) in V1_BLOBS {
        let id: BlobId = text.parse().unwrap();
        let want: Vec<u8> = (0..len).map(|i| (i * mul + add) as u8).collect();
        assert_eq!(read(&cache, &id, 0..len).unwrap().unwrap(), want);
        // A range across the chunk boundary of the two-chunk blob.
        let (start, end) = (len / 2, len - 1);
        assert_eq!(
            read(&cache, &id, start..end).unwrap().unwrap(),
            want[start as usize..end as usize]
        );
    }
    // A new blob is written as format 2 (4-byte CRC32C entries) beside them.
    cache
        .insert(id(7), &[Bytes::from(content(5000, 1))])
        .unwrap();
    let size = std::fs::metadata(file_of(dir.path(), &id(7)))
        .unwrap()
        .len();
    assert_eq!(size, 128 + 5000 + 4);
    assert_eq!(
        read(&cache, &id(7), 0..5000).unwrap().unwrap(),
        content(5000, 1)
    );
    assert_eq!(cache.stats(0).entries, 3);

    // A flipped content byte in the format-1 file is caught by its BLAKE3 and never served.
    let (text, (_, _, len)) = V1_BLOBS[0];
    let old: BlobId = text.parse().unwrap();
    let path = file_of(dir.path(), &old);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[128 + (1 << 20) + 9] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    drop(cache);
    let cache = open(dir.path(), 1 << 30);
    let mut reader = cache.reader(&old, 0..len).unwrap().expect("indexed");
    assert_eq!(reader.next_chunk().unwrap().unwrap().len(), 1 << 20);
    assert!(matches!(
        reader.next_chunk(),
        Err(DiskError::Corrupt { .. })
    ));
    assert!(cache.reader(&old, 0..len).unwrap().is_none());
}

/// Read `reader` to its end through `fill` (page cache first, waiting only when it must),
/// collecting what `ready` lends; also the address each chunk's bytes were lent from.
fn drain_filling(reader: &mut DiskReader) -> Result<(Vec<u8>, Vec<usize>), DiskError> {
    let (mut out, mut at) = (Vec::new(), Vec::new());
    loop {
        let mut fill = reader.fill(false)?;
        if fill == Fill::WouldBlock {
            assert!(
                reader.ready().is_empty(),
                "bytes lent before their chunk was read"
            );
            fill = reader.fill(true)?;
        }
        match fill {
            Fill::Ready => {
                let ready = reader.ready();
                assert!(!ready.is_empty());
                at.push(ready.as_ptr() as usize);
                out.extend_from_slice(ready);
                reader.consume();
            }
            Fill::End => return Ok((out, at)),
            Fill::WouldBlock => panic!("a waiting read would block"),
        }
    }
}

#[test]
fn fill_lends_exact_ranges_from_one_reused_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let chunk = CHUNK_SIZE as usize;
    let len = 2 * chunk + chunk / 2;
    let data = content(len, 9);
    cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
    // Not open yet: only the blocking open can answer.
    assert!(cache.reader_now(&id(1), 0..10).is_none());
    for (start, end) in [
        (0, len),
        (chunk - 5, 2 * chunk + 7),
        (3, 4),
        (2 * chunk, len),
    ] {
        let mut reader = match cache.reader_now(&id(1), start as u64..end as u64) {
            Some(reader) => reader.unwrap(),
            None => cache
                .reader(&id(1), start as u64..end as u64)
                .unwrap()
                .unwrap(),
        };
        let (got, at) = drain_filling(&mut reader).unwrap();
        assert_eq!(got, &data[start..end], "range {start}..{end}");
        // Every chunk after the first is lent from the start of the same buffer: no
        // allocation per chunk.
        if at.len() > 1 {
            let base = at[0] - start % chunk;
            assert!(at[1..].iter().all(|&a| a == base), "range {start}..{end}");
        }
        assert_eq!(reader.fill(false).unwrap(), Fill::End);
    }
    // The same range handed out as `Bytes` (the stream path) and whole (`read_all`).
    let reader = cache
        .reader_now(&id(1), 7..len as u64 - 3)
        .unwrap()
        .unwrap();
    assert_eq!(&reader.read_all().unwrap()[..], &data[7..len - 3]);
    let mut reader = cache
        .reader_now(&id(1), chunk as u64 - 1..len as u64)
        .unwrap()
        .unwrap();
    let mut streamed = Vec::new();
    while let Some(bytes) = reader.next_chunk().unwrap() {
        streamed.extend_from_slice(&bytes);
    }
    assert_eq!(streamed, &data[chunk - 1..]);
}

#[test]
fn fill_never_lends_a_byte_of_a_bad_chunk() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let chunk = CHUNK_SIZE as usize;
    let len = 3 * chunk;
    let data = content(len, 4);
    cache.insert(id(1), &[Bytes::from(data.clone())]).unwrap();
    let mut reader = cache.reader(&id(1), 0..len as u64).unwrap().unwrap();
    // Chunk 1 goes bad through the page cache, under the open file.
    let file = OpenOptions::new()
        .write(true)
        .open(file_of(dir.path(), &id(1)))
        .unwrap();
    file.write_all_at(&[data[chunk + 99] ^ 0x80], HEADER_LEN + chunk as u64 + 99)
        .unwrap();
    assert_eq!(reader.fill(true).unwrap(), Fill::Ready);
    assert_eq!(reader.ready(), &data[..chunk]);
    reader.consume();
    for wait in [false, true] {
        match reader.fill(wait) {
            Err(DiskError::Corrupt { .. }) => break,
            Ok(Fill::WouldBlock) if !wait => {}
            other => panic!("chunk 1 was not refused: {other:?}"),
        }
    }
    assert!(reader.ready().is_empty(), "a bad chunk's bytes were lent");
    assert!(reader.take_ready().is_empty());
    assert!(!cache.contains(&id(1)));
    assert!(cache.reader_now(&id(1), 0..1).is_none());
}

#[test]
fn an_open_file_cut_short_is_caught_before_a_reader_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let len = CHUNK_SIZE as usize + 10;
    cache
        .insert(id(1), &[Bytes::from(content(len, 5))])
        .unwrap();
    assert!(cache.reader(&id(1), 0..1).unwrap().is_some());
    assert!(matches!(cache.reader_now(&id(1), 0..1), Some(Ok(_))));
    let file = OpenOptions::new()
        .write(true)
        .open(file_of(dir.path(), &id(1)))
        .unwrap();
    file.set_len(HEADER_LEN + 100).unwrap();
    assert!(matches!(
        cache.reader_now(&id(1), 0..1),
        Some(Err(DiskError::Corrupt { .. }))
    ));
    assert!(!cache.contains(&id(1)));
}

// ---------------------------------------------------------------------------------------------
// Quilt patches on the disk tier (issue 16).

/// A quilt of 10 shards with three patches; the metadata, and for patch `which`: its ID, its
/// verified columns and its data.
fn quilt_patch(
    which: usize,
) -> (
    codec::VerifiedMetadata,
    codec::quilt::QuiltPatchId,
    Vec<Bytes>,
    Vec<u8>,
) {
    use codec::quilt::{self, ColumnSource};
    let config = codec::EncodingConfig::new(10).unwrap();
    let files: Vec<(String, Vec<u8>)> = [1500, 9000, 40]
        .iter()
        .enumerate()
        .map(|(i, &len)| (format!("p{i}"), content(len, 40 + i as u8)))
        .collect();
    let inputs: Vec<quilt::PatchInput<'_>> = files
        .iter()
        .map(|(name, data)| quilt::PatchInput {
            identifier: name.clone(),
            tags: [("k".to_string(), name.clone())].into(),
            data,
        })
        .collect();
    let encoded = quilt::encode_quilt(&config, &inputs).unwrap();
    let meta = codec::compute_metadata(&config, &encoded.data).unwrap();
    let ids = encoded.patch_ids(meta.blob_id());
    let (name, data) = &files[which];
    let id = ids.iter().find(|(n, _)| n == name).unwrap().1;
    let view = quilt::QuiltView::new(&config, &encoded.data).unwrap();
    let columns = (id.start_index..id.end_index)
        .map(|c| {
            let column = quilt::read_columns(&view, usize::from(c), 0, view.column_size());
            Bytes::from(column.unwrap())
        })
        .collect();
    (meta, id, columns, data.clone())
}

fn patch_file(dir: &std::path::Path, id: &codec::quilt::QuiltPatchId) -> std::path::PathBuf {
    let name = id.to_string();
    dir.join("patches").join(&name[..2]).join(name)
}

#[test]
fn a_patch_is_kept_under_its_id_and_read_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, id, columns, data) = quilt_patch(1);
    let on_disk;
    {
        let cache = open(dir.path(), 1 << 20);
        assert!(cache.read_patch(&id).unwrap().is_none());
        cache.insert_patch(id, &meta, &columns).unwrap();
        let got = cache.read_patch(&id).unwrap().unwrap();
        assert_eq!(got.data, data);
        assert_eq!(got.patch.identifier, "p1");
        assert_eq!(got.patch.tags["k"], "p1");
        assert_eq!(
            (got.patch.start_index, got.patch.end_index),
            (id.start_index, id.end_index)
        );
        // A patch is no blob: the blob side does not see it, and its file is where its kind
        // says.
        assert!(!cache.contains(&id.quilt_id));
        assert!(patch_file(dir.path(), &id).exists());
        assert!(dir.path().join("meta").join(id.to_string()).exists());
        let stats = cache.stats(10);
        assert_eq!(
            (stats.entries, stats.patch_entries, stats.blob_entries),
            (1, 1, 0)
        );
        assert_eq!(stats.top_patches[0].patch_id, id.to_string());
        assert_eq!(stats.top_patches[0].hits, 1);
        // The bound counts the patch file and its frame.
        on_disk = std::fs::metadata(patch_file(dir.path(), &id))
            .unwrap()
            .len()
            + std::fs::metadata(dir.path().join("meta").join(id.to_string()))
                .unwrap()
                .len();
        assert_eq!((stats.patch_bytes, stats.bytes), (on_disk, on_disk));
    }
    let cache = open(dir.path(), 1 << 20);
    assert_eq!(cache.indexed_at_start(), 1);
    assert!(cache.contains_patch(&id));
    assert_eq!(cache.stats(1).patch_bytes, on_disk);
    assert_eq!(cache.read_patch(&id).unwrap().unwrap().data, data);
    // Checked against its quilt's columns.
    let config = codec::EncodingConfig::new(10).unwrap();
    // The file's content: patch header, identifier, tags and data.
    let content = cache.stats(1).top_patches[0].len;
    assert!(content > data.len() as u64);
    assert_eq!(
        cache.scrub_patch(&id, config).unwrap(),
        ScrubOutcome::Verified { bytes: content }
    );
}

#[test]
fn columns_that_are_not_the_patch_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 20);
    let (meta, id, columns, _) = quilt_patch(1);
    let (other_meta, ..) = {
        let (m, i, c, d) = quilt_patch(0);
        let config = codec::EncodingConfig::new(10).unwrap();
        (codec::compute_metadata(&config, &d).unwrap(), m, i, c)
    };
    assert!(cache.insert_patch(id, &other_meta, &columns).is_err());
    assert!(cache
        .insert_patch(id, &meta, &columns[..columns.len() - 1])
        .is_err());
    let wider = codec::quilt::QuiltPatchId {
        end_index: id.end_index + 1,
        ..id
    };
    let mut more = columns.clone();
    more.push(columns[0].clone());
    assert!(cache.insert_patch(wider, &meta, &more).is_err());
    assert_eq!(cache.stats(1).patch_entries, 0);
    assert!(!patch_file(dir.path(), &id).exists());
}

#[test]
fn flipped_and_truncated_patch_files_are_quarantined_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, id, columns, _) = quilt_patch(1);
    for damage in ["flip", "truncate", "other-columns"] {
        let cache = open(dir.path(), 1 << 20);
        cache.insert_patch(id, &meta, &columns).unwrap();
        let path = patch_file(dir.path(), &id);
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            "flip" => bytes[HEADER_LEN as usize + 700] ^= 1,
            "truncate" => bytes.truncate(bytes.len() - 3),
            _ => bytes[52] ^= 1,
        }
        std::fs::write(&path, &bytes).unwrap();
        let read = cache.read_patch(&id);
        assert!(
            matches!(read, Err(DiskError::CorruptPatch { .. })),
            "{damage}: {read:?}"
        );
        assert!(!path.exists(), "{damage}");
        assert!(!cache.contains_patch(&id), "{damage}");
        assert!(cache.read_patch(&id).unwrap().is_none(), "{damage}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        3
    );
}

#[test]
fn the_scrub_finds_a_patch_rewritten_with_its_checksums_and_drops_one_it_cannot_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = codec::EncodingConfig::new(10).unwrap();
    let cache = open(dir.path(), 1 << 20);
    let (meta, id, columns, data) = quilt_patch(1);
    cache.insert_patch(id, &meta, &columns).unwrap();
    let path = patch_file(dir.path(), &id);
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len() - HEADER_LEN as usize - 4;
    // A data byte changed, its chunk's CRC32C and the header's checksum rewritten to match.
    let at = bytes.len() - 4 - 10;
    bytes[at] ^= 0x40;
    let table = HEADER_LEN as usize + len;
    let sum = super::format::crc32c(&bytes[HEADER_LEN as usize..table]);
    bytes[table..table + 4].copy_from_slice(&sum.to_le_bytes());
    let mut check = blake3::Hasher::new();
    check.update(&bytes[..88]);
    check.update(&bytes[table..]);
    bytes[88..120].copy_from_slice(check.finalize().as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    // Every per-read check passes: the read alone would serve it.
    let tampered = cache.read_patch(&id).unwrap().unwrap();
    assert_ne!(tampered.data, data);
    match cache.scrub_patch(&id, config).unwrap() {
        ScrubOutcome::Failed { reason } => assert!(reason.contains("quilt ID"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!path.exists());
    assert!(cache.read_patch(&id).unwrap().is_none());

    // Without its frame, a patch cannot be checked: dropped, not served unchecked forever.
    cache.insert_patch(id, &meta, &columns).unwrap();
    std::fs::remove_file(dir.path().join("meta").join(id.to_string())).unwrap();
    assert!(matches!(
        cache.scrub_patch(&id, config).unwrap(),
        ScrubOutcome::Dropped { .. }
    ));
    assert!(!cache.contains_patch(&id) && !path.exists());
}

#[test]
fn patches_and_blobs_share_one_bound_and_one_lru_order() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, pid, columns, data) = quilt_patch(1);
    let patch_size = {
        let probe = tempfile::tempdir().unwrap();
        let cache = open(probe.path(), 1 << 20);
        cache.insert_patch(pid, &meta, &columns).unwrap();
        cache.stats(1).patch_bytes
    };
    let blob = file_size_for(4000);
    // Room for the patch and one blob, not two.
    let cache = open(dir.path(), patch_size + 2 * blob - 1);
    cache.insert_patch(pid, &meta, &columns).unwrap();
    cache
        .insert(id(1), &[Bytes::from(content(4000, 1))])
        .unwrap();
    // The patch is used: blob 1 is now the least recently used.
    assert_eq!(cache.read_patch(&pid).unwrap().unwrap().data, data);
    cache
        .insert(id(2), &[Bytes::from(content(4000, 2))])
        .unwrap();
    assert!(
        !cache.contains(&id(1)),
        "the least recently used goes first"
    );
    assert!(cache.contains_patch(&pid) && cache.contains(&id(2)));
    // Used again: blob 2 is the oldest now.
    assert!(cache.read_patch(&pid).unwrap().is_some());
    cache
        .insert(id(3), &[Bytes::from(content(4000, 3))])
        .unwrap();
    assert!(cache.contains_patch(&pid) && cache.contains(&id(3)));
    assert!(!cache.contains(&id(2)));
    // Another blob: now the patch is the oldest; its file and frame go.
    cache
        .insert(id(4), &[Bytes::from(content(4000, 4))])
        .unwrap();
    assert!(!cache.contains_patch(&pid));
    assert!(!patch_file(dir.path(), &pid).exists());
    assert!(!dir.path().join("meta").join(pid.to_string()).exists());
    let stats = cache.stats(10);
    assert!(stats.bytes <= stats.capacity);
}
