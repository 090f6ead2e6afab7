//! Journal segment files: `usage-<n>.journal` in the writer's directory, one JSON line per
//! usage record, appended with a single `write` on an `O_APPEND` file and no fsync — the OS page
//! cache survives a process kill, which is what promise 5 asks for. Reading a segment back is
//! tolerant: a line that does not parse (the process died mid-write) is skipped with a warning.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use router_one_core::usage::UsageRecord;

/// File name prefix of a segment.
const PREFIX: &str = "usage-";
/// File name suffix of a segment.
const SUFFIX: &str = ".journal";

/// One open segment file that records are appended to.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    bytes: AtomicU64,
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

    /// Appends one encoded line. On Linux a `write` to an `O_APPEND` file is atomic with respect
    /// to other appenders, so concurrent callers never interleave their lines.
    pub(crate) fn append(&self, line: &[u8]) -> io::Result<()> {
        (&self.file).write_all(line)?;
        self.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        Ok(())
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

/// One record as a journal line: JSON (which escapes newlines inside strings) and `\n`.
pub(crate) fn encode(record: &UsageRecord) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(record)?;
    line.push(b'\n');
    Ok(line)
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

/// The records of a segment's bytes, skipping (with a warning) lines that do not parse.
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Vec<UsageRecord> {
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
        }
    }

    #[test]
    fn round_trips_lines_and_skips_a_truncated_tail() {
        let mut bytes = Vec::new();
        bytes.extend(encode(&record("a")).unwrap());
        bytes.extend(encode(&record("b")).unwrap());
        let third = encode(&record("c")).unwrap();
        bytes.extend(&third[..third.len() / 2]);
        let got = parse(&bytes, Path::new("t"));
        assert_eq!(got, vec![record("a"), record("b")]);
    }

    #[test]
    fn skips_a_corrupt_middle_line_and_keeps_a_complete_tail_without_newline() {
        let mut bytes = encode(&record("a")).unwrap();
        bytes.extend(b"{not json\n");
        let last = encode(&record("c")).unwrap();
        bytes.extend(&last[..last.len() - 1]);
        let got = parse(&bytes, Path::new("t"));
        assert_eq!(got, vec![record("a"), record("c")]);
        assert!(parse(b"", Path::new("t")).is_empty());
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
