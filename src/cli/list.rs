//! `list` and `validate`: the deskriptors file streamed a batch at a time, so ten million
//! lines are listed or checked in bounded memory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::json;

use crate::app::Config;
use crate::cache::{LocalCache, Tier};
use crate::catalog::{Catalog, Entry};
use crate::deskriptor::Deskriptor;

/// `list`: streamed a batch of lines at a time ([`Catalog::scan`]), so a file of ten million
/// lines is listed in bounded memory; bad lines are warned about on standard error as they
/// come. The text form aligns sizes to the longest name of the first batch.
pub(super) async fn list(config: &Config, json: bool) -> Result<ExitCode> {
    let source = config.open_source().await?;
    let cache = LocalCache::open(&config.cache_dir)?;
    let remote = config.open_s3().await?;
    let options = config.plan;
    // Planning runs on its own threads; batches come back here to be checked and written.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Entry>>(2);
    let path = config.deskriptors.clone();
    let scan_source = source.clone();
    let scanner = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        let result = Catalog::scan(&path, &scan_source.scope, options, |r| match r {
            Ok(entry) => {
                batch.push(entry);
                if batch.len() == crate::catalog::BATCH {
                    let _ = tx.blocking_send(std::mem::take(&mut batch));
                }
            }
            Err(e) => eprintln!("warning: skipping {e}"),
        });
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        result
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let mut width = 0;
    if json {
        write!(out, "[")?;
    }
    while let Some(entries) = rx.recv().await {
        let tiers = tiers_of(&entries, &cache, remote.as_deref()).await;
        if first && !json {
            width = entries
                .iter()
                .map(|p| p.file_name().len())
                .max()
                .unwrap_or(4)
                .max(4);
            header(&mut out, width)?;
        }
        for (p, t) in entries.iter().zip(tiers) {
            if json {
                let canonical = Deskriptor::parse(p.line, p.raw())
                    .map(|d| d.canonical_json())
                    .unwrap_or_default();
                let row = json!({
                    "line": p.line,
                    "name": p.file_name(),
                    "size": p.size,
                    "cached": t.contains(&"local"),
                    "tiers": t,
                    "identity": p.identity(),
                    "deskriptor": canonical,
                    "provisional": p.provisional,
                    "mtime": p.mtime,
                });
                let sep = if first { "\n" } else { ",\n" };
                write!(out, "{sep}{}", serde_json::to_string_pretty(&row)?)?;
            } else {
                let cached = if t.is_empty() {
                    "no".to_string()
                } else {
                    t.join("+")
                };
                // A file of preliminary hours is marked: the store will replace its data.
                let mark = if p.provisional {
                    "  provisional (ERA5T hours)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{:<width$}  {:>12}  {cached}{mark}",
                    p.file_name(),
                    p.size
                )?;
            }
            first = false;
        }
    }
    scanner
        .await?
        .with_context(|| format!("reading {}", config.deskriptors.display()))?;
    if json {
        writeln!(out, "{}]", if first { "" } else { "\n" })?;
    } else if first {
        header(&mut out, 4)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `validate`: streamed like `list`, keeping only the names seen (for the duplicate check).
pub(super) async fn validate(config: &Config) -> Result<ExitCode> {
    let source = config.open_source().await?;
    let (mut good, mut bad) = (0usize, 0usize);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let shown = config.deskriptors.display();
    Catalog::scan(
        &config.deskriptors,
        &source.scope,
        config.plan,
        |r| match r {
            Ok(_) => good += 1,
            Err(e) => {
                bad += 1;
                let _ = writeln!(out, "{shown}: {e}");
            }
        },
    )
    .with_context(|| format!("reading {shown}"))?;
    if bad == 0 {
        writeln!(out, "{shown}: {good} deskriptors, all valid")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "{shown}: {bad} bad lines, {good} valid deskriptors")?;
        Ok(ExitCode::FAILURE)
    }
}

/// Which tiers hold each of `entries`: local by size, S3 by a HEAD (32 at a time).
async fn tiers_of(
    entries: &[Entry],
    cache: &LocalCache,
    remote: Option<&crate::cache::s3::RemoteCache>,
) -> Vec<Vec<&'static str>> {
    let in_s3: Vec<Option<bool>> = match remote {
        Some(r) => {
            futures::stream::iter(entries.iter().map(|p| async move {
                match r.size_of(p.identity()).await {
                    Ok(size) => Some(size == Some(p.size)),
                    Err(e) => {
                        r.mark_down(&e);
                        None
                    }
                }
            }))
            .buffered(32)
            .collect()
            .await
        }
        None => vec![Some(false); entries.len()],
    };
    entries
        .iter()
        .zip(in_s3)
        .map(|(p, s3)| {
            let mut t = Vec::new();
            if cache.contains(p.identity(), p.size).is_some() {
                t.push("local");
            }
            match s3 {
                Some(true) => t.push("s3"),
                None => t.push("s3?"),
                Some(false) => {}
            }
            t
        })
        .collect()
}

/// The header line of the text form, the name column `width` wide.
fn header(out: &mut impl Write, width: usize) -> std::io::Result<()> {
    writeln!(out, "{:<width$}  {:>12}  CACHED", "NAME", "SIZE")
}
