//! Segment's side: the `track` message and batch wire format with Segment's
//! limits, the regions, and the HTTP client for the Tracking API.

mod batch;
mod client;
mod message;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use batch::{Batch, BatchLimits, Packed, pack};
pub use client::{Outcome, SegmentClient};
pub use message::{Context, TrackMessage, sent_len, with_user_id};

/// Segment's limit for one message.
pub const MAX_MESSAGE_BYTES: usize = 32_000;
/// Segment's limit for the length of a `messageId`.
pub const MAX_MESSAGE_ID_CHARS: usize = 99;
/// `context.integration.name`: the slug Segment knows this source by.
pub const INTEGRATION_NAME: &str = "produktly";
pub const INTEGRATION_VERSION: &str = "1.0.0";

/// The Segment region a workspace's data lives in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

impl Region {
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = ();
    fn from_str(s: &str) -> Result<Region, ()> {
        match s {
            "us" => Ok(Region::Us),
            "eu" => Ok(Region::Eu),
            _ => Err(()),
        }
    }
}
