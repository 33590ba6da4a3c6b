//! `mount.sodeda`: the mount(8) helper form of `sodeda-mount`, for `/etc/fstab` and systemd
//! mount units (`Type=sodeda`).
//!
//! mount(8) runs `/sbin/mount.sodeda SPEC DIR [-sfnv] [-N NS] [-o OPTIONS]`. SPEC is the
//! deskriptors file; OPTIONS are sodeda-mount's long options written `key=value` (with `_` or
//! `-`), flags by name (`allow_other`, `strict`), `env_file=PATH` to read a `.env`-style file
//! of settings (S3 credentials, say), and the generic options of fstab (`ro`, `_netdev`,
//! `nofail`, `x-systemd.*`, …), which are for mount(8) and systemd and are ignored here.
//! An unknown option is an error naming it, unless `-s` (sloppy) is given.

use std::ffi::OsString;

use anyhow::{bail, Context, Result};

/// Program name under which `sodeda-mount` acts as a mount(8) helper.
pub const HELPER_NAME: &str = "mount.sodeda";

/// Options taking a value, as `key=value` (the long option is `--key` with `-` for `_`).
const VALUE_OPTIONS: &[&str] = &[
    "source",
    "cache",
    "cache_max_size",
    "format",
    "max_file_size",
    "max_chunks",
    "memory_limit",
    "build_memory",
    "read_path",
    "source_retries",
    "source_timeout",
    "fetch_concurrency",
    "s3_bucket",
    "s3_prefix",
    "s3_endpoint",
    "s3_profile",
    "log_level",
    "log_file",
    "fuse_threads",
    "readahead",
    "pin",
    "layout",
    "source_check_interval",
];

/// Options without a value.
const FLAG_OPTIONS: &[&str] = &["allow_other", "strict", "foreground"];

/// fstab options meant for mount(8), the kernel's generic flags or systemd.
fn is_generic(option: &str) -> bool {
    const GENERIC: &[&str] = &[
        "defaults",
        "ro",
        "rw",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "nofail",
        "_netdev",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "sync",
        "async",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "lazytime",
        "diratime",
        "nodiratime",
        "silent",
        "loud",
    ];
    GENERIC.contains(&option)
        || option.starts_with("x-")
        || option.starts_with("comment=")
        || option.starts_with("X-")
}

/// True when this process was started as the mount helper.
pub fn invoked_as_helper(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == HELPER_NAME)
}

/// What a helper call asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct HelperCall {
    /// The equivalent `sodeda-mount` arguments (program name first).
    pub args: Vec<OsString>,
    /// An `env_file=` to read before parsing.
    pub env_file: Option<OsString>,
    /// `-f`: do everything but mount.
    pub fake: bool,
}

/// The `sodeda-mount` arguments of this process: `argv` as it is, or, when the program was
/// started as [`HELPER_NAME`], its translation ([`translate`]) with the `env_file` read into
/// the environment (so that it comes before any `.env` and the parse).
pub fn sodeda_mount_args(argv: Vec<OsString>) -> Result<HelperCall> {
    if !argv.first().is_some_and(|a| invoked_as_helper(a)) {
        return Ok(HelperCall {
            args: argv,
            env_file: None,
            fake: false,
        });
    }
    let call = translate(&argv[1..])?;
    if let Some(path) = &call.env_file {
        dotenvy::from_path(path).with_context(|| {
            format!(
                "mount.sodeda: env_file {}",
                std::path::Path::new(path).display()
            )
        })?;
    }
    Ok(call)
}

/// Translates mount(8) helper arguments (without the program name) into `sodeda-mount`
/// arguments.
pub fn translate(args: &[OsString]) -> Result<HelperCall> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let (mut sloppy, mut fake) = (false, false);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        match a.as_ref() {
            "-o" => {
                let value = args
                    .get(i + 1)
                    .context("mount.sodeda: -o needs a value")?
                    .to_string_lossy();
                options.extend(value.split(',').filter(|s| !s.is_empty()).map(String::from));
                i += 1;
            }
            "-t" => i += 1, // the type: we know it
            "-N" => bail!(
                "mount.sodeda: mounting in another mount namespace (-N) is not supported; \
                 run mount inside that namespace instead"
            ),
            s if s.starts_with("-o") => options.extend(
                s[2..]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            s if s.starts_with('-') && s.len() > 1 => {
                for flag in s[1..].chars() {
                    match flag {
                        's' => sloppy = true,
                        'f' => fake = true,
                        'n' | 'v' | 'r' | 'w' => {}
                        other => bail!(
                            "mount.sodeda: unknown flag -{other}; mount(8) passes -s, -f, -n, \
                             -v, -o OPTIONS"
                        ),
                    }
                }
            }
            _ => positional.push(args[i].clone()),
        }
        i += 1;
    }
    let [spec, dir] = <[OsString; 2]>::try_from(positional).map_err(|p| {
        anyhow::anyhow!(
            "mount.sodeda: expected DESKRIPTORS_FILE MOUNTPOINT [-o OPTIONS], got {} operands",
            p.len()
        )
    })?;
    let mut out: Vec<OsString> = vec!["sodeda-mount".into(), "--deskriptors".into(), spec];
    let mut env_file = None;
    // mount(8) appends the command line's -o to fstab's options: the last of a key wins.
    let key_of = |o: &str| o.split('=').next().unwrap_or("").replace('-', "_");
    let options: Vec<String> = options
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            !options[i + 1..]
                .iter()
                .any(|later| key_of(later) == key_of(o))
        })
        .map(|(_, o)| o.clone())
        .collect();
    for option in options {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k.replace('-', "_"), Some(v.to_string())),
            None => (option.replace('-', "_"), None),
        };
        match value {
            Some(v) if key == "env_file" => env_file = Some(v.into()),
            Some(v) if VALUE_OPTIONS.contains(&key.as_str()) => {
                out.push(format!("--{}", key.replace('_', "-")).into());
                out.push(v.into());
            }
            None if FLAG_OPTIONS.contains(&key.as_str()) => {
                out.push(format!("--{}", key.replace('_', "-")).into())
            }
            _ if is_generic(&option) => {}
            _ if sloppy => {}
            _ => bail!(
                "mount.sodeda: unknown option {option:?}; options are {}, flags {}, \
                 env_file=PATH, and fstab's generic ones (ro, _netdev, nofail, x-systemd.*)",
                VALUE_OPTIONS
                    .iter()
                    .map(|k| format!("{k}=…"))
                    .collect::<Vec<_>>()
                    .join(", "),
                FLAG_OPTIONS.join(", ")
            ),
        }
    }
    out.push(dir);
    Ok(HelperCall {
        args: out,
        env_file,
        fake,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Result<HelperCall> {
        translate(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    fn strings(c: &HelperCall) -> Vec<String> {
        c.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn fstab_options_become_long_options() {
        let c = call(&[
            "/etc/sodeda/deskriptors.jsonl",
            "/mnt/era5",
            "-o",
            "ro,allow_other,cache=/var/cache/sodeda,source=gs://b/x.zarr,cache-max-size=50G,_netdev,x-systemd.automount,env_file=/etc/sodeda/sodeda.env",
        ])
        .unwrap();
        assert_eq!(
            strings(&c),
            [
                "sodeda-mount",
                "--deskriptors",
                "/etc/sodeda/deskriptors.jsonl",
                "--allow-other",
                "--cache",
                "/var/cache/sodeda",
                "--source",
                "gs://b/x.zarr",
                "--cache-max-size",
                "50G",
                "/mnt/era5"
            ]
        );
        assert_eq!(c.env_file, Some("/etc/sodeda/sodeda.env".into()));
        assert!(!c.fake);
    }

    #[test]
    fn every_mount_option_of_sodeda_mount_can_be_written_in_fstab() {
        let c = call(&[
            "d.jsonl",
            "/mnt/era5",
            "-o",
            "pin=current,layout={variable}/{year},source_check_interval=0,strict",
        ])
        .unwrap();
        let args = strings(&c).join(" ");
        for pair in [
            "--pin current",
            "--layout {variable}/{year}",
            "--source-check-interval 0",
            "--strict",
        ] {
            assert!(args.contains(pair), "{pair} in {args}");
        }
    }

    #[test]
    fn the_last_of_a_repeated_option_wins() {
        // fstab says cache=/a; `mount /mnt -o cache=/b` appends the command line's options.
        let c = call(&[
            "d",
            "/mnt",
            "-o",
            "cache=/a,allow_other",
            "-o",
            "cache=/b,allow-other",
        ])
        .unwrap();
        assert_eq!(
            strings(&c),
            [
                "sodeda-mount",
                "--deskriptors",
                "d",
                "--cache",
                "/b",
                "--allow-other",
                "/mnt"
            ]
        );
    }

    #[test]
    fn a_namespace_is_refused() {
        let e = call(&["d", "/mnt", "-N", "/proc/1/ns/mnt"]).unwrap_err();
        assert!(e.to_string().contains("-N"), "{e}");
    }

    #[test]
    fn flags_and_type_are_understood() {
        let c = call(&["d.jsonl", "/mnt", "-n", "-f", "-t", "sodeda", "-oro"]).unwrap();
        assert!(c.fake);
        assert_eq!(
            strings(&c),
            ["sodeda-mount", "--deskriptors", "d.jsonl", "/mnt"]
        );
    }

    #[test]
    fn an_unknown_option_is_named_unless_sloppy() {
        let e = call(&["d", "/mnt", "-o", "cahce=/x"]).unwrap_err();
        assert!(e.to_string().contains("\"cahce=/x\""), "{e}");
        assert!(e.to_string().contains("cache=…"), "{e}");
        assert!(call(&["d", "/mnt", "-s", "-o", "cahce=/x"]).is_ok());
        let e = call(&["d"]).unwrap_err();
        assert!(e.to_string().contains("got 1 operands"), "{e}");
        assert!(call(&["d", "/mnt", "-q"]).is_err());
    }

    #[test]
    fn the_helper_is_recognised_by_its_name() {
        assert!(invoked_as_helper("/sbin/mount.sodeda".as_ref()));
        assert!(invoked_as_helper("mount.sodeda".as_ref()));
        assert!(!invoked_as_helper("/usr/bin/sodeda-mount".as_ref()));
    }
}
