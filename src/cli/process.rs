//! What every command's process does around its job: the `.env` file, SIGPIPE, logging, the
//! tokio runtime, the exit code.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// Reads `.env` in the working directory, if there is one.
pub(super) fn load_dotenv() {
    // A missing .env is normal; a malformed one is worth a warning.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("warning: ignoring .env: {e}");
        }
    }
}

/// Sets up logging (to `log_file` or stderr), runs `job` on a tokio runtime, maps the result
/// to an exit code.
pub(super) fn start(
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

/// Sets what SIGPIPE does: `SIG_DFL` (end quietly, as Unix filters do) or `SIG_IGN`.
pub(super) fn set_sigpipe(action: libc::sighandler_t) {
    // SAFETY: setting the disposition of SIGPIPE to SIG_DFL or SIG_IGN installs no handler
    // code; it happens before any thread of this program starts.
    unsafe {
        libc::signal(libc::SIGPIPE, action);
    }
}
