//! Triggers turn things that happen outside into function invocations.
//!
//! - [`streams`]: entries of Redis streams, read through consumer groups.
//! - [`cron`]: schedules; their ticks become events in a stream (a function's own internal
//!   stream, read by an ordinary stream trigger, or any stream for a cronjob).
//!
//! A trigger owns its manifest section (its settings type and their validation, which the
//! manifest only composes) and its read loop; what an outcome means (ack, retry, dead-letter)
//! belongs to [`crate::delivery`], shared by all of them. What a trigger is handed when it
//! starts is in three parts, so what is shared, what is one function's and when to stop are
//! never mixed: [`TriggerServices`], [`FunctionSlot`] and [`Lifecycle`].

mod context;
pub mod cron;
pub mod streams;

pub use context::{CanaryCell, CanaryRun, FunctionCell, FunctionSlot, Lifecycle, TriggerServices};
