//! Reads only the Blosc blocks of a chunk that hold the rows a plan needs.
//!
//! A Blosc chunk is a 16-byte header, a table of block offsets, then independently compressed
//! blocks. One ranged GET takes the header and the table; a second takes the compressed blocks
//! that cover the needed rows (C order: a "row" is one run of the last dimension); c-blosc's
//! `blosc_getitem` then decodes just those items from a buffer holding only the fetched bytes.
//! For a 5×5 sample of a 721×1440 chunk that is one block of eight.
//!
//! Invariant: the decoded rows are bit-identical to a full decode (a test compares them on
//! every test deskriptor); whenever the header is not plain Blosc of float32 as expected, the
//! caller falls back to the full decode ([`Partial::Unsupported`]).

use std::ops::Range;

use ndarray::{ArrayD, IxDyn};

use super::blosc::{
    block_ranges, head_range, range, u32_at, whole, Answer, Header, HEADER, MEMCPYED,
};
use super::error::ChunkError;
use super::link::LinkMeter;
use super::prefetched::Prefetched;
use super::tables::{BlockTables, Table, Version};
use zarrs_object_store::object_store::{path::Path, ObjectStore};

/// Bytes added on each side of a guessed range of blocks (see [`guessed_blocks`]).
const GUESS_MARGIN: u64 = 16 << 10;
/// And a 1/`GUESS_SPREAD` part of its offset: the compressed sizes of neighbouring steps
/// differ by a few per cent (measured on the replica: a 30-day series guessed with 1/64 read
/// 1.16× its needed bytes, 24 guesses of 1440 short; with 1/8, 1.49×).
const GUESS_SPREAD: u64 = 64;
/// The result of a block read.
pub(crate) enum Partial {
    /// A chunk-shaped array whose requested rows (all rows for [`read_whole`]) are decoded;
    /// other rows are zero and must not be read.
    Rows(ArrayD<f32>),
    /// The object does not exist: the chunk reads as the fill value.
    Absent,
    /// Not plain Blosc over float32 as expected: decode the whole chunk instead.
    Unsupported,
}

/// Where a read gets its bytes: the store, after what was read ahead for it.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    pub store: &'a dyn ObjectStore,
    pub ahead: Option<&'a Prefetched>,
    /// Measures the link from the answers of the store (not from what was read ahead).
    pub link: Option<&'a LinkMeter>,
}

impl Reader<'_> {
    /// The bytes `r` of `key` (see [`range`]), from what was read ahead when it covers them.
    async fn range(&self, key: &Path, r: Range<u64>) -> Result<Answer, ChunkError> {
        if let Some(answer) = self.ahead.map(|a| a.get(key.as_ref(), Some(r.clone()))) {
            if let Some(answer) = answer.await {
                return Ok(answer);
            }
        }
        let asked = std::time::Instant::now();
        let answer = range(self.store, key, r).await?;
        if let (Some(link), Some((bytes, _))) = (self.link, &answer) {
            link.observe(bytes.len(), asked.elapsed());
        }
        Ok(answer)
    }

    /// The bytes of each range of `ranges` (in order, from one object version), from what was
    /// read ahead where it covers them; the rest from the store, concurrently, neighbours
    /// merged only where the gap between them costs less than a round trip (see
    /// [`merge_together`]). `None` when the object is absent or versions differ between answers
    /// (the object changed between requests).
    async fn ranges(
        &self,
        key: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Option<(Vec<bytes::Bytes>, Version)>, ChunkError> {
        let mut got: Vec<Option<(bytes::Bytes, Version)>> = vec![None; ranges.len()];
        if let Some(ahead) = self.ahead {
            for (slot, r) in got.iter_mut().zip(ranges) {
                match ahead.get(key.as_ref(), Some(r.clone())).await {
                    Some(Some(answer)) => *slot = Some(answer),
                    Some(None) => return Ok(None),
                    None => {}
                }
            }
        }
        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&got)
            .filter(|(_, g)| g.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        let requests = merge_together(&missing);
        let answers =
            futures::future::try_join_all(requests.iter().map(|r| self.range(key, r.clone())))
                .await?;
        let mut answered = Vec::with_capacity(answers.len());
        for (r, answer) in requests.iter().zip(answers) {
            let Some(answer) = answer else {
                return Ok(None);
            };
            answered.push((r.clone(), answer));
        }
        for (slot, r) in got.iter_mut().zip(ranges) {
            if slot.is_some() {
                continue;
            }
            let (req, (bytes, version)) = answered
                .iter()
                .find(|(req, _)| req.start <= r.start && r.end <= req.end)
                .expect("every missing range is in one request");
            let (from, to) = ((r.start - req.start) as usize, (r.end - req.start) as usize);
            if to > bytes.len() {
                // Cut short: the caller finds the length wrong.
                *slot = Some((bytes.slice(from.min(bytes.len())..), version.clone()));
            } else {
                *slot = Some((bytes.slice(from..to), version.clone()));
            }
        }
        let mut parts = Vec::with_capacity(got.len());
        let mut first: Option<Version> = None;
        for (bytes, version) in got.into_iter().flatten() {
            match &first {
                Some(v) if *v != version => return Ok(None),
                Some(_) => {}
                None => first = Some(version),
            }
            parts.push(bytes);
        }
        Ok(first.map(|v| (parts, v)))
    }

    /// The whole object `key` (see [`whole`]), from what was read ahead when it is there.
    async fn whole(&self, key: &Path) -> Result<Answer, ChunkError> {
        if let Some(answer) = self.ahead.map(|a| a.get(key.as_ref(), None)) {
            if let Some(answer) = answer.await {
                return Ok(answer);
            }
        }
        whole(self.store, key).await
    }
}

/// What decoding rows with a table gave.
enum WithTable {
    Done(Partial),
    /// The object is not the one the table was read from (replaced, or gone): read afresh.
    Stale,
}

/// Gaps between ranges asked for together that are fetched rather than split: below this an
/// answer's time is its round trip ([`super::link::SMALL`]), so a request beside the first one
/// costs more than the gap's bytes.
const TOGETHER_GAP: u64 = super::link::SMALL as u64;

/// The requests that fetch `ranges` (sorted, not overlapping), all sent at once: neighbours
/// merged only where the gap between them is at most [`TOGETHER_GAP`]. Requests sent together
/// cost one round trip however many they are, so the bandwidth-delay rule (a gap against a
/// second round trip, [`super::link`]) does not apply to them, while the bytes of a gap cost
/// the link that many reads share. Measured over the delaying server (30 ms, 400 Mbit/s per
/// connection, 1 Gbit/s link), a 30-day series of a 2×2 box read 2.36× its needed bytes in
/// 2.6× the link limit with gaps merged by that rule, and 1.16× in 1.35× split.
fn merge_together(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start >= last.end && r.start - last.end <= TOGETHER_GAP => {
                last.end = r.end
            }
            _ => out.push(r.clone()),
        }
    }
    out
}

/// Reads rows `rows` (runs of flat indices over all but the last chunk dimension, e.g. one
/// run of latitudes per needed level of a pressure-level chunk) of the chunk at `key`, whose
/// shape is `shape`: the blocks holding them, as separate ranges (see [`merge_together`]).
/// With `tables`, a chunk's block table read before (of the same object version) saves the
/// first of the two requests.
pub(crate) async fn read_rows(
    reader: Reader<'_>,
    key: &str,
    shape: &[usize],
    rows: &[Range<usize>],
    tables: Option<&BlockTables>,
) -> Result<Partial, ChunkError> {
    let path = Path::from(key);
    let row_len = *shape.last().unwrap_or(&1);
    let total: usize = shape.iter().product();
    if rows.is_empty() || rows.iter().any(|r| r.is_empty() || r.end * row_len > total) {
        return Ok(Partial::Unsupported);
    }
    if let Some(table) = tables.and_then(|t| t.get(key)) {
        let known = Some(&table.version);
        match decode_rows(reader, &path, shape, rows, &table.bytes, known, &[]).await? {
            WithTable::Done(p) => return Ok(p),
            WithTable::Stale => tables.expect("a table came from it").forget(key),
        }
    }
    // No table of this chunk yet: ask for its header and table and, where the table of
    // another chunk of the array is known, at the same time for the blocks it places the
    // needed rows in (neighbouring steps compress alike; margins cover the difference): one
    // round trip, and bytes close to the needed ones. A guess that falls short costs a
    // second request for what it missed.
    // (Not where a preload reads ahead: its reads are planned, with the table's range.)
    let guess = tables
        .filter(|_| reader.ahead.is_none())
        .and_then(|t| guessed_blocks(t, key, shape, rows))
        .unwrap_or_default();
    let mut asked = coalesce(std::iter::once(head_range()).chain(guess).collect());
    asked = merge_together(&asked);
    let first = asked.remove(0);
    let (head, rest) = futures::join!(reader.range(&path, first), async {
        if asked.is_empty() {
            Ok(None)
        } else {
            reader.ranges(&path, &asked).await
        }
    });
    let Some((head, version)) = head? else {
        return Ok(Partial::Absent);
    };
    let mut have = vec![(0u64, head.clone())];
    // Of another version (the object changed between the answers), or refused (a guess past
    // the end of a smaller object): not used; the blocks are then asked for by the table.
    if let Ok(Some((parts, v))) = rest {
        if v == version {
            have.extend(asked.iter().map(|r| r.start).zip(parts));
        }
    }
    let Some(header) = Header::parse(&head, total) else {
        return Ok(Partial::Unsupported);
    };
    if header.flags & MEMCPYED != 0 {
        // Stored raw after the header.
        let raw: Vec<Range<u64>> = rows
            .iter()
            .map(|r| (HEADER + r.start * row_len * 4) as u64..(HEADER + r.end * row_len * 4) as u64)
            .collect();
        let mut values = vec![0f32; total];
        let (parts, _) = reader
            .ranges(&path, &raw)
            .await?
            .ok_or(ChunkError::Changed)?;
        for (r, part) in rows.iter().zip(parts) {
            if part.len() != r.len() * row_len * 4 {
                return Ok(Partial::Unsupported);
            }
            let out = &mut values[r.start * row_len..r.end * row_len];
            for (v, b) in out.iter_mut().zip(part.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        return Ok(Partial::Rows(to_array(shape, values)?));
    }
    let table_end = header.table_end();
    let table = if table_end <= head.len() {
        head.slice(..table_end)
    } else {
        let (rest, _) = reader
            .range(&path, head.len() as u64..table_end as u64)
            .await?
            .ok_or(ChunkError::Changed)?;
        let mut t = head.to_vec();
        t.extend_from_slice(&rest);
        bytes::Bytes::from(t)
    };
    if table.len() != table_end {
        return Ok(Partial::Unsupported);
    }
    if let Some(tables) = tables {
        tables.put(
            key,
            Table {
                bytes: table.clone(),
                version: version.clone(),
            },
        );
    }
    match decode_rows(reader, &path, shape, rows, &table, Some(&version), &have).await? {
        WithTable::Done(p) => Ok(p),
        WithTable::Stale => Err(ChunkError::Changed),
    }
}

/// The byte ranges of chunk `key` likely to hold the blocks of `rows`, as the table of
/// another chunk of the same array places them, widened on each side by a margin (a
/// 1/[`GUESS_SPREAD`] part of their offset and [`GUESS_MARGIN`]); `None` without such a
/// table.
fn guessed_blocks(
    tables: &BlockTables,
    key: &str,
    shape: &[usize],
    rows: &[Range<usize>],
) -> Option<Vec<Range<u64>>> {
    let sibling = tables.sibling(key)?;
    let ranges = block_ranges(&sibling.bytes, shape, rows)?;
    Some(
        ranges
            .into_iter()
            .map(|r| {
                let start = r
                    .start
                    .saturating_sub(r.start / GUESS_SPREAD + GUESS_MARGIN);
                start..r.end + r.end / GUESS_SPREAD + GUESS_MARGIN
            })
            .collect(),
    )
}

/// `ranges` sorted, overlapping and touching ones joined.
fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Fetches the blocks of `rows` as the block table `table` places them (those not in `have`,
/// parts of the chunk already fetched, each with its offset) and decodes them; the answers must come from the object version
/// `known` (else [`WithTable::Stale`]).
async fn decode_rows(
    reader: Reader<'_>,
    path: &Path,
    shape: &[usize],
    rows: &[Range<usize>],
    table: &[u8],
    known: Option<&Version>,
    have: &[(u64, bytes::Bytes)],
) -> Result<WithTable, ChunkError> {
    let row_len = *shape.last().unwrap_or(&1);
    let total: usize = shape.iter().product();
    let unsupported = Ok(WithTable::Done(Partial::Unsupported));
    let Some(ranges) = block_ranges(table, shape, rows) else {
        return unsupported;
    };
    let cbytes = u32_at(table, 12);
    if known.is_some_and(|k| k.size != cbytes as u64) {
        return Ok(WithTable::Stale);
    }
    // A buffer laid out like the whole compressed chunk, holding only the fetched bytes:
    // blosc_getitem reads the header, the offsets and the blocks it decodes, nothing else.
    let mut buf = vec![0u8; cbytes];
    buf[..table.len()].copy_from_slice(table);
    let holding = |r: &Range<u64>| {
        have.iter()
            .find(|(at, b)| *at <= r.start && r.end <= at + b.len() as u64)
    };
    let mut fetch = Vec::new();
    for r in ranges {
        match holding(&r) {
            Some((at, b)) => {
                let (from, to) = ((r.start - at) as usize, (r.end - at) as usize);
                buf[r.start as usize..r.end as usize].copy_from_slice(&b[from..to]);
            }
            None => fetch.push(r),
        }
    }
    if !fetch.is_empty() {
        let Some((parts, version)) = reader.ranges(path, &fetch).await? else {
            return Ok(WithTable::Stale);
        };
        if known.is_some_and(|k| *k != version) || version.size != cbytes as u64 {
            return Ok(WithTable::Stale);
        }
        for (r, part) in fetch.iter().zip(parts) {
            let (from, to) = (r.start as usize, r.end as usize);
            if part.len() != to - from {
                return unsupported;
            }
            buf[from..to].copy_from_slice(&part);
        }
    }
    let mut values = vec![0f32; total];
    for r in rows {
        let nitems = r.len() * row_len;
        let (Ok(start), Ok(n)) = (i32::try_from(r.start * row_len), i32::try_from(nitems)) else {
            return unsupported;
        };
        let out = &mut values[r.start * row_len..r.end * row_len];
        // SAFETY: `buf` is `cbytes` long as its header declares, with the header, the offset
        // table and every block overlapping items start..start+n in place (`block_ranges`
        // checked the table and placed every block of every run); `out` has room for exactly
        // n items of typesize 4. blosc_getitem reads only those parts and writes n*4 bytes.
        let written = unsafe {
            blosc_src::blosc_getitem(buf.as_ptr().cast(), start, n, out.as_mut_ptr().cast())
        };
        if written < 0 || written as usize != nitems * 4 {
            return Err(ChunkError::Corrupt(format!(
                "blosc_getitem failed ({written}) on {path}"
            )));
        }
        if cfg!(target_endian = "big") {
            for v in out.iter_mut() {
                *v = f32::from_bits(v.to_bits().swap_bytes());
            }
        }
    }
    Ok(WithTable::Done(Partial::Rows(to_array(shape, values)?)))
}

fn to_array(shape: &[usize], values: Vec<f32>) -> Result<ArrayD<f32>, ChunkError> {
    ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| ChunkError::Corrupt(e.to_string()))
}

/// Reads and decodes a whole chunk with one GET, on one thread (zarrs' Blosc codec decodes
/// chunks above 4 MB with several threads, which c-blosc's context API starts and joins on
/// every call: five times slower here). Same results as [`read_rows`] over all rows.
pub(crate) async fn read_whole(
    reader: Reader<'_>,
    key: &str,
    shape: &[usize],
) -> Result<Partial, ChunkError> {
    let key = Path::from(key);
    let Some((bytes, _)) = reader.whole(&key).await? else {
        return Ok(Partial::Absent);
    };
    let total: usize = shape.iter().product();
    let mut nbytes = 0usize;
    // SAFETY: `bytes` is a live buffer of `bytes.len()` bytes; the call only reads it and
    // writes `nbytes`.
    let valid = unsafe {
        blosc_src::blosc_cbuffer_validate(bytes.as_ptr().cast(), bytes.len(), &mut nbytes)
    };
    if valid != 0 || nbytes != total * 4 || bytes.len() < HEADER || bytes[3] != 4 {
        return Ok(Partial::Unsupported);
    }
    let mut values = vec![0f32; total];
    // SAFETY: the buffer was validated for `nbytes` output bytes and `values` holds exactly
    // `nbytes`; one internal thread (the ctx API would start and join threads per call).
    let written = unsafe {
        blosc_src::blosc_decompress_ctx(
            bytes.as_ptr().cast(),
            values.as_mut_ptr().cast(),
            nbytes,
            1,
        )
    };
    if written < 0 || written as usize != nbytes {
        return Err(ChunkError::Corrupt(format!(
            "blosc decompression failed ({written}) on {key}"
        )));
    }
    if cfg!(target_endian = "big") {
        for v in values.iter_mut() {
            *v = f32::from_bits(v.to_bits().swap_bytes());
        }
    }
    Ok(Partial::Rows(to_array(shape, values)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::link::{Link, LinkMeter};
    use zarrs_object_store::object_store::{memory::InMemory, ObjectStoreExt, PutPayload};

    /// Blosc lz4 of `values` in blocks of 16 KiB.
    fn compress(values: &[f32]) -> Vec<u8> {
        let nbytes = values.len() * 4;
        let mut out = vec![0u8; nbytes + 16 + 4096];
        // SAFETY: `values` holds `nbytes` bytes and `out` room for any Blosc output of them.
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                5,
                1,
                4,
                nbytes,
                values.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                out.len(),
                c"lz4".as_ptr(),
                16 << 10,
                1,
            )
        };
        assert!(n > 0);
        out.truncate(n as usize);
        out
    }

    /// Rows that compress to nothing (`smooth`) or hardly at all.
    fn chunk(smooth: bool) -> Vec<f32> {
        let mut x = 12345u32;
        (0..256 * 256)
            .map(|k| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if smooth {
                    (k / 256) as f32
                } else {
                    f32::from_bits((x >> 9) | 0x3f80_0000)
                }
            })
            .collect()
    }

    async fn rows_of(store: &dyn ObjectStore, tables: &BlockTables, key: &str) -> Vec<f32> {
        let reader = Reader {
            store,
            ahead: None,
            link: Some(tables.link()),
        };
        let shape = [256, 256];
        match read_rows(
            reader,
            key,
            &shape,
            std::slice::from_ref(&(100..140)),
            Some(tables),
        )
        .await
        .unwrap()
        {
            Partial::Rows(a) => a.as_slice().unwrap()[100 * 256..140 * 256].to_vec(),
            _ => panic!("not read by blocks"),
        }
    }

    /// A first read guided by another chunk's table gives the exact rows whether the guessed
    /// end of blocks covers them (one request) or falls short (a second one).
    #[tokio::test]
    async fn one_request_reads_give_exact_rows_whether_the_guess_covers_or_not() {
        let store = InMemory::new();
        let (smooth, rough) = (chunk(true), chunk(false));
        for (key, values) in [("a/0.0", &smooth), ("a/1.0", &rough), ("a/2.0", &smooth)] {
            let bytes = compress(values);
            store
                .put(&Path::from(key), PutPayload::from(bytes))
                .await
                .unwrap();
        }
        let link = Link {
            rtt: 0.030,
            rate: 50e6,
        };
        let tables = BlockTables::in_memory().with_link(LinkMeter::assume(link));
        // No table of the array yet: two requests, and the table is kept as the guide.
        assert_eq!(
            rows_of(&store, &tables, "a/0.0").await,
            smooth[100 * 256..140 * 256]
        );
        assert!(tables.sibling("a/1.0").is_some());
        // Guided by a chunk that compresses to almost nothing, the guess falls short of the
        // rough chunk's blocks; then by the rough chunk, the guess covers the smooth one.
        assert_eq!(
            rows_of(&store, &tables, "a/1.0").await,
            rough[100 * 256..140 * 256]
        );
        assert_eq!(
            rows_of(&store, &tables, "a/2.0").await,
            smooth[100 * 256..140 * 256]
        );
        let rough_table = tables.get("a/1.0").unwrap();
        let span = block_ranges(
            &rough_table.bytes,
            &[256, 256],
            std::slice::from_ref(&(100..140)),
        )
        .unwrap()[0]
            .clone();
        assert!(
            span.end > 16 << 10,
            "the rough chunk's blocks lie beyond a short guess"
        );
    }

    /// A first read of a chunk guided by a like chunk's table asks for its header and its
    /// needed blocks at once: two concurrent requests, not the span from its start (the
    /// blocks before the needed ones are not fetched), and the exact rows.
    #[tokio::test]
    async fn a_guided_first_read_asks_for_the_needed_blocks_not_the_span_before_them() {
        use crate::source::store::{MeteredStore, SourceMetrics};
        use std::sync::Arc;
        let inner = Arc::new(InMemory::new());
        let rough = |seed: u32| -> Vec<f32> {
            let mut x = seed;
            (0..256 * 256)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    f32::from_bits((x >> 9) | 0x3f80_0000)
                })
                .collect()
        };
        let (a, b) = (rough(1), rough(2));
        for (key, values) in [("a/0.0", &a), ("a/1.0", &b)] {
            inner
                .put(&Path::from(key), PutPayload::from(compress(values)))
                .await
                .unwrap();
        }
        let metrics = Arc::new(SourceMetrics::default());
        let store = MeteredStore::new(inner, metrics.clone());
        // A link on which the blocks before the needed ones cost more than a round trip.
        let fast = LinkMeter::assume(Link {
            rtt: 0.000_1,
            rate: 1e9,
        });
        let tables = BlockTables::in_memory().with_link(fast);
        let rows = 230..240; // in the last blocks (16 KiB blocks of 16 rows)
        let read = |key: &'static str| {
            let tables = &tables;
            let reader = Reader {
                store: &store,
                ahead: None,
                link: Some(tables.link()),
            };
            let rows = rows.clone();
            async move {
                match read_rows(reader, key, &[256, 256], &[rows], Some(tables))
                    .await
                    .unwrap()
                {
                    Partial::Rows(x) => x.as_slice().unwrap()[230 * 256..240 * 256].to_vec(),
                    _ => panic!("not read by blocks"),
                }
            }
        };
        assert_eq!(read("a/0.0").await, a[230 * 256..240 * 256]);
        assert_eq!(
            metrics.requests(),
            2,
            "no guide: the table, then the blocks"
        );
        let (r0, b0) = (metrics.requests(), metrics.bytes());
        assert_eq!(read("a/1.0").await, b[230 * 256..240 * 256]);
        let table = tables.get("a/1.0").unwrap();
        let needed: u64 = block_ranges(&table.bytes, &[256, 256], std::slice::from_ref(&rows))
            .unwrap()
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        let fetched = metrics.bytes() - b0;
        assert_eq!(
            metrics.requests() - r0,
            2,
            "the head and the guess, at once"
        );
        assert!(
            fetched < needed * 2 + (64 << 10),
            "{fetched} bytes for {needed} needed (the chunk is {} bytes)",
            u32_at(&table.bytes, 12)
        );
    }
}
