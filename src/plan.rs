//! Plans one file: a deskriptor resolved against the scope.
//!
//! Input: a [`Deskriptor`] and a source's [`Scope`] (metadata only). Output: a [`Plan`] with
//! the positions to read along every dimension, the chunks that hold them, the file's
//! [`Layout`], its name, its identity and its exact size. No data is read here, only metadata already in memory (plus a
//! millisecond template file for the NetCDF-4 size). Invariant: `plan.size` is the exact length
//! of the file [`crate::encode`] writes for this plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, Timelike};
use sha2::{Digest, Sha256};

use crate::deskriptor::{check_file_name, Deskriptor, DeskriptorError};
use crate::encode;
use crate::layout::{
    attributes_digest, coordinate_attributes, variable_attributes, AttrValue, ClassicShape,
    CoordValues, Format, Layout, NcType, NcVariable,
};
use crate::naming::NameLayout;
use crate::provenance::Provenance;
use crate::select::{self, Resolved};
use crate::source::Scope;

mod entry;
mod memo;
pub mod representation;
pub use entry::{first_time, Entry};
pub use memo::PlanMemo;
pub use representation::{Periods, Representation, Stations, STATION_DIMENSION};

pub use crate::encode::FORMAT_VERSION;
/// [`FORMAT_VERSION`] as written into identities.
const FORMAT_VERSION_TEXT: &str = "5";

/// Default refusal limit for one file's size (see `--max-file-size`): a guard against
/// mistakes only (1 TiB), since a big file is served by its parts and costs what is read.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 40;

/// Default refusal limit for the source chunks one file reads (see `--max-chunks`): about
/// 11 years of one hourly variable of ARCO-ERA5 (one chunk per hour and variable), or a year
/// of 11 variables. A guard against a forgotten `time` (the whole axis, 1.3 million hours of
/// one variable), not a bound on real requests: past it a file takes minutes of source reads
/// to build, and several smaller files (one per year) serve better.
pub const DEFAULT_MAX_CHUNKS: u64 = 100_000;

/// Options that change what a plan produces.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Output format.
    pub format: Format,
    /// Largest file a deskriptor may produce, in bytes.
    pub max_file_size: u64,
    /// Most source chunks a deskriptor's file may read (one read each).
    pub max_chunks: u64,
    /// Directories of the files of deskriptors without `name` (`--layout`); the layout lives
    /// as long as the process.
    pub layout: Option<&'static NameLayout>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            format: Format::Classic64,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_chunks: DEFAULT_MAX_CHUNKS,
            layout: None,
        }
    }
}

/// One variable to read: its scope dimensions and the file dimensions they map to.
#[derive(Debug, Clone)]
pub struct PlannedVariable {
    /// Source array name.
    pub name: String,
    /// Source dimension names, in storage order.
    pub dims: Vec<String>,
}

/// Everything needed to build one file, decided before any data is read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The deskriptor as parsed.
    pub deskriptor: Deskriptor,
    /// File name, `<name>.nc` or the default name (see [`default_file_name`]).
    pub file_name: String,
    /// Canonical JSON of the selection (written into the file).
    pub canonical: String,
    /// Hex identity: a hash of format version, format, scope URL and canonical selection.
    pub identity: String,
    /// Output format.
    pub format: Format,
    /// Resolved positions for every dimension the file reads, by dimension name: the hours
    /// read, and with `points` the stations' grid rows and columns (the file's own
    /// dimensions are then the layout's).
    pub selections: BTreeMap<String, Resolved>,
    /// What the file shows beyond a subset (`resample`, `points`); `None` for a subset.
    pub representation: Option<Arc<Representation>>,
    /// The data variables in file order.
    pub variables: Vec<PlannedVariable>,
    /// The NetCDF schema.
    pub layout: Layout,
    /// Exact file size in bytes.
    pub size: u64,
    /// What the file's data is made of (final or preliminary hours, the store's version).
    pub provenance: Provenance,
}

/// What a deskriptor resolves to before its NetCDF layout: enough for a catalog entry.
struct Resolution {
    variables: Vec<PlannedVariable>,
    file_dims: Vec<String>,
    selections: BTreeMap<String, Resolved>,
    representation: Option<Arc<Representation>>,
    canonical: String,
    provenance: Provenance,
    identity: String,
    file_name: String,
}

/// What a file's size depends on, beside the fixed attributes of its source: the format, its
/// dimensions and their lengths, its variables, the length of its canonical form (written in
/// the `deskriptor` and `history` attributes; in CDF-2 each padded to 4 bytes, so the exact
/// length counts) and its provenance attributes. Coordinate values and the canonical form's
/// text do not change the size.
fn size_key(key: &mut String, format: Format, r: &Resolution, provenance_key: &str) {
    use std::fmt::Write;
    key.clear();
    let canonical_len = r.canonical.len();
    let number = |key: &mut String, n: usize| {
        let _ = write!(key, "{n}");
    };
    key.push_str(format.as_str());
    key.push('|');
    number(key, canonical_len);
    key.push('|');
    for d in &r.file_dims {
        key.push_str(d);
        key.push('=');
        number(key, r.selections[d].labels.len());
        key.push(';');
    }
    key.push('|');
    for v in &r.variables {
        key.push_str(&v.name);
        key.push(';');
    }
    key.push('|');
    key.push_str(provenance_key);
}

/// The part of [`size_key`] that the provenance attributes make: the header holds each
/// attribute's name, type and length, never a value's size beyond its length (formatting the
/// values cost a tenth of the planning).
fn provenance_key(provenance: &Provenance) -> String {
    use std::fmt::Write;
    let mut key = String::new();
    for (name, value) in provenance.attributes() {
        let (tag, n) = match &value {
            AttrValue::Text(t) => ('t', t.len()),
            AttrValue::Ints(v) => ('i', v.len()),
            AttrValue::Floats(v) => ('f', v.len()),
            AttrValue::Doubles(v) => ('d', v.len()),
        };
        let _ = write!(key, "{name}:{tag}{n};");
    }
    key
}

/// Why a deskriptor could not be planned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    /// The deskriptor does not fit the source or the options: its line's fault, named.
    #[error(transparent)]
    Deskriptor(#[from] DeskriptorError),
    /// The NetCDF-4 size template could not be written (libnetcdf, the temporary directory):
    /// the machine's fault, not the line's.
    #[error("computing the size of a NetCDF-4 file: {0}")]
    Size(Arc<encode::EncodeError>),
}

impl PlanError {
    /// The line's error, when the line is at fault.
    pub fn deskriptor(&self) -> Option<&DeskriptorError> {
        match self {
            PlanError::Deskriptor(e) => Some(e),
            PlanError::Size(_) => None,
        }
    }
}

impl Plan {
    /// Resolves `deskriptor` against `scope`.
    pub fn new(
        deskriptor: &Deskriptor,
        scope: &Scope,
        options: PlanOptions,
    ) -> Result<Plan, PlanError> {
        let line = deskriptor.line;
        let r = resolve(deskriptor, scope, options)?;
        let (layout, size) = layout_and_size(line, scope, &r, options.format)?;
        check_size(line, size, options)?;
        check_chunks(line, scope, &r, options)?;
        Ok(Plan {
            deskriptor: deskriptor.clone(),
            file_name: r.file_name,
            canonical: r.canonical,
            identity: r.identity,
            format: options.format,
            selections: r.selections,
            representation: r.representation,
            variables: r.variables,
            layout,
            size,
            provenance: r.provenance,
        })
    }

    /// The catalog entry of `deskriptor`: the same as [`Entry::of`] over [`Plan::new`], with
    /// the size taken from `memo` when a file of the same shape was planned before (the layout
    /// is then not built; it is when the file is).
    ///
    /// [`Entry::of`]: Entry::of
    pub fn entry(
        deskriptor: &Deskriptor,
        scope: &Scope,
        options: PlanOptions,
        memo: &mut PlanMemo,
    ) -> Result<Entry, PlanError> {
        let r = resolve(deskriptor, scope, options)?;
        let provenance_key = provenance_key(&r.provenance);
        entry_of(
            deskriptor.line,
            &deskriptor.raw,
            r,
            &provenance_key,
            scope,
            options,
            memo,
        )
    }

    /// The catalog entry of one line of a deskriptors file: the same as [`Plan::entry`] over
    /// [`Deskriptor::parse`], but the parts of the line that earlier lines also had (a
    /// selector's text under one key) are parsed, resolved and put in canonical form once
    /// (see [`PlanMemo`]). A line the memo cannot take whole goes the way of
    /// [`Plan::entry`], which also gives every error.
    pub fn entry_of_line(
        line: usize,
        text: &str,
        scope: &Scope,
        options: PlanOptions,
        memo: &mut PlanMemo,
    ) -> Result<Entry, PlanError> {
        if let Some(entry) = memo::entry(line, text, scope, options, memo) {
            return Ok(entry);
        }
        let d = Deskriptor::parse(line, text)?;
        Plan::entry(&d, scope, options, memo)
    }
}

/// The catalog entry of a resolved line, its size from `memo` where it can be.
fn entry_of(
    line: usize,
    raw: &str,
    r: Resolution,
    provenance_key: &str,
    scope: &Scope,
    options: PlanOptions,
    memo: &mut PlanMemo,
) -> Result<Entry, PlanError> {
    let mut key = std::mem::take(&mut memo.size_key);
    size_key(&mut key, options.format, &r, provenance_key);
    // A representation's size depends on more than the shape of the selection (periods,
    // stations, their names): its layout is built each time.
    let known = match r.representation {
        None => memo.sizes.get(key.as_str()).copied(),
        Some(_) => None,
    };
    memo.size_key = key;
    let size = match known {
        Some(size) => {
            // What building the layout would have refused.
            for d in &r.file_dims {
                if scope.coordinates[d].integer {
                    int_labels(d, &r.selections[d].labels)
                        .map_err(|why| DeskriptorError::new(line, "", "", why))?;
                }
            }
            size
        }
        None => {
            let (_, size) = layout_and_size(line, scope, &r, options.format)?;
            if r.representation.is_none() {
                memo.sizes.insert(memo.size_key.clone(), size);
            }
            size
        }
    };
    check_size(line, size, options)?;
    check_chunks(line, scope, &r, options)?;
    Ok(Entry::new(
        line,
        raw,
        &r.file_name,
        &r.identity,
        size,
        first_time(&r.selections),
        r.provenance.mtime(),
        r.provenance.provisional(),
    ))
}

/// The layout of a resolved deskriptor and the exact size of its file in `format`.
fn layout_and_size(
    line: usize,
    scope: &Scope,
    r: &Resolution,
    format: Format,
) -> Result<(Layout, u64), PlanError> {
    let layout = full_layout(scope, r).map_err(|why| DeskriptorError::new(line, "", "", why))?;
    let layout = match format {
        // Built whole at the first read: CDS's shape (time the record dimension) at any size.
        Format::Classic64 if r.representation.is_some() => layout,
        Format::Classic64 => {
            let mut layout = layout.in_classic_shape();
            if layout.classic != ClassicShape::default() {
                // Served by its parts: its header is read before its data, so it cannot
                // count the chunks its data will meet absent; the entry's mark does.
                layout
                    .attributes
                    .retain(|(name, _)| name != ABSENT_CHUNKS_ATTRIBUTE);
            }
            layout
        }
        Format::Netcdf4 => layout,
    };
    let size = match format {
        Format::Classic64 => layout.classic_size(),
        Format::Netcdf4 => {
            encode::netcdf4_size(&layout).map_err(|e| PlanError::Size(Arc::new(e)))?
        }
    };
    Ok((layout, size))
}

/// Refuses a file larger than the limit.
fn check_size(line: usize, size: u64, options: PlanOptions) -> Result<(), DeskriptorError> {
    if size > options.max_file_size {
        return Err(DeskriptorError::new(
            line,
            "",
            "",
            format!(
                "the selection makes a {} file ({size} bytes), larger than the limit of {} \
                 ({} bytes, --max-file-size); split it into several deskriptors",
                crate::units::human_size(size),
                crate::units::human_size(options.max_file_size),
                options.max_file_size
            ),
        ));
    }
    Ok(())
}

/// Refuses a file that reads more source chunks than the limit, naming how many each
/// variable needs.
fn check_chunks(
    line: usize,
    scope: &Scope,
    r: &Resolution,
    options: PlanOptions,
) -> Result<(), DeskriptorError> {
    let counts: Vec<(&str, u64)> = r
        .variables
        .iter()
        .map(|v| {
            let chunks = &scope.variables[&v.name].chunks;
            (
                v.name.as_str(),
                variable_chunks(&v.dims, chunks, &r.selections),
            )
        })
        .collect();
    let total = counts
        .iter()
        .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
    if total <= options.max_chunks {
        return Ok(());
    }
    let each = counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(DeskriptorError::new(
        line,
        "",
        "",
        format!(
            "the selection reads {total} source chunks ({each}), more than the limit of {} \
             (--max-chunks); narrow its time range, split it into several deskriptors (one \
             per year, say) or raise --max-chunks",
            options.max_chunks
        ),
    ))
}

/// The source chunks a file reads: for each of its variables, the product over the
/// variable's dimensions of the distinct chunks its selected positions fall in (the fetch
/// reads each of those combinations once).
pub fn chunk_count(
    scope: &Scope,
    variables: &[PlannedVariable],
    selections: &BTreeMap<String, Resolved>,
) -> u64 {
    variables.iter().fold(0u64, |sum, v| {
        let chunks = &scope.variables[&v.name].chunks;
        sum.saturating_add(variable_chunks(&v.dims, chunks, selections))
    })
}

/// The chunks one variable (`dims`, chunked by `chunks`) reads of `selections`.
fn variable_chunks(
    dims: &[String],
    chunks: &[u64],
    selections: &BTreeMap<String, Resolved>,
) -> u64 {
    dims.iter().zip(chunks).fold(1u64, |product, (d, &len)| {
        product.saturating_mul(distinct_chunks(&selections[d].indices, len))
    })
}

/// How many distinct chunks of length `chunk_len` hold `indices`: one pass when their chunks
/// run in one direction (time, latitude, longitude, or a wrap of it onto one chunk), a sort
/// otherwise (a list of levels in any order).
fn distinct_chunks(indices: &[usize], chunk_len: u64) -> u64 {
    let len = chunk_len.max(1) as usize;
    let (mut up, mut down) = (false, false);
    let mut changes = 0u64;
    let mut previous = None;
    for &i in indices {
        let c = i / len;
        if let Some(p) = previous {
            if c != p {
                changes += 1;
                if c > p {
                    up = true;
                } else {
                    down = true;
                }
            }
        }
        previous = Some(c);
    }
    if previous.is_none() {
        return 0;
    }
    if !(up && down) {
        return changes + 1;
    }
    let mut all: Vec<usize> = indices.iter().map(|&i| i / len).collect();
    all.sort_unstable();
    all.dedup();
    all.len() as u64
}

/// The layout of a resolved deskriptor, provenance attributes included.
fn full_layout(scope: &Scope, r: &Resolution) -> Result<Layout, String> {
    let mut layout = build_layout(
        scope,
        &r.file_dims,
        &r.selections,
        &r.variables,
        &r.canonical,
        r.representation.as_deref(),
    )?;
    layout.attributes.extend(r.provenance.attributes());
    // Set to the number of absent chunks once the data is read (an int: the size is known).
    layout
        .attributes
        .push((ABSENT_CHUNKS_ATTRIBUTE.into(), AttrValue::Ints(vec![0])));
    Ok(layout)
}

/// Resolves everything but the layout: variables, dimensions, selections, canonical form,
/// provenance, identity and file name.
fn resolve(
    deskriptor: &Deskriptor,
    scope: &Scope,
    options: PlanOptions,
) -> Result<Resolution, DeskriptorError> {
    let line = deskriptor.line;
    let variables = planned_variables(line, &deskriptor.variables, scope)?;
    // Every selector key must name a coordinate of the scope (with a "did you mean").
    let coordinates: Vec<&str> = scope.coordinates.keys().map(String::as_str).collect();
    deskriptor.check_keys(&coordinates)?;
    let file_dims = file_dims(&variables);
    // Resolve every selector (also those no variable uses: they must still be valid).
    let mut selections = BTreeMap::new();
    for (key, selector) in &deskriptor.selectors {
        if file_dims.contains(key) {
            let resolved = select::resolve(line, Some(selector), &scope.coordinates[key])?;
            selections.insert(key.clone(), resolved);
        } else {
            select::resolve(line, Some(selector), &scope.coordinates[key])?;
        }
    }
    add_whole_axes(line, scope, &file_dims, &mut selections)?;
    let representation =
        representation::resolve(deskriptor, scope, &file_dims, &variables, &mut selections)?
            .map(Arc::new);
    let names = Names {
        name: deskriptor.name.as_deref(),
        variables: &deskriptor.variables,
    };
    let attributes = attributes_part(scope, &file_dims, &variables);
    let mut r = finish(
        line,
        names,
        scope,
        options,
        variables,
        file_dims,
        deskriptor.canonical_json(),
        &attributes,
        Provenance::of(scope, selections.get("time")),
        selections,
        representation.as_deref(),
    )?;
    r.representation = representation;
    Ok(r)
}

/// The variables of a deskriptor, each of which must exist in the scope.
fn planned_variables(
    line: usize,
    names: &[String],
    scope: &Scope,
) -> Result<Vec<PlannedVariable>, DeskriptorError> {
    let mut variables = Vec::with_capacity(names.len());
    for name in names {
        let Some(v) = scope.variables.get(name) else {
            return Err(DeskriptorError::new(
                line,
                "variable",
                format!("{name:?}"),
                unknown_variable_message(name, scope),
            ));
        };
        variables.push(PlannedVariable {
            name: v.name.clone(),
            dims: v.dims.clone(),
        });
    }
    Ok(variables)
}

/// The file's dimensions: those of the variable with the most, then any others.
fn file_dims(variables: &[PlannedVariable]) -> Vec<String> {
    let mut file_dims: Vec<String> = variables
        .iter()
        .max_by_key(|v| v.dims.len())
        .map(|v| v.dims.clone())
        .unwrap_or_default();
    for v in variables {
        for d in &v.dims {
            if !file_dims.contains(d) {
                file_dims.push(d.clone());
            }
        }
    }
    file_dims
}

/// Selects the whole axis of every file dimension the deskriptor does not select.
fn add_whole_axes(
    line: usize,
    scope: &Scope,
    file_dims: &[String],
    selections: &mut BTreeMap<String, Resolved>,
) -> Result<(), DeskriptorError> {
    for d in file_dims {
        if !selections.contains_key(d) {
            selections.insert(
                d.clone(),
                select::resolve(line, None, &scope.coordinates[d])?,
            );
        }
    }
    Ok(())
}

/// The part of a file's identity that the attributes it copies from the store make: 32 hex
/// digits of SHA-256 over the attributes written on each of its coordinates (`file_dims`) and
/// data `variables`, exactly as the file holds them ([`coordinate_attributes`],
/// [`variable_attributes`]). A store that rewords an attribute (a `long_name`, `units`) makes
/// its files new ones; the text depends only on the variables (they fix the dimensions), so a
/// catalog computes it once per list of variables.
fn attributes_part(scope: &Scope, file_dims: &[String], variables: &[PlannedVariable]) -> String {
    let mut h = Sha256::new();
    let mut array = |kind: &[u8], name: &str, digest: [u8; 32]| {
        h.update(kind);
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(digest);
    };
    for d in file_dims {
        let c = &scope.coordinates[d];
        array(
            b"c",
            d,
            attributes_digest(&coordinate_attributes(d, &c.attributes)),
        );
    }
    for v in variables {
        let var = &scope.variables[&v.name];
        let written = variable_attributes(var.fill_value, &var.attributes);
        array(b"v", &v.name, attributes_digest(&written));
    }
    hex::encode(&h.finalize()[..16])
}

/// What of a deskriptor names its file: its `name` and its variables.
#[derive(Clone, Copy)]
struct Names<'a> {
    name: Option<&'a str>,
    variables: &'a [String],
}

/// The rest of a resolution once the selections and the canonical form are known:
/// provenance, identity and file name.
#[allow(clippy::too_many_arguments)]
fn finish(
    line: usize,
    names: Names<'_>,
    scope: &Scope,
    options: PlanOptions,
    variables: Vec<PlannedVariable>,
    file_dims: Vec<String>,
    canonical: String,
    attributes: &str,
    provenance: Provenance,
    selections: BTreeMap<String, Resolved>,
    representation: Option<&Representation>,
) -> Result<Resolution, DeskriptorError> {
    let identity = identity_of(
        options.format,
        &scope.url,
        &canonical,
        Some(attributes),
        provenance.identity_part().as_deref(),
    );
    // A default name comes from the identity of the selection alone, without the store's
    // attributes and version: a file keeps its name when the store replaces its data or
    // rewords an attribute.
    let file_name = match names.name {
        Some(n) => format!("{n}.nc"),
        None => {
            let stable = identity_of(options.format, &scope.url, &canonical, None, None);
            let mut vars = variable_part(names.variables);
            if let Some(r) = representation {
                vars.push_str(&r.name_part());
            }
            let name = file_name_of(&vars, scope, &selections, &stable);
            match options.layout {
                Some(layout) => {
                    let first = first_hour(scope, &selections);
                    let dirs = layout.directories(&vars, first.as_deref());
                    format!("{dirs}/{name}")
                }
                None => name,
            }
        }
    };
    check_file_name(line, &file_name)?;
    Ok(Resolution {
        variables,
        file_dims,
        selections,
        representation: None,
        canonical,
        provenance,
        identity,
        file_name,
    })
}

/// The variable of a resampled file that holds each period's bounds (CF `bounds`).
pub const TIME_BOUNDS: &str = "time_bnds";

/// The global attribute counting the chunks that were absent from the store when the file was
/// built (read as the fill value).
pub const ABSENT_CHUNKS_ATTRIBUTE: &str = "sodeda_absent_chunks";

/// The layout of a file whose data met `absent` absent chunks: the same size, the count set.
pub fn with_absent_chunks(layout: &Layout, absent: u64) -> Layout {
    let mut layout = layout.clone();
    for (name, value) in &mut layout.attributes {
        if name == ABSENT_CHUNKS_ATTRIBUTE {
            *value = AttrValue::Ints(vec![i32::try_from(absent).unwrap_or(i32::MAX)]);
        }
    }
    layout
}

/// The identity of a file: SHA-256 over the format version, the format, the scope URL, the
/// canonical selection, the digest of the attributes it copies from the store
/// (`attributes`, see `attributes_part`) and the store's version facts it writes
/// (`store`, [`Provenance::identity_part`]), as 32 hex digits. Equal identities mean
/// byte-identical files (but for chunks the store did not have when one was built). Without
/// `attributes` and `store`, the identity of the selection alone, which default file names use.
pub fn identity_of(
    format: Format,
    source_url: &str,
    canonical: &str,
    attributes: Option<&str>,
    store: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    // The pieces of "sodeda-era5\nversion {v}\nformat {f}\nsource {url}\nselection {c}\n"
    // (then "attributes {a}\n" and "{store}\n"), hashed one by one: no string is made per line
    // of a catalog.
    for piece in [
        "sodeda-era5\nversion ",
        FORMAT_VERSION_TEXT,
        "\nformat ",
        format.as_str(),
        "\nsource ",
        source_url,
        "\nselection ",
        canonical,
        "\n",
    ] {
        h.update(piece);
    }
    if let Some(attributes) = attributes {
        h.update("attributes ");
        h.update(attributes);
        h.update("\n");
    }
    if let Some(store) = store {
        h.update(store);
        h.update("\n");
    }
    // `hex::encode`, without collecting chars one by one (a tenth of a catalog line's time).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The default file name of a deskriptor without `name`:
/// `<var>[+<var>...]_<first time>[_<last time>]_<16 hex digits of the identity>.nc`, with times
/// as `YYYYMMDDTHH`; the variable part is cut at 120 bytes. Deterministic; 64 bits of the
/// identity make two deskriptors of one set share a name with a chance of about n²/2⁶⁵ (10⁻⁷
/// for a million files of one hour), where 32 bits gave four collisions in a million files.
pub fn default_file_name(
    deskriptor: &Deskriptor,
    scope: &Scope,
    selections: &BTreeMap<String, Resolved>,
    identity: &str,
) -> String {
    file_name_of(
        &variable_part(&deskriptor.variables),
        scope,
        selections,
        identity,
    )
}

/// [`default_file_name`] with the variable part made.
fn file_name_of(
    vars: &str,
    scope: &Scope,
    selections: &BTreeMap<String, Resolved>,
    identity: &str,
) -> String {
    let (_, enc) = scope.time();
    let mut name = String::with_capacity(vars.len() + 48);
    name.push_str(vars);
    if let Some(t) = selections.get("time") {
        let (first, last) = (t.labels[0], t.labels[t.labels.len() - 1]);
        name.push('_');
        push_hour(&mut name, enc.instant(first as i64));
        if first != last {
            name.push('_');
            push_hour(&mut name, enc.instant(last as i64));
        }
    }
    name.push('_');
    name.push_str(&identity[..16]);
    name.push_str(".nc");
    name
}

/// Appends `t` as `YYYYMMDDTHH` (what `format!("{:04}{:02}{:02}T{:02}")` writes, without
/// the formatting machinery: this runs once or twice per line of a catalog).
fn push_hour(out: &mut String, t: chrono::NaiveDateTime) {
    let year = t.year();
    if (0..=9999).contains(&year) {
        push_digits(out, year as u32, 4);
    } else {
        out.push_str(&format!("{year:04}"));
    }
    push_digits(out, t.month(), 2);
    push_digits(out, t.day(), 2);
    out.push('T');
    push_digits(out, t.hour(), 2);
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        let digit = (n / 10u32.pow(i)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// The variables of a deskriptor joined by `+`, cut at 120 bytes.
fn variable_part(variables: &[String]) -> String {
    let mut vars = variables.join("+");
    if vars.len() > 120 {
        let mut cut = 120;
        while !vars.is_char_boundary(cut) {
            cut -= 1;
        }
        vars.truncate(cut);
    }
    vars
}

/// The first selected hour as `YYYYMMDDHH`; `None` without a time axis.
fn first_hour(scope: &Scope, selections: &BTreeMap<String, Resolved>) -> Option<String> {
    let (_, enc) = scope.time();
    let t = selections.get("time")?;
    let first = t.labels.first()?;
    let t = enc.instant(*first as i64);
    Some(format!(
        "{:04}{:02}{:02}{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour()
    ))
}

fn unknown_variable_message(name: &str, scope: &Scope) -> String {
    // A GRIB/CDS short name (t2m, sp, u10) is the most common slip: point to the long name.
    let by_short = scope.variables.values().find(|v| {
        v.attributes
            .get("short_name")
            .and_then(|s| s.as_str())
            .is_some_and(|s| s == name)
    });
    let suggestion = match by_short {
        Some(v) => Some(v.name.clone()),
        None => scope
            .variables
            .keys()
            .map(|k| (strsim::normalized_levenshtein(k, name), k))
            .filter(|(score, _)| *score > 0.5)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.clone()),
    };
    match suggestion {
        Some(s) => format!(
            "unknown variable; did you mean {s:?}? (`sodeda-era5 scope` lists all {})",
            scope.variables.len()
        ),
        None => format!(
            "unknown variable; `sodeda-era5 scope` lists all {} variables",
            scope.variables.len()
        ),
    }
}

/// The labels of integer coordinate `d` as the file's int32 (CDF-2 has no int64).
fn int_labels(d: &str, labels: &[f64]) -> Result<Vec<i32>, String> {
    labels
        .iter()
        .map(|&v| i32::try_from(v as i64).map_err(|_| format!("{d} value {v} exceeds int32")))
        .collect()
}

/// What the data is, by the store it comes from.
fn origin(url: &str) -> &'static str {
    match url {
        crate::source::DEFAULT_SOURCE => "ERA5 reanalysis via ARCO-ERA5",
        crate::source::WEATHERBENCH2_SOURCE => "ERA5 reanalysis via WeatherBench2",
        _ => "ERA5 reanalysis from the Zarr store at source_url",
    }
}

fn build_layout(
    scope: &Scope,
    file_dims: &[String],
    selections: &BTreeMap<String, Resolved>,
    variables: &[PlannedVariable],
    canonical: &str,
    representation: Option<&Representation>,
) -> Result<Layout, String> {
    let periods = representation.and_then(|r| r.periods.as_ref());
    let stations = representation.and_then(|r| r.stations.as_ref());
    let mut layout = Layout {
        dims: Vec::new(),
        variables: Vec::new(),
        attributes: Vec::new(),
        classic: Default::default(),
    };
    // Where each source dimension is in the file (with `points`, latitude and longitude are
    // both the station dimension).
    let mut dim_of: BTreeMap<&str, usize> = BTreeMap::new();
    for d in file_dims {
        let coord = &scope.coordinates[d];
        if let Some(stations) = stations.filter(|_| d == "latitude" || d == "longitude") {
            let at = match layout.dims.iter().position(|(n, _)| n == STATION_DIMENSION) {
                Some(at) => at,
                None => {
                    representation::add_stations(&mut layout, scope, stations);
                    layout
                        .dims
                        .iter()
                        .position(|(n, _)| n == STATION_DIMENSION)
                        .expect("just added")
                }
            };
            dim_of.insert(d, at);
            continue;
        }
        let labels = match periods {
            Some(p) if d == "time" => &p.labels,
            _ => &selections[d].labels,
        };
        layout.dims.push((d.clone(), labels.len()));
        dim_of.insert(d, layout.dims.len() - 1);
        let values = |labels: &[f64]| -> Result<(NcType, CoordValues), String> {
            Ok(if coord.integer {
                (NcType::Int, CoordValues::Ints(int_labels(d, labels)?))
            } else {
                (
                    NcType::Float,
                    CoordValues::Floats(labels.iter().map(|&v| v as f32).collect()),
                )
            })
        };
        let (nc_type, coordinate) = values(labels)?;
        let mut attributes = coordinate_attributes(d, &coord.attributes);
        if let Some(p) = periods.filter(|_| d == "time") {
            attributes.push(("bounds".into(), AttrValue::Text(TIME_BOUNDS.into())));
            let at = layout.dims.len() - 1;
            layout.variables.push(NcVariable {
                name: d.clone(),
                dims: vec![at],
                nc_type,
                attributes,
                values: Some(coordinate),
            });
            layout.dims.push(("nv".into(), 2));
            let (nc_type, bounds) = values(&p.bounds)?;
            layout.variables.push(NcVariable {
                name: TIME_BOUNDS.into(),
                dims: vec![at, layout.dims.len() - 1],
                nc_type,
                attributes: Vec::new(),
                values: Some(bounds),
            });
            continue;
        }
        layout.variables.push(NcVariable {
            name: d.clone(),
            dims: vec![layout.dims.len() - 1],
            nc_type,
            attributes,
            values: Some(coordinate),
        });
    }
    for v in variables {
        let var = &scope.variables[&v.name];
        let mut attributes = variable_attributes(var.fill_value, &var.attributes);
        if let Some(p) = periods {
            attributes.push((
                "cell_methods".into(),
                AttrValue::Text(format!("time: {}", p.how.as_str())),
            ));
        }
        if stations.is_some() {
            attributes.push((
                "coordinates".into(),
                AttrValue::Text(representation::STATION_COORDINATES.into()),
            ));
        }
        let mut dims: Vec<usize> = v.dims.iter().map(|d| dim_of[d.as_str()]).collect();
        dims.dedup();
        layout.variables.push(NcVariable {
            name: v.name.clone(),
            dims,
            nc_type: NcType::Float,
            attributes,
            values: None,
        });
    }
    let names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
    layout.attributes = vec![
        ("Conventions".into(), AttrValue::Text("CF-1.8".into())),
        (
            "title".into(),
            AttrValue::Text(format!("ERA5 subset: {}", names.join(", "))),
        ),
        (
            "history".into(),
            AttrValue::Text(format!(
                "sodeda-era5 (file format {FORMAT_VERSION}): subset of {} selected by {canonical}",
                scope.url
            )),
        ),
        (
            "source".into(),
            AttrValue::Text(format!("{}, subset by sodeda-era5", origin(&scope.url))),
        ),
        ("source_url".into(), AttrValue::Text(scope.url.clone())),
        ("deskriptor".into(), AttrValue::Text(canonical.to_string())),
        (
            "sodeda_era5_format_version".into(),
            AttrValue::Ints(vec![FORMAT_VERSION as i32]),
        ),
    ];
    if let Some(p) = periods {
        layout.attributes.push((
            "sodeda_resample".into(),
            AttrValue::Text(p.description.clone()),
        ));
    }
    if stations.is_some() {
        layout
            .attributes
            .push(("featureType".into(), AttrValue::Text("timeSeries".into())));
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::scope::small_scope;

    fn plan(scope: &Scope, json: &str) -> Result<Plan, DeskriptorError> {
        let d = Deskriptor::parse(1, json)?;
        Plan::new(&d, scope, PlanOptions::default()).map_err(|e| {
            e.deskriptor()
                .cloned()
                .expect("CDF-2 sizes are computed, not written")
        })
    }

    fn indices(plan: &Plan, dim: &str) -> Vec<usize> {
        plan.selections[dim].indices.clone()
    }

    /// Planning needs only a scope: positions on each axis, the name, the variables, a size
    /// that grows with the selection and an identity of 32 hex digits.
    #[test]
    fn a_box_over_hours_is_planned_from_a_scope_alone() {
        let scope = small_scope();
        let p = plan(
            &scope,
            r#"{"name": "box", "time": {"start": "2023-01-01T02", "end": "2023-01-01T05"},
                "latitude": {"start": 1, "end": -1}, "longitude": {"start": 22.5, "end": 67.5},
                "variable": "2m_temperature"}"#,
        )
        .unwrap();
        assert_eq!(p.file_name, "box.nc");
        assert_eq!(indices(&p, "time"), vec![2, 3, 4, 5]);
        // Latitude runs north to south: 1, 0.5, 0, -0.5, -1 are positions 2 to 6.
        assert_eq!(indices(&p, "latitude"), vec![2, 3, 4, 5, 6]);
        assert_eq!(indices(&p, "longitude"), vec![1, 2, 3]);
        assert_eq!(p.variables.len(), 1);
        assert_eq!(p.variables[0].dims, ["time", "latitude", "longitude"]);
        assert!(
            p.size > 4 * 5 * 3 * 4,
            "the data alone is 240 bytes: {}",
            p.size
        );
        assert!(p.identity.len() == 32 && p.identity.bytes().all(|b| b.is_ascii_hexdigit()));
        let one_hour_more = plan(
            &scope,
            r#"{"name": "box", "time": {"start": "2023-01-01T01", "end": "2023-01-01T05"},
                "latitude": {"start": 1, "end": -1}, "longitude": {"start": 22.5, "end": 67.5},
                "variable": "2m_temperature"}"#,
        )
        .unwrap();
        assert_eq!(
            one_hour_more.size - p.size,
            5 * 3 * 4 + 4,
            "one hour: data and time value"
        );
        assert_ne!(one_hour_more.identity, p.identity);
    }

    #[test]
    fn one_selection_spelt_two_ways_is_one_file() {
        let scope = small_scope();
        let a = plan(
            &scope,
            r#"{"time": "2023-01-01T10:00", "level": [850, 500], "variable": ["temperature"]}"#,
        )
        .unwrap();
        let b = plan(
            &scope,
            r#"{"variable": "temperature", "level": [850, 500], "time": "2023-01-01T10:00"}"#,
        )
        .unwrap();
        assert_eq!(
            (&a.identity, &a.file_name, a.size),
            (&b.identity, &b.file_name, b.size)
        );
        // Levels in the order asked for; whole axes when not selected.
        assert_eq!(indices(&a, "level"), vec![1, 0]);
        assert_eq!(indices(&a, "latitude").len(), 9);
        assert_eq!(indices(&a, "longitude").len(), 16);
    }

    #[test]
    fn bad_selections_name_the_field_and_what_is_allowed() {
        let scope = small_scope();
        let e = plan(
            &scope,
            r#"{"time": "2023-01-01T00", "variable": "t2m_temperature"}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "variable");
        assert!(e.message.contains("did you mean \"2m_temperature\""), "{e}");
        let e = plan(
            &scope,
            r#"{"time": "2023-01-01T00", "latitude": {"start": 60, "end": 50}, "variable": "2m_temperature"}"#,
        )
        .unwrap_err();
        assert!(e.field.starts_with("latitude"), "{e}");
        let e = plan(
            &scope,
            r#"{"time": "2031-01-01T00", "variable": "2m_temperature"}"#,
        )
        .unwrap_err();
        assert!(e.field.starts_with("time"), "{e}");
        let e = plan(
            &scope,
            r#"{"time": "2023-01-01T00", "level": 700, "variable": "temperature"}"#,
        )
        .unwrap_err();
        assert!(e.field.starts_with("level"), "{e}");
    }

    /// Identities are hashed piece by piece; they must stay those of the whole text (every
    /// cache entry and S3 object is named by them). Without attributes and store, the text
    /// is the one identities hashed before attributes joined them (default names keep it).
    #[test]
    fn identities_hash_the_text_they_always_hashed() {
        let whole = |format: Format,
                     url: &str,
                     canonical: &str,
                     attributes: Option<&str>,
                     store: Option<&str>| {
            let mut h = Sha256::new();
            h.update(format!(
                "sodeda-era5\nversion {FORMAT_VERSION}\nformat {}\nsource {url}\nselection {canonical}\n",
                format.as_str()
            ));
            if let Some(attributes) = attributes {
                h.update(format!("attributes {attributes}\n"));
            }
            if let Some(store) = store {
                h.update(format!("{store}\n"));
            }
            hex::encode(&h.finalize()[..16])
        };
        assert_eq!(FORMAT_VERSION_TEXT, FORMAT_VERSION.to_string());
        for format in [Format::Classic64, Format::Netcdf4] {
            for attributes in [None, Some("0123456789abcdef0123456789abcdef")] {
                for store in [
                    None,
                    Some("store last_updated 2026-11-30 01:02:03+00:00 valid_time_stop 2026-08-31"),
                ] {
                    let (url, canonical) = ("gs://b/x.zarr", r#"{"variable":["t"]}"#);
                    assert_eq!(
                        identity_of(format, url, canonical, attributes, store),
                        whole(format, url, canonical, attributes, store)
                    );
                }
            }
        }
    }

    /// A file copies its variables' and coordinates' attributes from the store: when the
    /// store changes one of them, the file (its bytes) is another, and so is its identity;
    /// its default name stays. Attributes of arrays the file does not hold change nothing.
    #[test]
    fn the_attributes_a_file_copies_are_part_of_its_identity() {
        let line = r#"{"time": "2023-01-01T02", "variable": "2m_temperature"}"#;
        let with = |change: &dyn Fn(&mut Scope)| {
            let mut scope = small_scope();
            change(&mut scope);
            let p = plan(&scope, line).unwrap();
            let bytes = encode::classic::header(&p.layout);
            (p.identity, p.file_name, bytes)
        };
        let set = |array: &'static str, key: &'static str, value: &'static str| {
            move |scope: &mut Scope| {
                let value = serde_json::Value::from(value);
                match scope.variables.get_mut(array) {
                    Some(v) => v.attributes.insert(key.into(), value),
                    None => scope
                        .coordinates
                        .get_mut(array)
                        .unwrap()
                        .attributes
                        .insert(key.into(), value),
                };
            }
        };
        let (identity, name, header) = with(&|_| {});
        assert_eq!(
            with(&|_| {}).0,
            identity,
            "the same scope, the same identity"
        );
        for (array, key, value) in [
            ("2m_temperature", "long_name", "2 metre Temperature"),
            ("2m_temperature", "comment", "new"),
            ("latitude", "units", "degrees"),
            ("time", "long_name", "time"),
        ] {
            let (other, other_name, other_header) = with(&set(array, key, value));
            assert_ne!(other_header, header, "{array}.{key}: the file changes");
            assert_ne!(other, identity, "{array}.{key}: so must its identity");
            assert_eq!(other_name, name, "{array}.{key}: the name stays");
        }
        // Not in the file: no other identity.
        assert_eq!(with(&set("temperature", "long_name", "T")).0, identity);
        assert_eq!(with(&set("level", "units", "Pa")).0, identity);
        // A fill value is written as `_FillValue`.
        let (other, ..) = with(&|s: &mut Scope| {
            s.variables.get_mut("2m_temperature").unwrap().fill_value = Some(-1.0)
        });
        assert_ne!(other, identity);
    }

    /// A file that reads more chunks than `--max-chunks` is refused at planning, naming the
    /// count of each variable, the limit and what to do; at the limit it plans.
    #[test]
    fn a_file_over_the_chunk_limit_is_refused_naming_the_count_and_the_option() {
        let scope = small_scope();
        // 100 hours, one chunk per hour and variable: 200 chunks.
        let d = Deskriptor::parse(
            7,
            r#"{"latitude": 1, "longitude": 45, "variable": ["2m_temperature", "temperature"]}"#,
        )
        .unwrap();
        let options = |max_chunks| PlanOptions {
            max_chunks,
            ..PlanOptions::default()
        };
        let e = Plan::new(&d, &scope, options(199)).unwrap_err();
        let e = e.deskriptor().expect("the line's fault").to_string();
        for needle in [
            "line 7: ",
            "reads 200 source chunks (2m_temperature 100, temperature 100)",
            "more than the limit of 199 (--max-chunks)",
            "narrow its time range",
            "raise --max-chunks",
        ] {
            assert!(e.contains(needle), "{needle:?} not in {e}");
        }
        let p = Plan::new(&d, &scope, options(200)).unwrap();
        assert_eq!(chunk_count(&scope, &p.variables, &p.selections), 200);
        // The catalog's way gives the same refusal.
        let mut memo = PlanMemo::default();
        let e = Plan::entry(&d, &scope, options(199), &mut memo).unwrap_err();
        assert!(e.to_string().contains("reads 200 source chunks"), "{e}");
    }

    #[test]
    fn distinct_chunks_are_counted_in_any_order() {
        assert_eq!(distinct_chunks(&[], 4), 0);
        assert_eq!(distinct_chunks(&[0, 1, 2, 3], 4), 1);
        assert_eq!(distinct_chunks(&[3, 4, 5, 9], 4), 3);
        assert_eq!(distinct_chunks(&[9, 5, 4, 3], 4), 3);
        // A wrapped longitude onto one chunk, and back and forth over two.
        assert_eq!(distinct_chunks(&[14, 15, 0, 1], 16), 1);
        assert_eq!(distinct_chunks(&[0, 2, 1, 3], 2), 2);
        assert_eq!(distinct_chunks(&[5, 0, 5, 0], 1), 2);
        assert_eq!(distinct_chunks(&[7, 7, 7], 0), 1);
    }

    #[test]
    fn hours_are_written_as_strftime_would() {
        for (y, m, d, h) in [
            (2023, 1, 2, 3),
            (1940, 12, 31, 23),
            (999, 5, 6, 0),
            (10000, 1, 1, 0),
        ] {
            let t = chrono::NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(h, 0, 0)
                .unwrap();
            let mut out = String::new();
            push_hour(&mut out, t);
            assert_eq!(out, format!("{y:04}{m:02}{d:02}T{h:02}"));
        }
    }
}
