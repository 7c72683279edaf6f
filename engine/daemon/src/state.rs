//! Atomic writes for state files.
//!
//! A state file is replaced whole or not at all: the new content goes to a
//! temporary file in the same directory, is flushed to disk, renamed over the
//! old one, and the directory is flushed so the rename itself survives a
//! power cut. Readers never see a partial file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write '{}': {source}", path.display())]
pub struct WriteError {
    /// The file being replaced.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Replaces `path` with `contents` atomically, with permissions `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_the_file_whole_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.xml");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, b"<domain/>", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"<domain/>");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failure_keeps_the_old_file_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be replaced by a file: rename fails.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "keep").unwrap();
        let err = write_atomic(&path, b"new", 0o644).unwrap_err();
        assert_eq!(err.path, path);
        assert!(err.to_string().starts_with("cannot write '"));
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"keep");
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary file was not cleaned up");
    }
}
