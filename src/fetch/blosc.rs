//! A Blosc chunk as stored: its layout (a 16-byte header, a table of block offsets, then the
//! compressed blocks) and which bytes hold some rows, and the reads of an object's bytes with
//! the version the store answered for. Used by the block reads ([`super::blocks`]) and by what
//! a preload reads ahead for them ([`super::prefetched`]).

use std::ops::Range;

use bytes::Bytes;
use zarrs_object_store::object_store::{
    self, path::Path, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
};

use super::error::ChunkError;
use super::tables::Version;

/// Blosc header length.
pub(crate) const HEADER: usize = 16;
/// Block offsets fetched with the header (one request covers chunks of up to this many
/// blocks; ARCO-ERA5 surface chunks have 8).
pub(crate) const TABLE_GUESS: usize = 64;
/// The Blosc flag for chunks stored uncompressed.
pub(crate) const MEMCPYED: u8 = 0x02;

/// What one request answered: the bytes from the start of its range (or the whole object) and
/// the object's version; `None` when the object does not exist.
pub(crate) type Answer = Option<(Bytes, Version)>;
/// The version of an object as the store reports it with an answer.
fn version_of(meta: &object_store::ObjectMeta) -> Version {
    Version {
        size: meta.size,
        e_tag: meta.e_tag.clone(),
        modified: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
    }
}

/// The bytes `r` of object `key` and the object's version; `None` if the object does not exist.
pub(crate) async fn range(
    store: &dyn ObjectStore,
    key: &Path,
    r: Range<u64>,
) -> Result<Answer, ChunkError> {
    let opts = GetOptions {
        range: Some(GetRange::Bounded(r)),
        ..GetOptions::default()
    };
    match store.get_opts(key, opts).await {
        Ok(res) => {
            let version = version_of(&res.meta);
            let bytes = res.bytes().await.map_err(|e| ChunkError::store(&e))?;
            Ok(Some((bytes, version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(ChunkError::store(&e)),
    }
}

/// The whole object `key` and its version; `None` if it does not exist.
pub(crate) async fn whole(store: &dyn ObjectStore, key: &Path) -> Result<Answer, ChunkError> {
    match store.get(key).await {
        Ok(res) => {
            let version = version_of(&res.meta);
            let bytes = res.bytes().await.map_err(|e| ChunkError::store(&e))?;
            Ok(Some((bytes, version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(ChunkError::store(&e)),
    }
}

/// The range a block read asks first: the header and the block table of a chunk of up to
/// [`TABLE_GUESS`] blocks.
pub(crate) fn head_range() -> Range<u64> {
    0..(HEADER + 4 * TABLE_GUESS) as u64
}

/// The header and block table at the start of `head` (the answer to [`head_range`]) of a
/// chunk of `total` float32 values, if it is Blosc this reader decodes block by block and the
/// table fits in `head`.
pub(crate) fn table_of(head: &Bytes, total: usize) -> Option<Bytes> {
    let header = Header::parse(head, total)?;
    let end = header.table_end();
    (header.flags & MEMCPYED == 0 && end <= head.len()).then(|| head.slice(..end))
}

/// The compressed bytes of the blocks holding rows `rows` (runs of flat rows, in any order) of
/// a chunk of shape `shape`, as its block table `table` places them: one range per run of
/// consecutive needed blocks, in order, not merged across blocks that are not needed; `None`
/// when the table is not one this reader decodes or a run lies outside the chunk.
pub(crate) fn block_ranges(
    table: &[u8],
    shape: &[usize],
    rows: &[Range<usize>],
) -> Option<Vec<Range<u64>>> {
    let row_len = *shape.last().unwrap_or(&1);
    let total: usize = shape.iter().product();
    let header = Header::parse(table, total)?;
    let (nblocks, table_end, cbytes) = (header.nblocks(), header.table_end(), header.cbytes);
    if rows.is_empty()
        || rows.iter().any(|r| r.is_empty() || r.end * row_len > total)
        || table.len() != table_end
        || header.flags & MEMCPYED != 0
    {
        return None;
    }
    let mut blocks: Vec<(usize, usize)> = rows
        .iter()
        .map(|r| {
            let (start_byte, end_byte) = (r.start * row_len * 4, r.end * row_len * 4);
            (
                start_byte / header.blocksize,
                (end_byte - 1) / header.blocksize,
            )
        })
        .collect();
    blocks.sort_unstable();
    // Runs of consecutive blocks (first, last), overlapping or touching ones joined.
    let mut runs: Vec<(usize, usize)> = Vec::with_capacity(blocks.len());
    for (b0, b1) in blocks {
        match runs.last_mut() {
            Some(last) if b0 <= last.1 + 1 => last.1 = last.1.max(b1),
            _ => runs.push((b0, b1)),
        }
    }
    let bstart = |b: usize| {
        if b < nblocks {
            u32_at(table, HEADER + 4 * b)
        } else {
            cbytes
        }
    };
    runs.into_iter()
        .map(|(b0, b1)| {
            let (from, to) = (bstart(b0), bstart(b1 + 1));
            (from >= table_end && to <= cbytes && from < to).then_some(from as u64..to as u64)
        })
        .collect()
}

/// The compressed bytes a block read of `rows` fetches besides the header and table: the sum
/// of the needed blocks' sizes (see [`block_ranges`]).
pub(crate) fn needed_block_bytes(
    table: &[u8],
    shape: &[usize],
    rows: &[Range<usize>],
) -> Option<u64> {
    Some(
        block_ranges(table, shape, rows)?
            .iter()
            .map(|r| r.end - r.start)
            .sum(),
    )
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// The fields of a Blosc header this reader needs.
pub(crate) struct Header {
    pub flags: u8,
    pub nbytes: usize,
    pub blocksize: usize,
    pub cbytes: usize,
}

impl Header {
    /// The header of a chunk of `total` float32 values, if it is one this reader decodes.
    pub fn parse(head: &[u8], total: usize) -> Option<Header> {
        if head.len() < HEADER || head[3] != 4 {
            return None;
        }
        let h = Header {
            flags: head[2],
            nbytes: u32_at(head, 4),
            blocksize: u32_at(head, 8),
            cbytes: u32_at(head, 12),
        };
        (h.nbytes == total * 4 && h.blocksize != 0).then_some(h)
    }

    pub fn nblocks(&self) -> usize {
        self.nbytes.div_ceil(self.blocksize)
    }

    pub fn table_end(&self) -> usize {
        HEADER + 4 * self.nblocks()
    }
}
