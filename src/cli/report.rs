//! `scope` and `status`: what the source holds, and what a running mount has done.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use crate::app::Config;
use crate::select;

/// `scope`: the source's coordinates and variables, as text or JSON.
pub(super) async fn scope(config: &Config, json: bool) -> Result<ExitCode> {
    let source = config.open_source().await?;
    let mut out = std::io::stdout().lock();
    let attr = |v: &crate::source::Variable, k: &str| {
        v.attributes
            .get(k)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    if json {
        let coords: serde_json::Map<_, _> = source
            .scope
            .coordinates
            .values()
            .map(|c| {
                let n = c.values.len();
                let (first, last) = match &c.time {
                    Some(t) => (
                        json!(select::fmt_instant(t.instant(c.values[0] as i64))),
                        json!(select::fmt_instant(t.instant(c.values[n - 1] as i64))),
                    ),
                    None => (json!(c.values[0]), json!(c.values[n - 1])),
                };
                (
                    c.name.clone(),
                    json!({"size": n, "first": first, "last": last, "attributes": c.attributes}),
                )
            })
            .collect();
        let vars: serde_json::Map<_, _> = source
            .scope.variables
            .values()
            .map(|v| {
                (
                    v.name.clone(),
                    json!({"dims": v.dims, "shape": v.shape, "chunks": v.chunks, "attributes": v.attributes}),
                )
            })
            .collect();
        let doc = json!({
            "source": source.scope.url,
            "attributes": source.scope.attributes,
            "coordinates": coords,
            "variables": vars,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "source: {}", source.scope.url)?;
    for (k, v) in &source.scope.attributes {
        writeln!(
            out,
            "  {k}: {}",
            v.as_str().map_or(v.to_string(), str::to_string)
        )?;
    }
    writeln!(out, "coordinates:")?;
    for c in source.scope.coordinates.values() {
        writeln!(out, "  {}: {}", c.name, select::describe(c))?;
    }
    writeln!(out, "variables ({}):", source.scope.variables.len())?;
    for v in source.scope.variables.values() {
        writeln!(
            out,
            "  {} ({}) [{}] {}",
            v.name,
            v.dims.join(", "),
            attr(v, "units"),
            attr(v, "long_name")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Counters in the order `status` prints them, with their explanations.
const STATUS_FIELDS: [(&str, &str); 13] = [
    ("files", "files in the mount"),
    ("reads", "read requests answered by the mount process"),
    ("bytes_read", "bytes returned by those reads"),
    (
        "passthrough_opens",
        "opens served by kernel passthrough (their reads bypass the process)",
    ),
    ("read_errors", "reads that failed (EIO and others)"),
    (
        "cache_hits",
        "opens (and builds) answered from the local cache",
    ),
    ("remote_hits", "files copied from the S3 tier"),
    ("flow_runs", "files built from the source"),
    ("flow_failures", "builds that failed"),
    ("uploads", "files uploaded to the S3 tier"),
    ("uploads_pending", "uploads waiting for the S3 tier"),
    (
        "source_requests",
        "requests to the source (start-up metadata included)",
    ),
    (
        "source_bytes",
        "bytes fetched from the source (start-up metadata included)",
    ),
];

/// `status`: the counters of a running mount, explained (or its JSON as sent).
pub(super) fn status(mountpoint: &Path, json: bool) -> Result<ExitCode> {
    let text = crate::mount::read_stats(mountpoint)?;
    if json {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let stats: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the mount at {} sent bad stats", mountpoint.display()))?;
    println!("{}:", mountpoint.display());
    for (key, meaning) in STATUS_FIELDS {
        let value = stats.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        println!("  {key:<18} {value:>14}  {meaning}");
    }
    Ok(ExitCode::SUCCESS)
}
