//! Segment's side: the `track` message and batch wire format with Segment's
//! limits, the regions, and the HTTP client for the Tracking API.

mod batch;
mod client;
mod message;

pub use crate::domain::Region;
pub use batch::{Batch, BatchLimits, Packed, pack};
pub use client::{Outcome, SegmentClient};
pub use message::{Context, TrackMessage, queued_event_name, sent_len, with_user_id};

/// Segment's limit for one message.
pub const MAX_MESSAGE_BYTES: usize = 32_000;
/// Segment's limit for the length of a `messageId`.
pub const MAX_MESSAGE_ID_CHARS: usize = 99;
/// `context.integration.name`: the slug Segment knows this source by.
pub const INTEGRATION_NAME: &str = "produktly";
pub const INTEGRATION_VERSION: &str = "1.0.0";
