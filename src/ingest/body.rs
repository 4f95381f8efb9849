//! Request bodies of the ingest endpoints: `application/json` or `text/plain`
//! (what `navigator.sendBeacon` sends), optionally gzip-compressed, read
//! within the configured limits before and while inflating.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use flate2::read::MultiGzDecoder;
use http_body_util::BodyExt;
use serde_json::value::RawValue;

use super::IngestState;
use crate::http::error::ApiError;

/// A request body, read and inflated within the limits, not yet parsed.
#[derive(Debug)]
pub struct JsonBody(Bytes);

impl JsonBody {
    /// The body as one JSON value: its syntax checked, its content left as
    /// text, so that a batch's events can be parsed one at a time.
    pub fn json(&self) -> Result<&RawValue, ApiError> {
        serde_json::from_slice(&self.0).map_err(|e| ApiError::InvalidJson(e.to_string()))
    }
}

impl FromRequest<IngestState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &IngestState) -> Result<Self, ApiError> {
        let limits = &state.settings;
        check_content_type(request.headers())?;
        let encoding = content_encoding(request.headers())?;
        // Already read in full, within the limit, by `read_first`.
        let raw = axum::body::to_bytes(request.into_body(), limits.max_body_bytes)
            .await
            .map_err(|_| ApiError::BodyTooLarge(limits.max_body_bytes))?;
        match encoding {
            Encoding::Identity => Ok(JsonBody(raw)),
            Encoding::Gzip => inflate(&raw, limits.max_decompressed_bytes).map(|inflated| JsonBody(inflated.into())),
        }
    }
}

/// Reads every request body in full, within the size limit and in time,
/// before anything answers: a request refused early (unknown key, wrong
/// method, bad content type) would otherwise leave its body unread, and a
/// client still sending it would get a reset connection instead of the answer.
pub async fn read_first(State(app): State<IngestState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let limits = &app.settings;
    let (parts, body) = request.into_parts();
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let read = if declared.is_some_and(|len| len > limits.max_body_bytes + DRAIN_LIMIT) {
        Err(ApiError::BodyTooLarge(limits.max_body_bytes))
    } else {
        tokio::time::timeout(limits.body_timeout(), collect(body, limits.max_body_bytes))
            .await
            .map_err(|_| ApiError::BodyTimeout)
            .flatten()
            .and_then(|body| body.ok_or(ApiError::BodyTooLarge(limits.max_body_bytes)))
    };
    match read {
        Ok(body) => Ok(next.run(Request::from_parts(parts, Body::from(body))).await),
        Err(error) => Err(super::refused_unread(&app, &parts, error).await),
    }
}

/// How much of a refused body is still read (and dropped) before answering.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// The body if it is at most `limit` bytes, else `None`. Past the limit it is
/// read on and dropped, up to `DRAIN_LIMIT` more bytes.
async fn collect(mut body: Body, limit: usize) -> Result<Option<Bytes>, ApiError> {
    // Most bodies arrive in one chunk: that one is kept as it is, without a copy.
    let mut single: Option<Bytes> = None;
    let mut data = Vec::new();
    let mut seen = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::InvalidBody("the request body could not be read".to_owned()))?;
        let Ok(chunk) = frame.into_data() else { continue };
        seen += chunk.len();
        if seen <= limit {
            if let Some(first) = single.take() {
                data.extend_from_slice(&first);
            }
            if data.is_empty() {
                single = Some(chunk);
            } else {
                data.extend_from_slice(&chunk);
            }
        } else if seen > limit + DRAIN_LIMIT {
            break;
        }
    }
    Ok((seen <= limit).then(|| single.unwrap_or_else(|| Bytes::from(data))))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).ok_or(ApiError::UnsupportedMediaType)?;
    let value = value.to_str().map_err(|_| ApiError::UnsupportedMediaType)?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.eq_ignore_ascii_case("text/plain") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.to_str().unwrap_or_default().trim();
    if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
        Ok(Encoding::Gzip)
    } else if value.is_empty() || value.eq_ignore_ascii_case("identity") {
        Ok(Encoding::Identity)
    } else {
        Err(ApiError::UnsupportedEncoding(value.chars().take(40).collect()))
    }
}

/// Inflates gzip, stopping as soon as the output passes `limit`: a small body
/// that would inflate to gigabytes costs at most `limit` bytes of memory.
fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut inflated = Vec::new();
    let read_limit = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    MultiGzDecoder::new(compressed).take(read_limit).read_to_end(&mut inflated).map_err(|_| ApiError::InvalidGzip)?;
    if inflated.len() > limit {
        return Err(ApiError::BodyTooLarge(limit));
    }
    Ok(inflated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_is_cut_off_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50_000_000]);
        assert!(bomb.len() < 100_000);
        assert!(matches!(inflate(&bomb, 1_000_000), Err(ApiError::BodyTooLarge(1_000_000))));
        assert_eq!(inflate(&gzip(b"{}"), 10).unwrap(), b"{}");
        assert!(matches!(inflate(b"not gzip", 10), Err(ApiError::InvalidGzip)));
    }

    #[test]
    fn content_types_and_encodings() {
        let mut headers = HeaderMap::new();
        assert!(check_content_type(&headers).is_err());
        headers.insert(header::CONTENT_TYPE, "text/plain;charset=UTF-8".parse().unwrap());
        assert!(check_content_type(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
        assert!(check_content_type(&headers).is_err());
        headers.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(content_encoding(&headers), Err(ApiError::UnsupportedEncoding(_))));
        headers.insert(header::CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(content_encoding(&headers).unwrap(), Encoding::Gzip);
    }
}
