//! Fetches and subsets the data of a plan: only the chunks it needs, concurrently.
//!
//! Input: a [`Plan`] and its [`Source`]. Output: one float32 array per data variable, shaped
//! like the variable in the file. For each variable the selected positions are grouped by the
//! chunk that holds them; each chunk is read once (one GET, decoded by zarrs), then the
//! selected points are gathered into place with ndarray. Absent chunks
//! read as the source's fill value (NaN), as in xarray. Invariant: memory in flight is bounded
//! by [`FetchOptions::memory_budget`] whatever the plan's size.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{stream, StreamExt, TryStreamExt};
use ndarray::{ArrayD, Axis, Dimension, IxDyn, Slice};
use tokio::sync::Semaphore;

use crate::plan::Plan;
use crate::source::Source;

/// Tuning of the fetch stage.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Chunk reads in flight at once.
    pub concurrency: usize,
    /// Upper bound on decoded bytes in flight (a read larger than this runs alone).
    pub memory_budget: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            // Object stores reward concurrency (the layout notes measured 0.72 s per chunk
            // serially against 0.25 s with 32 threads); 16 keeps two cores busy decoding.
            concurrency: 16,
            memory_budget: 1 << 30,
        }
    }
}

/// A chunk could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[error("reading {variable} chunk {chunk:?} from {url}: {why}")]
pub struct FetchError {
    /// The source URL.
    pub url: String,
    /// The variable.
    pub variable: String,
    /// The chunk's grid indices.
    pub chunk: Vec<u64>,
    /// The store's or the codec's message.
    pub why: String,
}

/// Positions of one dimension that fall in one chunk: `(output position, source position)`,
/// sorted by output position.
type Group = (u64, Vec<(usize, usize)>);

/// The data of every variable of a plan, in file order.
pub async fn fetch(
    plan: &Plan,
    source: &Source,
    options: FetchOptions,
) -> Result<Vec<ArrayD<f32>>, FetchError> {
    let mut outputs = Vec::with_capacity(plan.variables.len());
    let mut tasks = Vec::new();
    for (vi, pv) in plan.variables.iter().enumerate() {
        let var = &source.variables[&pv.name];
        let shape: Vec<usize> = pv
            .dims
            .iter()
            .map(|d| plan.selections[d].indices.len())
            .collect();
        outputs.push(ArrayD::<f32>::from_elem(IxDyn(&shape), f32::NAN));
        let groups: Vec<Vec<Group>> = pv
            .dims
            .iter()
            .zip(&var.chunks)
            .map(|(d, &chunk_len)| group_by_chunk(&plan.selections[d].indices, chunk_len))
            .collect();
        for combo in cartesian(&groups) {
            tasks.push((
                vi,
                var.array.clone(),
                pv.name.clone(),
                var.chunks.clone(),
                combo,
            ));
        }
    }

    let budget_mib = options.memory_budget.div_ceil(1 << 20).max(1) as u32;
    let permits = Arc::new(Semaphore::new(budget_mib as usize));
    let url = source.url.clone();
    // Boxed futures built in a loop (not a closure passed to `map`) keep the whole flow future
    // `Send` for every lifetime, which the single-flight `Shared` future needs.
    let mut reads: Vec<BoxFuture<'static, Result<(usize, Placed), FetchError>>> =
        Vec::with_capacity(tasks.len());
    for (vi, array, name, chunk_shape, combo) in tasks {
        let permits = permits.clone();
        let url = url.clone();
        reads.push(Box::pin(async move {
            let chunk: Vec<u64> = combo.iter().map(|(c, _)| *c).collect();
            let origin: Vec<u64> = chunk.iter().zip(&chunk_shape).map(|(c, n)| c * n).collect();
            let bytes = chunk_shape.iter().product::<u64>() * 4;
            let need = (bytes.div_ceil(1 << 20) as u32).clamp(1, budget_mib);
            let indices = chunk.clone();
            let handle = tokio::spawn(async move {
                let _permit = permits.acquire_many(need).await.expect("never closed");
                // One GET per chunk: a whole-chunk read is a plain GET, while a subset read
                // would first ask the store for the object's size (a second round trip), and
                // Blosc decodes the whole chunk either way.
                let block = array
                    .async_retrieve_chunk::<ArrayD<f32>>(&indices)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(gather(block, &origin, &combo))
            });
            let gathered = handle
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|why| FetchError {
                    url,
                    variable: name,
                    chunk,
                    why,
                })?;
            Ok((vi, gathered))
        }));
    }
    let results = stream::iter(reads).buffer_unordered(options.concurrency.max(1));

    let mut results = std::pin::pin!(results);
    while let Some((vi, (out_ranges, block))) = results.try_next().await? {
        place(&mut outputs[vi], &out_ranges, block);
    }
    Ok(outputs)
}

/// Groups selected source positions by chunk index, keeping their output positions.
fn group_by_chunk(indices: &[usize], chunk_len: u64) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (out, &src) in indices.iter().enumerate() {
        let c = src as u64 / chunk_len.max(1);
        match groups.iter_mut().find(|g| g.0 == c) {
            Some(g) => g.1.push((out, src)),
            None => groups.push((c, vec![(out, src)])),
        }
    }
    groups
}

/// Every combination of one group per dimension.
fn cartesian(groups: &[Vec<Group>]) -> Vec<Vec<Group>> {
    let mut combos: Vec<Vec<Group>> = vec![Vec::new()];
    for dim in groups {
        let mut next = Vec::with_capacity(combos.len() * dim.len());
        for c in &combos {
            for g in dim {
                let mut c2 = c.clone();
                c2.push(g.clone());
                next.push(c2);
            }
        }
        combos = next;
    }
    combos
}

/// Output placement of a gathered block: per dimension, the output positions in block order.
type Placed = (Vec<Vec<usize>>, ArrayD<f32>);

/// Picks the selected points out of a decoded chunk whose first element sits at `origin`,
/// in output order.
fn gather(block: ArrayD<f32>, origin: &[u64], combo: &[Group]) -> Placed {
    let mut block = block;
    let mut out_positions = Vec::with_capacity(combo.len());
    for (axis, ((_, positions), &start)) in combo.iter().zip(origin).enumerate() {
        let local: Vec<usize> = positions
            .iter()
            .map(|&(_, src)| src - start as usize)
            .collect();
        let contiguous = local.windows(2).all(|w| w[1] == w[0] + 1)
            && local.first() == Some(&0)
            && local.len() == block.len_of(Axis(axis));
        if !contiguous {
            block = block.select(Axis(axis), &local);
        }
        out_positions.push(positions.iter().map(|&(out, _)| out).collect());
    }
    (out_positions, block)
}

/// Writes a gathered block into the output array at its output positions.
fn place(output: &mut ArrayD<f32>, out_positions: &[Vec<usize>], block: ArrayD<f32>) {
    let runs: Option<Vec<(usize, usize)>> = out_positions
        .iter()
        .map(|p| {
            let contiguous = p.windows(2).all(|w| w[1] == w[0] + 1);
            contiguous.then(|| (p[0], p[0] + p.len()))
        })
        .collect();
    match runs {
        Some(runs) => {
            let mut view = output.view_mut();
            for (axis, (a, b)) in runs.into_iter().enumerate() {
                view.slice_axis_inplace(Axis(axis), Slice::from(a..b));
            }
            view.assign(&block);
        }
        None => {
            for (idx, &v) in block.indexed_iter() {
                let target: Vec<usize> = idx
                    .slice()
                    .iter()
                    .zip(out_positions)
                    .map(|(&i, p)| p[i])
                    .collect();
                output[IxDyn(&target)] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_chunks_and_keep_output_order() {
        let g = group_by_chunk(&[5, 6, 10, 3], 4);
        assert_eq!(
            g,
            vec![
                (1, vec![(0, 5), (1, 6)]),
                (2, vec![(2, 10)]),
                (0, vec![(3, 3)])
            ]
        );
    }

    #[test]
    fn gather_and_place_handle_wrapped_longitudes() {
        // A 1x6 chunk; output wants source columns 4,5,0,1 (a 0° crossing) in that order.
        let block =
            ArrayD::from_shape_vec(IxDyn(&[1, 6]), (0..6).map(|x| x as f32).collect()).unwrap();
        let combo = vec![(0, vec![(0, 0)]), (0, vec![(0, 4), (1, 5), (2, 0), (3, 1)])];
        let (pos, b) = gather(block, &[0, 0], &combo);
        let mut out = ArrayD::from_elem(IxDyn(&[1, 4]), f32::NAN);
        place(&mut out, &pos, b);
        assert_eq!(
            out.iter().copied().collect::<Vec<_>>(),
            vec![4.0, 5.0, 0.0, 1.0]
        );
    }
}
