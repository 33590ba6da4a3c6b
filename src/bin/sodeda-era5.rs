//! The `sodeda-era5` command: parses arguments and runs [`sodeda_era5::cli::run`].

fn main() -> std::process::ExitCode {
    sodeda_era5::cli::main()
}
