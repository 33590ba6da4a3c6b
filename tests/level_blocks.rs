//! Block reads of pressure-level chunks: a box at two distant levels of a 4-D chunk of many
//! Blosc blocks fetches the chunk's header and block table and the blocks holding its rows,
//! not the span from the first needed block to the last through the levels between; and the
//! values equal a full decode's, bit for bit.

mod common;

use std::sync::Arc;

use serde_json::{json, Value};
use sodeda_era5::fetch::link::{Link, LinkMeter};
use sodeda_era5::fetch::{fetch, BlockTables, FetchOptions, ReadPath};
use sodeda_era5::source::{Source, ZarrArray};
use zarrs::array::{ArrayMetadata, ArrayMetadataV2};
use zarrs_object_store::object_store::{
    memory::InMemory, path::Path, ObjectStore, ObjectStoreExt, PutPayload,
};
use zarrs_object_store::AsyncObjectStore;

const NT: u64 = 2;
const NL: u64 = 12;
const NY: u64 = 256;
const NX: u64 = 256;
/// Blosc block size asked for (zarrs makes blocks of 64 KiB: four per level).
const BLOCK: u64 = 16 << 10;
const LEVELS: [i64; 12] = [100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000];

fn zarray(shape: Vec<u64>, chunks: Vec<u64>, dtype: &str, fill: Value, blocksize: u64) -> Value {
    json!({
        "zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype,
        "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1,
                       "blocksize": blocksize},
        "fill_value": fill, "filters": null, "order": "C"
    })
}

/// A store with `temperature (time, level, latitude, longitude)` in chunks of one hour and
/// all twelve levels, of values that hardly compress (each level several blocks).
async fn level_store() -> Arc<dyn ObjectStore> {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let zarr = Arc::new(AsyncObjectStore::new(mem.clone()));
    let mut meta = serde_json::Map::new();
    meta.insert(".zgroup".into(), json!({"zarr_format": 2}));
    meta.insert(".zattrs".into(), json!({"valid_time_start": "1940-01-01"}));
    let arrays: Vec<(&str, Value, Value)> = vec![
        (
            "time",
            zarray(vec![NT], vec![NT], "<i8", Value::Null, 0),
            json!({"_ARRAY_DIMENSIONS": ["time"], "calendar": "proleptic_gregorian",
                   "units": "hours since 1900-01-01 00:00:00"}),
        ),
        (
            "latitude",
            zarray(vec![NY], vec![NY], "<f4", json!("NaN"), 0),
            json!({"_ARRAY_DIMENSIONS": ["latitude"], "units": "degrees_north"}),
        ),
        (
            "longitude",
            zarray(vec![NX], vec![NX], "<f4", json!("NaN"), 0),
            json!({"_ARRAY_DIMENSIONS": ["longitude"], "units": "degrees_east"}),
        ),
        (
            "level",
            zarray(vec![NL], vec![NL], "<i8", Value::Null, 0),
            json!({"_ARRAY_DIMENSIONS": ["level"], "units": "hPa"}),
        ),
        (
            "temperature",
            zarray(
                vec![NT, NL, NY, NX],
                vec![1, NL, NY, NX],
                "<f4",
                json!("NaN"),
                BLOCK,
            ),
            json!({"_ARRAY_DIMENSIONS": ["time", "level", "latitude", "longitude"],
                   "units": "K", "long_name": "Temperature", "short_name": "t"}),
        ),
    ];
    let mut x = 12345u32;
    for (name, zarray, zattrs) in &arrays {
        meta.insert(format!("{name}/.zarray"), zarray.clone());
        meta.insert(format!("{name}/.zattrs"), zattrs.clone());
        let mut m: ArrayMetadataV2 = serde_json::from_value(zarray.clone()).unwrap();
        m.attributes = zattrs.as_object().unwrap().clone();
        let array =
            ZarrArray::new_with_metadata(zarr.clone(), &format!("/{name}"), ArrayMetadata::V2(m))
                .unwrap();
        match *name {
            "time" => {
                let v: Vec<i64> = (0..NT as i64).map(|i| common::T0 + i).collect();
                array.async_store_chunk(&[0], v).await.unwrap();
            }
            "latitude" => {
                let v: Vec<f32> = (0..NY).map(|i| 60.0 - 0.25 * i as f32).collect();
                array.async_store_chunk(&[0], v).await.unwrap();
            }
            "longitude" => {
                let v: Vec<f32> = (0..NX).map(|i| 0.25 * i as f32).collect();
                array.async_store_chunk(&[0], v).await.unwrap();
            }
            "level" => array
                .async_store_chunk(&[0], LEVELS.to_vec())
                .await
                .unwrap(),
            _ => {
                for t in 0..NT {
                    let v: Vec<f32> = (0..NL * NY * NX)
                        .map(|_| {
                            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                            200.0 + f32::from_bits((x >> 9) | 0x3f80_0000)
                        })
                        .collect();
                    array.async_store_chunk(&[t, 0, 0, 0], v).await.unwrap();
                }
            }
        }
    }
    let consolidated = json!({"metadata": meta, "zarr_consolidated_format": 1});
    mem.put(
        &Path::from(".zmetadata"),
        PutPayload::from(consolidated.to_string().into_bytes()),
    )
    .await
    .unwrap();
    mem
}

/// The header and block table's length, and the compressed size of the blocks that hold
/// `rows` (rows of the chunk: flat over level and latitude), of the chunk object `key`.
async fn needed_bytes(store: &dyn ObjectStore, key: &str, rows: &[(u64, u64)]) -> (u64, u64) {
    let chunk = store
        .get(&Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(chunk[at..at + 4].try_into().unwrap()) as u64;
    let (nbytes, blocksize, cbytes) = (u32_at(4), u32_at(8), u32_at(12));
    let nblocks = nbytes.div_ceil(blocksize);
    assert!(nblocks >= 2 * NL, "several blocks per level ({nblocks})");
    let start = |b: u64| {
        if b < nblocks {
            u32_at(16 + 4 * b as usize)
        } else {
            cbytes
        }
    };
    let mut blocks = std::collections::BTreeSet::new();
    for &(from, to) in rows {
        let (first, last) = (from * NX * 4 / blocksize, (to * NX * 4 - 1) / blocksize);
        blocks.extend(first..=last);
    }
    let sizes = blocks.iter().map(|&b| start(b + 1) - start(b)).sum();
    (16 + 4 * nblocks, sizes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_distant_levels_fetch_their_blocks_not_the_span_and_equal_a_full_decode() {
    let store = level_store().await;
    let source = Source::open_store("memory://levels", store.clone())
        .await
        .unwrap();
    // A 5×5 box (latitude rows 100..105, longitude columns 0..5) at 200 and 925 hPa (level
    // indices 2 and 10), one hour.
    let plan = common::plan(
        &source,
        r#"{"time": "2023-01-01T01:00", "level": [200, 925], "latitude": {"start": 34, "end": 35}, "longitude": {"start": 0, "end": 1}, "variable": "temperature"}"#,
    );
    let full = FetchOptions {
        read_path: ReadPath::Full,
        ..FetchOptions::default()
    };
    let expected = fetch(&plan, &source, &full).await.unwrap().arrays;
    assert_eq!(expected[0].shape(), [1, 2, 5, 5]);
    let rows = [(2 * NY + 100, 2 * NY + 105), (10 * NY + 100, 10 * NY + 105)];
    let (table, blocks) = needed_bytes(store.as_ref(), "temperature/1.0.0.0", &rows).await;
    let distant = Link {
        rtt: 0.010,
        rate: 50e6,
    };
    // No block tables (no link known), a measured in-memory link, and a distant link whose
    // round trip is worth 500 KB: the seven levels between (about 1 MB) are not fetched.
    for meter in [
        None,
        Some(LinkMeter::default()),
        Some(LinkMeter::assume(distant)),
    ] {
        let options = FetchOptions {
            block_tables: meter.map(|m| Arc::new(BlockTables::in_memory().with_link(m))),
            ..FetchOptions::default()
        };
        let b0 = source.metrics.bytes();
        let got = fetch(&plan, &source, &options).await.unwrap().arrays;
        let fetched = source.metrics.bytes() - b0;
        // The first request asks for the header and a table of up to 64 blocks (272 bytes).
        let head = table.max(16 + 4 * 64);
        assert_eq!(
            fetched,
            head + blocks,
            "only the header, the block table and the two levels' blocks ({head} + {blocks} \
             bytes)"
        );
        let bits = |a: &ndarray::ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got[0]),
            bits(&expected[0]),
            "the values of a full decode"
        );
    }
}
