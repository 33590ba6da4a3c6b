//! From arguments to an [`crate::app::Config`]: sizes with units, the `--layout` template,
//! the S3 settings. Every error names the option at fault.

use anyhow::{bail, Context, Result};

use super::args::Common;
use crate::app::Config;
use crate::cache::s3::S3Config;
use crate::plan::PlanOptions;
use crate::source::SourceOptions;

/// Parses a byte size with an optional K/M/G/T suffix (powers of 1024; `KiB`, `GB` also read).
pub(super) fn parse_size(s: &str) -> Result<u64> {
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
    /// The application's configuration from these options.
    pub(super) fn config(&self) -> Result<Config> {
        let size = |value: &str, option: &str| parse_size(value).context(option.to_string());
        let optional = |value: &Option<String>, option: &str| -> Result<Option<u64>> {
            match value.as_deref().filter(|s| !s.is_empty()) {
                Some(v) => Ok(Some(size(v, option)?)),
                None => Ok(None),
            }
        };
        let Ok(timeout) = std::time::Duration::try_from_secs_f64(self.source_timeout) else {
            bail!("--source-timeout must be a positive number of seconds");
        };
        let s3 = self
            .s3_bucket
            .clone()
            .filter(|b| !b.is_empty())
            .map(|bucket| S3Config {
                bucket,
                prefix: self.s3_prefix.clone(),
                endpoint: self.s3_endpoint.clone().filter(|e| !e.is_empty()),
                profile: self.s3_profile.clone().filter(|p| !p.is_empty()),
            });
        Ok(Config {
            deskriptors: self.deskriptors.clone(),
            source: self.source.clone(),
            source_options: SourceOptions {
                retries: self.source_retries,
                timeout,
            },
            pin: self.pin.clone().filter(|p| !p.trim().is_empty()),
            cache_dir: self.cache.clone(),
            cache_max_size: optional(&self.cache_max_size, "--cache-max-size")?,
            plan: self.plan_options()?,
            memory_limit: size(&self.memory_limit, "--memory-limit")?,
            build_memory: optional(&self.build_memory, "--build-memory")?,
            read_path: self.read_path,
            fetch_concurrency: self.fetch_concurrency.max(1),
            s3,
        })
    }

    fn plan_options(&self) -> Result<PlanOptions> {
        let layout = match self.layout.as_deref().filter(|l| !l.is_empty()) {
            // Parsed once per process and kept for its life (options are copied freely).
            Some(template) => Some(layout_of(template)?),
            None => None,
        };
        Ok(PlanOptions {
            format: self.format,
            max_file_size: parse_size(&self.max_file_size).context("--max-file-size")?,
            max_chunks: self.max_chunks,
            layout,
        })
    }
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

    #[test]
    fn options_become_a_config_and_name_the_option_at_fault() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["sodeda-era5", "--deskriptors", "d.jsonl"];
            argv.extend_from_slice(extra);
            argv.push("validate");
            super::super::args::Cli::try_parse_from(argv)
                .unwrap()
                .common
                .config()
        };
        let config = parse(&["--memory-limit", "1G", "--s3-bucket", "b"]).unwrap();
        assert_eq!(config.memory_limit, 1 << 30);
        assert_eq!(config.deskriptors, std::path::Path::new("d.jsonl"));
        assert_eq!(config.s3.as_ref().map(|s| s.bucket.as_str()), Some("b"));
        let e = parse(&["--build-memory", "lots"]).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("--build-memory: size \"lots\""),
            "{e:#}"
        );
        let e =
            super::super::args::Cli::try_parse_from(["sodeda-era5", "--source-timeout=-1", "list"])
                .unwrap_err();
        assert!(e.to_string().contains("--source-timeout"), "{e}");
    }
}
