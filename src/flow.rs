//! The flow: a plan becomes a cached file. Cache hit, or fetch → encode → persist.
//!
//! Input: a [`Plan`]. Output: the path of its complete file in the local cache. Invariant: the
//! file at the returned path is the exact result of the plan (its size was checked against the
//! plan before it was renamed into place); on any error nothing is cached and the next call
//! tries again. A cache hit reads nothing from the source.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::{CacheError, LocalCache};
use crate::encode::{self, EncodeError};
use crate::fetch::{self, FetchError, FetchOptions};
use crate::plan::Plan;
use crate::source::Source;

/// Why a file could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Reading the source failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Writing the NetCDF file failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The cache could not be written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The encoder thread died.
    #[error("encoder task failed: {0}")]
    Join(String),
}

/// Where a materialized file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// It was already in the local cache.
    Cache,
    /// It was built now from the source.
    Built,
}

/// The flow's resources: the source, the cache and the fetch tuning.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The opened source.
    pub source: Arc<Source>,
    /// The local cache.
    pub cache: LocalCache,
    /// Fetch tuning.
    pub fetch: FetchOptions,
}

impl Flow {
    /// Returns the cached file of `plan`, building it first if needed.
    pub async fn materialize(&self, plan: &Plan) -> Result<(PathBuf, Origin), FlowError> {
        if let Some(path) = self.cache.lookup(plan) {
            return Ok((path, Origin::Cache));
        }
        let data = fetch::fetch(plan, &self.source, self.fetch).await?;
        let tmp = self.cache.temp_file()?;
        let layout = plan.layout.clone();
        let (format, size) = (plan.format, plan.size);
        let tmp = tokio::task::spawn_blocking(move || {
            encode::write(&layout, &data, format, tmp.path(), size).map(|()| tmp)
        })
        .await
        .map_err(|e| FlowError::Join(e.to_string()))??;
        let path = self.cache.persist(tmp, &plan.identity)?;
        Ok((path, Origin::Built))
    }
}
