//! `sodeda-era5 dashboard`: a web page served by the binary to look at the dataset.
//!
//! It lists the deskriptors (name, size, cache state) and previews any of them, or an ad-hoc
//! selection, as a map rendered on the server ([`render`]). Previews go through the same flow
//! as the mount: a previewed file is cached, and a cached file is not rebuilt. The files of
//! the deskriptors file are the dataset and go to its cache (and S3 tier); ad-hoc selections,
//! which any client can invent, are built in a bounded area of their own
//! (`<cache>/previews`, least recently used evicted beyond `--preview-cache-size`, never
//! uploaded), at most `--preview-concurrency` at once: a request that finds no free build slot
//! within `--preview-wait` gets 503. An ad-hoc selection whose file is already in the main
//! cache is read from there, never built there.
//! Nothing is fetched from the internet by the page (no map tiles, scripts or fonts).
//!
//! Routes: `/` (the page; a selection in its query string), `/map.png` (the same query plus
//! `var`, `t`, `lv`), `/api/files`, `/api/status`, `/healthz`.

mod page;
pub mod preview;
pub mod render;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;

use crate::cache::Key;
use crate::cache::{CacheError, CachedFile, LocalCache};
use crate::catalog::policy::{CatalogFile, ReadError};
use crate::catalog::{Catalog, Entry};
use crate::deskriptor::{Deskriptor, DeskriptorError};
use crate::flow::{error_chain, Flow, Origin};
use crate::plan::{Plan, PlanOptions};
use crate::source::Source;
use preview::{SelectionForm, View};

/// Default largest file an ad-hoc preview may build (a listed file is always allowed: the
/// mount would build it too).
pub const DEFAULT_PREVIEW_MAX_SIZE: u64 = 256 << 20;
/// Default size limit of the ad-hoc preview area (`--preview-cache-size`).
pub const DEFAULT_PREVIEW_CACHE_SIZE: u64 = 1 << 30;
/// Default number of ad-hoc previews built at once (`--preview-concurrency`).
pub const DEFAULT_PREVIEW_CONCURRENCY: usize = 2;
/// Default longest wait for an ad-hoc build slot before a 503 (`--preview-wait`).
pub const DEFAULT_PREVIEW_WAIT: Duration = Duration::from_secs(30);
/// The sub-directory of the cache directory that holds the ad-hoc previews.
pub const PREVIEW_DIR: &str = "previews";

/// Settings of the dashboard.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// The deskriptors file (re-read when it changes), its index and its policy: those of a
    /// mount over it.
    pub catalog: CatalogFile,
    /// The local cache directory (shown on the page).
    pub cache_dir: PathBuf,
    /// Plan options (format, size limit), as for the mount.
    pub plan: PlanOptions,
    /// Largest file an ad-hoc selection may build.
    pub preview_max_size: u64,
    /// Most source chunks (time steps × variables) an ad-hoc selection may read: a small area
    /// over many hours makes a small file but reads one chunk per hour.
    pub preview_max_chunks: u64,
    /// Size limit of the ad-hoc preview area, `<cache_dir>/previews` (least recently used
    /// files are evicted beyond it; files in use are kept).
    pub preview_cache_size: u64,
    /// Ad-hoc previews built at once; 0 refuses every ad-hoc build.
    pub preview_concurrency: usize,
    /// Longest wait of a request for an ad-hoc build slot; then it gets 503.
    pub preview_wait: Duration,
}

/// Counters of the dashboard itself.
#[derive(Debug, Default)]
pub struct DashboardMetrics {
    /// Pages served.
    pub pages: AtomicU64,
    /// Map images rendered.
    pub maps: AtomicU64,
    /// Selections that ended in an error message.
    pub errors: AtomicU64,
    /// Ad-hoc previews refused because every build slot stayed taken (503).
    pub previews_refused: AtomicU64,
}

/// The dashboard's state, shared by all requests.
pub struct Dashboard {
    flow: Flow,
    /// The flow of ad-hoc selections: the bounded preview area, no S3 tier; the source,
    /// fetch tuning and counters of `flow`.
    previews: Flow,
    /// Permits to build an ad-hoc selection (`preview_concurrency`).
    preview_builds: tokio::sync::Semaphore,
    options: DashboardOptions,
    /// The catalog (or why it was refused) and the stamp of the deskriptors file it was read
    /// from.
    catalog: Mutex<(Option<FileStamp>, CatalogRead)>,
    started: Instant,
    /// Permits to build a file that is not cached (see [`MAX_BUILDS`]).
    builds: tokio::sync::Semaphore,
    /// Value ranges over every step, by file identity and variable (the last 256).
    ranges: Mutex<lru::LruCache<(String, String), ValueRange>>,
    /// Counters.
    pub metrics: DashboardMetrics,
}

/// The smallest and largest value of a variable over a file, if it has finite values.
type ValueRange = Option<(f64, f64)>;

/// The catalog as last read, or why it could not be (unreadable, or refused by the policy).
type CatalogRead = Result<Arc<Catalog>, Arc<ReadError>>;

/// Files of the deskriptors file built at once for previews (each build already reads its
/// chunks concurrently); ad-hoc selections have their own limit, `preview_concurrency`.
pub const MAX_BUILDS: usize = 2;

/// A preview's file, opened and checked by its cache, pinned there until this is dropped.
struct Materialized {
    file: CachedFile,
    origin: Origin,
    /// Held for its drop (unpins).
    _pinned: crate::cache::Pin,
}

/// Why a preview has no file: the HTTP status and the message.
type Refusal = (StatusCode, String);

/// A selection resolved to a plan, with where it came from.
struct Resolved {
    plan: Plan,
    /// The listed file's name, when the selection is one.
    file: Option<String>,
}

/// Formats a deskriptor error for the page (the line number means nothing there).
fn selection_error(e: &DeskriptorError) -> String {
    let mut s = String::new();
    if !e.field.is_empty() {
        s.push_str(&format!("field `{}`", e.field));
    }
    if !e.value.is_empty() {
        s.push_str(&format!(", value {}", e.value));
    }
    if !s.is_empty() {
        s.push_str(": ");
    }
    s.push_str(&e.message);
    s
}

pub(crate) fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// What tells one state of the deskriptors file from another: its device, inode, size, and
/// modification and change times to the nanosecond. The mtime alone is not enough: a file
/// put in place with the old one's mtime (`touch -r` and `mv`, `rsync -a`, `cp -p`) keeps it,
/// but comes as another inode, and its ctime (which no one can set) is that of the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    /// mtime and ctime, seconds and nanoseconds.
    times: [i64; 4],
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            times: [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()],
        }
    }
}

impl Dashboard {
    /// A dashboard over `flow`, with its ad-hoc preview area opened (created if needed) in
    /// `options.cache_dir`/previews and trimmed to `options.preview_cache_size`.
    pub fn new(flow: Flow, options: DashboardOptions) -> Result<Self, CacheError> {
        let cache = LocalCache::open(&options.cache_dir.join(PREVIEW_DIR))?
            .with_max_size(options.preview_cache_size);
        // Counters and one memory budget for every build of the process, previews included.
        let previews = flow.over_cache(cache);
        Ok(Dashboard {
            preview_builds: tokio::sync::Semaphore::new(options.preview_concurrency),
            previews,
            flow,
            options,
            catalog: Mutex::new((None, Ok(Arc::new(Catalog::default())))),
            started: Instant::now(),
            builds: tokio::sync::Semaphore::new(MAX_BUILDS),
            metrics: DashboardMetrics::default(),
            ranges: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(256).expect("not zero"),
            )),
        })
    }

    fn source(&self) -> &Source {
        self.flow.source()
    }

    /// The catalog, re-read when the deskriptors file changed (or could not be read before),
    /// admitted by the same policy as a mount's.
    pub fn catalog(&self) -> CatalogRead {
        let file = &self.options.catalog;
        let stamp = std::fs::metadata(&file.path)
            .map(|m| FileStamp::of(&m))
            .map_err(|cause| {
                Arc::new(ReadError::Io {
                    path: file.path.clone(),
                    cause,
                })
            })?;
        let mut guard = self.catalog.lock().expect("catalog lock poisoned");
        if guard.0 != Some(stamp) {
            let catalog = file
                .read(&self.source().scope)
                .map(Arc::new)
                .map_err(Arc::new);
            // A refusal stands until the file changes; a failure to read it (EMFILE, EIO, a
            // permission fixed with chmod) is tried again next time.
            let stands = !matches!(
                catalog.as_ref().map_err(|e| e.as_ref()),
                Err(ReadError::Io { .. })
            );
            *guard = (stands.then_some(stamp), catalog);
        }
        guard.1.clone()
    }

    /// Whether "same colours for all steps" is offered for a file of `size` bytes: it reads
    /// the whole file, so only up to what an ad-hoc preview may build.
    pub fn offers_fixed_range(&self, size: u64) -> bool {
        size <= self.options.preview_max_size
    }

    /// The value range of variable `name` over every step of the file of `identity` at
    /// `path`, from memory when it was read before.
    fn value_range(
        &self,
        path: &std::path::Path,
        identity: &str,
        name: &str,
    ) -> Result<ValueRange, preview::SliceError> {
        let key = (identity.to_string(), name.to_string());
        if let Some(known) = self.ranges.lock().expect("poisoned").get(&key) {
            return Ok(*known);
        }
        let range = preview::value_range(path, name)?;
        self.ranges.lock().expect("poisoned").put(key, range);
        Ok(range)
    }

    /// Plans the selection in `pairs`: `file=NAME` for a listed file, else the form fields.
    /// `Ok(None)` when the query selects nothing.
    fn resolve(&self, pairs: &[(String, String)]) -> Result<Option<Resolved>, String> {
        if let Some(name) = query_value(pairs, "file").filter(|n| !n.is_empty()) {
            let catalog = self.catalog().map_err(|e| e.to_string())?;
            let entry: &Entry = catalog
                .entries
                .iter()
                .find(|e| e.file_name() == name)
                .ok_or_else(|| {
                    format!(
                        "no file named {name:?} in {}",
                        self.options.catalog.path.display()
                    )
                })?;
            let plan = entry
                .plan(&self.source().scope, self.options.plan)
                .map_err(|e| e.to_string())?;
            return Ok(Some(Resolved {
                plan,
                file: Some(name.to_string()),
            }));
        }
        let form = SelectionForm::from_pairs(pairs);
        if form.is_empty() {
            return Ok(None);
        }
        let d = Deskriptor::parse(0, &form.to_json()).map_err(|e| selection_error(&e))?;
        let plan = Plan::new(&d, &self.source().scope, self.options.plan).map_err(|e| {
            match e.deskriptor() {
                Some(e) => selection_error(e),
                None => e.to_string(),
            }
        })?;
        if plan.size > self.options.preview_max_size {
            return Err(format!(
                "this selection makes a {} file; previews build at most {} \
                 (--preview-max-size): narrow the time range, the area or the variables, \
                 or use `sodeda-era5 get`",
                crate::units::human_size(plan.size),
                crate::units::human_size(self.options.preview_max_size)
            ));
        }
        let steps = plan.selections.get("time").map_or(1, |t| t.indices.len()) as u64;
        let chunks = steps * plan.variables.len() as u64;
        if chunks > self.options.preview_max_chunks {
            return Err(format!(
                "this selection reads {chunks} source chunks ({steps} hours × {} variables); \
                 previews read at most {} (--preview-max-chunks): narrow the time range or \
                 the variables, or use `sodeda-era5 get`",
                plan.variables.len(),
                self.options.preview_max_chunks
            ));
        }
        Ok(Some(Resolved { plan, file: None }))
    }

    /// Builds (or finds) the file of a selection, pinned from before the build until the
    /// result is dropped (a bounded cache cannot evict it under its reader). A listed file
    /// goes through the main flow, at most [`MAX_BUILDS`] built at once (others wait their
    /// turn). An ad-hoc selection is taken from the main cache if its file is there, else
    /// from the preview area, built there if needed with one of `preview_concurrency` slots:
    /// a request that gets none within `preview_wait` is refused with 503.
    async fn materialize(&self, r: &Resolved) -> Result<Materialized, Refusal> {
        let plan = &r.plan;
        let listed = r.file.is_some();
        let flow = if listed {
            &self.flow
        } else {
            let pinned = self.flow.tiers().pin(&plan.identity);
            if let Some(file) = self.flow.tiers().hit(Key::new(&plan.identity, plan.size)) {
                return Ok(Materialized {
                    file,
                    origin: Origin::Cache,
                    _pinned: pinned,
                });
            }
            &self.previews
        };
        let pinned = flow.tiers().pin(&plan.identity);
        let _permit = match flow.tiers().is_cached(Key::new(&plan.identity, plan.size)) {
            true => None,
            false if listed => Some(self.builds.acquire().await.map_err(internal)?),
            false => Some(self.preview_slot().await?),
        };
        let (file, origin) = flow.materialize_shared(plan).await.map_err(|e| {
            let message = format!("building {} failed: {}", plan.file_name, error_chain(&*e));
            (StatusCode::BAD_GATEWAY, message)
        })?;
        Ok(Materialized {
            file,
            origin,
            _pinned: pinned,
        })
    }

    /// One of the `preview_concurrency` slots to build an ad-hoc selection, waiting at most
    /// `preview_wait` for it.
    async fn preview_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Refusal> {
        let n = self.options.preview_concurrency;
        if n == 0 {
            return Err((
                StatusCode::FORBIDDEN,
                "this dashboard builds no ad-hoc previews (--preview-concurrency 0): \
                 preview the listed files, or use `sodeda-era5 get`"
                    .into(),
            ));
        }
        let wait = self.options.preview_wait;
        match tokio::time::timeout(wait, self.preview_builds.acquire()).await {
            Ok(permit) => permit.map_err(internal),
            Err(_) => {
                self.metrics
                    .previews_refused
                    .fetch_add(1, Ordering::Relaxed);
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "busy: {n} ad-hoc previews are being built (--preview-concurrency {n}) \
                         and none finished within {} s (--preview-wait); try again shortly",
                        wait.as_secs_f64()
                    ),
                ))
            }
        }
    }

    /// Counters of the dashboard, the flow and the source, as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| serde_json::Value::from(a.load(Ordering::Relaxed));
        let mut status = serde_json::Map::from_iter([
            (
                "uptime_s".to_string(),
                self.started.elapsed().as_secs().into(),
            ),
            ("pages".to_string(), get(&self.metrics.pages)),
            ("maps".to_string(), get(&self.metrics.maps)),
            ("errors".to_string(), get(&self.metrics.errors)),
            (
                "previews_refused".to_string(),
                get(&self.metrics.previews_refused),
            ),
            (
                "preview_cache_bytes".to_string(),
                self.previews.tiers().local().size().into(),
            ),
            (
                "preview_cache_limit".to_string(),
                self.options.preview_cache_size.into(),
            ),
        ]);
        status.extend(self.flow.counters());
        serde_json::Value::Object(status)
    }
}

type Shared = Arc<Dashboard>;

fn internal(e: impl std::fmt::Display) -> Refusal {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Runs `f` on the blocking pool: reading and planning a changed deskriptors file is disk and
/// CPU work that must not hold up the server's other requests.
async fn blocking<T: Send + 'static>(
    d: &Shared,
    f: impl FnOnce(&Dashboard) -> T + Send + 'static,
) -> T {
    let d = d.clone();
    match tokio::task::spawn_blocking(move || f(&d)).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
type Pairs = Query<Vec<(String, String)>>;

/// The routes of the dashboard.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/map.png", get(map))
        .route("/download", get(download))
        .route("/api/files", get(files))
        .route("/api/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(dashboard)
}

/// Logs every request (debug) and every failed one (warn), with its duration.
async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let start = Instant::now();
    let response = next.run(request).await;
    let (status, ms) = (response.status(), start.elapsed().as_secs_f64() * 1e3);
    if status.is_client_error() || status.is_server_error() {
        tracing::warn!(%method, %uri, status = status.as_u16(), ms, "request failed");
    } else {
        tracing::debug!(%method, %uri, status = status.as_u16(), ms, "request");
    }
    response
}

async fn index(State(d): State<Shared>, Query(pairs): Pairs) -> Html<String> {
    d.metrics.pages.fetch_add(1, Ordering::Relaxed);
    let (catalog, resolved) = blocking(&d, {
        let pairs = pairs.clone();
        move |d| (d.catalog(), d.resolve(&pairs))
    })
    .await;
    let preview = match resolved {
        Ok(None) => None,
        Err(e) => Some(Err(e)),
        Ok(Some(r)) => {
            let start = Instant::now();
            match d.materialize(&r).await {
                Ok(m) => {
                    let took = start.elapsed();
                    let stations = match &r.plan.representation {
                        Some(rep) if rep.stations.is_some() => {
                            let (plan, source) = (r.plan.clone(), d.flow.source().clone());
                            let mut view = view_of(&pairs);
                            let table = tokio::task::spawn_blocking(move || {
                                let path = m.file.fd_path();
                                preview::read_stations(&path, &plan, &source, &mut view)
                                    .map_err(|e| e.to_string())
                            })
                            .await
                            .unwrap_or_else(|e| Err(e.to_string()));
                            Some(table)
                        }
                        _ => None,
                    };
                    Some(Ok(page::Preview {
                        took,
                        axes: preview::Axes::of(&r.plan, d.source()),
                        view: view_of(&pairs),
                        file: r.file,
                        plan: r.plan,
                        origin: m.origin,
                        stations,
                    }))
                }
                Err((_, message)) => Some(Err(message)),
            }
        }
    };
    if let Some(Err(e)) = &preview {
        d.metrics.errors.fetch_add(1, Ordering::Relaxed);
        tracing::info!("selection refused: {e}");
    }
    let form = match query_value(&pairs, "file") {
        Some(name) if !name.is_empty() => catalog
            .as_ref()
            .ok()
            .and_then(|c| c.entries.iter().find(|e| e.file_name() == name))
            .map(|e| SelectionForm::from_deskriptor(e.raw()))
            .unwrap_or_default(),
        _ => SelectionForm::from_pairs(&pairs),
    };
    // Rendering stats the listed files (their cache state): blocking-pool work.
    Html(
        blocking(&d, move |d| {
            page::render(&page::PageData {
                dashboard: d,
                catalog,
                form,
                query: pairs,
                preview,
            })
        })
        .await,
    )
}

/// The slice asked for by `var`, `t` and `lv`.
fn view_of(pairs: &[(String, String)]) -> View {
    let number = |k: &str| {
        query_value(pairs, k)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    View {
        variable: query_value(pairs, "var")
            .filter(|v| !v.is_empty())
            .map(String::from),
        step: number("t"),
        level: number("lv"),
        fixed_range: query_value(pairs, "scale") == Some("all"),
        borders: query_value(pairs, "borders") != Some("0"),
    }
}

fn text_error(status: StatusCode, message: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}

/// The selection of a request (`file=NAME` or the form's fields) and its file, built or
/// found; or the error response. The file is pinned from before the build until the guard
/// is dropped, so a bounded cache cannot evict it under the reader (the guard unpins even
/// when the client goes away and the request is dropped half-way).
async fn selected_file(
    d: &Shared,
    pairs: &[(String, String)],
) -> Result<(Resolved, Materialized), Response> {
    let resolved = blocking(d, {
        let pairs = pairs.to_vec();
        move |d| d.resolve(&pairs)
    })
    .await;
    let r = match resolved {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(text_error(
                StatusCode::BAD_REQUEST,
                "no selection: give file=NAME or the selection fields".into(),
            ))
        }
        Err(e) => return Err(text_error(StatusCode::BAD_REQUEST, e)),
    };
    match d.materialize(&r).await {
        Ok(m) => Ok((r, m)),
        Err((status, e)) => Err(text_error(status, e)),
    }
}

/// The `Content-Disposition` of a download of `file_name`: its last path component, as an
/// ASCII fallback and as UTF-8 (RFC 6266 / 5987).
fn attachment(file_name: &str) -> String {
    let name = file_name.rsplit('/').next().unwrap_or("selection.nc");
    let ascii: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    let utf8 = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{utf8}")
}

/// The previewed file itself, as an attachment named after it: built (or taken from a cache
/// tier) as for the map, streamed from the checked cache entry, pinned until sent.
async fn download(State(d): State<Shared>, Query(pairs): Pairs) -> Response {
    let (r, materialized) = match selected_file(&d, &pairs).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // Its own open file description (an offset of its own), through the checked descriptor.
    let file = match tokio::fs::File::open(materialized.file.fd_path()).await {
        Ok(f) => f,
        Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, internal(e).1),
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(move |part| {
        let _pinned = &materialized; // until the last part is sent
        part
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-netcdf".to_string()),
            (header::CONTENT_LENGTH, r.plan.size.to_string()),
            (header::CONTENT_DISPOSITION, attachment(&r.plan.file_name)),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn map(State(d): State<Shared>, Query(pairs): Pairs) -> Response {
    let (r, materialized) = match selected_file(&d, &pairs).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let mut view = view_of(&pairs);
    // One colour range over every step reads the whole variable once: offered for files an
    // ad-hoc preview may build, and kept per file and variable.
    if view.fixed_range && !d.offers_fixed_range(r.plan.size) {
        return text_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "same colours for all steps reads the whole file, and this one is {} \
                 (the limit is --preview-max-size, {}); untick it to colour each step alone",
                crate::units::human_size(r.plan.size),
                crate::units::human_size(d.options.preview_max_size)
            ),
        );
    }
    let source = d.flow.source().clone();
    let dashboard = d.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        // libnetcdf opens by name: the checked file's descriptor, not the cache path.
        let path = materialized.file.fd_path();
        let mut field =
            preview::read_field(&path, &r.plan, &source, &mut view).map_err(|e| e.to_string())?;
        if view.fixed_range {
            let name = view.variable.clone().unwrap_or_default();
            field.range = dashboard
                .value_range(&path, &r.plan.identity, &name)
                .map_err(|e| e.to_string())?;
        }
        drop(materialized);
        render::render_png(&field).map_err(|e| e.to_string())
    })
    .await;
    match rendered {
        Ok(Ok(png)) => {
            d.metrics.maps.fetch_add(1, Ordering::Relaxed);
            (
                [
                    (header::CONTENT_TYPE, "image/png"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                png,
            )
                .into_response()
        }
        Ok(Err(e)) => text_error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Files per `/api/files` answer unless `limit` says otherwise, and the most it may say.
const API_LIMIT: (usize, usize) = (1000, 10_000);

/// `/api/files?offset=N&limit=N&find=TEXT`: a page of the files (whose name contains TEXT),
/// with the number that match in all; the first [`API_LIMIT`] bad lines and their count.
async fn files(State(d): State<Shared>, Query(pairs): Pairs) -> Response {
    let number = |k: &str, default: usize| {
        query_value(&pairs, k)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let (offset, limit) = (
        number("offset", 0),
        number("limit", API_LIMIT.0).min(API_LIMIT.1),
    );
    let find = query_value(&pairs, "find").unwrap_or("").to_string();
    let listed = blocking(&d, move |d| {
        d.catalog().map(|c| {
            let (page, total) = crate::catalog::page(&c.entries, &find, offset, limit);
            let rows: Vec<_> = page
                .into_iter()
                .map(|e| {
                    serde_json::json!({
                        "line": e.line,
                        "name": e.file_name(),
                        "size": e.size,
                        "cached": d.flow.tiers().is_cached(Key::new(e.identity(), e.size)),
                    })
                })
                .collect();
            let errors: Vec<String> = c
                .errors
                .iter()
                .take(API_LIMIT.1)
                .map(|e| e.to_string())
                .collect();
            serde_json::json!({
                "files": rows,
                "total": total,
                "offset": offset,
                "limit": limit,
                "errors": errors,
                "error_count": c.errors.len(),
            })
        })
    })
    .await;
    match listed {
        Ok(body) => Json(body).into_response(),
        Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(d): State<Shared>) -> Json<serde_json::Value> {
    Json(d.status_json())
}

/// Serves the dashboard on `addr` until SIGINT or SIGTERM. `ready` is called with the bound
/// address once connections are accepted.
pub async fn serve(
    dashboard: Arc<Dashboard>,
    addr: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    ready(listener.local_addr()?);
    axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::LocalCache;
    use std::io::Write;

    fn add(cache: &LocalCache, identity: &str) -> PathBuf {
        let mut f = cache.temp_file().unwrap();
        f.write_all(&[1u8; 100]).unwrap();
        cache.persist(f, identity).unwrap().path
    }

    #[test]
    fn downloads_are_named_in_ascii_and_in_utf8() {
        assert_eq!(
            attachment("dir/zürich \"1\".nc"),
            "attachment; filename=\"z_rich__1_.nc\"; filename*=UTF-8''z%C3%BCrich%20%221%22.nc"
        );
        assert_eq!(
            attachment("plain.nc"),
            "attachment; filename=\"plain.nc\"; filename*=UTF-8''plain.nc"
        );
    }

    #[test]
    fn a_pin_guard_keeps_an_entry_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path()).unwrap().with_max_size(150);
        let first = add(&cache, "aa01");
        let guard = cache.pinned("aa01");
        add(&cache, "bb02"); // over the limit, but the only older entry is pinned
        assert!(first.exists());
        drop(guard); // as when a request is dropped half-way
        add(&cache, "cc03");
        assert!(
            !first.exists(),
            "unpinned, the least recently used entry is evicted"
        );
    }
}
