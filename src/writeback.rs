//! Write-back in small steps, so that no file's dirty pages reach the disk in one burst.
//!
//! Why: every answer waits on the audit trail's `fdatasync`, and on the measured machine (ext4
//! on a virtual disk) a burst of write-back from another file on the same disk held one up for
//! 40–115 ms, and every answer in flight with it: the kernel flushing tens of megabytes of the
//! development outbox at once, or a sealed segment's 9 MB index written and fsync'd in one go
//! (docs/PERFORMANCE.md, "The tail of a node under load"). Writing back a step at a time keeps
//! what the disk has queued ahead of the trail small. RocksDB's `bytes_per_sync` is the same
//! idea.

use std::fs::File;
use std::io::{self, Write};

/// How much a file may have dirty (or, for [`write_in_steps`], on its way to the disk) at a time.
pub const STEP: usize = 1 << 20;

/// Starts write-back of all `file`'s dirty pages and returns at once (no wait, no flush of the
/// disk's cache: durability stays the caller's `fsync`). Best effort: an error only means the
/// kernel writes them back later, as it would have anyway.
pub fn start(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range(2) on a descriptor `file` owns; offset 0 and length 0 mean the
        // whole file. It reads no memory of ours.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Writes `bytes` to `file` (a new file: from offset 0) a [`STEP`] at a time, each step handed
/// to the disk and waited for before the next is written. The caller still `fsync`s at the end.
pub fn write_in_steps(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    let mut at = 0usize;
    for chunk in bytes.chunks(STEP) {
        file.write_all(chunk)?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let flags =
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: as in `start`, on the range just written.
            let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), at as i64, chunk.len() as i64, flags) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        at += chunk.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_in_steps_is_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..(2 * STEP + 12_345)).map(|i| (i % 251) as u8).collect();
        let mut f = File::create(&path).unwrap();
        write_in_steps(&mut f, &bytes).unwrap();
        start(&f);
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
