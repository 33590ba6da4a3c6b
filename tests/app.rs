//! The application's one way in: a plain `Config` opens the stack (source by path, local
//! cache, flow) and the deskriptors file under the catalog policy that mounts, reloads and
//! the dashboard share. The source is the synthetic store of tests/common, written to disk.

mod common;

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use sodeda_era5::app::Config;
use sodeda_era5::catalog::policy::{Policy, ReadError, Refused};
use sodeda_era5::flow::Origin;
use zarrs_object_store::object_store::{local::LocalFileSystem, ObjectStore, ObjectStoreExt};

const GOOD: &str = r#"{"name": "a", "time": {"start": "2023-01-01T00", "end": "2023-01-01T05"}, "variable": "2m_temperature"}
{"name": "b", "time": "2023-01-01T10:00", "latitude": {"start": -1, "end": 1}, "variable": "2m_temperature"}
"#;
const BAD: &str = r#"{"name": "c", "time": "2023-01-01T00", "variable": "no_such_variable"}
"#;

/// The synthetic store copied object by object into `dir`.
async fn store_on_disk(dir: &Path) -> PathBuf {
    let memory = common::synthetic_store().await;
    let root = dir.join("store.zarr");
    std::fs::create_dir_all(&root).unwrap();
    let disk = LocalFileSystem::new_with_prefix(&root).unwrap();
    let objects: Vec<_> = memory.list(None).try_collect().await.unwrap();
    assert!(
        objects.len() > 10,
        "the synthetic store has metadata and chunks"
    );
    for object in objects {
        let bytes = memory.get(&object.location).await.unwrap().bytes().await;
        disk.put(&object.location, bytes.unwrap().into())
            .await
            .unwrap();
    }
    root
}

fn config(dir: &Path, source: &Path, text: &str) -> Config {
    let deskriptors = dir.join("deskriptors.jsonl");
    std::fs::write(&deskriptors, text).unwrap();
    let mut config = Config::new(deskriptors);
    config.source = source.display().to_string();
    config.cache_dir = dir.join("cache");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_opens_the_stack_and_builds_then_serves_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let source = store_on_disk(dir.path()).await;
    let config = config(dir.path(), &source, GOOD);
    let stack = config.open().await.unwrap();
    let catalog = config
        .catalog_file(Policy::default())
        .read(&stack.source.scope)
        .unwrap();
    assert_eq!(catalog.entries.len(), 2);
    let entry = &catalog.entries[1];
    let plan = entry.plan(&stack.source.scope, config.plan).unwrap();
    let (built, origin) = stack.flow.materialize(&plan).await.unwrap();
    assert_eq!(origin, Origin::Built);
    assert_eq!(std::fs::metadata(&built.path).unwrap().len(), entry.size);
    assert!(built.path.starts_with(dir.path().join("cache")));
    let (_, origin) = stack.flow.materialize(&plan).await.unwrap();
    assert_eq!(origin, Origin::Cache);
    // The catalog's index was kept beside the cache's entries and is read back the same.
    let again = config
        .catalog_file(Policy::default())
        .read(&stack.source.scope)
        .unwrap();
    assert_eq!(again.entries, catalog.entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_policy_skips_refuses_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let source = store_on_disk(dir.path()).await;
    let config = config(dir.path(), &source, &format!("{GOOD}{BAD}"));
    let stack = config.open().await.unwrap();
    let lenient = config.catalog_file(Policy::default());
    let catalog = lenient.read(&stack.source.scope).unwrap();
    assert_eq!((catalog.entries.len(), catalog.errors.len()), (2, 1));
    assert_eq!(catalog.errors[0].line, 3);

    let strict = config.catalog_file(Policy {
        strict: true,
        ..Policy::default()
    });
    let e = strict.read(&stack.source.scope).unwrap_err();
    let text = e.to_string();
    let matched =
        matches!(&e, ReadError::Refused { refused: Refused::Strict(v), .. } if v.len() == 1);
    assert!(matched, "{text}");
    assert!(
        text.contains("deskriptors.jsonl: 1 bad lines (--strict)"),
        "{text}"
    );
    assert!(
        text.contains("line 3") && text.contains("no_such_variable"),
        "{text}"
    );
    // A file read without the policy keeps every line (preload reports them all).
    let all = strict.read_unchecked(&stack.source.scope).unwrap();
    assert_eq!((all.entries.len(), all.errors.len()), (2, 1));

    std::fs::write(&config.deskriptors, BAD).unwrap();
    let e = lenient.read(&stack.source.scope).unwrap_err();
    assert!(matches!(
        e,
        ReadError::Refused {
            refused: Refused::NothingValid(_),
            ..
        }
    ));
    std::fs::remove_file(&config.deskriptors).unwrap();
    let e = lenient.read(&stack.source.scope).unwrap_err();
    assert!(matches!(e, ReadError::Io { .. }), "{e}");
    assert!(e.to_string().starts_with("cannot read "), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_a_missing_source_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &dir.path().join("nowhere.zarr"), GOOD);
    let e = config.open().await.err().expect("no store there");
    assert!(format!("{e:#}").contains("nowhere.zarr"), "{e:#}");
}
