//! Progress for a user: lines in order, written by one task.
//!
//! Everything that reports (the builder, the runner, the release flow) sends
//! lines here; a single task writes them, so they never interleave. Over a
//! push the writer is the hook's stderr, which git turns into `remote:` lines.
//!
//! Output under a step (`detail`: a build's lines) is bounded: past
//! [`MAX_QUEUED_DETAILS`] lines waiting for a slow reader, more are skipped
//! and counted, and the reader is told how many. Steps and problems, which
//! nap itself writes, a few per release, always go through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Detail lines that may wait for the reader.
pub const MAX_QUEUED_DETAILS: usize = 1024;

#[derive(Clone)]
pub struct Reporter {
    lines: mpsc::UnboundedSender<Line>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    gone: AtomicBool,
    /// Detail lines sent and not written yet.
    queued: AtomicUsize,
    /// Detail lines skipped since the last one written.
    skipped: AtomicUsize,
}

enum Line {
    Always(String),
    Detail(String),
    /// This many detail lines were skipped here.
    Skipped(usize),
}

impl Reporter {
    /// Starts the writer task. Drop every clone of the reporter, then await
    /// the handle, to be sure every line was written; it hands the writer back.
    pub fn spawn<W>(mut out: W) -> (Reporter, JoinHandle<W>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (lines, mut rx) = mpsc::unbounded_channel::<Line>();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Some(line) = rx.recv().await {
                    let text = match line {
                        Line::Always(text) => text,
                        Line::Detail(text) => {
                            shared.queued.fetch_sub(1, Ordering::Relaxed);
                            text
                        }
                        Line::Skipped(n) => {
                            format!("        ... {n} lines of output skipped: they came faster than they were read")
                        }
                    };
                    if shared.gone.load(Ordering::Relaxed) {
                        continue;
                    }
                    let written = async {
                        out.write_all(text.as_bytes()).await?;
                        out.write_all(b"\n").await?;
                        out.flush().await
                    };
                    if written.await.is_err() {
                        shared.gone.store(true, Ordering::Relaxed);
                    }
                }
                out
            }
        });
        (Reporter { lines, shared }, task)
    }

    pub fn line(&self, marker: &str, text: &str) {
        self.send(Line::Always(format!("{marker} {text}")));
    }

    /// Queues `line`, after a note of the detail lines skipped before it.
    fn send(&self, line: Line) -> bool {
        let skipped = self.shared.skipped.swap(0, Ordering::Relaxed);
        if skipped > 0 {
            let _ = self.lines.send(Line::Skipped(skipped));
        }
        self.lines.send(line).is_ok()
    }

    /// A step of the work: `-----> Building ...`
    pub fn step(&self, text: &str) {
        self.line("----->", text);
    }

    /// Output under a step, such as build lines; skipped while
    /// [`MAX_QUEUED_DETAILS`] wait for the reader.
    pub fn detail(&self, text: &str) {
        if self.shared.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_DETAILS {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.send(Line::Detail(format!("       {text}"))) {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Why something failed.
    pub fn problem(&self, text: &str) {
        self.line(" !    ", text);
    }

    /// True once a write failed: nobody is reading any more.
    pub fn reader_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::{MAX_QUEUED_DETAILS, Reporter};

    #[tokio::test]
    async fn a_slow_reader_holds_up_a_bounded_queue_and_hears_what_was_skipped() {
        // A pipe with room for one line: the writer stalls until it is read.
        let (writer, mut reader) = tokio::io::duplex(64);
        let (report, task) = Reporter::spawn(writer);
        report.step("Building");
        for n in 0..100_000 {
            report.detail(&format!("line {n}"));
        }
        report.step("Done");
        assert!(report.shared.queued.load(std::sync::atomic::Ordering::Relaxed) <= MAX_QUEUED_DETAILS);
        drop(report);
        let reading = tokio::spawn(async move {
            let mut text = String::new();
            reader.read_to_string(&mut text).await.map(|_| text)
        });
        // The writer hands its end back when done; dropped, the reader sees the end.
        drop(task.await.expect("writer"));
        let text = reading.await.expect("reader").expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"-----> Building"));
        assert_eq!(lines.last(), Some(&"-----> Done"));
        assert!(lines.len() < MAX_QUEUED_DETAILS + 10, "{} lines", lines.len());
        let note = lines.iter().find(|line| line.contains("lines of output skipped")).expect("the skip is told");
        assert!(note.trim_start().starts_with("... "), "{note}");
    }
}
