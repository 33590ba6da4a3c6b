//! A catalog takes sizes from files of the same shape planned before (no layout built), and
//! they equal the sizes of full plans, in both formats, whatever the length of the canonical
//! form. The source is the small ERA5-shaped store in memory (tests/common).

mod common;

use sodeda_era5::catalog::Entry;
use sodeda_era5::deskriptor::Deskriptor;
use sodeda_era5::layout::Format;
use sodeda_era5::plan::{Plan, PlanOptions, SizeMemo};
use sodeda_era5::source::Source;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memoized_sizes_equal_full_plans() {
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    // Same shapes, canonical forms of every length modulo 4, and other shapes between.
    let mut lines = Vec::new();
    for k in 0..12 {
        let lon = [0.0, 22.5, 45.0, 337.5][k % 4];
        let lat = [2.0, 1.5, -0.5][k % 3];
        lines.push(format!(
            r#"{{"time": "2023-01-01T{:02}:00", "latitude": {lat}, "longitude": {lon}, "variable": "2m_temperature"}}"#,
            k % 24
        ));
        lines.push(format!(
            r#"{{"time": {{"start": "2023-01-01T0{}", "end": "2023-01-01T09"}}, "level": [500, 850], "variable": ["temperature", "2m_temperature"]}}"#,
            k % 9
        ));
        lines.push(format!(
            r#"{{"name": "{}", "time": "2023-01-02", "longitude": {{"start": -45, "end": {}}}, "variable": "2m_temperature"}}"#,
            "n".repeat(k + 1),
            k * 15
        ));
    }
    for format in [Format::Classic64, Format::Netcdf4] {
        let options = PlanOptions {
            format,
            ..PlanOptions::default()
        };
        let mut memo = SizeMemo::default();
        for pass in 0..2 {
            for (i, line) in lines.iter().enumerate() {
                let d = Deskriptor::parse(i + 1, line).unwrap();
                let full = Entry::of(&Plan::new(&d, &source, options).unwrap());
                let fast = Plan::entry(&d, &source, options, &mut memo).unwrap();
                assert_eq!(fast, full, "{format:?}, pass {pass}: {line}");
            }
        }
    }
}
