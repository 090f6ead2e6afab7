//! [`DataDirLock`]: one serving process per data directory. Two gateways on one directory would
//! replay and delete each other's usage journal and each enforce the caps alone (promises 3
//! and 5), so `serve` holds an exclusive advisory lock (`flock`) on `router-one.lock` in the
//! directory for its whole life; the kernel drops it when the process ends, however it ends.
//! The admin CLI does not take it: it only runs short SQLite transactions, which WAL lets it
//! share with a running gateway.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "router-one.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another process holds the lock.
    #[error(
        "the data directory {dir} is in use by another router-one process{holder} (lock file {lock}); \
         stop it or use another --data directory"
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// ` (pid N)` when the holder wrote its pid, else empty.
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock the data directory {dir}: {source}")]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and takes its lock without waiting: fails at once, naming the
    /// directory, when another process holds it. Writes this process's id into the lock file
    /// so the next one can say who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirLockError> {
        let io_err = |source| DataDirLockError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let path = dir.join(LOCK_FILE);
        // Never truncated before the lock is ours: the holder's pid stays readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DataDirLockError::InUse {
                    dir: dir.to_owned(),
                    holder: holder(&mut file),
                    lock: path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // The pid is only a hint for the message above; failing to write it changes nothing.
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
        Ok(DataDirLock { _file: file })
    }
}

/// ` (pid N)` from the lock file's content, or empty.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file.rewind().and_then(|()| file.take(32).read_to_string(&mut text));
    match read.ok().and_then(|_| text.trim().parse::<u32>().ok()) {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_fails_at_once_and_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let held = DataDirLock::acquire(&dir).unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts exactly as a second process would.
        let err = DataDirLock::acquire(&dir).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DataDirLockError::InUse { .. }), "{message}");
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        drop(held);
        let _again = DataDirLock::acquire(&dir).unwrap();
    }
}
