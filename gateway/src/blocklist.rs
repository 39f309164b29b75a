//! The denylist: Blob IDs this gateway refuses (451 `FORBIDDEN_BLOB`), as the Walrus
//! aggregator's `--blocklist FILE`.
//!
//! The file has the aggregator's format, a YAML sequence of Blob IDs (`- <id>` per line, or a flow
//! sequence such as `[]`; `#` comments allowed), so one file can serve both. It is read at start
//! (an unreadable or malformed file stops the start: a gateway must not serve what an operator
//! meant to block), re-read when its modification time, size or inode changes (checked every
//! [`POLL`]) and on `SIGHUP`; a file that fails to parse later keeps the list in force and is
//! counted. The admin routes (`PUT`/`DELETE /admin/blocklist/{id}`) write the file (a temporary
//! file renamed over it), then change the list, so an edit survives a restart.
//!
//! Guarantees: a listed ID is refused before any cache lookup (the memory-hit lane included; an
//! empty list costs it one atomic load, a non-empty one an uncontended read lock), never filled
//! ([`crate::fill::Filler::open`] and its metadata reads check first), never published or loaded
//! as a model; the moment it is added its bytes are purged from memory and disk, and a fill that
//! was running for it is purged again once it ends.

use crate::fill::Filler;
use codec::BlobId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

/// How often the file's metadata is looked at for changes.
pub const POLL: Duration = Duration::from_millis(250);

/// Longest a purge waits for a fill of a newly blocked ID to end before purging again.
const FILL_DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// Why the blocklist could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error(
        "cannot read the blocklist {path}: {source} (create it, empty, to start with no entry)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blocklist {path}, line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot write the blocklist {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no blocklist file (start with --blocklist FILE)")]
    NoFile,
}

/// The set of blocked Blob IDs, shared by every clone.
#[derive(Clone, Default)]
pub struct Blocklist {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Blocklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocklist")
            .field("entries", &self.len())
            .field("file", &self.file())
            .finish()
    }
}

#[derive(Default)]
struct Shared {
    /// Whether any ID is listed: the common empty list costs the hit path one atomic load.
    any: AtomicBool,
    ids: RwLock<Arc<HashSet<BlobId>>>,
    /// The file the list lives in (`--blocklist`); set once.
    file: OnceLock<PathBuf>,
    /// Held by whoever reads or writes the file (a reload never interleaves with an admin edit);
    /// the stamp of the file as last read or written.
    writer: Mutex<Option<Stamp>>,
}

/// What tells a changed file from the one last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

impl Blocklist {
    /// Whether `id` is refused.
    #[inline]
    pub fn is_blocked(&self, id: &BlobId) -> bool {
        self.shared.any.load(Ordering::Acquire) && self.snapshot().contains(id)
    }

    fn snapshot(&self) -> Arc<HashSet<BlobId>> {
        self.shared
            .ids
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Every blocked ID, in text order.
    pub fn ids(&self) -> Vec<BlobId> {
        let mut ids: Vec<BlobId> = self.snapshot().iter().copied().collect();
        ids.sort_by_cached_key(|id| id.to_string());
        ids
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        !self.shared.any.load(Ordering::Acquire)
    }

    /// The file the list is kept in, if any.
    pub fn file(&self) -> Option<&Path> {
        self.shared.file.get().map(PathBuf::as_path)
    }

    /// Replace the list with `ids`; returns the IDs that were not blocked before.
    fn install(&self, ids: HashSet<BlobId>) -> Vec<BlobId> {
        let mut slot = self
            .shared
            .ids
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let added = ids.difference(&slot).copied().collect();
        self.shared.any.store(!ids.is_empty(), Ordering::Release);
        *slot = Arc::new(ids);
        added
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Option<Stamp>> {
        self.shared
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read the list from `path` and keep it there from now on. Called once, at start.
    pub fn open(&self, path: &Path) -> Result<(), BlocklistError> {
        let _ = self.shared.file.set(path.to_owned());
        self.reload(true).map(|_| ())
    }

    /// Re-read the file if it changed since last read or written (or always, when `force`);
    /// returns the IDs newly blocked. A file that cannot be read or parsed changes nothing.
    pub fn reload(&self, force: bool) -> Result<Vec<BlobId>, BlocklistError> {
        let Some(path) = self.file() else {
            return Ok(Vec::new());
        };
        let mut last = self.lock_writer();
        let now = stamp(path);
        if !force && now == *last {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(path).map_err(|source| BlocklistError::Read {
            path: path.to_owned(),
            source,
        })?;
        let ids = parse(&text).map_err(|(line, reason)| BlocklistError::Parse {
            path: path.to_owned(),
            line,
            reason,
        })?;
        *last = now;
        Ok(self.install(ids))
    }

    /// Block (`true`) or unblock `id`, writing the file first; whether the list changed.
    pub fn set(&self, id: BlobId, blocked: bool) -> Result<bool, BlocklistError> {
        let path = self.file().ok_or(BlocklistError::NoFile)?;
        let mut last = self.lock_writer();
        let mut ids = (*self.snapshot()).clone();
        let changed = if blocked {
            ids.insert(id)
        } else {
            ids.remove(&id)
        };
        if !changed {
            return Ok(false);
        }
        write_file(path, &render(&ids)).map_err(|source| BlocklistError::Write {
            path: path.to_owned(),
            source,
        })?;
        *last = stamp(path);
        self.install(ids);
        Ok(true)
    }
}

/// Write `text` to `path` through a temporary file in the same directory, synced and renamed
/// over it: a reader (this gateway's poll, an aggregator sharing the file) never sees half a list.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The file text for `ids`: the YAML sequence the aggregator writes, sorted so edits diff well.
pub fn render(ids: &HashSet<BlobId>) -> String {
    if ids.is_empty() {
        return "[]\n".into();
    }
    let mut lines: Vec<String> = ids.iter().map(|id| format!("- {id}\n")).collect();
    lines.sort();
    lines.concat()
}

/// Parse the aggregator's YAML blocklist: a block sequence (`- id` lines) or a flow sequence
/// (`[id, id]`, possibly over several lines); comments, blank lines, a `---` document start,
/// and quoted IDs are accepted. The error names the 1-based line and why.
pub fn parse(text: &str) -> Result<HashSet<BlobId>, (usize, String)> {
    let mut ids = HashSet::new();
    // Lines without comments or surrounding blanks, with their numbers.
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(n, line)| (n + 1, strip_comment(line).trim()))
        .filter(|(_, line)| !line.is_empty() && *line != "---" && *line != "...")
        .collect();
    if lines.first().is_some_and(|(_, l)| l.starts_with('[')) {
        let joined: String = lines.iter().map(|(_, l)| *l).collect::<Vec<_>>().join(" ");
        let first = lines[0].0;
        let inner = joined
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or((first, "a flow sequence must end with ']'".to_owned()))?;
        for item in inner.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            ids.insert(parse_id(item).map_err(|e| (first, e))?);
        }
        return Ok(ids);
    }
    for (n, line) in lines {
        let item = line
            .strip_prefix('-')
            .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
            .ok_or((n, format!("expected '- <Blob ID>', got {:?}", clip(line))))?;
        ids.insert(parse_id(item.trim()).map_err(|e| (n, e))?);
    }
    Ok(ids)
}

/// The line up to a `#` that starts a comment (at the start or after a blank). Blob IDs are
/// base64url and never contain `#`.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn parse_id(item: &str) -> Result<BlobId, String> {
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| item.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
        .unwrap_or(item);
    unquoted
        .parse()
        .map_err(|e| format!("{:?} is not a Blob ID: {e}", clip(unquoted)))
}

fn clip(text: &str) -> String {
    text.chars().take(60).collect()
}

/// The Blob ID a request path names, for the routes that take one: `/v1/blobs/{id}` and what
/// follows it, `/v1alpha/blobs/{id}/...`, `/v1/inference/{id}` and `/v1/models/{id}/...`.
pub fn blob_id_in_path(path: &str) -> Option<BlobId> {
    let mut segments = path.trim_start_matches('/').split('/');
    let id = match (segments.next()?, segments.next()?) {
        ("v1" | "v1alpha", "blobs") | ("v1", "inference") | ("v1", "models") => segments.next()?,
        _ => return None,
    };
    // 43 characters: not `by-object-id` or `concat`, which are not IDs.
    if id.len() != 43 {
        return None;
    }
    id.parse().ok()
}

/// Drop the bytes of newly blocked `ids` from memory and disk now, and again when a fill that
/// was running for one of them ends (it could otherwise land after the purge).
pub async fn enforce(filler: &Filler, ids: &[BlobId]) {
    for &id in ids {
        purge(filler, id).await;
        if let Some(mut reader) = filler.join(&id) {
            let filler = filler.clone();
            tokio::spawn(async move {
                let drained = tokio::time::timeout(FILL_DRAIN_LIMIT, async {
                    while reader.next_row().await.is_some() {}
                    // The fill leaves the map after caching its blob.
                    while filler.join(&id).is_some() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                if drained.is_err() {
                    tracing::warn!(blob_id = %id, "a fill of a blocked blob did not end in time");
                }
                purge(&filler, id).await;
            });
        }
    }
}

async fn purge(filler: &Filler, id: BlobId) {
    match filler.cache().purge(&id).await {
        Ok(true) => {
            filler.telemetry().blocklist_purged();
            tracing::info!(blob_id = %id, "blocked blob purged from the cache");
        }
        Ok(false) => {}
        Err(e) => tracing::error!(blob_id = %id, error = %e, "cannot purge a blocked blob"),
    }
}

/// Stops the file watcher when dropped (with the [`crate::api::Api`] that owns it).
pub struct Watch {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Re-read the file every [`POLL`] when it changed, and on `SIGHUP`; purge what is newly
/// blocked. Runs until the returned [`Watch`] is dropped.
pub fn watch(filler: Filler) -> Watch {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            let force = tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = hup => true,
            };
            let blocklist = filler.blocklist().clone();
            let reloaded = tokio::task::spawn_blocking(move || blocklist.reload(force)).await;
            match reloaded {
                Ok(Ok(added)) => {
                    if force || !added.is_empty() {
                        tracing::info!(
                            added = added.len(),
                            entries = filler.blocklist().len(),
                            "blocklist reloaded"
                        );
                    }
                    filler
                        .telemetry()
                        .blocklist_loaded(filler.blocklist().len(), true);
                    enforce(&filler, &added).await;
                }
                Ok(Err(e)) => {
                    filler
                        .telemetry()
                        .blocklist_loaded(filler.blocklist().len(), false);
                    tracing::error!(error = %e, "blocklist not reloaded: the previous list stays in force");
                }
                Err(e) => tracing::error!(error = %e, "blocklist reload task failed"),
            }
        }
    });
    Watch { _stop: stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    #[test]
    fn block_and_flow_sequences_parse() {
        let (a, b) = (id(1), id(2));
        let block = format!("# taken down\n---\n- {a}\n-   '{b}'  # court order\n\n");
        assert_eq!(parse(&block).unwrap(), HashSet::from([a, b]));
        let flow = format!("[{a},\n \"{b}\"]\n");
        assert_eq!(parse(&flow).unwrap(), HashSet::from([a, b]));
        assert!(parse("[]").unwrap().is_empty());
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nothing yet\n").unwrap().is_empty());
    }

    #[test]
    fn what_the_gateway_writes_it_reads_back() {
        let ids = HashSet::from([id(1), id(9), id(200)]);
        assert_eq!(parse(&render(&ids)).unwrap(), ids);
        assert_eq!(parse(&render(&HashSet::new())).unwrap(), HashSet::new());
    }

    #[test]
    fn malformed_lists_name_the_line() {
        let a = id(1);
        assert_eq!(parse(&format!("- {a}\n- nope\n")).unwrap_err().0, 2);
        assert_eq!(parse(&format!("- {a}\n{a}\n")).unwrap_err().0, 2);
        assert_eq!(parse(&format!("-{a}\n")).unwrap_err().0, 1);
        assert_eq!(parse(&format!("[{a}\n")).unwrap_err().0, 1);
        assert_eq!(parse("blobs:\n  - x\n").unwrap_err().0, 1);
    }

    #[test]
    fn paths_name_their_blob() {
        let a = id(7);
        for path in [
            format!("/v1/blobs/{a}"),
            format!("/v1/blobs/{a}/byte-range"),
            format!("/v1alpha/blobs/{a}/stream"),
            format!("/v1/inference/{a}"),
            format!("/v1/models/{a}/warm"),
        ] {
            assert_eq!(blob_id_in_path(&path), Some(a), "{path}");
        }
        for path in [
            "/v1/blobs/by-object-id/0x01",
            "/v1alpha/blobs/concat",
            "/status",
            "/v1/blobs",
        ] {
            assert_eq!(blob_id_in_path(path), None, "{path}");
        }
    }

    #[test]
    fn edits_persist_and_reloads_see_outside_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocklist.yaml");
        std::fs::write(&path, "[]\n").unwrap();
        let list = Blocklist::default();
        list.open(&path).unwrap();
        assert!(list.is_empty() && !list.is_blocked(&id(1)));
        assert!(list.set(id(1), true).unwrap());
        assert!(!list.set(id(1), true).unwrap(), "already blocked");
        assert!(list.is_blocked(&id(1)));
        assert_eq!(
            parse(&std::fs::read_to_string(&path).unwrap()).unwrap(),
            HashSet::from([id(1)])
        );
        // Our own write is not a change to re-read.
        assert!(list.reload(false).unwrap().is_empty());
        std::fs::write(&path, format!("- {}\n- {}\n", id(1), id(2))).unwrap();
        assert_eq!(list.reload(true).unwrap(), vec![id(2)]);
        // A broken file keeps the list in force.
        std::fs::write(&path, "- garbage\n").unwrap();
        assert!(list.reload(true).is_err());
        assert!(list.is_blocked(&id(2)));
        let reopened = Blocklist::default();
        std::fs::write(&path, format!("- {}\n", id(2))).unwrap();
        reopened.open(&path).unwrap();
        assert!(reopened.is_blocked(&id(2)) && !reopened.is_blocked(&id(1)));
        assert!(reopened.set(id(2), false).unwrap());
        assert!(reopened.is_empty());
    }

    #[test]
    fn a_missing_file_stops_the_start_and_no_file_refuses_edits() {
        let dir = tempfile::tempdir().unwrap();
        let list = Blocklist::default();
        assert!(matches!(
            list.open(&dir.path().join("absent.yaml")),
            Err(BlocklistError::Read { .. })
        ));
        assert!(matches!(
            Blocklist::default().set(id(1), true),
            Err(BlocklistError::NoFile)
        ));
    }
}
