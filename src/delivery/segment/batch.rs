//! Packing messages into `POST /v1/batch` bodies within Segment's limits.

use super::MAX_MESSAGE_BYTES;

const PREFIX: &str = "{\"batch\":[";
/// `],"sentAt":"` + a 24-character timestamp + `"}`.
const SUFFIX_BYTES: usize = 12 + 24 + 2;

#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_messages: usize,
    /// The whole serialized request body, envelope included.
    pub max_bytes: usize,
}

/// About what a guidance event weighs as Segment's message (600–900 bytes).
const USUAL_MESSAGE_BYTES: usize = 1000;

impl BatchLimits {
    /// About how many events fill one request: delivery does not wait for
    /// more than this to gather.
    pub fn usual_fill(&self) -> usize {
        self.max_messages.min(self.max_bytes / USUAL_MESSAGE_BYTES).max(1)
    }
}

/// The messages of one request and the ids of the events they carry.
#[derive(Debug, Default)]
pub struct Batch {
    ids: Vec<i64>,
    messages: Vec<String>,
    /// Messages plus the commas between them.
    content_bytes: usize,
}

impl Batch {
    pub fn event_ids(&self) -> &[i64] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The request body: `{"batch":[...],"sentAt":"..."}`.
    pub fn body(&self, sent_at: &str) -> Vec<u8> {
        debug_assert_eq!(sent_at.len(), 24, "sentAt is written with milliseconds and Z");
        let mut body = Vec::with_capacity(PREFIX.len() + self.content_bytes + SUFFIX_BYTES);
        body.extend_from_slice(PREFIX.as_bytes());
        for (i, message) in self.messages.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(message.as_bytes());
        }
        body.extend_from_slice(b"],\"sentAt\":\"");
        body.extend_from_slice(sent_at.as_bytes());
        body.extend_from_slice(b"\"}");
        body
    }

    /// The two halves of a batch of two or more messages, to isolate one that
    /// Segment refuses.
    pub fn split(mut self) -> Result<(Batch, Batch), Batch> {
        if self.len() < 2 {
            return Err(self);
        }
        let half = self.len() / 2;
        let mut second = Batch::default();
        for (id, message) in self.ids.split_off(half).into_iter().zip(self.messages.split_off(half)) {
            second.push(id, message);
        }
        self.content_bytes = self.messages.iter().map(String::len).sum::<usize>() + self.len() - 1;
        Ok((self, second))
    }

    fn push(&mut self, id: i64, message: String) {
        self.content_bytes += message.len() + usize::from(!self.is_empty());
        self.ids.push(id);
        self.messages.push(message);
    }

    fn fits(&self, message: &str, limits: BatchLimits) -> bool {
        let comma = usize::from(!self.is_empty());
        let with_it = PREFIX.len() + self.content_bytes + comma + message.len() + SUFFIX_BYTES;
        self.len() < limits.max_messages && with_it <= limits.max_bytes
    }
}

/// Messages packed into batches, and the events whose message is over Segment's
/// per-message limit and can never be sent.
#[derive(Debug, Default)]
pub struct Packed {
    pub batches: Vec<Batch>,
    pub oversized: Vec<i64>,
}

/// Packs messages, in order, into as few batches as the limits allow.
pub fn pack(messages: impl IntoIterator<Item = (i64, String)>, limits: BatchLimits) -> Packed {
    let mut packed = Packed::default();
    let mut current = Batch::default();
    for (id, message) in messages {
        if message.len() > MAX_MESSAGE_BYTES {
            packed.oversized.push(id);
            continue;
        }
        if !current.fits(&message, limits) {
            packed.batches.push(std::mem::take(&mut current));
        }
        current.push(id, message);
    }
    if !current.is_empty() {
        packed.batches.push(current);
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT_AT: &str = "2026-11-29T10:00:00.000Z";

    fn messages(count: usize, size: usize) -> Vec<(i64, String)> {
        (0..count).map(|i| (i as i64, format!("{{\"p\":\"{}\"}}", "x".repeat(size - 8)))).collect()
    }

    #[test]
    fn body_size_is_exactly_accounted_for() {
        let limits = BatchLimits { max_messages: 2500, max_bytes: 500_000 };
        let packed = pack(messages(3000, 1000), limits);
        assert!(packed.oversized.is_empty());
        for batch in &packed.batches {
            let body = batch.body(SENT_AT);
            assert!(body.len() <= 500_000, "{}", body.len());
            assert_eq!(body.len(), PREFIX.len() + batch.content_bytes + SUFFIX_BYTES);
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed["batch"].as_array().unwrap().len(), batch.len());
        }
        // 10 + 499 × 1,000 + 498 commas + 38 = 499,546 bytes; one more would not fit.
        assert_eq!(packed.batches[0].len(), 499);
        assert_eq!(packed.batches.iter().map(Batch::len).sum::<usize>(), 3000);
    }

    #[test]
    fn message_count_limit_and_oversized_messages() {
        let limits = BatchLimits { max_messages: 10, max_bytes: 500_000 };
        let mut input = messages(25, 100);
        input.push((99, "x".repeat(MAX_MESSAGE_BYTES + 1)));
        let packed = pack(input, limits);
        let sizes: Vec<_> = packed.batches.iter().map(Batch::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(packed.oversized, [99]);
    }

    #[test]
    fn split_halves_keep_every_message_once() {
        let limits = BatchLimits { max_messages: 10, max_bytes: 500_000 };
        let batch = pack(messages(5, 100), limits).batches.remove(0);
        let (a, b) = batch.split().unwrap();
        assert_eq!(a.event_ids(), [0, 1]);
        assert_eq!(b.event_ids(), [2, 3, 4]);
        assert_eq!(a.body(SENT_AT).len(), PREFIX.len() + a.content_bytes + SUFFIX_BYTES);
        serde_json::from_slice::<serde_json::Value>(&a.body(SENT_AT)).unwrap();
        let single = b.split().unwrap().0;
        assert!(single.split().is_err());
    }
}
