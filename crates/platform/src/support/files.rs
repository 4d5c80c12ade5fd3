//! Noticing that a file we re-read on change (JWKS, token, TLS certificates and keys) was rewritten, without missing a rewrite.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::Path,
    time::{Duration, SystemTime},
};

/// How recent a modification time must be for the file's contents to be compared too.
/// Filesystems stamp files with a coarse clock (one kernel tick, up to 10 ms, on Linux),
/// so two writes within one tick can leave the same modification time (and the same
/// size, e.g. a rotated key of the same type): git's "racily clean" problem, solved
/// the same way.
const RACY: Duration = Duration::from_secs(2);

/// What a file looked like when it was last read: its modification time and size, and,
/// while the modification time is too recent to tell two writes apart (see [`RACY`]), a
/// digest of its contents. Two stamps differ when the file was rewritten. A stamp taken
/// in the racy window differs from one taken later, which costs one needless re-read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    modified: SystemTime,
    len: u64,
    digest: Option<u64>,
}

impl FileStamp {
    /// The stamp of the file at `path` now: one `stat`, plus a read of the file while its
    /// modification time is recent. `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        let modified = metadata.modified().ok()?;
        let racy = SystemTime::now().duration_since(modified).map_or(true, |age| age < RACY);
        let digest = if racy {
            let mut hasher = DefaultHasher::new();
            std::fs::read(path).ok()?.hash(&mut hasher);
            Some(hasher.finish())
        } else {
            None
        };
        Some(Self { modified, len: metadata.len(), digest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_of_the_same_size_at_once_is_noticed() {
        let dir = std::env::temp_dir().join(format!("files-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("key.json");
        // As rotation tools do (and the JWKS writer of our tests): write a new file, then
        // rename it over the old one. A new file gets the coarse clock's time.
        let replace = |contents: String| {
            let temporary = dir.join("key.json.tmp");
            std::fs::write(&temporary, contents).expect("written");
            std::fs::rename(&temporary, &path).expect("renamed");
        };
        for round in 0..100 {
            replace(format!("{{\"kid\": \"a{round:03}\"}}"));
            let before = FileStamp::of(&path).expect("readable");
            replace(format!("{{\"kid\": \"b{round:03}\"}}"));
            assert_ne!(FileStamp::of(&path), Some(before), "round {round}: the rewrite went unnoticed");
        }
        assert_eq!(FileStamp::of(&path), FileStamp::of(&path), "an unchanged file keeps its stamp");
        assert_eq!(FileStamp::of(&dir.join("missing")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
