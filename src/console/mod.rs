//! The web console: the single-page app whose source is `console/` and whose build,
//! `console/dist/` (content-hashed file names, committed), is embedded in the binary, so the
//! server needs nothing on disk and nothing from the network to serve it.
//!
//! [`serve`] is the router's fallback. Paths that belong to the API (`/api…`, `/health`,
//! `/ready`, `/metrics`) never reach the app: an unknown one there is a problem+json 404.
//! Any other GET or HEAD is an embedded file when one has that name, a 404 when it names a
//! file that is not there (it has an extension), and otherwise `index.html`, where the app's
//! own router takes over.
//!
//! Caching: files under `assets/` carry a content hash in their name and are immutable for a
//! year; everything else (`index.html` above all) is `no-cache`, revalidated by its `ETag` on
//! every use, so a new build shows on the next load. Each file is sent precompressed
//! (`.br`, `.gz` siblings made at build time) when the client accepts it.
//!
//! Every console response carries a strict Content-Security-Policy (no inline script, nothing
//! from another origin) and the other security headers in [`SECURITY_HEADERS`].

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::{EmbeddedFile, RustEmbed};

use crate::error::AppError;

#[derive(RustEmbed)]
#[folder = "console/dist"]
struct Dist;

/// Path prefixes the console never answers for.
const RESERVED: [&str; 4] = ["/api", "/health", "/ready", "/metrics"];

/// The policy for every page of the console. `connect-src 'self'` covers the same-origin
/// WebSocket of the note editor; `frame-src 'self'` the sandboxed plugin slots.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     font-src 'self'; connect-src 'self'; frame-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
];

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// The router's fallback: the console's files, or `index.html` for the app's own routes.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Result<Response, AppError> {
    let path = uri.path();
    if is_reserved(path) {
        return Err(AppError::NotFound);
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(AppError::MethodNotAllowed);
    }
    let name = path.trim_start_matches('/');
    let name = if name.is_empty() { "index.html" } else { name };
    let (name, file) = match Dist::get(name) {
        Some(file) if !is_compressed_sibling(name) => (name, file),
        _ if names_a_file(name) => return Err(AppError::NotFound),
        _ => ("index.html", Dist::get("index.html").ok_or(AppError::NotFound)?),
    };
    Ok(respond(name, file, &headers))
}

fn is_reserved(path: &str) -> bool {
    RESERVED.iter().any(|prefix| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// The app's routes have no extension in their last segment; a missing `x.js` is a 404, not
/// the app (which would answer a script request with HTML).
fn names_a_file(name: &str) -> bool {
    name.rsplit('/').next().is_some_and(|last| last.contains('.'))
}

fn is_compressed_sibling(name: &str) -> bool {
    name.ends_with(".br") || name.ends_with(".gz")
}

fn respond(name: &str, file: EmbeddedFile, request: &HeaderMap) -> Response {
    let content_type = file.metadata.mimetype().to_string();
    let (body, encoding) = match preferred_encoding(request, name) {
        Some((encoding, compressed)) => (compressed, Some(encoding)),
        None => (file, None),
    };
    let etag = format!("\"{}\"", hex::encode(&body.metadata.sha256_hash()[..16]));
    let mut headers = HeaderMap::new();
    for (key, value) in SECURITY_HEADERS {
        headers.insert(key, HeaderValue::from_static(value));
    }
    let content_type = if content_type.starts_with("text/") || content_type == "application/javascript" {
        format!("{content_type}; charset=utf-8")
    } else {
        content_type
    };
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(if name.starts_with("assets/") { IMMUTABLE } else { REVALIDATE }));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if if_none_match(request, &etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, Body::from(body.data.into_owned())).into_response()
}

/// Brotli, else gzip, when the client accepts it and the build made that sibling.
fn preferred_encoding(request: &HeaderMap, name: &str) -> Option<(&'static str, EmbeddedFile)> {
    let accepted = request.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    [("br", "br"), ("gzip", "gz")].into_iter().find_map(|(encoding, suffix)| {
        if !accepts(&accepted, encoding) {
            return None;
        }
        Dist::get(&format!("{name}.{suffix}")).map(|file| (encoding, file))
    })
}

/// Whether an Accept-Encoding value allows `encoding` (named or `*`, with a q above zero).
fn accepts(value: &str, encoding: &str) -> bool {
    let mut named = None;
    let mut any = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts.find_map(|p| p.trim().strip_prefix("q=")).map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
        if coding.eq_ignore_ascii_case(encoding) {
            named = Some(q > 0.0);
        } else if coding == "*" {
            any = Some(q > 0.0);
        }
    }
    named.or(any).unwrap_or(false)
}

fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || candidate.trim_start_matches("W/") == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths_are_the_api_and_ops_only() {
        for path in ["/api", "/api/", "/api/nope", "/health", "/ready", "/metrics", "/metrics/x"] {
            assert!(is_reserved(path), "{path}");
        }
        for path in ["/", "/apis", "/healthy", "/w/1/tickets", "/assets/app.js"] {
            assert!(!is_reserved(path), "{path}");
        }
    }

    #[test]
    fn accept_encoding_honours_q_values_and_wildcards() {
        assert!(accepts("gzip, deflate, br", "br"));
        assert!(accepts("gzip;q=0.5", "gzip"));
        assert!(!accepts("br;q=0, gzip", "br"));
        assert!(accepts("*", "br"));
        assert!(!accepts("*, br;q=0", "br"));
        assert!(!accepts("identity", "gzip"));
        assert!(!accepts("", "gzip"));
    }
}
