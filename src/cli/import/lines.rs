//! Reading an import file line by line: each line decoded on its own, a byte order mark at the
//! start dropped.

use std::io::{BufRead, Read};
use std::path::Path;

/// The lines of an import file, one at a time: each decoded on its own (a line that is not
/// UTF-8 is reported as such, and the next one read as usual), with a UTF-8 byte order mark at
/// the start of the file dropped.
pub struct Lines<R> {
    reader: R,
    buffer: Vec<u8>,
    number: u64,
}

/// One line of an import file.
pub struct Line<'a> {
    /// Its number, from 1.
    pub number: u64,
    /// The bytes it took in the file, newline included.
    pub bytes: usize,
    /// Its bytes without the newline.
    pub raw: &'a [u8],
}

impl<'a> Line<'a> {
    /// Its text without the newline, or why it has none.
    pub fn text(&self) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.raw).map_err(|_| "the line is not valid UTF-8")
    }

    /// Whether it holds nothing but white space.
    pub fn is_blank(&self) -> bool {
        self.raw.iter().all(u8::is_ascii_whitespace)
    }
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Lines<R> {
        Lines {
            reader,
            buffer: Vec::new(),
            number: 0,
        }
    }

    /// The next line, or `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.buffer.clear();
        let bytes = self.reader.read_until(b'\n', &mut self.buffer)?;
        if bytes == 0 {
            return Ok(None);
        }
        self.number += 1;
        let mut line = self.buffer.as_slice();
        if self.number == 1 {
            line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some(Line {
            number: self.number,
            bytes,
            raw: line,
        }))
    }
}

/// A file to import, or standard input for `-`.
pub fn open_input(path: &Path) -> Result<Box<dyn Read>, String> {
    if path.to_str() == Some("-") {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Box::new(file))
}
