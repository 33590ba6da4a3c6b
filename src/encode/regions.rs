//! A classic file as regions: what its bytes are made of, before any of them is built.
//!
//! Input: a [`Layout`]. Output: the file's byte ranges in order, each either *known* — the
//! header, the coordinate variables, each record's `time` value, padding and the zeros before
//! the data: bytes that follow from the layout alone, given by [`Regions::known_bytes`] — or a
//! *slab*: one time step of one data variable (a record's slice of it, or its contiguous
//! slice when time is not the record dimension), whose bytes [`slab_bytes`] encodes from
//! that slice of data. The regions tile the file exactly, so a read of any range is answered
//! by the known bytes under it and the slabs it touches; equal, byte for byte, to the whole
//! file [`super::classic::write`] gives. This is the ground of building a file by the parts a
//! reader reads (docs/ARCHITECTURE.md, "Plan: files that cost what is read").

use std::ops::Range;

use ndarray::ArrayViewD;

use crate::layout::{CoordValues, Layout, RECORD_DIMENSION};

/// What one range of a classic file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Region {
    /// Bytes that follow from the layout alone.
    Known(Range<u64>),
    /// One time step of one data variable: `variable` is its index in the layout's
    /// variables, `record` the time step (0 for a variable without a time dimension first,
    /// whose slab is then the whole variable).
    Slab {
        /// The byte range in the file, padding included.
        range: Range<u64>,
        /// Index of the data variable in [`Layout::variables`].
        variable: usize,
        /// The time step it holds.
        record: u64,
    },
}

impl Region {
    /// The byte range of the region in the file.
    pub fn range(&self) -> &Range<u64> {
        match self {
            Region::Known(r) | Region::Slab { range: r, .. } => r,
        }
    }
}

/// Where one slab lies and what it holds (see [`Regions::slab`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slab {
    /// The byte range in the file, padding included.
    pub range: Range<u64>,
    /// Index of the data variable in [`Layout::variables`].
    pub variable: usize,
    /// The time step of a variable whose first dimension is time; `None` for one without,
    /// whose slab is the whole variable.
    pub record: Option<u64>,
}

/// A part of the file before the records.
#[derive(Debug, Clone)]
enum Fixed {
    /// The header.
    Header(Range<u64>),
    /// Zeros: before the data of a file whose data starts further on.
    Gap(Range<u64>),
    /// A coordinate variable (values known).
    Coord(usize, Range<u64>),
    /// A data variable without the record dimension: `steps` slabs of `step` bytes (the
    /// last one padded to the variable's end); `first` is the number of its first slab.
    Data {
        variable: usize,
        range: Range<u64>,
        step: u64,
        steps: u64,
        first: u64,
        /// Its first dimension is time: its slabs are time steps.
        timed: bool,
    },
}

impl Fixed {
    fn range(&self) -> &Range<u64> {
        match self {
            Fixed::Header(r) | Fixed::Gap(r) | Fixed::Coord(_, r) => r,
            Fixed::Data { range, .. } => range,
        }
    }
}

/// The regions of one classic file, computed once from its layout.
#[derive(Debug, Clone)]
pub struct Regions {
    header: Vec<u8>,
    /// Everything before the records, in file order, gaps included.
    fixed: Vec<Fixed>,
    /// Record variables: (variable index, offset in a record, bytes in a record).
    record_vars: Vec<(usize, u64, u64)>,
    /// Positions in `record_vars` of the data variables (one slab per record each).
    data_record: Vec<usize>,
    /// Slabs of the data variables without the record dimension.
    fixed_slabs: u64,
    begin_records: u64,
    record_size: u64,
    records: u64,
    size: u64,
}

impl Regions {
    /// The regions of `layout`'s classic file.
    pub fn of(layout: &Layout) -> Self {
        let placement = layout.classic_placement();
        let header = super::classic::header(layout);
        let single = placement.variables.iter().filter(|p| p.record).count() == 1;
        let mut fixed = vec![Fixed::Header(0..header.len() as u64)];
        let mut at = header.len() as u64;
        let mut fixed_slabs = 0;
        let gap_to = |fixed: &mut Vec<Fixed>, at: &mut u64, to: u64| {
            if *at < to {
                fixed.push(Fixed::Gap(*at..to));
                *at = to;
            }
        };
        let time = layout
            .dims
            .iter()
            .position(|(name, _)| name == RECORD_DIMENSION);
        let mut record_vars = Vec::new();
        for (i, p) in placement.variables.iter().enumerate() {
            let v = &layout.variables[i];
            if p.record {
                let len = if single {
                    placement.record_size
                } else {
                    p.vsize
                };
                record_vars.push((i, p.begin - placement.begin_records, len));
                continue;
            }
            gap_to(&mut fixed, &mut at, p.begin);
            let range = p.begin..p.begin + p.vsize;
            at = range.end;
            if v.values.is_some() {
                fixed.push(Fixed::Coord(i, range));
                continue;
            }
            let timed = matches!((time, v.dims.first()), (Some(t), Some(&d)) if d == t);
            let steps = if timed {
                layout.dims[time.expect("timed")].1 as u64
            } else {
                1
            };
            if steps == 0 {
                continue; // no time step: no bytes
            }
            let step = layout.elements(v) / steps * v.nc_type.size();
            fixed.push(Fixed::Data {
                variable: i,
                range,
                step,
                steps,
                first: fixed_slabs,
                timed,
            });
            fixed_slabs += steps;
        }
        if !record_vars.is_empty() {
            gap_to(&mut fixed, &mut at, placement.begin_records);
        }
        let is_data = |v: usize| layout.variables[v].values.is_none();
        let data_record = (0..record_vars.len())
            .filter(|&i| is_data(record_vars[i].0))
            .collect();
        Self {
            header,
            fixed,
            record_vars,
            data_record,
            fixed_slabs,
            begin_records: placement.begin_records,
            record_size: placement.record_size,
            records: placement.records,
            size: placement.begin_records + placement.records * placement.record_size,
        }
    }

    /// The size of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The number of slabs: one per time step and data variable (one for a data variable
    /// without a time dimension). Slabs are numbered in file order.
    pub fn slab_count(&self) -> u64 {
        self.fixed_slabs + self.records * self.data_record.len() as u64
    }

    /// Slab `index` (in file order), `None` past the last.
    pub fn slab(&self, index: u64) -> Option<Slab> {
        if index < self.fixed_slabs {
            return self.fixed.iter().find_map(|f| match f {
                Fixed::Data {
                    variable,
                    range,
                    step,
                    steps,
                    first,
                    timed,
                } if (*first..first + steps).contains(&index) => {
                    let k = index - first;
                    let start = range.start + k * step;
                    let end = if k + 1 == *steps {
                        range.end
                    } else {
                        start + step
                    };
                    Some(Slab {
                        range: start..end,
                        variable: *variable,
                        record: timed.then_some(k),
                    })
                }
                _ => None,
            });
        }
        let per = self.data_record.len() as u64;
        let k = index - self.fixed_slabs;
        if per == 0 || k >= self.records * per {
            return None;
        }
        let (record, j) = (k / per, (k % per) as usize);
        let (variable, offset, len) = self.record_vars[self.data_record[j]];
        let at = self.begin_records + record * self.record_size + offset;
        Some(Slab {
            range: at..at + len,
            variable,
            record: Some(record),
        })
    }

    /// The index of the slab of `variable` (a layout index) at time step `record` (ignored
    /// for a variable without a time dimension); `None` when that is not a slab.
    pub fn slab_index(&self, variable: usize, record: u64) -> Option<u64> {
        for f in &self.fixed {
            if let Fixed::Data {
                variable: v,
                steps,
                first,
                ..
            } = f
            {
                if *v == variable {
                    return Some(first + record.min(steps - 1));
                }
            }
        }
        let j = self
            .data_record
            .iter()
            .position(|&r| self.record_vars[r].0 == variable)?;
        (record < self.records)
            .then(|| self.fixed_slabs + record * self.data_record.len() as u64 + j as u64)
    }

    /// The regions that overlap `range`, in order (clipped to the file, not to `range`).
    pub fn under(&self, layout: &Layout, range: Range<u64>) -> Vec<Region> {
        let end = range.end.min(self.size);
        let mut out = Vec::new();
        if range.start >= end {
            return out;
        }
        let overlaps = |r: &Range<u64>| r.start < end && range.start < r.end;
        for f in &self.fixed {
            if !overlaps(f.range()) {
                continue;
            }
            match f {
                Fixed::Header(r) | Fixed::Gap(r) | Fixed::Coord(_, r) => {
                    out.push(Region::Known(r.clone()))
                }
                Fixed::Data {
                    variable,
                    range: r,
                    step,
                    steps,
                    first,
                    ..
                } => {
                    // The steps under the range only: a variable may have thousands.
                    let lo = (range.start.max(r.start) - r.start) / step.max(&1);
                    let hi = ((end.min(r.end) - 1 - r.start) / step.max(&1)).min(steps - 1);
                    for k in lo..=hi {
                        let slab = self.slab(first + k).expect("a slab of the variable");
                        out.push(Region::Slab {
                            range: slab.range,
                            variable: *variable,
                            record: k,
                        });
                    }
                }
            }
        }
        if self.record_size == 0 || self.records == 0 {
            return out;
        }
        let first = range.start.saturating_sub(self.begin_records) / self.record_size;
        let last = (end - 1).saturating_sub(self.begin_records) / self.record_size;
        if end <= self.begin_records {
            return out;
        }
        for record in first..=last.min(self.records - 1) {
            let at = self.begin_records + record * self.record_size;
            for &(v, offset, len) in &self.record_vars {
                let r = at + offset..at + offset + len;
                if !overlaps(&r) {
                    continue;
                }
                out.push(if layout.variables[v].values.is_some() {
                    Region::Known(r)
                } else {
                    Region::Slab {
                        range: r,
                        variable: v,
                        record,
                    }
                });
            }
        }
        out
    }

    /// The bytes of `range`, which must lie within known regions of `layout`'s file (`None`
    /// when part of it is a slab or past the end).
    pub fn known_bytes(&self, layout: &Layout, range: Range<u64>) -> Option<Vec<u8>> {
        if range.end > self.size {
            return None;
        }
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for region in self.under(layout, range.clone()) {
            let Region::Known(r) = region else {
                return None;
            };
            let from = range.start.max(r.start);
            let to = range.end.min(r.end);
            out.extend_from_slice(&self.known_part(layout, &r, from..to));
        }
        (out.len() as u64 == range.end - range.start).then_some(out)
    }

    /// The bytes `part` of the known region `r`.
    fn known_part(&self, layout: &Layout, r: &Range<u64>, part: Range<u64>) -> Vec<u8> {
        let (from, to) = (
            (part.start - r.start) as usize,
            (part.end - r.start) as usize,
        );
        if r.start == 0 {
            return self.header[from..to].to_vec();
        }
        let len = (r.end - r.start) as usize;
        if r.start < self.begin_records || self.records == 0 {
            return match self.fixed.iter().find(|f| f.range().start == r.start) {
                Some(Fixed::Coord(v, _)) => {
                    let values = layout.variables[*v].values.as_ref().expect("known");
                    padded(be_bytes(values, None), len)[from..to].to_vec()
                }
                _ => vec![0; to - from], // a gap
            };
        }
        let record = (r.start - self.begin_records) / self.record_size;
        let offset = (r.start - self.begin_records) % self.record_size;
        let &(v, _, _) = self
            .record_vars
            .iter()
            .find(|(_, o, _)| *o == offset)
            .expect("a known region starts a variable");
        let values = layout.variables[v].values.as_ref().expect("known");
        padded(
            be_bytes(values, Some((record as usize, self.records as usize))),
            len,
        )[from..to]
            .to_vec()
    }
}

/// The bytes of one slab: `data` (the slab's values in C order) big-endian, padded to
/// `len` bytes (the slab region's length).
pub fn slab_bytes(data: ArrayViewD<'_, f32>, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    for x in data.iter() {
        out.extend_from_slice(&x.to_be_bytes());
    }
    padded(out, len as usize)
}

/// The bytes of known `values`, or of record `one`'s slice of them (of `records`).
fn be_bytes(values: &CoordValues, one: Option<(usize, usize)>) -> Vec<u8> {
    match one {
        None => values.be_bytes(0..values.len()),
        Some((r, records)) => {
            let n = values.len() / records.max(1);
            values.be_bytes(r * n..(r + 1) * n)
        }
    }
}

fn padded(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    bytes.resize(len, 0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::tests::sample;
    use crate::layout::RECORD_DIMENSION;
    use ndarray::{ArrayD, Axis, IxDyn};

    /// Data for every data variable of `layout`, different in every cell.
    fn data_for(layout: &Layout) -> Vec<ArrayD<f32>> {
        let mut k = 0.0f32;
        layout
            .variables
            .iter()
            .filter(|v| v.values.is_none())
            .map(|v| {
                let shape: Vec<usize> = v.dims.iter().map(|&d| layout.dims[d].1).collect();
                ArrayD::from_shape_fn(IxDyn(&shape), |_| {
                    k += 1.25;
                    k
                })
            })
            .collect()
    }

    /// Whether variable `v`'s first dimension is time (its slabs are time steps).
    fn timed(layout: &Layout, v: usize) -> bool {
        layout.variables[v]
            .dims
            .first()
            .is_some_and(|&d| layout.dims[d].0 == RECORD_DIMENSION)
    }

    /// `layout` in the other classic shapes: time fixed, the data further on.
    fn shapes(layout: Layout) -> Vec<Layout> {
        let mut out = vec![layout.clone()];
        for (time_records, data_begin) in [(false, 0), (false, 5000), (true, 3001)] {
            let mut l = layout.clone();
            l.classic = crate::layout::ClassicShape {
                time_records,
                data_begin,
            };
            out.push(l);
        }
        out
    }

    /// The file's bytes for `range`, assembled from the regions alone.
    fn assembled(layout: &Layout, data: &[ArrayD<f32>], range: Range<u64>) -> Vec<u8> {
        let regions = Regions::of(layout);
        let data_index = layout.data_index();
        let mut out = Vec::new();
        for region in regions.under(layout, range.clone()) {
            let r = region.range().clone();
            let bytes = match region {
                Region::Known(_) => regions.known_bytes(layout, r.clone()).unwrap(),
                Region::Slab {
                    variable, record, ..
                } => {
                    let a = &data[data_index[variable].unwrap()];
                    let slice = if timed(layout, variable) {
                        a.index_axis(Axis(0), record as usize)
                    } else {
                        a.view()
                    };
                    slab_bytes(slice, r.end - r.start)
                }
            };
            let from = range.start.max(r.start) - r.start;
            let to = range.end.min(r.end) - r.start;
            out.extend_from_slice(&bytes[from as usize..to as usize]);
        }
        out
    }

    #[test]
    fn regions_tile_the_file_and_assemble_to_the_written_bytes() {
        for layout in [
            sample(1, 3, 4, 1, None),
            sample(5, 3, 5, 2, None),
            sample(4, 2, 3, 3, Some(2)),
            sample(7, 1, 1, 1, Some(3)),
        ]
        .into_iter()
        .flat_map(shapes)
        {
            let data = data_for(&layout);
            let mut file = Vec::new();
            crate::encode::classic::write(&layout, &data, &mut file).unwrap();
            let regions = Regions::of(&layout);
            assert_eq!(regions.size(), file.len() as u64);
            assert_eq!(regions.size(), layout.classic_size());
            // Contiguous, from 0 to the end, no gap and no overlap.
            let all = regions.under(&layout, 0..u64::MAX);
            let mut at = 0;
            for r in &all {
                assert_eq!(r.range().start, at, "{all:?}");
                at = r.range().end;
            }
            assert_eq!(at, file.len() as u64);
            let slabs = all
                .iter()
                .filter(|r| matches!(r, Region::Slab { .. }))
                .count();
            let steps = layout.dims[0].1;
            let n_data = layout
                .variables
                .iter()
                .filter(|v| v.values.is_none())
                .count();
            assert_eq!(slabs, steps * n_data, "one slab per time step and variable");
            assert_eq!(regions.slab_count(), slabs as u64);
            // Numbered in file order, each found again by its variable and record.
            let listed: Vec<Slab> = all
                .iter()
                .filter_map(|r| match r {
                    Region::Slab {
                        range,
                        variable,
                        record,
                    } => Some(Slab {
                        range: range.clone(),
                        variable: *variable,
                        record: timed(&layout, *variable).then_some(*record),
                    }),
                    Region::Known(_) => None,
                })
                .collect();
            for (i, slab) in listed.iter().enumerate() {
                assert_eq!(regions.slab(i as u64).as_ref(), Some(slab));
                let index = regions.slab_index(slab.variable, slab.record.unwrap_or(0));
                assert_eq!(index, Some(i as u64));
            }
            assert_eq!(regions.slab(slabs as u64), None);
            assert_eq!(assembled(&layout, &data, 0..file.len() as u64), file);
            // Ranges of every start and length (small files: all of them).
            let n = file.len() as u64;
            for start in (0..n).step_by(3) {
                for len in [1u64, 2, 5, 17, 64, 333] {
                    let end = (start + len).min(n);
                    assert_eq!(
                        assembled(&layout, &data, start..end),
                        file[start as usize..end as usize],
                        "range {start}..{end}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_header_and_coordinates_are_known_and_data_is_not() {
        let layout = sample(3, 2, 2, 1, None);
        let regions = Regions::of(&layout);
        let header = crate::encode::classic::header(&layout);
        assert_eq!(
            regions
                .known_bytes(&layout, 0..header.len() as u64)
                .unwrap(),
            header
        );
        let first_slab = regions
            .under(&layout, 0..regions.size())
            .into_iter()
            .find(|r| matches!(r, Region::Slab { .. }))
            .unwrap();
        let r = first_slab.range().clone();
        assert!(regions.known_bytes(&layout, r.start..r.start + 1).is_none());
        assert!(regions
            .known_bytes(&layout, 0..regions.size() + 1)
            .is_none());
    }
}
