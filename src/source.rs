//! The source: an ARCO-ERA5-shaped Zarr v2 store read through `object_store` + `zarrs`.
//!
//! Input: a URL. Output: a [`Source`] that knows every variable (dimensions, attributes, an
//! opened zarrs array) and holds every coordinate in memory. Metadata comes from the
//! consolidated `.zmetadata` (one request); coordinates are read once, here, and kept.
//! Invariant: data variables are little-endian float32 whose dimensions all have coordinate
//! arrays; anything else is refused when the store is opened, not when a file is read.

pub mod scope;
pub mod store;
pub mod version;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use zarrs::array::{Array, ArrayMetadata, ArrayMetadataV2, ArraySubset};
use zarrs_object_store::object_store::{path::Path, ObjectStore, ObjectStoreExt};
use zarrs_object_store::AsyncObjectStore;

pub use scope::{
    Coordinate, Scope, ScopeError, ScopeProblem, TimeEncoding, TimeUnitsError, Variable,
};
use store::{open_url, MeteredStore};
pub use store::{SourceMetrics, SourceOptions};
pub use version::{Freshness, StoreVersion};

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
        why: UrlProblem,
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
        why: LayoutProblem,
    },
    /// zarrs refused an array or could not read a coordinate.
    #[error("source {url}: array {array}: {why}")]
    Array {
        /// The source URL.
        url: String,
        /// The array name.
        array: String,
        /// What is wrong with it.
        why: ArrayProblem,
    },
}

/// Why a source URL names no store this program opens.
#[derive(Debug, thiserror::Error)]
pub enum UrlProblem {
    /// `s3://` without a bucket.
    #[error("no bucket name after s3://")]
    NoBucket,
    /// A scheme other than gs, s3, http(s) and file.
    #[error("unsupported scheme; use gs://, s3://, http(s)://, file:// or a path")]
    Scheme,
    /// A local path that does not exist.
    #[error("no such directory")]
    NoSuchDirectory,
    /// A local path that is not a directory.
    #[error("not a directory")]
    NotADirectory,
    /// A local path through a file.
    #[error("not a directory: a component of the path is a file")]
    ThroughAFile,
    /// A local path this user may not reach.
    #[error("permission denied (a directory on the way to it may not be searched by this user)")]
    PermissionDenied,
    /// Another error of the local path (in the message, not also a `source()`).
    #[error("{0}")]
    Io(std::io::Error),
    /// The store's client refused the URL or its settings (in the message, not also a
    /// `source()`).
    #[error("{0}")]
    Store(zarrs_object_store::object_store::Error),
}

/// Why a store's metadata is not what this program reads.
#[derive(Debug, thiserror::Error)]
pub enum LayoutProblem {
    /// `.zmetadata` is not JSON (the parser's error in the message, not also a `source()`).
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// `.zmetadata` has no `metadata` object.
    #[error("no `metadata` object (not consolidated Zarr v2)")]
    NotConsolidated,
    /// An array's `.zattrs` has no `_ARRAY_DIMENSIONS`.
    #[error("no _ARRAY_DIMENSIONS attribute")]
    NoDimensions,
    /// Its `_ARRAY_DIMENSIONS` is not a list of names.
    #[error("_ARRAY_DIMENSIONS is not a list of names")]
    DimensionsNotNames,
    /// An array's `.zarray` is not Zarr v2 array metadata (in the message, not a `source()`).
    #[error("not Zarr v2 array metadata: {0}")]
    NotZarrV2(serde_json::Error),
    /// A data variable is not float32 (its dtype as `.zarray` writes it).
    #[error("data variables must be float32 (<f4), found {0}")]
    NotFloat32(String),
    /// The arrays do not make a scope.
    #[error("{0}")]
    Scope(ScopeProblem),
}

/// Why an array could not be opened or a coordinate read.
#[derive(Debug, thiserror::Error)]
pub enum ArrayProblem {
    /// zarrs refused the array's metadata (in the message, not also a `source()`).
    #[error("{0}")]
    Open(Box<zarrs::array::ArrayCreateError>),
    /// zarrs could not read the coordinate's values (in the message, not also a `source()`).
    #[error("{0}")]
    Read(Box<zarrs::array::ArrayError>),
    /// A coordinate of a data type other than float32/64 and int32/64 (as `.zarray` writes it).
    #[error("unsupported coordinate dtype {0}")]
    Dtype(String),
    /// A coordinate value is NaN.
    #[error("coordinate holds NaN (an absent chunk?)")]
    NaN,
    /// The values neither only increase nor only decrease.
    #[error("coordinate values are not strictly monotonic")]
    NotMonotonic,
    /// `time` is not increasing integers.
    #[error("time must be increasing integers")]
    TimeNotIncreasingIntegers,
    /// `time` has no `units` attribute.
    #[error("time has no units attribute")]
    NoTimeUnits,
    /// `time`'s units or calendar are not read here.
    #[error("{0}")]
    TimeUnits(TimeUnitsError),
}

fn read_message(url: &str, key: &str, error: &zarrs_object_store::object_store::Error) -> String {
    let cause = store::describe_error(error);
    if store::is_unreachable(error) {
        format!("cannot reach the source {url}: {cause}")
    } else {
        format!("source {url}: cannot read {key}: {cause}")
    }
}

/// An opened source: its [`Scope`] (what it holds) and its reader (the store, the opened
/// arrays, the counters of what was read).
pub struct Source {
    /// What the store holds.
    pub scope: Scope,
    /// The opened zarrs array of each data variable.
    arrays: BTreeMap<String, Arc<ZarrArray>>,
    /// What has been read from the store so far.
    pub metrics: Arc<SourceMetrics>,
    /// The store itself (metered), for direct byte-range reads of chunks.
    pub store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("scope", &self.scope)
            .field("arrays", &self.arrays.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One array of `.zmetadata`, as its `.zarray` and `.zattrs` describe it.
struct ArrayEntry {
    name: String,
    meta: ArrayMetadataV2,
    /// `_ARRAY_DIMENSIONS`.
    dims: Vec<String>,
    /// The other attributes.
    attributes: Map<String, Value>,
    fill_value: Option<f32>,
    /// Plain Blosc over little-endian float32 in C order: readable block by block.
    blosc_blocks: bool,
    separator: String,
}

impl ArrayEntry {
    /// The entry of array `name` (`zarray` its `.zarray`), its attributes from `entries`.
    fn parse(
        name: &str,
        zarray: &Value,
        entries: &Map<String, Value>,
    ) -> Result<ArrayEntry, LayoutProblem> {
        let mut attributes = entries
            .get(&format!("{name}/.zattrs"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let dims: Vec<String> = match attributes.remove("_ARRAY_DIMENSIONS") {
            Some(Value::Array(d)) => d
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or(LayoutProblem::DimensionsNotNames)?,
            _ => return Err(LayoutProblem::NoDimensions),
        };
        let meta: ArrayMetadataV2 =
            serde_json::from_value(zarray.clone()).map_err(LayoutProblem::NotZarrV2)?;
        let text = |key: &str| zarray.get(key).and_then(Value::as_str);
        let blosc_blocks = zarray
            .get("compressor")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
            == Some("blosc")
            && zarray.get("filters").is_none_or(Value::is_null)
            && text("order") == Some("C")
            && text("dtype") == Some("<f4");
        let fill_value = match zarray.get("fill_value") {
            Some(Value::String(s)) if s == "NaN" => Some(f32::NAN),
            Some(Value::Number(n)) => n.as_f64().map(|x| x as f32),
            _ => None,
        };
        Ok(ArrayEntry {
            name: name.to_string(),
            separator: text("dimension_separator").unwrap_or(".").to_string(),
            meta,
            dims,
            attributes,
            fill_value,
            blosc_blocks,
        })
    }

    /// The data type as `.zarray` writes it (`<f4`, `<i8`, …).
    fn dtype(&self) -> String {
        serde_json::to_value(&self.meta.dtype)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// A coordinate is a 1-D array named after its own dimension.
    fn is_coordinate(&self) -> bool {
        self.dims.len() == 1 && self.dims[0] == self.name
    }
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

    /// Opens a source over an already-built store (tests wrap stores to inject faults), in
    /// four steps: the consolidated metadata, its arrays, the coordinates' values, the scope
    /// checked.
    pub async fn open_store(url: &str, inner: Arc<dyn ObjectStore>) -> Result<Source, SourceError> {
        let layout = |key: &str, why: LayoutProblem| SourceError::Layout {
            url: url.to_string(),
            key: key.to_string(),
            why,
        };
        let metrics = Arc::new(SourceMetrics::default());
        let store: Arc<dyn ObjectStore> = Arc::new(MeteredStore::new(inner, metrics.clone()));
        let consolidated = read_zmetadata(store.as_ref(), url).await?;
        let entries = consolidated
            .get("metadata")
            .and_then(Value::as_object)
            .ok_or_else(|| layout(".zmetadata", LayoutProblem::NotConsolidated))?;
        let attributes = entries
            .get(".zattrs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let zarr: Arc<ZarrStore> = Arc::new(AsyncObjectStore::new(store.clone()));
        let opened = open_arrays(url, entries, &zarr)?;
        let (variables, arrays) = (opened.variables, opened.arrays);
        let coordinates = read_coordinates(url, opened.coordinates).await?;
        let scope = Scope::new(url, attributes, coordinates, variables)
            .map_err(|e| layout(&e.array, LayoutProblem::Scope(e.why)))?;
        Ok(Source {
            scope,
            arrays,
            metrics,
            store,
        })
    }

    /// The opened array of data variable `name`.
    pub fn array(&self, name: &str) -> Option<&Arc<ZarrArray>> {
        self.arrays.get(name)
    }

    /// Reads the store's root attributes again (`.zmetadata`) and records its version;
    /// `true` if `last_updated` or `valid_time_stop` changed. Variables and coordinates are
    /// not read again (ARCO-ERA5's time axis is laid out to 2050 ahead; a store that changes
    /// its arrays needs a remount).
    pub async fn refresh_version(&self) -> Result<bool, SourceError> {
        let consolidated = read_zmetadata(self.store.as_ref(), &self.scope.url).await?;
        let attributes = consolidated
            .get("metadata")
            .and_then(|m| m.get(".zattrs"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(self.scope.freshness.update(StoreVersion::of(&attributes)))
    }
}

/// The arrays of a store, opened: data variables and coordinates apart.
struct OpenedArrays {
    /// Data variables by name.
    variables: BTreeMap<String, Variable>,
    /// Their opened arrays.
    arrays: BTreeMap<String, Arc<ZarrArray>>,
    /// Coordinate arrays, their values still to read.
    coordinates: Vec<CoordinateArray>,
}

/// A coordinate array opened, its values not read yet.
struct CoordinateArray {
    name: String,
    /// As `.zarray` writes it (`<i8`, `<f4`, …).
    dtype: String,
    attributes: Map<String, Value>,
    array: ZarrArray,
}

/// Opens every top-level array of `.zmetadata`'s `entries` over `zarr`: data variables
/// (float32 only) and coordinates apart.
fn open_arrays(
    url: &str,
    entries: &Map<String, Value>,
    zarr: &Arc<ZarrStore>,
) -> Result<OpenedArrays, SourceError> {
    let layout = |key: &str, why: LayoutProblem| SourceError::Layout {
        url: url.to_string(),
        key: key.to_string(),
        why,
    };
    let mut opened = OpenedArrays {
        variables: BTreeMap::new(),
        arrays: BTreeMap::new(),
        coordinates: Vec::new(),
    };
    for (key, zarray) in entries {
        // Nested groups are not part of this layout.
        let Some(name) = key.strip_suffix("/.zarray").filter(|n| !n.contains('/')) else {
            continue;
        };
        let entry = ArrayEntry::parse(name, zarray, entries).map_err(|why| layout(key, why))?;
        let dtype = entry.dtype();
        let array = ZarrArray::new_with_metadata(
            zarr.clone(),
            &format!("/{name}"),
            ArrayMetadata::V2(entry.meta.clone()),
        )
        .map_err(|e| SourceError::Array {
            url: url.to_string(),
            array: name.to_string(),
            why: ArrayProblem::Open(Box::new(e)),
        })?;
        if entry.is_coordinate() {
            opened.coordinates.push(CoordinateArray {
                name: entry.name,
                dtype,
                attributes: entry.attributes,
                array,
            });
            continue;
        }
        if dtype != "<f4" {
            return Err(layout(name, LayoutProblem::NotFloat32(dtype)));
        }
        let variable = Variable {
            name: entry.name,
            dims: entry.dims,
            shape: entry.meta.shape.clone(),
            chunks: entry.meta.chunks.iter().map(|c| c.get()).collect(),
            attributes: entry.attributes,
            fill_value: entry.fill_value,
            blosc_blocks: entry.blosc_blocks,
            separator: entry.separator,
        };
        opened.arrays.insert(name.to_string(), Arc::new(array));
        opened.variables.insert(name.to_string(), variable);
    }
    Ok(opened)
}

/// Reads every coordinate at once, each with all its chunks in flight: over a distant store
/// the start costs a few round trips, not one per chunk (ARCO-ERA5's time has 20 chunks).
async fn read_coordinates(
    url: &str,
    arrays: Vec<CoordinateArray>,
) -> Result<BTreeMap<String, Coordinate>, SourceError> {
    let reads = arrays
        .iter()
        .map(|c| read_coordinate(url, &c.name, &c.dtype, c.attributes.clone(), &c.array));
    let values = futures::future::try_join_all(reads).await?;
    Ok(arrays.into_iter().map(|c| c.name).zip(values).collect())
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
        why: LayoutProblem::NotJson(e),
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
    let err = |why: ArrayProblem| SourceError::Array {
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
                .map_err(|e| err(ArrayProblem::Read(Box::new(e))))?
                .into_iter()
                .map(f64::from)
                .collect(),
            false,
        ),
        "<f8" => (
            all_values::<f64>(array, &opts)
                .await
                .map_err(|e| err(ArrayProblem::Read(Box::new(e))))?,
            false,
        ),
        "<i8" => (
            all_values::<i64>(array, &opts)
                .await
                .map_err(|e| err(ArrayProblem::Read(Box::new(e))))?
                .into_iter()
                .map(|x| x as f64)
                .collect(),
            true,
        ),
        "<i4" => (
            all_values::<i32>(array, &opts)
                .await
                .map_err(|e| err(ArrayProblem::Read(Box::new(e))))?
                .into_iter()
                .map(f64::from)
                .collect(),
            true,
        ),
        other => return Err(err(ArrayProblem::Dtype(other.to_string()))),
    };
    if values.iter().any(|v| v.is_nan()) {
        return Err(err(ArrayProblem::NaN));
    }
    let increasing = values.windows(2).all(|w| w[0] < w[1]);
    let decreasing = values.windows(2).all(|w| w[0] > w[1]);
    if !increasing && !decreasing {
        return Err(err(ArrayProblem::NotMonotonic));
    }
    let time = if name == "time" {
        if !integer || !increasing {
            return Err(err(ArrayProblem::TimeNotIncreasingIntegers));
        }
        let units = attributes
            .get("units")
            .and_then(Value::as_str)
            .ok_or_else(|| err(ArrayProblem::NoTimeUnits))?;
        let calendar = attributes.get("calendar").and_then(Value::as_str);
        Some(TimeEncoding::parse(units, calendar).map_err(|e| err(ArrayProblem::TimeUnits(e)))?)
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
