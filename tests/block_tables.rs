//! Block tables kept across files: a later block read of a chunk costs one request, and a chunk
//! the store replaced is read afresh, never decoded with the old table. The source is the small
//! ERA5-shaped store in memory (tests/common), whose ETags change on every write.

mod common;

use std::sync::Arc;

use common::plan;
use ndarray::ArrayD;
use sodeda_era5::fetch::{fetch, BlockTables, FetchOptions, ReadPath};
use sodeda_era5::plan::Plan;
use sodeda_era5::source::Source;

/// One point of 2m_temperature at hour 5 (a block read: one row of nine).
fn point(source: &Source, latitude: f64, longitude: f64) -> Plan {
    plan(
        source,
        &format!(
            r#"{{"time": "2023-01-01T05:00", "latitude": {latitude}, "longitude": {longitude}, "variable": "2m_temperature"}}"#
        ),
    )
}

async fn value(plan: &Plan, source: &Source, options: &FetchOptions) -> f32 {
    let fetched = fetch(plan, source, options).await.unwrap();
    let a: &ArrayD<f32> = &fetched.arrays[0];
    assert_eq!(a.len(), 1);
    a.iter().copied().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_table_saves_a_request_and_a_replaced_chunk_is_read_afresh() {
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    let options = FetchOptions {
        block_tables: Some(Arc::new(BlockTables::in_memory())),
        // Block reads even where a known table shows the one block is the whole chunk (the
        // synthetic chunks have one block each): what this test is about.
        read_path: ReadPath::Blocks,
        ..FetchOptions::default()
    };
    let requests = || source.metrics.requests();

    // Value = hour*1000 + latitude index*16 + longitude index.
    let r0 = requests();
    assert_eq!(
        value(&point(&source, 2.0, 0.0), &source, &options).await,
        5000.0
    );
    // The synthetic chunks are smaller than the first request (header and table): its
    // answer holds the block too.
    assert_eq!(requests() - r0, 1, "the header, table and block at once");
    let r1 = requests();
    assert_eq!(
        value(&point(&source, 1.5, 45.0), &source, &options).await,
        5018.0
    );
    assert_eq!(requests() - r1, 1, "the table was known: the block only");

    // The store replaces the chunk (ERA5T made final): new bytes, a new ETag.
    let array = source.array("2m_temperature").unwrap();
    let new: Vec<f32> = (0..9 * 16).map(|k| -(k as f32) - 0.5).collect();
    array.async_store_chunk(&[5, 0, 0], new).await.unwrap();
    let r2 = requests();
    assert_eq!(
        value(&point(&source, 1.5, 45.0), &source, &options).await,
        -18.5
    );
    assert_eq!(
        requests() - r2,
        2,
        "the stale answer, then the new header, table and block"
    );
    // Without tables the same values, two requests each.
    let plain = FetchOptions {
        read_path: ReadPath::Blocks,
        ..FetchOptions::default()
    };
    assert_eq!(
        value(&point(&source, 2.0, 0.0), &source, &plain).await,
        -0.5
    );
}

/// Over any link, a first read of a chunk is one round trip: its header and table, and (with
/// a known table of the array, or within the same request) its needed blocks. The synthetic
/// chunks fit in the first request; the unit tests of `fetch::blocks` read larger ones. The
/// values are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distant_link_reads_a_new_chunk_in_one_request() {
    use sodeda_era5::fetch::link::{Link, LinkMeter};
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    let requests = || source.metrics.requests();
    let distant = Link {
        rtt: 0.030,
        rate: 50e6,
    };
    for (meter, second) in [(LinkMeter::assume(distant), 1), (LinkMeter::default(), 1)] {
        let options = FetchOptions {
            block_tables: Some(Arc::new(BlockTables::in_memory().with_link(meter))),
            read_path: ReadPath::Blocks,
            ..FetchOptions::default()
        };
        let r0 = requests();
        let at = |hour: u32| {
            plan(
                &source,
                &format!(
                    r#"{{"time": "2023-01-01T{hour:02}:00", "latitude": 1.5, "longitude": 45, "variable": "2m_temperature"}}"#
                ),
            )
        };
        assert_eq!(value(&at(5), &source, &options).await, 5018.0);
        assert_eq!(
            requests() - r0,
            1,
            "no table of the array yet: the first request holds the chunk"
        );
        let r1 = requests();
        assert_eq!(value(&at(6), &source, &options).await, 6018.0);
        assert_eq!(requests() - r1, second);
    }
}
