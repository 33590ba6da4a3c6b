//! Turns a source URL into an `object_store` and meters what is read through it.
//!
//! Schemes: `gs://bucket/path` (anonymous, read over Google's public HTTPS endpoint),
//! `s3://bucket/path` (credentials from the usual `AWS_*` variables, anonymous when there are
//! none), `http://` / `https://`, `file://` and plain paths.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use zarrs_object_store::object_store::{
    self, aws::AmazonS3Builder, http::HttpBuilder, local::LocalFileSystem, path::Path,
    prefix::PrefixStore, BackoffConfig, ClientOptions, CopyOptions, GetOptions, GetResult,
    ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, RetryConfig,
};

/// How a remote source is retried: each request gets `timeout`; failures that may be
/// transient (5xx, timeouts, resets) are retried `retries` times with exponential backoff
/// (100 ms doubling, at most 2 s between tries), then the error is reported.
#[derive(Debug, Clone, Copy)]
pub struct SourceOptions {
    /// Retries after the first try.
    pub retries: usize,
    /// Limit for one request.
    pub timeout: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            retries: 3,
            timeout: Duration::from_secs(30),
        }
    }
}

impl SourceOptions {
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: self.retries,
            retry_timeout: self.timeout * (self.retries as u32 + 1) + Duration::from_secs(5),
        }
    }

    fn client(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout.min(Duration::from_secs(10)))
    }
}

use super::SourceError;

/// Opens the object store that holds the Zarr root at `url`.
pub fn open_url(url: &str, options: SourceOptions) -> Result<Arc<dyn ObjectStore>, SourceError> {
    let bad = |why: String| SourceError::Url {
        url: url.to_string(),
        why,
    };
    if let Some(rest) = url.strip_prefix("gs://") {
        // The public ARCO-ERA5 bucket allows anonymous reads over HTTPS; this needs neither
        // Google credentials nor the GCS client.
        return http_store(&format!("https://storage.googleapis.com/{rest}"), options).map_err(bad);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return http_store(url, options).map_err(bad);
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name after s3://".into()));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(options.retry());
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            builder = builder.with_skip_signature(true);
        }
        let mut allow_http = false;
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            allow_http = endpoint.starts_with("http://");
            builder = builder.with_endpoint(endpoint);
        }
        builder = builder.with_client_options(options.client(allow_http));
        let store = builder.build().map_err(|e| bad(e.to_string()))?;
        let prefix = prefix.trim_end_matches('/');
        return Ok(if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        });
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        std::path::PathBuf::from(rest)
    } else if url.contains("://") {
        return Err(bad(
            "unsupported scheme; use gs://, s3://, http(s)://, file:// or a path".into(),
        ));
    } else {
        std::path::PathBuf::from(url)
    };
    if !path.is_dir() {
        return Err(bad("no such directory".into()));
    }
    let store = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(store))
}

fn http_store(url: &str, options: SourceOptions) -> Result<Arc<dyn ObjectStore>, String> {
    let store = HttpBuilder::new()
        .with_url(url.trim_end_matches('/'))
        .with_client_options(options.client(url.starts_with("http://")))
        .with_retry(options.retry())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

/// Counters of what was read from the source.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl SourceMetrics {
    /// GET requests sent (whole objects and ranges alike).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes those requests returned.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// An `ObjectStore` wrapper that counts GETs and bytes into [`SourceMetrics`].
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<SourceMetrics>,
}

impl MeteredStore {
    /// Wraps `inner`; counts go to `metrics`.
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: Arc<SourceMetrics>) -> Self {
        Self { inner, metrics }
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.get_opts(location, options).await?;
        self.metrics
            .bytes
            .fetch_add(result.range.end - result.range.start, Ordering::Relaxed);
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.metrics
            .requests
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        let parts = self.inner.get_ranges(location, ranges).await?;
        let n: u64 = parts.iter().map(|b| b.len() as u64).sum();
        self.metrics.bytes.fetch_add(n, Ordering::Relaxed);
        Ok(parts)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
