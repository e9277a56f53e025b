//! The API's HTTP server: the accept loop and what bounds each connection, so that no client,
//! with or without a token, can take the API down.
//!
//! Every connection is in one of four phases: *idle* (between requests), *head* (a request's
//! first bytes arrived, its headers are not complete), *body* (its body is being read) or
//! *busy* (a request is being handled). A watchdog per connection closes it when it stays idle
//! longer than the idle timeout or in its head longer than the header timeout; a body is read
//! under the body timeout (see [`super::read_body`]). At most `max_connections` are open: at
//! the cap, a new connection evicts the one that has been idle or stuck in its head the
//! longest, else the one that has been sending a body the longest, so a flood of slow clients
//! cannot keep a health check out; only when every connection is busy does the newcomer get a
//! 503. The cap is kept below the process's open-file limit, and an accept that fails anyway
//! (out of file descriptors) backs off instead of spinning, its warning rate-limited.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ApiState;

/// Default time a client has to send a request's headers once it started: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's body: 30 s. A 64 MiB component upload needs
/// a little over 2 MB/s; raise it for slower links.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a kept-alive connection may sit between requests: 30 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on open API connections: 1024 (lowered to fit the open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Longest any of the three timeouts may be set to: 1 hour.
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most connections the cap may be set to.
pub const MAX_CONNECTIONS_CEILING: usize = 65_536;
/// File descriptors kept for everything but API connections (Redis connections, the compile
/// cache, the private redis-server's pipes), at least; a quarter of the limit when larger.
const RESERVED_FILES: usize = 128;
/// At most one warning about failed accepts per this long; the others are counted.
const WARNING_EVERY: Duration = Duration::from_secs(10);

/// What bounds the API's connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time allowed for a request's headers, from its first byte ([`DEFAULT_HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
    /// Time allowed for a request's body ([`DEFAULT_BODY_TIMEOUT`]).
    pub body_timeout: Duration,
    /// Time a connection may sit idle between requests ([`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Open connections at most ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The connection cap that fits `open_files` (the soft open-file limit) with room for
/// everything else the process opens.
pub fn fitting_cap(wanted: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files.and_then(|l| usize::try_from(l).ok()) else {
        return wanted;
    };
    let reserved = RESERVED_FILES.max(limit / 4);
    wanted.min(limit.saturating_sub(reserved).max(1))
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const BODY: u8 = 3;

/// One open connection, as the cap and its watchdog see it.
struct Conn {
    phase: AtomicU8,
    /// When the phase began, in ms since the server started.
    since: AtomicU64,
    /// Cancelled to close the connection (evicted).
    close: CancellationToken,
    /// Signalled on every change of phase, so the watchdog starts the new phase's clock at
    /// once (a header timeout must not wait out the rest of an idle timeout).
    changed: Notify,
}

/// The open connections.
struct Tracker {
    started: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn enter(&self, conn: &Conn, phase: u8) {
        conn.since.store(self.now_ms(), Ordering::Release);
        conn.phase.store(phase, Ordering::Release);
        conn.changed.notify_one();
    }

    /// Registers a new connection, evicting the longest-waiting idle or slow one at the cap.
    /// `None` when the cap is reached and every connection is busy.
    fn admit(&self, cap: usize) -> Option<(u64, Arc<Conn>)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= cap {
            // Waiting clients first, then slow uploads; a request being handled never.
            let oldest_in = |phases: &[u8]| {
                open.iter()
                    .filter(|(_, c)| phases.contains(&c.phase.load(Ordering::Acquire)))
                    .min_by_key(|(_, c)| c.since.load(Ordering::Acquire))
                    .map(|(id, _)| *id)
            };
            let oldest = oldest_in(&[IDLE, HEAD]).or_else(|| oldest_in(&[BODY]))?;
            if let Some(evicted) = open.remove(&oldest) {
                evicted.close.cancel();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(self.now_ms()),
            close: CancellationToken::new(),
            changed: Notify::new(),
        });
        open.insert(id, conn.clone());
        Some((id, conn))
    }

    fn leave(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// A request's connection, as the handler reading its body sees it (a request extension): it
/// marks the body's reading, which makes the connection evictable at the cap.
#[derive(Clone)]
pub struct Phase {
    tracker: Arc<Tracker>,
    conn: Arc<Conn>,
}

impl Phase {
    /// The body is being read.
    pub fn reading_body(&self) {
        self.tracker.enter(&self.conn, BODY);
    }

    /// The body is read; the request is being handled.
    pub fn handling(&self) {
        self.tracker.enter(&self.conn, BUSY);
    }
}

/// A warning printed at most once per [`WARNING_EVERY`], with how many were held back.
struct RateLimited {
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimited {
    fn warn(&mut self, error: &std::io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < WARNING_EVERY) {
            self.held_back += 1;
            return;
        }
        tracing::warn!(%error, similar_since_last = self.held_back, "accepting a connection failed");
        self.last = Some(Instant::now());
        self.held_back = 0;
    }
}

/// Whether an accept error means the process is out of a resource (so retrying at once would
/// spin) rather than one client's connection failing.
fn out_of_resources(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// This process's open-file limits (soft and hard).
fn open_files() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// The soft open-file limit of this process.
fn open_file_limit() -> Option<u64> {
    open_files()
        .filter(|limit| limit.rlim_cur != libc::RLIM_INFINITY)
        .map(|limit| limit.rlim_cur)
}

/// Raises this process's soft open-file limit to its hard limit, as servers do: the default
/// soft limit (often 1024) is what a host with many API clients and Redis connections runs
/// out of first. The API's connection cap is then fitted below it.
pub fn raise_open_file_limit() {
    let Some(mut limit) = open_files().filter(|l| l.rlim_cur < l.rlim_max) else {
        return;
    };
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        tracing::debug!("cannot raise the open-file limit; keeping the soft one");
    }
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, shutdown: CancellationToken) {
    let limits = state.http;
    let cap = fitting_cap(limits.max_connections, open_file_limit());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, auth = state.token_digest.is_some(), max_connections = cap, "api listening");
    }
    if cap < limits.max_connections {
        tracing::info!(
            wanted = limits.max_connections,
            max_connections = cap,
            "api connection cap lowered to fit the open-file limit (ulimit -n)"
        );
    }
    let tracker = Arc::new(Tracker {
        started: Instant::now(),
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    let mut warnings = RateLimited {
        last: None,
        held_back: 0,
    };
    let mut backoff = crate::backoff::Backoff::accept();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(error) => {
                warnings.warn(&error);
                if out_of_resources(&error) && !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        let Some((id, conn)) = tracker.admit(cap) else {
            // Every connection is in the middle of a request: say so and close.
            let _ = stream.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\
                  Connection: close\r\n\r\n",
            );
            continue;
        };
        tokio::spawn(connection(
            stream,
            state.clone(),
            tracker.clone(),
            id,
            conn,
            limits,
        ));
    }
}

/// Serves one connection until the client closes it, a timeout or an eviction closes it.
async fn connection(
    stream: TcpStream,
    state: Arc<ApiState>,
    tracker: Arc<Tracker>,
    id: u64,
    conn: Arc<Conn>,
    limits: HttpLimits,
) {
    let io = Tracked {
        inner: stream,
        conn: conn.clone(),
        tracker: tracker.clone(),
    };
    let service = {
        let (tracker, conn) = (tracker.clone(), conn.clone());
        service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let (state, tracker, conn) = (state.clone(), tracker.clone(), conn.clone());
            request.extensions_mut().insert(Phase {
                tracker: tracker.clone(),
                conn: conn.clone(),
            });
            async move {
                tracker.enter(&conn, BUSY);
                let response = super::route(&state, request).await;
                tracker.enter(&conn, IDLE);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let serving = http1::Builder::new()
        .max_buf_size(super::MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        served = serving => {
            if let Err(error) = served {
                tracing::debug!(%error, "http connection ended with an error");
            }
        }
        _ = conn.close.cancelled() => {}
        () = watchdog(&tracker, &conn, limits) => {}
    }
    tracker.leave(id);
}

/// Ends when the connection has been idle longer than the idle timeout, or in a request's
/// head longer than the header timeout.
async fn watchdog(tracker: &Tracker, conn: &Conn, limits: HttpLimits) {
    loop {
        // Registered before the phase is read, so a change after the read wakes us.
        let changed = conn.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let since = conn.since.load(Ordering::Acquire);
        // A body is bounded by the body timeout, which answers 408; a request in hand by what
        // it does: neither has a clock here.
        let allowed = match conn.phase.load(Ordering::Acquire) {
            IDLE => limits.idle_timeout,
            HEAD => limits.header_timeout,
            _ => {
                changed.await;
                continue;
            }
        };
        let elapsed = Duration::from_millis(tracker.now_ms().saturating_sub(since));
        if elapsed >= allowed {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(allowed - elapsed) => {}
            () = changed => {}
        }
    }
}

/// The client's socket, noting when a request's first bytes arrive on an idle connection.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let this = &*self;
            if this.conn.phase.load(Ordering::Acquire) == IDLE {
                this.tracker.enter(&this.conn, HEAD);
            }
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(fitting_cap(1024, None), 1024);
        assert_eq!(fitting_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(fitting_cap(1024, Some(1024)), 768);
        assert_eq!(fitting_cap(1000, Some(256)), 128);
        assert_eq!(fitting_cap(10, Some(64)), 1);
    }

    #[test]
    fn at_the_cap_the_longest_waiting_idle_connection_is_evicted() {
        let tracker = Tracker {
            started: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        };
        let (_, first) = tracker.admit(2).unwrap();
        let (_, second) = tracker.admit(2).unwrap();
        first.since.store(5, Ordering::Release);
        second.since.store(1, Ordering::Release);
        let (_, third) = tracker.admit(2).unwrap();
        assert!(second.close.is_cancelled(), "the oldest idle one goes");
        assert!(!first.close.is_cancelled());
        // Every open connection busy: the newcomer is refused.
        tracker.enter(&first, BUSY);
        tracker.enter(&third, BUSY);
        assert!(tracker.admit(2).is_none());
        // A slow upload is evicted when nothing is waiting, a request being handled never.
        tracker.enter(&third, BODY);
        let (_, fourth) = tracker.admit(2).unwrap();
        assert!(third.close.is_cancelled() && !first.close.is_cancelled());
        tracker.enter(&fourth, BUSY);
        assert!(tracker.admit(2).is_none());
    }
}
