//! Files served by their parts, driven as the kernel would, without mounting: the header and
//! coordinates from the layout without a fetch, reads that build only the slabs under them,
//! in any order and by several readers at once, equal byte for byte to the whole file; slabs
//! that survive a restart, damaged slabs built again, a failed build retried, and the file
//! complete once every slab is built. The source is the small ERA5-shaped store of
//! tests/common; every file is served by its parts here (`with_parts_from(0)`).

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sodeda_era5::cache::LocalCache;
use sodeda_era5::catalog::Catalog;
use sodeda_era5::encode::regions::{Region, Regions};
use sodeda_era5::fetch::FetchOptions;
use sodeda_era5::flow::Flow;
use sodeda_era5::fs::{DatasetFs, ROOT_INO};
use sodeda_era5::plan::PlanOptions;
use sodeda_era5::source::Source;
use zarrs_object_store::object_store::ObjectStore;

/// `a`: 40 hours of one surface variable (40 slabs); `b`: 12 hours of a pressure-level and
/// a surface variable (24 slabs, alternating in each record); `absent`: hours the store
/// lacks.
const DESKRIPTORS: &str = r#"{"name": "a", "time": {"start": "2023-01-01T00", "end": "2023-01-02T15"}, "variable": "2m_temperature"}
{"name": "b", "time": {"start": "2023-01-01T03", "end": "2023-01-01T14"}, "level": [850, 500], "latitude": {"start": 1.5, "end": -1}, "variable": ["temperature", "2m_temperature"]}
{"name": "absent", "time": {"start": "2023-01-02T22", "end": "2023-01-03T02"}, "variable": "2m_temperature"}
"#;

async fn source_over(store: Arc<dyn ObjectStore>) -> Arc<Source> {
    Arc::new(
        Source::open_store("memory://synthetic", store)
            .await
            .unwrap(),
    )
}

/// A file system over `cache` serving every file by its parts.
fn parts_fs(source: Arc<Source>, cache: &std::path::Path) -> Arc<DatasetFs> {
    let catalog = Catalog::from_text(DESKRIPTORS, &source.scope, PlanOptions::default()).unwrap();
    assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
    let flow = Flow::new(
        source,
        LocalCache::open(cache).unwrap(),
        FetchOptions::default(),
    )
    .with_parts_from(0);
    Arc::new(DatasetFs::new(
        catalog.entries,
        flow,
        PlanOptions::default(),
    ))
}

/// The whole file of `name`, as `get` builds it (one flow run, its own cache).
async fn whole_file(source: Arc<Source>, name: &str) -> Vec<u8> {
    let catalog = Catalog::from_text(DESKRIPTORS, &source.scope, PlanOptions::default()).unwrap();
    let entry = catalog
        .entries
        .iter()
        .find(|e| e.file_name() == format!("{name}.nc"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(
        source.clone(),
        LocalCache::open(dir.path()).unwrap(),
        FetchOptions::default(),
    );
    let plan = entry.plan(&source.scope, PlanOptions::default()).unwrap();
    let (file, _) = flow.materialize(&plan).await.unwrap();
    std::fs::read(&file.path).unwrap()
}

fn ino(fs: &DatasetFs, name: &str) -> u64 {
    fs.lookup(ROOT_INO, OsStr::new(name)).unwrap().ino
}

fn slab_builds(fs: &DatasetFs) -> u64 {
    fs.flow().metrics().slab_builds.load(Ordering::Relaxed)
}

/// The regions of `name`'s file, and its layout.
fn regions_of(fs: &DatasetFs, name: &str) -> (Regions, sodeda_era5::layout::Layout) {
    let catalog = Catalog::from_text(
        DESKRIPTORS,
        &fs.flow().source().scope,
        PlanOptions::default(),
    )
    .unwrap();
    let entry = catalog
        .entries
        .iter()
        .find(|e| e.file_name() == format!("{name}.nc"))
        .unwrap();
    let plan = entry
        .plan(&fs.flow().source().scope, PlanOptions::default())
        .unwrap();
    (Regions::of(&plan.layout), plan.layout)
}

/// File `a` served by its parts over a fresh cache, with what it must equal.
struct File {
    source: Arc<Source>,
    want: Vec<u8>,
    dir: tempfile::TempDir,
    fs: Arc<DatasetFs>,
    regions: Regions,
    ino: u64,
}

async fn file_a() -> File {
    let source = source_over(common::synthetic_store().await).await;
    let want = whole_file(source.clone(), "a").await;
    let dir = tempfile::tempdir().unwrap();
    let fs = parts_fs(source.clone(), dir.path());
    let (regions, _) = regions_of(&fs, "a");
    let ino = ino(&fs, "a.nc");
    File {
        source,
        want,
        dir,
        fs,
        regions,
        ino,
    }
}

/// The whole file through handle `fh`, in reads of 64 KiB.
async fn read_to_end(fs: &DatasetFs, fh: u64, size: u64) -> Vec<u8> {
    let mut all = Vec::new();
    while (all.len() as u64) < size {
        all.extend(fs.read(fh, all.len() as u64, 65_536).await.unwrap());
    }
    all
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_header_and_coordinates_are_served_without_a_fetch() {
    let source = source_over(common::synthetic_store().await).await;
    let dir = tempfile::tempdir().unwrap();
    let fs = parts_fs(source.clone(), dir.path());
    let want = whole_file(source.clone(), "b").await;
    let (regions, layout) = regions_of(&fs, "b");
    let requests = source.metrics.requests();
    let i = ino(&fs, "b.nc");
    let fh = fs.open(i, false).unwrap();
    // Every known region, read exactly: the header, latitude, longitude, level, each
    // record's time value.
    let known: Vec<_> = regions
        .under(&layout, 0..regions.size())
        .into_iter()
        .filter(|r| matches!(r, Region::Known(_)))
        .collect();
    assert!(known.len() > 12, "header, coordinates and 12 time values");
    for r in known {
        let r = r.range().clone();
        let got = fs
            .read(fh, r.start, (r.end - r.start) as u32)
            .await
            .unwrap();
        assert_eq!(got, want[r.start as usize..r.end as usize]);
    }
    assert_eq!(source.metrics.requests(), requests, "no request at all");
    assert_eq!(slab_builds(&fs), 0);
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_in_any_order_and_size_equal_the_whole_file_and_build_each_slab_once() {
    let source = source_over(common::synthetic_store().await).await;
    for (name, seed) in [("a", 7u64), ("b", 11), ("a", 12345), ("b", 99)] {
        let want = whole_file(source.clone(), name).await;
        let dir = tempfile::tempdir().unwrap();
        let fs = parts_fs(source.clone(), dir.path());
        let i = ino(&fs, &format!("{name}.nc"));
        let size = fs.getattr(i).unwrap().size;
        assert_eq!(size, want.len() as u64);
        let (regions, _) = regions_of(&fs, name);
        let mut rng = Rng(seed);
        let fh = fs.open(i, false).unwrap();
        for _ in 0..200 {
            let off = rng.below(size + 10);
            let len = [1, 3, 100, 4096, 131_072][rng.below(5) as usize] as u32;
            let got = fs.read(fh, off, len).await.unwrap();
            let end = (off + u64::from(len)).min(size);
            let expect = if off >= size {
                &[][..]
            } else {
                &want[off as usize..end as usize]
            };
            assert_eq!(got, expect, "{name} seed {seed}: {len} bytes at {off}");
        }
        // Read to the end: every slab built, none twice (a build holds up to 8 slabs).
        assert_eq!(read_to_end(&fs, fh, size).await, want, "{name} seed {seed}");
        assert!(slab_builds(&fs) <= regions.slab_count());
        fs.release(fh);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_of_one_slab_and_of_neighbours_share_its_build() {
    let File {
        source,
        want,
        dir: _dir,
        fs,
        regions,
        ino: i,
    } = file_a().await;
    let slab = regions.slab(5).unwrap().range;
    let requests = source.metrics.requests();
    let mut tasks = Vec::new();
    for k in 0..16u64 {
        let fs = fs.clone();
        // Half read inside slab 5, half across its boundary with slab 6.
        let off = if k % 2 == 0 {
            slab.start + k
        } else {
            slab.end - 3
        };
        tasks.push(tokio::spawn(async move {
            let fh = fs.open(i, false).unwrap();
            let got = fs.read(fh, off, 16).await.unwrap();
            fs.release(fh);
            (off, got)
        }));
    }
    for t in tasks {
        let (off, got) = t.await.unwrap();
        assert_eq!(got, want[off as usize..off as usize + 16]);
    }
    // Slab 5 once; slab 6 once (maybe in the same build); a piece at most of each, by a
    // reader that came before the build (a slab is worth one piece).
    assert!(slab_builds(&fs) <= 2, "{} builds", slab_builds(&fs));
    let pieces = fs.flow().metrics().slab_pieces.load(Ordering::Relaxed);
    assert!(pieces <= 2, "{pieces} pieces");
    let per_slab = source.metrics.requests() - requests;
    assert!(
        per_slab <= 4 + 2 * pieces,
        "{per_slab} requests for two slabs of one chunk each and {pieces} pieces"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_time_step_read_in_aligned_blocks_builds_its_slab_and_pieces_of_the_edges() {
    // (`_dir` kept: the cache lives as long as the test.)
    let File {
        want,
        fs,
        regions,
        ino: i,
        dir: _dir,
        ..
    } = file_a().await;
    let size = fs.getattr(i).unwrap().size;
    let pieces = |fs: &DatasetFs| fs.flow().metrics().slab_pieces.load(Ordering::Relaxed);
    // As libnetcdf reads a time step: blocks of 40 bytes (a 64-byte row holds 1.6), aligned,
    // from the block holding the slab's first byte to the one holding its last. So the
    // first block holds the end of slab 4 and the last the start of slab 6.
    let slab = regions.slab(5).unwrap().range;
    const BLOCK: u64 = 40;
    assert!(
        slab.start % BLOCK != 0 && slab.end % BLOCK != 0,
        "{slab:?}: edges in blocks"
    );
    let fh = fs.open(i, false).unwrap();
    for round in 0..2 {
        let mut at = slab.start / BLOCK * BLOCK;
        while at < slab.end {
            let got = fs.read(fh, at, BLOCK as u32).await.unwrap();
            assert_eq!(
                got,
                want[at as usize..(at + BLOCK) as usize],
                "round {round} at {at}"
            );
            at += BLOCK;
        }
        // Slab 5 built, of slabs 4 and 6 a piece each (the second round: from memory).
        assert_eq!(slab_builds(&fs), 1, "round {round}");
        assert_eq!(pieces(&fs), 2, "round {round}");
    }
    fs.release(fh);
    // A small read inside slab 6 not following on (libnetcdf's probe for an HDF5 signature)
    // gets a piece; the read that continues it goes on through the slab: built whole.
    let s6 = regions.slab(6).unwrap().range;
    let fh = fs.open(i, false).unwrap();
    let at = s6.start + 100;
    let got = fs.read(fh, at, 8).await.unwrap();
    assert_eq!(got, want[at as usize..at as usize + 8]);
    assert_eq!((slab_builds(&fs), pieces(&fs)), (1, 3));
    let got = fs.read(fh, at + 8, 8).await.unwrap();
    assert_eq!(got, want[at as usize + 8..at as usize + 16]);
    assert_eq!((slab_builds(&fs), pieces(&fs)), (2, 3));
    // Pieces are never written: the file read to the end equals `get`'s, and each slab
    // is built once.
    assert_eq!(read_to_end(&fs, fh, size).await, want);
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slabs_survive_a_restart_and_a_damaged_slab_is_built_again_never_served() {
    let source = source_over(common::synthetic_store().await).await;
    let want = whole_file(source.clone(), "a").await;
    let dir = tempfile::tempdir().unwrap();
    let (regions, _) = {
        let fs = parts_fs(source.clone(), dir.path());
        let i = ino(&fs, "a.nc");
        let fh = fs.open(i, false).unwrap();
        let (regions, layout) = regions_of(&fs, "a");
        // Slabs 2 and 3 only.
        let r = regions.slab(2).unwrap().range.start..regions.slab(3).unwrap().range.end;
        let got = fs
            .read(fh, r.start, (r.end - r.start) as u32)
            .await
            .unwrap();
        assert_eq!(got, want[r.start as usize..r.end as usize]);
        fs.release(fh);
        (regions, layout)
    };
    // A new process over the same cache: the two slabs are read back, not fetched.
    let fs = parts_fs(source.clone(), dir.path());
    let i = ino(&fs, "a.nc");
    let fh = fs.open(i, false).unwrap();
    let requests = source.metrics.requests();
    let s2 = regions.slab(2).unwrap().range;
    let got = fs.read(fh, s2.start, 64).await.unwrap();
    assert_eq!(got, want[s2.start as usize..s2.start as usize + 64]);
    assert_eq!(source.metrics.requests(), requests, "slab 2 came from disk");
    assert_eq!(slab_builds(&fs), 0);
    fs.release(fh);
    drop(fs);
    // Slab 3 damaged on disk (a byte flipped): built again in the next process, never its
    // bytes served.
    let partial = std::fs::read_dir(
        dir.path()
            .join(format!("v{}", sodeda_era5::encode::FORMAT_VERSION)),
    )
    .unwrap()
    .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
    .map(|e| e.unwrap().path())
    .find(|p| p.extension().is_some_and(|x| x == "partial"))
    .expect("a partial entry");
    let s3 = regions.slab(3).unwrap().range;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap();
    f.write_all_at(&[0x5a], s3.start + 10).unwrap();
    let fs = parts_fs(source.clone(), dir.path());
    let i = ino(&fs, "a.nc");
    let fh = fs.open(i, false).unwrap();
    let got = fs.read(fh, s3.start, 64).await.unwrap();
    assert_eq!(got, want[s3.start as usize..s3.start as usize + 64]);
    assert_eq!(slab_builds(&fs), 1, "the damaged slab was built again");
    // Damaged after it was checked in this process: found at the read, built again.
    f.write_all_at(&[0xa5], s3.start + 20).unwrap();
    let got = fs.read(fh, s3.start, 64).await.unwrap();
    assert_eq!(got, want[s3.start as usize..s3.start as usize + 64]);
    assert_eq!(slab_builds(&fs), 2);
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_read_whole_by_parts_becomes_a_complete_entry_equal_to_get() {
    let source = source_over(common::synthetic_store().await).await;
    let want = whole_file(source.clone(), "b").await;
    let dir = tempfile::tempdir().unwrap();
    let fs = parts_fs(source.clone(), dir.path());
    let i = ino(&fs, "b.nc");
    let size = fs.getattr(i).unwrap().size;
    let fh = fs.open(i, false).unwrap();
    // Backwards, in pieces that straddle slabs.
    let mut at = size;
    let mut got = Vec::new();
    while at > 0 {
        let from = at.saturating_sub(1000);
        let mut part = fs.read(fh, from, (at - from) as u32).await.unwrap();
        part.extend(got);
        got = part;
        at = from;
    }
    assert_eq!(got, want);
    fs.release(fh);
    // Completion runs in the background: wait for the entry (bounded).
    let cache = LocalCache::open(dir.path()).unwrap();
    let entry = fs.flow().source().scope.url.clone();
    let _ = entry;
    let identity =
        std::str::from_utf8(&fs.getxattr(i, OsStr::new("user.sodeda.identity")).unwrap())
            .unwrap()
            .to_string();
    let mut complete = None;
    for _ in 0..200 {
        if let Some(hit) = cache.get(&identity, size) {
            complete = Some(hit);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let complete = complete.expect("the file became a complete entry");
    assert_eq!(std::fs::read(&complete.path).unwrap(), want);
    let table = complete.path.with_extension("slabs");
    assert!(!table.exists(), "its slab table is gone");
    assert!(!complete.path.with_extension("partial").exists());
    // A new open reads the complete entry: no slab, no request.
    let requests = source.metrics.requests();
    let fs2 = parts_fs(source.clone(), dir.path());
    let i2 = ino(&fs2, "b.nc");
    let fh = fs2.open(i2, false).unwrap();
    assert_eq!(fs2.read(fh, 0, size as u32).await.unwrap(), want);
    assert_eq!(source.metrics.requests(), requests);
    assert_eq!(slab_builds(&fs2), 0);
    fs2.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_slab_build_is_eio_and_the_next_read_builds_it() {
    let faulty = Arc::new(common::FaultyStore::new(
        common::synthetic_store().await,
        "2m_temperature/",
    ));
    let source = source_over(faulty.clone()).await;
    let want = whole_file(source_over(common::synthetic_store().await).await, "a").await;
    let dir = tempfile::tempdir().unwrap();
    let fs = parts_fs(source.clone(), dir.path());
    let i = ino(&fs, "a.nc");
    let fh = fs.open(i, false).unwrap();
    let (regions, _) = regions_of(&fs, "a");
    let s = regions.slab(7).unwrap().range;
    faulty.failing.store(true, Ordering::Relaxed);
    let err = fs.read(fh, s.start, 100).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // The header is still served while the source fails.
    assert_eq!(fs.read(fh, 0, 8).await.unwrap(), want[..8]);
    faulty.failing.store(false, Ordering::Relaxed);
    let got = fs.read(fh, s.start, 100).await.unwrap();
    assert_eq!(got, want[s.start as usize..s.start as usize + 100]);
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slab_of_absent_chunks_is_an_error_that_says_to_build_the_file_whole() {
    let source = source_over(common::synthetic_store().await).await;
    let dir = tempfile::tempdir().unwrap();
    let fs = parts_fs(source.clone(), dir.path());
    let i = ino(&fs, "absent.nc");
    let fh = fs.open(i, false).unwrap();
    let (regions, _) = regions_of(&fs, "absent");
    // The first two hours exist; the third does not.
    let present = regions.slab(1).unwrap().range;
    assert!(fs.read(fh, present.start, 10).await.is_ok());
    let missing = regions.slab(3).unwrap().range;
    let err = fs.read(fh, missing.start, 10).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.to_string().contains("sodeda-era5 get"), "{err}");
    fs.release(fh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_entry_removed_under_a_reader_keeps_its_bytes_and_the_next_process_starts_anew() {
    // Another process's eviction (or an admin) removes the partial entry while this one
    // serves the file: its reads go on from the open descriptors, equal to `get`; its
    // completion cannot rename the removed file and leaves no entry; a new process builds
    // a new partial entry, with the same bytes.
    let File {
        source,
        want,
        dir,
        fs,
        regions,
        ino: i,
    } = file_a().await;
    let size = fs.getattr(i).unwrap().size;
    let fh = fs.open(i, false).unwrap();
    let s2 = regions.slab(2).unwrap().range;
    let got = fs.read(fh, s2.start, 64).await.unwrap();
    assert_eq!(got, want[s2.start as usize..s2.start as usize + 64]);
    let v = dir
        .path()
        .join(format!("v{}", sodeda_era5::encode::FORMAT_VERSION));
    let partial: Vec<_> = std::fs::read_dir(&v)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "partial" || x == "slabs")
        })
        .collect();
    assert_eq!(partial.len(), 2, "{partial:?}");
    for p in &partial {
        std::fs::remove_file(p).unwrap();
    }
    assert_eq!(read_to_end(&fs, fh, size).await, want);
    fs.release(fh);
    // Completion ran in the background and failed to rename: no entry, no partial files.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let entries: Vec<_> = std::fs::read_dir(&v)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "nc" || x == "partial"))
        .collect();
    assert!(entries.is_empty(), "{entries:?}");
    drop(fs);
    let fs = parts_fs(source.clone(), dir.path());
    let i = ino(&fs, "a.nc");
    let fh = fs.open(i, false).unwrap();
    let got = fs.read(fh, s2.start, 64).await.unwrap();
    assert_eq!(got, want[s2.start as usize..s2.start as usize + 64]);
    assert_eq!(slab_builds(&fs), 1, "built again in a new partial entry");
    assert!(
        partial.iter().all(|p| p.exists()),
        "a new partial entry and table"
    );
    fs.release(fh);
}
