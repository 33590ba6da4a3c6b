//! A catalog takes sizes from files of the same shape planned before (no layout built), and
//! they equal the sizes of full plans, in both formats, whatever the length of the canonical
//! form; and its lines planned from memoized parts (`Plan::entry_of_line`) give the entries
//! and errors of full plans, whatever the spelling of the lines. The source is the small
//! ERA5-shaped store in memory (tests/common).

mod common;

use sodeda_era5::catalog::Entry;
use sodeda_era5::deskriptor::Deskriptor;
use sodeda_era5::layout::Format;
use sodeda_era5::naming::NameLayout;
use sodeda_era5::plan::{Plan, PlanMemo, PlanOptions};
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
        let mut memo = PlanMemo::default();
        for pass in 0..2 {
            for (i, line) in lines.iter().enumerate() {
                let d = Deskriptor::parse(i + 1, line).unwrap();
                let full = Entry::of(&Plan::new(&d, &source.scope, options).unwrap());
                let fast = Plan::entry(&d, &source.scope, options, &mut memo).unwrap();
                assert_eq!(fast, full, "{format:?}, pass {pass}: {line}");
            }
        }
    }
}

/// Lines that repeat parts under other spellings, with names, directories, steps, open
/// bounds, lists, repeated keys, escapes, a provisional hour and bad lines among them.
fn varied_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for k in 0..6 {
        let lat = [2.0, 1.5, -0.5][k % 3];
        lines.push(format!(
            r#"{{"time": "2023-01-01T0{k}:00", "latitude": {lat}, "variable": "2m_temperature"}}"#
        ));
        // The same selection spelt otherwise: same identity, same size.
        lines.push(format!(
            r#"{{"variable":["2m_temperature"],"latitude":{lat},"time":"2023-01-01T0{k}:00"}}"#
        ));
        lines.push(format!(
            r#"{{"name": "dir{}/f{k}", "time": {{"start": "2023-01-01T00", "end": null, "step": {}}}, "longitude": {{"start": -22.5, "end": 22.5}}, "variable": "2m_temperature"}}"#,
            k % 2,
            k + 1
        ));
        lines.push(format!(
            r#"{{"time": ["2023-01-01T0{k}:00", "2023-01-01T09:00"], "level": [850, 500], "variable": ["temperature", "2m_temperature"], "level": {}}}"#,
            [500, 850][k % 2]
        ));
    }
    lines.extend(
        [
            // Escaped key and value: the whole way, same result.
            r#"{"\u0074ime": "2023-01-01T01:00", "variable": "2m_te\u006dperature"}"#,
            r#"  {"time": "2023-01-01T01:00", "variable": "2m_temperature"}  "#,
            r#"{"time": "2023-01-02T23:00", "variable": "2m_temperature"}"#,
            // Bad lines: each error as the full plan gives it.
            r#"{"time": "2023-01-01T01:00", "variable": "t2m"}"#,
            r#"{"time": "1999-01-01", "variable": "2m_temperature"}"#,
            r#"{"time": "2023-01-01T01:00", "lat": 1, "variable": "2m_temperature"}"#,
            r#"{"time": "2023-01-01T01:00", "latitude": {"start": 1, "stop": 2}, "variable": "2m_temperature"}"#,
            r#"{"name": "a/../b", "time": "2023-01-01T01:00", "variable": "2m_temperature"}"#,
            r#"{"time": "2023-01-01T01:00", "variable": ["2m_temperature", "2m_temperature"]}"#,
            r#"{"time": "2023-01-01T01:00", "variable": "2m_temperature", "latitude": 1e999}"#,
            r#"[1, 2]"#,
            r#"{"time": "2023-01-01T01:00""#,
        ]
        .map(String::from),
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_planned_from_memoized_parts_equal_full_plans() {
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    let layout: &'static NameLayout = Box::leak(Box::new(
        NameLayout::parse("{variable}/{year}/{month}").unwrap(),
    ));
    let lines = varied_lines();
    for format in [Format::Classic64, Format::Netcdf4] {
        for layout in [None, Some(layout)] {
            let options = PlanOptions {
                format,
                layout,
                ..PlanOptions::default()
            };
            let mut memo = PlanMemo::default();
            let mut good = 0;
            for pass in 0..2 {
                for (i, line) in lines.iter().enumerate() {
                    let full = Deskriptor::parse(i + 1, line)
                        .and_then(|d| Plan::new(&d, &source.scope, options).map_err(line_error))
                        .map(|p| Entry::of(&p));
                    let fast = Plan::entry_of_line(i + 1, line, &source.scope, options, &mut memo)
                        .map_err(line_error);
                    assert_eq!(fast, full, "{format:?}, {layout:?}, pass {pass}: {line}");
                    good += usize::from(full.is_ok());
                }
            }
            assert!(
                good >= 2 * 26,
                "{good} good lines: the test lost its subject"
            );
        }
    }
}

/// A planning error that is the line's (sizes are computed on a machine that can).
fn line_error(e: sodeda_era5::plan::PlanError) -> sodeda_era5::deskriptor::DeskriptorError {
    e.deskriptor()
        .cloned()
        .expect("the size template could be written")
}

/// Lines over more chunks than `--max-chunks` are refused the same way by memoized and full
/// plans (the memo's shortcut never lets one through), and the lines under it plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chunk_limit_refuses_the_same_lines_memoized_or_not() {
    let source = Source::open_store("memory://synthetic", common::synthetic_store().await)
        .await
        .unwrap();
    // One chunk per hour and variable: 4 hours of one variable is 4 chunks.
    let options = PlanOptions {
        max_chunks: 4,
        ..PlanOptions::default()
    };
    let mut memo = PlanMemo::default();
    let (mut refused, mut good) = (0, 0);
    for pass in 0..2 {
        for (i, line) in varied_lines().iter().enumerate() {
            let full = Deskriptor::parse(i + 1, line)
                .and_then(|d| Plan::new(&d, &source.scope, options).map_err(line_error))
                .map(|p| Entry::of(&p));
            let fast = Plan::entry_of_line(i + 1, line, &source.scope, options, &mut memo)
                .map_err(line_error);
            assert_eq!(fast, full, "pass {pass}: {line}");
            match &full {
                Ok(_) => good += 1,
                Err(e) if e.message.contains("(--max-chunks)") => refused += 1,
                Err(_) => {}
            }
        }
    }
    assert!(
        refused >= 2 * 6 && good >= 2 * 12,
        "{refused} refused, {good} good: the test lost its subject"
    );
}
