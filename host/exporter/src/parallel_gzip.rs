//! gzip on every core, made the way pigz makes it: the input is cut into fixed blocks, each
//! block is deflated apart (with the 32 KiB before it as its dictionary, so the ratio stays
//! within a percent of one stream's) and ended on a byte boundary by a sync flush, and the
//! blocks, in order, are one deflate stream in one gzip member that every gzip reader takes.
//!
//! The bytes depend on the input and the level only, never on the number of threads, so a
//! layer compressed on a 2-core and on a 64-core machine has the same digest. Memory stays
//! bounded: at most two blocks per thread are in flight.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per block (pigz's default).
const BLOCK: usize = 128 << 10;
/// The window deflate can refer back to: what a block keeps of the one before it.
const WINDOW: usize = 32 << 10;

/// One block to deflate.
struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<Vec<u8>>);

/// The threads deflating blocks, started by the first full block.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize, level: Compression) -> Self {
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let (done_tx, done) = channel::<Done>();
        let threads = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                let done: Sender<Done> = done_tx.clone();
                std::thread::spawn(move || {
                    loop {
                        // The lock is held only to take the next job.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let out = deflate_block(level, &job.dict, &job.data, job.last);
                        if done.send((job.seq, out)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(jobs),
            done,
            threads,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A gzip writer that deflates on `threads` threads; [`ParallelGzip::finish`] writes the
/// trailer and gives the inner writer back.
pub struct ParallelGzip<W: Write> {
    sink: W,
    level: Compression,
    threads: usize,
    pool: Option<Pool>,
    /// Input gathered for the next block.
    block: Vec<u8>,
    /// The end of the previous block: the next one's dictionary.
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    /// Blocks sent, and the next one to write out.
    sent: u64,
    written: u64,
    /// Blocks deflated out of order, waiting for those before them.
    ready: BTreeMap<u64, Vec<u8>>,
}

impl<W: Write> ParallelGzip<W> {
    /// A writer on `threads` threads (0 or 1: deflate in the caller's thread).
    pub fn new(mut sink: W, level: Compression, threads: usize) -> io::Result<Self> {
        // No file name, no mtime: the bytes depend on the input only. The extra flags say
        // the level as gzip(1) does; the OS is "unknown", as Go's gzip writes it.
        let xfl = match level.level() {
            9.. => 2,
            1 => 4,
            _ => 0,
        };
        sink.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff])?;
        Ok(ParallelGzip {
            sink,
            level,
            threads,
            pool: None,
            block: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
            sent: 0,
            written: 0,
            ready: BTreeMap::new(),
        })
    }

    /// Deflate what is left, write the trailer (CRC-32 and size), and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_block(true)?;
        while self.written < self.sent {
            self.take_done(true)?;
        }
        self.pool = None;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE is the size modulo 2^32, as RFC 1952 says.
        trailer[4..].copy_from_slice(&(self.size as u32).to_le_bytes());
        self.sink.write_all(&trailer)?;
        self.sink.flush()?;
        Ok(self.sink)
    }

    /// Hand the gathered block to the threads, or deflate it here when there are none.
    fn send_block(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.dict);
        if !last {
            self.dict = data[data.len() - WINDOW.min(data.len())..].to_vec();
        }
        let seq = self.sent;
        self.sent += 1;
        if self.threads <= 1 || (last && self.pool.is_none()) {
            // One thread, or the whole input was one block: no thread is worth starting.
            let out = deflate_block(self.level, &dict, &data, last)?;
            self.ready.insert(seq, out);
            return self.write_ready();
        }
        if self.pool.is_none() {
            self.pool = Some(Pool::start(self.threads, self.level));
        }
        // Bound what is in flight: wait for a block to come back first. The first block
        // not yet written is always still in flight, so the wait ends.
        while self.sent - self.written > 2 * self.threads as u64 {
            self.take_done(true)?;
        }
        let jobs = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .ok_or_else(stopped)?;
        jobs.send(Job {
            seq,
            dict,
            data,
            last,
        })
        .map_err(|_| stopped())?;
        self.take_done(false)
    }

    /// Collect finished blocks (waiting for one if `wait`) and write out those in order.
    fn take_done(&mut self, wait: bool) -> io::Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        if wait {
            let (seq, out) = pool.done.recv().map_err(|_| stopped())?;
            self.ready.insert(seq, out?);
        }
        while let Ok((seq, out)) = pool.done.try_recv() {
            self.ready.insert(seq, out?);
        }
        self.write_ready()
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(out) = self.ready.remove(&self.written) {
            self.sink.write_all(&out)?;
            self.written += 1;
        }
        Ok(())
    }
}

fn stopped() -> io::Error {
    io::Error::other("a gzip compression thread stopped")
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == BLOCK {
            self.send_block(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are fixed; flushing early would change the bytes.
        Ok(())
    }
}

/// Deflate one block: raw deflate primed with `dict`, ended by a sync flush (an empty
/// stored block, so the next block starts on a byte boundary), or by the final block.
///
/// Each block gets a new deflate state: a reset one can carry over what it saw of an
/// earlier block, and the bytes would then depend on which thread took which block.
fn deflate_block(level: Compression, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(level, false);
    if !dict.is_empty() {
        deflate.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity() / 2 + 64);
        }
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = deflate.total_in() as usize == data.len();
        // Done when all input is in and deflate left room (it would fill the output if it
        // had more to say); the final block ends the stream.
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn gzip(data: &[u8], threads: usize, level: u32) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), Compression::new(level), threads).unwrap();
        // Odd write sizes, so blocks are cut across writes.
        for chunk in data.chunks(7919) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    /// Text with repeats across block boundaries, and random bytes.
    fn sample(len: usize) -> Vec<u8> {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(3) {
                data.extend_from_slice(&seed.to_le_bytes());
            } else {
                data.extend_from_slice(b"the same words, again and again; ");
            }
        }
        data.truncate(len);
        data
    }

    #[test]
    fn any_gzip_reader_gets_the_input_back() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 12345] {
            let data = sample(len);
            for level in [0, 1, 6, 9] {
                let gz = gzip(&data, 2, level);
                assert_eq!(gunzip(&gz), data, "{len} bytes, level {level}");
            }
        }
        // gzip(1) itself, which also checks the CRC and the size.
        let data = sample(3 * BLOCK + 99);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.gz");
        std::fs::write(&file, gzip(&data, 3, 6)).unwrap();
        let out = std::process::Command::new("gzip")
            .args(["-dc"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn the_bytes_do_not_depend_on_the_number_of_threads() {
        let data = sample(24 * BLOCK + 777);
        let one = gzip(&data, 1, 6);
        for threads in [2, 3, 8] {
            assert_eq!(gzip(&data, threads, 6), one, "{threads} threads");
        }
    }

    #[test]
    fn blocks_compress_about_as_well_as_one_stream() {
        let data = sample(16 * BLOCK);
        let ours = gzip(&data, 2, 6).len();
        let mut one = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        one.write_all(&data).unwrap();
        let theirs = one.finish().unwrap().len();
        assert!(
            ours as f64 <= theirs as f64 * 1.02,
            "{ours} bytes against one stream's {theirs}"
        );
    }
}
