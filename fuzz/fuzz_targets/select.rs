//! Any deskriptor line against ERA5-shaped coordinates (the planner's selection step): never
//! a panic; a resolved selection is non-empty, in range, and its labels are the coordinate's
//! values (or, for longitudes, those values relabelled to -180..180).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Map;
use sodeda_era5::deskriptor::Deskriptor;
use sodeda_era5::select::resolve;
use sodeda_era5::source::{Coordinate, TimeEncoding};

fn coord(name: &str, values: Vec<f64>, integer: bool, time: bool) -> Coordinate {
    Coordinate {
        name: name.into(),
        values,
        integer,
        attributes: Map::new(),
        time: time.then(|| TimeEncoding::parse("hours since 1900-01-01 00:00:00", None).unwrap()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = Deskriptor::parse(1, text) else {
        return;
    };
    let coords = [
        coord("latitude", (0..721).map(|i| 90.0 - 0.25 * i as f64).collect(), false, false),
        coord("longitude", (0..1440).map(|i| 0.25 * i as f64).collect(), false, false),
        coord("level", vec![1.0, 500.0, 850.0, 1000.0], true, false),
        coord("time", (1_078_000..1_080_000).map(|i| i as f64).collect(), true, true),
    ];
    for c in &coords {
        if let Ok(r) = resolve(1, d.selectors.get(&c.name), c) {
            assert!(!r.indices.is_empty());
            assert_eq!(r.indices.len(), r.labels.len());
            for (&i, &l) in r.indices.iter().zip(&r.labels) {
                let v = c.values[i];
                assert!(l == v || (c.name == "longitude" && l == v - 360.0));
            }
        }
    }
});
