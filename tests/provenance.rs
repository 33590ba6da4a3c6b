//! Freshness and provenance: a file over hours after the store's `valid_time_stop` (ERA5T) is
//! provisional — its identity follows the store's `last_updated`, so after a store update it is
//! built afresh — while a file of final hours keeps its identity and its cache entry. Every
//! file says what it is made of, and its time is derived from the data, not from the mount.
//! The source is the small ERA5-shaped store in memory (tests/common) with ARCO-ERA5's root
//! attributes added.

mod common;

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sodeda_era5::cache::LocalCache;
use sodeda_era5::catalog::Catalog;
use sodeda_era5::fetch::FetchOptions;
use sodeda_era5::flow::Flow;
use sodeda_era5::fs::{DatasetFs, ROOT_INO};
use sodeda_era5::plan::PlanOptions;
use sodeda_era5::source::Source;
use zarrs_object_store::object_store::{path::Path, ObjectStore, ObjectStoreExt, PutPayload};

/// `final` is of 2023-01-01 (on or before valid_time_stop), `late` of 2023-01-02 (after it).
const DESKRIPTORS: &str = r#"{"name": "final", "time": {"start": "2023-01-01T03", "end": "2023-01-01T05"}, "latitude": 1, "longitude": 0, "variable": "2m_temperature"}
{"name": "late", "time": {"start": "2023-01-01T22", "end": "2023-01-02T01"}, "latitude": 1, "longitude": 0, "variable": "2m_temperature"}
{"time": "2023-01-02T03:00", "latitude": 1, "longitude": 0, "variable": "2m_temperature"}
"#;

/// Sets the store's root attributes as ARCO-ERA5 writes them.
async fn set_version(store: &Arc<dyn ObjectStore>, last_updated: &str) {
    let path = Path::from(".zmetadata");
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    let mut meta: Value = serde_json::from_slice(&bytes).unwrap();
    meta["metadata"][".zattrs"] = serde_json::json!({
        "valid_time_start": "1940-01-01",
        "last_updated": last_updated,
        "valid_time_stop": "2023-01-01",
        "valid_time_stop_era5t": "2023-01-02",
    });
    store
        .put(&path, PutPayload::from(Bytes::from(meta.to_string())))
        .await
        .unwrap();
}

/// A file system over the store as it is now, with the cache in `cache`.
async fn mount_core(store: &Arc<dyn ObjectStore>, cache: &std::path::Path) -> DatasetFs {
    let source = Arc::new(
        Source::open_store("memory://synthetic", store.clone())
            .await
            .unwrap(),
    );
    let catalog = Catalog::from_text(DESKRIPTORS, &source.scope, PlanOptions::default()).unwrap();
    assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
    let flow = Flow::new(
        source,
        LocalCache::open(cache).unwrap(),
        FetchOptions::default(),
    );
    DatasetFs::new(catalog.entries, flow, PlanOptions::default())
}

async fn read(fs: &DatasetFs, name: &str) -> Vec<u8> {
    let ino = fs.lookup(ROOT_INO, OsStr::new(name)).unwrap().ino;
    let fh = fs.open(ino, false).unwrap();
    let data = fs.read(fh, 0, 1 << 20).await.unwrap();
    fs.release(fh);
    data
}

fn xattr(fs: &DatasetFs, name: &str, attr: &str) -> String {
    let ino = fs.lookup(ROOT_INO, OsStr::new(name)).unwrap().ino;
    String::from_utf8(fs.getxattr(ino, OsStr::new(attr)).unwrap()).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn seconds(fs: &DatasetFs, name: &str) -> i64 {
    let attr = fs.lookup(ROOT_INO, OsStr::new(name)).unwrap();
    attr.mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisional_file_is_rebuilt_after_a_store_update_and_a_final_one_is_not() {
    let store = common::synthetic_store().await;
    set_version(&store, "2023-01-05 02:00:00.000000+00:00").await;
    let cache = tempfile::tempdir().unwrap();

    let fs = mount_core(&store, cache.path()).await;
    let final_bytes = read(&fs, "final.nc").await;
    let late_bytes = read(&fs, "late.nc").await;
    assert_eq!(fs.flow().metrics().runs.load(Ordering::Relaxed), 2);
    // What each file says it is made of.
    assert!(contains(&final_bytes, "final ERA5"));
    assert!(
        !contains(&final_bytes, "2023-01-05 02:00"),
        "no store version in a final file"
    );
    assert!(contains(&late_bytes, "preliminary ERA5T"));
    assert!(contains(
        &late_bytes,
        "2023-01-02T00:00 to 2023-01-02T01:00 (2 time steps)"
    ));
    assert!(contains(&late_bytes, "2023-01-05 02:00:00.000000+00:00"));
    let p: Value = serde_json::from_str(&xattr(&fs, "late.nc", "user.sodeda.provenance")).unwrap();
    assert_eq!(p["status"], "provisional");
    assert_eq!(p["era5t_hours"]["count"], 2);
    assert_eq!(p["store_valid_time_stop"], "2023-01-01");
    assert_eq!(p["absent_chunks"], 0);
    let p: Value = serde_json::from_str(&xattr(&fs, "final.nc", "user.sodeda.provenance")).unwrap();
    assert_eq!(p["status"], "final");
    // Times from the data: the last hour of a final file; the store's update, later than the
    // data, for a provisional one.
    assert_eq!(seconds(&fs, "final.nc"), 1_672_549_200); // 2023-01-01T05:00Z
    assert_eq!(seconds(&fs, "late.nc"), 1_672_884_000); // 2023-01-05T02:00Z
    let names = |fs: &DatasetFs| -> Vec<String> {
        fs.readdir(ROOT_INO)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    let unnamed = names(&fs)[4].clone();
    assert!(
        unnamed.starts_with("2m_temperature_20230102T03_"),
        "{unnamed}"
    );
    let final_identity = xattr(&fs, "final.nc", "user.sodeda.identity");
    let late_identity = xattr(&fs, "late.nc", "user.sodeda.identity");
    drop(fs);

    // The same store again (a remount): same identities, same times, both from the cache.
    let fs = mount_core(&store, cache.path()).await;
    assert_eq!(xattr(&fs, "late.nc", "user.sodeda.identity"), late_identity);
    assert_eq!(seconds(&fs, "final.nc"), 1_672_549_200);
    assert_eq!(read(&fs, "late.nc").await, late_bytes);
    assert_eq!(fs.flow().metrics().runs.load(Ordering::Relaxed), 0);
    drop(fs);

    // The store is updated (and the late hours rewritten): the provisional file is a new
    // file with the new data; the final one is still served from the cache.
    set_version(&store, "2023-02-01 03:00:00.000000+00:00").await;
    let source = Source::open_store("memory://synthetic", store.clone())
        .await
        .unwrap();
    let array = source.array("2m_temperature").unwrap();
    let new: Vec<f32> = (0..9 * 16).map(|k| -(k as f32)).collect();
    array.async_store_chunk(&[24, 0, 0], new).await.unwrap();
    let fs = mount_core(&store, cache.path()).await;
    assert_eq!(
        xattr(&fs, "final.nc", "user.sodeda.identity"),
        final_identity
    );
    assert_ne!(xattr(&fs, "late.nc", "user.sodeda.identity"), late_identity);
    assert_eq!(xattr(&fs, "final.nc", "user.sodeda.cached"), "yes");
    assert_eq!(xattr(&fs, "late.nc", "user.sodeda.cached"), "no");
    assert_eq!(read(&fs, "final.nc").await, final_bytes);
    let rebuilt = read(&fs, "late.nc").await;
    assert_eq!(
        fs.flow().metrics().runs.load(Ordering::Relaxed),
        1,
        "only the late file"
    );
    assert_ne!(rebuilt, late_bytes);
    assert!(contains(&rebuilt, "2023-02-01 03:00:00.000000+00:00"));
    assert_eq!(seconds(&fs, "late.nc"), 1_675_220_400); // 2023-02-01T03:00Z
}
