//! Encodes a [`Layout`] and its data as a NetCDF file, through libnetcdf (the `netcdf` crate).
//!
//! Input: a layout, one float32 array per data variable, a format and a path. Output: the file.
//! Invariant: the bytes depend only on the inputs (no timestamps, fixed definition and write
//! order), and the length equals [`Layout::classic_size`] for CDF-2 or [`netcdf4_size`] for
//! NetCDF-4; [`write()`] checks that before it returns.
//!
//! CDF-2 is written directly by [`classic`] (byte-identical to libnetcdf, which is about a
//! thousand times slower for small files); NetCDF-4 through libnetcdf, which is synchronous
//! and serialises all calls behind one global lock, so callers run this on a blocking thread.

use std::io::Write;
use std::path::Path;

use ndarray::ArrayD;

pub mod classic;
pub mod regions;

use crate::layout::{AttrValue, CoordValues, Format, Layout, NcType};

/// Version of the file format this program writes. Part of every identity and cache key:
/// bump it whenever the bytes of a file for the same deskriptor would change.
pub const FORMAT_VERSION: u32 = 5;

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// libnetcdf reported an error.
    #[error("netcdf: {context}: {cause}")]
    Netcdf {
        /// What was being done.
        context: String,
        /// libnetcdf's error.
        cause: netcdf::Error,
    },
    /// The written file does not have the planned size: a bug, never served.
    #[error("wrote {written} bytes but the plan says {planned}; the file is discarded")]
    SizeMismatch {
        /// Bytes on disk.
        written: u64,
        /// Bytes planned.
        planned: u64,
    },
    /// The data does not fit the layout.
    #[error("data for {variable} has shape {got:?}, the layout wants {want:?}")]
    Shape {
        /// Variable name.
        variable: String,
        /// Shape given (empty when the array is missing).
        got: Vec<usize>,
        /// Shape expected.
        want: Vec<usize>,
    },
    /// Local I/O failed (temporary files, metadata).
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        cause: std::io::Error,
    },
}

fn nc(context: impl Into<String>) -> impl FnOnce(netcdf::Error) -> EncodeError {
    let context = context.into();
    move |cause| EncodeError::Netcdf { context, cause }
}

/// What to write into the data variables.
enum Data<'a> {
    /// The real values, one array per data variable.
    Full(&'a [ArrayD<f32>]),
    /// One element per data variable: makes HDF5 allocate every data block, so the file has
    /// its final size (the NetCDF-4 size template).
    Template,
}

/// Writes `layout` with `data` (one array per data variable, in layout order) to `path`.
pub fn write(
    layout: &Layout,
    data: &[ArrayD<f32>],
    format: Format,
    path: &Path,
    planned_size: u64,
) -> Result<(), EncodeError> {
    match format {
        Format::Classic64 => {
            let io = |cause| EncodeError::Io {
                context: format!("writing {}", path.display()),
                cause,
            };
            if let Some(e) = shape_mismatch(layout, data) {
                return Err(e);
            }
            let file = std::fs::File::create(path).map_err(io)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            classic::write(layout, data, &mut out).map_err(io)?;
            out.flush().map_err(io)?;
        }
        Format::Netcdf4 => write_inner(layout, Data::Full(data), format, path)?,
    }
    let written = std::fs::metadata(path)
        .map_err(|cause| EncodeError::Io {
            context: format!("stat {}", path.display()),
            cause,
        })?
        .len();
    if written != planned_size {
        return Err(EncodeError::SizeMismatch {
            written,
            planned: planned_size,
        });
    }
    Ok(())
}

/// The shape variable `v` has in `layout`.
fn shape_of(layout: &Layout, v: &crate::layout::NcVariable) -> Vec<usize> {
    v.dims.iter().map(|&d| layout.dims[d].1).collect()
}

/// The first data array whose shape is not its variable's (records are cut along the first
/// axis, so the shape must match, not only the number of values).
fn shape_mismatch(layout: &Layout, data: &[ArrayD<f32>]) -> Option<EncodeError> {
    let vars: Vec<_> = layout
        .variables
        .iter()
        .filter(|v| v.values.is_none())
        .collect();
    if vars.len() != data.len() {
        let v = vars.get(data.len());
        return Some(EncodeError::Shape {
            variable: v.map_or("?".into(), |v| v.name.clone()),
            got: Vec::new(),
            want: v.map_or(Vec::new(), |v| shape_of(layout, v)),
        });
    }
    vars.iter().zip(data).find_map(|(v, a)| {
        let want = shape_of(layout, v);
        (a.shape() != want.as_slice()).then(|| EncodeError::Shape {
            variable: v.name.clone(),
            got: a.shape().to_vec(),
            want,
        })
    })
}

/// The exact size of the NetCDF-4 file for `layout`: writes a template (schema, coordinates,
/// one element per data variable, no fill) to a temporary file and measures it. HDF5 places
/// contiguous data blocks at first write, so the template allocates exactly what the real
/// write will; about a millisecond, and sparse on disk.
pub fn netcdf4_size(layout: &Layout) -> Result<u64, EncodeError> {
    let dir = tempfile::tempdir().map_err(|cause| EncodeError::Io {
        context: "creating a temporary directory for the NetCDF-4 size template".into(),
        cause,
    })?;
    let path = dir.path().join("template.nc");
    write_inner(layout, Data::Template, Format::Netcdf4, &path)?;
    std::fs::metadata(&path)
        .map(|m| m.len())
        .map_err(|cause| EncodeError::Io {
            context: "stat of the NetCDF-4 size template".into(),
            cause,
        })
}

fn write_inner(
    layout: &Layout,
    data: Data<'_>,
    format: Format,
    path: &Path,
) -> Result<(), EncodeError> {
    let options = match format {
        Format::Classic64 => netcdf::Options::_64BIT_OFFSET,
        Format::Netcdf4 => netcdf::Options::NETCDF4,
    };
    let mut file =
        netcdf::create_with(path, options).map_err(nc(format!("creating {}", path.display())))?;
    // Classic files have the record dimension UNLIMITED; NetCDF-4 files keep it fixed (HDF5
    // would chunk an unlimited dimension, and the size template relies on contiguous data).
    let record_dim = match format {
        Format::Classic64 => layout.record_dim(),
        Format::Netcdf4 => None,
    };
    for (d, (name, len)) in layout.dims.iter().enumerate() {
        if Some(d) == record_dim {
            file.add_unlimited_dimension(name)
        } else {
            file.add_dimension(name, *len)
        }
        .map_err(nc(format!("dimension {name}")))?;
    }
    for (name, value) in &layout.attributes {
        put_global(&mut file, name, value)?;
    }
    for v in &layout.variables {
        let dims: Vec<&str> = v.dims.iter().map(|&d| layout.dims[d].0.as_str()).collect();
        let mut var = match v.nc_type {
            NcType::Int => file.add_variable::<i32>(&v.name, &dims),
            NcType::Float => file.add_variable::<f32>(&v.name, &dims),
            NcType::Double => file.add_variable::<f64>(&v.name, &dims),
            NcType::Char => file.add_variable::<NcChar>(&v.name, &dims),
        }
        .map_err(nc(format!("variable {}", v.name)))?;
        for (name, value) in &v.attributes {
            let context = format!("attribute {}:{name}", v.name);
            match value {
                AttrValue::Text(s) => var.put_attribute(name, s.as_str()),
                AttrValue::Ints(x) if x.len() == 1 => var.put_attribute(name, x[0]),
                AttrValue::Ints(x) => var.put_attribute(name, x.clone()),
                AttrValue::Floats(x) if x.len() == 1 => var.put_attribute(name, x[0]),
                AttrValue::Floats(x) => var.put_attribute(name, x.clone()),
                AttrValue::Doubles(x) if x.len() == 1 => var.put_attribute(name, x[0]),
                AttrValue::Doubles(x) => var.put_attribute(name, x.clone()),
            }
            .map_err(nc(context))?;
        }
        // SAFETY: every variable is written in full below (or, for the size template, the
        // file is measured and deleted, never read), so no unwritten byte is ever served.
        unsafe { var.set_nofill() }.map_err(nc(format!("nofill {}", v.name)))?;
    }
    if format == Format::Classic64 {
        file.enddef().map_err(nc("leaving define mode"))?;
    }
    let mut data_index = 0;
    for v in &layout.variables {
        let mut var = file.variable_mut(&v.name).expect("variable defined above");
        let context = format!("writing {}", v.name);
        // Explicit extents: an unlimited dimension has no length before it is written.
        let extents: Vec<std::ops::Range<usize>> =
            v.dims.iter().map(|&d| 0..layout.dims[d].1).collect();
        match (&v.values, &data) {
            (Some(CoordValues::Ints(x)), _) => var.put_values(x, extents),
            (Some(CoordValues::Floats(x)), _) => var.put_values(x, extents),
            (Some(CoordValues::Doubles(x)), _) => var.put_values(x, extents),
            (Some(CoordValues::Chars(x)), _) => {
                let chars: Vec<NcChar> = x.iter().map(|&b| NcChar(b)).collect();
                var.put_values(&chars, extents)
            }
            (None, Data::Full(arrays)) => {
                let array = &arrays[data_index];
                let want = shape_of(layout, v);
                if array.shape() != want.as_slice() {
                    return Err(EncodeError::Shape {
                        variable: v.name.clone(),
                        got: array.shape().to_vec(),
                        want,
                    });
                }
                let contiguous;
                let slice = match array.as_slice() {
                    Some(s) => s,
                    None => {
                        contiguous = array.iter().copied().collect::<Vec<f32>>();
                        &contiguous
                    }
                };
                var.put_values(slice, extents)
            }
            (None, Data::Template) => {
                let origin = vec![0usize; v.dims.len()];
                var.put_value(0f32, origin.as_slice())
            }
        }
        .map_err(nc(context))?;
        if v.values.is_none() {
            data_index += 1;
        }
    }
    file.close().map_err(nc("closing"))?;
    Ok(())
}

/// One `NC_CHAR` element (the netcdf crate reads `u8` as a number, `NC_UBYTE`).
#[repr(transparent)]
#[derive(Clone, Copy)]
struct NcChar(u8);

// SAFETY: `NcChar` is one byte, as `NC_CHAR` is.
unsafe impl netcdf::types::NcTypeDescriptor for NcChar {
    fn type_descriptor() -> netcdf::types::NcVariableType {
        netcdf::types::NcVariableType::Char
    }
}

fn put_global(
    file: &mut netcdf::FileMut,
    name: &str,
    value: &AttrValue,
) -> Result<(), EncodeError> {
    let context = format!("global attribute {name}");
    match value {
        AttrValue::Text(s) => file.add_attribute(name, s.as_str()),
        AttrValue::Ints(x) if x.len() == 1 => file.add_attribute(name, x[0]),
        AttrValue::Ints(x) => file.add_attribute(name, x.clone()),
        AttrValue::Floats(x) if x.len() == 1 => file.add_attribute(name, x[0]),
        AttrValue::Floats(x) => file.add_attribute(name, x.clone()),
        AttrValue::Doubles(x) if x.len() == 1 => file.add_attribute(name, x[0]),
        AttrValue::Doubles(x) => file.add_attribute(name, x.clone()),
    }
    .map(|_| ())
    .map_err(nc(context))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::NcVariable;
    use ndarray::IxDyn;

    /// A layout shaped like a real file: time/lat/lon coordinates, `n_vars` data variables.
    pub(crate) fn sample(
        nt: usize,
        ny: usize,
        nx: usize,
        n_vars: usize,
        level: Option<usize>,
    ) -> Layout {
        let mut dims = vec![("time".to_string(), nt)];
        if let Some(nl) = level {
            dims.push(("level".into(), nl));
        }
        dims.push(("latitude".into(), ny));
        dims.push(("longitude".into(), nx));
        let mut variables = vec![NcVariable {
            name: "time".into(),
            dims: vec![0],
            nc_type: NcType::Int,
            attributes: vec![
                (
                    "calendar".into(),
                    AttrValue::Text("proleptic_gregorian".into()),
                ),
                (
                    "units".into(),
                    AttrValue::Text("hours since 1900-01-01".into()),
                ),
            ],
            values: Some(CoordValues::Ints((0..nt as i32).collect())),
        }];
        let mut k = 1;
        if let Some(nl) = level {
            variables.push(NcVariable {
                name: "level".into(),
                dims: vec![k],
                nc_type: NcType::Int,
                attributes: vec![("units".into(), AttrValue::Text("hPa".into()))],
                values: Some(CoordValues::Ints((0..nl as i32).collect())),
            });
            k += 1;
        }
        for (i, (name, n)) in [("latitude", ny), ("longitude", nx)]
            .into_iter()
            .enumerate()
        {
            variables.push(NcVariable {
                name: name.into(),
                dims: vec![k + i],
                nc_type: NcType::Float,
                attributes: vec![("units".into(), AttrValue::Text("degrees".into()))],
                values: Some(CoordValues::Floats(
                    (0..n).map(|x| x as f32 * 0.25).collect(),
                )),
            });
        }
        for j in 0..n_vars {
            let vdims = if j == 0 && level.is_some() {
                (0..dims.len()).collect()
            } else {
                vec![0, dims.len() - 2, dims.len() - 1]
            };
            variables.push(NcVariable {
                name: format!("var_{j}_odd"),
                dims: vdims,
                nc_type: NcType::Float,
                attributes: vec![
                    ("_FillValue".into(), AttrValue::Floats(vec![f32::NAN])),
                    (
                        "long_name".into(),
                        AttrValue::Text("a name of odd length".into()),
                    ),
                    ("units".into(), AttrValue::Text("K".into())),
                    ("scale".into(), AttrValue::Doubles(vec![1.5, 2.0, 3.0])),
                    ("count".into(), AttrValue::Ints(vec![7])),
                ],
                values: None,
            });
        }
        Layout {
            dims,
            variables,
            attributes: vec![
                ("Conventions".into(), AttrValue::Text("CF-1.8".into())),
                ("deskriptor".into(), AttrValue::Text("{\"x\":1}".into())),
                ("v".into(), AttrValue::Ints(vec![1])),
            ],
            classic: Default::default(),
        }
    }

    /// Layouts of several shapes: one and several variables, with and without levels, one
    /// time step and many; one with `time` its only record variable; one without a record
    /// dimension (its time axis is called otherwise).
    fn samples() -> Vec<Layout> {
        let mut fixed = sample(3, 2, 5, 2, Some(2));
        fixed.dims[0].0 = "step".into();
        fixed.variables[0].name = "step".into();
        vec![
            sample(1, 5, 5, 1, None),
            sample(3, 21, 41, 2, None),
            sample(2, 3, 7, 2, Some(4)),
            sample(1, 1, 1, 3, Some(1)),
            sample(24, 3, 5, 1, None),
            sample(5, 2, 3, 3, Some(3)),
            sample(7, 3, 3, 1, Some(2)),
            sample(4, 2, 2, 0, Some(2)),
            fixed,
        ]
    }

    fn data_for(layout: &Layout) -> Vec<ArrayD<f32>> {
        layout
            .variables
            .iter()
            .filter(|v| v.values.is_none())
            .map(|v| {
                let shape: Vec<usize> = v.dims.iter().map(|&d| layout.dims[d].1).collect();
                let n: usize = shape.iter().product();
                ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|i| i as f32).collect()).unwrap()
            })
            .collect()
    }

    #[test]
    fn predicted_size_equals_written_size_for_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for (i, layout) in samples().iter().enumerate() {
            let data = data_for(layout);
            let classic = dir.path().join(format!("c{i}.nc"));
            write(
                layout,
                &data,
                Format::Classic64,
                &classic,
                layout.classic_size(),
            )
            .unwrap_or_else(|e| panic!("layout {i}: {e}"));
            let nc4 = dir.path().join(format!("n{i}.nc"));
            let size = netcdf4_size(layout).unwrap();
            write(layout, &data, Format::Netcdf4, &nc4, size)
                .unwrap_or_else(|e| panic!("layout {i}: {e}"));
        }
    }

    #[test]
    fn same_input_gives_identical_bytes_and_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let layout = sample(2, 3, 7, 2, Some(4));
        let data = data_for(&layout);
        for format in [Format::Classic64, Format::Netcdf4] {
            let size = match format {
                Format::Classic64 => layout.classic_size(),
                Format::Netcdf4 => netcdf4_size(&layout).unwrap(),
            };
            let a = dir.path().join("a.nc");
            let b = dir.path().join("b.nc");
            write(&layout, &data, format, &a, size).unwrap();
            write(&layout, &data, format, &b, size).unwrap();
            assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            let f = netcdf::open(&a).unwrap();
            let v = f.variable("var_0_odd").unwrap();
            let back: Vec<f32> = v.get_values(..).unwrap();
            assert_eq!(back, data[0].iter().copied().collect::<Vec<_>>());
            std::fs::remove_file(&a).unwrap();
            std::fs::remove_file(&b).unwrap();
        }
    }

    #[test]
    fn the_direct_cdf2_writer_matches_libnetcdf_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        for (i, layout) in samples().iter().enumerate() {
            let data = data_for(layout);
            let ours = dir.path().join(format!("ours{i}.nc"));
            write(
                layout,
                &data,
                Format::Classic64,
                &ours,
                layout.classic_size(),
            )
            .unwrap();
            let reference = dir.path().join(format!("libnetcdf{i}.nc"));
            write_inner(layout, Data::Full(&data), Format::Classic64, &reference).unwrap();
            assert_eq!(
                std::fs::read(&ours).unwrap(),
                std::fs::read(&reference).unwrap(),
                "layout {i}"
            );
            // Time is the record dimension where there is one, and the values read back.
            let f = netcdf::open(&ours).unwrap();
            let has_time = layout.dims.iter().any(|(name, _)| name == "time");
            for (name, len) in &layout.dims {
                let dim = f.dimension(name).unwrap();
                assert_eq!(dim.len(), *len, "layout {i}: {name}");
                assert_eq!(dim.is_unlimited(), name == "time", "layout {i}: {name}");
            }
            assert_eq!(layout.record_dim().is_some(), has_time, "layout {i}");
            let data_vars = layout.variables.iter().filter(|v| v.values.is_none());
            for (v, array) in data_vars.zip(&data) {
                let back: Vec<f32> = f.variable(&v.name).unwrap().get_values(..).unwrap();
                assert_eq!(
                    back,
                    array.iter().copied().collect::<Vec<_>>(),
                    "layout {i}"
                );
            }
        }
    }

    /// The shape of files served by their parts: time fixed, equal to libnetcdf's file byte
    /// for byte; with the data further on (zeros between, which libnetcdf cannot place
    /// there), read back by libnetcdf with every value and dimension as written.
    #[test]
    fn files_with_time_fixed_and_the_data_further_on_read_back_through_libnetcdf() {
        let dir = tempfile::tempdir().unwrap();
        for (i, base) in samples().into_iter().enumerate() {
            for data_begin in [0u64, 70_001] {
                let mut layout = base.clone();
                layout.classic = crate::layout::ClassicShape {
                    time_records: false,
                    data_begin,
                };
                let data = data_for(&layout);
                let ours = dir.path().join(format!("ours{i}-{data_begin}.nc"));
                write(
                    &layout,
                    &data,
                    Format::Classic64,
                    &ours,
                    layout.classic_size(),
                )
                .unwrap();
                let bytes = std::fs::read(&ours).unwrap();
                if data_begin == 0 {
                    let reference = dir.path().join(format!("libnetcdf{i}.nc"));
                    write_inner(&layout, Data::Full(&data), Format::Classic64, &reference).unwrap();
                    assert_eq!(bytes, std::fs::read(&reference).unwrap(), "layout {i}");
                } else if data.iter().any(|a| !a.is_empty()) {
                    assert!(bytes.len() as u64 > data_begin, "layout {i}");
                }
                let f = netcdf::open(&ours).unwrap();
                for (name, len) in &layout.dims {
                    let dim = f.dimension(name).unwrap();
                    assert_eq!(dim.len(), *len, "layout {i}: {name}");
                    assert!(!dim.is_unlimited(), "layout {i}: {name}");
                }
                let data_vars = layout.variables.iter().filter(|v| v.values.is_none());
                for (v, array) in data_vars.zip(&data) {
                    let back: Vec<f32> = f.variable(&v.name).unwrap().get_values(..).unwrap();
                    assert_eq!(
                        back,
                        array.iter().copied().collect::<Vec<_>>(),
                        "layout {i}"
                    );
                }
                for v in layout.variables.iter().filter(|v| v.values.is_some()) {
                    let n = f.variable(&v.name).unwrap().len();
                    assert_eq!(n, layout.elements(v) as usize, "layout {i}: {}", v.name);
                }
            }
        }
    }

    /// NetCDF-4 files keep `time` a fixed dimension (contiguous, size by template).
    #[test]
    fn netcdf4_files_keep_time_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = sample(3, 2, 2, 1, None);
        let path = dir.path().join("n.nc");
        let size = netcdf4_size(&layout).unwrap();
        write(&layout, &data_for(&layout), Format::Netcdf4, &path, size).unwrap();
        let f = netcdf::open(&path).unwrap();
        assert!(!f.dimension("time").unwrap().is_unlimited());
    }

    /// Records are cut along the first axis: an array of the right number of values but
    /// another shape is refused, not laid out wrongly.
    #[test]
    fn data_of_another_shape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = sample(2, 3, 4, 1, None);
        let data = vec![ArrayD::from_shape_vec(IxDyn(&[3, 2, 4]), vec![0f32; 24]).unwrap()];
        let err = write(
            &layout,
            &data,
            Format::Classic64,
            &dir.path().join("x.nc"),
            layout.classic_size(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, EncodeError::Shape { got, want, .. } if got == &[3, 2, 4] && want == &[2, 3, 4]),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_planned_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let layout = sample(1, 2, 2, 1, None);
        let data = data_for(&layout);
        let err = write(
            &layout,
            &data,
            Format::Classic64,
            &dir.path().join("x.nc"),
            layout.classic_size() + 4,
        )
        .unwrap_err();
        assert!(matches!(err, EncodeError::SizeMismatch { .. }), "{err}");
    }
}
