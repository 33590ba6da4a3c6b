//! Absent chunks are confirmed for every file: a chunk read as missing data once is not
//! remembered as such (the store may vanish, or write the hour, meanwhile).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sodeda_era5::deskriptor::Deskriptor;
use sodeda_era5::fetch::{fetch, ChunkCache, FetchOptions, ReadPath};
use sodeda_era5::plan::{Plan, PlanOptions};
use sodeda_era5::source::Source;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_chunk_is_confirmed_again_for_the_next_file() {
    let faulty = Arc::new(common::FaultyStore::new(
        common::synthetic_store().await,
        "",
    ));
    let source = Source::open_store("memory://synthetic", faulty.clone())
        .await
        .unwrap();
    let options = FetchOptions {
        chunk_cache: Some(Arc::new(ChunkCache::new(1 << 20))),
        read_path: ReadPath::Full,
        ..FetchOptions::default()
    };
    // Hour 48 has no chunk (the store's hours end at 47).
    let plan = |lat: f64| {
        let json = format!(
            r#"{{"time": "2023-01-03T00:00", "latitude": {lat}, "variable": "2m_temperature"}}"#
        );
        Plan::new(
            &Deskriptor::parse(1, &json).unwrap(),
            &source.scope,
            PlanOptions::default(),
        )
        .unwrap()
    };
    let first = fetch(&plan(1.0), &source, &options).await.unwrap();
    assert_eq!(first.absent_chunks, 1);
    assert!(first.arrays[0].iter().all(|v| v.is_nan()));
    faulty.vanished.store(true, Ordering::SeqCst);
    let e = fetch(&plan(0.5), &source, &options).await.unwrap_err();
    assert!(e.to_string().contains(".zarray"), "{e}");
}
