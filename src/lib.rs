//! sodeda-era5: a software-defined dataset over ARCO-ERA5, served as NetCDF files.
//!
//! # Layout
//! The modules follow the data flow, each importing only from those above it:
//!
//! - [`deskriptor`]: one JSON line → a parsed [`deskriptor::Deskriptor`] (syntax only).
//! - [`source`]: a Zarr v2 store at a URL → variables, coordinates, opened zarrs arrays.
//! - [`select`]: one selector × one coordinate → positions (xarray `.sel` semantics).
//! - [`layout`]: the NetCDF schema of a file and its exact size.
//! - [`encode`]: layout + data → NetCDF bytes on disk (libnetcdf).
//! - [`plan`]: deskriptor × source → [`plan::Plan`] (positions, layout, name, identity, size);
//!   [`naming`]: the `--layout` of unnamed files in directories.
//! - [`catalog`]: a deskriptors file → plans + per-line errors.
//! - [`fetch`]: plan → float32 arrays, reading only the chunks needed, concurrently.
//! - [`cache`]: identity → a complete file on local disk, written atomically; its [`cache::s3`]
//!   tier shares finished files through a bucket.
//! - [`flow`]: plan → cached file (cache hit, or fetch → encode → persist).
//! - [`preload`]: building every file ahead of time.
//! - [`fs`], [`fuse`], [`mount`]: the file system core, its FUSE adapter, mounting.
//! - [`dashboard`]: a web page listing the files and previewing selections as maps.
//! - [`app`]: one plain configuration and one way to open the stack over it.
//! - [`units`]: sizes in binary units for messages.
//! - [`cli`]: the `sodeda-era5` command line over all of the above, a shell over [`app`].

pub mod app;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod dashboard;
pub mod deskriptor;
pub mod encode;
pub mod fetch;
pub mod flow;
pub mod fs;
pub mod fuse;
pub mod layout;
pub mod mount;
pub mod naming;
pub mod plan;
pub mod preload;
pub mod provenance;
pub mod reduce;
pub mod select;
pub mod source;
pub mod units;

/// mimalloc for every program and test of the crate: planning a catalog of a million lines
/// is allocation-bound, and glibc's malloc cost a tenth of a mount's start
/// ([`mount::release_freed_memory`] gives freed memory back at the end of it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
