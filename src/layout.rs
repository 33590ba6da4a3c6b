//! The NetCDF layout of one file: dimensions, variables, attributes, coordinate values, and the
//! exact size of the encoded file, all known before any data chunk is fetched.
//!
//! Input: what [`crate::plan`] resolved. Output: a [`Layout`] that [`crate::encode`] writes
//! verbatim. Invariant: a layout is a pure function of the deskriptor, the source's metadata
//! and the format version; it carries no wall-clock time, so equal inputs give equal bytes.
//!
//! The size of a classic (CDF-2, 64-bit offset) file follows from the schema alone:
//! header + Σ padded sizes of the non-record variables + time steps × record size.
//! [`Layout::classic_size`] computes it; a test checks it against what libnetcdf writes.
//!
//! In classic files `time` is the record (UNLIMITED) dimension, as in CDS's files: every
//! variable with `time` first is a record variable, and the data section is the non-record
//! variables, then one record per time step holding each record variable's slice for that
//! step, in definition order ([`Layout::classic_placement`]). NetCDF-4 files keep `time` fixed.

use serde_json::{Map, Value};

/// The on-disk format of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// NetCDF classic, 64-bit offset (CDF-2): read by every NetCDF reader, size by formula.
    Classic64,
    /// NetCDF-4 (HDF5), contiguous and uncompressed: also read by h5netcdf/h5py.
    Netcdf4,
}

impl Format {
    /// The name used on the command line and in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Classic64 => "cdf2",
            Format::Netcdf4 => "netcdf4",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cdf2" | "classic" | "64bit-offset" | "netcdf3" => Ok(Format::Classic64),
            "netcdf4" | "nc4" => Ok(Format::Netcdf4),
            _ => Err(format!(
                "unknown format {s:?}; allowed: cdf2 (NetCDF classic 64-bit offset, default), netcdf4"
            )),
        }
    }
}

/// A NetCDF external type used by this program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcType {
    /// 32-bit signed integer (`NC_INT`).
    Int,
    /// 32-bit float (`NC_FLOAT`).
    Float,
    /// 64-bit float (`NC_DOUBLE`).
    Double,
    /// Text, one byte per element (`NC_CHAR`): station names.
    Char,
}

impl NcType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            NcType::Char => 1,
            NcType::Int | NcType::Float => 4,
            NcType::Double => 8,
        }
    }
}

/// An attribute value in one of the types classic NetCDF can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text (`NC_CHAR`).
    Text(String),
    /// 32-bit integers.
    Ints(Vec<i32>),
    /// 32-bit floats (used for `_FillValue` of float variables).
    Floats(Vec<f32>),
    /// 64-bit floats.
    Doubles(Vec<f64>),
}

impl AttrValue {
    /// Number of elements and bytes per element, as written in a classic header.
    fn classic_shape(&self) -> (u64, u64) {
        match self {
            AttrValue::Text(s) => (s.len() as u64, 1),
            AttrValue::Ints(v) => (v.len() as u64, 4),
            AttrValue::Floats(v) => (v.len() as u64, 4),
            AttrValue::Doubles(v) => (v.len() as u64, 8),
        }
    }

    /// Converts a Zarr attribute (JSON) to a NetCDF attribute; `None` for values that have no
    /// NetCDF form (null, objects, empty lists).
    pub fn from_json(value: &Value) -> Option<AttrValue> {
        let int = |v: &Value| v.as_i64().and_then(|i| i32::try_from(i).ok());
        match value {
            Value::String(s) => Some(AttrValue::Text(s.clone())),
            Value::Bool(b) => Some(AttrValue::Ints(vec![i32::from(*b)])),
            Value::Number(_) => match int(value) {
                Some(i) => Some(AttrValue::Ints(vec![i])),
                None => value.as_f64().map(|x| AttrValue::Doubles(vec![x])),
            },
            Value::Array(items) if !items.is_empty() => {
                if items.iter().all(|v| int(v).is_some()) {
                    Some(AttrValue::Ints(items.iter().filter_map(int).collect()))
                } else if items.iter().all(Value::is_number) {
                    Some(AttrValue::Doubles(
                        items.iter().filter_map(Value::as_f64).collect(),
                    ))
                } else if items.iter().all(Value::is_string) {
                    Some(AttrValue::Text(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "),
                    ))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// Source `units` strings that UDUNITS (the library CF tools read units with) cannot parse or
/// reads as something else, and their UDUNITS spelling. ARCO-ERA5's level carries
/// `Hectopascal(hPa)`, which UDUNITS reads as hPa × hPa; ERA5's fractions and counts carry
/// `(0 - 1)`, `~` or `Proportion`.
pub const UNIT_SPELLINGS: &[(&str, &str)] = &[
    ("Hectopascal(hPa)", "hPa"),
    ("(0 - 1)", "1"),
    ("~", "1"),
    ("Proportion", "1"),
    ("dimensionless", "1"),
    ("m of water equivalent", "m"),
    ("gpm", "m"),
];

/// The UDUNITS spelling of a source `units` string ([`UNIT_SPELLINGS`]); other strings as
/// they are.
pub fn udunits_spelling(units: &str) -> &str {
    UNIT_SPELLINGS
        .iter()
        .find(|(source, _)| *source == units)
        .map_or(units, |(_, spelling)| spelling)
}

/// Converts a Zarr attribute map to NetCDF attributes, in the source's order; a `units`
/// text in its UDUNITS spelling ([`udunits_spelling`]).
pub fn attributes_from_json(map: &Map<String, Value>) -> Vec<(String, AttrValue)> {
    map.iter()
        .filter_map(|(k, v)| {
            let value = match AttrValue::from_json(v)? {
                AttrValue::Text(units) if k == "units" => {
                    AttrValue::Text(udunits_spelling(&units).to_string())
                }
                other => other,
            };
            Some((k.clone(), value))
        })
        .collect()
}

/// The attributes a file writes on coordinate variable `dimension`: the store's `stored` ones
/// (converted, in the store's order), then what CF expects on an axis where the store does not
/// say it (cdo, Panoply, cf-xarray key on `standard_name` and `axis`).
pub fn coordinate_attributes(
    dimension: &str,
    stored: &Map<String, Value>,
) -> Vec<(String, AttrValue)> {
    let mut attributes = attributes_from_json(stored);
    for (k, v) in cf_axis_attributes(dimension) {
        if !attributes.iter().any(|(have, _)| have == k) {
            attributes.push((k.to_string(), AttrValue::Text(v.to_string())));
        }
    }
    attributes
}

/// The attributes a file writes on a data variable: `_FillValue` from the array's fill value
/// (`fill_value`), then the store's `stored` ones but their own `_FillValue` and
/// `missing_value`.
pub fn variable_attributes(
    fill_value: Option<f32>,
    stored: &Map<String, Value>,
) -> Vec<(String, AttrValue)> {
    let mut attributes = Vec::new();
    if let Some(fill) = fill_value {
        attributes.push(("_FillValue".to_string(), AttrValue::Floats(vec![fill])));
    }
    attributes.extend(
        attributes_from_json(stored)
            .into_iter()
            .filter(|(k, _)| k != "_FillValue" && k != "missing_value"),
    );
    attributes
}

/// A SHA-256 digest of attributes as written: every name, type and value (floats by their
/// bits), each length-prefixed, so two lists digest alike only when they are equal.
pub fn attributes_digest(attributes: &[(String, AttrValue)]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let len = |h: &mut Sha256, n: usize| h.update((n as u64).to_le_bytes());
    len(&mut h, attributes.len());
    for (name, value) in attributes {
        len(&mut h, name.len());
        h.update(name.as_bytes());
        match value {
            AttrValue::Text(t) => {
                h.update(b"t");
                len(&mut h, t.len());
                h.update(t.as_bytes());
            }
            AttrValue::Ints(v) => {
                h.update(b"i");
                len(&mut h, v.len());
                v.iter().for_each(|x| h.update(x.to_le_bytes()));
            }
            AttrValue::Floats(v) => {
                h.update(b"f");
                len(&mut h, v.len());
                v.iter().for_each(|x| h.update(x.to_bits().to_le_bytes()));
            }
            AttrValue::Doubles(v) => {
                h.update(b"d");
                len(&mut h, v.len());
                v.iter().for_each(|x| h.update(x.to_bits().to_le_bytes()));
            }
        }
    }
    h.finalize().into()
}

/// What CF expects on a coordinate that tools recognise as an axis; added where the store
/// does not say it. ERA5's levels are pressure levels in hPa, counted downwards.
fn cf_axis_attributes(dimension: &str) -> &'static [(&'static str, &'static str)] {
    match dimension {
        "time" => &[("standard_name", "time"), ("axis", "T")],
        "latitude" => &[
            ("standard_name", "latitude"),
            ("units", "degrees_north"),
            ("axis", "Y"),
        ],
        "longitude" => &[
            ("standard_name", "longitude"),
            ("units", "degrees_east"),
            ("axis", "X"),
        ],
        "level" => &[
            ("standard_name", "air_pressure"),
            ("units", "hPa"),
            ("positive", "down"),
            ("axis", "Z"),
        ],
        _ => &[],
    }
}

/// Values of a variable known before the data (coordinates, bounds, station names), as
/// written, in C order of the variable's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum CoordValues {
    /// Integer coordinates (time in stored units, level, time bounds).
    Ints(Vec<i32>),
    /// Float coordinates (latitude, longitude).
    Floats(Vec<f32>),
    /// Double values (a station's position as given).
    Doubles(Vec<f64>),
    /// Text, one byte per element, each row padded with NUL (station names).
    Chars(Vec<u8>),
}

impl CoordValues {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            CoordValues::Ints(v) => v.len(),
            CoordValues::Floats(v) => v.len(),
            CoordValues::Doubles(v) => v.len(),
            CoordValues::Chars(v) => v.len(),
        }
    }

    /// The big-endian bytes of the values `range` (element positions), as a classic file
    /// holds them, unpadded.
    pub fn be_bytes(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        match self {
            CoordValues::Ints(x) => x[range].iter().flat_map(|e| e.to_be_bytes()).collect(),
            CoordValues::Floats(x) => x[range].iter().flat_map(|e| e.to_be_bytes()).collect(),
            CoordValues::Doubles(x) => x[range].iter().flat_map(|e| e.to_be_bytes()).collect(),
            CoordValues::Chars(x) => x[range].to_vec(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One NetCDF variable.
#[derive(Debug, Clone, PartialEq)]
pub struct NcVariable {
    /// Variable name.
    pub name: String,
    /// Dimension indices into [`Layout::dims`].
    pub dims: Vec<usize>,
    /// External type.
    pub nc_type: NcType,
    /// Attributes in write order.
    pub attributes: Vec<(String, AttrValue)>,
    /// For coordinate variables: their values (data variables are filled by the flow).
    pub values: Option<CoordValues>,
}

/// The complete schema of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Dimensions: name and length, in definition order.
    pub dims: Vec<(String, usize)>,
    /// Variables in definition order: coordinates first, then data variables.
    pub variables: Vec<NcVariable>,
    /// Global attributes.
    pub attributes: Vec<(String, AttrValue)>,
    /// How a classic file places its bytes (see [`ClassicShape`]).
    pub classic: ClassicShape,
}

/// How a classic file places its bytes: two shapes, chosen by the plan from the file's size
/// (`crate::plan`, "files served by their parts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicShape {
    /// `time` is the record (UNLIMITED) dimension, as in CDS's files: what NCO's `ncrcat`
    /// and `ncra` need. Its values then lie between the data of every hour.
    pub time_records: bool,
    /// The data (the first data variable, or the records) starts at this offset at least:
    /// the bytes between the coordinates and it are zeros. Readers read the start of a file
    /// when they open it (libnetcdf reads its first 4 MiB and probes powers of two): with the
    /// data starting past that, opening a file served by its parts reads no data.
    pub data_begin: u64,
}

/// Classic files of at least this size take the shape of files served by their parts (see
/// [`Layout::in_classic_shape`]); smaller ones are built whole at their first read.
pub const PARTS_FROM: u64 = 32 << 20;

/// Where the data of a file served by its parts starts: past the 4 MiB libnetcdf reads when
/// it opens a file, past the kernel's read-ahead after it, and not at a power of two (which
/// libnetcdf probes for an HDF5 signature), so that opening the file reads no data.
pub const PARTS_DATA_BEGIN: u64 = 5 << 20;

/// The largest fixed-size variable CDF-2 holds (its `vsize` is 32 bits).
const CDF2_MAX_VSIZE: u64 = (1 << 32) - 4;

impl Default for ClassicShape {
    /// Time as the record dimension, data right after the coordinates.
    fn default() -> Self {
        Self {
            time_records: true,
            data_begin: 0,
        }
    }
}

fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

fn name_size(name: &str) -> u64 {
    4 + pad4(name.len() as u64)
}

fn attr_list_size(attrs: &[(String, AttrValue)]) -> u64 {
    // ABSENT is two zero words; a list is a tag word, a count, then the attributes.
    8 + attrs
        .iter()
        .map(|(name, value)| {
            let (n, each) = value.classic_shape();
            name_size(name) + 4 + 4 + pad4(n * each)
        })
        .sum::<u64>()
}

/// The name of the dimension that is the record (UNLIMITED) dimension of classic files.
pub const RECORD_DIMENSION: &str = "time";

/// Where a variable's bytes are in a classic file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// True for a record variable (its first dimension is the record dimension).
    pub record: bool,
    /// The `vsize` of the header: the variable's bytes padded to 4 (for a record variable,
    /// those of one record's slice).
    pub vsize: u64,
    /// The `begin` of the header: the offset of the variable's bytes (for a record variable,
    /// of its slice in the first record).
    pub begin: u64,
}

/// The byte layout of a classic file's data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicPlacement {
    /// One placement per variable, in definition order.
    pub variables: Vec<Placement>,
    /// Offset of the first record (the end of the non-record variables).
    pub begin_records: u64,
    /// Bytes per record: the sum of the record variables' `vsize`, but unpadded when there is
    /// exactly one record variable (the CDF-1/2 specification's special case, as libnetcdf).
    pub record_size: u64,
    /// Number of records (`numrecs` of the header): the record dimension's length, 0 without
    /// a record variable.
    pub records: u64,
}

impl Layout {
    /// The record dimension of the classic file: the dimension [`RECORD_DIMENSION`], if every
    /// variable that uses it has it first (classic NetCDF allows a record dimension only
    /// there); `None` otherwise, and the file is then all fixed-size.
    pub fn record_dim(&self) -> Option<usize> {
        if !self.classic.time_records {
            return None;
        }
        let d = self
            .dims
            .iter()
            .position(|(name, _)| name == RECORD_DIMENSION)?;
        self.variables
            .iter()
            .all(|v| !v.dims.contains(&d) || v.dims.first() == Some(&d))
            .then_some(d)
    }

    /// Where every variable's bytes are in the classic file, as libnetcdf places them: the
    /// non-record variables one after the other from the end of the header, in definition
    /// order, then the records, each holding the record variables' slices in definition order.
    pub fn classic_placement(&self) -> ClassicPlacement {
        let record_dim = self.record_dim();
        let is_record =
            |v: &NcVariable| record_dim.is_some() && v.dims.first() == record_dim.as_ref();
        let slice_bytes = |v: &NcVariable| {
            let skip = usize::from(is_record(v));
            v.dims[skip.min(v.dims.len())..]
                .iter()
                .map(|&d| self.dims[d].1 as u64)
                .product::<u64>()
                * v.nc_type.size()
        };
        let mut variables = vec![
            Placement {
                record: false,
                vsize: 0,
                begin: 0
            };
            self.variables.len()
        ];
        let mut offset = self.classic_header_size();
        let mut data_started = false;
        for (v, p) in self.variables.iter().zip(&mut variables) {
            if !is_record(v) {
                if v.values.is_none() && !data_started {
                    offset = offset.max(self.classic.data_begin);
                    data_started = true;
                }
                *p = Placement {
                    record: false,
                    vsize: pad4(slice_bytes(v)),
                    begin: offset,
                };
                offset += p.vsize;
            }
        }
        if !data_started && self.variables.iter().any(is_record) {
            offset = offset.max(self.classic.data_begin);
        }
        let begin_records = offset;
        let mut record_size = 0;
        let mut record_vars = 0;
        let mut last_unpadded = 0;
        for (v, p) in self.variables.iter().zip(&mut variables) {
            if is_record(v) {
                last_unpadded = slice_bytes(v);
                *p = Placement {
                    record: true,
                    vsize: pad4(last_unpadded),
                    begin: offset,
                };
                offset += p.vsize;
                record_size += p.vsize;
                record_vars += 1;
            }
        }
        if record_vars == 1 {
            record_size = last_unpadded;
        }
        ClassicPlacement {
            variables,
            begin_records,
            record_size,
            // libnetcdf counts records as they are written: none without a record variable.
            records: match record_dim {
                Some(d) if record_vars > 0 => self.dims[d].1 as u64,
                _ => 0,
            },
        }
    }

    /// This layout in the shape its classic file takes: time the record dimension, data
    /// right after the coordinates, for files under [`PARTS_FROM`] (CDS's layout, what NCO's
    /// record tools need); for larger files, served by their parts, time fixed — so that its
    /// values lie with the other coordinates at the start, and a reader that loads them when
    /// it opens the file (xarray, cdo) reads no data, where in records they would lie between
    /// the data of every hour — and the data from [`PARTS_DATA_BEGIN`]. Time stays the
    /// record dimension where a data variable would be too large for a fixed one in CDF-2.
    pub fn in_classic_shape(mut self) -> Layout {
        self.classic = ClassicShape::default();
        if self.classic_size() < PARTS_FROM {
            return self;
        }
        let fits_fixed = self
            .variables
            .iter()
            .filter(|v| v.values.is_none())
            .all(|v| self.elements(v) * v.nc_type.size() <= CDF2_MAX_VSIZE);
        self.classic = ClassicShape {
            time_records: !fits_fixed,
            data_begin: PARTS_DATA_BEGIN,
        };
        self
    }

    /// For each variable, its place among the data variables (those without values): what
    /// the data arrays of a build are indexed by.
    pub fn data_index(&self) -> Vec<Option<usize>> {
        let mut n = 0;
        self.variables
            .iter()
            .map(|v| {
                v.values.is_none().then(|| {
                    n += 1;
                    n - 1
                })
            })
            .collect()
    }

    /// Elements in variable `v`.
    pub fn elements(&self, v: &NcVariable) -> u64 {
        v.dims.iter().map(|&d| self.dims[d].1 as u64).product()
    }

    /// Size in bytes of the classic header (magic, numrecs, dimension, attribute and variable
    /// lists, with 8-byte variable offsets as in CDF-2).
    pub fn classic_header_size(&self) -> u64 {
        let dims = 8 + self
            .dims
            .iter()
            .map(|(name, _)| name_size(name) + 4)
            .sum::<u64>();
        let vars = 8 + self
            .variables
            .iter()
            .map(|v| {
                name_size(&v.name)
                    + 4
                    + 4 * v.dims.len() as u64
                    + attr_list_size(&v.attributes)
                    + 4 // nc_type
                    + 4 // vsize
                    + 8 // begin (64-bit offset)
            })
            .sum::<u64>();
        4 + 4 + dims + attr_list_size(&self.attributes) + vars
    }

    /// Exact size of the CDF-2 file: header, the non-record variables padded to 4 bytes,
    /// then one record per time step ([`Layout::classic_placement`]).
    pub fn classic_size(&self) -> u64 {
        let p = self.classic_placement();
        p.begin_records + p.records * p.record_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_udunits_cannot_parse_are_written_in_its_spelling() {
        let stored: Map<String, Value> =
            serde_json::from_str(r#"{"units": "Hectopascal(hPa)", "long_name": "pressure level"}"#)
                .unwrap();
        let written = coordinate_attributes("level", &stored);
        assert_eq!(written[0], ("units".into(), AttrValue::Text("hPa".into())));
        assert_eq!(
            written[1],
            ("long_name".into(), AttrValue::Text("pressure level".into()))
        );
        let stored: Map<String, Value> =
            serde_json::from_str(r#"{"units": "(0 - 1)", "note": "~"}"#).unwrap();
        let written = variable_attributes(None, &stored);
        assert_eq!(written[0], ("units".into(), AttrValue::Text("1".into())));
        assert_eq!(written[1], ("note".into(), AttrValue::Text("~".into())));
        assert_eq!(udunits_spelling("m s**-1"), "m s**-1");
    }

    #[test]
    fn attributes_map_to_classic_types() {
        assert_eq!(
            AttrValue::from_json(&Value::from("K")),
            Some(AttrValue::Text("K".into()))
        );
        assert_eq!(
            AttrValue::from_json(&Value::from(3)),
            Some(AttrValue::Ints(vec![3]))
        );
        assert_eq!(
            AttrValue::from_json(&Value::from(5_000_000_000i64)),
            Some(AttrValue::Doubles(vec![5e9]))
        );
        assert_eq!(
            AttrValue::from_json(&serde_json::json!([1, 2.5])),
            Some(AttrValue::Doubles(vec![1.0, 2.5]))
        );
        assert_eq!(AttrValue::from_json(&Value::Null), None);
    }

    #[test]
    fn files_served_by_parts_take_time_fixed_and_the_data_further_on() {
        use crate::encode::tests::sample;
        // 24 hours of a 3×5 box: small, CDS's shape.
        let small = sample(24, 3, 5, 1, None).in_classic_shape();
        assert_eq!(small.classic, ClassicShape::default());
        assert!(small.record_dim().is_some());
        // 720 hours of the globe: time fixed, data past the first 5 MiB.
        let big = sample(720, 721, 1440, 1, None).in_classic_shape();
        assert!(big.classic_size() >= PARTS_FROM);
        assert_eq!(
            big.classic,
            ClassicShape {
                time_records: false,
                data_begin: PARTS_DATA_BEGIN
            }
        );
        assert!(big.record_dim().is_none());
        let p = big.classic_placement();
        let first_data = big
            .variables
            .iter()
            .position(|v| v.values.is_none())
            .unwrap();
        assert_eq!(p.variables[first_data].begin, PARTS_DATA_BEGIN);
        assert!(p.variables[..first_data]
            .iter()
            .all(|c| c.begin + c.vsize < 64 * 1024));
        // A variable over 4 GiB cannot be fixed in CDF-2: records, data further on.
        let huge = sample(1200, 721, 1440, 1, None).in_classic_shape();
        assert!(huge.classic.time_records);
        assert_eq!(huge.classic_placement().begin_records, PARTS_DATA_BEGIN);
    }

    #[test]
    fn header_size_by_hand() {
        // One dimension "x"(3), one int variable "x" with no attributes, no globals.
        let layout = Layout {
            dims: vec![("x".into(), 3)],
            variables: vec![NcVariable {
                name: "x".into(),
                dims: vec![0],
                nc_type: NcType::Int,
                attributes: vec![],
                values: Some(CoordValues::Ints(vec![1, 2, 3])),
            }],
            attributes: vec![],
            classic: Default::default(),
        };
        // magic 4 + numrecs 4 + dims (8 + name 8 + len 4) + gatts 8
        // + vars (8 + name 8 + ndims 4 + dimid 4 + vatts 8 + type 4 + vsize 4 + begin 8)
        assert_eq!(layout.classic_header_size(), 4 + 4 + 20 + 8 + 48);
        assert_eq!(layout.classic_size(), 84 + 12);
    }

    #[test]
    fn record_variables_are_laid_out_after_the_fixed_ones_one_record_per_time_step() {
        let var = |name: &str, dims: Vec<usize>, values| NcVariable {
            name: name.into(),
            dims,
            nc_type: NcType::Int,
            attributes: vec![],
            values,
        };
        // time(2) is the record dimension; t(time) and v(time, x) are record variables.
        let layout = Layout {
            dims: vec![("time".into(), 2), ("x".into(), 3)],
            variables: vec![
                var("time", vec![0], Some(CoordValues::Ints(vec![5, 6]))),
                var("x", vec![1], Some(CoordValues::Ints(vec![1, 2, 3]))),
                var("v", vec![0, 1], None),
            ],
            attributes: vec![],
            classic: Default::default(),
        };
        let h = layout.classic_header_size();
        let p = layout.classic_placement();
        let at = |record, vsize, begin| Placement {
            record,
            vsize,
            begin,
        };
        assert_eq!(
            p.variables,
            [at(true, 4, h + 12), at(false, 12, h), at(true, 12, h + 16)]
        );
        assert_eq!((p.begin_records, p.record_size, p.records), (h + 12, 16, 2));
        assert_eq!(layout.classic_size(), h + 12 + 2 * 16);
        // Time anywhere but first in a variable: no record dimension, all fixed.
        let mut fixed = layout.clone();
        fixed.variables[2].dims = vec![1, 0];
        assert_eq!(fixed.record_dim(), None);
        assert_eq!(fixed.classic_placement().records, 0);
        assert_eq!(fixed.classic_size(), h + 8 + 12 + 24);
    }
}
