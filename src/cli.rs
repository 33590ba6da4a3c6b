//! The `sodeda-era5` command line: options (each also an environment variable, and a `.env`
//! file in the working directory is read first) → the library calls → exit code.
//!
//! Exit codes: 0 success; 1 a failure (bad deskriptors for `validate`, a failed flow for
//! `get`, an unreachable source); 2 a usage error (clap). A printing command (`list`,
//! `validate`, `scope`, `status`, `get`) whose standard output or error is closed
//! (`| head -1`) ends silently by SIGPIPE, as Unix filters do: a shell shows status 141,
//! which only `set -o pipefail` sees.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use serde_json::json;

use crate::cache::s3::{RemoteCache, RemoteError, S3Config};
use crate::cache::{LocalCache, DEFAULT_CACHE_DIR};
use crate::catalog::{Catalog, Entry};
use crate::deskriptor::Deskriptor;
use crate::fetch::{BlockTables, ChunkCache, FetchOptions, ReadPath};
use crate::flow::{Flow, Origin};
use crate::layout::Format;
use crate::plan::{Plan, PlanOptions, DEFAULT_MAX_FILE_SIZE};
use crate::preload::{PreloadOptions, Shard};
use crate::select;
use crate::source::{Source, SourceOptions, DEFAULT_SOURCE};

/// Command-line arguments of `sodeda-era5`.
#[derive(Debug, Parser)]
#[command(
    name = "sodeda-era5",
    version,
    about = "A software-defined dataset over ARCO-ERA5: deskriptors in, exact NetCDF files out"
)]
pub struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Args)]
pub struct Common {
    /// The deskriptors file: one JSON selection per line.
    #[arg(
        long,
        env = "SODEDA_DESKRIPTORS",
        default_value = "deskriptors.jsonl",
        global = true
    )]
    deskriptors: PathBuf,
    /// The Zarr store: `arco-era5` or `weatherbench2` by name, or a URL (gs://, s3://,
    /// http(s)://, file://) or a path.
    #[arg(long, env = "SODEDA_SOURCE", default_value = DEFAULT_SOURCE, global = true)]
    source: String,
    /// The local cache directory.
    #[arg(long, env = "LOCAL_CACHE", default_value = DEFAULT_CACHE_DIR, global = true)]
    cache: PathBuf,
    /// Largest size of the local cache (bytes; K, M, G suffixes); least recently used files
    /// are evicted, never an open one. Unlimited when unset.
    #[arg(long, env = "SODEDA_CACHE_MAX_SIZE", global = true)]
    cache_max_size: Option<String>,
    /// File format: cdf2 (NetCDF classic 64-bit offset) or netcdf4.
    #[arg(long, env = "SODEDA_FORMAT", default_value = "cdf2", global = true)]
    format: Format,
    /// Refuse deskriptors whose file would be larger than this (bytes; K, M, G suffixes).
    #[arg(long, env = "SODEDA_MAX_FILE_SIZE", default_value_t = DEFAULT_MAX_FILE_SIZE.to_string(), global = true)]
    max_file_size: String,
    /// Memory for decoded source chunks kept for reuse across files (bytes; K, M, G suffixes).
    /// Files over the same hours run together, so a few hours' chunks suffice; a larger
    /// cache costs more in fresh pages than it saves (see docs/PERFORMANCE.md).
    #[arg(
        long,
        env = "SODEDA_MEMORY_LIMIT",
        default_value = "256M",
        global = true
    )]
    memory_limit: String,
    /// Memory that file builds may hold at once (bytes; K, M, G suffixes): a build reserves
    /// its decoded arrays and chunk reads before it starts, others wait; a build larger than
    /// this runs alone. Default: a quarter of the machine's memory, at least 1 GiB.
    #[arg(long, env = "SODEDA_BUILD_MEMORY", global = true)]
    build_memory: Option<String>,
    /// How chunks are read: auto (only the needed Blosc blocks of small samples) or full.
    /// `preload` always reads whole chunks, to share them between files.
    #[arg(long, env = "SODEDA_READ_PATH", default_value = "auto", global = true)]
    read_path: ReadPath,
    /// Retries of a failed source request (5xx, timeout, reset), with exponential backoff.
    #[arg(
        long,
        env = "SODEDA_SOURCE_RETRIES",
        default_value_t = 3,
        global = true
    )]
    source_retries: usize,
    /// Time limit of one source request, in seconds.
    #[arg(
        long,
        env = "SODEDA_SOURCE_TIMEOUT",
        default_value_t = 30.0,
        global = true
    )]
    source_timeout: f64,
    /// Source chunk reads in flight at once.
    #[arg(long, env = "SODEDA_FETCH_CONCURRENCY", default_value_t = FetchOptions::default().concurrency, global = true)]
    fetch_concurrency: usize,
    /// S3 bucket of the shared cache tier (no S3 tier when unset).
    #[arg(long, env = "S3_BUCKET_NAME", global = true)]
    s3_bucket: Option<String>,
    /// Key prefix in the S3 bucket.
    #[arg(long, env = "S3_KEY_PREFIX", default_value = crate::cache::s3::DEFAULT_PREFIX, global = true)]
    s3_prefix: String,
    /// S3 endpoint URL (for S3-compatible servers; http allowed).
    #[arg(long, env = "S3_ENDPOINT_URL", global = true)]
    s3_endpoint: Option<String>,
    /// Profile of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials).
    #[arg(long, env = "S3_PROFILE", global = true)]
    s3_profile: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "SODEDA_LOG", default_value = "warn", global = true)]
    log_level: String,
    /// Freeze the dataset at a store version: a `last_updated` value of the store, or
    /// `current` for the version it has now. Files over preliminary ERA5T hours are planned as
    /// of that version and nothing is rebuilt because the store changed; such a file not
    /// cached from that version fails once the store has moved on.
    #[arg(long, env = "SODEDA_PIN", global = true)]
    pin: Option<String>,
    /// Directories for the files of deskriptors without `name`, e.g.
    /// `{variable}/{year}/{month}` (fields: {variable}, {year}, {month}, {day}, {hour}); named
    /// deskriptors place themselves with `/` in their name.
    #[arg(long, env = "SODEDA_LAYOUT", global = true)]
    layout: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the file of one deskriptor and write it to OUT.
    Get {
        /// The deskriptor on this line (1-based) of the deskriptors file.
        #[arg(
            long,
            required_unless_present = "deskriptor",
            conflicts_with = "deskriptor"
        )]
        line: Option<usize>,
        /// A deskriptor given as JSON.
        #[arg(long)]
        deskriptor: Option<String>,
        /// Where to write the NetCDF file: `-` for standard output; a device or FIFO is
        /// written into, a symbolic link followed, a regular file replaced atomically.
        #[arg(short, long)]
        output: PathBuf,
        /// Print what was read from the source.
        #[arg(long)]
        stats: bool,
    },
    /// One line per deskriptor: file name, exact size, cached or not.
    List {
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
    },
    /// Check every deskriptor against the source; exit 1 listing each bad line.
    Validate,
    /// The source's coordinates and variables.
    Scope {
        /// Print JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Build every file into the cache tiers (skipping those already cached).
    Preload {
        /// Files built at once.
        #[arg(long, env = "SODEDA_JOBS", default_value_t = 4)]
        jobs: usize,
        /// Source requests in flight at once, reading the chunks of the next files ahead of
        /// the builders (separate from --jobs; 0 turns reading ahead off). Fill the link:
        /// requests × bytes per request ≥ link rate × delay per request.
        #[arg(long, env = "SODEDA_REQUESTS", default_value_t = 128)]
        requests: usize,
        /// Only part K of N (0-based), split by file identity: run N machines with 0/N … N-1/N.
        #[arg(long, env = "SODEDA_SHARD")]
        shard: Option<Shard>,
    },
    /// Mount the dataset as a read-only file system (same as `sodeda-mount`).
    Mount(MountArgs),
    /// Unmount a sodeda-era5 mount.
    Unmount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Keep the files a job will read next built, a window ahead of it, in the job's order.
    Prefetch {
        /// The mount point.
        mountpoint: PathBuf,
        /// The file names in the order the job reads them, one a line (`.nc` optional).
        #[arg(long)]
        order: PathBuf,
        /// Files kept built ahead of the reader.
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Stop when the reader has not moved for this many seconds.
        #[arg(long, default_value_t = 600)]
        idle: u64,
    },
    /// Make a mount re-read its deskriptors file (same as SIGHUP to the mount process).
    Reload {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Counters of a running mount: reads, cache hits, flow runs, bytes fetched, errors.
    Status {
        /// The mount point.
        mountpoint: PathBuf,
        /// Print the JSON object as the mount reports it.
        #[arg(long)]
        json: bool,
    },
    /// Serve a web page listing the files and previewing selections as maps.
    Dashboard {
        /// Address to listen on (0.0.0.0 to serve other machines).
        #[arg(long, env = "SODEDA_DASHBOARD_HOST", default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Port to listen on (0: any free port, printed at start).
        #[arg(long, env = "SODEDA_DASHBOARD_PORT", default_value_t = 7860)]
        port: u16,
        /// Largest file an ad-hoc preview may build (bytes; K, M, G suffixes).
        #[arg(long, env = "SODEDA_PREVIEW_MAX_SIZE", default_value = "256M")]
        preview_max_size: String,
        /// Most source chunks (hours × variables) an ad-hoc preview may read.
        #[arg(long, env = "SODEDA_PREVIEW_MAX_CHUNKS", default_value_t = 744)]
        preview_max_chunks: u64,
        /// Size limit of the ad-hoc preview area, <cache>/previews (bytes; K, M, G suffixes);
        /// the least recently used previews are deleted beyond it. Files of the deskriptors
        /// file go to the main cache, not here.
        #[arg(long, env = "SODEDA_PREVIEW_CACHE_SIZE", default_value = "1G")]
        preview_cache_size: String,
        /// Ad-hoc previews built at once (0: build none, only the listed files).
        #[arg(long, env = "SODEDA_PREVIEW_CONCURRENCY", default_value_t = 2)]
        preview_concurrency: usize,
        /// Seconds a request waits for an ad-hoc build slot before it gets 503 (busy).
        #[arg(long, env = "SODEDA_PREVIEW_WAIT", default_value_t = 30.0)]
        preview_wait: f64,
        /// Where to log (default: standard error).
        #[arg(long, env = "SODEDA_LOG_FILE")]
        log_file: Option<PathBuf>,
    },
}

/// Options of the mount (`sodeda-mount` and `sodeda-era5 mount`).
#[derive(Debug, Args)]
pub struct MountArgs {
    /// Stay attached to the terminal (otherwise return once the mount is live and serve from
    /// a background process).
    #[arg(long)]
    foreground: bool,
    /// Let other users read the files (FUSE allow_other).
    #[arg(long, env = "SODEDA_ALLOW_OTHER")]
    allow_other: bool,
    /// Where the mount logs (default in the background: `<cache>/sodeda-mount.log`; in the
    /// foreground: standard error).
    #[arg(long, env = "SODEDA_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// FUSE worker threads.
    #[arg(long, env = "SODEDA_FUSE_THREADS", default_value_t = 4)]
    fuse_threads: usize,
    /// Files built ahead, in the background, of a reader that goes through the files in order
    /// (line or name order); 0: none. Each counts against --build-memory.
    #[arg(long, env = "SODEDA_READAHEAD", default_value_t = 8)]
    readahead: usize,
    /// Refuse to mount if any deskriptor line is bad (default: skip bad lines with a warning).
    #[arg(long, env = "SODEDA_STRICT")]
    strict: bool,
    /// Seconds between two reads of the store's version (its `last_updated`); when it
    /// changed, files over preliminary ERA5T hours become new files and are rebuilt at their
    /// next open. 0: never (a `reload` also reads it).
    #[arg(long, env = "SODEDA_SOURCE_CHECK_INTERVAL", default_value_t = 3600)]
    source_check_interval: u64,
    /// The directory to mount on.
    mountpoint: PathBuf,
}

/// Command-line arguments of `sodeda-mount`.
#[derive(Debug, Parser)]
#[command(
    name = "sodeda-mount",
    version,
    about = "Mount a sodeda-era5 dataset: one NetCDF file per deskriptor",
    after_help = "Started as /sbin/mount.sodeda (a link to this program), it is the mount(8) \
                  helper of `mount -t sodeda DESKRIPTORS MOUNTPOINT -o key=value,...`, for \
                  /etc/fstab and systemd: see docs/DEPLOYMENT.md."
)]
pub struct MountCli {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    mount: MountArgs,
}

/// Parses a byte size with an optional K/M/G/T suffix (powers of 1024; `KiB`, `GB` also read).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .with_context(|| format!("size {s:?}: expected a number of bytes like 2G or 500M"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => bail!("size {s:?}: unknown unit {other:?}; use K, M, G or T"),
    };
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .with_context(|| format!("size {s:?} is too large"))
}

/// The parsed `--layout`, made once per process.
fn layout_of(template: &str) -> Result<&'static crate::naming::NameLayout> {
    static LAYOUT: std::sync::OnceLock<crate::naming::NameLayout> = std::sync::OnceLock::new();
    if let Some(l) = LAYOUT.get() {
        return Ok(l);
    }
    let parsed = crate::naming::NameLayout::parse(template).map_err(anyhow::Error::msg)?;
    Ok(LAYOUT.get_or_init(|| parsed))
}

impl Common {
    fn plan_options(&self) -> Result<PlanOptions> {
        let layout = match self.layout.as_deref().filter(|l| !l.is_empty()) {
            // Parsed once per process and kept for its life (options are copied freely).
            Some(template) => Some(layout_of(template)?),
            None => None,
        };
        Ok(PlanOptions {
            format: self.format,
            max_file_size: parse_size(&self.max_file_size).context("--max-file-size")?,
            layout,
        })
    }

    async fn open_source(&self) -> Result<Arc<Source>> {
        if !(self.source_timeout > 0.0 && self.source_timeout.is_finite()) {
            bail!("--source-timeout must be a positive number of seconds");
        }
        let options = SourceOptions {
            retries: self.source_retries,
            timeout: std::time::Duration::from_secs_f64(self.source_timeout),
        };
        let mut source = Source::open_with(&self.source, options).await?;
        if let Some(pin) = self.pin.as_deref().filter(|p| !p.trim().is_empty()) {
            source.freshness.pin(pin);
            if let Some((pinned, actual)) = source.freshness.moved_past_pin() {
                tracing::warn!(
                    "pinned to store version {pinned:?}; the store is now {actual:?}: files over \
                     ERA5T hours are served only from the cache tiers"
                );
            }
        }
        Ok(Arc::new(source))
    }

    /// The S3 tier, when a bucket is configured. Bad configuration or refused credentials
    /// are errors; an unreachable bucket is a warning (reads fall back to the source).
    async fn remote(&self) -> Result<Option<Arc<RemoteCache>>> {
        let Some(bucket) = self.s3_bucket.clone().filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let remote = RemoteCache::new(&S3Config {
            bucket,
            prefix: self.s3_prefix.clone(),
            endpoint: self.s3_endpoint.clone().filter(|e| !e.is_empty()),
            profile: self.s3_profile.clone().filter(|p| !p.is_empty()),
        })?;
        match remote.probe().await {
            Ok(()) => {}
            Err(e @ (RemoteError::Denied { .. } | RemoteError::Config(_))) => return Err(e.into()),
            Err(e) => remote.mark_down(&e),
        }
        Ok(Some(Arc::new(remote)))
    }

    fn local_cache(&self) -> Result<LocalCache> {
        let cache = LocalCache::open(&self.cache)?;
        Ok(
            match self.cache_max_size.as_deref().filter(|s| !s.is_empty()) {
                Some(size) => cache.with_max_size(parse_size(size).context("--cache-max-size")?),
                None => cache,
            },
        )
    }

    async fn flow(&self, source: Arc<Source>) -> Result<Flow> {
        let cache = self.local_cache()?;
        cache.set_store_version(source.freshness.cache_version());
        let tables = Arc::new(BlockTables::open(cache.dir(), &source.url));
        let flow = Flow::new(
            source,
            cache,
            FetchOptions {
                block_tables: Some(tables),
                concurrency: self.fetch_concurrency.max(1),
                chunk_cache: Some(Arc::new(ChunkCache::new(
                    parse_size(&self.memory_limit).context("--memory-limit")?,
                ))),
                read_path: self.read_path,
                ..FetchOptions::default()
            },
        );
        let flow = match &self.build_memory {
            Some(size) => flow.with_build_memory(parse_size(size).context("--build-memory")?),
            None => flow,
        };
        Ok(match self.remote().await? {
            Some(remote) => flow.with_remote(remote),
            None => flow,
        })
    }

    /// The catalog of the deskriptors file, read back from its index in the cache when
    /// neither the file, the source, the options nor the build changed.
    fn load_catalog(&self, source: &Source) -> Result<Catalog> {
        let (path, dir) = (&self.deskriptors, self.catalog_index_dir());
        Catalog::load_indexed(path, source, self.plan_options()?, dir.as_deref())
            .with_context(|| format!("reading {}", path.display()))
    }

    /// Where catalog indexes are kept: beside the cache's entries (the cache is made, and
    /// checked, first); `None` when the cache's directories are not this user's own.
    fn catalog_index_dir(&self) -> Option<PathBuf> {
        let cache = LocalCache::open(&self.cache).ok()?;
        let dir = cache.dir().to_path_buf();
        crate::catalog::index::usable_dir(&self.cache, &dir).then_some(dir)
    }
}

fn load_dotenv() {
    // A missing .env is normal; a malformed one is worth a warning.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("warning: ignoring .env: {e}");
        }
    }
}

/// Sets up logging (to `log_file` or stderr), runs `job` on a tokio runtime, maps the result
/// to an exit code.
fn start(
    log_level: &str,
    log_file: Option<&Path>,
    job: impl std::future::Future<Output = Result<ExitCode>>,
) -> ExitCode {
    // fuser warns when it finds its mount already gone after `umount`: expected, so quiet.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{log_level},fuser=error")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file.map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    }) {
        Some(Ok(file)) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init(),
        Some(Err(e)) => {
            eprintln!("error: cannot open the log file: {e}");
            return ExitCode::FAILURE;
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(job) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A catalog index written in the background is finished, never left half-written.
    crate::catalog::index::finish_writes();
    code
}

/// Entry point of `sodeda-era5`.
pub fn main() -> ExitCode {
    // A printing command whose output is closed (`sodeda-era5 list | head -1`) ends at once
    // and quietly, killed by SIGPIPE as any Unix filter is (Rust ignores SIGPIPE, which turns
    // it into "Broken pipe" errors). Commands that work while they print (preload, the mount,
    // the dashboard) keep ignoring it: a reader going away must not kill a build half-way
    // (leaving its temporary file) or end a server. Sockets use MSG_NOSIGNAL either way.
    set_sigpipe(libc::SIG_DFL);
    load_dotenv();
    let cli = Cli::parse();
    let printing = matches!(
        cli.command,
        Command::List { .. }
            | Command::Validate
            | Command::Scope { .. }
            | Command::Status { .. }
            | Command::Get { .. }
    );
    if !printing {
        set_sigpipe(libc::SIG_IGN);
    }
    let log_file = match &cli.command {
        Command::Mount(m) if m.foreground => m.log_file.clone(),
        Command::Dashboard { log_file, .. } => log_file.clone(),
        _ => None,
    };
    let level = cli.common.log_level.clone();
    start(&level, log_file.as_deref(), run(cli))
}

fn set_sigpipe(action: libc::sighandler_t) {
    // SAFETY: setting the disposition of SIGPIPE to SIG_DFL or SIG_IGN installs no handler
    // code; it happens before any thread of this program starts.
    unsafe {
        libc::signal(libc::SIGPIPE, action);
    }
}

/// The arguments this process was started with, after the mount helper's translation (the
/// background mount re-runs the program with them).
static ARGS: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();

fn process_args() -> Vec<std::ffi::OsString> {
    ARGS.get_or_init(|| std::env::args_os().collect()).clone()
}

/// Entry point of `sodeda-mount` (and of `mount.sodeda`, its mount(8) helper name).
pub fn mount_main() -> ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut fake = false;
    if argv
        .first()
        .is_some_and(|a| crate::mount::helper::invoked_as_helper(a))
    {
        let call = match crate::mount::helper::translate(&argv[1..]) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e:#}");
                // mount(8) helpers exit 1 for a usage error.
                return ExitCode::FAILURE;
            }
        };
        if let Some(path) = &call.env_file {
            if let Err(e) = dotenvy::from_path(path) {
                eprintln!("mount.sodeda: env_file {}: {e}", Path::new(path).display());
                return ExitCode::FAILURE;
            }
        }
        argv = call.args;
        fake = call.fake;
    }
    let _ = ARGS.set(argv.clone());
    load_dotenv();
    let cli = MountCli::parse_from(argv);
    if fake {
        // -f: everything but the mount, and no side effect (no stale mount is detached).
        let point = &cli.mount.mountpoint;
        return if point.is_dir() {
            ExitCode::SUCCESS
        } else {
            eprintln!("error: {} is not a directory", point.display());
            ExitCode::FAILURE
        };
    }
    let log_file = cli.mount.log_file.clone().filter(|_| cli.mount.foreground);
    let level = cli.common.log_level.clone();
    start(&level, log_file.as_deref(), async move {
        mount(&cli.common, &cli.mount).await
    })
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let common = &cli.common;
    match &cli.command {
        Command::Get {
            line,
            deskriptor,
            output,
            stats,
        } => get(common, *line, deskriptor.as_deref(), output, *stats).await,
        Command::List { json } => list(common, *json).await,
        Command::Validate => validate(common).await,
        Command::Scope { json } => scope(common, *json).await,
        Command::Mount(args) => mount(common, args).await,
        Command::Preload {
            jobs,
            requests,
            shard,
        } => preload(common, *jobs, *requests, *shard).await,
        Command::Prefetch {
            mountpoint,
            order,
            window,
            idle,
        } => {
            let names = crate::mount::prefetch::read_order(mountpoint, order)?;
            let (mp, n) = (mountpoint.clone(), names.len());
            let (window, idle) = (*window, std::time::Duration::from_secs(*idle));
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
        Command::Reload { mountpoint } => {
            let mp = mountpoint.clone();
            let text = tokio::task::spawn_blocking(move || {
                crate::mount::request_reload(&mp, std::time::Duration::from_secs(300))
            })
            .await??;
            println!("{}: {text}", mountpoint.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { mountpoint, json } => status(mountpoint, *json),
        Command::Dashboard {
            host,
            port,
            preview_max_size,
            preview_max_chunks,
            preview_cache_size,
            preview_concurrency,
            preview_wait,
            ..
        } => {
            let limits = PreviewLimits {
                max_size: preview_max_size,
                max_chunks: *preview_max_chunks,
                cache_size: preview_cache_size,
                concurrency: *preview_concurrency,
                wait: *preview_wait,
            };
            dashboard(common, *host, *port, limits).await
        }
        Command::Unmount { mountpoint } => {
            crate::mount::unmount(mountpoint)?;
            eprintln!("unmounted {}", mountpoint.display());
            Ok(ExitCode::SUCCESS)
        }
    }
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

fn status(mountpoint: &Path, json: bool) -> Result<ExitCode> {
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

/// The dashboard's limits on ad-hoc previews, as given on the command line.
struct PreviewLimits<'a> {
    max_size: &'a str,
    max_chunks: u64,
    cache_size: &'a str,
    concurrency: usize,
    wait: f64,
}

async fn dashboard(
    common: &Common,
    host: std::net::IpAddr,
    port: u16,
    limits: PreviewLimits<'_>,
) -> Result<ExitCode> {
    let preview_wait = std::time::Duration::try_from_secs_f64(limits.wait)
        .map_err(|_| anyhow::anyhow!("--preview-wait: not a number of seconds: {}", limits.wait))?;
    let source = common.open_source().await?;
    let flow = common.flow(source).await?;
    let options = crate::dashboard::DashboardOptions {
        deskriptors: std::path::absolute(&common.deskriptors)?,
        cache_dir: std::path::absolute(&common.cache)?,
        plan: common.plan_options()?,
        preview_max_size: parse_size(limits.max_size).context("--preview-max-size")?,
        preview_max_chunks: limits.max_chunks,
        preview_cache_size: parse_size(limits.cache_size).context("--preview-cache-size")?,
        preview_concurrency: limits.concurrency,
        preview_wait,
    };
    let dashboard = Arc::new(
        crate::dashboard::Dashboard::new(flow, options).context("opening the preview area")?,
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

async fn preload(
    common: &Common,
    jobs: usize,
    requests: usize,
    shard: Option<Shard>,
) -> Result<ExitCode> {
    let source = common.open_source().await?;
    let catalog = common.load_catalog(&source)?;
    // Chunks that many files need together are read whole and shared; the others block by
    // block (preload decides per chunk; `--read-path full` reads every chunk whole).
    let flow = common.flow(source.clone()).await?;
    let options = PreloadOptions {
        jobs,
        requests,
        shard,
        plan: common.plan_options()?,
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
    if let Some(pending) = flow.uploads_pending() {
        println!(
            "s3: {} uploaded, {pending} waiting for the bucket",
            flow.metrics()
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

async fn mount(common: &Common, args: &MountArgs) -> Result<ExitCode> {
    let mountpoint = crate::mount::prepare_mountpoint(&args.mountpoint)?;
    if !args.foreground {
        let log = match &args.log_file {
            Some(l) => std::path::absolute(l)?,
            None => std::path::absolute(common.cache.join("sodeda-mount.log"))?,
        };
        let pid = tokio::task::spawn_blocking({
            let (mountpoint, log) = (mountpoint.clone(), log.clone());
            move || {
                crate::mount::spawn_background(
                    &mountpoint,
                    &log,
                    &process_args()[1..],
                    std::time::Duration::from_secs(300),
                )
            }
        })
        .await??;
        eprintln!(
            "sodeda-mount: mounted at {} (pid {pid}); logging to {}; unmount with `umount {}`",
            mountpoint.display(),
            log.display(),
            mountpoint.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let started = std::time::Instant::now();
    let source = common.open_source().await?;
    let catalog = common.load_catalog(&source)?;
    let planned = started.elapsed();
    if args.strict && !catalog.errors.is_empty() {
        let lines: Vec<String> = catalog.errors.iter().map(|e| e.to_string()).collect();
        bail!(
            "{} has {} bad lines (--strict):\n{}",
            common.deskriptors.display(),
            lines.len(),
            lines.join("\n")
        );
    }
    warn_bad_lines(&catalog);
    if catalog.entries.is_empty() && !catalog.errors.is_empty() {
        bail!(
            "{} has no valid deskriptor ({} bad lines); nothing to mount",
            common.deskriptors.display(),
            catalog.errors.len()
        );
    }
    let n = catalog.entries.len();
    let plan_options = common.plan_options()?;
    let fs = Arc::new(
        crate::fs::DatasetFs::new(
            catalog.entries,
            common.flow(source.clone()).await?,
            plan_options,
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
    let (path, strict) = (common.deskriptors.clone(), args.strict);
    let flow = fs.flow().clone();
    let check_source = source.clone();
    let check: crate::mount::VersionCheck = Arc::new(move || {
        let (source, flow) = (check_source.clone(), flow.clone());
        Box::pin(async move {
            let changed = source.refresh_version().await?;
            if changed {
                // Entries built while chunks were absent are rebuilt from the new version.
                flow.set_store_version(source.freshness.cache_version());
            }
            Ok(changed)
        })
    });
    let source_check = (args.source_check_interval > 0).then(|| crate::mount::SourceCheck {
        every: std::time::Duration::from_secs(args.source_check_interval),
        check: check.clone(),
    });
    let index_dir = common.catalog_index_dir();
    let reload: crate::mount::Reloader = Arc::new(move || {
        let (path, source, check) = (path.clone(), source.clone(), check.clone());
        let index_dir = index_dir.clone();
        Box::pin(async move {
            // The store's version too: a reload picks up a store update at once.
            if let Err(e) = check().await {
                tracing::warn!("reload: reading the store's version: {e:#}");
            }
            let catalog = tokio::task::spawn_blocking(move || {
                Catalog::load_indexed(&path, &source, plan_options, index_dir.as_deref())
                    .with_context(|| format!("reading {}", path.display()))
            })
            .await??;
            if strict && !catalog.errors.is_empty() {
                bail!(
                    "{} bad lines (--strict); first: {}",
                    catalog.errors.len(),
                    catalog.errors[0]
                );
            }
            if catalog.entries.is_empty() && !catalog.errors.is_empty() {
                bail!(
                    "no valid deskriptor ({} bad lines; first: {}); keeping the current files",
                    catalog.errors.len(),
                    catalog.errors[0]
                );
            }
            for e in &catalog.errors {
                tracing::warn!("skipping {e}");
            }
            Ok(catalog.entries)
        })
    });
    let source_url = common.source.clone();
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

async fn get(
    common: &Common,
    line: Option<usize>,
    json: Option<&str>,
    output: &Path,
    stats: bool,
) -> Result<ExitCode> {
    // An inline deskriptor has no line number: its errors name `--deskriptor` instead.
    let inline = |e: crate::deskriptor::DeskriptorError| match json {
        Some(_) => anyhow::anyhow!("--deskriptor: {e}"),
        None => e.into(),
    };
    let deskriptor = match (line, json) {
        (_, Some(text)) => Deskriptor::parse(0, text).map_err(inline)?,
        (Some(n), None) => {
            let lines = crate::deskriptor::read_lines(&common.deskriptors)
                .with_context(|| format!("reading {}", common.deskriptors.display()))?;
            let count = lines.len();
            let Some(l) = n.checked_sub(1).and_then(|i| lines.into_iter().nth(i)) else {
                bail!(
                    "{} has no line {n} (it has {count} lines)",
                    common.deskriptors.display()
                );
            };
            Deskriptor::parse(n, &l.text?)?
        }
        (None, None) => bail!("give --line N or --deskriptor JSON"),
    };
    let source = common.open_source().await?;
    let plan = Plan::new(&deskriptor, &source, common.plan_options()?).map_err(inline)?;
    let flow = common.flow(source.clone()).await?;
    let before = (source.metrics.requests(), source.metrics.bytes());
    let (cached, origin) = flow
        .materialize(&plan)
        .await
        .with_context(|| format!("building {}", plan.file_name))?;
    // The entry as checked (or written) by the cache, never its path opened again; through
    // /proc/self/fd for an offset of its own.
    let mut file = std::fs::File::open(cached.fd_path())
        .with_context(|| format!("opening {}", cached.path.display()))?;
    write_output(&mut file, output)?;
    eprintln!(
        "{}: {} bytes, {} ({})",
        if output.as_os_str() == "-" {
            "standard output".into()
        } else {
            output.display().to_string()
        },
        plan.size,
        plan.file_name,
        match origin {
            Origin::Cache => "from cache",
            Origin::Remote => "copied from the S3 cache",
            Origin::Built => "built from the source",
        }
    );
    if stats {
        eprintln!(
            "source: {} requests, {} bytes for data ({} requests, {} bytes for metadata)",
            source.metrics.requests() - before.0,
            source.metrics.bytes() - before.1,
            before.0,
            before.1
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the bytes of `src` to `to`, the `-o` of `get`, without ever destroying `to`:
///
/// - `-` is standard output;
/// - a symbolic link is followed (every level) and what it points at is written as below, so
///   the link itself stays a link;
/// - an existing device or FIFO is opened and written into (nothing is renamed over it); a
///   socket or a directory is an error;
/// - a regular file is replaced atomically (a temporary file next to it, then a rename), so it
///   is never partial, and keeps its permission bits;
/// - a new file is created the same way with mode 0666 less the umask.
fn write_output(src: &mut std::fs::File, to: &Path) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
    if to.as_os_str() == "-" || to == Path::new("/dev/stdout") {
        let mut out = std::io::stdout().lock();
        std::io::copy(src, &mut out)
            .and_then(|_| out.flush())
            .context("writing to standard output")?;
        return Ok(());
    }
    // An open descriptor named by path (/dev/stderr, /dev/fd/N, /proc/self/fd/N): written
    // where it stands, as the shell's `>&N` would; never replaced.
    let fd = match to.to_str() {
        Some("/dev/stderr") => Some(2),
        Some(t) => t
            .strip_prefix("/dev/fd/")
            .or_else(|| t.strip_prefix("/proc/self/fd/"))
            .and_then(|n| n.parse::<std::os::fd::RawFd>().ok()),
        None => None,
    };
    if let Some(fd) = fd {
        use std::os::fd::FromRawFd;
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            bail!("{}: descriptor {fd} is not open", to.display());
        }
        // SAFETY: the descriptor is open (checked above) and borrowed for the copy only
        // (ManuallyDrop: never closed here).
        let mut out = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        std::io::copy(src, &mut *out).with_context(|| format!("writing {}", to.display()))?;
        return Ok(());
    }
    let target = resolve_links(to)?;
    let existing = match std::fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("{}", target.display())),
    };
    if let Some(m) = &existing {
        let t = m.file_type();
        if t.is_char_device() || t.is_block_device() || t.is_fifo() {
            // Opening a FIFO waits for its reader, as a shell's `>` does. Not following a
            // link, and checked again once open: the path may have changed since.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .with_context(|| format!("opening {}", target.display()))?;
            let now = out.metadata()?.file_type();
            if !(now.is_char_device() || now.is_block_device() || now.is_fifo()) {
                bail!("{} changed while it was opened", target.display());
            }
            std::io::copy(src, &mut out)
                .with_context(|| format!("writing {}", target.display()))?;
            return Ok(());
        }
        if t.is_dir() {
            bail!("{} is a directory", target.display());
        }
        if !t.is_file() {
            bail!(
                "{} is neither a regular file, a device nor a FIFO (a socket?); not writing to it",
                target.display()
            );
        }
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Created with 0666: the kernel applies the umask, as for any new file.
    let mut tmp = tempfile::Builder::new()
        .prefix(".sodeda-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    if let Some(m) = &existing {
        let mode = m.permissions().mode() & 0o777;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("keeping the mode of {}", target.display()))?;
    }
    std::io::copy(src, tmp.as_file_mut())
        .with_context(|| format!("writing {}", target.display()))?;
    tmp.persist(&target)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", target.display()))?;
    Ok(())
}

/// `path` with every symbolic link of its last component followed (relative links resolve
/// against the link's directory); the result is not a link (it may not exist).
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)
                    .with_context(|| format!("reading the link {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

fn warn_bad_lines(catalog: &Catalog) {
    for e in &catalog.errors {
        eprintln!("warning: skipping {e}");
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

/// `list`: streamed a batch of lines at a time ([`Catalog::scan`]), so a file of ten million
/// lines is listed in bounded memory; bad lines are warned about on standard error as they
/// come. The text form aligns sizes to the longest name of the first batch.
async fn list(common: &Common, json: bool) -> Result<ExitCode> {
    let source = common.open_source().await?;
    let cache = LocalCache::open(&common.cache)?;
    let remote = common.remote().await?;
    let options = common.plan_options()?;
    // Planning runs on its own threads; batches come back here to be checked and written.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Entry>>(2);
    let path = common.deskriptors.clone();
    let scan_source = source.clone();
    let scanner = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        let result = Catalog::scan(&path, &scan_source, options, |r| match r {
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
            writeln!(out, "{:<width$}  {:>12}  CACHED", "NAME", "SIZE")?;
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
        .with_context(|| format!("reading {}", common.deskriptors.display()))?;
    if json {
        writeln!(out, "{}]", if first { "" } else { "\n" })?;
    } else if first {
        writeln!(out, "{:<4}  {:>12}  CACHED", "NAME", "SIZE")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `validate`: streamed like `list`, keeping only the names seen (for the duplicate check).
async fn validate(common: &Common) -> Result<ExitCode> {
    let source = common.open_source().await?;
    let (mut good, mut bad) = (0usize, 0usize);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let shown = common.deskriptors.display();
    Catalog::scan(
        &common.deskriptors,
        &source,
        common.plan_options()?,
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

async fn scope(common: &Common, json: bool) -> Result<ExitCode> {
    let source = common.open_source().await?;
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
            .variables
            .values()
            .map(|v| {
                (
                    v.name.clone(),
                    json!({"dims": v.dims, "shape": v.shape, "chunks": v.chunks, "attributes": v.attributes}),
                )
            })
            .collect();
        let doc = json!({
            "source": source.url,
            "attributes": source.attributes,
            "coordinates": coords,
            "variables": vars,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "source: {}", source.url)?;
    for (k, v) in &source.attributes {
        writeln!(
            out,
            "  {k}: {}",
            v.as_str().map_or(v.to_string(), str::to_string)
        )?;
    }
    writeln!(out, "coordinates:")?;
    for c in source.coordinates.values() {
        writeln!(out, "  {}: {}", c.name, select::describe(c))?;
    }
    writeln!(out, "variables ({}):", source.variables.len())?;
    for v in source.variables.values() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
