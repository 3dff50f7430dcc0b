//! Cross-site request forgery: the one rule for writes authenticated by the session cookie.
//!
//! The cookie is `SameSite=Strict`, so a browser does not send it with a request another site
//! starts. On top of that, a cookie-authenticated request with an unsafe method must come from
//! this origin, as the browser itself reports it:
//! - `Sec-Fetch-Site` (every current browser sends it): `same-origin` or `none` (typed by the
//!   user) passes; `same-site` and `cross-site` are refused;
//! - without it, `Origin` must name the host the request was sent to;
//! - with neither, the caller is not a browser (or one too old to send either, which
//!   SameSite already covers) and passes.
//!
//! Bearer tokens are never sent by a browser on its own, so they are not checked.

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::error::AppError;

/// `Ok` when a cookie-authenticated request may go on.
pub fn check(parts: &Parts) -> Result<(), AppError> {
    if is_safe(&parts.method) || same_origin(&parts.headers) {
        return Ok(());
    }
    Err(AppError::Forbidden("a cross-origin request may not use the session cookie; send the session token as a bearer token".into()))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder().method(method).uri("/api/x");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(()).map(|r| r.into_parts().0).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cookie_writes_must_come_from_this_origin() {
        let host = ("host", "desk.example:8080");
        assert!(check(&parts(Method::GET, &[("sec-fetch-site", "cross-site")])).is_ok(), "reads pass");
        assert!(check(&parts(Method::POST, &[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(check(&parts(Method::POST, &[("sec-fetch-site", "none")])).is_ok());
        assert!(check(&parts(Method::POST, &[("sec-fetch-site", "cross-site")])).is_err());
        assert!(check(&parts(Method::PATCH, &[("sec-fetch-site", "same-site")])).is_err());
        assert!(check(&parts(Method::POST, &[host, ("origin", "http://desk.example:8080")])).is_ok());
        assert!(check(&parts(Method::DELETE, &[host, ("origin", "https://evil.example")])).is_err());
        assert!(check(&parts(Method::POST, &[host, ("origin", "null")])).is_err());
        assert!(check(&parts(Method::POST, &[host])).is_ok(), "not a browser");
    }
}
