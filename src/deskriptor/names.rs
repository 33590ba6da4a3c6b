//! Name rules: what a file name (with the directories it places the file in) may hold, and
//! how a name is shown in an error.
//!
//! Input: a name, given in a deskriptor or derived by a template. Output: `Ok`, or an error
//! naming the line and the escaped name. Invariant: an accepted name is a relative path of
//! bounded length and depth, with no `.`, `..`, NUL, control or bidirectional formatting
//! character, so a listing shows the name the file has.

use super::DeskriptorError;

/// Longest file name (in bytes) that Linux file systems accept, `.nc` included; also the
/// longest directory name in a path.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest path of a file under the mount point (directories, `/` and the file name).
pub const MAX_PATH_BYTES: usize = 1024;
/// Most directories a file may be placed in.
pub const MAX_DEPTH: usize = 16;

/// Whether `c` may not appear in a file name: a control character (Unicode category Cc:
/// U+0000..U+001F, U+007F..U+009F, e.g. newline and tab), a line or paragraph separator
/// (U+2028, U+2029), or a bidirectional formatting character (U+061C, U+200E, U+200F,
/// U+202A..U+202E, U+2066..U+2069), which would make a listing show another name than the
/// file has.
pub fn is_forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` (unquoted) with `"`, `\\` and every character of [`is_forbidden_in_name`] escaped (`\n`,
/// `\t`, `\u{202E}`), so an error message shows what is there and cannot itself be reordered or
/// broken across lines.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_forbidden_in_name(c) => out.push_str(&format!("\\u{{{:04X}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Checks a file name (with its `.nc`), which may place the file in directories
/// (`2m_temperature/2023/01/zurich.nc`): segments separated by single `/`, none empty, `.` or
/// `..`, no `..` anywhere, no NUL, no control or bidirectional formatting character
/// ([`is_forbidden_in_name`]), each segment at most [`MAX_FILE_NAME_BYTES`] bytes, at most
/// [`MAX_DEPTH`] directories and [`MAX_PATH_BYTES`] bytes in all.
pub fn check_file_name(line: usize, file_name: &str) -> Result<(), DeskriptorError> {
    let bad = |msg: &str| {
        Err(DeskriptorError::new(
            line,
            "name",
            format!("\"{}\"", escape(file_name)),
            msg.to_string(),
        ))
    };
    // Printable ASCII (most names) holds no forbidden character: the search is skipped.
    let printable = file_name.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !printable && file_name.contains('\0') {
        return bad("a name may not contain NUL");
    }
    if let Some((i, c)) = (!printable)
        .then_some(file_name)
        .into_iter()
        .flat_map(str::chars)
        .enumerate()
        .find(|&(_, c)| is_forbidden_in_name(c))
    {
        return bad(&format!(
            "a name may not contain control characters (such as newline or tab, U+0000..U+001F, \
             U+007F..U+009F), line separators (U+2028, U+2029) or bidirectional formatting \
             characters (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069); character {} \
             is U+{:04X}. Allowed: any other printable characters, `/` between directories",
            i + 1,
            c as u32
        ));
    }
    if file_name.contains("..") {
        return bad("a name may not contain `..`");
    }
    let segments: Vec<&str> = file_name.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == ".") {
        return bad(
            "a `/` in a name separates directories: the name may not start or end with `/`, \
             hold `//`, or have a `.` segment (as in `a/./b`)",
        );
    }
    if segments.len() > MAX_DEPTH + 1 {
        return bad(&format!(
            "the name places the file in {} directories; at most {MAX_DEPTH} are allowed",
            segments.len() - 1
        ));
    }
    if let Some(long) = segments.iter().find(|s| s.len() > MAX_FILE_NAME_BYTES) {
        let what = if std::ptr::eq(*long, *segments.last().expect("not empty")) {
            "the file name `<name>.nc`"
        } else {
            "a directory name"
        };
        return bad(&format!(
            "{what} is {} bytes; at most {MAX_FILE_NAME_BYTES} are allowed",
            long.len()
        ));
    }
    if file_name.len() > MAX_PATH_BYTES {
        return bad(&format!(
            "the path is {} bytes; at most {MAX_PATH_BYTES} are allowed",
            file_name.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deskriptor::tests::err;
    use crate::deskriptor::Deskriptor;

    #[test]
    fn names_are_checked() {
        for (bad, why) in [
            (r#""/a""#, "`/`"),
            (r#""a//b""#, "`//`"),
            (r#""a/""#, "`/`"),
            (r#""a/./b""#, "`.` segment"),
            (r#""./a""#, "`.` segment"),
            (r#""a/../b""#, "`..`"),
            (r#""a/\tb""#, "control"),
            (r#""..""#, "`..`"),
            (r#""a..b""#, "`..`"),
            (r#""a\u0000b""#, "NUL"),
            (r#""""#, "empty"),
            (r#"3"#, "string"),
        ] {
            let e = err(&format!(r#"{{"variable": "t", "name": {bad}}}"#));
            assert_eq!(e.field, "name");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
        let long = "x".repeat(253);
        let e = err(&format!(r#"{{"variable": "t", "name": "{long}"}}"#));
        assert!(e.message.contains("256 bytes"), "{e}");
        let ok = "x".repeat(252);
        assert!(Deskriptor::parse(1, &format!(r#"{{"variable": "t", "name": "{ok}"}}"#)).is_ok());
        // Directories: each segment and the whole path are bounded.
        let ok = r#"{"variable": "t", "name": "2m_temperature/2023/01/zurich-0001"}"#;
        assert!(Deskriptor::parse(1, ok).is_ok());
        let dir = "d".repeat(256);
        let e = err(&format!(r#"{{"variable": "t", "name": "{dir}/a"}}"#));
        assert!(e.message.contains("a directory name is 256 bytes"), "{e}");
        let deep = vec!["d"; 17].join("/");
        let e = err(&format!(r#"{{"variable": "t", "name": "{deep}/a"}}"#));
        assert!(e.message.contains("17 directories"), "{e}");
        let long = vec!["d".repeat(200); 6].join("/");
        let e = err(&format!(r#"{{"variable": "t", "name": "{long}"}}"#));
        assert!(e.message.contains("the path is"), "{e}");
    }

    #[test]
    fn names_with_control_or_bidi_characters_are_refused() {
        for (bad, shown) in [
            (r#""a\nb""#, r#""a\nb.nc""#),
            (r#""a\tb""#, r#""a\tb.nc""#),
            (r#""a\u0007b""#, r#""a\u{0007}b.nc""#),
            (r#""a\u007fb""#, r#""a\u{007F}b.nc""#),
            (r#""a\u0085b""#, r#""a\u{0085}b.nc""#),
            (r#""a\u202Egnp""#, r#""a\u{202E}gnp.nc""#),
            (r#""a\u202Ab""#, r#""a\u{202A}b.nc""#),
            (r#""a\u2066b""#, r#""a\u{2066}b.nc""#),
            (r#""a\u2069b""#, r#""a\u{2069}b.nc""#),
            (r#""a\u200Eb""#, r#""a\u{200E}b.nc""#),
            (r#""a\u200Fb""#, r#""a\u{200F}b.nc""#),
            (r#""a\u061Cb""#, r#""a\u{061C}b.nc""#),
            (r#""a\u2028b""#, r#""a\u{2028}b.nc""#),
        ] {
            let e = err(&format!(r#"{{"variable": "t", "name": {bad}}}"#));
            assert_eq!(e.field, "name", "{bad}");
            assert_eq!(e.value, shown, "{bad}");
            assert!(e.message.contains("character 2 is U+"), "{bad}: {e}");
            assert!(e.message.contains("Allowed: any other printable"), "{e}");
            assert!(!e.to_string().contains(['\n', '\t', '\u{202E}']), "{e}");
        }
        for ok in ["Zürich 2023", "東京", "a-b_c (1)", "a\u{200D}b", "ملف"] {
            let line = serde_json::json!({"variable": "t", "name": ok}).to_string();
            assert!(Deskriptor::parse(1, &line).is_ok(), "{ok}");
        }
        // Derived names go through the same check.
        let e = check_file_name(3, "t\u{202E}_20230101T11.nc").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "name"));
    }
}
