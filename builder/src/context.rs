//! The build context: a commit's tree, streamed as a tar.

use std::io::{self, Write};
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::Stream;
use git2::{ObjectType, Oid, Repository, RepositoryOpenFlags, TreeWalkMode, TreeWalkResult};
use tokio::sync::mpsc;

/// Chunks in flight between the tar writer and dockerd. Bounded, so a slow
/// daemon slows the writer instead of filling memory.
const CHUNKS_IN_FLIGHT: usize = 8;
const CHUNK_SIZE: usize = 64 * 1024;

/// Opens the repo the way git's hooks expect: during `pre-receive` the new
/// objects sit in a quarantine directory that only git's environment names.
pub(crate) fn open_repo(path: &std::path::Path) -> Result<Repository, git2::Error> {
    if std::env::var_os("GIT_DIR").is_some() {
        Repository::open_ext(path, RepositoryOpenFlags::FROM_ENV, std::iter::empty::<&std::ffi::OsStr>())
    } else {
        Repository::open_bare(path)
    }
}

/// Streams the tree `tree` of the repo at `repo` as a tar archive.
pub(crate) fn tar_stream(repo: PathBuf, tree: Oid) -> impl Stream<Item = Result<Bytes, io::Error>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK_SIZE) };
        if let Err(err) = write_tar(&repo, tree, writer) {
            let _ = tx.blocking_send(Err(err));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

fn write_tar(repo: &std::path::Path, tree: Oid, writer: ChunkWriter) -> io::Result<()> {
    let repo = open_repo(repo).map_err(io::Error::other)?;
    let tree = repo.find_tree(tree).map_err(io::Error::other)?;
    let mut archive = tar::Builder::new(writer);
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else { return TreeWalkResult::Skip };
        let path = format!("{dir}{name}");
        match append_entry(&repo, &mut archive, &path, entry) {
            Ok(()) => TreeWalkResult::Ok,
            Err(err) => {
                failure = Some(err);
                TreeWalkResult::Abort
            }
        }
    })
    .or_else(|err| if failure.is_some() { Ok(()) } else { Err(err) })
    .map_err(io::Error::other)?;
    if let Some(err) = failure {
        return Err(err);
    }
    archive.into_inner()?.flush()
}

fn append_entry(
    repo: &Repository,
    archive: &mut tar::Builder<ChunkWriter>,
    path: &str,
    entry: &git2::TreeEntry<'_>,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    match entry.kind() {
        Some(ObjectType::Tree) => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            archive.append_data(&mut header, format!("{path}/"), io::empty())
        }
        Some(ObjectType::Blob) => {
            let blob = repo.find_blob(entry.id()).map_err(io::Error::other)?;
            if entry.filemode() == 0o120_000 {
                let target = String::from_utf8_lossy(blob.content()).into_owned();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                archive.append_link(&mut header, path, target)
            } else {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if entry.filemode() == 0o100_755 { 0o755 } else { 0o644 });
                header.set_size(blob.size() as u64);
                archive.append_data(&mut header, path, blob.content())
            }
        }
        // Submodules (commits) have no content in this repo.
        _ => Ok(()),
    }
}

/// A `Write` that hands fixed-size chunks to the async side.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_SIZE)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the build stopped reading its context"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_SIZE {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}
