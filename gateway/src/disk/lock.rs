//! The cache directory's lock: one gateway per directory. Two gateways writing one directory
//! would evict each other's files from under their indexes and race on `pins.json`, so `open`
//! takes an exclusive `flock` on `<cache-dir>/lock` and holds it for the life of the tier; the
//! holder's pid is written into the file so the refusal can name it. The kernel drops the lock
//! when the process dies, so a crash never leaves the directory locked.

use super::DiskError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `acquire` waits when the holder is this very process: a tier being dropped (a
/// gateway restarted in-process, as tests do) releases it as its last reference goes.
const SAME_PROCESS_WAIT: Duration = Duration::from_secs(10);

/// The held lock; released when dropped (the file is closed).
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Lock `root` (which exists) or say who holds it.
    pub(super) fn acquire(root: &Path) -> Result<Self, DiskError> {
        let path = root.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let deadline = Instant::now() + SAME_PROCESS_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let holder = holder_pid(&mut file);
                    if holder == Some(std::process::id()) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    return Err(DiskError::Locked {
                        dir: root.to_path_buf(),
                        holder,
                    });
                }
                Err(e) => return Err(DiskError::Io(e.into())),
            }
        }
        // Ours now: record our pid for the next one to name (best effort: the lock is the flock,
        // not the file's contents).
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file })
    }
}

/// The pid the lock file names, if it names one.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
