//! Writing files so that a crash never leaves half of one behind.
//!
//! Everything the workbook saves (the corpus, checkpoints, plots, progress, reset's backups)
//! goes through [`AtomicFile`]: the bytes go to a temporary file beside the destination, which
//! replaces it in one rename once it is complete. Until then the destination keeps its old
//! content; if the process dies first, a `.write-*.part` file may be left beside it.

use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// A file could not be written; `path` is the destination, not the temporary file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    pub fn new(path: &Path, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A new version of `dest`, written into a temporary file that becomes `dest` on
/// [`AtomicFile::commit`]. Dropped without a commit, it is deleted and `dest` is untouched.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: NamedTempFile,
}

impl AtomicFile {
    /// Starts a new version of `dest`, creating its folder if needed.
    pub fn create(dest: &Path) -> Result<Self, WriteError> {
        let err = |source| WriteError::new(dest, source);
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(err)?;
        let tmp = tempfile::Builder::new()
            .prefix(".write-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(err)?;
        Ok(Self {
            dest: dest.to_path_buf(),
            tmp,
        })
    }

    /// The temporary file, for writers that want a path.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Flushes the new version to disk, gives it the usual permissions (temporary files start
    /// private to their owner) and renames it over the destination.
    pub fn commit(self) -> Result<(), WriteError> {
        let err = |source| WriteError::new(&self.dest, source);
        // Through the path, not our handle: some writers (safetensors) replace the file they
        // are given by a rename of their own.
        let file = std::fs::File::open(self.tmp.path()).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(err)?;
        }
        file.sync_all().map_err(err)?;
        self.tmp.persist(&self.dest).map_err(|e| err(e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Replaces `dest` with `bytes`, atomically.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomically_with(dest, |tmp| std::fs::write(tmp, bytes))
}

/// Replaces `dest` with what `write` puts in the file at the path it is given, atomically.
pub fn write_atomically_with(
    dest: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let file = AtomicFile::create(dest)?;
    write(file.path()).map_err(|source| WriteError::new(dest, source))?;
    file.commit()
}
