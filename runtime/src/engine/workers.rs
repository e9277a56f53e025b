//! The invocation workers: a runtime of its own, with one thread per core by default, that
//! runs every invocation of a host.
//!
//! Invocations are futures. A guest computing occupies a worker thread; a guest waiting in a
//! host call (a sleep, a Redis write) is parked and occupies nothing. The [`CpuGate`] admits
//! only as many invocations to compute at once as there are threads, so a burst of events
//! queues instead of time-slicing every guest into its deadline. Keeping them off the host's
//! main runtime keeps the API, the stream readers and the acks responsive however busy the
//! guests are.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use super::{CpuGate, Function, InvokeResult, RunHooks, Services};
use crate::event::Event;

/// The threads invocations run on, shared by every trigger and the API of a host.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    gate: Arc<CpuGate>,
    threads: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Invocations still running (past the grace period) are abandoned, not awaited: their
        // events stay pending in Redis. Dropping a runtime may not block in async code.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A job in the queue.
pub struct Submitted {
    /// The result; `Ok(None)` when the invocation did not run to an outcome this host may
    /// settle (its `may_start` said no, or it was cancelled); an error means the worker died
    /// (a bug in the host, not the guest).
    pub done: oneshot::Receiver<Option<InvokeResult>>,
}

/// One invocation of a batch: the event, the trigger's hooks and the span it runs in.
pub struct BatchJob {
    /// The event.
    pub event: Event,
    /// The trigger's hooks for it.
    pub hooks: RunHooks,
    /// Everything the invocation logs carries this span.
    pub span: tracing::Span,
}

/// Results of a batch as each comes: (index in the batch, result); a result is `None` when the
/// invocation did not run to an outcome this host may settle. An index never sent means the
/// worker died (a bug in the host). The receiver groups what arrives close together.
pub type BatchResults = mpsc::UnboundedReceiver<(usize, Option<InvokeResult>)>;

/// The default number of workers: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("eddy-invoke")
            .enable_all()
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: Some(runtime),
                gate: Arc::new(CpuGate::new(threads)),
                threads,
            }),
        })
    }

    /// How many worker threads there are.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Queues one invocation. `hooks.gate` is filled in here; `hold` is
    /// kept until the invocation ends, whatever the caller does meanwhile (an API caller that
    /// hangs up must not free its place in a bound while its invocation still runs).
    pub fn submit(
        &self,
        function: Function,
        event: Event,
        services: Services,
        mut hooks: RunHooks,
        hold: Option<Box<dyn std::any::Any + Send>>,
    ) -> Submitted {
        let (done, done_rx) = oneshot::channel();
        hooks.gate = Some(self.inner.gate.clone());
        self.runtime().spawn(async move {
            let result = function.run(&event, services, hooks).await;
            drop(hold);
            let _ = done.send(result);
        });
        Submitted { done: done_rx }
    }

    /// Queues a batch as one hand-off: a task on the workers starts each invocation as a task
    /// of its own (so they compute on every worker thread, each through the CPU gate), and
    /// each result is sent as soon as its invocation ends.
    pub fn submit_batch(
        &self,
        function: Function,
        jobs: Vec<BatchJob>,
        services: Services,
    ) -> BatchResults {
        let (sender, receiver) = mpsc::unbounded_channel();
        let gate = self.inner.gate.clone();
        self.runtime().spawn(async move {
            for (index, job) in jobs.into_iter().enumerate() {
                let BatchJob {
                    event,
                    mut hooks,
                    span,
                } = job;
                hooks.gate = Some(gate.clone());
                let (function, services, sender) =
                    (function.clone(), services.clone(), sender.clone());
                // Detached: the trigger stops listening only past the grace period, and an
                // invocation that panics sends nothing, which it reads as a dead worker.
                tokio::spawn(
                    async move {
                        let result = function.run(&event, services, hooks).await;
                        let _ = sender.send((index, result));
                    }
                    .instrument(span),
                );
            }
        });
        receiver
    }

    /// Queues a batch as one job run in **one** instance, event after event
    /// ([`Function::run_each`]): the cheapest way through many events, for functions whose
    /// trigger opts in. Each result is sent as soon as its event ends.
    pub fn submit_each(
        &self,
        function: Function,
        jobs: Vec<BatchJob>,
        services: Services,
    ) -> BatchResults {
        let (sender, receiver) = mpsc::unbounded_channel();
        let gate = self.inner.gate.clone();
        self.runtime().spawn(async move {
            let jobs = jobs.into_iter().map(|job| {
                let mut hooks = job.hooks;
                hooks.gate = Some(gate.clone());
                (job.event, hooks, job.span)
            });
            function
                .run_each(jobs, services, |index, result| {
                    let _ = sender.send((index, result));
                })
                .await;
        });
        receiver
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.inner
            .runtime
            .as_ref()
            .expect("the workers' runtime lives as long as they do")
    }
}

/// How long the trigger waits, after a result of a batch, for others to share its settlement:
/// fast events are settled together, and a slow one holds back the rest by no more than this.
pub const GROUP_LINGER: std::time::Duration = std::time::Duration::from_millis(1);
