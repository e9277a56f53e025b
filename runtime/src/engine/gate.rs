//! The CPU gate: how many invocations may run guest code at once on a host.
//!
//! Invocations are futures: a guest waiting in a host call (a sleep, an HTTP response, a Redis
//! write) is parked and holds no thread. A guest computing holds one. If every admitted
//! invocation computed at once on the host's few threads, each would get a sliver of a core and
//! reach its wall-time deadline after doing a fraction of its work, so admission is bounded
//! by a gate with one slot per worker thread:
//!
//! - a new invocation waits for a free slot before it starts ([`CpuGate::admit`]);
//! - while it waits in a host call it gives its slot back, so another can start;
//! - when the host call returns it takes a slot again at once, without waiting (it is already
//!   running; making it queue behind new work would spend its deadline in the queue), so the
//!   gate can be briefly over-subscribed by resumed guests, never by new ones.
//!
//! The guest yields to the scheduler at every epoch tick too (so a deadline can cut it off and
//! other tasks on its thread get a turn); such a yield keeps the slot. [`Gated`] tells the two
//! apart by a flag the epoch callback raises.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;

/// Slots for invocations running guest code.
#[derive(Debug)]
pub struct CpuGate {
    limit: usize,
    running: AtomicUsize,
    freed: Notify,
}

impl CpuGate {
    /// A gate with `limit` slots (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            running: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Waits for a free slot and takes it.
    async fn admit(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check and the wait wakes us.
            freed.as_mut().enable();
            if self.try_admit() {
                return;
            }
            freed.await;
        }
    }

    fn try_admit(&self) -> bool {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes a slot without waiting: a guest resuming after a host call.
    fn resume(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives a slot back.
    fn release(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }

    /// Invocations running guest code now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

/// An admitted slot of a gate (or of no gate: then it holds nothing). Given back when dropped,
/// unless handed to the invocation it was taken for with [`Slot::run`].
pub struct Slot<'a>(Option<&'a CpuGate>);

impl<'a> Slot<'a> {
    /// Waits for a slot of `gate`; with no gate, there is nothing to wait for.
    pub async fn take(gate: Option<&'a CpuGate>) -> Slot<'a> {
        if let Some(gate) = gate {
            gate.admit().await;
        }
        Slot(gate)
    }

    /// Runs `call` on this slot: held while the guest computes, lent out while it waits in a
    /// host call (see the module docs). `ticked` is the epoch callback's flag.
    pub fn run<F>(self, call: F, ticked: Arc<AtomicBool>) -> Gated<'a, F> {
        let gate = self.0;
        std::mem::forget(self);
        Gated {
            inner: Box::pin(call),
            gate,
            holding: gate.is_some(),
            ticked,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.0 {
            gate.release();
        }
    }
}

/// A running invocation's future that holds a gate slot while the guest computes and gives it
/// back while the guest waits in a host call.
pub struct Gated<'a, F> {
    inner: Pin<Box<F>>,
    gate: Option<&'a CpuGate>,
    holding: bool,
    /// Raised by the epoch callback right before the guest yields on a tick.
    ticked: Arc<AtomicBool>,
}

impl<F: Future> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(gate) = this.gate else {
            return this.inner.as_mut().poll(cx);
        };
        if !this.holding {
            gate.resume();
            this.holding = true;
        }
        match this.inner.as_mut().poll(cx) {
            Poll::Ready(output) => {
                this.holding = false;
                gate.release();
                Poll::Ready(output)
            }
            // A tick: the guest is still computing and has already asked to be polled again.
            Poll::Pending if this.ticked.swap(false, Ordering::AcqRel) => Poll::Pending,
            Poll::Pending => {
                this.holding = false;
                gate.release();
                Poll::Pending
            }
        }
    }
}

impl<F> Drop for Gated<'_, F> {
    fn drop(&mut self) {
        if let (true, Some(gate)) = (self.holding, self.gate) {
            gate.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_guest_gives_its_slot_to_a_new_one() {
        let gate = CpuGate::new(1);
        let slot = Slot::take(Some(&gate)).await;
        assert_eq!(gate.running(), 1);
        assert!(!gate.try_admit(), "full");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ticked = Arc::new(AtomicBool::new(false));
        let waiting = slot.run(async move { rx.await.ok() }, ticked.clone());
        tokio::pin!(waiting);
        // Polled once: it waits in a "host call", so its slot is free for another.
        assert!(futures_poll(waiting.as_mut()).is_none());
        assert_eq!(gate.running(), 0);
        gate.admit().await;
        assert_eq!(gate.running(), 1);
        // The host call returns: it resumes at once, over the limit, and gives back when done.
        tx.send(()).unwrap();
        assert!(waiting.as_mut().await.is_some());
        assert_eq!(gate.running(), 1);
        gate.release();
        assert_eq!(gate.running(), 0);
    }

    #[tokio::test]
    async fn a_tick_keeps_the_slot() {
        let gate = CpuGate::new(1);
        let slot = Slot::take(Some(&gate)).await;
        let ticked = Arc::new(AtomicBool::new(false));
        let flag = ticked.clone();
        let mut yielded = false;
        let computing = slot.run(
            std::future::poll_fn(move |cx| {
                if yielded {
                    return Poll::Ready(());
                }
                yielded = true;
                flag.store(true, Ordering::Release);
                cx.waker().wake_by_ref();
                Poll::Pending
            }),
            ticked,
        );
        tokio::pin!(computing);
        assert!(futures_poll(computing.as_mut()).is_none());
        assert_eq!(gate.running(), 1, "a tick is not a wait: the slot is kept");
        computing.await;
        assert_eq!(gate.running(), 0);
    }

    #[tokio::test]
    async fn a_slot_never_used_is_given_back() {
        let gate = CpuGate::new(1);
        drop(Slot::take(Some(&gate)).await);
        assert_eq!(gate.running(), 0);
        let unused = Slot::take(Some(&gate))
            .await
            .run(async {}, Arc::new(AtomicBool::new(false)));
        drop(unused);
        assert_eq!(gate.running(), 0, "dropped before its first poll");
    }

    /// Polls a future once with a no-op waker.
    fn futures_poll<F: Future>(future: Pin<&mut F>) -> Option<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match future.poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }
}
