//! Turns a source URL into an `object_store` and meters what is read through it.
//!
//! Schemes: `gs://bucket/path` (anonymous, read over Google's public HTTPS endpoint),
//! `s3://bucket/path` (credentials from the usual `AWS_*` variables, anonymous when there are
//! none), `http://` / `https://`, `file://` and plain paths.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use zarrs_object_store::object_store::{
    self, aws::AmazonS3Builder, http::HttpBuilder, local::LocalFileSystem, path::Path,
    prefix::PrefixStore, BackoffConfig, ClientOptions, CopyOptions, GetOptions, GetRange,
    GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RetryConfig,
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
            // Saturating: both are the user's (a timeout and a count of retries).
            retry_timeout: self
                .timeout
                .saturating_mul(
                    u32::try_from(self.retries)
                        .unwrap_or(u32::MAX)
                        .saturating_add(1),
                )
                .saturating_add(Duration::from_secs(5)),
        }
    }

    fn client(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout.min(Duration::from_secs(10)))
    }
}

use super::{SourceError, UrlProblem};

/// Opens the object store that holds the Zarr root at `url`.
pub fn open_url(url: &str, options: SourceOptions) -> Result<Arc<dyn ObjectStore>, SourceError> {
    let bad = |why: UrlProblem| SourceError::Url {
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
            return Err(bad(UrlProblem::NoBucket));
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
        let store = builder.build().map_err(|e| bad(UrlProblem::Store(e)))?;
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
        return Err(bad(UrlProblem::Scheme));
    } else {
        std::path::PathBuf::from(url)
    };
    check_directory(&path).map_err(bad)?;
    let store = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(UrlProblem::Store(e)))?;
    Ok(Arc::new(store))
}

/// Why `path` cannot serve as a local source directory, if it cannot: missing, not a
/// directory, or out of reach (a parent directory the user may not search), each said so.
fn check_directory(path: &std::path::Path) -> Result<(), UrlProblem> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(UrlProblem::NotADirectory),
        Err(e) => Err(match (e.kind(), e.raw_os_error()) {
            (std::io::ErrorKind::NotFound, _) => UrlProblem::NoSuchDirectory,
            (std::io::ErrorKind::PermissionDenied, _) => UrlProblem::PermissionDenied,
            (_, Some(libc::ENOTDIR)) => UrlProblem::ThroughAFile,
            _ => UrlProblem::Io(e),
        }),
    }
}

fn http_store(url: &str, options: SourceOptions) -> Result<Arc<dyn ObjectStore>, UrlProblem> {
    let store = HttpBuilder::new()
        .with_url(url.trim_end_matches('/'))
        .with_client_options(options.client(url.starts_with("http://")))
        .with_retry(options.retry())
        .build()
        .map_err(UrlProblem::Store)?;
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

/// An `ObjectStore` wrapper that counts GETs and bytes into [`SourceMetrics`], and reads
/// ranges of a store that ignores them as whole objects.
///
/// An HTTP server may answer a range request with the whole object (200, as RFC 9110 allows:
/// `python3 -m http.server` does); object_store then refuses the answer ("Range request not
/// supported"). Once a store did so, every ranged read here fetches the whole object and
/// returns the bytes asked for (one warning says so): slower, but the same bytes.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<SourceMetrics>,
    /// Set once the store answered a range request with the whole object.
    ranges_ignored: AtomicBool,
}

impl MeteredStore {
    /// Wraps `inner`; counts go to `metrics`.
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: Arc<SourceMetrics>) -> Self {
        Self {
            inner,
            metrics,
            ranges_ignored: AtomicBool::new(false),
        }
    }

    /// Whether the store was seen to ignore range requests (its ranges are read whole).
    pub fn ignores_ranges(&self) -> bool {
        self.ranges_ignored.load(Ordering::Relaxed)
    }

    /// Records that the store ignored a range request on `location`; warns the first time.
    fn notice_ignored_ranges(&self, location: &Path) {
        if !self.ranges_ignored.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the source {} ignores range requests (it answered one for {location} with \
                 the whole object): every ranged read now fetches the whole object and keeps \
                 the bytes it needs",
                self.inner
            );
        }
    }

    /// A GET of `inner`, counted.
    async fn counted_get(
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

    /// The bytes `range` of the object `location` (with the conditions of `options`), read
    /// whole and sliced; the answer says the whole object's metadata.
    async fn sliced(
        &self,
        location: &Path,
        options: GetOptions,
        range: GetRange,
    ) -> object_store::Result<GetResult> {
        let whole = GetOptions {
            range: None,
            ..options
        };
        let result = self.counted_get(location, whole).await?;
        let (meta, attributes) = (result.meta.clone(), result.attributes.clone());
        let bytes = result.bytes().await?;
        let r = slice_range(&range, bytes.len())?;
        let part = bytes.slice(r.start as usize..r.end as usize);
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(part) }).boxed()),
            meta,
            range: r,
            attributes,
            extensions: Default::default(),
        })
    }
}

/// Whether `e` is object_store's refusal of a whole object answering a range request.
fn is_range_ignored(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotSupported { source }
        if source.to_string().starts_with("Range request not supported"))
}

/// The bytes `range` asks of an object of `len` bytes, as the store would have answered it
/// (an end past the object is cut; a start at or past it is an error).
fn slice_range(range: &GetRange, len: usize) -> object_store::Result<Range<u64>> {
    range
        .as_range(len as u64)
        .map_err(|e| object_store::Error::Generic {
            store: "source",
            source: Box::new(e),
        })
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
        let range = match &options.range {
            Some(range) if !options.head => range.clone(),
            _ => return self.counted_get(location, options).await,
        };
        if !self.ignores_ranges() {
            match self.counted_get(location, options.clone()).await {
                Err(e) if is_range_ignored(&e) => self.notice_ignored_ranges(location),
                answer => return answer,
            }
        }
        self.sliced(location, options, range).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if !self.ignores_ranges() {
            self.metrics
                .requests
                .fetch_add(ranges.len() as u64, Ordering::Relaxed);
            match self.inner.get_ranges(location, ranges).await {
                Err(e) if is_range_ignored(&e) => self.notice_ignored_ranges(location),
                answer => {
                    let parts = answer?;
                    let n: u64 = parts.iter().map(|b| b.len() as u64).sum();
                    self.metrics.bytes.fetch_add(n, Ordering::Relaxed);
                    return Ok(parts);
                }
            }
        }
        let bytes = self
            .counted_get(location, GetOptions::default())
            .await?
            .bytes()
            .await?;
        ranges
            .iter()
            .map(|r| {
                let r = slice_range(&GetRange::Bounded(r.clone()), bytes.len())?;
                Ok(bytes.slice(r.start as usize..r.end as usize))
            })
            .collect()
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

/// A store error said shortly: its innermost cause, once, then the request it ended (method,
/// URL, retries), e.g. `dns error: failed to lookup address information: Name or service not
/// known (GET https://…/.zmetadata, after 3 retries)`.
///
/// object_store's messages repeat themselves: each level of the chain quotes the level below
/// (`Generic HTTP error: Error performing GET … - HTTP error: error sending request`), and
/// printing the chain (anyhow's `{:#}`) then says the same text four times before the cause.
/// Here each level contributes only its own words, the generic wrappers are dropped, and a
/// part said twice is kept once.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = Vec::new();
    let mut level = Some(error);
    while let Some(e) = level {
        messages.push(e.to_string());
        level = e.source();
    }
    let mut request = None;
    let mut parts: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let own = match messages.get(i + 1) {
            Some(below) if !below.is_empty() => match message.strip_suffix(below.as_str()) {
                Some(head) => head.to_string(),
                None => message.replacen(below.as_str(), "", 1),
            },
            _ => message.clone(),
        };
        let own = own.trim_end_matches([' ', ':', '-', ',']).trim();
        if let Some(rest) = own.strip_prefix("Error performing ") {
            request = request.or_else(|| Some(request_context(rest)));
            continue;
        }
        let generic = own.is_empty()
            || own == "HTTP error"
            || own.starts_with("error sending request")
            || own.starts_with("client error (")
            || (own.starts_with("Generic ") && own.ends_with(" error"));
        let own = shorten(own);
        if !generic && !parts.contains(&own) {
            parts.push(own);
        }
    }
    let mut text = if parts.is_empty() {
        messages.last().cloned().unwrap_or_default()
    } else {
        parts.join(": ")
    };
    if let Some(r) = request {
        text.push_str(&format!(" ({r})"));
    }
    text
}

/// `text` on one line (a server's error page can be long HTML), at most 200 characters.
fn shorten(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// `GET https://…, after 3 retries` from the rest of object_store's `Error performing GET
/// https://… in 512ms, after 3 retries, max_retries: 3, retry_timeout: 125s`.
fn request_context(rest: &str) -> String {
    let (call, after) = rest.split_once(" in ").unwrap_or((rest, ""));
    let retries = after
        .split_once(", after ")
        .and_then(|(_, r)| r.split_once(" retries"))
        .map(|(n, _)| n.trim());
    match retries {
        Some("1") => format!("{call}, after 1 retry"),
        Some(n) => format!("{call}, after {n} retries"),
        None => call.to_string(),
    }
}

/// True when `error` says the store could not be reached at all (no connection: DNS, refused,
/// unreachable network, or a timeout), as opposed to an answer that was an error.
pub fn is_unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut level = Some(error);
    while let Some(e) = level {
        if let Some(h) = e.downcast_ref::<HttpError>() {
            return matches!(h.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout);
        }
        level = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::{HttpError, HttpErrorKind};
    use object_store::ObjectStoreExt;

    /// One level of a made-up error chain: `text`, or `text: <source>` when `quote` is set.
    #[derive(Debug)]
    struct Level {
        text: String,
        quote: bool,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    }

    impl fmt::Display for Level {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match (&self.source, self.quote) {
                (Some(s), true) => write!(f, "{}{s}", self.text),
                _ => f.write_str(&self.text),
            }
        }
    }

    impl std::error::Error for Level {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref().map(|s| s as _)
        }
    }

    fn level(
        text: &str,
        quote: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Level {
        Level {
            text: text.into(),
            quote,
            source: Some(Box::new(source)),
        }
    }

    /// The chain object_store 0.14 builds for a GET whose DNS lookup fails, level by level.
    fn dns_failure() -> object_store::Error {
        let io = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        let dns = level(
            "dns error: ",
            true,
            level("error resolving DNS: ", true, io),
        );
        let hyper = level("client error (Connect)", false, dns);
        let reqwest = level("error sending request", false, hyper);
        let http = HttpError::new(HttpErrorKind::Connect, reqwest);
        let request = level("", true, http); // RequestError::Http: "{0}"
        let retry = level(
            "Error performing GET https://storage.googleapis.com/b/x.zarr/.zmetadata in \
             512.17ms, after 3 retries, max_retries: 3, retry_timeout: 125s  - ",
            true,
            request,
        );
        object_store::Error::Generic {
            store: "HTTP",
            source: Box::new(level("", true, retry)),
        }
    }

    #[test]
    fn a_store_error_says_its_innermost_cause_once() {
        let e = dns_failure();
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert!(
            chain.matches("Error performing GET").count() >= 3,
            "{chain}"
        );
        let e = dns_failure();
        let text = describe_error(&e);
        assert_eq!(
            text,
            "dns error: error resolving DNS: failed to lookup address information: Name or \
             service not known (GET https://storage.googleapis.com/b/x.zarr/.zmetadata, after \
             3 retries)"
        );
        assert!(is_unreachable(&e));
        let read = super::super::SourceError::Read {
            url: "gs://b/x.zarr".into(),
            key: ".zmetadata".into(),
            error: dns_failure(),
        };
        let shown = format!("{:#}", anyhow::Error::new(read));
        assert!(
            shown.starts_with("cannot reach the source gs://b/x.zarr: dns error"),
            "{shown}"
        );
        assert_eq!(
            shown.matches("Name or service not known").count(),
            1,
            "{shown}"
        );
        assert_eq!(shown.matches("GET").count(), 1, "{shown}");
        assert!(shown.len() < 250, "{shown}");
    }

    #[test]
    fn an_error_answer_is_said_on_one_short_line_and_is_not_unreachable() {
        let page = format!("<html>\n<body>\n{}</body></html>", "Not here. ".repeat(100));
        let page = Level {
            text: page,
            quote: false,
            source: None,
        };
        let status = level(
            "Server returned non-2xx status code: 404 Not Found: ",
            true,
            page,
        );
        let e = object_store::Error::NotFound {
            path: ".zmetadata".into(),
            source: Box::new(level(
                "Error performing GET http://h/x/.zmetadata in 3ms - ",
                true,
                status,
            )),
        };
        let text = describe_error(&e);
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("Object at location .zmetadata not found: Server returned non-2xx status code: 404 Not Found: <html>"), "{text}");
        assert!(text.ends_with("… (GET http://h/x/.zmetadata)"), "{text}");
        assert!(text.len() < 400, "{text}");
        assert!(!is_unreachable(&e));
    }

    #[tokio::test]
    async fn a_refused_connection_is_said_once_with_the_request() {
        let options = SourceOptions {
            retries: 1,
            timeout: Duration::from_secs(5),
        };
        let store = open_url("http://127.0.0.1:1/x.zarr", options).unwrap();
        let e = store.get(&Path::from(".zmetadata")).await.unwrap_err();
        let text = describe_error(&e);
        assert!(is_unreachable(&e), "{text}");
        assert_eq!(text.matches("GET").count(), 1, "{text}");
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
        assert!(
            text.ends_with("(GET http://127.0.0.1:1/x.zarr/.zmetadata, after 1 retry)"),
            "{text}"
        );
        assert!(
            !text.contains("Generic") && !text.contains("error sending request"),
            "{text}"
        );
    }

    #[test]
    fn a_local_source_path_says_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let why =
            |p: &std::path::Path| match open_url(p.to_str().unwrap(), SourceOptions::default()) {
                Err(SourceError::Url { why, .. }) => why.to_string(),
                other => panic!("{other:?}"),
            };
        assert_eq!(why(&dir.path().join("missing")), "no such directory");
        assert_eq!(why(&file), "not a directory");
        assert_eq!(
            why(&file.join("sub")),
            "not a directory: a component of the path is a file"
        );
        assert!(open_url(dir.path().to_str().unwrap(), SourceOptions::default()).is_ok());
    }
}
