//! The deskriptors file as lines: read once as bytes, split as `str::lines` does, each line
//! then parsed on its own.
//!
//! Input: a path or the file's bytes. Output: numbered lines, then the good deskriptors and one
//! error per bad line. Invariant: a bad line (malformed, or not valid UTF-8) spoils only itself;
//! blank lines are skipped but still counted.

use std::path::Path;

use super::names::escape;
use super::{Deskriptor, DeskriptorError};

/// One line of a deskriptors file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLine {
    /// 1-based line number.
    pub number: usize,
    /// The line without its `\n` (or `\r\n`); an error when it is not valid UTF-8.
    pub text: Result<String, DeskriptorError>,
}

/// Reads a deskriptors file. This is the one place the file is read (the catalog, `list`,
/// `validate`, `get --line`, the mount and its reload, the dashboard), as bytes, so that a bad
/// byte spoils only its own line (see [`split_lines`]).
pub fn read_lines(path: &Path) -> std::io::Result<Vec<FileLine>> {
    Ok(split_lines(&std::fs::read(path)?))
}

/// Splits the bytes of a deskriptors file into lines as [`str::lines`] does (at `\n`, an
/// `\r` before it dropped, no line after a final `\n`). A line that is not valid UTF-8 is an
/// error naming its line and the first bad byte; the other lines are unaffected.
pub fn split_lines(bytes: &[u8]) -> Vec<FileLine> {
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| file_line(i + 1, piece))
        .collect()
}

/// Line `number` of a deskriptors file from its bytes (without the `\n`; an `\r` before it is
/// dropped); an error naming the first bad byte when it is not valid UTF-8.
pub fn file_line(number: usize, bytes: &[u8]) -> FileLine {
    let piece = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let text = match std::str::from_utf8(piece) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(not_utf8(number, piece, e.valid_up_to())),
    };
    FileLine { number, text }
}

/// The error of a line whose byte at `at` (0-based) starts no valid UTF-8 character. The value
/// is the text around it, bad bytes written `\xFF`.
fn not_utf8(line: usize, bytes: &[u8], at: usize) -> DeskriptorError {
    let from = at.saturating_sub(40);
    let to = (at + 40).min(bytes.len());
    let mut value = String::from(if from > 0 { "\"..." } else { "\"" });
    for chunk in bytes[from..to].utf8_chunks() {
        value.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            value.push_str(&format!("\\x{b:02X}"));
        }
    }
    value.push_str(if to < bytes.len() { "...\"" } else { "\"" });
    DeskriptorError::new(
        line,
        "",
        value,
        format!(
            "not valid UTF-8 at byte {} of the line (0x{:02X}); a deskriptors file must be UTF-8 \
             text (this line is skipped, the others are read)",
            at + 1,
            bytes[at]
        ),
    )
}

/// Reads a deskriptors file: every non-blank line is one deskriptor. Returns the good ones and
/// one error per bad line; blank lines are skipped, an empty file gives no deskriptors.
pub fn parse_file(path: &Path) -> std::io::Result<(Vec<Deskriptor>, Vec<DeskriptorError>)> {
    Ok(parse_file_lines(read_lines(path)?))
}

/// Parses the text of a deskriptors file (see [`parse_file`]).
pub fn parse_lines(text: &str) -> (Vec<Deskriptor>, Vec<DeskriptorError>) {
    parse_file_lines(split_lines(text.as_bytes()))
}

/// Parses lines read by [`read_lines`] (see [`parse_file`]).
pub fn parse_file_lines(lines: Vec<FileLine>) -> (Vec<Deskriptor>, Vec<DeskriptorError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for FileLine { number, text } in lines {
        let parsed = match text {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => Deskriptor::parse(number, &t),
            Err(e) => Err(e),
        };
        match parsed {
            Ok(d) => good.push(d),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deskriptor::tests::PROTOTYPE;

    #[test]
    fn parse_lines_skips_blank_lines_and_counts_lines() {
        let (good, bad) = parse_lines(&format!("{PROTOTYPE}\n\n  \nnot json\n{PROTOTYPE}\n"));
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].line, 5);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 4);
        let (good, bad) = parse_lines("");
        assert!(good.is_empty() && bad.is_empty());
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_bad_line() {
        let mut bytes = format!("{PROTOTYPE}\r\n").into_bytes();
        bytes.extend_from_slice(b"{\"variable\": \"t\", \"name\": \"caf\xE9\"}\n\n");
        bytes.extend_from_slice(format!("{PROTOTYPE}\n").as_bytes());
        let lines = split_lines(&bytes);
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0].text.as_deref(),
            Ok(PROTOTYPE),
            "\\r\\n is a line end"
        );
        let e = lines[1].text.clone().unwrap_err();
        assert_eq!((lines[1].number, e.line), (2, 2));
        assert!(e.message.contains("not valid UTF-8 at byte 31 "), "{e}");
        assert!(e.message.contains("0xE9"), "{e}");
        assert!(e.value.contains(r#"caf\xE9\""#), "{e}");
        assert!(e.to_string().starts_with("line 2, value "), "{e}");
        let (good, bad) = parse_file_lines(lines);
        assert_eq!(good.iter().map(|d| d.line).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(bad, vec![e]);
        // The same through the file.
        let path = std::env::temp_dir().join(format!("sodeda-utf8-{}.jsonl", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let (good, bad) = parse_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((good.len(), bad.len(), bad[0].line), (2, 1, 2));
        // Lines as `str::lines` counts them.
        for text in ["", "a", "a\n", "a\n\n", "\n\na\r\nb", "a\rb\n"] {
            let ours: Vec<String> = split_lines(text.as_bytes())
                .into_iter()
                .map(|l| l.text.unwrap())
                .collect();
            assert_eq!(ours, text.lines().collect::<Vec<_>>(), "{text:?}");
        }
    }
}
