//! [`UsageWriter`]: the crash-safe usage path (promise 5 — a usage record survives `kill -9`
//! once the client could have received its response). This is the one place that keeps it.
//!
//! [`UsageWriter::record`] appends the record to the current journal segment (one `write`, no
//! fsync: the page cache survives a process kill) and queues it for a background task that
//! inserts batches with [`Store::record_usage`] (group commit) and retries a failed batch with
//! backoff, holding its records until they commit.
//!
//! **When a segment may go.** Every queued record holds an `Arc` of the segment it was written
//! to, taken before the write and dropped only after its batch commits. A segment is swapped
//! out (rotated) when it passes [`SEGMENT_BYTES`] or on a flush with nothing pending; the
//! retired segment is deleted once its `Arc` is unique — no appender still holds it and every
//! record written to it has committed. Whatever is left at start (a crash) is replayed first;
//! replay is idempotent because `record_usage` skips request ids it already has.
//!
//! **When the journal cannot be written** (a full disk): [`UsageWriter::record`] reports the
//! error, the record still goes to the database queue (it commits once the database can take
//! it), and its bytes are kept aside. [`UsageWriter::is_durable`] turns false at once, and a
//! probe task re-appends the kept records every [`PROBE_INTERVAL`] (apart from the batch task,
//! which may be waiting on a failing database); when all of them are in the journal again,
//! records are durable again and `is_durable` turns true — nothing restarts.
//! Callers use it to refuse work whose record could not be kept, and withhold a response whose
//! record failed (promise 5 holds for every response that goes out).
//!
//! **When the database fails**, the batch is retried with backoff, forever, holding its records;
//! the store closes a connection whose transaction failed rather than reusing it
//! ([`crate::SqliteStore`]), so a failure never leaves the write lock held.
//!
//! One directory belongs to one writer at a time ([`crate::DataDirLock`]). On a graceful
//! shutdown call [`UsageWriter::flush`] before the runtime stops; whatever is not flushed stays
//! in the journal and is replayed at the next start.

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use router_one_core::store::{Store, StoreError, StoreResult};
use router_one_core::telemetry::SPAN_TARGET;
use router_one_core::usage::UsageRecord;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::journal::{self, Segment};

/// A segment is rotated once it holds more than this many bytes.
pub const SEGMENT_BYTES: u64 = 8 << 20;

/// First wait after a failed batch; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between two attempts at a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the batch task lets records gather after the first one arrives. The journal has
/// already made them durable, so the database can wait: one wake-up and one transaction then
/// serve every request of the interval, instead of a wake-up per request on the hot path.
const LINGER: Duration = Duration::from_millis(25);
/// How often the journal is probed (the records whose append failed re-appended) while records
/// are not durable: about the longest a recovered disk waits before service resumes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// What the hot path sends to the batch task.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is a record; a box would cost an allocation each"
)]
enum Message {
    /// A journaled record, with the segment it was written to (kept alive until it commits) and
    /// its `usage_write` span (closed when it commits; a no-op without an exporter).
    Record(UsageRecord, Arc<Segment>, tracing::Span),
    /// Answer once everything sent before has committed.
    Flush(oneshot::Sender<()>),
}

/// State shared by the handles and the batch task.
struct Shared {
    dir: PathBuf,
    current: ArcSwap<Segment>,
    pending: AtomicUsize,
    /// False from a failed append until every record whose append failed is in the journal.
    durable: AtomicBool,
    /// The encoded records whose append failed, oldest first, each with the segment it was
    /// meant for: it is re-appended there, and its queued record keeps that segment until it
    /// commits. Locked only on the failure path and by the probe, never by a successful append.
    unjournaled: Mutex<Vec<(Vec<u8>, Arc<Segment>)>>,
    /// Wakes the probe task when records stop being durable.
    wake_prober: Arc<Notify>,
}

impl Shared {
    /// Notes a record whose append failed: records are not durable until it is re-appended.
    fn append_failed(&self, encoded: Vec<u8>, segment: Arc<Segment>, error: &io::Error) {
        let mut unjournaled = self.unjournaled.lock().unwrap_or_else(PoisonError::into_inner);
        unjournaled.push((encoded, segment));
        if self.durable.swap(false, Ordering::SeqCst) {
            tracing::error!(error = %error, dir = %self.dir.display(), "usage journal append failed: records are not durable until it can be written again");
            self.wake_prober.notify_one();
        }
    }

    /// Re-appends the records whose append failed, oldest first, each to its own segment; once
    /// all are in, records are durable again. Returns whether they are.
    fn probe(&self) -> bool {
        if self.durable.load(Ordering::SeqCst) {
            return true;
        }
        let mut unjournaled = self.unjournaled.lock().unwrap_or_else(PoisonError::into_inner);
        let appended = unjournaled
            .iter()
            .take_while(|(encoded, segment)| segment.append(encoded).is_ok())
            .count();
        unjournaled.drain(..appended);
        if !unjournaled.is_empty() {
            return false;
        }
        self.durable.store(true, Ordering::SeqCst);
        tracing::info!(dir = %self.dir.display(), "usage journal writable again: records are durable");
        true
    }
}

/// Called with every batch of records this writer commits, once, off the hot path: counters
/// fed from here (the gateway's metrics) match this process's usage records exactly. Records
/// replayed at start from an earlier run's journal are not shown (that run may have counted
/// them; a restarted process's counters start from zero anyway).
pub type CommitObserver = Arc<dyn Fn(&[UsageRecord]) + Send + Sync>;

/// Handle used on the request hot path. Cheap to clone.
#[derive(Clone)]
pub struct UsageWriter {
    // Declared before `sender` so that it is dropped first: once the channel closes, the batch
    // task holds the last reference and can retire the current segment.
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Message>,
}

impl fmt::Debug for UsageWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageWriter")
            .field("dir", &self.shared.dir)
            .field("pending", &self.pending())
            .finish()
    }
}

impl UsageWriter {
    /// Replays leftover journal segments in `dir` into `store` (idempotent: record_usage skips known ids),
    /// deletes them, then starts the background batch task. `max_batch` records per transaction.
    pub async fn start(dir: &Path, store: Arc<dyn Store>, max_batch: usize) -> Result<UsageWriter, StoreError> {
        Self::start_with_segment_bytes(dir, store, max_batch, SEGMENT_BYTES, None).await
    }

    /// [`UsageWriter::start`], telling `observer` of every batch that commits.
    pub async fn start_observed(
        dir: &Path,
        store: Arc<dyn Store>,
        max_batch: usize,
        observer: CommitObserver,
    ) -> Result<UsageWriter, StoreError> {
        Self::start_with_segment_bytes(dir, store, max_batch, SEGMENT_BYTES, Some(observer)).await
    }

    /// [`UsageWriter::start`] with another rotation size (tests rotate often).
    pub(crate) async fn start_with_segment_bytes(
        dir: &Path,
        store: Arc<dyn Store>,
        max_batch: usize,
        segment_bytes: u64,
        observer: Option<CommitObserver>,
    ) -> StoreResult<UsageWriter> {
        let max_batch = max_batch.max(1);
        std::fs::create_dir_all(dir).map_err(|e| io_err("create the journal directory", e))?;
        let mut next_seq = replay(dir, store.as_ref(), max_batch).await?;
        let first = Segment::create_next(dir, &mut next_seq).map_err(|e| io_err("create a journal segment", e))?;
        let wake_prober = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            current: ArcSwap::from_pointee(first),
            pending: AtomicUsize::new(0),
            durable: AtomicBool::new(true),
            unjournaled: Mutex::new(Vec::new()),
            wake_prober: Arc::clone(&wake_prober),
        });
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = BatchTask {
            shared: Arc::clone(&shared),
            receiver,
            store,
            max_batch,
            segment_bytes,
            next_seq,
            retired: Vec::new(),
            records: Vec::new(),
            segments: Vec::new(),
            spans: Vec::new(),
            observer,
        };
        tokio::spawn(probe_journal(Arc::downgrade(&shared), wake_prober));
        tokio::spawn(task.run());
        Ok(UsageWriter { shared, sender })
    }

    /// Synchronously appends the record to the current journal segment (one `write` syscall of one
    /// framed JSON record on an O_APPEND file, no fsync: the OS page cache survives a process
    /// kill), then queues it for the batched database insert. Returns only after the journal write.
    ///
    /// On a journal error the record is still queued for the database and kept for the probe
    /// to re-append; the error says it is not crash-safe yet ([`UsageWriter::is_durable`] is
    /// false until it is).
    pub fn record(&self, record: UsageRecord) -> io::Result<()> {
        let encoded = journal::encode(&record)?;
        // A strong reference (not a borrow guard): it travels with the queued record, so the
        // segment cannot be deleted before the record commits.
        let segment = self.shared.current.load_full();
        let written = segment.append(&encoded);
        if let Err(e) = &written {
            self.shared.append_failed(encoded, Arc::clone(&segment), e);
        }
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        let span = tracing::info_span!(target: SPAN_TARGET, "usage_write", batch_records = tracing::field::Empty);
        if let Err(mpsc::error::SendError(message)) = self.sender.send(Message::Record(record, segment, span)) {
            // The batch task is gone (the runtime is shutting down): the journal keeps the record
            // for the next start.
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            if let Message::Record(record, ..) = message {
                tracing::warn!(request_id = %record.request_id, "usage writer stopped; record left in the journal");
            }
        }
        written
    }

    /// Whether a record handed to [`UsageWriter::record`] now would be durable: false from a
    /// failed journal append until the batch task has re-appended every record that failed
    /// (it tries every [`PROBE_INTERVAL`]). One atomic load: cheap enough for every request.
    pub fn is_durable(&self) -> bool {
        self.shared.durable.load(Ordering::SeqCst)
    }

    /// Waits until every record queued before this call is committed to the database.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            // An error means the task stopped; nothing more can be committed by this writer.
            let _ = wait.await;
        }
    }

    /// Bytes in the current journal segment (for metrics).
    pub fn journal_bytes(&self) -> u64 {
        self.shared.current.load().bytes()
    }

    /// Records written to the journal but not yet committed (for metrics/tests).
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }
}

/// A journal I/O failure at start.
fn io_err(what: &str, e: io::Error) -> StoreError {
    StoreError::Database(format!("usage journal: cannot {what}: {e}"))
}

/// Inserts the records of every segment in `dir`, then deletes the segments. Returns the
/// number for the next segment.
async fn replay(dir: &Path, store: &dyn Store, max_batch: usize) -> StoreResult<u64> {
    let segments = journal::list_segments(dir).map_err(|e| io_err("list the journal", e))?;
    let next_seq = segments.last().map_or(0, |(seq, _)| seq + 1);
    for (_, path) in segments {
        // A segment that vanished meanwhile was deleted by a writer that had committed it.
        let bytes = match tokio::fs::read(&path).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            read => read.map_err(|e| io_err("read a journal segment", e))?,
        };
        let records = journal::parse(&bytes, &path);
        for chunk in records.chunks(max_batch) {
            store.record_usage(chunk).await?;
        }
        if !records.is_empty() {
            tracing::info!(path = %path.display(), records = records.len(), "replayed a usage journal segment");
        }
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("delete a replayed journal segment", e));
            }
            _ => {}
        }
    }
    Ok(next_seq)
}

/// The background task: group-commits queued records and rotates and deletes segments.
struct BatchTask {
    shared: Arc<Shared>,
    receiver: mpsc::UnboundedReceiver<Message>,
    store: Arc<dyn Store>,
    max_batch: usize,
    segment_bytes: u64,
    next_seq: u64,
    /// Swapped-out segments, deleted once nothing refers to them.
    retired: Vec<Arc<Segment>>,
    /// The batch being committed, and the segments its records were written to.
    records: Vec<UsageRecord>,
    segments: Vec<Arc<Segment>>,
    /// The batch's `usage_write` spans, closed as it commits.
    spans: Vec<tracing::Span>,
    observer: Option<CommitObserver>,
}

impl BatchTask {
    /// Runs until every [`UsageWriter`] is dropped.
    async fn run(mut self) {
        let mut waiters = Vec::new();
        while let Some(message) = self.receiver.recv().await {
            self.take(message, &mut waiters);
            // Group commit: everything that arrived while the previous batch committed. Only a
            // batch that is not full yet lingers for more. Lingering with a backlog too capped
            // the writer at `max_batch` records per linger and commit (about 12,000 a second at
            // 512), below what one node serves at c=64: the backlog grew without bound, 57,000
            // records and +58 MiB after 9 s of `wrk -c64` (now it stays near one batch).
            self.gather(&mut waiters);
            if waiters.is_empty() && self.records.len() < self.max_batch {
                tokio::time::sleep(LINGER).await;
                self.gather(&mut waiters);
            }
            self.commit().await;
            self.maintain_segments(!waiters.is_empty());
            for waiter in waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        self.shut_down();
    }

    /// Takes what is queued, up to a full batch.
    fn gather(&mut self, waiters: &mut Vec<oneshot::Sender<()>>) {
        while self.records.len() < self.max_batch {
            match self.receiver.try_recv() {
                Ok(message) => self.take(message, waiters),
                Err(_) => break,
            }
        }
    }

    /// Adds a message to the batch or to the flush waiters.
    fn take(&mut self, message: Message, waiters: &mut Vec<oneshot::Sender<()>>) {
        match message {
            Message::Record(record, segment, span) => {
                self.records.push(record);
                self.segments.push(segment);
                self.spans.push(span);
            }
            Message::Flush(waiter) => waiters.push(waiter),
        }
    }

    /// Commits the batch, retrying with backoff until the database takes it.
    async fn commit(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let mut backoff = FIRST_BACKOFF;
        while let Err(e) = self.store.record_usage(&self.records).await {
            tracing::warn!(error = %e, records = self.records.len(), retry_in_ms = backoff.as_millis() as u64, "usage batch failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if let Some(observer) = &self.observer {
            observer(&self.records);
        }
        self.shared.pending.fetch_sub(self.records.len(), Ordering::SeqCst);
        // As i64: OpenTelemetry's integers are signed, and unsigned values arrive as strings.
        let records = i64::try_from(self.records.len()).unwrap_or(i64::MAX);
        for span in self.spans.drain(..) {
            span.record("batch_records", records);
        }
        self.records.clear();
        // Releases these records' hold on their segments.
        self.segments.clear();
    }

    /// Rotates the current segment when it is full, or on a flush when nothing is pending, and
    /// deletes retired segments that nothing refers to any more.
    fn maintain_segments(&mut self, flushed: bool) {
        let bytes = self.shared.current.load().bytes();
        let idle = self.shared.pending.load(Ordering::SeqCst) == 0;
        if bytes > self.segment_bytes || (flushed && idle && bytes > 0) {
            self.rotate();
        }
        self.delete_retired();
    }

    /// Starts a new segment and retires the current one.
    fn rotate(&mut self) {
        match Segment::create_next(&self.shared.dir, &mut self.next_seq) {
            Ok(segment) => {
                let old = self.shared.current.swap(Arc::new(segment));
                self.retired.push(old);
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a new usage journal segment; keeping the current one"),
        }
    }

    /// Deletes each retired segment whose `Arc` is unique: no appender holds it and every
    /// record written to it has committed (queued records hold it until then).
    fn delete_retired(&mut self) {
        for segment in std::mem::take(&mut self.retired) {
            match Arc::try_unwrap(segment) {
                Ok(segment) => delete(segment),
                Err(segment) => self.retired.push(segment),
            }
        }
    }

    /// Every handle is gone and every record committed: no segment is needed any more.
    fn shut_down(mut self) {
        let wake_prober = Arc::clone(&self.shared.wake_prober);
        // Every record is committed: the copies kept for re-appending are not needed.
        self.shared
            .unjournaled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.delete_retired();
        // `Shared` is unique unless a handle is still being dropped; then the current segment
        // stays and is replayed (a no-op) at the next start.
        if let Ok(shared) = Arc::try_unwrap(self.shared)
            && let Ok(segment) = Arc::try_unwrap(shared.current.into_inner())
        {
            delete(segment);
        }
        for segment in &self.retired {
            tracing::warn!(path = %segment.path().display(), "usage journal segment still referenced at shutdown");
        }
        // `Shared` is gone (or going): the probe task wakes, finds it gone and ends.
        wake_prober.notify_one();
    }
}

/// The probe task: while records are not durable, re-appends the records whose append failed
/// every [`PROBE_INTERVAL`]; otherwise sleeps until woken. Holds only a weak reference, so it
/// ends with the writer.
async fn probe_journal(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.probe() {
                break;
            }
            drop(shared);
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}

/// Deletes a segment; one left behind is replayed (a no-op) at the next start.
fn delete(segment: Segment) {
    if let Err(e) = segment.delete() {
        tracing::warn!(error = %e, "cannot delete a committed usage journal segment");
    }
}
