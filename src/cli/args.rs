//! The command line's arguments: clap's definitions of `sodeda-era5` and `sodeda-mount`, every
//! option also an environment variable. [`super::config`] turns them into an [`crate::app::Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cache::DEFAULT_CACHE_DIR;
use crate::fetch::{FetchOptions, ReadPath};
use crate::layout::Format;
use crate::plan::{DEFAULT_MAX_CHUNKS, DEFAULT_MAX_FILE_SIZE};
use crate::preload::Shard;
use crate::source::DEFAULT_SOURCE;

/// The longest duration any option takes, in seconds: one year. A longer one is a typo (or a
/// way to say "never", which these options say with 0 where they can), and would overflow
/// the clocks it is added to.
pub const MAX_SECONDS: u64 = 365 * 86_400;

/// Why a number of seconds given to an option was refused (clap names the option and the
/// value before it).
#[derive(Debug, thiserror::Error)]
pub enum SecondsError {
    /// Not a number.
    #[error("not a number of seconds")]
    NotANumber,
    /// A fraction where the option takes whole seconds.
    #[error("must be a whole number of seconds")]
    NotWhole,
    /// Outside the range the option takes.
    #[error("must be from {min} to {MAX_SECONDS} seconds (one year)")]
    OutOfRange {
        /// The least value taken (0, or a positive number).
        min: &'static str,
    },
}

/// A whole number of seconds from 0 to [`MAX_SECONDS`].
fn whole_seconds(s: &str) -> Result<u64, SecondsError> {
    let v = seconds(s)?;
    if v.fract() != 0.0 {
        return Err(SecondsError::NotWhole);
    }
    Ok(v as u64)
}

/// A number of seconds (fractions too) from 0 to [`MAX_SECONDS`].
fn seconds(s: &str) -> Result<f64, SecondsError> {
    let v: f64 = s.trim().parse().map_err(|_| SecondsError::NotANumber)?;
    if !(0.0..=MAX_SECONDS as f64).contains(&v) {
        return Err(SecondsError::OutOfRange { min: "0" });
    }
    Ok(v)
}

/// A number of seconds (fractions too) above 0, up to [`MAX_SECONDS`].
fn positive_seconds(s: &str) -> Result<f64, SecondsError> {
    match seconds(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err(SecondsError::OutOfRange { min: "more than 0" }),
    }
}

/// Command-line arguments of `sodeda-era5`.
#[derive(Debug, Parser)]
#[command(
    name = "sodeda-era5",
    version,
    about = "A software-defined dataset over ARCO-ERA5: deskriptors in, exact NetCDF files out"
)]
pub struct Cli {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    pub(super) command: Command,
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
    pub(super) deskriptors: PathBuf,
    /// The Zarr store: `arco-era5` or `weatherbench2` by name, or a URL (gs://, s3://,
    /// http(s)://, file://) or a path.
    #[arg(long, env = "SODEDA_SOURCE", default_value = DEFAULT_SOURCE, global = true)]
    pub(super) source: String,
    /// The local cache directory.
    #[arg(long, env = "LOCAL_CACHE", default_value = DEFAULT_CACHE_DIR, global = true)]
    pub(super) cache: PathBuf,
    /// Largest size of the local cache (bytes; K, M, G suffixes); least recently used files
    /// are evicted, never an open one. Unlimited when unset.
    #[arg(long, env = "SODEDA_CACHE_MAX_SIZE", global = true)]
    pub(super) cache_max_size: Option<String>,
    /// File format: cdf2 (NetCDF classic 64-bit offset) or netcdf4.
    #[arg(long, env = "SODEDA_FORMAT", default_value = "cdf2", global = true)]
    pub(super) format: Format,
    /// Refuse deskriptors whose file would be larger than this (bytes; K, M, G suffixes).
    #[arg(long, env = "SODEDA_MAX_FILE_SIZE", default_value_t = DEFAULT_MAX_FILE_SIZE.to_string(), global = true)]
    pub(super) max_file_size: String,
    /// Refuse deskriptors whose file would read more source chunks than this (ARCO-ERA5: one
    /// chunk per hour and variable, so the default is about 11 years of one variable).
    #[arg(long, env = "SODEDA_MAX_CHUNKS", default_value_t = DEFAULT_MAX_CHUNKS,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub(super) max_chunks: u64,
    /// Memory for decoded source chunks kept for reuse across files (bytes; K, M, G suffixes).
    /// Files over the same hours run together, so a few hours' chunks suffice; a larger
    /// cache costs more in fresh pages than it saves (see docs/PERFORMANCE.md).
    #[arg(
        long,
        env = "SODEDA_MEMORY_LIMIT",
        default_value = "256M",
        global = true
    )]
    pub(super) memory_limit: String,
    /// Memory that file builds may hold at once (bytes; K, M, G suffixes): a build reserves
    /// its decoded arrays and chunk reads before it starts, others wait; a build larger than
    /// this runs alone. Default: a quarter of the machine's memory, at least 1 GiB.
    #[arg(long, env = "SODEDA_BUILD_MEMORY", global = true)]
    pub(super) build_memory: Option<String>,
    /// How chunks are read: auto (only the needed Blosc blocks of small samples) or full.
    /// `preload` always reads whole chunks, to share them between files.
    #[arg(long, env = "SODEDA_READ_PATH", default_value = "auto", global = true)]
    pub(super) read_path: ReadPath,
    /// Retries of a failed source request (5xx, timeout, reset), with exponential backoff.
    #[arg(
        long,
        env = "SODEDA_SOURCE_RETRIES",
        default_value_t = 3,
        global = true
    )]
    pub(super) source_retries: usize,
    /// Time limit of one source request, in seconds (more than 0, at most a year).
    #[arg(
        long,
        env = "SODEDA_SOURCE_TIMEOUT",
        default_value_t = 30.0,
        value_parser = positive_seconds,
        global = true
    )]
    pub(super) source_timeout: f64,
    /// Source chunk reads in flight at once.
    #[arg(long, env = "SODEDA_FETCH_CONCURRENCY", default_value_t = FetchOptions::default().concurrency, global = true)]
    pub(super) fetch_concurrency: usize,
    /// S3 bucket of the shared cache tier (no S3 tier when unset).
    #[arg(long, env = "S3_BUCKET_NAME", global = true)]
    pub(super) s3_bucket: Option<String>,
    /// Key prefix in the S3 bucket.
    #[arg(long, env = "S3_KEY_PREFIX", default_value = crate::cache::s3::DEFAULT_PREFIX, global = true)]
    pub(super) s3_prefix: String,
    /// S3 endpoint URL (for S3-compatible servers; http allowed).
    #[arg(long, env = "S3_ENDPOINT_URL", global = true)]
    pub(super) s3_endpoint: Option<String>,
    /// Profile of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials).
    #[arg(long, env = "S3_PROFILE", global = true)]
    pub(super) s3_profile: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "SODEDA_LOG", default_value = "warn", global = true)]
    pub(super) log_level: String,
    /// Freeze the dataset at a store version: a `last_updated` value of the store, or
    /// `current` for the version it has now. Files over preliminary ERA5T hours are planned as
    /// of that version and nothing is rebuilt because the store changed; such a file not
    /// cached from that version fails once the store has moved on.
    #[arg(long, env = "SODEDA_PIN", global = true)]
    pub(super) pin: Option<String>,
    /// Directories for the files of deskriptors without `name`, e.g.
    /// `{variable}/{year}/{month}` (fields: {variable}, {year}, {month}, {day}, {hour}); named
    /// deskriptors place themselves with `/` in their name.
    #[arg(long, env = "SODEDA_LAYOUT", global = true)]
    pub(super) layout: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
        /// Stop when the reader has not moved for this many seconds (at most a year).
        #[arg(long, default_value_t = 600, value_parser = whole_seconds)]
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
        /// Seconds a request waits for an ad-hoc build slot before it gets 503 (busy; at most
        /// a year).
        #[arg(long, env = "SODEDA_PREVIEW_WAIT", default_value_t = 30.0, value_parser = seconds)]
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
    pub(super) foreground: bool,
    /// Let other users read the files (FUSE allow_other).
    #[arg(long, env = "SODEDA_ALLOW_OTHER")]
    pub(super) allow_other: bool,
    /// Where the mount logs (default in the background: `<cache>/sodeda-mount.log`; in the
    /// foreground: standard error).
    #[arg(long, env = "SODEDA_LOG_FILE")]
    pub(super) log_file: Option<PathBuf>,
    /// FUSE worker threads.
    #[arg(long, env = "SODEDA_FUSE_THREADS", default_value_t = 4)]
    pub(super) fuse_threads: usize,
    /// Files built ahead, in the background, of a reader that goes through the files in order
    /// (line or name order); 0: none. Each counts against --build-memory.
    #[arg(long, env = "SODEDA_READAHEAD", default_value_t = 8)]
    pub(super) readahead: usize,
    /// Refuse to mount if any deskriptor line is bad (default: skip bad lines with a warning).
    #[arg(long, env = "SODEDA_STRICT")]
    pub(super) strict: bool,
    /// Seconds between two reads of the store's version (its `last_updated`); when it
    /// changed, files over preliminary ERA5T hours become new files and are rebuilt at their
    /// next open. 0: never (a `reload` also reads it). At most a year.
    #[arg(
        long,
        env = "SODEDA_SOURCE_CHECK_INTERVAL",
        default_value_t = 3600,
        value_parser = whole_seconds
    )]
    pub(super) source_check_interval: u64,
    /// The directory to mount on.
    pub(super) mountpoint: PathBuf,
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
    pub(super) common: Common,
    #[command(flatten)]
    pub(super) mount: MountArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_beyond_a_year_are_refused_at_parsing_naming_the_option() {
        assert_eq!(whole_seconds("3600").unwrap(), 3600);
        assert_eq!(whole_seconds("0").unwrap(), 0);
        assert_eq!(
            whole_seconds(&MAX_SECONDS.to_string()).unwrap(),
            MAX_SECONDS
        );
        for bad in [
            "31536001",
            "18446744073709551615",
            "99999999999999999999999",
        ] {
            assert!(
                matches!(whole_seconds(bad), Err(SecondsError::OutOfRange { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            whole_seconds("-1"),
            Err(SecondsError::OutOfRange { .. })
        ));
        assert!(matches!(whole_seconds("1.5"), Err(SecondsError::NotWhole)));
        assert!(matches!(whole_seconds("1h"), Err(SecondsError::NotANumber)));
        assert_eq!(seconds("0.5").unwrap(), 0.5);
        assert_eq!(seconds("0").unwrap(), 0.0);
        for bad in ["1e300", "inf", "NaN", "-1", "31536000.5"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert!(positive_seconds("0").is_err() && positive_seconds("0.1").is_ok());

        let e = MountCli::try_parse_from([
            "sodeda-mount",
            "--source-check-interval",
            "18446744073709551615",
            "/mnt",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        for part in [
            "--source-check-interval",
            "18446744073709551615",
            "from 0 to 31536000 seconds (one year)",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        for (option, value) in [
            ("--source-timeout", "1e20"),
            ("--source-timeout", "0"),
            ("--preview-wait", "1e20"),
        ] {
            let argv = ["sodeda-era5", option, value, "dashboard"];
            let argv: Vec<&str> = if option == "--preview-wait" {
                vec!["sodeda-era5", "dashboard", option, value]
            } else {
                argv.to_vec()
            };
            let e = Cli::try_parse_from(argv).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(option) && text.contains(value), "{text}");
        }
        let e = Cli::try_parse_from([
            "sodeda-era5",
            "prefetch",
            "/mnt",
            "--order",
            "o",
            "--idle",
            "99999999999",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--idle"), "{e}");
    }
}
