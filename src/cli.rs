//! The `sodeda-era5` command line: options (each also an environment variable, and a `.env`
//! file in the working directory is read first) → the library calls → exit code.
//!
//! Exit codes: 0 success; 1 a failure (bad deskriptors for `validate`, a failed flow for
//! `get`, an unreachable source); 2 a usage error (clap). A printing command (`list`,
//! `validate`, `scope`, `status`, `get`) whose standard output or error is closed
//! (`| head -1`) ends silently by SIGPIPE, as Unix filters do: a shell shows status 141,
//! which only `set -o pipefail` sees.
//!
//! The command line is a shell: `cli/args.rs` holds clap's definitions, `cli/config.rs` turns
//! them into an [`crate::app::Config`], `cli/process.rs` sets up logging and the runtime, and each command
//! is a module of its own that opens what it needs through [`crate::app`] and prints.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

mod args;
mod config;
mod dashboard;
mod get;
mod list;
mod mount;
mod preload;
mod process;
mod report;

use args::Command;
pub use args::{Cli, Common, MountArgs, MountCli};

/// Entry point of `sodeda-era5`.
pub fn main() -> ExitCode {
    // A printing command whose output is closed (`sodeda-era5 list | head -1`) ends at once
    // and quietly, killed by SIGPIPE as any Unix filter is (Rust ignores SIGPIPE, which turns
    // it into "Broken pipe" errors). Commands that work while they print (preload, the mount,
    // the dashboard) keep ignoring it: a reader going away must not kill a build half-way
    // (leaving its temporary file) or end a server. Sockets use MSG_NOSIGNAL either way.
    process::set_sigpipe(libc::SIG_DFL);
    process::load_dotenv();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&argv);
    let printing = matches!(
        cli.command,
        Command::List { .. }
            | Command::Validate
            | Command::Scope { .. }
            | Command::Status { .. }
            | Command::Get { .. }
    );
    if !printing {
        process::set_sigpipe(libc::SIG_IGN);
    }
    let log_file = match &cli.command {
        Command::Mount(m) if m.foreground => m.log_file.clone(),
        Command::Dashboard { log_file, .. } => log_file.clone(),
        _ => None,
    };
    let level = cli.common.log_level.clone();
    process::start(&level, log_file.as_deref(), run(cli, &argv))
}

/// Entry point of `sodeda-mount` (and of `mount.sodeda`, its mount(8) helper name).
pub fn mount_main() -> ExitCode {
    let call = match crate::mount::helper::sodeda_mount_args(std::env::args_os().collect()) {
        Ok(call) => call,
        Err(e) => {
            eprintln!("{e:#}");
            // mount(8) helpers exit 1 for a usage error.
            return ExitCode::FAILURE;
        }
    };
    process::load_dotenv();
    let cli = MountCli::parse_from(&call.args);
    if call.fake {
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
    process::start(&level, log_file.as_deref(), async move {
        let config = cli.common.config()?;
        mount::mount(&config, &cli.mount, &call.args).await
    })
}

/// Runs one parsed command.
pub async fn run(cli: Cli, argv: &[OsString]) -> Result<ExitCode> {
    // Made for the commands that open the stack only: `status` of a mount does not fail on a
    // bad `--memory-limit` in `.env`.
    let config = || cli.common.config();
    match &cli.command {
        Command::Get {
            line,
            deskriptor,
            output,
            stats,
        } => get::get(&config()?, *line, deskriptor.as_deref(), output, *stats).await,
        Command::List { json } => list::list(&config()?, *json).await,
        Command::Validate => list::validate(&config()?).await,
        Command::Scope { json } => report::scope(&config()?, *json).await,
        Command::Mount(args) => mount::mount(&config()?, args, argv).await,
        Command::Preload {
            jobs,
            requests,
            shard,
        } => preload::preload(&config()?, *jobs, *requests, *shard).await,
        Command::Prefetch {
            mountpoint,
            order,
            window,
            idle,
        } => {
            let idle = std::time::Duration::from_secs(*idle);
            preload::prefetch(mountpoint, order, *window, idle).await
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
        Command::Status { mountpoint, json } => report::status(mountpoint, *json),
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
            let limits = dashboard::PreviewLimits {
                max_size: preview_max_size,
                max_chunks: *preview_max_chunks,
                cache_size: preview_cache_size,
                concurrency: *preview_concurrency,
                wait: *preview_wait,
            };
            dashboard::dashboard(&config()?, *host, *port, limits).await
        }
        Command::Unmount { mountpoint } => {
            crate::mount::unmount(mountpoint)?;
            eprintln!("unmounted {}", mountpoint.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
