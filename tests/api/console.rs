//! The web console as the server serves it: the embedded build at `/`, the app's routes
//! falling back to `index.html` without ever shadowing the API, caching by kind of file,
//! precompressed bodies, the security headers, and the CSRF rule on cookie-authenticated
//! writes.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The hashed script `index.html` loads.
fn entry_script(html: &str) -> String {
    let start = html.find("/assets/index-").expect("index.html loads the hashed entry script");
    let end = html[start..].find(".js").expect("a .js name") + start + 3;
    html[start..end].to_string()
}

#[tokio::test]
async fn the_console_is_served_with_a_fallback_that_never_shadows_the_api() {
    let s = TestServer::start(Backend::Sqlite).await;
    let get = |path: &str| s.http.get(format!("{}{path}", s.base)).send();

    let root = get("/").await.unwrap();
    assert_eq!(root.status(), 200);
    assert!(header(&root, "content-type").starts_with("text/html"), "{}", header(&root, "content-type"));
    assert_eq!(header(&root, "cache-control"), "no-cache");
    let csp = header(&root, "content-security-policy").to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&root, "x-content-type-options"), "nosniff");
    assert_eq!(header(&root, "x-frame-options"), "DENY");
    let etag = header(&root, "etag").to_string();
    let html = root.text().await.unwrap();
    assert!(!html.contains("<script>") && html.contains(r#"type="module""#), "no inline script: {html}");

    // An app route is the app.
    let deep = get("/w/6f1c1d3e-1111-4111-8111-111111111111/t/abc?status=open").await.unwrap();
    assert_eq!(deep.status(), 200);
    assert_eq!(deep.text().await.unwrap(), html);

    // The API and the ops routes are never the app: unknown ones are problem+json 404s.
    for path in ["/api", "/api/nope", "/api/workspaces/x/y/z", "/health/x", "/metrics/x", "/ready/x"] {
        let res = get(path).await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(header(&res, "content-type"), "application/problem+json", "{path}");
    }
    assert_eq!(get("/health").await.unwrap().json::<serde_json::Value>().await.unwrap()["status"], "ok");
    // A missing file is a 404, not the app answering a script request with HTML.
    assert_eq!(get("/assets/missing-0000.js").await.unwrap().status(), 404);
    // Other methods on the app's paths are refused.
    let post = s.http.post(format!("{}/w/x", s.base)).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "content-type"), "application/problem+json");

    // Revalidation: the same ETag is a 304 without a body.
    let again = s.http.get(format!("{}/", s.base)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // The hashed script: immutable, and precompressed when the client accepts it.
    let script = entry_script(&html);
    let plain = get(&script).await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(header(&plain, "content-type").starts_with("text/javascript"), "{}", header(&plain, "content-type"));
    assert_eq!(header(&plain, "cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(header(&plain, "content-encoding"), "");
    let plain = plain.bytes().await.unwrap();
    for (accept, encoding) in [("gzip, deflate, br", "br"), ("gzip", "gzip"), ("br;q=0, gzip", "gzip"), ("identity", "")] {
        let res = s.http.get(format!("{}{script}", s.base)).header("accept-encoding", accept).send().await.unwrap();
        assert_eq!(header(&res, "content-encoding"), encoding, "{accept}");
        assert_eq!(header(&res, "vary"), "accept-encoding");
        let body = res.bytes().await.unwrap();
        let decoded = match encoding {
            "br" => {
                let mut out = Vec::new();
                brotli_decompress(&body, &mut out);
                out
            }
            "gzip" => gunzip(&body),
            _ => body.to_vec(),
        };
        assert_eq!(decoded, plain, "{accept}: the same script");
        if !encoding.is_empty() {
            assert!(body.len() < plain.len() / 2, "{accept}: {} of {}", body.len(), plain.len());
        }
    }
    // The compressed siblings are not files of their own.
    assert_eq!(get(&format!("{script}.br")).await.unwrap().status(), 404);
    s.stop().await;
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("gzip");
    out
}

fn brotli_decompress(bytes: &[u8], out: &mut Vec<u8>) {
    brotli_decompressor::BrotliDecompress(&mut std::io::Cursor::new(bytes), out).expect("brotli");
}

both_backends! {
    async fn a_cookie_authenticated_write_from_another_origin_is_refused(b: Backend) {
        let s = TestServer::start(b).await;
        let admin = s.admin().await;
        let login = s.http.post(format!("{}/api/auth/login", s.base)).json(&json!({ "email": admin.email, "password": PASSWORD })).send().await.unwrap();
        let cookie = header(&login, "set-cookie").split(';').next().unwrap().to_string();
        let host = s.base.trim_start_matches("http://").to_string();
        let create = |headers: &[(&str, &str)]| {
            let mut req = s.http.post(format!("{}/api/workspaces", s.base)).json(&json!({ "name": "Support" }));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send()
        };
        for refused in [
            vec![("cookie", cookie.as_str()), ("sec-fetch-site", "cross-site")],
            vec![("cookie", cookie.as_str()), ("sec-fetch-site", "same-site")],
            vec![("cookie", cookie.as_str()), ("origin", "https://evil.example")],
        ] {
            let res = create(&refused).await.unwrap();
            assert_eq!(res.status(), 403, "{refused:?}");
            assert_eq!(header(&res, "content-type"), "application/problem+json");
        }
        let origin = format!("http://{host}");
        for allowed in [
            vec![("cookie", cookie.as_str()), ("sec-fetch-site", "same-origin")],
            vec![("cookie", cookie.as_str()), ("origin", origin.as_str())],
            vec![("cookie", cookie.as_str())],
        ] {
            assert_eq!(create(&allowed).await.unwrap().status(), 201, "{allowed:?}");
        }
        // Reads with the cookie pass from anywhere (SameSite keeps the cookie off them anyway),
        // and a bearer token is never checked: a browser does not send one by itself.
        let me = s.http.get(format!("{}/api/me", s.base)).header("cookie", &cookie).header("sec-fetch-site", "cross-site").send().await.unwrap();
        assert_eq!(me.status(), 200);
        let bearer = s.http.post(format!("{}/api/workspaces", s.base)).bearer_auth(&admin.token).header("sec-fetch-site", "cross-site")
            .json(&json!({ "name": "Other" })).send().await.unwrap();
        assert_eq!(bearer.status(), 201);
        s.stop().await;
    }
}
