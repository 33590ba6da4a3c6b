//! `mount` (and `sodeda-mount`): in the background, a copy of this program started with the
//! same arguments; in the foreground, the stack opened, the catalog admitted by its policy,
//! and the file system served until unmounted, reloading on SIGHUP and watching the store's
//! version.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;

use super::args::MountArgs;
use crate::app::Config;
use crate::catalog::policy::Policy;

/// Mounts the dataset of `config`; `argv` are this program's arguments (program name first),
/// which a background mount is started with.
pub(super) async fn mount(
    config: &Config,
    args: &MountArgs,
    argv: &[OsString],
) -> Result<ExitCode> {
    let mountpoint = crate::mount::prepare_mountpoint(&args.mountpoint)?;
    let mut needed: Vec<(&'static str, &std::path::Path)> = vec![
        ("cache directory", &config.cache_dir),
        ("deskriptors file", &config.deskriptors),
    ];
    if let Some(log) = &args.log_file {
        needed.push(("log file", log));
    }
    let cache_tree = crate::cache::LocalCache::root_of(&config.cache_dir);
    crate::mount::check_setup(&mountpoint, &needed, &cache_tree)?;
    if !args.foreground {
        let log = match &args.log_file {
            Some(l) => std::path::absolute(l)?,
            None => config.absolute_cache_dir()?.join("sodeda-mount.log"),
        };
        let pid = tokio::task::spawn_blocking({
            let (mountpoint, log) = (mountpoint.clone(), log.clone());
            let argv = argv.get(1..).unwrap_or_default().to_vec();
            move || {
                crate::mount::spawn_background(
                    &mountpoint,
                    &log,
                    &argv,
                    std::time::Duration::from_secs(300),
                )
            }
        })
        .await??;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let unmount = if unsafe { libc::geteuid() } == 0 {
            "umount"
        } else {
            "fusermount3 -u"
        };
        eprintln!(
            "sodeda-mount: mounted at {} (pid {pid}); logging to {}; unmount with `{unmount} {}` \
             (or `sodeda-era5 unmount`)",
            mountpoint.display(),
            log.display(),
            mountpoint.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let started = std::time::Instant::now();
    let source = config.open_source().await?;
    let mut catalog_file = config.catalog_file(Policy {
        strict: args.strict,
        refuse_empty: false,
    });
    let catalog = catalog_file.read(&source.scope)?;
    let planned = started.elapsed();
    for e in &catalog.errors {
        eprintln!("warning: skipping {e}");
    }
    let n = catalog.entries.len();
    let fs = Arc::new(
        crate::fs::DatasetFs::new(
            catalog.entries,
            config.open_flow(source.clone()).await?,
            config.plan,
        )
        .with_readahead(args.readahead),
    );
    crate::mount::release_freed_memory();
    tracing::debug!(
        "started: source and catalog in {planned:.2?}, the file system in {:.2?}",
        started.elapsed() - planned
    );
    let options = crate::mount::MountOptions {
        allow_other: args.allow_other,
        threads: args.fuse_threads,
    };
    let flow = fs.flow().clone();
    let check_source = source.clone();
    let check: crate::mount::VersionCheck = Arc::new(move || {
        let (source, flow) = (check_source.clone(), flow.clone());
        Box::pin(async move {
            let changed = source.refresh_version().await?;
            if changed {
                // Entries built while chunks were absent are rebuilt from the new version.
                flow.set_store_version(source.scope.freshness.cache_version());
            }
            Ok(changed)
        })
    });
    let source_check = (args.source_check_interval > 0).then(|| crate::mount::SourceCheck {
        every: std::time::Duration::from_secs(args.source_check_interval),
        check: check.clone(),
    });
    // A reload refuses an empty file: it would empty the live mount (see the policy's doc).
    catalog_file.policy.refuse_empty = true;
    let reload: crate::mount::Reloader = Arc::new(move || {
        let (file, source, check) = (catalog_file.clone(), source.clone(), check.clone());
        Box::pin(async move {
            // The store's version too: a reload picks up a store update at once.
            if let Err(e) = check().await {
                tracing::warn!("reload: reading the store's version: {e:#}");
            }
            // Refused by the policy: the files served so far stay.
            let catalog = tokio::task::spawn_blocking(move || file.read(&source.scope)).await??;
            for e in &catalog.errors {
                tracing::warn!("skipping {e}");
            }
            Ok(catalog.entries)
        })
    });
    let source_url = config.source.clone();
    crate::mount::serve(
        fs,
        &mountpoint,
        &options,
        Some(reload),
        source_check,
        || {
            // Once, on a line of its own written at once: to the terminal in the foreground, to
            // the log in the background (where tracing may write from other threads too).
            let line = format!(
                "{}{n} files at {} from {source_url} (pid {})\n",
                crate::mount::SERVING,
                mountpoint.display(),
                std::process::id()
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
