//! The browser SDK, served from the binary at `GET /sdk/v1/produktly-segment.js`
//! so that a customer's page loads it from the host it posts to. The script is
//! `clients/browser/dist/produktly-segment.js`, built from the package's
//! TypeScript source (`npm run build` there; CI checks it is up to date).

use std::sync::LazyLock;

use axum::Router;
use axum::http::header::{
    ACCEPT_ENCODING, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    VARY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The classic script: loading it defines `window.Produktly.createTracker`.
pub const SCRIPT: &str = include_str!("../../clients/browser/dist/produktly-segment.js");
/// An hour in caches, then revalidated by `ETag` (a release changes the tag).
const CACHE_CONTROL_VALUE: &str = "public, max-age=3600";

/// The script's tag and its gzip form, computed once.
struct Served {
    etag: HeaderValue,
    gzipped: Vec<u8>,
}

static SERVED: LazyLock<Served> = LazyLock::new(|| {
    let digest = hex::encode(Sha256::digest(SCRIPT.as_bytes()));
    let etag = HeaderValue::from_str(&format!("\"{}\"", &digest[..32])).expect("hex is a valid header value");
    Served { etag, gzipped: gzip(SCRIPT.as_bytes()) }
});

pub fn router() -> (Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::new().routes(routes!(script)).split_for_parts()
}

/// The browser SDK as a classic script.
#[utoipa::path(
    get, path = "/sdk/v1/produktly-segment.js", tag = "sdk", operation_id = "sdk_script",
    params(("If-None-Match" = Option<String>, Header, description = "An `ETag` of an earlier answer")),
    responses(
        (status = 200, description = "The script (gzip-compressed when accepted); `ETag`, `Cache-Control`",
         content_type = "text/javascript", body = String),
        (status = 304, description = "Not modified: the cached copy of this `ETag` is current"),
    ),
)]
async fn script(headers: HeaderMap) -> Response {
    let served = &*SERVED;
    let mut response = if matches_etag(&headers, &served.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(&headers) {
        ([(CONTENT_ENCODING, "gzip")], served.gzipped.clone()).into_response()
    } else {
        SCRIPT.into_response()
    };
    let set = response.headers_mut();
    set.insert(CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    set.insert(ETAG, served.etag.clone());
    set.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL_VALUE));
    set.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    // Any page may load it, with `crossorigin` and an integrity hash too.
    set.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    set.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `If-None-Match` names this tag (or `*`), in a list or alone, weak or not.
fn matches_etag(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    headers.get_all(IF_NONE_MATCH).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
    })
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.replace(' ', "").eq_ignore_ascii_case("q=0"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.parse().unwrap(), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn the_script_defines_the_global_and_stays_small() {
        assert!(SCRIPT.contains("Produktly"), "the script defines window.Produktly");
        assert!(SCRIPT.contains("createTracker"));
        let gzipped = SERVED.gzipped.len();
        assert!(gzipped <= 10 * 1024, "the served script is {gzipped} bytes gzipped, over 10 KB");
    }

    #[test]
    fn tags_and_encodings_are_read_as_http_says() {
        let etag = &SERVED.etag;
        let tag = etag.to_str().unwrap();
        let leaked = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        assert!(matches_etag(&headers(&[("if-none-match", leaked(format!("\"other\", {tag}")))]), etag));
        assert!(matches_etag(&headers(&[("if-none-match", leaked(format!("W/{tag}")))]), etag));
        assert!(matches_etag(&headers(&[("if-none-match", "*")]), etag));
        assert!(!matches_etag(&headers(&[("if-none-match", "\"other\"")]), etag));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "br, gzip;q=0.8")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0, br")])));
        assert!(!accepts_gzip(&headers(&[])));
    }
}
