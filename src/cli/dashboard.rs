//! `dashboard`: the web page over the same stack and catalog policy as a mount.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::config::parse_size;
use crate::app::Config;
use crate::catalog::policy::Policy;

/// The dashboard's limits on ad-hoc previews, as given on the command line.
pub(super) struct PreviewLimits<'a> {
    pub(super) max_size: &'a str,
    pub(super) max_chunks: u64,
    pub(super) cache_size: &'a str,
    pub(super) concurrency: usize,
    pub(super) wait: f64,
}

/// Serves the dashboard on `host`:`port` until the process ends.
pub(super) async fn dashboard(
    config: &Config,
    host: std::net::IpAddr,
    port: u16,
    limits: PreviewLimits<'_>,
) -> Result<ExitCode> {
    let preview_wait = std::time::Duration::try_from_secs_f64(limits.wait)
        .map_err(|_| anyhow::anyhow!("--preview-wait: not a number of seconds: {}", limits.wait))?;
    let stack = config.open().await?;
    let mut catalog = config.catalog_file(Policy::default());
    catalog.path = std::path::absolute(&catalog.path)?;
    let options = crate::dashboard::DashboardOptions {
        catalog,
        cache_dir: config.absolute_cache_dir()?,
        plan: config.plan,
        preview_max_size: parse_size(limits.max_size).context("--preview-max-size")?,
        preview_max_chunks: limits.max_chunks,
        preview_cache_size: parse_size(limits.cache_size).context("--preview-cache-size")?,
        preview_concurrency: limits.concurrency,
        preview_wait,
    };
    let dashboard = Arc::new(
        crate::dashboard::Dashboard::new(stack.flow, options)
            .context("opening the preview area")?,
    );
    if let Err(e) = dashboard.catalog() {
        eprintln!("warning: {e}");
    }
    crate::dashboard::serve(dashboard, (host, port).into(), |addr| {
        eprintln!(
            "sodeda-era5 dashboard: http://{addr}/ (pid {})",
            std::process::id()
        );
    })
    .await
    .with_context(|| format!("serving on {host}:{port}"))?;
    Ok(ExitCode::SUCCESS)
}
