//! The log's writer for `serve`, `router` and `watch`: lines are gathered in
//! memory and one thread writes them to stderr in batches.
//!
//! The router logs a line per request, so a line must cost its request
//! next to nothing. A writer thread woken per line (tracing-appender's
//! `non_blocking`) cost the router about 10 µs of CPU per request under
//! load, in futex wakes, `sched_yield` and a `write(2)` per line or two.
//! Here a line is a copy into a shared buffer; the thread is woken once
//! when the buffer stops being empty, gathers for [`GATHER`], and writes
//! everything in one `write(2)`: sooner when [`FULL`] bytes wait. No line
//! is dropped: when the thread falls [`LIMIT`] bytes behind (stderr is a
//! slow pipe), a line waits for it.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread gathers lines after the first before it writes them.
const GATHER: Duration = Duration::from_millis(50);
/// Bytes that make the thread write at once.
const FULL: usize = 64 * 1024;
/// Bytes that make a line wait until the thread has written what is there.
const LIMIT: usize = 4 * 1024 * 1024;

/// Where lines go: a `MakeWriter` for tracing-subscriber.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Keeps the writer thread; dropping it writes what is left and ends the thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The thread waits here for lines; lines wait here for room.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A writer to `out` and its thread.
pub fn log_writer(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, LogGuard)> {
    let shared = Arc::new(Shared { state: Mutex::new(State::default()), changed: Condvar::new() });
    let thread = std::thread::Builder::new().name("nap-log".to_owned()).spawn({
        let shared = Arc::clone(&shared);
        move || write_batches(&shared, out)
    })?;
    Ok((LogWriter { shared: Arc::clone(&shared) }, LogGuard { shared, thread: Some(thread) }))
}

/// The thread: waits for a first line, gathers, writes the batch; until stopped.
fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::with_capacity(FULL);
    loop {
        let mut state = shared.lock();
        while state.lines.is_empty() && !state.stopping {
            state = shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if !state.stopping && state.lines.len() < FULL {
            state = shared
                .changed
                .wait_timeout_while(state, GATHER, |state| state.lines.len() < FULL && !state.stopping)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut batch, &mut state.lines);
        let stopping = state.stopping;
        drop(state);
        // Lines waiting for room may go on.
        shared.changed.notify_all();
        // Nowhere to say that stderr failed: the lines are lost, not the process.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > LIMIT {
            batch.shrink_to(FULL);
        }
        if stopping && shared.lock().lines.is_empty() {
            return;
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.lines.len() >= LIMIT && !state.stopping {
            state = self.shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(line);
        let full = state.lines.len() >= FULL && state.lines.len() - line.len() < FULL;
        drop(state);
        if was_empty || full {
            self.shared.changed.notify_all();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test reads back, and counts the writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut sink = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            sink.0.extend_from_slice(bytes);
            sink.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = log_writer(sink.clone()).expect("thread");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        writer.write_all(format!("{t} {i}\n").as_bytes()).expect("write");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("join");
        }
        drop(guard);
        let (bytes, calls) = sink.0.lock().expect("sink").clone();
        let text = String::from_utf8(bytes).expect("utf-8");
        for t in 0..4 {
            let seen: Vec<usize> = text
                .lines()
                .filter_map(|line| line.split_once(' '))
                .filter(|(thread, _)| *thread == t.to_string())
                .map(|(_, i)| i.parse().expect("number"))
                .collect();
            assert_eq!(seen, (0..5000).collect::<Vec<_>>(), "thread {t}'s lines, whole and in order");
        }
        assert!(calls < 1000, "20,000 lines in {calls} writes");
    }

    #[test]
    fn a_lone_line_is_written_without_more_coming() {
        let sink = Sink::default();
        let (mut writer, _guard) = log_writer(sink.clone()).expect("thread");
        writer.write_all(b"one\n").expect("write");
        for _ in 0..100 {
            if sink.0.lock().expect("sink").0 == b"one\n" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the line was not written within 2 s");
    }
}
