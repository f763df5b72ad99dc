//! The build context: a commit's tree, streamed as a tar. Files are read
//! through one `git cat-file --batch`, which streams each blob: a big file
//! is never in memory whole, however well it compresses.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

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
pub(crate) fn open_repo(path: &Path) -> Result<Repository, git2::Error> {
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

/// The bytes of the files in `tree`, as its build context holds them, from
/// the objects' headers: nothing is inflated.
pub(crate) fn tree_size(repo: &Repository, tree: &git2::Tree<'_>) -> Result<u64, git2::Error> {
    let odb = repo.odb()?;
    let mut total = 0u64;
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        match odb.read_header(entry.id()) {
            Ok((size, _)) => {
                total = total.saturating_add(size as u64);
                TreeWalkResult::Ok
            }
            Err(err) => {
                failure = Some(err);
                TreeWalkResult::Abort
            }
        }
    })
    .or_else(|err| if failure.is_some() { Ok(()) } else { Err(err) })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(total),
    }
}

fn write_tar(repo_path: &Path, tree: Oid, writer: ChunkWriter) -> io::Result<()> {
    let repo = open_repo(repo_path).map_err(io::Error::other)?;
    let tree = repo.find_tree(tree).map_err(io::Error::other)?;
    let mut blobs = Blobs::open(repo_path)?;
    let mut archive = tar::Builder::new(writer);
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else { return TreeWalkResult::Skip };
        let path = format!("{dir}{name}");
        match append_entry(&mut blobs, &mut archive, &path, entry) {
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
    blobs: &mut Blobs,
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
        Some(ObjectType::Blob) if entry.filemode() == 0o120_000 => {
            let mut target = Vec::new();
            blobs.read(entry.id(), |_, content| content.take(MAX_LINK).read_to_end(&mut target))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            archive.append_link(&mut header, path, String::from_utf8_lossy(&target).as_ref())
        }
        Some(ObjectType::Blob) => blobs.read(entry.id(), |size, content| {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if entry.filemode() == 0o100_755 { 0o755 } else { 0o644 });
            header.set_size(size);
            archive.append_data(&mut header, path, content)
        }),
        // Submodules (commits) have no content in this repo.
        _ => Ok(()),
    }
}

/// The longest symlink target read.
const MAX_LINK: u64 = 4096;

/// Blobs read one after the other from one `git cat-file --batch`, which
/// streams each (git's own streaming of big blobs, loose or packed). In a
/// `pre-receive` hook it inherits git's environment, so it also sees the
/// pushed objects still in quarantine.
struct Blobs {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Blobs {
    fn open(repo: &Path) -> io::Result<Blobs> {
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(repo)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("git cat-file's streams were not piped"));
        };
        Ok(Blobs { child, input: Some(input), output: BufReader::with_capacity(CHUNK_SIZE, output) })
    }

    /// Hands the content of blob `id`, and its size, to `use_it`.
    fn read<T>(&mut self, id: Oid, use_it: impl FnOnce(u64, &mut dyn Read) -> io::Result<T>) -> io::Result<T> {
        let input = self.input.as_mut().ok_or_else(|| io::Error::other("git cat-file was closed"))?;
        writeln!(input, "{id}")?;
        input.flush()?;
        // `ID blob SIZE`, or `ID missing`.
        let mut header = String::new();
        self.output.read_line(&mut header)?;
        let size = match header.split_whitespace().collect::<Vec<_>>().as_slice() {
            [_, "blob", size] => size.parse::<u64>().map_err(io::Error::other)?,
            _ => return Err(io::Error::other(format!("git cat-file cannot read blob {id}: {}", header.trim()))),
        };
        let mut content = (&mut self.output).take(size);
        let used = use_it(size, &mut content)?;
        // What `use_it` left, then the newline after the content.
        io::copy(&mut content, &mut io::sink())?;
        let mut newline = [0u8; 1];
        self.output.read_exact(&mut newline)?;
        Ok(used)
    }
}

impl Drop for Blobs {
    fn drop(&mut self) {
        // Without input, git ends.
        drop(self.input.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
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
