//! How much disk a node has for blobs, as placement weighs it.
//!
//! A node's capacity is its data filesystem (`statvfs`), optionally capped by a quota — the bytes
//! an operator lets Keelson use on a shared disk. With a quota, the bytes used are those of the
//! blob directory (blob files, shards, partial uploads), counted by walking it.

use std::io;
use std::path::Path;

/// Bytes in all and bytes still free for blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total: u64,
    pub free: u64,
}

/// Measures the filesystem holding `blob_root`, capped by `quota` when given.
pub fn measure(blob_root: &Path, quota: Option<u64>) -> io::Result<DiskSpace> {
    let fs = filesystem(blob_root)?;
    Ok(match quota {
        None => fs,
        Some(quota) => {
            let used = used_bytes(blob_root)?;
            DiskSpace {
                total: fs.total.min(quota),
                free: fs.free.min(quota.saturating_sub(used)),
            }
        }
    })
}

/// The filesystem's size and the bytes available to unprivileged writers.
fn filesystem(path: &Path) -> io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok(DiskSpace {
        total: st.f_blocks as u64 * unit,
        free: st.f_bavail as u64 * unit,
    })
}

/// Bytes of every file under `root`.
fn used_bytes(root: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_caps_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let fs = measure(dir.path(), None).unwrap();
        assert!(fs.total > 0 && fs.free <= fs.total);
        std::fs::create_dir_all(dir.path().join("sha256/ab")).unwrap();
        std::fs::write(dir.path().join("sha256/ab/x"), vec![0u8; 3000]).unwrap();
        let capped = measure(dir.path(), Some(10_000)).unwrap();
        assert_eq!(capped.total, 10_000);
        assert_eq!(capped.free, 7_000);
        assert_eq!(measure(dir.path(), Some(1000)).unwrap().free, 0);
    }
}
