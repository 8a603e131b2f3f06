//! Line-framed pipes: a buffer of bytes read so far gives up its complete
//! lines; an incomplete last line waits for the rest.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::pipe::{drain, set_nonblocking};

/// Splits the complete lines off the front of `buf`, without their `\n`.
pub fn take_lines(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let Some(last) = buf.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    let rest = buf.split_off(last + 1);
    let complete = std::mem::replace(buf, rest);
    complete[..last]
        .split(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Lines from the read end of a pipe, read without blocking.
pub struct LineReader {
    file: File,
    buf: Vec<u8>,
    eof: bool,
}

impl LineReader {
    /// Takes the read end and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> std::io::Result<LineReader> {
        set_nonblocking(&fd)?;
        Ok(LineReader {
            file: File::from(fd),
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Whether the writers are all gone (seen by an earlier `read_lines`).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Reads what is available; returns the complete lines (UTF-8, lossily),
    /// and at end of file the incomplete last one too. A read error other
    /// than "nothing more yet" counts as nothing more: the writer's exit is
    /// the caller's to notice.
    pub fn read_lines(&mut self) -> Vec<String> {
        if let Ok(true) = drain(&mut self.file, &mut self.buf) {
            self.eof = true;
        }
        let mut lines: Vec<String> = take_lines(&mut self.buf)
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        if self.eof && !self.buf.is_empty() {
            lines.push(String::from_utf8_lossy(&self.buf).into_owned());
            self.buf.clear();
        }
        lines
    }
}

impl AsFd for LineReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn complete_lines_leave_the_rest() {
        let mut buf = b"one\n\ntwo\nthr".to_vec();
        assert_eq!(
            take_lines(&mut buf),
            vec![b"one".to_vec(), Vec::new(), b"two".to_vec()]
        );
        assert_eq!(buf, b"thr");
        assert!(take_lines(&mut buf).is_empty());
        buf.extend_from_slice(b"ee\n");
        assert_eq!(take_lines(&mut buf), vec![b"three".to_vec()]);
        assert!(buf.is_empty());
    }

    #[test]
    fn reader_gives_the_last_line_at_end_of_file() {
        let (read, write) = super::super::pipe::cloexec_pipe().unwrap();
        let mut reader = LineReader::new(read).unwrap();
        let mut writer = File::from(write);
        assert!(reader.read_lines().is_empty());
        writer.write_all(b"a\nb").unwrap();
        assert_eq!(reader.read_lines(), vec!["a"]);
        assert!(!reader.is_eof());
        drop(writer);
        assert_eq!(reader.read_lines(), vec!["b"]);
        assert!(reader.is_eof());
    }
}
