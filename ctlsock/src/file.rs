//! Atomic, private file writes: the content lands whole or not at all, and
//! survives a crash once this returns.
//!
//! Steps: create a temporary file next to the destination (`create_new`,
//! the given mode, so it is never readable by others even for a moment),
//! write, `fsync`, rename over the destination, `fsync` the directory so the
//! rename itself is durable. On error the temporary file is removed.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Write `bytes` to `dest` atomically with permissions `mode` (e.g. 0o600).
pub fn save_atomic(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        base.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dest)?;
        // Make the rename itself durable.
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_whole_private_file_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        save_atomic(&p, b"one", 0o600).unwrap();
        save_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(save_atomic(&d.path().join("no/such/x"), b"", 0o600).is_err());
    }
}
