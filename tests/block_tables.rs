//! Block tables kept across files: a later block read of a chunk costs one request, and a chunk
//! the store replaced is read afresh, never decoded with the old table. The source is the small
//! ERA5-shaped store in memory (tests/common), whose ETags change on every write.

mod common;

use std::sync::Arc;

use common::plan;
use ndarray::ArrayD;
use sodeda_era5::fetch::{fetch, BlockTables, FetchOptions};
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
        ..FetchOptions::default()
    };
    let requests = || source.metrics.requests();

    // Value = hour*1000 + latitude index*16 + longitude index.
    let r0 = requests();
    assert_eq!(
        value(&point(&source, 2.0, 0.0), &source, &options).await,
        5000.0
    );
    assert_eq!(requests() - r0, 2, "the block table, then the block");
    let r1 = requests();
    assert_eq!(
        value(&point(&source, 1.5, 45.0), &source, &options).await,
        5018.0
    );
    assert_eq!(requests() - r1, 1, "the table was known: the block only");

    // The store replaces the chunk (ERA5T made final): new bytes, a new ETag.
    let var = &source.variables["2m_temperature"];
    let new: Vec<f32> = (0..9 * 16).map(|k| -(k as f32) - 0.5).collect();
    var.array.async_store_chunk(&[5, 0, 0], new).await.unwrap();
    let r2 = requests();
    assert_eq!(
        value(&point(&source, 1.5, 45.0), &source, &options).await,
        -18.5
    );
    assert_eq!(
        requests() - r2,
        3,
        "the stale answer, then the new table and block"
    );
    // Without tables the same values, two requests each.
    let plain = FetchOptions::default();
    assert_eq!(
        value(&point(&source, 2.0, 0.0), &source, &plain).await,
        -0.5
    );
}
