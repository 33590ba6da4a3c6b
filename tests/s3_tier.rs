//! The S3 tier (`src/cache/s3.rs`) over object_store's in-memory store, wrapped in
//! `common::FaultyStore` for the faults a real bucket has and a local server cannot produce on
//! demand: an outage, a denial, an answer cut short. Each behaviour of the tier is checked by what lands
//! in the local cache and in the bucket: copies, conditional creates, wrong-sized and corrupt
//! objects replaced, uploads remembered through an outage and retried after it.
//! (`tests/python/test_s3.py` runs the tier against a real S3-compatible server.)

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use common::FaultyStore;
use sodeda_era5::cache::s3::RemoteCache;
use sodeda_era5::cache::{CachedFile, Key, LocalCache, Lookup, RemoteError, Tier, Uploaded};
use sodeda_era5::encode::FORMAT_VERSION;
use zarrs_object_store::object_store::{
    self, memory::InMemory, Attribute, Attributes, ObjectStoreExt, PutOptions, PutPayload,
};

/// A local cache, a bucket and the tier over it.
struct Setup {
    _dir: tempfile::TempDir,
    local: LocalCache,
    bucket: Arc<FaultyStore>,
    tier: RemoteCache,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalCache::open(&dir.path().join("cache")).unwrap();
    let bucket = Arc::new(FaultyStore::new(Arc::new(InMemory::new()), ""));
    let tier = RemoteCache::over(
        bucket.clone(),
        "/team/era5/",
        "s3://bucket/team/era5".into(),
        "profile \"test\"".into(),
    );
    Setup {
        _dir: dir,
        local,
        bucket,
        tier,
    }
}

/// An identity of 32 hex digits, as plans make them.
fn identity(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

/// A finished file in the local cache.
fn built(local: &LocalCache, identity: &str, bytes: &[u8]) -> CachedFile {
    let mut tmp = local.temp_file().unwrap();
    tmp.write_all(bytes).unwrap();
    local.persist(tmp, identity).unwrap()
}

fn content(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ n).collect()
}

async fn object(s: &Setup, identity: &str) -> Option<Bytes> {
    match s.bucket.inner.get(&s.tier.key(identity)).await {
        Ok(r) => Some(r.bytes().await.unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

/// Puts the local entry `entry` of `identity` into the tier, through the [`Tier`] trait.
async fn put(
    s: &Setup,
    identity: &str,
    entry: &CachedFile,
    replace: bool,
) -> Result<Uploaded, RemoteError> {
    let size = entry.file.metadata().unwrap().len();
    let key = Key::new(identity, size);
    s.tier.put(key, &s.local, entry, replace).await
}

/// Copies the tier's file of `identity` (`size` bytes) into `local`, through the trait.
async fn get(
    s: &Setup,
    identity: &str,
    size: u64,
    local: &LocalCache,
) -> Result<Lookup, RemoteError> {
    Tier::get(&s.tier, Key::new(identity, size), local).await
}

fn read(file: &CachedFile) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    (&*file.file).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn an_upload_is_a_conditional_create_and_copies_back_exactly() {
    let s = setup();
    let id = identity(1);
    let bytes = content(1, 10_000);
    let entry = built(&s.local, &id, &bytes);
    assert_eq!(
        s.tier.key(&id).as_ref(),
        format!("team/era5/v{FORMAT_VERSION}/{id}.nc")
    );
    assert_eq!(
        put(&s, &id, &entry, false).await.unwrap(),
        Uploaded::Created
    );
    // Another machine built the same file: the object stays, nothing is overwritten.
    assert_eq!(
        put(&s, &id, &entry, false).await.unwrap(),
        Uploaded::AlreadyThere
    );
    assert_eq!(object(&s, &id).await.unwrap(), bytes);

    // A machine without the file copies it into its own cache.
    let other = tempfile::tempdir().unwrap();
    let other = LocalCache::open(&other.path().join("cache")).unwrap();
    match get(&s, &id, bytes.len() as u64, &other).await {
        Ok(Lookup::Copied(copied)) => assert_eq!(read(&copied), bytes),
        other => panic!("{other:?}"),
    }
    assert!(other.get(&id, bytes.len() as u64).is_some());
    // A file nobody built.
    assert!(matches!(
        get(&s, &identity(2), 5, &other).await,
        Ok(Lookup::Absent)
    ));
}

#[tokio::test]
async fn a_wrong_sized_or_corrupt_object_is_not_used_and_is_replaced() {
    let s = setup();
    let (id, bytes) = (identity(3), content(3, 4096));
    let size = bytes.len() as u64;
    // Wrong size: someone else's bytes under this key.
    s.bucket
        .inner
        .put(&s.tier.key(&id), PutPayload::from(vec![7u8; 100]))
        .await
        .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let fresh = LocalCache::open(&empty.path().join("cache")).unwrap();
    assert!(matches!(
        get(&s, &id, size, &fresh).await,
        Ok(Lookup::WrongSize)
    ));
    assert!(fresh.get(&id, size).is_none(), "wrong bytes were cached");
    let entry = built(&s.local, &id, &bytes);
    assert_eq!(
        put(&s, &id, &entry, true).await.unwrap(),
        Uploaded::Replaced
    );
    assert_eq!(object(&s, &id).await.unwrap(), bytes);

    // The right size, bytes that fail the stored checksum.
    let mut flipped = bytes.clone();
    flipped[2000] ^= 1;
    let mut attributes = Attributes::new();
    let stored = s
        .bucket
        .inner
        .get(&s.tier.key(&id))
        .await
        .unwrap()
        .attributes;
    let crc = stored
        .get(&Attribute::Metadata("crc32c".into()))
        .expect("uploads store their checksum")
        .clone();
    attributes.insert(Attribute::Metadata("crc32c".into()), crc);
    s.bucket
        .inner
        .put_opts(
            &s.tier.key(&id),
            PutPayload::from(flipped),
            PutOptions {
                attributes,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        get(&s, &id, size, &fresh).await,
        Ok(Lookup::WrongSize)
    ));
    assert!(fresh.get(&id, size).is_none(), "corrupt bytes were cached");
}

#[tokio::test]
async fn an_answer_cut_short_is_an_error_and_caches_nothing() {
    let s = setup();
    let (id, bytes) = (identity(4), content(4, 8192));
    let entry = built(&s.local, &id, &bytes);
    put(&s, &id, &entry, false).await.unwrap();
    s.bucket.cut.store(true, Ordering::SeqCst);
    let empty = tempfile::tempdir().unwrap();
    let fresh = LocalCache::open(&empty.path().join("cache")).unwrap();
    match get(&s, &id, bytes.len() as u64, &fresh).await {
        Err(
            e @ RemoteError::Truncated {
                written: 4096,
                size: 8192,
                ..
            },
        ) => {
            assert!(
                e.to_string().contains("ended after 4096 of 8192 bytes"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(fresh.get(&id, bytes.len() as u64).is_none());
}

#[tokio::test]
async fn uploads_failed_in_an_outage_are_retried_after_the_next_success() {
    let s = setup();
    let (a, b) = (identity(5), identity(6));
    let (bytes_a, bytes_b) = (content(5, 3000), content(6, 5000));
    let (entry_a, entry_b) = (built(&s.local, &a, &bytes_a), built(&s.local, &b, &bytes_b));
    s.bucket.failing.store(true, Ordering::SeqCst);
    match put(&s, &a, &entry_a, false).await {
        Err(RemoteError::Unavailable { target, error }) => {
            assert_eq!(target, "s3://bucket/team/era5");
            assert!(
                matches!(*error, object_store::Error::Generic { .. }),
                "{error:?}"
            );
            assert!(error.to_string().contains("connection reset"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.tier.probe().await.is_err());
    assert_eq!(Tier::pending(&s.tier), 1);
    // A read in the outage is an error the flow falls back from, not a wrong answer.
    assert!(get(&s, &a, 3000, &s.local).await.is_err());
    s.bucket.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        put(&s, &b, &entry_b, false).await.unwrap(),
        Uploaded::Created
    );
    assert_eq!(
        Tier::pending(&s.tier),
        0,
        "the failed upload was not retried"
    );
    assert_eq!(object(&s, &a).await.unwrap(), bytes_a);
    assert_eq!(object(&s, &b).await.unwrap(), bytes_b);
}

#[tokio::test]
async fn a_pending_upload_whose_entry_is_gone_is_dropped_not_uploaded() {
    let s = setup();
    let (a, b) = (identity(7), identity(8));
    let (entry_a, entry_b) = (
        built(&s.local, &a, &content(7, 100)),
        built(&s.local, &b, &content(8, 100)),
    );
    s.bucket.failing.store(true, Ordering::SeqCst);
    assert!(put(&s, &a, &entry_a, false).await.is_err());
    std::fs::remove_file(s.local.path_for(&a).unwrap()).unwrap();
    s.bucket.failing.store(false, Ordering::SeqCst);
    let puts = s.bucket.puts.load(Ordering::SeqCst);
    put(&s, &b, &entry_b, false).await.unwrap();
    assert_eq!(Tier::pending(&s.tier), 0);
    assert_eq!(
        s.bucket.puts.load(Ordering::SeqCst),
        puts + 1,
        "only b was put"
    );
    assert!(object(&s, &a).await.is_none());
}

#[tokio::test]
async fn a_denial_names_the_credentials_and_never_a_secret() {
    let s = setup();
    s.bucket.denied.store(true, Ordering::SeqCst);
    let e = s.tier.probe().await.unwrap_err();
    match &e {
        RemoteError::Denied {
            target,
            credentials,
            ..
        } => {
            assert_eq!(target, "s3://bucket/team/era5");
            assert_eq!(credentials, "profile \"test\"");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("access denied"), "{e}");
    let entry = built(&s.local, &identity(9), b"x");
    assert!(matches!(
        put(&s, &identity(9), &entry, false).await,
        Err(RemoteError::Denied { .. })
    ));
}
