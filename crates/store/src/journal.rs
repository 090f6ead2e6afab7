//! Journal segment files: `usage-<n>.journal` in the writer's directory, one record per JSON
//! text, appended with a single `write` on an `O_APPEND` file and no fsync — the OS page cache
//! survives a process kill, which is what promise 5 asks for.
//!
//! **Self-synchronising framing** ([RFC 7464] JSON text sequences): every record is written as
//! `RS <json> LF`, where RS is the ASCII record separator `0x1E`, a byte compact JSON never holds
//! unescaped. A write cut short (a full disk, a kill mid-write) leaves a fragment that lacks
//! its final LF; the next record still starts at its own RS, so the parser drops exactly the
//! torn fragment and keeps every complete record around it. Truncating a torn write back is not
//! an option: other threads append to the same file concurrently and may already have written
//! after it.
//!
//! Segments written before this framing (one JSON line each, no RS) are still read: whatever
//! precedes a file's first RS is parsed line by line.
//!
//! [RFC 7464]: https://www.rfc-editor.org/rfc/rfc7464

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use router_one_core::usage::UsageRecord;

/// File name prefix of a segment.
const PREFIX: &str = "usage-";
/// File name suffix of a segment.
const SUFFIX: &str = ".journal";
/// The ASCII record separator that starts every record (RFC 7464).
const RS: u8 = 0x1e;

/// One open segment file that records are appended to.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    bytes: AtomicU64,
    /// Tests only: the space the "disk" has left for this segment; a write beyond it is cut
    /// short, as a full disk cuts it.
    #[cfg(test)]
    pub(crate) space: AtomicU64,
}

impl Segment {
    /// Creates segment number `seq` in `dir`; fails if it exists.
    pub(crate) fn create(dir: &Path, seq: u64) -> io::Result<Segment> {
        let path = dir.join(format!("{PREFIX}{seq}{SUFFIX}"));
        let file = OpenOptions::new().append(true).create_new(true).open(&path)?;
        Ok(Segment {
            path,
            file,
            bytes: AtomicU64::new(0),
            #[cfg(test)]
            space: AtomicU64::new(u64::MAX),
        })
    }

    /// Creates the first free segment numbered `*next` or above, and moves `*next` past it.
    /// (A taken number means another writer uses the directory, which it should not; skipping
    /// ahead keeps both from writing into one file.)
    pub(crate) fn create_next(dir: &Path, next: &mut u64) -> io::Result<Segment> {
        let mut tries = 0;
        loop {
            let seq = *next;
            *next += 1;
            match Segment::create(dir, seq) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
                created => return created,
            }
        }
    }

    /// Appends one encoded record with exactly one `write`. On Linux a `write` to an `O_APPEND`
    /// file is atomic with respect to other appenders, so concurrent callers never interleave
    /// their records. A short write (the disk filled up mid-record) is an error and is never
    /// continued: a second `write` for the rest could land after another thread's record and
    /// corrupt it; the torn fragment is dropped by [`parse`] instead.
    pub(crate) fn append(&self, record: &[u8]) -> io::Result<()> {
        let wanted = record.len();
        #[cfg(test)]
        let record = &record[..self.take_space(wanted)];
        loop {
            match (&self.file).write(record) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(written) => {
                    self.bytes.fetch_add(written as u64, Ordering::Relaxed);
                    if written == wanted {
                        return Ok(());
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!("short journal write: {written} of {wanted} bytes"),
                    ));
                }
            }
        }
    }

    /// Tests only: how much of a `wanted`-byte write the simulated disk takes.
    #[cfg(test)]
    fn take_space(&self, wanted: usize) -> usize {
        let mut taken = 0;
        let _ = self.space.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            taken = usize::try_from(left).unwrap_or(usize::MAX).min(wanted);
            Some(left - taken as u64)
        });
        taken
    }

    /// Bytes appended through this handle.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Closes and deletes the file.
    pub(crate) fn delete(self) -> io::Result<()> {
        let Segment { path, file, .. } = self;
        drop(file);
        std::fs::remove_file(path)
    }
}

/// One record as written to the journal: RS, compact JSON (which escapes every control
/// character inside strings, so neither RS nor LF can occur in it), LF.
pub(crate) fn encode(record: &UsageRecord) -> io::Result<Vec<u8>> {
    let mut bytes = vec![RS];
    serde_json::to_writer(&mut bytes, record)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The segments in `dir`, oldest first, with their numbers.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?.parse().ok());
        if let Some(seq) = seq {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The records of a segment's bytes. A torn record (no final LF: a write cut short) is dropped
/// with a warning, a complete one that does not parse with an error; the records around either
/// are kept.
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Vec<UsageRecord> {
    let mut pieces = bytes.split(|b| *b == RS);
    // Before the first RS: records of the older one-line-each format (empty in a new segment).
    let mut records = pieces
        .next()
        .map(|legacy| parse_lines(legacy, path))
        .unwrap_or_default();
    for (i, piece) in pieces.enumerate() {
        let Some(text) = piece.strip_suffix(b"\n") else {
            tracing::warn!(path = %path.display(), record = i + 1, "skipping a torn journal record (a write cut short)");
            continue;
        };
        match serde_json::from_slice(text) {
            Ok(record) => records.push(record),
            Err(e) => {
                tracing::error!(path = %path.display(), record = i + 1, error = %e, "skipping a corrupt journal record");
            }
        }
    }
    records
}

/// The records of the line-per-record format written before the RS framing, skipping (with a
/// warning) lines that do not parse.
fn parse_lines(bytes: &[u8], path: &Path) -> Vec<UsageRecord> {
    let complete = bytes.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // `split` yields an empty piece after a final newline.
    if complete {
        lines.pop();
    }
    let last = lines.len().saturating_sub(1);
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(e) if i == last && !complete => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a truncated last journal line");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), line = i + 1, error = %e, "skipping a corrupt journal line");
            }
        }
    }
    records
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use router_one_core::money::Usd;
    use router_one_core::pricing::TokenUsage;
    use router_one_core::usage::Endpoint;

    use super::*;

    fn record(id: &str) -> UsageRecord {
        UsageRecord {
            request_id: id.into(),
            account_id: "acct_1".into(),
            key_id: "key_1".into(),
            created_at_us: 1,
            endpoint: Endpoint::ChatCompletions,
            requested_model: "m\nodel".into(),
            served_model: None,
            provider: "p".into(),
            usage: TokenUsage::default(),
            cost: Usd::from_units(5),
            latency_us: 10,
            upstream_sent_us: None,
            ttft_us: None,
            status: 200,
            error_code: None,
            streamed: false,
            lease: None,
            failed_attempts: Vec::new(),
            receipt: None,
            refusal: None,
        }
    }

    /// A full disk: every write of one record is cut short after `written` bytes.
    fn torn(id: &str, written: usize) -> Vec<u8> {
        let bytes = encode(&record(id)).unwrap();
        bytes[..written].to_vec()
    }

    #[test]
    fn round_trips_records_and_skips_a_torn_tail() {
        let mut bytes = Vec::new();
        bytes.extend(encode(&record("a")).unwrap());
        bytes.extend(encode(&record("b")).unwrap());
        let third = encode(&record("c")).unwrap();
        bytes.extend(&third[..third.len() / 2]);
        let got = parse(&bytes, Path::new("t"));
        assert_eq!(got, vec![record("a"), record("b")]);
        assert!(parse(b"", Path::new("t")).is_empty());
    }

    #[test]
    fn receipts_round_trip_in_parts_and_whole_ones_of_older_journals_still_read() {
        use router_one_core::usage::{ReceiptParts, RecordReceipt};
        let mut parts = record("a");
        parts.receipt = Some(RecordReceipt::Parts(ReceiptParts {
            batch: "aGVhZGVy.cGF5bG9hZA.c2ln".into(),
            path: "TA".into(),
            response_sha256: "ab".repeat(32),
            upstream_response_id: Some("chatcmpl-1".into()),
        }));
        let got = parse(&encode(&parts).unwrap(), Path::new("t"));
        assert_eq!(got, vec![parts]);
        // A journal written before receipts were kept in parts: the whole receipt, a string.
        let mut older = serde_json::to_value(record("b")).unwrap();
        older["receipt"] = "aGVhZGVy.cGF5bG9hZA.c2ln~e30~".into();
        let mut line = vec![RS];
        line.extend(serde_json::to_vec(&older).unwrap());
        line.push(b'\n');
        let mut whole = record("b");
        whole.receipt = Some(RecordReceipt::Whole("aGVhZGVy.cGF5bG9hZA.c2ln~e30~".into()));
        assert_eq!(parse(&line, Path::new("t")), vec![whole]);
    }

    #[test]
    fn a_torn_record_never_swallows_the_next_one() {
        // The old line format lost the record after a torn one (they merged into one bad line).
        let full = encode(&record("b")).unwrap().len();
        for written in [1, 2, full / 2, full - 2, full - 1] {
            let mut bytes = encode(&record("a")).unwrap();
            bytes.extend(torn("b", written));
            bytes.extend(encode(&record("c")).unwrap());
            bytes.extend(torn("d", written));
            bytes.extend(torn("e", written));
            bytes.extend(encode(&record("f")).unwrap());
            let got = parse(&bytes, Path::new("t"));
            assert_eq!(
                got,
                vec![record("a"), record("c"), record("f")],
                "torn after {written} of {full} bytes"
            );
        }
    }

    #[test]
    fn a_complete_json_text_missing_only_its_lf_is_dropped() {
        // Its writer was told the append failed, so it must not come back from the journal.
        let whole = encode(&record("b")).unwrap();
        let mut bytes = torn("b", whole.len() - 1);
        bytes.extend(encode(&record("c")).unwrap());
        assert_eq!(parse(&bytes, Path::new("t")), vec![record("c")]);
    }

    #[test]
    fn skips_a_corrupt_record_and_reads_segments_of_the_line_format() {
        let mut bytes = encode(&record("a")).unwrap();
        bytes.extend(b"\x1e{not json\n");
        bytes.extend(encode(&record("c")).unwrap());
        assert_eq!(parse(&bytes, Path::new("t")), vec![record("a"), record("c")]);

        // A segment left by the previous format: one JSON line each, the last without LF.
        let line = |id: &str| {
            let mut l = serde_json::to_vec(&record(id)).unwrap();
            l.push(b'\n');
            l
        };
        let mut legacy = line("a");
        legacy.extend(b"{not json\n");
        let last = line("c");
        legacy.extend(&last[..last.len() - 1]);
        assert_eq!(parse(&legacy, Path::new("t")), vec![record("a"), record("c")]);
    }

    #[test]
    fn a_short_write_is_an_error_and_counts_what_was_written() {
        // /dev/full takes nothing: every append fails, as on a full disk.
        let file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let segment = Segment {
            path: PathBuf::from("/dev/full"),
            file,
            bytes: AtomicU64::new(0),
            space: AtomicU64::new(u64::MAX),
        };
        let err = segment.append(&encode(&record("a")).unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(segment.bytes(), 0);
    }

    #[test]
    fn lists_segments_in_numeric_order() {
        let dir = tempfile::tempdir().unwrap();
        for seq in [10, 2, 1] {
            Segment::create(dir.path(), seq).unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), b"x").unwrap();
        let seqs: Vec<u64> = list_segments(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![1, 2, 10]);
        assert!(Segment::create(dir.path(), 2).is_err());
        let mut next = 1;
        let created = Segment::create_next(dir.path(), &mut next).unwrap();
        assert_eq!(
            (created.path().file_name().unwrap().to_str().unwrap(), next),
            ("usage-3.journal", 4)
        );
    }
}
