//! Setup, login, logout, sessions, API tokens, throttling, disabled users.

use std::time::Duration;

use edgedesk::auth::throttle::ThrottleLimits;
use edgedesk::http::client::TrustedProxies;
use reqwest::Method;
use serde_json::json;

use crate::common::{PASSWORD, TestServer, both_backends};

both_backends! {
async fn setup_creates_the_first_admin_once(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let me = s.get("/api/me", &admin.token).await;
    assert_eq!(me.ok(200)["is_admin"], true);
    assert_eq!(me.body["email"], "admin@example.com");
    // Nobody becomes admin by calling setup again.
    let again =
        s.call(Method::POST, "/api/setup", None, Some(json!({ "email": "eve@example.com", "password": PASSWORD, "name": "Eve" }))).await;
    again.problem(409);
    s.login("eve@example.com", PASSWORD).await.problem(401);
    s.stop().await;
}
}

both_backends! {
async fn setup_validates_its_input(b: Backend) {
    let s = TestServer::start(b).await;
    let bad = s.call(Method::POST, "/api/setup", None, Some(json!({ "email": "nope", "password": "short", "name": " " }))).await;
    bad.problem(422);
    let fields: Vec<&str> = bad.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "name", "password"]);
    let long = "x".repeat(73);
    s.call(Method::POST, "/api/setup", None, Some(json!({ "email": "a@b.c", "password": long, "name": "A" }))).await.problem(422);
    // Nothing was created: setup is still open.
    s.admin().await;
    s.stop().await;
}
}

both_backends! {
async fn login_fails_alike_for_unknown_email_wrong_password_and_disabled_user(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let agent = s.user(&admin, "agent").await;
    let unknown = s.login("nobody@example.com", PASSWORD).await;
    let wrong = s.login(&agent.email, "not the password").await;
    s.patch(&format!("/api/users/{}", agent.id), &admin.token, json!({ "disabled": true })).await.ok(200);
    let disabled = s.login(&agent.email, PASSWORD).await;
    for res in [&unknown, &wrong, &disabled] {
        res.problem(401);
        assert_eq!(res.body, unknown.body, "the three failures must be indistinguishable");
    }
    // Disabling ended the existing session too.
    s.get("/api/me", &agent.token).await.problem(401);
    // Emails match case-insensitively.
    s.login("ADMIN@Example.com", PASSWORD).await.ok(200);
    s.stop().await;
}
}

both_backends! {
async fn passwords_are_8_to_72_characters_and_never_truncated(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    // Setting one: 422. Logging in with one: it cannot be right, so 401 like any wrong
    // password, even when its first 72 bytes are the real one (bcrypt would truncate).
    let long = "p".repeat(80);
    s.post("/api/users", &admin.token, json!({ "email": "t@example.com", "password": &long[..72], "name": "T" })).await.ok(201);
    s.login("t@example.com", &long[..72]).await.ok(200);
    s.login("t@example.com", &long).await.problem(401);
    // 25 three-byte characters (75 bytes): accepted, and only the whole of it logs in.
    let euros = "€".repeat(25);
    s.post("/api/users", &admin.token, json!({ "email": "l@example.com", "password": &euros, "name": "L" })).await.ok(201);
    s.login("l@example.com", &euros).await.ok(200);
    s.login("l@example.com", &("€".repeat(24) + "x")).await.problem(401);
    let created = s.post("/api/users", &admin.token, json!({ "email": "m@example.com", "password": "p".repeat(73), "name": "M" })).await;
    created.problem(422);
    assert_eq!(created.body["errors"][0]["field"], "password");
    s.stop().await;
}
}

both_backends! {
async fn logout_ends_the_session_and_clears_the_cookie(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let res = s.http.post(format!("{}/api/auth/logout", s.base)).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Max-Age=0") && cookie.contains("HttpOnly"));
    s.get("/api/me", &admin.token).await.problem(401);
    s.stop().await;
}
}

both_backends! {
async fn the_session_cookie_authenticates_and_is_httponly_samesite(b: Backend) {
    let s = TestServer::start(b).await;
    s.admin().await;
    let res = s
        .http
        .post(format!("{}/api/auth/login", s.base))
        .json(&json!({ "email": "admin@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("edgedesk_session=eds_"));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"));
    let pair = cookie.split(';').next().unwrap();
    let me = s.http.get(format!("{}/api/me", s.base)).header("cookie", format!("theme=dark; {pair}")).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let nope = s.http.get(format!("{}/api/me", s.base)).header("cookie", "edgedesk_session=eds_forged").send().await.unwrap();
    assert_eq!(nope.status(), 401);
    s.stop().await;
}
}

both_backends! {
async fn sessions_are_listed_and_revocable_only_by_their_owner(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let second = s.login(&admin.email, PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
    let list = s.get("/api/auth/sessions", &admin.token).await;
    let sessions = list.ok(200).as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_string();

    let agent = s.user(&admin, "agent").await;
    s.delete(&format!("/api/auth/sessions/{other}"), &agent.token).await.problem(404);
    s.get("/api/me", &second).await.ok(200);
    s.delete(&format!("/api/auth/sessions/{other}"), &admin.token).await.ok(204);
    s.get("/api/me", &second).await.problem(401);
    s.get("/api/me", &admin.token).await.ok(200);
    s.delete(&format!("/api/auth/sessions/{other}"), &admin.token).await.problem(404);
    s.stop().await;
}
}

both_backends! {
async fn api_tokens_are_shown_once_work_as_bearer_and_can_be_revoked(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let created = s.post("/api/auth/tokens", &admin.token, json!({ "name": "ci", "expires_in_days": 30 })).await;
    let body = created.ok(201).clone();
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("edt_"));
    assert!(body["expires_at"].is_string());
    assert_eq!(s.get("/api/me", &token).await.ok(200)["id"], admin.id.as_str());

    let list = s.get("/api/auth/tokens", &admin.token).await;
    let tokens = list.ok(200).as_array().unwrap().clone();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].get("token").is_none(), "the secret is never listed");
    assert!(!list.body.to_string().contains(&token));

    // An API token cannot "log out"; it is revoked instead.
    s.call(Method::POST, "/api/auth/logout", Some(&token), None).await.problem(400);
    let id = body["id"].as_str().unwrap();
    let agent = s.user(&admin, "agent").await;
    s.delete(&format!("/api/auth/tokens/{id}"), &agent.token).await.problem(404);
    s.delete(&format!("/api/auth/tokens/{id}"), &admin.token).await.ok(204);
    s.get("/api/me", &token).await.problem(401);

    s.post("/api/auth/tokens", &admin.token, json!({ "name": "" })).await.problem(422);
    s.post("/api/auth/tokens", &admin.token, json!({ "name": "x", "expires_in_days": 0 })).await.problem(422);
    s.stop().await;
}
}

both_backends! {
async fn missing_or_garbage_credentials_are_401(b: Backend) {
    let s = TestServer::start(b).await;
    s.admin().await;
    s.call(Method::GET, "/api/me", None, None).await.problem(401);
    s.get("/api/me", "eds_not-a-real-token").await.problem(401);
    let res = s.http.get(format!("{}/api/me", s.base)).header("authorization", "Basic YTpi").send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    s.stop().await;
}
}

both_backends! {
async fn failed_logins_slow_the_guessing_address_and_never_lock_the_owner_out(b: Backend) {
    let limits = ThrottleLimits {
        per_account: 3,
        per_ip: 6,
        base_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(60),
        forget_after: Duration::from_secs(600),
    };
    // The test client stands behind a trusted proxy (itself) that names the client.
    let s = TestServer::start_with(b, limits, |c| c.trusted_proxies = TrustedProxies::parse("127.0.0.1/32").unwrap()).await;
    let admin = s.admin().await;
    let agent = s.user(&admin, "agent").await;
    let login_from = |from: &'static str, email: String, password: &'static str| {
        let s = &s;
        async move {
            s.http
                .post(format!("{}/api/auth/login", s.base))
                .header("x-forwarded-for", from)
                .json(&json!({ "email": email, "password": password }))
                .send()
                .await
                .unwrap()
        }
    };
    let attacker = "203.0.113.7";
    for _ in 0..3 {
        assert_eq!(login_from(attacker, agent.email.clone(), "wrong password!").await.status(), 401);
    }
    // From there, even the right password now waits, with a Retry-After.
    let slowed = login_from(attacker, agent.email.clone(), PASSWORD).await;
    assert_eq!(slowed.status(), 429);
    let retry: u64 = slowed.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // The owner, from their own address, logs in at once.
    assert_eq!(login_from("198.51.100.20", agent.email.clone(), PASSWORD).await.status(), 200);
    // Unknown accounts behave the same: no account enumeration.
    for _ in 0..3 {
        assert_eq!(login_from(attacker, "ghost@example.com".into(), "wrong password!").await.status(), 401);
    }
    assert_eq!(login_from(attacker, "ghost@example.com".into(), "wrong password!").await.status(), 429);
    // Six failures from the attacker's address in all: every account is slowed from it.
    assert_eq!(login_from(attacker, admin.email.clone(), PASSWORD).await.status(), 429);
    assert_eq!(login_from("198.51.100.21", admin.email.clone(), PASSWORD).await.status(), 200);
    // IPv6 clients count by their /64.
    for _ in 0..3 {
        assert_eq!(login_from("2001:db8:7:7::1", agent.email.clone(), "wrong password!").await.status(), 401);
    }
    assert_eq!(login_from("2001:db8:7:7::2", agent.email.clone(), PASSWORD).await.status(), 429);
    assert_eq!(login_from("2001:db8:7:8::2", agent.email.clone(), PASSWORD).await.status(), 200);
    s.stop().await;
}
}

both_backends! {
async fn proxy_headers_from_an_untrusted_peer_are_ignored(b: Backend) {
    let limits = ThrottleLimits { per_account: 3, per_ip: 100, ..ThrottleLimits::default() };
    let s = TestServer::start_with(b, limits, |_| {}).await;
    let admin = s.admin().await;
    // Nobody trusted says HTTPS: the cookie is not Secure (EDGEDESK_COOKIE_SECURE is off).
    let res = s
        .http
        .post(format!("{}/api/auth/login", s.base))
        .header("x-forwarded-proto", "https")
        .json(&json!({ "email": admin.email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert!(!res.headers()["set-cookie"].to_str().unwrap().contains("Secure"));
    // Each attempt claims another address; without a trusted proxy they are all this peer.
    for i in 0..3 {
        let res = s
            .http
            .post(format!("{}/api/auth/login", s.base))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({ "email": admin.email, "password": "wrong password!" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    s.login(&admin.email, PASSWORD).await.problem(429);
    s.stop().await;
}
}

both_backends! {
async fn the_session_cookie_is_secure_when_a_trusted_proxy_says_https(b: Backend) {
    let s = TestServer::start_with(b, crate::common::relaxed_limits(), |c| c.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap()).await;
    let admin = s.admin().await;
    let cookie = |https: bool| {
        let s = &s;
        let email = admin.email.clone();
        async move {
            let mut req = s.http.post(format!("{}/api/auth/login", s.base)).json(&json!({ "email": email, "password": PASSWORD }));
            if https {
                req = req.header("x-forwarded-proto", "https");
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.headers()["set-cookie"].to_str().unwrap().to_string()
        }
    };
    assert!(cookie(true).await.contains("; Secure"));
    assert!(!cookie(false).await.contains("Secure"));
    s.stop().await;
}
}

both_backends! {
async fn only_platform_admins_manage_users(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let agent = s.user(&admin, "agent").await;
    s.get("/api/users", &agent.token).await.problem(403);
    s.post("/api/users", &agent.token, json!({ "email": "x@example.com", "password": PASSWORD, "name": "X" })).await.problem(403);
    s.patch(&format!("/api/users/{}", admin.id), &agent.token, json!({ "disabled": true })).await.problem(403);
    assert_eq!(s.get("/api/users", &admin.token).await.ok(200).as_array().unwrap().len(), 2);
    s.post("/api/users", &admin.token, json!({ "email": "AGENT@example.com", "password": PASSWORD, "name": "Dup" })).await.problem(409);
    s.patch(&format!("/api/users/{}", admin.id), &admin.token, json!({ "disabled": true })).await.problem(409);
    s.stop().await;
}
}

#[test]
fn cookies_in_clear_to_other_machines_are_warned_about_at_start() {
    use edgedesk::app::plain_cookie_warning;
    let mut config = edgedesk::config::Config::for_data_dir("/tmp/unused");
    config.listen = "127.0.0.1:8080".parse().unwrap();
    assert!(plain_cookie_warning(&config).is_none(), "loopback only: nothing crosses a network");
    config.listen = "0.0.0.0:8080".parse().unwrap();
    assert!(plain_cookie_warning(&config).is_some(), "every address, plain HTTP, no proxy: warned");
    config.trusted_proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
    assert!(plain_cookie_warning(&config).is_none(), "behind a trusted proxy, which says when it is HTTPS");
    config.trusted_proxies = TrustedProxies::default();
    config.cookie_secure = true;
    assert!(plain_cookie_warning(&config).is_none());
}
