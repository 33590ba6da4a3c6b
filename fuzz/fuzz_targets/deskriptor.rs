//! Any bytes as a deskriptors file: parsing never panics, every error names its line, and
//! the canonical form of a parsed line parses again to the same deskriptor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sodeda_era5::deskriptor::{parse_lines, Deskriptor};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (good, bad) = parse_lines(text);
    let lines = text.lines().count();
    for e in &bad {
        assert!(e.line >= 1 && e.line <= lines, "{e}");
        assert!(e.to_string().starts_with(&format!("line {}", e.line)));
    }
    for d in good {
        let canonical = d.canonical_json();
        let again = Deskriptor::parse(d.line, &canonical).expect("canonical form parses");
        assert_eq!(again.canonical_json(), canonical);
        assert_eq!(again.variables, d.variables);
    }
});
