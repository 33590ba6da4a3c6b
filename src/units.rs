//! Sizes as people read them: binary units (KiB, MiB, GiB, TiB) in every message.

/// `n` bytes written with one decimal in the largest binary unit below it: `512 B`,
/// `1.5 KiB`, `4.1 TiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(256 << 20), "256.0 MiB");
        assert_eq!(human_size(4_509_715_660_800), "4.1 TiB");
        assert_eq!(human_size(u64::MAX), "16384.0 PiB");
    }
}
