//! Getting rendered lines to their files without a shard ever touching a disk: shards fill
//! per-sink buffers (`ShardBuffers`) and hand full ones to one writer thread over a bounded
//! channel, dropping (and counting) when the writer is behind rather than waiting for it.

use crate::config::AccessLog;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A shard hands a sink's buffer to the writer once it holds this much.
pub const FLUSH_AT: usize = 32 * 1024;

/// Batches in flight between all shards and the writer. At up to ~`FLUSH_AT` each this bounds the
/// memory a stalled disk can pin; past it, lines are dropped and counted.
pub const DEFAULT_QUEUE: usize = 256;

/// Spare buffers a shard keeps; more come back only when the writer fell behind and caught up.
const SPARES: usize = 4;

/// A buffer that grew past this (one enormous line) is freed rather than recycled.
const KEEP_CAPACITY: usize = 4 * FLUSH_AT;

/// Which sink a line goes to; the same file path always gets the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkId(u32);

impl SinkId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    File(PathBuf),
    Stdout,
    Stderr,
}

/// Counters an admin page can read at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Lines a shard dropped because the writer's queue was full (or the writer was gone).
    pub dropped_lines: u64,
    pub dropped_bytes: u64,
    /// Lines that reached the writer but could not be written (sink failed to open, write error).
    pub failed_lines: u64,
    pub failed_bytes: u64,
    pub written_lines: u64,
    pub written_bytes: u64,
}

#[derive(Default)]
struct Counters {
    dropped_lines: AtomicU64,
    dropped_bytes: AtomicU64,
    failed_lines: AtomicU64,
    failed_bytes: AtomicU64,
    written_lines: AtomicU64,
    written_bytes: AtomicU64,
}

enum Msg {
    Open(SinkId, Target),
    Batch(Batch),
    Reopen,
    /// Answered once every message sent before it has been handled.
    Sync(mpsc::Sender<()>),
}

struct Batch {
    sink: SinkId,
    buf: Vec<u8>,
    lines: u64,
    /// Where the emptied buffer goes back to (the sending shard).
    ret: SyncSender<Vec<u8>>,
}

/// The handle to the access-log writer thread. Cheap to clone; the thread ends when the last
/// `Writer` and `ShardBuffers` are gone, after writing everything already handed to it.
#[derive(Clone)]
pub struct Writer {
    shared: Arc<Shared>,
}

struct Shared {
    tx: SyncSender<Msg>,
    /// Index = SinkId. Only `open` touches it, from the control side, never a shard.
    targets: Mutex<Vec<Target>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Spawns the writer thread with the default queue.
    pub fn start() -> Writer {
        Writer::with_queue(DEFAULT_QUEUE)
    }

    /// Spawns the writer thread; `queue` batches may wait for it before shards start dropping.
    pub fn with_queue(queue: usize) -> Writer {
        Writer::spawn(queue, None)
    }

    fn spawn(queue: usize, gate: Option<Receiver<()>>) -> Writer {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            run(rx, &thread_counters);
        });
        if let Err(e) = spawned {
            // Without the thread every batch finds the channel disconnected and is counted as
            // dropped: the proxy keeps serving, only the log is lost.
            log::error!("cannot start the access log writer thread: {e}; access logs are dropped");
        }
        Writer { shared: Arc::new(Shared { tx, targets: Mutex::new(Vec::new()), counters }) }
    }

    /// The sink for one configured access log, opened (append, created if missing) by the writer
    /// thread. The same path gives the same id; `/dev/stdout` and `/dev/stderr` are the process's
    /// own streams. An open error is logged once and that sink's lines are dropped (counted).
    pub fn open(&self, sink: &AccessLog) -> SinkId {
        let target = match sink {
            AccessLog::File { path, .. } if path == "/dev/stdout" => Target::Stdout,
            AccessLog::File { path, .. } if path == "/dev/stderr" => Target::Stderr,
            AccessLog::File { path, .. } => Target::File(PathBuf::from(path)),
            AccessLog::Stdout { .. } => Target::Stdout,
            AccessLog::Stderr { .. } => Target::Stderr,
        };
        // A panic elsewhere while holding the lock leaves the list intact (pushes are atomic
        // from our point of view), so a poisoned lock is still usable.
        let mut targets = self.shared.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = targets.iter().position(|t| *t == target) {
            return SinkId(i as u32);
        }
        let id = SinkId(u32::try_from(targets.len()).unwrap_or(u32::MAX));
        targets.push(target.clone());
        // Blocking send: this is config time, and the Open must not be lost or overtaken by a
        // batch for this id (which can only be sent after we return).
        if self.shared.tx.send(Msg::Open(id, target)).is_err() {
            log::error!("the access log writer thread is gone; access logs are dropped");
        }
        id
    }

    /// Reopens every file sink (log rotation: call after the file was moved away). Lines already
    /// queued go to the old file; later ones to the new. Waits only for room in the queue.
    pub fn reopen(&self) {
        let _ = self.shared.tx.send(Msg::Reopen);
    }

    /// Waits until everything sent before this call is written, or `timeout` passes; true when
    /// written. For shutdown (after the shards' final `flush`) and tests.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.shared.tx.send(Msg::Sync(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.shared.counters;
        WriterStats {
            dropped_lines: c.dropped_lines.load(Ordering::Relaxed),
            dropped_bytes: c.dropped_bytes.load(Ordering::Relaxed),
            failed_lines: c.failed_lines.load(Ordering::Relaxed),
            failed_bytes: c.failed_bytes.load(Ordering::Relaxed),
            written_lines: c.written_lines.load(Ordering::Relaxed),
            written_bytes: c.written_bytes.load(Ordering::Relaxed),
        }
    }

    pub fn dropped_lines(&self) -> u64 {
        self.shared.counters.dropped_lines.load(Ordering::Relaxed)
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.shared.counters.dropped_bytes.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("stats", &self.stats()).finish()
    }
}

struct Sink {
    target: Target,
    file: Option<File>,
    /// An error was logged and nothing succeeded since: don't log every batch.
    failing: bool,
}

impl Sink {
    fn open(target: Target) -> Sink {
        let mut sink = Sink { target, file: None, failing: false };
        sink.reopen();
        sink
    }

    fn reopen(&mut self) {
        let Target::File(path) = &self.target else { return };
        match OpenOptions::new().append(true).create(true).open(path) {
            Ok(f) => {
                self.file = Some(f);
                self.failing = false;
            }
            // Keep the old handle on a failed reopen: lines into the rotated file beat no lines.
            Err(e) => {
                let what = if self.file.is_some() {
                    "; still writing to the old file"
                } else {
                    "; its lines are dropped"
                };
                log::error!("access log {}: {e}{what}", path.display());
                self.failing = true;
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match (&self.target, &mut self.file) {
            (Target::File(_), Some(f)) => f.write_all(buf),
            (Target::File(_), None) => Err(std::io::ErrorKind::NotFound.into()),
            (Target::Stdout, _) => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            // The std stderr lock also serialises with the process logger, so lines never mix.
            (Target::Stderr, _) => std::io::stderr().lock().write_all(buf),
        }
    }
}

fn run(rx: Receiver<Msg>, counters: &Counters) {
    let mut sinks: Vec<Option<Sink>> = Vec::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Open(id, target) => {
                if sinks.len() <= id.index() {
                    sinks.resize_with(id.index() + 1, || None);
                }
                sinks[id.index()] = Some(Sink::open(target));
            }
            Msg::Reopen => sinks.iter_mut().flatten().for_each(Sink::reopen),
            Msg::Sync(done) => {
                let _ = done.send(());
            }
            Msg::Batch(Batch { sink, mut buf, lines, ret }) => {
                let bytes = buf.len() as u64;
                let result = match sinks.get_mut(sink.index()).and_then(Option::as_mut) {
                    Some(s) => {
                        let r = s.write(&buf);
                        match &r {
                            Ok(()) => s.failing = false,
                            Err(e) if !s.failing => {
                                s.failing = true;
                                log::error!(
                                    "access log {:?}: {e}; dropping lines until writes succeed",
                                    s.target
                                );
                            }
                            Err(_) => {}
                        }
                        r.is_ok()
                    }
                    None => false,
                };
                let (l, b) = if result {
                    (&counters.written_lines, &counters.written_bytes)
                } else {
                    (&counters.failed_lines, &counters.failed_bytes)
                };
                l.fetch_add(lines, Ordering::Relaxed);
                b.fetch_add(bytes, Ordering::Relaxed);
                if buf.capacity() <= KEEP_CAPACITY {
                    buf.clear();
                    // The shard may be gone or its return queue full; then the buffer is freed.
                    let _ = ret.try_send(buf);
                }
            }
        }
    }
}

/// One shard's pending lines, per sink. Owned by the shard; never blocks and, after warm-up,
/// never allocates (buffers cycle shard → writer → shard).
pub struct ShardBuffers {
    tx: SyncSender<Msg>,
    ret_tx: SyncSender<Vec<u8>>,
    ret_rx: Receiver<Vec<u8>>,
    pending: Vec<Pending>,
    spare: Vec<Vec<u8>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    lines: u64,
}

impl ShardBuffers {
    pub fn new(writer: &Writer) -> ShardBuffers {
        // Room for every buffer this shard can have in flight, so returns never fail in practice.
        let (ret_tx, ret_rx) = mpsc::sync_channel(DEFAULT_QUEUE + SPARES);
        ShardBuffers {
            tx: writer.shared.tx.clone(),
            ret_tx,
            ret_rx,
            pending: Vec::new(),
            spare: Vec::new(),
            counters: Arc::clone(&writer.shared.counters),
        }
    }

    /// Renders one line into `sink`'s buffer (`render` appends it, e.g. `|out| format.render(r,
    /// out)`), and hands the buffer to the writer once it passes `FLUSH_AT`.
    pub fn append(&mut self, sink: SinkId, render: impl FnOnce(&mut Vec<u8>)) {
        let i = sink.index();
        if self.pending.len() <= i {
            self.pending.resize_with(i + 1, Pending::default);
        }
        let p = &mut self.pending[i];
        let before = p.buf.len();
        render(&mut p.buf);
        if p.buf.len() > before {
            p.lines += 1;
        }
        if p.buf.len() >= FLUSH_AT {
            self.flush_sink(i);
        }
    }

    /// Hands over every buffer past `FLUSH_AT`. `append` already does this for the sink it
    /// wrote; this is for callers that fill buffers some other way.
    pub fn flush_if_full(&mut self) {
        for i in 0..self.pending.len() {
            if self.pending[i].buf.len() >= FLUSH_AT {
                self.flush_sink(i);
            }
        }
    }

    /// Hands over everything pending; the shard calls it from a timer (100 ms) so quiet logs
    /// still reach the file promptly, and on shutdown.
    pub fn flush(&mut self) {
        for i in 0..self.pending.len() {
            self.flush_sink(i);
        }
    }

    /// Bytes waiting in this shard, for tests and debugging.
    pub fn pending_bytes(&self) -> usize {
        self.pending.iter().map(|p| p.buf.len()).sum()
    }

    fn flush_sink(&mut self, i: usize) {
        if self.pending[i].buf.is_empty() {
            return;
        }
        let fresh = self.take_spare();
        let p = &mut self.pending[i];
        let buf = std::mem::replace(&mut p.buf, fresh);
        let lines = std::mem::take(&mut p.lines);
        let batch = Batch { sink: SinkId(i as u32), buf, lines, ret: self.ret_tx.clone() };
        match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                let Msg::Batch(mut batch) = msg else { return };
                self.counters.dropped_lines.fetch_add(batch.lines, Ordering::Relaxed);
                self.counters.dropped_bytes.fetch_add(batch.buf.len() as u64, Ordering::Relaxed);
                batch.buf.clear();
                if self.spare.len() < SPARES {
                    self.spare.push(batch.buf);
                }
            }
        }
    }

    fn take_spare(&mut self) -> Vec<u8> {
        while self.spare.len() < SPARES {
            match self.ret_rx.try_recv() {
                Ok(buf) => self.spare.push(buf),
                Err(_) => break,
            }
        }
        // Only during warm-up (or after the writer kept buffers) is a new one made.
        self.spare.pop().unwrap_or_else(|| Vec::with_capacity(FLUSH_AT + FLUSH_AT / 4))
    }
}

impl Drop for ShardBuffers {
    /// A shard going away still hands over what it has, without waiting.
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for ShardBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardBuffers").field("pending_bytes", &self.pending_bytes()).finish()
    }
}

#[cfg(test)]
impl Writer {
    /// A writer whose thread waits for the returned sender before taking anything off the queue,
    /// so a test can fill the queue deterministically.
    fn paused(queue: usize) -> (Writer, mpsc::Sender<()>) {
        let (go, gate) = mpsc::channel();
        (Writer::spawn(queue, Some(gate)), go)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("skiff-alog-{}-{name}", std::process::id()))
    }

    fn file_log(path: &std::path::Path) -> AccessLog {
        AccessLog::File { path: path.display().to_string(), format: None }
    }

    #[test]
    fn same_path_same_sink() {
        let w = Writer::start();
        let a = w.open(&file_log(&temp_path("same-a")));
        let b = w.open(&AccessLog::File {
            path: temp_path("same-a").display().to_string(),
            format: Some("x".into()),
        });
        let c = w.open(&AccessLog::Stdout { format: None });
        let d = w.open(&AccessLog::File { path: "/dev/stdout".into(), format: None });
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(c, d);
        // The writer creates the file asynchronously; remove it only once it exists.
        assert!(w.sync(Duration::from_secs(10)));
        let _ = std::fs::remove_file(temp_path("same-a"));
    }

    #[test]
    fn full_queue_drops_and_counts_instead_of_blocking() {
        let path = temp_path("full");
        let _ = std::fs::remove_file(&path);
        let (w, go) = Writer::paused(2);
        // The Open message takes one slot of two; it must not block, so open before filling.
        let sink = w.open(&file_log(&path));
        let mut shard = ShardBuffers::new(&w);
        for n in 0..5u8 {
            shard.append(sink, |out| out.extend_from_slice(&[b'a' + n, b'\n']));
            shard.flush();
        }
        // One batch fit beside the Open; four were dropped without waiting.
        let stats = w.stats();
        assert_eq!(stats.dropped_lines, 4);
        assert_eq!(stats.dropped_bytes, 8);
        assert_eq!(shard.pending_bytes(), 0);
        let _ = go.send(());
        assert!(w.sync(Duration::from_secs(10)));
        let written = std::fs::read(&path).unwrap_or_default();
        assert_eq!(written, b"a\n");
        assert_eq!(w.stats().written_lines, 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unopenable_file_counts_failed_lines() {
        let w = Writer::start();
        let sink =
            w.open(&AccessLog::File { path: "/nonexistent-dir/skiff/access.log".into(), format: None });
        let mut shard = ShardBuffers::new(&w);
        shard.append(sink, |out| out.extend_from_slice(b"line\n"));
        shard.flush();
        assert!(w.sync(Duration::from_secs(10)));
        let stats = w.stats();
        assert_eq!((stats.failed_lines, stats.failed_bytes, stats.dropped_lines), (1, 5, 0));
    }

    #[test]
    fn buffers_come_back() {
        let path = temp_path("recycle");
        let w = Writer::start();
        let sink = w.open(&file_log(&path));
        let mut shard = ShardBuffers::new(&w);
        for _ in 0..20 {
            shard.append(sink, |out| out.resize(FLUSH_AT, b'x'));
            assert!(w.sync(Duration::from_secs(10)));
        }
        // Warm-up made at most a couple of buffers; afterwards they were recycled.
        assert!(shard.spare.len() + shard.ret_rx.try_iter().count() >= 1);
        assert_eq!(w.stats().written_bytes, 20 * FLUSH_AT as u64);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reopen_follows_rotation() {
        let path = temp_path("rotate");
        let rotated = temp_path("rotate.1");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
        let w = Writer::start();
        let sink = w.open(&file_log(&path));
        let mut shard = ShardBuffers::new(&w);
        shard.append(sink, |out| out.extend_from_slice(b"before\n"));
        shard.flush();
        assert!(w.sync(Duration::from_secs(10)));
        std::fs::rename(&path, &rotated).expect("rename");
        w.reopen();
        shard.append(sink, |out| out.extend_from_slice(b"after\n"));
        shard.flush();
        assert!(w.sync(Duration::from_secs(10)));
        assert_eq!(std::fs::read(&rotated).unwrap_or_default(), b"before\n");
        assert_eq!(std::fs::read(&path).unwrap_or_default(), b"after\n");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
    }
}
