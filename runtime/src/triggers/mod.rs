//! Triggers turn things that happen outside into function invocations.
//!
//! - [`streams`]: entries of Redis streams, read through consumer groups.
//!
//! A trigger owns its manifest section and its read loop; what an outcome means (ack, retry,
//! dead-letter) belongs to [`crate::delivery`], shared by all of them.

pub mod streams;
