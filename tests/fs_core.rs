//! The file-system core driven the way the kernel would, without mounting: lookups, sizes,
//! reads at offsets, EOF, errnos, single flight, failures and retries, extended attributes.
//! The source is a small ERA5-shaped store in memory (tests/common).

mod common;

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sodeda_era5::cache::LocalCache;
use sodeda_era5::catalog::Catalog;
use sodeda_era5::encode::FORMAT_VERSION;
use sodeda_era5::fetch::ChunkError;
use sodeda_era5::fetch::FetchOptions;
use sodeda_era5::flow::Flow;
use sodeda_era5::flow::FlowError;
use sodeda_era5::fs::{BuildFailure, DatasetFs, FsError, Kind, ROOT_INO};
use sodeda_era5::plan::PlanOptions;
use sodeda_era5::source::Source;
use zarrs_object_store::object_store::ObjectStore;

const DESKRIPTORS: &str = r#"{"name": "a", "time": {"start": "2023-01-01T00", "end": "2023-01-01T05"}, "variable": "2m_temperature"}
{"name": "b", "time": "2023-01-01T10:00", "level": [850, 500], "latitude": {"start": -1, "end": 1}, "longitude": {"start": -45, "end": 45}, "variable": ["temperature", "2m_temperature"]}
{"name": "absent", "time": {"start": "2023-01-03T00", "end": "2023-01-03T02"}, "variable": "2m_temperature"}
"#;

async fn setup(store: Arc<dyn ObjectStore>) -> (Arc<DatasetFs>, tempfile::TempDir) {
    let source = Arc::new(
        Source::open_store("memory://synthetic", store)
            .await
            .unwrap(),
    );
    let catalog = Catalog::from_text(DESKRIPTORS, &source.scope, PlanOptions::default()).unwrap();
    assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(
        source,
        LocalCache::open(dir.path()).unwrap(),
        FetchOptions::default(),
    );
    (
        Arc::new(DatasetFs::new(
            catalog.entries,
            flow,
            PlanOptions::default(),
        )),
        dir,
    )
}

fn ino(fs: &DatasetFs, name: &str) -> u64 {
    fs.lookup(ROOT_INO, OsStr::new(name)).unwrap().ino
}

async fn read_all(fs: &DatasetFs, ino: u64, chunk: u32) -> Vec<u8> {
    let fh = fs.open(ino, false).unwrap();
    let mut out = Vec::new();
    loop {
        let part = fs.read(fh, out.len() as u64, chunk).await.unwrap();
        if part.is_empty() {
            break;
        }
        out.extend(part);
    }
    fs.release(fh);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_sizes_and_errnos() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    let entries = fs.readdir(ROOT_INO).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec![".", "..", "a.nc", "b.nc", "absent.nc"]);
    assert_eq!(fs.getattr(ROOT_INO).unwrap().kind, Kind::Directory);
    let a = fs.lookup(ROOT_INO, OsStr::new("a.nc")).unwrap();
    assert_eq!(a.kind, Kind::File);
    assert_eq!(a.perm, 0o444);
    assert!(a.size > 6 * 9 * 16 * 4);
    assert_eq!(
        fs.flow().metrics().runs.load(Ordering::Relaxed),
        0,
        "stat builds nothing"
    );

    let e = fs.lookup(ROOT_INO, OsStr::new("nope.nc")).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
    assert_eq!(fs.getattr(999).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(
        fs.lookup(a.ino, OsStr::new("x")).unwrap_err().errno(),
        libc::ENOTDIR
    );
    assert_eq!(fs.open(a.ino, true).unwrap_err().errno(), libc::EROFS);
    assert_eq!(fs.open(ROOT_INO, false).unwrap_err().errno(), libc::EISDIR);
    assert_eq!(fs.readdir(a.ino).unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(
        fs.read(12345, 0, 10).await.unwrap_err().errno(),
        libc::EBADF
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_return_exactly_the_built_file() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    for name in ["a.nc", "b.nc", "absent.nc"] {
        let i = ino(&fs, name);
        let size = fs.getattr(i).unwrap().size;
        let whole = read_all(&fs, i, 4096).await;
        assert_eq!(whole.len() as u64, size, "{name}");
        let again = read_all(&fs, i, 1 << 20).await;
        assert_eq!(whole, again, "{name}: chunking of reads changes nothing");
        let fh = fs.open(i, false).unwrap();
        for (off, len) in [(0u64, 1u32), (7, 13), (size - 5, 100), (size / 2, 333)] {
            let part = fs.read(fh, off, len).await.unwrap();
            let end = (off + u64::from(len)).min(size) as usize;
            assert_eq!(part, whole[off as usize..end], "{name} at {off}");
        }
        assert!(fs.read(fh, size, 10).await.unwrap().is_empty());
        assert!(fs.read(fh, size + 1000, 10).await.unwrap().is_empty());
        fs.release(fh);
    }
    assert_eq!(fs.flow().metrics().runs.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_follow_the_selection_semantics() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    let bytes = read_all(&fs, ino(&fs, "b.nc"), 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.nc");
    std::fs::write(&path, bytes).unwrap();
    let file = netcdf::open(&path).unwrap();
    let lon: Vec<f32> = file.variable("longitude").unwrap().get_values(..).unwrap();
    assert_eq!(lon, vec![-45.0, -22.5, 0.0, 22.5, 45.0]);
    let lat: Vec<f32> = file.variable("latitude").unwrap().get_values(..).unwrap();
    assert_eq!(lat, vec![1.0, 0.5, 0.0, -0.5, -1.0]);
    let level: Vec<i32> = file.variable("level").unwrap().get_values(..).unwrap();
    assert_eq!(level, vec![850, 500]);
    let time: Vec<i32> = file.variable("time").unwrap().get_values(..).unwrap();
    assert_eq!(time, vec![(common::T0 + 10) as i32]);
    let t: Vec<f32> = file
        .variable("temperature")
        .unwrap()
        .get_values(..)
        .unwrap();
    let lon_src = [14u64, 15, 0, 1, 2];
    let lat_src = [2u64, 3, 4, 5, 6];
    let level_src = [1u64, 0];
    let mut k = 0;
    for l in level_src {
        for y in lat_src {
            for x in lon_src {
                let want = (10 * 1000 + l * 100 + y * 16 + x) as f32;
                assert_eq!(t[k], want, "level {l} lat {y} lon {x}");
                k += 1;
            }
        }
    }
    let t2: Vec<f32> = file
        .variable("2m_temperature")
        .unwrap()
        .get_values(..)
        .unwrap();
    assert_eq!(t2.len(), 25);
    assert_eq!(t2[0], (10 * 1000 + 2 * 16 + 14) as f32);

    let absent = read_all(&fs, ino(&fs, "absent.nc"), 1 << 20).await;
    let path = dir.path().join("absent.nc");
    std::fs::write(&path, absent).unwrap();
    let file = netcdf::open(&path).unwrap();
    let v: Vec<f32> = file
        .variable("2m_temperature")
        .unwrap()
        .get_values(..)
        .unwrap();
    assert!(v.iter().all(|x| x.is_nan()), "absent chunks read as NaN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_share_one_flow_run() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    let i = ino(&fs, "a.nc");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let fs = fs.clone();
        tasks.push(tokio::spawn(async move { read_all(&fs, i, 8192).await }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fs.flow().metrics().runs.load(Ordering::Relaxed), 1);
    let requests = fs.flow().source().metrics.requests();
    read_all(&fs, i, 8192).await;
    assert_eq!(
        fs.flow().source().metrics.requests(),
        requests,
        "a cached read touches no source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_flow_is_eio_with_its_cause_and_a_new_open_retries() {
    let faulty = Arc::new(common::FaultyStore::new(
        common::synthetic_store().await,
        "2m_temperature/",
    ));
    let (fs, _dir) = setup(faulty.clone()).await;
    let i = ino(&fs, "a.nc");
    faulty.failing.store(true, Ordering::SeqCst);
    let fh = fs.open(i, false).unwrap();
    let e = fs.read(fh, 0, 100).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    // The cause is typed all the way down: a store failure reading a chunk of the file.
    match &e {
        FsError::Flow {
            cause: BuildFailure::Flow(flow),
            ..
        } => match flow.as_ref() {
            FlowError::Fetch(f) => {
                assert_eq!(f.variable, "2m_temperature");
                assert!(matches!(f.cause, ChunkError::Store(_)), "{:?}", f.cause);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("injected fault"), "{e}");
    // Printed as a chain (anyhow's `{:#}`), the store's message comes once.
    let chained = format!("{:#}", anyhow::Error::new(e.clone()));
    assert_eq!(chained.matches("injected fault").count(), 1, "{chained}");
    let cause = fs
        .getxattr(i, OsStr::new("user.sodeda.error"))
        .map(String::from_utf8)
        .unwrap()
        .unwrap();
    assert!(cause.contains("2m_temperature") && cause.contains("injected fault"));
    assert!(
        !fs.listxattr(i)
            .unwrap()
            .iter()
            .any(|n| n == "user.sodeda.error"),
        "state is readable by name, not listed"
    );
    // The same open file keeps its failure: no new flow for the kernel's follow-up requests.
    assert_eq!(fs.read(fh, 4096, 100).await.unwrap_err().errno(), libc::EIO);
    assert_eq!(fs.flow().metrics().failures.load(Ordering::Relaxed), 1);
    fs.release(fh);

    faulty.failing.store(false, Ordering::SeqCst);
    let whole = read_all(&fs, i, 4096).await;
    assert_eq!(whole.len() as u64, fs.getattr(i).unwrap().size);
    assert_eq!(
        fs.getxattr(i, OsStr::new("user.sodeda.error"))
            .unwrap_err()
            .errno(),
        libc::ENODATA
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_source_is_eio_never_a_file_of_missing_values() {
    let faulty = Arc::new(common::FaultyStore::new(
        common::synthetic_store().await,
        "",
    ));
    let (fs, dir) = setup(faulty.clone()).await;
    let i = ino(&fs, "a.nc");
    // Opened while present; then every key answers "not found", as a moved directory does.
    faulty.vanished.store(true, Ordering::SeqCst);
    let fh = fs.open(i, false).unwrap();
    let e = fs.read(fh, 0, 100).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(e.to_string().contains("2m_temperature/.zarray"), "{e}");
    fs.release(fh);
    assert_eq!(cache_entries(dir.path()), 0, "nothing cached");
    // Back: the file is built from the data, not from a cached file of NaN.
    faulty.vanished.store(false, Ordering::SeqCst);
    let bytes = read_all(&fs, i, 65536).await;
    assert_eq!(bytes.len() as u64, fs.getattr(i).unwrap().size);
    assert_eq!(cache_entries(dir.path()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absent_chunks_of_an_existing_array_read_as_missing_and_the_entry_says_so() {
    let (fs, dir) = setup(common::synthetic_store().await).await;
    // Hours 48..50: their chunks were never written (as ARCO-ERA5's hours not yet ingested).
    let i = ino(&fs, "absent.nc");
    let bytes = read_all(&fs, i, 65536).await;
    assert_eq!(bytes.len() as u64, fs.getattr(i).unwrap().size);
    let identity =
        String::from_utf8(fs.getxattr(i, OsStr::new("user.sodeda.identity")).unwrap()).unwrap();
    // No SELinux labels, no ACLs: "not supported", which `ls -l` remembers per device.
    for name in ["security.selinux", "system.posix_acl_access"] {
        let e = fs.getxattr(i, OsStr::new(name)).unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP, "{name}");
    }
    let path = dir
        .path()
        .join(format!("v{FORMAT_VERSION}"))
        .join(&identity[..2])
        .join(format!("{identity}.nc"));
    let (p, n) = (
        std::ffi::CString::new(path.to_str().unwrap()).unwrap(),
        std::ffi::CString::new("user.sodeda.absent-chunks").unwrap(),
    );
    let mut buf = [0u8; 32];
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), 32) };
    assert!(len > 0, "no mark on {}", path.display());
    assert_eq!(&buf[..len as usize], b"3");
}

/// The cache entry of file `i` under the cache directory `dir`.
fn entry_path(fs: &DatasetFs, i: u64, dir: &std::path::Path) -> std::path::PathBuf {
    let identity =
        String::from_utf8(fs.getxattr(i, OsStr::new("user.sodeda.identity")).unwrap()).unwrap();
    dir.join(format!("v{FORMAT_VERSION}"))
        .join(&identity[..2])
        .join(format!("{identity}.nc"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_evicted_by_another_process_is_made_again_never_an_error() {
    let (fs, dir) = setup(common::synthetic_store().await).await;
    let i = ino(&fs, "a.nc");
    let good = read_all(&fs, i, 1 << 20).await;
    let path = entry_path(&fs, i, dir.path());
    // Another process evicting the entry again and again while this one serves it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let evicted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let evictor = {
        let (stop, path, evicted) = (stop.clone(), path.clone(), evicted.clone());
        std::thread::spawn(move || {
            let mut removed = 0;
            while !stop.load(Ordering::Relaxed) {
                if std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            removed
        })
    };
    /// Stops the evictor however the test ends (a failed assertion too).
    struct Stop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let guard = Stop(stop);
    // At least 300 reads, and on until the evictor has struck 20 times (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut reads = 0;
    while reads < 300
        || (evicted.load(Ordering::Relaxed) < 20 && std::time::Instant::now() < deadline)
    {
        let fh = fs.open(i, false).unwrap();
        let bytes = fs.read(fh, 0, 1 << 20).await;
        fs.release(fh);
        assert_eq!(bytes.expect("never an error"), good);
        reads += 1;
    }
    drop(guard);
    let removed = evictor.join().unwrap();
    assert!(removed >= 20, "the evictor did evict: {removed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_changed_in_place_under_an_open_handle_is_an_error_never_its_bytes() {
    let (fs, dir) = setup(common::synthetic_store().await).await;
    let i = ino(&fs, "a.nc");
    let good = read_all(&fs, i, 1 << 20).await;
    let path = entry_path(&fs, i, dir.path());
    let fh = fs.open(i, false).unwrap();
    assert_eq!(fs.read(fh, 0, 1 << 20).await.unwrap(), good);
    // Another process writes a byte into the entry, in place, while the handle is open.
    let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = good.len() as u64 / 2;
    std::os::unix::fs::FileExt::write_all_at(&w, &[good[at as usize] ^ 0xff], at).unwrap();
    let e = fs
        .read(fh, at, 16)
        .await
        .expect_err("a changed byte is never served");
    assert_eq!(e.errno(), libc::EIO);
    assert!(e.to_string().contains("differ"), "{e}");
    // A truncation is an error too, not a short file.
    w.set_len(at).unwrap();
    let e = fs
        .read(fh, at - 8, 64)
        .await
        .expect_err("never a short read");
    assert_eq!(e.errno(), libc::EIO);
    fs.release(fh);
    // A new open checks the entry again, finds it damaged and makes it again.
    assert_eq!(read_all(&fs, i, 1 << 20).await, good);
}

/// Entries in a cache directory (files named `*.nc` under `v<FORMAT_VERSION>/<2 hex>/`).
fn cache_entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(format!("v{FORMAT_VERSION}")))
        .unwrap()
        .flatten()
        .filter(|d| d.file_name() != "tmp")
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_attributes() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    let i = ino(&fs, "a.nc");
    let get = |name: &str| {
        fs.getxattr(i, OsStr::new(name))
            .map(|v| String::from_utf8(v).unwrap())
    };
    assert!(get("user.sodeda.deskriptor")
        .unwrap()
        .contains("\"name\": \"a\""));
    assert_eq!(get("user.sodeda.cached").unwrap(), "no");
    assert_eq!(get("user.other").unwrap_err().errno(), libc::ENODATA);
    assert_eq!(
        fs.listxattr(i).unwrap(),
        vec![
            "user.sodeda.deskriptor",
            "user.sodeda.identity",
            "user.sodeda.provenance"
        ],
        "only stable facts are listed: a copy (cp -a, rsync -aX) carries no state"
    );
    let provenance =
        |name: &str| -> serde_json::Value { serde_json::from_str(&get(name).unwrap()).unwrap() };
    let p = provenance("user.sodeda.provenance");
    assert_eq!(p["status"], "unknown", "{p}"); // the synthetic store has no valid_time_stop
    assert_eq!(p["last_time"], "2023-01-01T05:00", "{p}");
    assert!(p["absent_chunks"].is_null(), "not built yet: {p}");
    read_all(&fs, i, 1 << 20).await;
    assert_eq!(get("user.sodeda.cached").unwrap(), "yes");
    assert!(!fs
        .listxattr(i)
        .unwrap()
        .contains(&"user.sodeda.cached".to_string()));
    assert_eq!(provenance("user.sodeda.provenance")["absent_chunks"], 0);
    let stats: serde_json::Value = serde_json::from_slice(
        &fs.getxattr(ROOT_INO, OsStr::new("user.sodeda.stats"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["flow_runs"], 1);
    assert_eq!(stats["files"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_reads_answer_without_a_task_once_the_file_is_built() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    let i = ino(&fs, "a.nc");
    let size = fs.getattr(i).unwrap().size;
    let fh = fs.open(i, false).unwrap();
    assert!(
        fs.read_ready(fh, 0, 100).is_none(),
        "not built yet: needs the flow"
    );
    let first = fs.read(fh, 0, 100).await.unwrap();
    assert_eq!(fs.read_ready(fh, 0, 100).unwrap().unwrap(), first);
    let tail = fs.read_ready(fh, size - 3, 100).unwrap().unwrap();
    assert_eq!(tail.len(), 3);
    assert!(fs.read_ready(fh, size, 100).unwrap().unwrap().is_empty());
    assert!(fs.read_ready(999, 0, 1).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_adds_and_removes_files_and_open_handles_keep_working() {
    let store = common::synthetic_store().await;
    let (fs, _dir) = setup(store).await;
    let a = ino(&fs, "a.nc");
    let b = ino(&fs, "b.nc");
    let fh = fs.open(b, false).unwrap();
    let before = fs.read(fh, 0, 1 << 20).await.unwrap();

    // A new version of the file: b removed, c added, a unchanged.
    let text = DESKRIPTORS
        .lines()
        .filter(|l| !l.contains("\"b\""))
        .chain([r#"{"name": "c", "time": "2023-01-01T03:00", "variable": "2m_temperature"}"#])
        .collect::<Vec<_>>()
        .join("\n");
    let catalog =
        Catalog::from_text(&text, &fs.flow().source().scope, PlanOptions::default()).unwrap();
    let summary = fs.reload(catalog.entries);
    assert_eq!(summary.added, vec!["c.nc"]);
    assert_eq!(summary.removed, vec!["b.nc"]);
    assert_eq!(summary.files, 3);

    let names: Vec<String> = fs
        .readdir(ROOT_INO)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![".", "..", "a.nc", "absent.nc", "c.nc"]);
    assert_eq!(ino(&fs, "a.nc"), a, "unchanged files keep their inode");
    assert_eq!(fs.getattr(b).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(
        fs.lookup(ROOT_INO, OsStr::new("b.nc")).unwrap_err().errno(),
        libc::ENOENT
    );
    // The handle opened before the reload still reads the removed file.
    assert_eq!(fs.read(fh, 0, 1 << 20).await.unwrap(), before);
    let c = read_all(&fs, ino(&fs, "c.nc"), 4096).await;
    assert_eq!(c.len() as u64, fs.getattr(ino(&fs, "c.nc")).unwrap().size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_reports_changed_and_removed_names_with_their_retired_inodes() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    let a = fs.lookup(ROOT_INO, OsStr::new("a.nc")).unwrap();
    let b = ino(&fs, "b.nc");
    let absent = ino(&fs, "absent.nc");
    let fh = fs.open(a.ino, false).unwrap();
    let old_bytes = fs.read(fh, 0, 1 << 20).await.unwrap();

    // a: same name, another selection (two hours fewer); b removed; absent unchanged; c new.
    let reloaded = |text: &str| {
        let catalog =
            Catalog::from_text(text, &fs.flow().source().scope, PlanOptions::default()).unwrap();
        assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
        fs.reload(catalog.entries)
    };
    let a2 = r#"{"name": "a", "time": {"start": "2023-01-01T00", "end": "2023-01-01T03"}, "variable": "2m_temperature"}"#;
    let c = r#"{"name": "c", "time": "2023-01-01T03:00", "variable": "2m_temperature"}"#;
    let third = DESKRIPTORS.lines().nth(2).unwrap();
    let summary = reloaded(&[a2, third, c].join("\n"));
    assert_eq!(summary.files, 3);
    assert_eq!(summary.added, vec!["c.nc"]);
    assert_eq!(summary.removed, vec!["b.nc"]);
    assert_eq!(summary.changed, vec!["a.nc"]);
    let mut retired = summary.retired.clone();
    retired.sort_unstable();
    let mut expected = vec![a.ino, b];
    expected.sort_unstable();
    assert_eq!(retired, expected, "the old inodes of a and b, not absent's");
    let mut stale: Vec<&str> = summary.stale_names().collect();
    stale.sort_unstable();
    assert_eq!(stale, vec!["a.nc", "b.nc", "c.nc"]);

    // The changed name is a new inode with the new size, readable at once.
    let new_a = fs.lookup(ROOT_INO, OsStr::new("a.nc")).unwrap();
    assert_ne!(new_a.ino, a.ino, "a changed line gets a new inode");
    assert!(new_a.size < a.size, "{} < {}", new_a.size, a.size);
    assert_eq!(
        ino(&fs, "absent.nc"),
        absent,
        "an unchanged line keeps its inode"
    );
    assert_eq!(fs.getattr(a.ino).unwrap_err().errno(), libc::ENOENT);
    let new_bytes = read_all(&fs, new_a.ino, 4096).await;
    assert_eq!(new_bytes.len() as u64, new_a.size);

    // The handle opened before still reads the old version, and its attributes are still
    // answered through it (the kernel asks with the handle before reading up to the end).
    assert_eq!(fs.getattr_open(a.ino, fh).unwrap(), a);
    assert_eq!(fs.read(fh, 0, 1 << 20).await.unwrap(), old_bytes);
    assert_eq!(
        fs.getattr_open(a.ino, 98765).unwrap_err().errno(),
        libc::ENOENT,
        "an unknown handle does not revive a retired inode"
    );
    assert_eq!(fs.getattr_open(new_a.ino, fh).unwrap(), new_a);
    fs.release(fh);
    assert_eq!(
        fs.getattr_open(a.ino, fh).unwrap_err().errno(),
        libc::ENOENT
    );

    // Back to the first version: a gets its first inode back; nothing else changed.
    let summary = reloaded(&[DESKRIPTORS.lines().next().unwrap(), third, c].join("\n"));
    assert_eq!(summary.changed, vec!["a.nc"]);
    assert_eq!(summary.retired, vec![new_a.ino]);
    assert!(summary.added.is_empty() && summary.removed.is_empty());
    assert_eq!(fs.lookup(ROOT_INO, OsStr::new("a.nc")).unwrap(), a);
    // The same file again: nothing to forget.
    let summary = reloaded(&[DESKRIPTORS.lines().next().unwrap(), third, c].join("\n"));
    assert_eq!(summary.stale_names().count(), 0);
    assert!(summary.retired.is_empty());
}

/// Twelve one-hour files, named so that name order is the reverse of line order.
async fn hourly(readahead: usize) -> (Arc<DatasetFs>, tempfile::TempDir) {
    let source = Arc::new(
        Source::open_store("memory://synthetic", common::synthetic_store().await)
            .await
            .unwrap(),
    );
    let text: String = (0..12)
        .map(|h| {
            format!(
                "{{\"name\": \"f{:02}\", \"time\": \"2023-01-01T{h:02}:00\", \"variable\": \"2m_temperature\"}}\n",
                11 - h
            )
        })
        .collect();
    let catalog = Catalog::from_text(&text, &source.scope, PlanOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(
        source,
        LocalCache::open(dir.path()).unwrap(),
        FetchOptions::default(),
    );
    let fs =
        DatasetFs::new(catalog.entries, flow, PlanOptions::default()).with_readahead(readahead);
    (Arc::new(fs), dir)
}

/// Waits (at most 10 s) until `n` flow runs have ended.
async fn runs_reach(fs: &DatasetFs, n: u64) -> u64 {
    for _ in 0..200 {
        let runs = fs.flow().metrics().runs.load(Ordering::Relaxed);
        if runs >= n && fs.flow().memory().in_use() == 0 {
            return runs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fs.flow().metrics().runs.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reading_files_in_order_builds_the_next_ones_ahead_within_the_window() {
    let (fs, _dir) = hourly(4).await;
    // Line order: f11, f10, f09, ... Three first reads in a row start the readahead.
    for name in ["f11.nc", "f10.nc", "f09.nc"] {
        read_all(&fs, ino(&fs, name), 1 << 20).await;
    }
    // The window: the four files after f09 in line order, no more.
    assert_eq!(runs_reach(&fs, 7).await, 7);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(fs.flow().metrics().runs.load(Ordering::Relaxed), 7);
    let stats: serde_json::Value = serde_json::from_str(&fs.stats_json()).unwrap();
    assert_eq!(stats["readahead_builds"], 4);
    // Reading them is a cache hit each, and keeps the window going.
    let hits = fs.flow().metrics().tiers.cache_hits.load(Ordering::Relaxed);
    let built_ahead = read_all(&fs, ino(&fs, "f08.nc"), 1 << 20).await;
    assert_eq!(
        built_ahead.len() as u64,
        fs.getattr(ino(&fs, "f08.nc")).unwrap().size
    );
    assert!(fs.flow().metrics().tiers.cache_hits.load(Ordering::Relaxed) > hits);
    assert_eq!(runs_reach(&fs, 8).await, 8, "f04 joins the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reading_in_name_order_is_followed_too_and_random_order_starts_nothing() {
    let (fs, _dir) = hourly(4).await;
    for name in ["f00.nc", "f01.nc", "f02.nc"] {
        read_all(&fs, ino(&fs, name), 1 << 20).await;
    }
    assert_eq!(runs_reach(&fs, 7).await, 7, "f03..f06 ahead in name order");

    let (fs, _dir) = hourly(4).await;
    for name in ["f05.nc", "f01.nc", "f09.nc", "f02.nc", "f07.nc"] {
        read_all(&fs, ino(&fs, name), 1 << 20).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(fs.flow().metrics().runs.load(Ordering::Relaxed), 5);

    let (fs, _dir) = hourly(0).await;
    for name in ["f00.nc", "f01.nc", "f02.nc", "f03.nc"] {
        read_all(&fs, ino(&fs, name), 1 << 20).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        fs.flow().metrics().runs.load(Ordering::Relaxed),
        4,
        "--readahead 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_in_pages_gives_every_entry_once_from_any_cookie() {
    let (fs, _dir) = setup(common::synthetic_store().await).await;
    let all = fs.readdir(ROOT_INO).unwrap();
    // Pages of two entries, each starting at the cookie the previous one ended with, as the
    // kernel asks: the same entries, once each, in order.
    let mut paged = Vec::new();
    let mut offset = 0;
    loop {
        let mut page = Vec::new();
        fs.readdir_from(ROOT_INO, offset, |cookie, e| {
            page.push((cookie, e.name.to_string(), e.ino));
            page.len() == 2
        })
        .unwrap();
        if page.is_empty() {
            break;
        }
        offset = page.last().unwrap().0;
        paged.extend(page);
    }
    let names: Vec<&str> = paged.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        all.iter().map(|e| e.name.as_str()).collect::<Vec<_>>()
    );
    let cookies: Vec<u64> = paged.iter().map(|(c, ..)| *c).collect();
    assert_eq!(cookies, (1..=all.len() as u64).collect::<Vec<_>>());
    // From the cookie of the third entry: the rest only.
    let mut rest = Vec::new();
    fs.readdir_from(ROOT_INO, 3, |_, e| {
        rest.push(e.name.to_string());
        false
    })
    .unwrap();
    assert_eq!(rest, vec!["b.nc", "absent.nc"]);
    assert_eq!(
        fs.readdir_from(ino(&fs, "a.nc"), 0, |_, _| false)
            .unwrap_err()
            .errno(),
        libc::ENOTDIR
    );
}

/// Lists directory `ino` in pages of `page` entries, as the kernel does (each page from the
/// cookie the previous one ended with), calling `between` after each page: the names listed.
fn list_in_pages(
    fs: &DatasetFs,
    ino: u64,
    page: usize,
    mut between: impl FnMut(usize),
) -> Vec<String> {
    let mut names = Vec::new();
    let mut offset = 0;
    for pages in 0.. {
        let mut got = Vec::new();
        fs.readdir_from(ino, offset, |cookie, e| {
            got.push((cookie, e.name.to_string()));
            got.len() == page
        })
        .unwrap();
        let Some(&(last, _)) = got.last() else {
            break;
        };
        assert!(last > offset, "cookies grow: {last} after {offset}");
        offset = last;
        names.extend(got.into_iter().map(|(_, n)| n));
        between(pages);
    }
    names
}

/// Offsets stay valid across a reload: a directory listed in pages while reloads remove and
/// restore a block of other lines between the pages lists every file present in both
/// versions exactly once, in the root (a flat set) and in a directory made by names with `/`;
/// the lines of a block restored in the middle of the file come after the others (a listing
/// follows the order files first appeared in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_in_pages_across_reloads_gives_each_unchanged_file_once() {
    let source = Arc::new(
        Source::open_store("memory://synthetic", common::synthetic_store().await)
            .await
            .unwrap(),
    );
    for prefix in ["", "d/"] {
        let line = |n: usize| {
            format!(
                r#"{{"name": "{prefix}f{n:04}", "time": "2023-01-01T{:02}:00", "latitude": 0, "longitude": 0, "variable": "2m_temperature"}}"#,
                n % 24
            )
        };
        let (files, block) = (300, 100..160);
        let all: Vec<String> = (0..files).map(line).collect();
        let without: Vec<String> = (0..files)
            .filter(|n| !block.contains(n))
            .map(line)
            .collect();
        let entries = |lines: &[String]| {
            let catalog =
                Catalog::from_text(&lines.join("\n"), &source.scope, PlanOptions::default())
                    .unwrap();
            assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
            catalog.entries
        };
        let dir = tempfile::tempdir().unwrap();
        let flow = Flow::new(
            source.clone(),
            LocalCache::open(dir.path()).unwrap(),
            FetchOptions::default(),
        );
        let fs = DatasetFs::new(entries(&all), flow, PlanOptions::default());
        let ino = match prefix {
            "" => ROOT_INO,
            _ => fs.lookup(ROOT_INO, OsStr::new("d")).unwrap().ino,
        };
        let kept: Vec<String> = (0..files)
            .filter(|n| !block.contains(n))
            .map(|n| format!("f{n:04}.nc"))
            .collect();
        // Pages of 7; after every other page the block goes or comes back.
        for start in [0, 1] {
            let names = list_in_pages(&fs, ino, 7, |page| {
                if page % 2 == start {
                    let removed = fs.len() == files;
                    fs.reload(entries(if removed { &without } else { &all }));
                }
            });
            for name in &kept {
                let times = names.iter().filter(|n| *n == name).count();
                assert_eq!(
                    times, 1,
                    "{prefix}{name} listed {times} times (start {start})"
                );
            }
            assert_eq!(
                names.len(),
                names.iter().collect::<std::collections::HashSet<_>>().len()
            );
        }
        // Back to every line: the block restored last lists after the others.
        if fs.len() != files {
            fs.reload(entries(&all));
        }
        let now: Vec<String> = fs
            .readdir(ino)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(now.len(), files + 2);
        assert_eq!(now[2..2 + kept.len()], kept[..], "{prefix}");
    }
}

/// Names with `/` place files in directories: the root lists the first segments, each
/// directory its entries (in line order), `..` leads back, lookups walk the tree, a directory
/// cannot be opened, and a reload keeps every directory's inode while it removes the
/// directories that lose their last file. A `--layout` places unnamed files the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_slashes_make_directories_that_reloads_keep() {
    let source = Arc::new(
        Source::open_store("memory://synthetic", common::synthetic_store().await)
            .await
            .unwrap(),
    );
    let line = |name: &str, hour: u32| {
        format!(
            r#"{{"name": "{name}", "time": "2023-01-01T{hour:02}:00", "latitude": 0, "longitude": 0, "variable": "2m_temperature"}}"#
        )
    };
    let text = [
        line("t2m/2023/01/a", 1),
        line("top", 2),
        line("t2m/2023/02/b", 3),
        line("t2m/2023/01/c", 4),
    ]
    .join("\n");
    let catalog = Catalog::from_text(&text, &source.scope, PlanOptions::default()).unwrap();
    assert!(catalog.errors.is_empty(), "{:?}", catalog.errors);
    let dir = tempfile::tempdir().unwrap();
    let flow = Flow::new(
        source.clone(),
        LocalCache::open(dir.path()).unwrap(),
        FetchOptions::default(),
    );
    let fs = DatasetFs::new(catalog.entries, flow, PlanOptions::default());
    let names = |ino: u64| -> Vec<String> {
        fs.readdir(ino)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    assert_eq!(names(ROOT_INO), [".", "..", "t2m", "top.nc"]);
    let t2m = fs.lookup(ROOT_INO, OsStr::new("t2m")).unwrap();
    assert_eq!(t2m.kind, Kind::Directory);
    assert_eq!(t2m.perm, 0o555);
    assert_eq!(fs.getattr(t2m.ino).unwrap().kind, Kind::Directory);
    let y = fs.lookup(t2m.ino, OsStr::new("2023")).unwrap().ino;
    assert_eq!(names(y), [".", "..", "01", "02"]);
    let jan = fs.lookup(y, OsStr::new("01")).unwrap().ino;
    assert_eq!(names(jan), [".", "..", "a.nc", "c.nc"]);
    let listing = fs.readdir(jan).unwrap();
    assert_eq!((listing[0].ino, listing[1].ino), (jan, y), ". and ..");
    let a = fs.lookup(jan, OsStr::new("a.nc")).unwrap();
    assert_eq!(a.kind, Kind::File);
    assert!(!read_all(&fs, a.ino, 4096).await.is_empty());
    // Not by the whole path from the root, not into a file, not as a file.
    let whole = fs.lookup(ROOT_INO, OsStr::new("t2m/2023/01/a.nc"));
    assert!(matches!(whole, Err(FsError::NotFound)));
    let into_file = fs.lookup(a.ino, OsStr::new("x"));
    assert!(matches!(into_file, Err(FsError::NotADirectory)));
    assert!(matches!(fs.readdir(a.ino), Err(FsError::NotADirectory)));
    assert!(matches!(fs.open(jan, false), Err(FsError::IsADirectory)));
    let elsewhere = fs.lookup(jan, OsStr::new("b.nc"));
    assert!(matches!(elsewhere, Err(FsError::NotFound)));
    assert_eq!(
        fs.kernel_entries("t2m/2023/01/a.nc"),
        [
            (ROOT_INO, "t2m".to_string()),
            (t2m.ino, "2023".to_string()),
            (y, "01".to_string()),
            (jan, "a.nc".to_string())
        ]
    );

    // February's only file goes: its directory goes; the others keep their inodes.
    let feb = fs.lookup(y, OsStr::new("02")).unwrap().ino;
    let fewer = [
        line("t2m/2023/01/a", 1),
        line("top", 2),
        line("t2m/2023/01/c", 4),
    ];
    let catalog =
        Catalog::from_text(&fewer.join("\n"), &source.scope, PlanOptions::default()).unwrap();
    let summary = fs.reload(catalog.entries);
    assert_eq!(summary.removed, ["t2m/2023/02/b.nc"]);
    assert_eq!(names(y), [".", "..", "01"]);
    assert_eq!(fs.lookup(y, OsStr::new("01")).unwrap().ino, jan);
    assert_eq!(fs.lookup(jan, OsStr::new("a.nc")).unwrap().ino, a.ino);
    assert!(matches!(fs.getattr(feb), Err(FsError::NotFound)));
    // The removed file's way is still known, for the kernel to forget it.
    assert_eq!(
        fs.kernel_entries("t2m/2023/02/b.nc")[2],
        (y, "02".to_string())
    );

    // A file and a directory of one path: the later line is refused, naming the earlier one.
    let refused = |lines: &[String]| {
        let catalog =
            Catalog::from_text(&lines.join("\n"), &source.scope, PlanOptions::default()).unwrap();
        catalog
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    };
    let e = refused(&[line("x", 1), line("x.nc/y", 2)]);
    assert!(
        e.len() == 1 && e[0].contains("is the file of line 1"),
        "{e:?}"
    );
    let e = refused(&[line("x.nc/y", 1), line("x", 2)]);
    assert!(
        e.len() == 1 && e[0].contains("line 1 places a file in a directory"),
        "{e:?}"
    );
    // `d.nc` (a file) is not the directory `d`.
    assert!(refused(&[line("d/y", 1), line("d", 2)]).is_empty());

    // --layout: unnamed files in {variable}/{year}/{month}, under their default names.
    let layout: &'static _ = Box::leak(Box::new(
        sodeda_era5::naming::NameLayout::parse("{variable}/{year}/{month}").unwrap(),
    ));
    let options = PlanOptions {
        layout: Some(layout),
        ..PlanOptions::default()
    };
    let unnamed = r#"{"time": "2023-01-02T05:00", "latitude": 0, "longitude": 0, "variable": "2m_temperature"}"#;
    let text = format!("{unnamed}\n{}", line("kept", 1));
    let catalog = Catalog::from_text(&text, &source.scope, options).unwrap();
    let got: Vec<&str> = catalog.entries.iter().map(|e| e.file_name()).collect();
    assert!(
        got[0].starts_with("2m_temperature/2023/01/2m_temperature_20230102T05_"),
        "{got:?}"
    );
    assert_eq!(got[1], "kept.nc", "named files place themselves");
}

/// A catalog read in batches (as `validate` and `list` stream it) gives the same entries and
/// errors as one read whole: names checked across batch boundaries (a duplicate, a file that
/// is another line's directory), blank lines, CRLF, a line that is not UTF-8, no final newline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_read_in_batches_equals_one_read_whole() {
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    let line = |name: &str, hour: u32| {
        format!(
            r#"{{"name": "{name}", "time": "2023-01-01T{hour:02}:00", "latitude": 0, "longitude": 0, "variable": "2m_temperature"}}"#
        )
        .into_bytes()
    };
    let mut bytes = Vec::new();
    for part in [
        line("a", 1),
        line("d/x", 2),
        b"".to_vec(),
        line("b", 3),
        line("a", 4),
        b"{\"name\": \"\xff\"}".to_vec(),
        line("d", 5),
        line("d.nc/y", 6),
        line("c", 7),
    ] {
        bytes.extend(part);
        bytes.extend(b"\r\n");
    }
    bytes.extend(line("last", 8));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    let whole = Catalog::from_lines(
        sodeda_era5::deskriptor::split_lines(&bytes),
        &source.scope,
        PlanOptions::default(),
    )
    .unwrap();
    for batch in [1, 2, 3, 100] {
        let (mut entries, mut errors) = (Vec::new(), Vec::new());
        Catalog::scan_in_batches(
            &path,
            &source.scope,
            PlanOptions::default(),
            batch,
            |r| match r {
                Ok(e) => entries.push(e),
                Err(e) => errors.push(e),
            },
        )
        .unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.file_name()).collect();
        assert_eq!(
            names,
            ["a.nc", "d/x.nc", "b.nc", "d.nc", "c.nc", "last.nc"],
            "batch {batch}"
        );
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 6, 8], "batch {batch}: {errors:?}");
        assert!(errors[0].message.contains("line 1 already has it"));
        assert!(errors[1].message.contains("UTF-8"), "{}", errors[1]);
        assert!(
            errors[2].message.contains("is the file of line 7"),
            "{}",
            errors[2]
        );
        let whole_names: Vec<&str> = whole.entries.iter().map(|e| e.file_name()).collect();
        assert_eq!(names, whole_names);
        assert_eq!(errors, whole.errors);
    }
}
