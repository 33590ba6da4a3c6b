//! The policy across the cache tiers (`src/cache/tiered.rs`), over a local cache and the S3
//! tier on object_store's in-memory store wrapped in `common::FaultyStore`: read through
//! local → shared → missing, write through only complete files, share what the bucket lacks
//! or holds wrong, count hits and uploads, and never fail a read for an unreachable bucket.

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::FaultyStore;
use sodeda_era5::cache::s3::RemoteCache;
use sodeda_era5::cache::{CachedFile, Key, LocalCache, ReadThrough, TierMetrics, Tiered};
use zarrs_object_store::object_store::{memory::InMemory, ObjectStoreExt, PutPayload};

struct Setup {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    /// This machine's tiers.
    tiers: Tiered,
    /// Another machine's local cache, to build files that reach the bucket.
    elsewhere: Tiered,
    bucket: Arc<FaultyStore>,
    remote: Arc<RemoteCache>,
}

fn setup() -> Setup {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bucket = Arc::new(FaultyStore::new(Arc::new(InMemory::new()), ""));
    let remote = Arc::new(RemoteCache::over(
        bucket.clone(),
        "era5",
        "s3://bucket/era5".into(),
        "the AWS_* environment".into(),
    ));
    let tiers_over = |dir: &tempfile::TempDir| {
        let local = LocalCache::open(&dir.path().join("cache")).unwrap();
        Tiered::new(local, Arc::new(TierMetrics::default())).with_shared(remote.clone())
    };
    Setup {
        tiers: tiers_over(&dirs.0),
        elsewhere: tiers_over(&dirs.1),
        _dirs: dirs,
        bucket,
        remote,
    }
}

fn identity(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

/// A file of `len` bytes built into `tiers`' local cache, with `absent` chunks.
fn build(tiers: &Tiered, identity: &str, len: usize, absent: u64) -> CachedFile {
    let mut tmp = tiers.local().temp_file().unwrap();
    tmp.write_all(&vec![identity.as_bytes()[0]; len]).unwrap();
    tiers.local().persist_with(tmp, identity, absent).unwrap()
}

fn count(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

#[tokio::test]
async fn reads_go_through_local_then_shared_then_missing_and_are_counted() {
    let s = setup();
    let (a, b) = (identity(1), identity(2));
    let built = build(&s.elsewhere, &a, 3000, 0);
    s.elsewhere
        .write_through(Key::new(&a, 3000), &built, false)
        .await;
    assert_eq!(count(&s.elsewhere.metrics().uploads), 1);

    assert!(!s.tiers.is_cached(Key::new(&a, 3000)));
    let first = s.tiers.read_through(Key::new(&a, 3000)).await;
    assert!(matches!(first, ReadThrough::Shared(_)), "{first:?}");
    assert!(s.tiers.is_cached(Key::new(&a, 3000)));
    let second = s.tiers.read_through(Key::new(&a, 3000)).await;
    assert!(matches!(second, ReadThrough::Local(_)), "{second:?}");
    let m = s.tiers.metrics();
    assert_eq!((count(&m.remote_hits), count(&m.cache_hits)), (1, 1));

    let nowhere = s.tiers.read_through(Key::new(&b, 10)).await;
    assert!(matches!(nowhere, ReadThrough::Missing { replace: false }));
    // The bucket holds another size under b's key: build, then replace it.
    let key = s.remote.key(&b);
    s.bucket
        .inner
        .put(&key, PutPayload::from(vec![0u8; 7]))
        .await
        .unwrap();
    let wrong = s.tiers.read_through(Key::new(&b, 10)).await;
    assert!(matches!(wrong, ReadThrough::Missing { replace: true }));
    // A bucket that does not answer is no error for a read: the file is built.
    s.bucket.failing.store(true, Ordering::SeqCst);
    let down = s.tiers.read_through(Key::new(&identity(3), 10)).await;
    assert!(matches!(down, ReadThrough::Missing { replace: false }));
    // The local tier still answers.
    let local = s.tiers.read_through(Key::new(&a, 3000)).await;
    assert!(matches!(local, ReadThrough::Local(_)));
}

#[tokio::test]
async fn only_complete_files_are_written_through_and_shared_once() {
    let s = setup();
    let (partial, whole, stale) = (identity(4), identity(5), identity(6));
    let file = build(&s.tiers, &partial, 100, 2);
    s.tiers
        .write_through(Key::new(&partial, 100), &file, false)
        .await;
    s.tiers.share(Key::new(&partial, 100), &file).await;
    assert_eq!(
        s.bucket.puts.load(Ordering::SeqCst),
        0,
        "absent chunks are never shared"
    );

    let file = build(&s.tiers, &whole, 100, 0);
    s.tiers
        .write_through(Key::new(&whole, 100), &file, false)
        .await;
    assert_eq!(s.bucket.puts.load(Ordering::SeqCst), 1);
    // Shared again (preload of a file cached here): the bucket has it, nothing is put.
    s.tiers.share(Key::new(&whole, 100), &file).await;
    assert_eq!(s.bucket.puts.load(Ordering::SeqCst), 1);

    // The bucket holds a wrong file for `stale`: sharing replaces it.
    let key = s.remote.key(&stale);
    s.bucket
        .inner
        .put(&key, PutPayload::from(vec![9u8; 3]))
        .await
        .unwrap();
    let file = build(&s.tiers, &stale, 100, 0);
    s.tiers.share(Key::new(&stale, 100), &file).await;
    let there = s
        .bucket
        .inner
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(there.len(), 100);
    assert_eq!(count(&s.tiers.metrics().uploads), 2);
    assert_eq!(s.tiers.uploads_pending(), Some(0));

    // Written through during an outage: remembered, then retried.
    s.bucket.failing.store(true, Ordering::SeqCst);
    let late = identity(7);
    let file = build(&s.tiers, &late, 100, 0);
    s.tiers
        .write_through(Key::new(&late, 100), &file, false)
        .await;
    assert_eq!(s.tiers.uploads_pending(), Some(1));
    s.bucket.failing.store(false, Ordering::SeqCst);
    s.tiers.retry_uploads().await;
    assert_eq!(s.tiers.uploads_pending(), Some(0));
    assert!(s.bucket.inner.head(&s.remote.key(&late)).await.is_ok());
}

#[tokio::test]
async fn a_local_tier_alone_counts_into_the_counters_it_shares() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let previews = s
        .tiers
        .over_local(LocalCache::open(&dir.path().join("cache")).unwrap());
    assert_eq!(previews.uploads_pending(), None, "no shared tier");
    let id = identity(8);
    let file = build(&previews, &id, 50, 0);
    previews
        .write_through(Key::new(&id, 50), &file, false)
        .await;
    assert_eq!(s.bucket.puts.load(Ordering::SeqCst), 0);
    assert!(previews.hit(Key::new(&id, 50)).is_some());
    assert!(previews.peek(Key::new(&id, 50)).is_some());
    assert!(
        previews.hit(Key::new(&id, 51)).is_none(),
        "a wrong size is no hit"
    );
    assert_eq!(
        count(&s.tiers.metrics().cache_hits),
        1,
        "peek is not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_machines_writing_through_one_bucket_create_each_object_once() {
    let s = setup();
    let dirs: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let machines: Vec<Tiered> = dirs
        .iter()
        .map(|d| {
            let local = LocalCache::open(&d.path().join("cache")).unwrap();
            Tiered::new(local, Arc::new(TierMetrics::default())).with_shared(s.remote.clone())
        })
        .collect();
    let ids: Vec<String> = (10..40).map(identity).collect();
    let runs = machines.iter().enumerate().map(|(m, tiers)| {
        let ids = ids.clone();
        let tiers = tiers.clone();
        tokio::spawn(async move {
            // Each machine goes through the files in its own order, as preload shards race.
            for k in 0..ids.len() {
                let id = &ids[(k * 7 + m * 3) % ids.len()];
                let key = Key::new(id, 256);
                if let ReadThrough::Missing { replace } = tiers.read_through(key).await {
                    let file = build(&tiers, id, 256, 0);
                    tiers.write_through(key, &file, replace).await;
                }
            }
            tiers
        })
    });
    let mut created = 0;
    for run in runs {
        let tiers = run.await.unwrap();
        created += count(&tiers.metrics().uploads);
        for id in &ids {
            assert!(
                tiers.is_cached(Key::new(id, 256)),
                "every machine has every file"
            );
        }
    }
    assert_eq!(
        created,
        ids.len() as u64,
        "each object was created by one machine only"
    );
    for id in &ids {
        let there = s.bucket.inner.head(&s.remote.key(id)).await.unwrap();
        assert_eq!(there.size, 256);
    }
}
