//! A tar stream checked on its way to the tar reader: the metadata entries the reader keeps
//! in memory whole (PAX headers, GNU long names) may not be larger than [`MAX_METADATA`].
//! A few kilobytes of compressed input can otherwise announce a header of gigabytes and
//! exhaust the daemon's memory before a single file is written.

use std::io::{self, Read};

/// The most a PAX header or a GNU long name may hold.
pub const MAX_METADATA: u64 = 1 << 20;

const BLOCK: usize = 512;

/// Where the stream is.
enum State {
    /// Reading a header block (`filled` bytes of it so far).
    Header,
    /// Reading a PAX header's records (kept, to learn the size of the next entry).
    Pax { left: u64, then_skip: u64 },
    /// Reading GNU sparse extension blocks.
    SparseExt { then_skip: u64 },
    /// Passing `left` bytes of data and padding.
    Skip { left: u64 },
}

/// Passes a tar stream through, failing when a metadata entry is too large.
pub struct TarGuard<R> {
    inner: R,
    state: State,
    block: Box<[u8; BLOCK]>,
    filled: usize,
    pax: Vec<u8>,
    /// A size a PAX header gave the next entry.
    next_size: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    /// Guard `inner`, the uncompressed tar stream.
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            state: State::Header,
            block: Box::new([0; BLOCK]),
            filled: 0,
            pax: Vec::new(),
            next_size: None,
        }
    }

    fn padded(size: u64) -> u64 {
        size.div_ceil(BLOCK as u64) * BLOCK as u64
    }

    /// A header block is complete: what comes after it.
    fn header(&mut self) -> io::Result<State> {
        let b = &self.block;
        if b.iter().all(|&x| x == 0) {
            return Ok(State::Header);
        }
        let kind = b[156];
        let size = match self.next_size.take() {
            Some(size) if !matches!(kind, b'x' | b'g' | b'L' | b'K') => size,
            _ => parse_size(&b[124..136])?,
        };
        match kind {
            b'x' | b'g' | b'L' | b'K' if size > MAX_METADATA => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a tar metadata entry of {size} bytes (more than {MAX_METADATA}): refused"),
            )),
            b'x' => {
                self.pax.clear();
                Ok(State::Pax {
                    left: size,
                    then_skip: Self::padded(size) - size,
                })
            }
            b'S' if b[482] != 0 => Ok(State::SparseExt {
                then_skip: Self::padded(size),
            }),
            _ => Ok(State::Skip {
                left: Self::padded(size),
            }),
        }
    }

    /// Follow the structure through `data`, just read.
    fn scan(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                State::Skip { left } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Pax { left, then_skip } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    self.pax.extend_from_slice(&data[..n]);
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        let skip = *then_skip;
                        self.next_size = pax_size(&self.pax);
                        self.state = if skip == 0 {
                            State::Header
                        } else {
                            State::Skip { left: skip }
                        };
                    }
                }
                State::Header | State::SparseExt { .. } => {
                    let n = (BLOCK - self.filled).min(data.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    self.filled += n;
                    data = &data[n..];
                    if self.filled < BLOCK {
                        continue;
                    }
                    self.filled = 0;
                    self.state = match self.state {
                        State::SparseExt { then_skip } if self.block[504] != 0 => {
                            State::SparseExt { then_skip }
                        }
                        State::SparseExt { then_skip: 0 } => State::Header,
                        State::SparseExt { then_skip } => State::Skip { left: then_skip },
                        _ => match self.header()? {
                            State::Skip { left: 0 } => State::Header,
                            next => next,
                        },
                    };
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

/// A header's size field: octal digits, or base-256 when its first bit is set.
fn parse_size(field: &[u8]) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256).ok_or_else(|| bad("size"))? + u64::from(b);
        }
        return Ok(n);
    }
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| c.is_ascii_digit())
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(&text, 8).map_err(|_| bad("size"))
}

/// The `size` record of PAX header data, if any.
fn pax_size(data: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, kv)| kv))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "size")
        .filter_map(|(_, v)| v.trim().parse().ok())
        .next_back()
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid tar header {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(data: &[u8]) -> io::Result<u64> {
        // Small reads, so headers straddle them.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(97);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        io::copy(&mut TarGuard::new(Trickle(data)), &mut out)?;
        Ok(out.len() as u64)
    }

    #[test]
    fn ordinary_archives_pass_and_huge_metadata_does_not() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(700);
        b.append_data(&mut h, "a/".repeat(80) + "long-name.txt", &[7u8; 700][..])
            .unwrap();
        b.append_pax_extensions([("comment", &b"hello"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        b.append_data(&mut h, "b.txt", &b"abc"[..]).unwrap();
        let good = b.into_inner().unwrap();
        assert_eq!(through(&good).unwrap(), good.len() as u64);
        // The same reading by the tar crate sees both files.
        let mut names = Vec::new();
        for e in tar::Archive::new(TarGuard::new(&good[..]))
            .entries()
            .unwrap()
        {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names.len(), 2);

        // A PAX header announcing 8 GiB, with no data behind it.
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("pax").unwrap();
        h.set_size(8 << 30);
        h.set_cksum();
        let e = through(h.as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("metadata entry of 8589934592 bytes"),
            "{e}"
        );
    }
}
