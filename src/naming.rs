//! Where unnamed files go: a `--layout` template such as `{variable}/{year}/{month}` places the
//! file of each deskriptor without `name` in directories made from its selection, under its
//! default name (see [`crate::plan::default_file_name`]). Deskriptors with a `name` place
//! themselves (`"name": "t2m/2023/zurich"`).
//!
//! Fields: `{variable}` (the variables joined by `+`, as in default names), `{year}`,
//! `{month}`, `{day}`, `{hour}` of the file's first selected hour (`all` when the source has
//! no time axis). Invariant: a template is checked when it is parsed (known fields, no empty,
//! `.` or `..` segment, no character a name may not hold), and every path it makes is checked
//! again like any name ([`crate::deskriptor::check_file_name`]).

use crate::deskriptor::{escape, is_forbidden_in_name};

/// The fields a template may use.
const FIELDS: &str = "{variable}, {year}, {month}, {day}, {hour}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Variable,
    Year,
    Month,
    Day,
    Hour,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A parsed `--layout` template: directory segments, each text and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameLayout {
    segments: Vec<Vec<Piece>>,
}

impl NameLayout {
    /// Parses `template`; the error names what is wrong and what is allowed.
    pub fn parse(template: &str) -> Result<Self, String> {
        let fail = |why: String| {
            Err(format!(
                "--layout \"{}\": {why}; a layout is directories separated by `/`, made of text \
                 and the fields {FIELDS}, for example {{variable}}/{{year}}/{{month}}",
                escape(template)
            ))
        };
        if template.trim().is_empty() {
            return fail("it is empty".into());
        }
        if let Some(c) = template
            .chars()
            .find(|&c| is_forbidden_in_name(c) || c == '\0')
        {
            return fail(format!(
                "it holds U+{:04X}, a character no name may hold",
                c as u32
            ));
        }
        if template.contains("..") {
            return fail("it holds `..`".into());
        }
        let mut segments = Vec::new();
        for text in template.split('/') {
            if text.is_empty() || text == "." {
                return fail(
                    "a directory is empty or `.` (a `/` at the start or end, `//`)".into(),
                );
            }
            let mut pieces = Vec::new();
            let mut rest = text;
            while let Some(open) = rest.find('{') {
                if open > 0 {
                    pieces.push(Piece::Text(rest[..open].to_string()));
                }
                let Some(close) = rest[open..].find('}') else {
                    return fail(format!("`{}` has a `{{` without `}}`", escape(text)));
                };
                let field = match &rest[open + 1..open + close] {
                    "variable" => Field::Variable,
                    "year" => Field::Year,
                    "month" => Field::Month,
                    "day" => Field::Day,
                    "hour" => Field::Hour,
                    other => return fail(format!("`{{{}}}` is not a field", escape(other))),
                };
                pieces.push(Piece::Field(field));
                rest = &rest[open + close + 1..];
            }
            if rest.contains('}') {
                return fail(format!("`{}` has a `}}` without `{{`", escape(text)));
            }
            if !rest.is_empty() {
                pieces.push(Piece::Text(rest.to_string()));
            }
            segments.push(pieces);
        }
        Ok(Self { segments })
    }

    /// The directories (without a trailing `/`) of a file of `variables` whose first hour is
    /// `first` (`YYYYMMDDHH`; `None` without a time axis).
    pub fn directories(&self, variables: &str, first: Option<&str>) -> String {
        let part = |range: std::ops::Range<usize>| first.map_or("all", |t| &t[range]);
        let mut out = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            for piece in segment {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Field(Field::Variable) => out.push_str(variables),
                    Piece::Field(Field::Year) => out.push_str(part(0..4)),
                    Piece::Field(Field::Month) => out.push_str(part(4..6)),
                    Piece::Field(Field::Day) => out.push_str(part(6..8)),
                    Piece::Field(Field::Hour) => out.push_str(part(8..10)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_makes_directories_from_the_selection() {
        let l = NameLayout::parse("{variable}/{year}/{month}").unwrap();
        assert_eq!(
            l.directories("2m_temperature", Some("2023010211")),
            "2m_temperature/2023/01"
        );
        let l = NameLayout::parse("era5/y{year}-m{month}/d{day}h{hour}").unwrap();
        assert_eq!(
            l.directories("t+u", Some("2023010211")),
            "era5/y2023-m01/d02h11"
        );
        assert_eq!(l.directories("t", None), "era5/yall-mall/dallhall");
    }

    #[test]
    fn bad_layouts_say_what_is_wrong_and_what_is_allowed() {
        for (bad, why) in [
            ("", "empty"),
            ("{variable}//{year}", "empty or `.`"),
            ("/{year}", "empty or `.`"),
            ("{year}/", "empty or `.`"),
            ("./{year}", "empty or `.`"),
            ("{year}/../x", "`..`"),
            ("{decade}", "`{decade}` is not a field"),
            ("{year", "without `}`"),
            ("year}", "without `{`"),
            ("a\tb", "U+0009"),
        ] {
            let e = NameLayout::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(
                e.contains("{variable}, {year}, {month}, {day}, {hour}"),
                "{e}"
            );
        }
    }
}
