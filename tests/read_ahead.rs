//! Reading ahead for a preload ([`Prefetched`]): the chunks a window of files needs are read
//! once, neighbouring blocks in one request, and the files then build without asking the
//! store, with the same values as without reading ahead. The source is the small ERA5-shaped
//! store in memory (tests/common).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::plan;
use sodeda_era5::fetch::{chunk_needs, fetch, BlockTables, ChunkNeed, FetchOptions, Prefetched};
use sodeda_era5::plan::Plan;
use sodeda_era5::source::Source;

/// Points at hours 5 and 6 (two of them in one chunk, different rows) and a small box at
/// hour 7: all block reads.
fn plans(source: &Source) -> Vec<Plan> {
    [
        r#"{"time": "2023-01-01T05:00", "latitude": 2, "longitude": 0, "variable": "2m_temperature"}"#,
        r#"{"time": "2023-01-01T05:00", "latitude": -1.5, "longitude": 45, "variable": "2m_temperature"}"#,
        r#"{"time": "2023-01-01T06:00", "latitude": 1, "longitude": 90, "variable": "2m_temperature"}"#,
        r#"{"time": "2023-01-01T07:00", "latitude": {"start": 1, "end": 0.5}, "longitude": {"start": 0, "end": 45}, "variable": "2m_temperature"}"#,
    ]
    .iter()
    .map(|j| plan(source, j))
    .collect()
}

/// What the plans need together, per chunk.
fn needs(plans: &[Plan], source: &Source, options: &FetchOptions) -> HashMap<String, ChunkNeed> {
    let mut all: HashMap<String, ChunkNeed> = HashMap::new();
    for p in plans {
        for (key, need) in chunk_needs(p, source, options) {
            all.entry(key).or_default().merge(need);
        }
    }
    all
}

async fn values(plans: &[Plan], source: &Source, options: &FetchOptions) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for p in plans {
        let fetched = fetch(p, source, options).await.unwrap();
        out.push(fetched.arrays[0].iter().copied().collect());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_build_from_what_was_read_ahead_with_the_same_values() {
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    let plans = plans(&source);
    let expected = values(&plans, &source, &FetchOptions::default()).await;
    assert_eq!(expected[0], vec![5000.0]);

    let ahead = Prefetched::new(source.store.clone(), 8);
    let options = FetchOptions {
        block_tables: Some(Arc::new(BlockTables::in_memory())),
        prefetched: Some(ahead.clone()),
        ..FetchOptions::default()
    };
    let needs = needs(&plans, &source, &options);
    assert_eq!(needs.len(), 3, "three chunks (hours 5, 6, 7)");
    assert!(needs.values().all(|n| !n.whole), "all block reads");
    let before = source.metrics.requests();
    for (key, need) in needs {
        ahead.plan_chunk(&key, need, 0, options.block_tables.clone());
    }
    let got = values(&plans, &source, &options).await;
    assert_eq!(got, expected, "the same values as without reading ahead");
    let sent = ahead.sent.load(Ordering::Relaxed);
    assert_eq!(
        source.metrics.requests() - before,
        sent,
        "the files asked the store for nothing themselves"
    );
    // Per chunk a table and at most one request for its blocks (none when the chunk is
    // smaller than the table request, as these tiny ones may be): the two points of hour 5
    // need different rows, fetched together.
    assert!((3..=6).contains(&sent), "{sent} requests for three chunks");
    assert!(ahead.hits.load(Ordering::Relaxed) >= 3);

    // Once the window is dropped, the files read from the store again, with the same values.
    ahead.drop_before(1);
    let r = source.metrics.requests();
    assert_eq!(values(&plans, &source, &options).await, expected);
    assert_eq!(
        source.metrics.requests() - r,
        4,
        "the tables are known: one block request per file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_chunks_read_ahead_stay_absent_and_whole_chunks_are_shared() {
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    // Hour 60 has no chunk (absent: fill value); a whole-domain file at hour 8 reads its
    // chunk whole.
    let plans = vec![
        plan(
            &source,
            r#"{"time": "2023-01-03T12:00", "latitude": 2, "longitude": 0, "variable": "2m_temperature"}"#,
        ),
        plan(
            &source,
            r#"{"time": "2023-01-01T08:00", "variable": "2m_temperature"}"#,
        ),
    ];
    let expected = values(&plans, &source, &FetchOptions::default()).await;
    assert!(expected[0][0].is_nan());
    let ahead = Prefetched::new(source.store.clone(), 4);
    let options = FetchOptions {
        prefetched: Some(ahead.clone()),
        ..FetchOptions::default()
    };
    let needs = needs(&plans, &source, &options);
    assert_eq!(needs.values().filter(|n| n.whole).count(), 1);
    for (key, need) in needs {
        ahead.plan_chunk(&key, need, 0, None);
    }
    let got = values(&plans, &source, &options).await;
    assert!(got[0][0].is_nan(), "absent reads as the fill value");
    assert_eq!(got[1], expected[1]);
    let fetched = fetch(&plans[0], &source, &options).await.unwrap();
    assert_eq!(fetched.absent_chunks, 1, "and is counted as absent");
}
