//! Which file a path names, as the control loop polls resource and secret files: Envoy picks up
//! a file when one is moved into place (an atomic rename; with `watched_directory`, a ConfigMap's
//! or Secret volume's `..data` swap) and not when it is written in place. Comparing the identity
//! of the file a path names (device, inode and birth time, following symlinks) sees exactly such
//! replacements. No reading, no state.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Which file a path names: a rename into place (or a symlink swapped to another target)
/// changes it, writing the file in place or reading it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    /// An inode number freed by one rename can be reused by the next file; its birth time still
    /// differs. Where the file system keeps none, the change time stands in (it also changes
    /// on a write in place, which is then picked up too).
    born: (i64, u32),
}

/// The identity of the file `path` names now, following symlinks (None: there is none).
pub fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    let born = match m.created().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => (d.as_secs() as i64, d.subsec_nanos()),
        None => (m.ctime(), m.ctime_nsec() as u32),
    };
    Some(Identity { dev: m.dev(), ino: m.ino(), born })
}
