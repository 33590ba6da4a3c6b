//! The source: an ARCO-ERA5-shaped Zarr v2 store read through `object_store` + `zarrs`.
//!
//! Input: a URL. Output: a [`Source`] that knows every variable (dimensions, attributes, an
//! opened zarrs array) and holds every coordinate in memory. Metadata comes from the
//! consolidated `.zmetadata` (one request); coordinates are read once, here, and kept.
//! Invariant: data variables are little-endian float32 whose dimensions all have coordinate
//! arrays; anything else is refused when the store is opened, not when a file is read.

pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use serde_json::{Map, Value};
use zarrs::array::{Array, ArrayMetadata, ArrayMetadataV2, ArraySubset};
use zarrs_object_store::object_store::{path::Path, ObjectStore, ObjectStoreExt};
use zarrs_object_store::AsyncObjectStore;

use crate::provenance::{Freshness, StoreVersion};

use store::{open_url, MeteredStore};
pub use store::{SourceMetrics, SourceOptions};

/// The public ARCO-ERA5 store (Zarr v2 despite the `-v3` in its name).
pub const DEFAULT_SOURCE: &str =
    "gs://gcp-public-data-arco-era5/ar/full_37-1h-0p25deg-chunk-1.zarr-v3";

/// WeatherBench2's ERA5 store: 6-hourly, 13 pressure levels, 1440 × 721, 1959 to 2023-01-10.
pub const WEATHERBENCH2_SOURCE: &str =
    "gs://weatherbench2/datasets/era5/1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr";

/// The stores known by name, as the prototype offered them: `(name, URL)`.
pub const NAMED_SOURCES: [(&str, &str); 2] = [
    ("arco-era5", DEFAULT_SOURCE),
    ("weatherbench2", WEATHERBENCH2_SOURCE),
];

/// The URL of a source given by name (`arco-era5`, `weatherbench2`), or `source` itself (a
/// URL or a path). A file's identity is made with the URL, so a name and its URL give the
/// same files.
pub fn resolve_name(source: &str) -> &str {
    NAMED_SOURCES
        .iter()
        .find(|(name, _)| *name == source.trim())
        .map_or(source, |(_, url)| url)
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn the_prototype_subsets_have_names() {
        assert_eq!(resolve_name("arco-era5"), DEFAULT_SOURCE);
        assert_eq!(resolve_name("weatherbench2"), WEATHERBENCH2_SOURCE);
        assert_eq!(resolve_name("/data/replica"), "/data/replica");
        assert_eq!(resolve_name("s3://b/weatherbench2"), "s3://b/weatherbench2");
    }
}

/// The zarrs view of the source store.
pub type ZarrStore = AsyncObjectStore<Arc<dyn ObjectStore>>;

/// An opened zarrs array of the source.
pub type ZarrArray = Array<ZarrStore>;

/// Why the source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URL is malformed or names an unsupported or missing location.
    #[error("source {url}: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A metadata object could not be fetched. Said with the store's innermost cause once
    /// ([`store::describe_error`]), so the store's error is not also this error's `source()`:
    /// printing the chain would repeat it.
    #[error("{}", read_message(.url, .key, .error))]
    Read {
        /// The source URL.
        url: String,
        /// The object key.
        key: String,
        /// The store's error.
        error: zarrs_object_store::object_store::Error,
    },
    /// The store's metadata is not what this program reads.
    #[error("source {url}: {key}: {why}")]
    Layout {
        /// The source URL.
        url: String,
        /// The object or array at fault.
        key: String,
        /// What was expected.
        why: String,
    },
    /// zarrs refused an array or could not read a coordinate.
    #[error("source {url}: array {array}: {why}")]
    Array {
        /// The source URL.
        url: String,
        /// The array name.
        array: String,
        /// zarrs' message.
        why: String,
    },
}

fn read_message(url: &str, key: &str, error: &zarrs_object_store::object_store::Error) -> String {
    let cause = store::describe_error(error);
    if store::is_unreachable(error) {
        format!("cannot reach the source {url}: {cause}")
    } else {
        format!("source {url}: cannot read {key}: {cause}")
    }
}

/// How a time coordinate's integers map to instants (CF `units` + `calendar`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeEncoding {
    /// The reference instant (`... since <epoch>`), UTC.
    pub epoch: NaiveDateTime,
    /// Seconds per unit (3600 for `hours since`).
    pub unit_seconds: i64,
    /// The `units` attribute as stored.
    pub units: String,
    /// The `calendar` attribute as stored (`proleptic_gregorian` when absent).
    pub calendar: String,
}

impl TimeEncoding {
    /// Parses CF units like `hours since 1900-01-01 00:00:00` or `hours since 1900-01-01`.
    pub fn parse(units: &str, calendar: Option<&str>) -> Result<Self, String> {
        let (unit, since) = units
            .split_once(" since ")
            .ok_or_else(|| format!("time units {units:?} are not `<unit> since <date>`"))?;
        let unit_seconds = match unit.trim() {
            "seconds" | "second" | "s" => 1,
            "minutes" | "minute" | "min" => 60,
            "hours" | "hour" | "h" => 3600,
            "days" | "day" | "d" => 86400,
            other => return Err(format!("unsupported time unit {other:?}")),
        };
        let since = since.trim().trim_end_matches('Z');
        let epoch = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(since, f).ok())
            .or_else(|| {
                NaiveDate::parse_from_str(since, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })
            .ok_or_else(|| format!("cannot parse the reference date in {units:?}"))?;
        let calendar = calendar.unwrap_or("proleptic_gregorian").to_string();
        if !matches!(
            calendar.as_str(),
            "proleptic_gregorian" | "gregorian" | "standard"
        ) {
            return Err(format!("unsupported calendar {calendar:?}"));
        }
        Ok(Self {
            epoch,
            unit_seconds,
            units: units.to_string(),
            calendar,
        })
    }

    /// The instant of a stored value.
    pub fn instant(&self, value: i64) -> NaiveDateTime {
        self.epoch + TimeDelta::seconds(value * self.unit_seconds)
    }
}

/// A coordinate (a 1-D array named after its own dimension), held in memory.
#[derive(Debug, Clone)]
pub struct Coordinate {
    /// Dimension and array name.
    pub name: String,
    /// The values as stored, widened to f64 (exact for float32 and for integers below 2^53).
    pub values: Vec<f64>,
    /// True for integer storage (`<i8`, `<i4`, ...).
    pub integer: bool,
    /// The attributes as stored, without `_ARRAY_DIMENSIONS`.
    pub attributes: Map<String, Value>,
    /// For time: how values map to instants.
    pub time: Option<TimeEncoding>,
}

/// A data variable of the source.
pub struct Variable {
    /// Array name, e.g. `2m_temperature`.
    pub name: String,
    /// Dimension names in storage order, e.g. `[time, latitude, longitude]`.
    pub dims: Vec<String>,
    /// Array shape.
    pub shape: Vec<u64>,
    /// Chunk shape.
    pub chunks: Vec<u64>,
    /// The attributes as stored, without `_ARRAY_DIMENSIONS`.
    pub attributes: Map<String, Value>,
    /// What absent chunks read as (`fill_value` of `.zarray`; NaN in ARCO-ERA5).
    pub fill_value: Option<f32>,
    /// True when chunks are plain Blosc over little-endian float32 in C order (no filters):
    /// then byte ranges of a chunk can be read and decoded block by block.
    pub blosc_blocks: bool,
    /// Separator of chunk key components (`.` unless `.zarray` says otherwise).
    pub separator: String,
    /// The opened array.
    pub array: Arc<ZarrArray>,
}

impl Variable {
    /// The store key of a chunk, e.g. `2m_temperature/1078211.0.0`.
    pub fn chunk_key(&self, indices: &[u64]) -> String {
        let parts: Vec<String> = indices.iter().map(u64::to_string).collect();
        format!("{}/{}", self.name, parts.join(&self.separator))
    }
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable")
            .field("name", &self.name)
            .field("dims", &self.dims)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// An opened source: variables, coordinates and the counters of what was read.
#[derive(Debug)]
pub struct Source {
    /// The URL as given.
    pub url: String,
    /// Data variables by name.
    pub variables: BTreeMap<String, Variable>,
    /// Coordinates by name.
    pub coordinates: BTreeMap<String, Coordinate>,
    /// The root attributes.
    pub attributes: Map<String, Value>,
    /// What has been read from the store so far.
    pub metrics: Arc<SourceMetrics>,
    /// The store itself (metered), for direct byte-range reads of chunks.
    pub store: Arc<dyn ObjectStore>,
    /// The store's version (`last_updated`, `valid_time_stop`) as last read, or pinned.
    pub freshness: Freshness,
}

impl Source {
    /// Opens the store at `url`: reads `.zmetadata` and every coordinate.
    pub async fn open(url: &str) -> Result<Source, SourceError> {
        Self::open_with(url, SourceOptions::default()).await
    }

    /// Like [`Source::open`], with retry and timeout settings for remote stores.
    pub async fn open_with(url: &str, options: SourceOptions) -> Result<Source, SourceError> {
        let url = resolve_name(url);
        let inner = open_url(url, options)?;
        Self::open_store(url, inner).await
    }

    /// Opens a source over an already-built store (tests wrap stores to inject faults).
    pub async fn open_store(url: &str, inner: Arc<dyn ObjectStore>) -> Result<Source, SourceError> {
        let metrics = Arc::new(SourceMetrics::default());
        let store: Arc<dyn ObjectStore> = Arc::new(MeteredStore::new(inner, metrics.clone()));
        let layout = |key: &str, why: String| SourceError::Layout {
            url: url.to_string(),
            key: key.to_string(),
            why,
        };
        let key = ".zmetadata";
        let consolidated = read_zmetadata(store.as_ref(), url).await?;
        let entries = consolidated
            .get("metadata")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                layout(
                    key,
                    "no `metadata` object (not consolidated Zarr v2)".into(),
                )
            })?;

        let raw_store = store.clone();
        let zarr: Arc<ZarrStore> = Arc::new(AsyncObjectStore::new(store));
        let attributes = entries
            .get(".zattrs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();

        let mut arrays = BTreeMap::new();
        for (k, v) in entries {
            let Some(name) = k.strip_suffix("/.zarray") else {
                continue;
            };
            if name.contains('/') {
                continue; // nested groups are not part of this layout
            }
            let mut attrs = entries
                .get(&format!("{name}/.zattrs"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let dims: Vec<String> = match attrs.remove("_ARRAY_DIMENSIONS") {
                Some(Value::Array(d)) => d
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| layout(k, "_ARRAY_DIMENSIONS is not a list of names".into()))?,
                _ => return Err(layout(k, "no _ARRAY_DIMENSIONS attribute".into())),
            };
            let meta: ArrayMetadataV2 = serde_json::from_value(v.clone())
                .map_err(|e| layout(k, format!("not Zarr v2 array metadata: {e}")))?;
            let blosc_blocks = v
                .get("compressor")
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str)
                == Some("blosc")
                && v.get("filters").is_none_or(Value::is_null)
                && v.get("order").and_then(Value::as_str) == Some("C")
                && v.get("dtype").and_then(Value::as_str) == Some("<f4");
            let separator = v
                .get("dimension_separator")
                .and_then(Value::as_str)
                .unwrap_or(".")
                .to_string();
            let fill_value = match v.get("fill_value") {
                Some(Value::String(s)) if s == "NaN" => Some(f32::NAN),
                Some(Value::Number(n)) => n.as_f64().map(|x| x as f32),
                _ => None,
            };
            arrays.insert(
                name.to_string(),
                (meta, dims, attrs, fill_value, blosc_blocks, separator),
            );
        }

        let mut coordinates = BTreeMap::new();
        let mut variables = BTreeMap::new();
        let mut coordinate_arrays = Vec::new();
        for (name, (meta, dims, attrs, fill_value, blosc_blocks, separator)) in arrays {
            let shape = meta.shape.clone();
            let chunks: Vec<u64> = meta.chunks.iter().map(|c| c.get()).collect();
            let dtype = serde_json::to_value(&meta.dtype)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let array = ZarrArray::new_with_metadata(
                zarr.clone(),
                &format!("/{name}"),
                ArrayMetadata::V2(meta),
            )
            .map_err(|e| SourceError::Array {
                url: url.to_string(),
                array: name.clone(),
                why: e.to_string(),
            })?;
            if dims.len() == 1 && dims[0] == name {
                coordinate_arrays.push((name, dtype, attrs, array));
            } else {
                if dtype != "<f4" {
                    return Err(layout(
                        &name,
                        format!("data variables must be float32 (<f4), found {dtype}"),
                    ));
                }
                variables.insert(
                    name.clone(),
                    Variable {
                        name,
                        dims,
                        shape,
                        chunks,
                        attributes: attrs,
                        fill_value,
                        blosc_blocks,
                        separator,
                        array: Arc::new(array),
                    },
                );
            }
        }
        // All coordinates at once, each with all its chunks in flight: over a distant store the
        // start costs a few round trips, not one per chunk (ARCO-ERA5's time has 20 chunks).
        let reads = coordinate_arrays.iter().map(|(name, dtype, attrs, array)| {
            read_coordinate(url, name, dtype, attrs.clone(), array)
        });
        for ((name, ..), coordinate) in coordinate_arrays
            .iter()
            .zip(futures::future::try_join_all(reads).await?)
        {
            coordinates.insert(name.clone(), coordinate);
        }
        for v in variables.values() {
            for d in &v.dims {
                if !coordinates.contains_key(d) {
                    return Err(layout(
                        &v.name,
                        format!("dimension {d} has no coordinate array"),
                    ));
                }
            }
        }
        if coordinates.get("time").is_none_or(|c| c.time.is_none()) {
            return Err(layout("time", "no time coordinate with CF units".into()));
        }
        Ok(Source {
            url: url.to_string(),
            variables,
            coordinates,
            freshness: Freshness::new(StoreVersion::of(&attributes)),
            attributes,
            metrics,
            store: raw_store,
        })
    }

    /// Reads the store's root attributes again (`.zmetadata`) and records its version;
    /// `true` if `last_updated` or `valid_time_stop` changed. Variables and coordinates are
    /// not read again (ARCO-ERA5's time axis is laid out to 2050 ahead; a store that changes
    /// its arrays needs a remount).
    pub async fn refresh_version(&self) -> Result<bool, SourceError> {
        let consolidated = read_zmetadata(self.store.as_ref(), &self.url).await?;
        let attributes = consolidated
            .get("metadata")
            .and_then(|m| m.get(".zattrs"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(self.freshness.update(StoreVersion::of(&attributes)))
    }

    /// The time coordinate (always present; checked by [`Source::open`]).
    pub fn time(&self) -> (&Coordinate, &TimeEncoding) {
        let c = &self.coordinates["time"];
        (c, c.time.as_ref().expect("checked at open"))
    }
}

/// The store's consolidated metadata (`.zmetadata`) as JSON.
async fn read_zmetadata(store: &dyn ObjectStore, url: &str) -> Result<Value, SourceError> {
    let key = ".zmetadata";
    let bytes = match store.get(&Path::from(key)).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    }
    .map_err(|error| SourceError::Read {
        url: url.to_string(),
        key: key.to_string(),
        error,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| SourceError::Layout {
        url: url.to_string(),
        key: key.to_string(),
        why: format!("not JSON: {e}"),
    })
}

/// Chunk reads in flight for one coordinate at the start.
const COORDINATE_READS: usize = 64;

/// Every value of a coordinate array. A one-dimensional array is read chunk by chunk, all
/// chunks at once, each whole: zarrs reads a chunk that the array's end cuts (the last one)
/// through its partial decoder, a HEAD and then a ranged GET, two more round trips at the
/// start of every process over a distant store.
async fn all_values<T>(
    array: &ZarrArray,
    opts: &zarrs::array::CodecOptions,
) -> Result<Vec<T>, zarrs::array::ArrayError>
where
    T: zarrs::array::ElementOwned + Send + Sync,
{
    let shape = array.shape().to_vec();
    if shape.len() != 1 {
        let all = ArraySubset::new_with_shape(shape);
        return array
            .async_retrieve_array_subset_opt::<Vec<T>>(&all, opts)
            .await;
    }
    let chunks = array.chunk_grid_shape()[0];
    let reads = (0..chunks)
        .map(|c| async move { array.async_retrieve_chunk_opt::<Vec<T>>(&[c], opts).await });
    use futures::{StreamExt, TryStreamExt};
    let parts: Vec<Vec<T>> = futures::stream::iter(reads)
        .buffered(COORDINATE_READS)
        .try_collect()
        .await?;
    let mut values: Vec<T> = parts.into_iter().flatten().collect();
    values.truncate(shape[0] as usize);
    Ok(values)
}

async fn read_coordinate(
    url: &str,
    name: &str,
    dtype: &str,
    mut attributes: Map<String, Value>,
    array: &ZarrArray,
) -> Result<Coordinate, SourceError> {
    let err = |why: String| SourceError::Array {
        url: url.to_string(),
        array: name.to_string(),
        why,
    };
    // Every chunk requested at once (zarrs' default is the number of cores).
    let opts = zarrs::array::CodecOptions::default().with_concurrent_target(COORDINATE_READS);
    let (values, integer): (Vec<f64>, bool) = match dtype {
        "<f4" => (
            all_values::<f32>(array, &opts)
                .await
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .map(f64::from)
                .collect(),
            false,
        ),
        "<f8" => (
            all_values::<f64>(array, &opts)
                .await
                .map_err(|e| err(e.to_string()))?,
            false,
        ),
        "<i8" => (
            all_values::<i64>(array, &opts)
                .await
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .map(|x| x as f64)
                .collect(),
            true,
        ),
        "<i4" => (
            all_values::<i32>(array, &opts)
                .await
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .map(f64::from)
                .collect(),
            true,
        ),
        other => return Err(err(format!("unsupported coordinate dtype {other}"))),
    };
    if values.iter().any(|v| v.is_nan()) {
        return Err(err("coordinate holds NaN (an absent chunk?)".into()));
    }
    let increasing = values.windows(2).all(|w| w[0] < w[1]);
    let decreasing = values.windows(2).all(|w| w[0] > w[1]);
    if !increasing && !decreasing {
        return Err(err("coordinate values are not strictly monotonic".into()));
    }
    let time = if name == "time" {
        if !integer || !increasing {
            return Err(err("time must be increasing integers".into()));
        }
        let units = attributes
            .get("units")
            .and_then(Value::as_str)
            .ok_or_else(|| err("time has no units attribute".into()))?;
        let calendar = attributes.get("calendar").and_then(Value::as_str);
        Some(TimeEncoding::parse(units, calendar).map_err(err)?)
    } else {
        None
    };
    attributes.remove("_ARRAY_DIMENSIONS");
    Ok(Coordinate {
        name: name.to_string(),
        values,
        integer,
        attributes,
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_units_parse_both_spellings() {
        for units in ["hours since 1900-01-01 00:00:00", "hours since 1900-01-01"] {
            let t = TimeEncoding::parse(units, Some("proleptic_gregorian")).unwrap();
            assert_eq!(t.unit_seconds, 3600);
            assert_eq!(
                t.instant(1060692).to_string(),
                "2021-01-01 12:00:00",
                "worked example from the layout notes"
            );
        }
        assert!(TimeEncoding::parse("fortnights since 1900-01-01", None).is_err());
        assert!(TimeEncoding::parse("hours since 1900-01-01", Some("360_day")).is_err());
    }
}
