//! Keys: which keys a deskriptor may have (`variable`, `name` and the source's coordinates),
//! and a suggestion for a misspelled one.
//!
//! Input: a deskriptor's keys and the source's coordinates. Output: `Ok`, or an error naming
//! the unknown key, the nearest allowed one (`lat` → `latitude`) and all that are allowed.

use super::{Deskriptor, DeskriptorError};

impl Deskriptor {
    /// Checks that every selector key is one of the source's `coordinates`. An unknown key is an
    /// error that suggests the nearest allowed key (`lat` → `latitude`, `variables` →
    /// `variable`) and lists them all.
    pub fn check_keys(&self, coordinates: &[&str]) -> Result<(), DeskriptorError> {
        let Some(key) = self
            .selectors
            .keys()
            .find(|k| !coordinates.contains(&k.as_str()))
        else {
            return Ok(());
        };
        let allowed = FIXED_KEYS.iter().chain(coordinates).copied();
        let hint = match nearest_key(key, allowed) {
            Some(k) => format!("did you mean `{k}`? "),
            None => String::new(),
        };
        Err(DeskriptorError::new(
            self.line,
            key.as_str(),
            "",
            format!(
                "unknown key; {hint}allowed: {}, and the source's coordinates ({})",
                FIXED_KEYS.join(", "),
                coordinates.join(", ")
            ),
        ))
    }
}

/// The keys of a deskriptor that are not coordinates of the source.
pub const FIXED_KEYS: [&str; 4] = ["variable", "name", "resample", "points"];

/// The key of `allowed` that a misspelled `key` most likely meant, if any: one that starts
/// with it or that it starts with (`lat` → `latitude`, `levels` → `level`; at least two
/// letters, any case), else the most similar one (Jaro-Winkler at least 0.8).
pub fn nearest_key<'a>(key: &str, allowed: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given = key;
    let key = key.to_lowercase();
    allowed
        .into_iter()
        .filter_map(|a| {
            let lower = a.to_lowercase();
            let similarity = strsim::jaro_winkler(&key, &lower);
            let prefix = key.chars().count() >= 2
                && lower.chars().count() >= 2
                && (lower.starts_with(&key) || key.starts_with(&lower));
            // A prefix match outranks any mere similarity.
            let score = if prefix { 1.0 + similarity } else { similarity };
            (a != given && score >= 0.8).then_some((score, a))
        })
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deskriptor::tests::{err, PROTOTYPE};

    #[test]
    fn unknown_keys_suggest_the_nearest_allowed_key() {
        let coordinates = ["latitude", "level", "longitude", "time"];
        for (typo, meant) in [
            ("lat", "latitude"),
            ("lon", "longitude"),
            ("levels", "level"),
            ("variables", "variable"),
            ("names", "name"),
            ("Latitude", "latitude"),
            ("latitdue", "latitude"),
            ("times", "time"),
        ] {
            let line = format!(r#"{{"variable": "t", "{typo}": 1}}"#);
            let e = Deskriptor::parse(4, &line)
                .unwrap()
                .check_keys(&coordinates)
                .unwrap_err();
            assert_eq!(e.field, typo);
            assert!(
                e.message
                    .starts_with(&format!("unknown key; did you mean `{meant}`? allowed: ")),
                "{typo}: {e}"
            );
            assert!(e.message.contains("(latitude, level, longitude, time)"));
        }
        let d = Deskriptor::parse(4, r#"{"variable": "t", "height": 2}"#).unwrap();
        let e = d.check_keys(&coordinates).unwrap_err();
        assert!(
            e.message
                .starts_with("unknown key; allowed: variable, name"),
            "{e}"
        );
        assert!(Deskriptor::parse(4, PROTOTYPE)
            .unwrap()
            .check_keys(&coordinates)
            .is_ok());
        // Without `variable`, a key that looks like it is the error.
        let e = err(r#"{"variables": ["2m_temperature"], "time": "2023"}"#);
        assert_eq!(e.field, "variables");
        assert!(e.message.contains("did you mean `variable`?"), "{e}");
        let e = err(r#"{"level": 500, "time": "2023"}"#);
        assert_eq!(e.field, "variable");
        assert!(e.message.starts_with("missing"), "{e}");
        assert_eq!(
            nearest_key("l", coordinates),
            None,
            "one letter is no prefix"
        );
        assert_eq!(nearest_key("lo", coordinates), Some("longitude"));
    }
}
