//! Bounded capture of a guest's stdout, stderr and log lines for one invocation.
//!
//! Guests never see the host's stdio. Their writes land in an [`OutputCapture`] whose one byte
//! budget ([`Limits::output_bytes`](super::Limits)) is shared by stdout, stderr and logs. Past
//! the budget, writes still succeed for the guest (a chatty function must not fail because of
//! its logging) and the dropped bytes are counted, so the result says output was cut.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use serde::Serialize;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The severity of a guest log line (mirrors the WIT `logging.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal operation.
    Info,
    /// Handled but unexpected.
    Warn,
    /// Something went wrong.
    Error,
}

impl LogLevel {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line the guest logged through the `logging` import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Its severity.
    pub level: LogLevel,
    /// Its text (possibly cut at the output budget).
    pub message: String,
}

/// What an invocation wrote, after the budget was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Captured {
    /// The guest's stdout, lossily decoded as UTF-8.
    pub stdout: String,
    /// The guest's stderr, lossily decoded as UTF-8.
    pub stderr: String,
    /// Lines logged through the `logging` import.
    pub logs: Vec<LogLine>,
    /// Bytes written beyond the budget and dropped.
    pub dropped_bytes: u64,
}

#[derive(Default)]
struct State {
    budget: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    logs: Vec<LogLine>,
    dropped_bytes: u64,
}

impl State {
    /// Takes up to `len` bytes from the budget and counts the rest as dropped.
    fn take(&mut self, len: usize) -> usize {
        let kept = len.min(self.budget);
        self.budget -= kept;
        self.dropped_bytes += (len - kept) as u64;
        kept
    }
}

/// The capture of one invocation; cloned handles share it.
#[derive(Clone)]
pub struct OutputCapture {
    state: Arc<Mutex<State>>,
}

impl OutputCapture {
    /// A capture that keeps at most `budget` bytes in all.
    pub fn new(budget: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                budget,
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another writer panicked mid-append; the bytes are fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream to hand the guest as stdout.
    pub fn stdout(&self) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            target: Target::Stdout,
        }
    }

    /// The stream to hand the guest as stderr.
    pub fn stderr(&self) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            target: Target::Stderr,
        }
    }

    /// Records a log line, cut to what is left of the budget; returns the bytes kept (0 once
    /// the budget is spent).
    pub fn log(&self, level: LogLevel, message: &str) -> usize {
        let mut state = self.lock();
        let cut = floor_char_boundary(message, state.budget);
        state.take(cut);
        state.dropped_bytes += (message.len() - cut) as u64;
        if cut > 0 {
            state.logs.push(LogLine {
                level,
                message: message[..cut].to_owned(),
            });
        }
        cut
    }

    fn write(&self, target: Target, bytes: &[u8]) {
        let mut state = self.lock();
        let kept = state.take(bytes.len());
        let buffer = match target {
            Target::Stdout => &mut state.stdout,
            Target::Stderr => &mut state.stderr,
        };
        buffer.extend_from_slice(&bytes[..kept]);
    }

    /// Empties the capture and gives it a fresh budget of `budget` bytes (the next event of an
    /// instance that handles a batch).
    pub fn reset(&self, budget: usize) {
        *self.lock() = State {
            budget,
            ..State::default()
        };
    }

    /// Takes what was captured so far, leaving the capture empty.
    pub fn finish(&self) -> Captured {
        let mut state = self.lock();
        Captured {
            stdout: String::from_utf8_lossy(&std::mem::take(&mut state.stdout)).into_owned(),
            stderr: String::from_utf8_lossy(&std::mem::take(&mut state.stderr)).into_owned(),
            logs: std::mem::take(&mut state.logs),
            dropped_bytes: std::mem::take(&mut state.dropped_bytes),
        }
    }
}

/// The largest index at most `max` that is a character boundary of `text`.
pub fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

#[derive(Clone, Copy)]
enum Target {
    Stdout,
    Stderr,
}

/// A guest stdout or stderr that writes into an [`OutputCapture`].
#[derive(Clone)]
pub struct CaptureStream {
    capture: OutputCapture,
    target: Target,
}

/// The most a guest may write in one call; writes are never refused, so this only paces them.
const WRITE_PERMIT: usize = 64 * 1024;

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.capture.write(self.target, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.capture.write(self.target, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_overflow_is_counted() {
        let capture = OutputCapture::new(10);
        capture.write(Target::Stdout, b"hello");
        capture.log(LogLevel::Info, "abc");
        capture.write(Target::Stderr, b"world");
        let captured = capture.finish();
        assert_eq!(captured.stdout, "hello");
        assert_eq!(captured.logs[0].message, "abc");
        assert_eq!(captured.stderr, "wo");
        assert_eq!(captured.dropped_bytes, 3);
    }

    #[test]
    fn a_log_line_is_cut_on_a_char_boundary() {
        let capture = OutputCapture::new(2);
        capture.log(LogLevel::Warn, "é!");
        let captured = capture.finish();
        assert_eq!(captured.logs[0].message, "é");
        assert_eq!(captured.dropped_bytes, 1);
    }
}
