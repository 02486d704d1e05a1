//! Directories written as a whole: [`DirTransaction`] writes every file of a directory into a
//! hidden sibling, syncs it, and then moves it into place, so that a reader — or a crash at any
//! moment — sees either the old directory intact or the new one complete, never a mix.
//!
//! # Protocol
//!
//! For a target `P/N`, with this process's id `PID` and a per-process counter `K`:
//!
//! 1. **begin**: roll back an interrupted replacement of `P/N` (see below), remove the leftovers
//!    of dead writers, and create the staging directory `P/.N.rgshield-new-PID-K`.
//! 2. **write**: each file is written into the staging directory and synced (`fsync`).
//! 3. **commit**: sync the staging directory; then
//!    * if `P/N` does not exist (or is empty): rename the staging directory to `P/N`;
//!    * else: rename `P/N` aside to `P/.N.rgshield-old-PID-K`, rename the staging directory to
//!      `P/N`, and remove the old one.
//!
//!    `P` is synced after each rename, so the renames reach the disk in this order.
//!
//! **Recovery.** A crash leaves at most: a staging directory (incomplete or complete, never
//! visible as `P/N`), and an old directory set aside. If `P/N` is missing while an old directory
//! is set aside (a crash between the two renames), [`recover_dir`] renames the old one back: the
//! old model is intact. If `P/N` exists, the set-aside directory is a leftover of a committed
//! replacement and is removed. [`DirTransaction::begin`] runs this recovery and cleans every
//! leftover of a process that is no longer alive; the model loader runs the recovery when its
//! directory is missing. Leftovers of a live process (another writer at work) are left alone.
//! One writer per directory at a time is assumed.
//!
//! # Test hook
//!
//! The crash tests need the process to die at precise points of a real write. When the
//! environment variable [`CRASH_ENV`] (`RGSHIELD_TEST_CRASH_AT`) is set, [`DirTransaction::begin`]
//! reads it; its value must be one of [`CRASH_POINTS`], and the process then aborts
//! (`std::process::abort`, no cleanup, as a `kill -9` or a power cut would leave it) when the
//! transaction reaches that point, after printing one line to stderr that names the variable. Any
//! other value makes `begin` fail with an error naming the variable, so a stray or misspelt
//! setting is never silently ignored, and it is read nowhere else. Nothing sets it but the tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The environment variable of the crash test hook (see the module docs).
pub const CRASH_ENV: &str = "RGSHIELD_TEST_CRASH_AT";

/// The points at which the test hook can abort a transaction: after the model's weights, after
/// its metadata (both written by [`crate::model::io`]), before the first rename, after the old
/// directory was set aside, and after the new one was moved in (before the old one is removed).
pub const CRASH_POINTS: &[&str] = &[
    "after-weights",
    "after-meta",
    "before-rename",
    "after-rename-old",
    "after-rename-new",
];

const NEW_TAG: &str = ".rgshield-new-";
const OLD_TAG: &str = ".rgshield-old-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory being written as a whole (see the module docs). Write the files with
/// [`DirTransaction::write`], then [`DirTransaction::commit`]; dropped without a commit, the
/// staging directory is removed and the target is untouched.
#[derive(Debug)]
pub struct DirTransaction {
    target: PathBuf,
    parent: PathBuf,
    staging: PathBuf,
    aside: PathBuf,
    crash_at: Option<String>,
    committed: bool,
}

/// The parent folder and the name of `target`; an error for paths without a name (`/`, `..`).
fn split(target: &Path) -> Result<(PathBuf, String)> {
    let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::invalid(format!(
            "{}: name a directory (not '.', '..' or '/'), in UTF-8",
            target.display()
        ))
    })?;
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent.to_path_buf(), name.to_string()))
}

/// Whether process `pid` is alive (Unix; elsewhere every other process counts as gone).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// A leftover of a transaction on `name` in its parent: (is it a set-aside old directory, the
/// writer's pid).
fn leftover(entry: &str, name: &str) -> Option<(bool, u32)> {
    let rest = entry.strip_prefix('.')?.strip_prefix(name)?;
    let (old, rest) = if let Some(r) = rest.strip_prefix(OLD_TAG) {
        (true, r)
    } else {
        (false, rest.strip_prefix(NEW_TAG)?)
    };
    let pid = rest.split('-').next()?.parse().ok()?;
    Some((old, pid))
}

/// Leftovers of transactions on `name` in `parent` whose writer is not alive: (path, is old).
fn dead_leftovers(parent: &Path, name: &str) -> Result<Vec<(PathBuf, bool)>> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(parent, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(parent, e))?;
        let file_name = e.file_name();
        let Some(entry) = file_name.to_str() else {
            continue;
        };
        if let Some((old, pid)) = leftover(entry, name) {
            if pid == std::process::id() || !process_alive(pid) {
                out.push((e.path(), old));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn remove_all(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Sync a directory, so that the renames and creations in it are on disk (Unix; a no-op
/// elsewhere).
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Roll back an interrupted replacement of `target`: when `target` is missing and a writer that
/// is no longer alive left the old directory set aside, rename it back. Returns whether it did.
/// Does nothing when `target` exists.
pub fn recover_dir(target: &Path) -> Result<bool> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(false);
    }
    let (parent, name) = split(target)?;
    // The newest set-aside directory (the last transaction's), by modification time.
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for (p, old) in dead_leftovers(&parent, &name)? {
        if !old {
            continue;
        }
        let t = std::fs::symlink_metadata(&p)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
            best = Some((t, p));
        }
    }
    let Some((_, old)) = best else {
        return Ok(false);
    };
    std::fs::rename(&old, target).map_err(|e| {
        Error::io(
            target,
            std::io::Error::new(
                e.kind(),
                format!(
                    "restoring the previous directory from {} after an interrupted write: {e}",
                    old.display()
                ),
            ),
        )
    })?;
    sync_dir(&parent)?;
    Ok(true)
}

/// Whether `dir` exists, is a directory and has no entries.
fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_none())
}

/// Check, without writing anything, that a [`DirTransaction`] on `target` may start: `target` is
/// missing, an empty directory, or a directory holding `marker` (a directory of the same kind,
/// which it replaces whole); not a file; and its parent, when it exists, is a directory.
pub fn check_replaceable(target: &Path, marker: &str) -> Result<()> {
    let (parent, _) = split(target)?;
    if let Ok(m) = std::fs::metadata(&parent) {
        if !m.is_dir() {
            return Err(Error::invalid(format!(
                "{}: {} is not a directory",
                target.display(),
                parent.display()
            )));
        }
    }
    match std::fs::metadata(target) {
        Err(_) => Ok(()),
        Ok(m) if !m.is_dir() => Err(Error::invalid(format!(
            "{} exists and is not a directory",
            target.display()
        ))),
        Ok(_) if is_empty_dir(target) || target.join(marker).exists() => Ok(()),
        Ok(_) => Err(Error::invalid(format!(
            "{} exists, is not empty and holds no {marker}: refusing to replace it (it would be \
             replaced whole); choose a new or empty directory",
            target.display()
        ))),
    }
}

/// The crash point the hook's variable names, checked (see the module docs).
fn crash_hook(value: Option<String>) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if CRASH_POINTS.contains(&v.as_str()) => Ok(Some(v)),
        Some(v) => Err(Error::invalid(format!(
            "environment variable {CRASH_ENV} = '{v}' is not one of {CRASH_POINTS:?}; it is a \
             test hook that aborts the process: unset it"
        ))),
    }
}

impl DirTransaction {
    /// Start writing `target` as a whole. An existing `target` must be a directory that is empty
    /// or holds `marker` (e.g. `model.json`): it is replaced whole, with everything in it, at the
    /// commit. Runs the recovery of an interrupted earlier write and removes the leftovers of
    /// dead writers; fails when [`CRASH_ENV`] is set to anything but one of [`CRASH_POINTS`].
    pub fn begin(target: &Path, marker: &str) -> Result<Self> {
        let crash_at = crash_hook(std::env::var(CRASH_ENV).ok())?;
        // Write through a symbolic link to where it points.
        let target = match std::fs::symlink_metadata(target) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(target).map_err(|e| Error::io(target, e))?
            }
            _ => target.to_path_buf(),
        };
        let (parent, name) = split(&target)?;
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        recover_dir(&target)?;
        check_replaceable(&target, marker)?;
        // After the recovery, a set-aside directory of a dead writer is a leftover of a committed
        // replacement, and a staging directory of one was never committed.
        for (p, _) in dead_leftovers(&parent, &name)? {
            remove_all(&p)?;
        }
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{k}", std::process::id());
        let staging = parent.join(format!(".{name}{NEW_TAG}{tag}"));
        let aside = parent.join(format!(".{name}{OLD_TAG}{tag}"));
        remove_all(&staging)?;
        std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(DirTransaction {
            target,
            parent,
            staging,
            aside,
            crash_at,
            committed: false,
        })
    }

    /// The directory being written (the hidden staging directory until the commit).
    pub fn dir(&self) -> &Path {
        &self.staging
    }

    /// The directory this transaction replaces or creates.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Write the file `name` (a plain file name) into the new directory, synced to disk.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(Error::invalid(format!(
                "'{name}': a file of a directory transaction needs a plain file name"
            )));
        }
        let path = self.staging.join(name);
        let res = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        res.map_err(|e| Error::io(&self.target.join(name), e))
    }

    /// [`DirTransaction::write`] of pretty JSON with a final newline.
    pub fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let mut s = serde_json::to_string_pretty(value).map_err(|e| {
            Error::invalid(format!(
                "{}: cannot serialise JSON: {e}",
                self.target.join(name).display()
            ))
        })?;
        s.push('\n');
        self.write(name, s.as_bytes())
    }

    /// The test hook (see the module docs): abort here when [`CRASH_ENV`] names `point`.
    pub(crate) fn crash_point(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            eprintln!(
                "{CRASH_ENV}={point}: aborting while writing {} (test hook)",
                self.target.display()
            );
            std::process::abort();
        }
    }

    /// Move the new directory into place (see the module docs); the old one, if any, is removed.
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.staging)?;
        self.crash_point("before-rename");
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|e| {
                Error::io(
                    &self.target,
                    std::io::Error::new(
                        e.kind(),
                        format!("renaming {} to {}: {e}", from.display(), to.display()),
                    ),
                )
            })
        };
        if is_empty_dir(&self.target) {
            std::fs::remove_dir(&self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        if std::fs::symlink_metadata(&self.target).is_ok() {
            rename(&self.target, &self.aside)?;
            sync_dir(&self.parent)?;
            self.crash_point("after-rename-old");
            if let Err(e) = rename(&self.staging, &self.target) {
                // Put the old directory back; the error says what failed.
                let _ = std::fs::rename(&self.aside, &self.target);
                let _ = sync_dir(&self.parent);
                return Err(e);
            }
            sync_dir(&self.parent)?;
            self.committed = true;
            self.crash_point("after-rename-new");
            remove_all(&self.aside)?;
        } else {
            rename(&self.staging, &self.target)?;
            self.committed = true;
        }
        sync_dir(&self.parent)
    }
}

impl Drop for DirTransaction {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Remove the temporary files `.NAME.tmp-PID` that [`super::atomic_write`] of `path` left behind
/// in a process that is no longer alive (a crash between writing and renaming).
pub(crate) fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_directory_appears_whole_and_replaces_the_old_one_whole() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("m");
        let tx = DirTransaction::begin(&t, "marker").unwrap();
        tx.write("marker", b"1").unwrap();
        tx.write("extra", b"x").unwrap();
        assert!(!t.exists(), "nothing is visible before the commit");
        tx.commit().unwrap();
        assert_eq!(names(&t), ["extra", "marker"]);
        let tx = DirTransaction::begin(&t, "marker").unwrap();
        tx.write("marker", b"2").unwrap();
        tx.commit().unwrap();
        assert_eq!(names(&t), ["marker"], "the old directory's files are gone");
        assert_eq!(std::fs::read(t.join("marker")).unwrap(), b"2");
        assert_eq!(names(root.path()), ["m"], "no leftover beside it");
    }

    #[test]
    fn a_dropped_transaction_leaves_the_target_and_no_staging() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("m");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("marker"), b"old").unwrap();
        let tx = DirTransaction::begin(&t, "marker").unwrap();
        tx.write("marker", b"new").unwrap();
        drop(tx);
        assert_eq!(std::fs::read(t.join("marker")).unwrap(), b"old");
        assert_eq!(names(root.path()), ["m"]);
    }

    #[test]
    fn foreign_directories_and_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("m");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("notes.txt"), b"mine").unwrap();
        let e = DirTransaction::begin(&t, "marker").unwrap_err().to_string();
        assert!(
            e.contains("holds no marker") && e.contains("refusing"),
            "{e}"
        );
        assert!(t.join("notes.txt").exists());
        let f = root.path().join("file");
        std::fs::write(&f, b"").unwrap();
        let e = DirTransaction::begin(&f, "marker").unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let e = check_replaceable(&f.join("m"), "marker")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
        assert!(DirTransaction::begin(Path::new("/"), "marker").is_err());
        // an empty directory is taken
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let tx = DirTransaction::begin(&empty, "marker").unwrap();
        tx.write("marker", b"").unwrap();
        tx.commit().unwrap();
        assert_eq!(names(&empty), ["marker"]);
    }

    #[cfg(unix)]
    #[test]
    fn an_interrupted_swap_is_rolled_back_and_leftovers_of_dead_writers_removed() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("m");
        // A dead writer (pid beyond pid_max) set the old directory aside and left its staging.
        let dead = u32::MAX - 1;
        let old = root.path().join(format!(".m{OLD_TAG}{dead}-0"));
        let new = root.path().join(format!(".m{NEW_TAG}{dead}-0"));
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("marker"), b"old").unwrap();
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("marker"), b"half").unwrap();
        assert!(recover_dir(&t).unwrap());
        assert_eq!(std::fs::read(t.join("marker")).unwrap(), b"old");
        assert!(!recover_dir(&t).unwrap(), "nothing more to recover");
        let tx = DirTransaction::begin(&t, "marker").unwrap();
        let mut left = names(root.path());
        left.retain(|n| !n.contains(&std::process::id().to_string()));
        assert_eq!(left, ["m"], "the dead writer's staging is removed");
        drop(tx);
        // A live writer's leftovers (this process's parent) stay.
        let live = std::os::unix::process::parent_id();
        let busy = root.path().join(format!(".m{NEW_TAG}{live}-7"));
        std::fs::create_dir(&busy).unwrap();
        drop(DirTransaction::begin(&t, "marker").unwrap());
        assert!(busy.exists());
    }

    #[test]
    fn a_misspelt_crash_hook_is_an_error_naming_the_variable() {
        assert_eq!(crash_hook(None).unwrap(), None);
        assert_eq!(
            crash_hook(Some("after-meta".into())).unwrap().as_deref(),
            Some("after-meta")
        );
        let e = crash_hook(Some("after-everything".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(CRASH_ENV) && e.contains("after-everything"),
            "{e}"
        );
    }

    #[test]
    fn leftover_names_are_recognised() {
        assert_eq!(leftover(".m.rgshield-old-12-3", "m"), Some((true, 12)));
        assert_eq!(leftover(".m.rgshield-new-12-0", "m"), Some((false, 12)));
        assert_eq!(leftover(".mm.rgshield-new-12-0", "m"), None);
        assert_eq!(leftover("m", "m"), None);
    }
}
