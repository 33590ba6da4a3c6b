//! A small ERA5-shaped Zarr v2 store in memory, and a store wrapper that injects faults.
//!
//! The store has the real layout at a small size: `time` int64 hours since 1900 (100 hours
//! from 2023-01-01T00, chunks of 30), `latitude` 2 → −2 (9), `longitude` 0 → 337.5 (16),
//! `level` [500, 850, 1000]; `2m_temperature (time, latitude, longitude)` and
//! `temperature (time, level, latitude, longitude)`, Blosc lz4, fill NaN, one chunk per hour,
//! chunks present for the first 48 hours. Value = hour*1000 + level_index*100 + lat*16 + lon.

#![allow(dead_code)]

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Value};
use sodeda_era5::source::ZarrArray;
use zarrs::array::{ArrayMetadata, ArrayMetadataV2};
use zarrs_object_store::object_store::{
    self, memory::InMemory, path::Path, CopyOptions, GetOptions, GetResult, GetResultPayload,
    ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use zarrs_object_store::AsyncObjectStore;

/// First hour of the store: 2023-01-01T00 as hours since 1900-01-01.
pub const T0: i64 = 1_078_200;
/// Hours on the time axis.
pub const NT: u64 = 100;
/// Hours with chunks.
pub const PRESENT: u64 = 48;

fn zarray(shape: Vec<u64>, chunks: Vec<u64>, dtype: &str, fill: Value) -> Value {
    json!({
        "zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype,
        "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
        "fill_value": fill, "filters": null, "order": "C"
    })
}

/// The plan of the deskriptor `json` (line 1) over `source`, with default options.
pub fn plan(source: &sodeda_era5::source::Source, json: &str) -> sodeda_era5::plan::Plan {
    sodeda_era5::plan::Plan::new(
        &sodeda_era5::deskriptor::Deskriptor::parse(1, json).unwrap(),
        &source.scope,
        sodeda_era5::plan::PlanOptions::default(),
    )
    .unwrap()
}

/// Writes the store into a new `InMemory` and returns it.
pub async fn synthetic_store() -> Arc<dyn ObjectStore> {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let zarr = Arc::new(AsyncObjectStore::new(mem.clone()));
    let mut meta = serde_json::Map::new();
    meta.insert(".zgroup".into(), json!({"zarr_format": 2}));
    meta.insert(".zattrs".into(), json!({"valid_time_start": "1940-01-01"}));
    let arrays: Vec<(&str, Value, Value)> = vec![
        (
            "time",
            zarray(vec![NT], vec![30], "<i8", Value::Null),
            json!({"_ARRAY_DIMENSIONS": ["time"], "calendar": "proleptic_gregorian",
                   "units": "hours since 1900-01-01 00:00:00"}),
        ),
        (
            "latitude",
            zarray(vec![9], vec![9], "<f4", json!("NaN")),
            json!({"_ARRAY_DIMENSIONS": ["latitude"], "units": "degrees_north"}),
        ),
        (
            "longitude",
            zarray(vec![16], vec![16], "<f4", json!("NaN")),
            json!({"_ARRAY_DIMENSIONS": ["longitude"], "units": "degrees_east"}),
        ),
        (
            "level",
            zarray(vec![3], vec![3], "<i8", Value::Null),
            json!({"_ARRAY_DIMENSIONS": ["level"], "units": "hPa"}),
        ),
        (
            "2m_temperature",
            zarray(vec![NT, 9, 16], vec![1, 9, 16], "<f4", json!("NaN")),
            json!({"_ARRAY_DIMENSIONS": ["time", "latitude", "longitude"], "units": "K",
                   "long_name": "2 metre temperature", "short_name": "t2m"}),
        ),
        (
            "temperature",
            zarray(vec![NT, 3, 9, 16], vec![1, 3, 9, 16], "<f4", json!("NaN")),
            json!({"_ARRAY_DIMENSIONS": ["time", "level", "latitude", "longitude"],
                   "units": "K", "long_name": "Temperature", "short_name": "t"}),
        ),
    ];
    let mut opened = Vec::new();
    for (name, zarray, zattrs) in &arrays {
        meta.insert(format!("{name}/.zarray"), zarray.clone());
        meta.insert(format!("{name}/.zattrs"), zattrs.clone());
        let mut m: ArrayMetadataV2 = serde_json::from_value(zarray.clone()).unwrap();
        m.attributes = zattrs.as_object().unwrap().clone();
        let array =
            ZarrArray::new_with_metadata(zarr.clone(), &format!("/{name}"), ArrayMetadata::V2(m))
                .unwrap();
        opened.push((name.to_string(), array));
    }
    for (name, array) in &opened {
        match name.as_str() {
            "time" => {
                for c in 0..NT.div_ceil(30) {
                    let v: Vec<i64> = (0..30).map(|i| T0 + (c * 30 + i) as i64).collect();
                    array.async_store_chunk(&[c], v).await.unwrap();
                }
            }
            "latitude" => {
                let v: Vec<f32> = (0..9).map(|i| 2.0 - 0.5 * i as f32).collect();
                array.async_store_chunk(&[0], v).await.unwrap();
            }
            "longitude" => {
                let v: Vec<f32> = (0..16).map(|i| 22.5 * i as f32).collect();
                array.async_store_chunk(&[0], v).await.unwrap();
            }
            "level" => {
                array
                    .async_store_chunk(&[0], vec![500i64, 850, 1000])
                    .await
                    .unwrap();
            }
            "2m_temperature" => {
                for t in 0..PRESENT {
                    let v: Vec<f32> = (0..9 * 16).map(|k| (t * 1000 + k) as f32).collect();
                    array.async_store_chunk(&[t, 0, 0], v).await.unwrap();
                }
            }
            "temperature" => {
                for t in 0..PRESENT {
                    let v: Vec<f32> = (0..3 * 9 * 16)
                        .map(|k| (t * 1000 + (k / 144) * 100 + k % 144) as f32)
                        .collect();
                    array.async_store_chunk(&[t, 0, 0, 0], v).await.unwrap();
                }
            }
            _ => unreachable!(),
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

/// Injects the faults a real store has and a local one cannot produce on demand, on the paths
/// that contain `pattern` ("" for all): while `failing`, every request fails as a reset
/// connection would; while `denied`, every request is refused for its credentials; while
/// `vanished`, every read answers "not found" (a store that moved away, a wrong prefix, a
/// proxy turning denials into 404); while `cut`, every GET's body ends half-way (its full
/// size announced). `puts` counts the writes that reached the inner store.
#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub pattern: String,
    pub failing: AtomicBool,
    pub denied: AtomicBool,
    pub vanished: AtomicBool,
    pub cut: AtomicBool,
    pub puts: AtomicUsize,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl FaultyStore {
    /// A store over `inner` that injects no fault until told to.
    pub fn new(inner: Arc<dyn ObjectStore>, pattern: &str) -> Self {
        Self {
            inner,
            pattern: pattern.to_string(),
            failing: AtomicBool::new(false),
            denied: AtomicBool::new(false),
            vanished: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            puts: AtomicUsize::new(0),
        }
    }

    /// The fault of a write (or any request) to `location`, if one is injected.
    fn check_write(&self, location: &Path) -> object_store::Result<()> {
        if !location.as_ref().contains(&self.pattern) {
            return Ok(());
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected fault: connection reset".into(),
            });
        }
        if self.denied.load(Ordering::SeqCst) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "injected: AccessDenied".into(),
            });
        }
        Ok(())
    }

    /// The fault of a read of `location`, if one is injected.
    fn check(&self, location: &Path) -> object_store::Result<()> {
        if self.vanished.load(Ordering::SeqCst) {
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "injected: the store is gone".into(),
            });
        }
        self.check_write(location)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check_write(location)?;
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check_write(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        let result = self.inner.get_opts(location, options).await?;
        if !self.cut.load(Ordering::SeqCst) {
            return Ok(result);
        }
        let (meta, range, attributes) = (
            result.meta.clone(),
            result.range.clone(),
            result.attributes.clone(),
        );
        let bytes = result.bytes().await?;
        let half = bytes.slice(..bytes.len() / 2);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(half) }).boxed()),
            meta,
            range,
            attributes,
            extensions: Default::default(),
        })
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.check(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check_write(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}
