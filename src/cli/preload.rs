//! `preload` and `prefetch`: files built ahead of their readers, all of them or a window
//! ahead of a job.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::app::Config;
use crate::catalog::policy::Policy;
use crate::preload::{PreloadOptions, Shard};

/// `preload`: every file of the deskriptors file (or of one shard) built into the cache tiers.
pub(super) async fn preload(
    config: &Config,
    jobs: usize,
    requests: usize,
    shard: Option<Shard>,
) -> Result<ExitCode> {
    let source = config.open_source().await?;
    let catalog = config
        .catalog_file(Policy::default())
        .read_unchecked(&source.scope)?;
    // Chunks that many files need together are read whole and shared; the others block by
    // block (preload decides per chunk; `--read-path full` reads every chunk whole).
    let flow = config.open_flow(source.clone()).await?;
    let options = PreloadOptions {
        jobs,
        requests,
        shard,
        plan: config.plan,
        progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let s = crate::preload::preload(&flow, catalog.entries, options).await;
    let secs = s.elapsed.as_secs_f64();
    let shard_text = shard.map_or(String::new(), |sh| {
        format!(" (shard {}/{})", sh.index, sh.count)
    });
    println!(
        "preload{shard_text}: {} files in {secs:.1} s ({:.1} files/s): {} built, {} copied from S3, \
         {} already cached, {} failed",
        s.files,
        s.files as f64 / secs.max(1e-9),
        s.built,
        s.copied,
        s.cached,
        s.failed.len() + catalog.errors.len()
    );
    let chunks = flow.fetch_options().chunk_cache.as_ref();
    println!(
        "source: {} requests, {} bytes; chunks decoded {}, reused from memory {}; read ahead: \
         {} requests, {} reads answered",
        source.metrics.requests(),
        source.metrics.bytes(),
        chunks.map_or(0, |c| c.decodes.load(std::sync::atomic::Ordering::Relaxed)),
        chunks.map_or(0, |c| c.hits.load(std::sync::atomic::Ordering::Relaxed)),
        s.read_ahead.0,
        s.read_ahead.1,
    );
    if let Some(pending) = flow.tiers().uploads_pending() {
        println!(
            "s3: {} uploaded, {pending} waiting for the bucket",
            flow.metrics()
                .tiers
                .uploads
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    for e in &catalog.errors {
        println!("failed: {e}");
    }
    for f in &s.failed {
        println!("failed: line {} ({}): {}", f.line, f.name, f.cause);
    }
    Ok(if s.failed.is_empty() && catalog.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `prefetch`: keeps `window` files of the `order` file built ahead of the reader of the mount
/// at `mountpoint`, until it stays idle for `idle`.
pub(super) async fn prefetch(
    mountpoint: &Path,
    order: &Path,
    window: usize,
    idle: std::time::Duration,
) -> Result<ExitCode> {
    let names = crate::mount::prefetch::read_order(mountpoint, order)?;
    let (mp, n) = (mountpoint.to_path_buf(), names.len());
    let done = tokio::task::spawn_blocking(move || {
        let poll = std::time::Duration::from_millis(50);
        crate::mount::prefetch::run(&mp, &names, window, poll, idle)
    })
    .await?;
    println!(
        "prefetch: {n} files in the order: {} built ahead ({} failed), {} passed by the reader first",
        done.started, done.failed, done.passed
    );
    Ok(ExitCode::SUCCESS)
}
