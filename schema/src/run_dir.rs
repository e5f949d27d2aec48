//! The run directory's layout (one place names every file) and the atomic write every writer uses.
//!
//! ```text
//! RUN_DIR/config.toml                 the resolved configuration
//! RUN_DIR/summary.json                the run's summary (written last)
//! RUN_DIR/average.json                the averaged model's evaluation (rank 0, after the final all-reduce)
//! RUN_DIR/metrics.jsonl               metric events of a single-worker run
//! RUN_DIR/workers/rank<R>.jsonl       metric events of worker R
//! RUN_DIR/workers/rank<R>.json        worker R's result
//! RUN_DIR/workers/rank<R>.log         worker R's log (local launcher)
//! RUN_DIR/workers/rank<R>.pid         worker R's process id
//! RUN_DIR/checkpoints/rank<R>.safetensors        (and rank<R>.prev.safetensors, the generation before)
//! RUN_DIR/.lock                       held by the run using the directory (its pid inside)
//! RUN_DIR/report/                     plots and index.html
//! ```
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The files of one run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

/// How long a lock is waited for before the holder is named in an error.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// The exclusive lock of a run directory, held for as long as this value lives (the operating
/// system drops it when the process ends, however it ends).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    /// Creates the directory and takes its lock, so two runs never write into one directory; the
    /// error names the process that holds it.
    pub fn lock(&self) -> anyhow::Result<RunLock> {
        self.lock_file(&self.root.join(".lock"), "another a2cid run")
    }

    /// Takes worker `rank`'s lock (`workers/rank<R>.lock`) before the worker touches any of its
    /// files, so a second worker started with the same rank is refused before it truncates the
    /// first one's metrics.
    pub fn lock_rank(&self, rank: usize) -> anyhow::Result<RunLock> {
        self.lock_file(
            &self.workers().join(format!("rank{rank}.lock")),
            &format!("another worker with rank {rank} (two workers were started with the same rank; give each its own --rank or SLURM_PROCID)"),
        )
    }

    fn lock_file(&self, path: &Path, holder_kind: &str) -> anyhow::Result<RunLock> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating run directory {}", dir.display()))?;
        let path = path.to_path_buf();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // A holder that was just killed releases the lock as its process ends: wait a moment.
        let until = std::time::Instant::now() + LOCK_PATIENCE;
        let mut taken = file.try_lock();
        while matches!(taken, Err(std::fs::TryLockError::WouldBlock))
            && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
            taken = file.try_lock();
        }
        match taken {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                anyhow::bail!(
                    "run directory {} is in use by {holder_kind} ({}): wait for it to end, \
                     or give this run another --out",
                    self.root.display(),
                    match holder.trim() {
                        "" => "process unknown".to_string(),
                        pid => format!("process {pid}"),
                    }
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(RunLock { _file: file })
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn average(&self) -> PathBuf {
        self.root.join("average.json")
    }
    /// Metric events of a single-worker run.
    pub fn single_metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn workers(&self) -> PathBuf {
        self.root.join("workers")
    }
    pub fn metrics(&self, rank: usize) -> PathBuf {
        self.workers().join(format!("rank{rank}.jsonl"))
    }
    pub fn result(&self, rank: usize) -> PathBuf {
        self.workers().join(format!("rank{rank}.json"))
    }
    pub fn log(&self, rank: usize) -> PathBuf {
        self.workers().join(format!("rank{rank}.log"))
    }
    /// Every worker's `HOST:PORT` in rank order, written once the mesh has formed: a restarted
    /// worker (`a2cid worker --rejoin`) finds its neighbours there.
    pub fn addresses(&self) -> PathBuf {
        self.workers().join("addresses.json")
    }
    pub fn pid(&self, rank: usize) -> PathBuf {
        self.workers().join(format!("rank{rank}.pid"))
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn checkpoint(&self, rank: usize) -> PathBuf {
        self.checkpoints().join(format!("rank{rank}.safetensors"))
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report")
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsynced, then a
/// rename, so a crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // Nothing half-written is left behind; the previous file, if any, is untouched.
        let _ = std::fs::remove_file(&tmp);
        let full = e.kind() == std::io::ErrorKind::StorageFull;
        return Err(e).with_context(|| {
            format!(
                "writing {}{}; the previous version of it, if any, is kept",
                path.display(),
                if full {
                    " (the disk is full: free space on it, then resume)"
                } else {
                    ""
                }
            )
        });
    }
    Ok(())
}

/// `value` as pretty JSON, written atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes())
}

/// Reads a JSON file written by [`write_json_atomic`], or `None` if it is missing or unreadable.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_names_the_file_keeps_the_old_one_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("summary.json");
        write_atomic(&target, b"old").unwrap();
        // A directory where the file should go makes the final step fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        let e = format!("{:#}", write_atomic(&blocked, b"new").unwrap_err());
        assert!(e.contains("writing") && e.contains("blocked"), "{e}");
        assert!(e.contains("previous version of it, if any, is kept"), "{e}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
    }

    #[test]
    fn a_run_directory_is_locked_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let held = run.lock().unwrap();
        let e = run.lock().unwrap_err().to_string();
        assert!(
            e.contains("is in use by another a2cid run")
                && e.contains(&format!("process {}", std::process::id()))
                && e.contains("another --out"),
            "{e}"
        );
        drop(held);
        run.lock().expect("free again once the holder is gone");
        let rank = run.lock_rank(3).unwrap();
        let e = run.lock_rank(3).unwrap_err().to_string();
        assert!(e.contains("another worker with rank 3"), "{e}");
        run.lock_rank(2).expect("another rank is free");
        drop(rank);
    }
}
