//! [`ConfigError`]: one config problem, located by file, line, column and key,
//! with the form that was expected; plus [`Source`], which turns byte spans of
//! the TOML text into those locations and a caret snippet.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A configuration error. The CLI maps every one of them to exit code 64.
///
/// `Display` prints one line a technician can act on —
/// `linegate.toml:12:8: key device[2].baud: invalid type: string "x"; expected an
/// integer baud rate such as 9600` — followed, when the position is known, by
/// the offending source line and a caret under the bad part.
/// [`ConfigError::headline`] gives the single line alone (for logs).
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file (as given to `load`/`parse`).
    pub file: PathBuf,
    /// 1-based line; 0 when there is no position (the file could not be read).
    pub line: usize,
    /// 1-based column in characters; 0 when there is no position.
    pub column: usize,
    /// Dotted key path such as `device[2].baud` or `mqtt.keepalive`
    /// (array indices count from 0).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The expected form, e.g. `a duration such as "250ms" or "5s"`.
    pub expected: Option<String>,
    /// Snippet and I/O cause, boxed to keep `Result<_, ConfigError>` small.
    detail: Option<Box<Detail>>,
}

#[derive(Debug)]
struct Detail {
    /// Source line and caret, rendered.
    snippet: Option<String>,
    /// The I/O error when the config file itself could not be read.
    io: Option<std::io::Error>,
}

impl ConfigError {
    /// An error reading the config file itself: no line or column (the I/O
    /// error's text is in the message).
    pub(crate) fn io(file: &Path, err: std::io::Error) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            key: None,
            message: format!("cannot read config file: {err}"),
            expected: None,
            detail: Some(Box::new(Detail {
                snippet: None,
                io: Some(err),
            })),
        }
    }

    /// The one-line form, without the source snippet.
    pub fn headline(&self) -> String {
        let mut s = self.file.display().to_string();
        if self.line > 0 {
            s.push_str(&format!(":{}:{}", self.line, self.column));
        }
        s.push_str(": ");
        if let Some(key) = &self.key {
            s.push_str(&format!("key {key}: "));
        }
        s.push_str(&self.message);
        if let Some(expected) = &self.expected {
            s.push_str(&format!("; expected {expected}"));
        }
        s
    }

    /// The offending source line with a caret under the bad part, if known.
    pub fn snippet(&self) -> Option<&str> {
        self.detail.as_ref()?.snippet.as_deref()
    }

    /// The I/O error when the config file itself could not be read
    /// (`line` and `column` are 0 then).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.detail.as_ref()?.io.as_ref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        if let Some(snippet) = self.snippet() {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

/// Longest message kept: a message quoting a 10 MB value is cut here.
const MAX_MESSAGE_CHARS: usize = 300;
/// Longest excerpt of a source line shown under a headline…
const EXCERPT_CHARS: usize = 100;
/// …of which this many before the column of the error, at most.
const EXCERPT_BEFORE: usize = 40;

/// `message`, cut to [`MAX_MESSAGE_CHARS`] characters (saying so).
fn bounded(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => message,
        Some((cut, _)) => format!(
            "{}… (cut; {} characters in all)",
            &message[..cut],
            message.chars().count()
        ),
    }
}

/// The byte offset of char `n` of `text` (its length past the end).
fn byte_of_char(text: &str, n: usize) -> usize {
    text.char_indices().nth(n).map_or(text.len(), |(i, _)| i)
}

impl ConfigError {
    /// The config file is not UTF-8 text: located at its first invalid byte
    /// (`valid` bytes of `bytes` decode), with the line up to there.
    pub(crate) fn not_utf8(file: &Path, bytes: &[u8], valid: usize) -> Self {
        let text = std::str::from_utf8(&bytes[..valid.min(bytes.len())]).unwrap_or_default();
        let byte = bytes.get(valid).copied().unwrap_or_default();
        Source::new(file, text).error(
            valid..valid,
            None,
            format!("the file is not UTF-8 text: byte 0x{byte:02X} cannot start or continue a UTF-8 character here"),
            Some("a UTF-8 text file (convert it, e.g. with `iconv -f latin1 -t utf-8`)".to_owned()),
        )
    }
}

/// The config text and its file name: turns byte spans into [`ConfigError`]s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Source { file, text }
    }

    /// 1-based (line, column) of byte `offset`; column counts characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// Largest char boundary not after `offset`.
    fn clamp(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// The text under `span` (empty when out of range).
    pub fn slice(&self, span: &Range<usize>) -> &'a str {
        let start = self.clamp(span.start);
        let end = self.clamp(span.end.max(span.start));
        &self.text[start..end]
    }

    /// An error located at `span`.
    pub fn error(
        &self,
        span: Range<usize>,
        key: Option<String>,
        message: impl Into<String>,
        expected: Option<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message: bounded(message.into()),
            expected,
            detail: Some(Box::new(Detail {
                snippet: Some(self.snippet(&span)),
                io: None,
            })),
        }
    }

    /// `  12 | baud = "x"` / `     |        ^^^`: the source line and a caret
    /// under the span. A line longer than [`EXCERPT_CHARS`] is shown as an
    /// excerpt around the column, `…` marking what is left out.
    fn snippet(&self, span: &Range<usize>) -> String {
        let start = self.clamp(span.start);
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let (line, _) = self.line_col(start);
        // Chars of the line: before the span, in all.
        let col = self.text[line_start..start].chars().count();
        let total = line_text.chars().count();
        let (from, to) = if total <= EXCERPT_CHARS {
            (0, total)
        } else {
            let from = col
                .saturating_sub(EXCERPT_BEFORE)
                .min(total - EXCERPT_CHARS);
            (from, from + EXCERPT_CHARS)
        };
        let (from_b, to_b) = (byte_of_char(line_text, from), byte_of_char(line_text, to));
        let lead = if from > 0 { "…" } else { "" };
        let tail = if to < total { "…" } else { "" };
        // Keep tabs so the caret lines up under tab-indented text.
        let caret_at = (line_start + from_b).max(start.min(line_start + to_b));
        let pad: String = lead
            .chars()
            .map(|_| ' ')
            .chain(
                self.text[(line_start + from_b).min(caret_at)..caret_at]
                    .chars()
                    .map(|c| if c == '\t' { '\t' } else { ' ' }),
            )
            .collect();
        let end = self
            .clamp(span.end.max(start))
            .min(line_start + to_b.max(start - line_start));
        let width = self.text[start..end.max(start)].chars().count().max(1);
        let number = line.to_string();
        let gutter = " ".repeat(number.len());
        format!(
            "{number} | {lead}{}{tail}\n{gutter} | {pad}{}",
            &line_text[from_b..to_b],
            "^".repeat(width)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_chars() {
        let src = Source::new(Path::new("x.toml"), "a = 1\nbé = \"x\"\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(src.line_col(9), (2, 3));
        assert_eq!(src.line_col(1000), (3, 1));
    }

    #[test]
    fn display_has_location_key_expected_and_caret() {
        let text = "[device]\nbaud = \"x\"\n";
        let src = Source::new(Path::new("linegate.toml"), text);
        let err = src.error(
            16..19,
            Some("device[2].baud".into()),
            "invalid type: string \"x\"",
            Some("an integer baud rate such as 9600".into()),
        );
        assert_eq!(
            err.headline(),
            "linegate.toml:2:8: key device[2].baud: invalid type: string \"x\"; \
             expected an integer baud rate such as 9600"
        );
        assert_eq!(
            err.to_string(),
            format!("{}\n2 | baud = \"x\"\n  |        ^^^", err.headline())
        );
    }

    #[test]
    fn io_error_has_no_position() {
        let err = ConfigError::io(
            Path::new("/nope.toml"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!((err.line, err.column), (0, 0));
        assert!(
            err.to_string()
                .starts_with("/nope.toml: cannot read config file")
        );
    }
}
