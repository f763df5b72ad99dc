//! Progress for a user: lines in order, written by one task.
//!
//! Everything that reports (the builder, the runner, the release flow) sends
//! lines here; a single task writes them, so they never interleave. Over a
//! push the writer is the hook's stderr, which git turns into `remote:` lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Clone)]
pub struct Reporter {
    lines: mpsc::UnboundedSender<String>,
    gone: Arc<AtomicBool>,
}

impl Reporter {
    /// Starts the writer task. Drop every clone of the reporter, then await
    /// the handle, to be sure every line was written; it hands the writer back.
    pub fn spawn<W>(mut out: W) -> (Reporter, JoinHandle<W>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (lines, mut rx) = mpsc::unbounded_channel::<String>();
        let gone = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let gone = Arc::clone(&gone);
            async move {
                while let Some(line) = rx.recv().await {
                    if gone.load(Ordering::Relaxed) {
                        continue;
                    }
                    let written = async {
                        out.write_all(line.as_bytes()).await?;
                        out.write_all(b"\n").await?;
                        out.flush().await
                    };
                    if written.await.is_err() {
                        gone.store(true, Ordering::Relaxed);
                    }
                }
                out
            }
        });
        (Reporter { lines, gone }, task)
    }

    pub fn line(&self, marker: &str, text: &str) {
        let _ = self.lines.send(format!("{marker} {text}"));
    }

    /// A step of the work: `-----> Building ...`
    pub fn step(&self, text: &str) {
        self.line("----->", text);
    }

    /// Output under a step, such as build lines.
    pub fn detail(&self, text: &str) {
        self.line("      ", text);
    }

    /// Why something failed.
    pub fn problem(&self, text: &str) {
        self.line(" !    ", text);
    }

    /// True once a write failed: nobody is reading any more.
    pub fn reader_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}
