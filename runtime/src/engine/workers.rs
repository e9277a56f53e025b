//! The invocation workers: a fixed set of OS threads, one per core by default, that run
//! invocations one after another.
//!
//! Invocations are CPU-bound and block their thread for up to the timeout, so they cannot run
//! on async tasks. A thread per invocation (Tokio's blocking pool) costs a wake-up and a context
//! switch per event and, at high concurrency, many more threads than cores fighting for them;
//! a fixed set of workers pulling from one queue stays hot under load.
//!
//! A submitted job reports twice: when a worker *starts* it (callers waiting in the queue use
//! that to keep the event's lease fresh) and when it is *done*.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Function, InvokeResult, Publisher};
use crate::event::Event;

/// A set of invocation threads.
#[derive(Clone)]
pub struct Workers {
    queue: mpsc::Sender<Job>,
    threads: usize,
}

struct Job {
    function: Function,
    event: Event,
    publisher: Arc<dyn Publisher>,
    started: oneshot::Sender<()>,
    done: oneshot::Sender<InvokeResult>,
}

/// A job in the queue: resolves `started`, then `done`.
pub struct Submitted {
    /// Fires when a worker picks the job up.
    pub started: oneshot::Receiver<()>,
    /// The result; an error means the worker died (a bug in the host, not the guest).
    pub done: oneshot::Receiver<InvokeResult>,
}

/// The default number of workers: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Workers {
    /// Starts `threads` workers. They run inside `runtime` so host calls that need Tokio
    /// (publishing to Redis) use the host's runtime; they stop when every handle is dropped.
    pub fn new(threads: usize, runtime: tokio::runtime::Handle) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (queue, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads {
            let receiver = receiver.clone();
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name(format!("eddy-invoke-{n}"))
                .spawn(move || {
                    let _runtime = runtime.enter();
                    loop {
                        // One worker waits in recv while the others wait for the lock.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if job.started.send(()).is_err() {
                            // Nobody waits for the result any more.
                            continue;
                        }
                        let result = job.function.invoke(&job.event, job.publisher);
                        let _ = job.done.send(result);
                    }
                })?;
        }
        Ok(Self { queue, threads })
    }

    /// How many worker threads there are.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues one invocation.
    pub fn submit(
        &self,
        function: Function,
        event: Event,
        publisher: Arc<dyn Publisher>,
    ) -> Submitted {
        let (started, started_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        // The receiving side lives as long as any worker; if every worker is gone the job is
        // dropped and `done` reports the loss.
        let _ = self.queue.send(Job {
            function,
            event,
            publisher,
            started,
            done,
        });
        Submitted {
            started: started_rx,
            done: done_rx,
        }
    }
}
