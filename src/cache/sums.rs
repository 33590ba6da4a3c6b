//! Checksums of an entry's blocks, so that every read served from an entry is checked.
//!
//! An entry's whole-file CRC-32C (its `user.sodeda.crc32c`) is checked once per process and
//! file version, when the entry is first used; bytes changed in place after that check (a
//! `truncate`, a `dd conv=notrunc`, a disk going bad) would otherwise be served. The same
//! pass that checks the whole file records a CRC-32C of every [`BLOCK`] bytes, kept in
//! memory with the entry (4 bytes per 64 KiB); [`BlockSums::read_checked`] reads the blocks
//! under a request and compares each one, so a read returns the bytes that were checked or
//! an error, never anything else.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The size of a checked block (the last block of a file may be shorter).
pub const BLOCK: u64 = 64 * 1024;

/// The CRC-32C of every block of one file, and the file's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSums {
    crcs: Vec<u32>,
    len: u64,
}

impl BlockSums {
    /// Reads `file` whole (with `pread`): the CRC-32C of all its bytes and of each block.
    pub fn of_file(file: &File) -> io::Result<(u32, BlockSums)> {
        let mut buf = vec![0u8; 16 * BLOCK as usize];
        let (mut whole, mut at) = (0u32, 0u64);
        let mut crcs = Vec::new();
        loop {
            let n = read_full_at(file, &mut buf, at)?;
            if n == 0 {
                break;
            }
            for block in buf[..n].chunks(BLOCK as usize) {
                let crc = crc32c::crc32c(block);
                crcs.push(crc);
                whole = crc32c::crc32c_combine(whole, crc, block.len());
            }
            at += n as u64;
            if n < buf.len() {
                break;
            }
        }
        Ok((whole, BlockSums { crcs, len: at }))
    }

    /// The sums of `bytes` (a slab just built): the CRC-32C of all of them and of each block.
    pub fn of_bytes(bytes: &[u8]) -> (u32, BlockSums) {
        let mut whole = 0u32;
        let crcs = bytes
            .chunks(BLOCK as usize)
            .map(|block| {
                let crc = crc32c::crc32c(block);
                whole = crc32c::crc32c_combine(whole, crc, block.len());
                crc
            })
            .collect();
        (
            whole,
            BlockSums {
                crcs,
                len: bytes.len() as u64,
            },
        )
    }

    /// The length of the file these sums are of.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `size` bytes of `file` at `offset` (never past the checked length), read as the
    /// whole blocks that hold them, each compared with its checksum. A block that differs, or
    /// a file now shorter than it was, is an `InvalidData` error naming the offset.
    pub fn read_checked(&self, file: &File, offset: u64, size: u64) -> io::Result<Vec<u8>> {
        self.read_checked_at(file, 0, offset, size)
    }

    /// Like [`BlockSums::read_checked`] for sums of the bytes that start at `base` in `file`
    /// (a slab of a partial entry); `offset` counts from `base`.
    pub fn read_checked_at(
        &self,
        file: &File,
        base: u64,
        offset: u64,
        size: u64,
    ) -> io::Result<Vec<u8>> {
        if offset >= self.len || size == 0 {
            return Ok(Vec::new());
        }
        let end = self.len.min(offset.saturating_add(size));
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        let start = first * BLOCK;
        let stop = self.len.min((last + 1) * BLOCK);
        let mut buf = vec![0u8; (stop - start) as usize];
        let n = read_full_at(file, &mut buf, base + start)?;
        if n < buf.len() {
            return Err(damaged(format!(
                "the entry ends at byte {}, {} bytes short of its checked size",
                base + start + n as u64,
                stop - start - n as u64
            )));
        }
        for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
            let at = first + i as u64;
            if crc32c::crc32c(block) != self.crcs[at as usize] {
                return Err(damaged(format!(
                    "bytes {}..{} differ from when the entry was checked",
                    base + at * BLOCK,
                    base + at * BLOCK + block.len() as u64
                )));
            }
        }
        buf.truncate((end - start) as usize);
        buf.drain(..(offset - start) as usize);
        Ok(buf)
    }
}

/// An entry changed on disk after its check.
fn damaged(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("cache entry damaged since it was checked: {what}"),
    )
}

/// Fills `buf` from `file` at `at` until the end of the file; the number of bytes read.
fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    #[test]
    fn the_whole_crc_is_the_files_crc_and_reads_give_exact_bytes() {
        let bytes: Vec<u8> = (0..(3 * BLOCK as usize + 1234))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let (_t, f) = file_of(&bytes);
        let (whole, sums) = BlockSums::of_file(&f).unwrap();
        assert_eq!(whole, crc32c::crc32c(&bytes));
        assert_eq!(sums.len(), bytes.len() as u64);
        for (off, size) in [
            (0u64, 10u64),
            (BLOCK - 3, 6),
            (5, 3 * BLOCK),
            (3 * BLOCK, 5000),
            (bytes.len() as u64 - 1, 10),
            (bytes.len() as u64, 10),
        ] {
            let got = sums.read_checked(&f, off, size).unwrap();
            let from = (off as usize).min(bytes.len());
            let to = (off + size).min(bytes.len() as u64) as usize;
            assert_eq!(got, bytes[from..to], "read at {off} of {size}");
        }
    }

    #[test]
    fn a_byte_flipped_or_a_truncation_after_the_check_is_an_error() {
        let bytes = vec![3u8; 2 * BLOCK as usize + 10];
        let (t, f) = file_of(&bytes);
        let (_, sums) = BlockSums::of_file(&f).unwrap();
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(t.path())
            .unwrap();
        w.write_all_at(&[4], BLOCK + 5).unwrap();
        let e = sums.read_checked(&f, BLOCK + 100, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("differ"), "{e}");
        assert!(
            sums.read_checked(&f, 0, 100).is_ok(),
            "other blocks still read"
        );
        w.set_len(BLOCK + 1).unwrap();
        let e = sums.read_checked(&f, 2 * BLOCK, 5).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
    }
}
