//! The `sodeda-mount` command: parses arguments and runs [`sodeda_era5::cli::mount_main`].

fn main() -> std::process::ExitCode {
    sodeda_era5::cli::mount_main()
}
