//! A bounded line reader: hands out lines up to a limit, and reads an
//! over-long line through to its `\n` without ever buffering it whole.

use std::io::{self, ErrorKind, Read};

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line, without its `\n`. The last line of a stream may have had no
    /// `\n`.
    Complete(&'a [u8]),
    /// A line longer than the limit, now skipped.
    TooLong,
    /// The peer closed its side and every line has been handed out.
    Eof,
}

/// Reads lines from `R` into a buffer that starts small (idle connections
/// are cheap), grows under pipelined load (while reads fill it) up to a
/// fixed bound, and shrinks back when everything read has been handled.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes in `start..scanned` are known to hold no `\n`.
    scanned: usize,
    max_line: usize,
    max_buf: usize,
    skipping: bool,
    eof: bool,
    /// The last read filled all the room it was given: the peer is
    /// sending faster than lines are handed out (pipelining).
    filled: bool,
}

const INITIAL_BUFFER: usize = 1024;
const MAX_BUFFER: usize = 64 * 1024;

impl<R: Read> LineReader<R> {
    /// A reader that accepts lines of at most `max_line` bytes (`\n` not
    /// counted).
    pub fn new(inner: R, max_line: usize) -> LineReader<R> {
        LineReader {
            inner,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            scanned: 0,
            max_line,
            max_buf: MAX_BUFFER.max(max_line.saturating_add(1)),
            skipping: false,
            eof: false,
            filled: false,
        }
    }

    /// True when a whole line (or the end of the stream) is buffered, so
    /// [`LineReader::next_line`] can return without reading the stream.
    pub fn has_line(&self) -> bool {
        self.eof || self.buf[self.scanned.max(self.start)..self.end].contains(&b'\n')
    }

    /// The underlying reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next line. `before_block` runs each time the buffer holds no
    /// complete line and the reader is about to block on the stream: the
    /// moment to flush replies, so a pipelined batch costs one write. Its
    /// argument says whether part of a line is buffered.
    ///
    /// # Errors
    /// Errors of the stream and of `before_block`, including read timeouts.
    pub fn next_line(
        &mut self,
        mut before_block: impl FnMut(bool) -> io::Result<()>,
    ) -> io::Result<Line<'_>> {
        loop {
            if let Some(pos) = find_newline(&self.buf[self.scanned..self.end]) {
                let line_start = self.start;
                let line_end = self.scanned + pos;
                self.start = line_end + 1;
                self.scanned = self.start;
                if std::mem::take(&mut self.skipping) || line_end - line_start > self.max_line {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(&self.buf[line_start..line_end]));
            }
            self.scanned = self.end;
            if self.eof {
                if std::mem::take(&mut self.skipping) {
                    self.start = self.end;
                    return Ok(Line::TooLong);
                }
                if self.start == self.end {
                    return Ok(Line::Eof);
                }
                let (line_start, line_end) = (self.start, self.end);
                self.start = self.end;
                if line_end - line_start > self.max_line {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(&self.buf[line_start..line_end]));
            }
            if self.skipping || self.end - self.start > self.max_line {
                // Drop what we have of the over-long line; keep skipping
                // until its `\n`.
                self.skipping = true;
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            self.scanned = self.end;
            // Grow while reads fill the buffer (or one line does), so a
            // pipelined batch costs few reads; back to the small buffer
            // once the peer's input is all handled.
            if (self.filled || self.end == self.buf.len()) && self.buf.len() < self.max_buf {
                let len = (self.buf.len() * 2).min(self.max_buf);
                self.buf.resize(len, 0);
            } else if !self.filled && self.end == 0 && self.buf.len() > INITIAL_BUFFER {
                self.buf = vec![0; INITIAL_BUFFER];
            }
            before_block(self.skipping || self.end > 0)?;
            loop {
                let room = self.buf.len() - self.end;
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.end += n;
                        self.filled = n == room;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                break;
            }
        }
    }
}

/// The position of the first `\n` in `bytes`, eight bytes at a time (a
/// pipelined batch holds thousands of short lines).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("chunks of eight bytes"));
        // A byte of `x` is zero where the word holds a `\n`; the lowest
        // flagged byte is exact (a false flag can only follow a true one).
        let x = word ^ NEWLINES;
        let flagged = x.wrapping_sub(ONES) & !x & HIGHS;
        if flagged != 0 {
            return Some(offset + (flagged.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let rest = words.remainder().iter().position(|&b| b == b'\n');
    rest.map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its data a few bytes per read, to split lines anywhere.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], chunk: usize, max: usize) -> Vec<Option<Vec<u8>>> {
        let mut reader = LineReader::new(Trickle(data, chunk), max);
        let mut out = Vec::new();
        loop {
            match reader.next_line(|_| Ok(())).expect("no I/O error") {
                Line::Complete(l) => out.push(Some(l.to_vec())),
                Line::TooLong => out.push(None),
                Line::Eof => return out,
            }
        }
    }

    #[test]
    fn splits_anywhere_the_same() {
        let mut data = Vec::new();
        for i in 0..500 {
            data.extend_from_slice(format!("g lock{i}\n").as_bytes());
        }
        data.extend_from_slice(&vec![b'x'; 5000]);
        data.extend_from_slice(b"\nlast");
        let expected = lines(&data, usize::MAX, 4096);
        assert_eq!(expected.len(), 502);
        assert_eq!(expected[500], None);
        assert_eq!(expected[501].as_deref(), Some(&b"last"[..]));
        for chunk in [1, 2, 3, 7, 100, 4097] {
            assert_eq!(lines(&data, chunk, 4096), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn limit_is_exact() {
        let ok = vec![b'a'; 10];
        let mut data = ok.clone();
        data.extend_from_slice(b"\n");
        data.extend_from_slice(&[b'b'; 11]);
        data.extend_from_slice(b"\nc");
        assert_eq!(
            lines(&data, 3, 10),
            vec![Some(ok), None, Some(b"c".to_vec())]
        );
        assert_eq!(lines(&[b'z'; 30], 4, 10), vec![None]);
    }

    #[test]
    fn huge_line_is_not_buffered_whole() {
        let mut data = vec![b'y'; 1 << 20];
        data.extend_from_slice(b"\nok\n");
        let mut reader = LineReader::new(Trickle(&data, 1 << 16), 4096);
        assert_eq!(reader.next_line(|_| Ok(())).expect("read"), Line::TooLong);
        assert!(reader.buf.len() <= MAX_BUFFER);
        assert_eq!(
            reader.next_line(|_| Ok(())).expect("read"),
            Line::Complete(b"ok")
        );
    }

    #[test]
    fn newlines_are_found_where_a_byte_scan_finds_them() {
        let mut seed: u64 = 0x853c_49e6_748f_ea9b;
        let alphabet = [
            b'\n', b'\x0b', b'\x09', b'\x8a', b'\0', b'\xff', b'\x01', b'a',
        ];
        for _ in 0..5000 {
            let mut bytes = Vec::new();
            for _ in 0..(seed % 40) {
                // Mostly no newline, so that some words hold none.
                let i =
                    (crate::protocol::xorshift(&mut seed) % (alphabet.len() as u64 * 4)) as usize;
                bytes.push(alphabet.get(i).copied().unwrap_or(b'x'));
            }
            let expected = bytes.iter().position(|&b| b == b'\n');
            assert_eq!(
                find_newline(&bytes),
                expected,
                "{:?}",
                bytes.escape_ascii().to_string()
            );
        }
    }
}
