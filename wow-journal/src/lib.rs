//! One way to keep state on disk, shared by the workspace's stores
//! (`dhcp-virt`'s and `ipsec-ca`'s `FileStore`): a snapshot, replaced
//! atomically, and an append-only journal of the numbered changes made
//! since, one JSON line `{"seq":N,"change":…}` each.
//!
//! - [`write_atomic`] replaces a whole file: write a temporary file beside
//!   it, fsync it, rename it over the target, fsync the directory. A crash
//!   leaves the old file or the new one, never a mix.
//! - [`encode`] turns changes into journal lines; [`append`] writes them
//!   with one `write` and one `fdatasync`, and cuts a partial line off
//!   again if that fails.
//! - [`replay`] reads a journal back: it skips lines the snapshot already
//!   holds (a crash between a snapshot and the journal reset is harmless),
//!   applies the rest in order, refuses a gap in the numbering, and stops
//!   at a torn last line (no newline, or a line that does not decode: a
//!   crash in the middle of an append, never acknowledged) so that the
//!   caller can cut it off. Damage before the last line is an error.
//!
//! What the snapshot holds, when to compact and how errors are reported
//! stay with each store.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("wow-journal-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let journal = dir.join("journal.jsonl");
//! wow_journal::write_atomic(&journal, &dir.join(".journal.tmp"), b"", Some(0o600))?;
//!
//! // Two changes after a snapshot at change 0, then a torn third.
//! let mut lines = Vec::new();
//! wow_journal::encode(1, &["a".to_string(), "b".to_string()], &mut lines)?;
//! let mut file = std::fs::OpenOptions::new().append(true).open(&journal)?;
//! wow_journal::append(&mut file, 0, &lines)?;
//! wow_journal::append(&mut file, lines.len() as u64, br#"{"seq":3,"cha"#)?;
//!
//! let mut state = Vec::new();
//! let bytes = std::fs::read(&journal)?;
//! let done = wow_journal::replay(&bytes, 0, |change: String| {
//!     state.push(change);
//!     Ok::<(), String>(())
//! })?;
//! assert_eq!(state, ["a", "b"]);
//! assert_eq!((done.seq, done.lines, done.valid_len), (2, 2, lines.len()));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<C> {
    seq: u64,
    change: C,
}

/// A file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    /// What was attempted (`create`, `chmod`, `write`, `fsync`, `rename`,
    /// `fsync dir`).
    pub op: &'static str,
    /// The file it was attempted on.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `bytes` atomically and durably through the
/// temporary file `tmp` (which must be in the same directory): write
/// `tmp`, fsync it, rename it over `path`, fsync the directory. With a
/// `mode` (Unix), `tmp` is created with it and set to it, so that a
/// leftover temporary file does not keep an older mode.
pub fn write_atomic(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> Result<(), IoError> {
    {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        }
        let mut file = options.open(tmp).map_err(io_err("create", tmp))?;
        #[cfg(unix)]
        if let Some(mode) = mode {
            fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(io_err("chmod", tmp))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        file.write_all(bytes).map_err(io_err("write", tmp))?;
        file.sync_all().map_err(io_err("fsync", tmp))?;
    }
    fs::rename(tmp, path).map_err(io_err("rename", path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync dir", dir))
}

/// Appends the journal lines for `changes`, numbered from `first_seq`,
/// to `out`.
pub fn encode<'a, C: Serialize + 'a>(
    first_seq: u64,
    changes: impl IntoIterator<Item = &'a C>,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    for (seq, change) in (first_seq..).zip(changes) {
        serde_json::to_writer(&mut *out, &Entry { seq, change })?;
        out.push(b'\n');
    }
    Ok(())
}

/// Why [`append`] failed.
#[derive(Debug, thiserror::Error)]
#[error("journal append: {source}")]
pub struct AppendError {
    /// The write or `fdatasync` error.
    #[source]
    pub source: io::Error,
    /// Whether the journal was cut back to its valid prefix (and that
    /// synced); if not, a partial line may remain, and the caller should
    /// write a snapshot instead of appending again.
    pub rolled_back: bool,
}

/// Appends `lines` to the journal `file` (opened for appending, its valid
/// prefix `valid_len` bytes long) with one `write` and one `fdatasync`.
/// On failure it cuts the file back to `valid_len`.
pub fn append(file: &mut File, valid_len: u64, lines: &[u8]) -> Result<(), AppendError> {
    let Err(source) = file.write_all(lines).and_then(|()| file.sync_data()) else {
        return Ok(());
    };
    let rolled_back = file
        .set_len(valid_len)
        .and_then(|()| file.sync_data())
        .is_ok();
    Err(AppendError {
        source,
        rolled_back,
    })
}

/// What [`replay`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Bytes of whole, valid lines: shorter than the journal only by a
    /// torn last line, which the caller should cut off before appending.
    pub valid_len: usize,
    /// Valid lines, the skipped ones included.
    pub lines: usize,
    /// Number of the last change applied (the snapshot's if none was).
    pub seq: u64,
}

/// Damage before a journal's last line (numbered from 1).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E: Display> {
    /// A line that is not a journal entry of this type.
    #[error("line {line}: {source}")]
    Garbled {
        /// The line.
        line: usize,
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// A change numbered other than the next one.
    #[error("line {line}: change {seq} follows change {after}")]
    Gap {
        /// The line.
        line: usize,
        /// Its number.
        seq: u64,
        /// The number of the change before it.
        after: u64,
    },
    /// The caller's `apply` refused the change.
    #[error("line {line}: {reason}")]
    Apply {
        /// The line.
        line: usize,
        /// What `apply` returned.
        reason: E,
    },
}

/// Replays `journal` on top of a snapshot that holds the changes up to
/// `snapshot_seq`: lines numbered up to it are skipped, the following ones
/// go to `apply` in order. Stops at a torn last line.
pub fn replay<C: DeserializeOwned, E: Display>(
    journal: &[u8],
    snapshot_seq: u64,
    mut apply: impl FnMut(C) -> Result<(), E>,
) -> Result<Replayed, ReplayError<E>> {
    let mut done = Replayed {
        valid_len: 0,
        lines: 0,
        seq: snapshot_seq,
    };
    while let Some(rest) = journal.get(done.valid_len..).filter(|r| !r.is_empty()) {
        // No newline: a torn append, never acknowledged.
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = done.lines + 1;
        let entry: Entry<C> = match serde_json::from_slice(rest.get(..newline).unwrap_or_default())
        {
            Ok(entry) => entry,
            // A garbled last line is a torn append too; earlier ones are
            // damage.
            Err(_) if newline + 1 == rest.len() => break,
            Err(source) => return Err(ReplayError::Garbled { line, source }),
        };
        if entry.seq > done.seq {
            if entry.seq != done.seq + 1 {
                return Err(ReplayError::Gap {
                    line,
                    seq: entry.seq,
                    after: done.seq,
                });
            }
            apply(entry.change).map_err(|reason| ReplayError::Apply { line, reason })?;
            done.seq = entry.seq;
        }
        done.lines = line;
        done.valid_len += newline + 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn lines(first: u64, changes: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(first, changes, &mut out).unwrap();
        out
    }

    fn collect(journal: &[u8], snapshot: u64) -> Result<(Vec<u32>, Replayed), String> {
        let mut got = Vec::new();
        let done = replay(journal, snapshot, |c: u32| {
            if c == 666 {
                return Err("refused");
            }
            got.push(c);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok((got, done))
    }

    #[test]
    fn lines_replay_in_order_and_old_ones_are_skipped() {
        let j = lines(1, &[10, 20, 30]);
        let (got, done) = collect(&j, 0).unwrap();
        assert_eq!(got, [10, 20, 30]);
        assert_eq!(
            done,
            Replayed {
                valid_len: j.len(),
                lines: 3,
                seq: 3
            }
        );
        // A snapshot taken at change 2 and a journal not yet reset.
        let (got, done) = collect(&j, 2).unwrap();
        assert_eq!((got, done.seq, done.lines), (vec![30], 3, 3));
        assert_eq!(collect(b"", 7).unwrap().1.seq, 7);
    }

    #[test]
    fn a_torn_last_line_is_dropped() {
        let j = lines(1, &[10, 20]);
        let first = j.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut garbled = j[..first].to_vec();
        garbled.extend_from_slice(b"{\"seq\":2,\"chan\n");
        for torn in [&j[..j.len() - 1], &j[..first + 3], &garbled[..]] {
            let (got, done) = collect(torn, 0).unwrap();
            assert_eq!((got, done.valid_len, done.lines), (vec![10], first, 1));
        }
    }

    #[test]
    fn damage_before_the_last_line_is_an_error() {
        let j = String::from_utf8(lines(1, &[10, 20, 30])).unwrap();
        let garbled = j.replacen("\"seq\"", "\"sq\"", 1);
        let extra_field = j.replacen("\"seq\":1,", "\"seq\":1,\"x\":0,", 1);
        let gap = j.replacen("\"seq\":2", "\"seq\":5", 1);
        let refused = j.replacen(":20}", ":666}", 1);
        for (bad, what) in [
            (garbled, "line 1: unknown field `sq`"),
            (extra_field, "line 1: unknown field `x`"),
            (gap, "line 2: change 5 follows change 1"),
            (refused, "line 2: refused"),
        ] {
            let err = collect(bad.as_bytes(), 0).unwrap_err();
            assert!(err.starts_with(what), "{err}");
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wow-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    #[cfg(unix)]
    fn atomic_writes_replace_the_file_and_set_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("atomic");
        let (path, tmp) = (d.join("state.json"), d.join(".state.json.tmp"));
        // A leftover temporary file with a looser mode.
        fs::write(&tmp, b"old").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, &tmp, b"new", Some(0o600)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!tmp.exists());
        let err = write_atomic(&d.join("no/such"), &d.join("no/tmp"), b"", None).unwrap_err();
        assert_eq!(err.op, "create");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn appends_add_lines_and_a_failed_one_is_cut_off() {
        let d = dir("append");
        let path = d.join("journal");
        write_atomic(&path, &d.join("journal.tmp"), b"", None).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let one = lines(1, &[1]);
        append(&mut file, 0, &one).unwrap();
        append(&mut file, one.len() as u64, &lines(2, &[2])).unwrap();
        assert_eq!(collect(&fs::read(&path).unwrap(), 0).unwrap().0, [1, 2]);
        // A handle that cannot write: the append fails, the file is left
        // at its valid prefix.
        let mut read_only = File::open(&path).unwrap();
        let err = append(&mut read_only, one.len() as u64, &lines(3, &[3])).unwrap_err();
        assert!(!err.rolled_back);
        assert_eq!(collect(&fs::read(&path).unwrap(), 0).unwrap().0, [1, 2]);
        fs::remove_dir_all(d).unwrap();
    }
}
