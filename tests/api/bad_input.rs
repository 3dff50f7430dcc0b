//! Bad input on every route: malformed JSON (400), wrong types (422), missing content type
//! (415), oversize bodies (413), malformed ids (400); and none of it changes anything.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer, both_backends};

both_backends! {
async fn bad_bodies_and_ids_are_rejected_and_change_nothing(b: Backend) {
    let s = TestServer::start_with(b, crate::common::relaxed_limits(), |c| c.body_limit = 64 * 1024).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let agent = s.user(&admin, "agent").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    let ticket = s.ticket(&admin, &ws, json!({ "title": "Keep me" })).await;
    let t = ticket["id"].as_str().unwrap().to_string();
    let other = s.ticket(&admin, &ws, json!({ "title": "Other" })).await["id"].as_str().unwrap().to_string();
    let head = s.head(&admin, &ws).await;
    let users_before = s.get("/api/users", &admin.token).await.body;

    // Routes that take a JSON body, each with a body of the right shape but wrong types.
    let bodies: Vec<(Method, String, Value)> = vec![
        (Method::POST, "/api/setup".into(), json!({ "email": 1, "password": [], "name": {} })),
        (Method::POST, "/api/auth/login".into(), json!({ "email": true, "password": 5 })),
        (Method::POST, "/api/users".into(), json!({ "email": "x@example.com", "password": 12345678, "name": "X" })),
        (Method::PATCH, format!("/api/users/{}", agent.id), json!({ "disabled": "yes" })),
        (Method::POST, "/api/auth/tokens".into(), json!({ "name": "t", "expires_in_days": -1 })),
        (Method::POST, "/api/workspaces".into(), json!({ "name": 42 })),
        (Method::POST, format!("/api/workspaces/{ws}/members"), json!({ "user_id": agent.id, "role": 3 })),
        (Method::POST, format!("/api/workspaces/{ws}/tickets"), json!({ "title": ["x"] })),
        (Method::PATCH, format!("/api/workspaces/{ws}/tickets/{t}"), json!({ "status": 1 })),
        (Method::PATCH, format!("/api/workspaces/{ws}/tickets/{t}"), json!({ "tags": "a,b" })),
        (Method::PATCH, format!("/api/workspaces/{ws}/tickets/{t}"), json!({ "title": "x", "surprise": true })),
        (Method::POST, format!("/api/workspaces/{ws}/tickets/{t}/comments"), json!({ "body": "x", "internal": "no" })),
        (Method::POST, format!("/api/workspaces/{ws}/tickets/{t}/links"), json!({ "target_id": "not-a-uuid", "kind": "blocks" })),
    ];
    for (method, path, wrong) in &bodies {
        let token = Some(admin.token.as_str());
        let malformed = s.raw(method.clone(), path, token, Some(("application/json", b"{,\"title\": ".to_vec()))).await;
        assert_eq!(malformed.problem(400).status, 400, "{method} {path}");
        let typed = s.call(method.clone(), path, token, Some(wrong.clone())).await;
        assert_eq!(typed.status, 422, "{method} {path}: {}", typed.body);
        typed.problem(422);
        assert!(typed.body["errors"][0]["field"].is_string(), "{method} {path}: {}", typed.body);
        let not_json = s.raw(method.clone(), path, token, Some(("text/plain", b"{}".to_vec()))).await;
        not_json.problem(415);
        let huge = format!("{{\"title\": \"{}\"}}", "x".repeat(128 * 1024));
        let too_big = s.raw(method.clone(), path, token, Some(("application/json", huge.into_bytes()))).await;
        too_big.problem(413);
        let array = s.raw(method.clone(), path, token, Some(("application/json", b"[1,2]".to_vec()))).await;
        array.problem(422);
    }

    // Malformed ids in every position are 400 before any lookup.
    let bad_ids: Vec<(Method, String)> = vec![
        (Method::GET, "/api/workspaces/not-a-uuid".into()),
        (Method::GET, "/api/workspaces/not-a-uuid/tickets".into()),
        (Method::GET, format!("/api/workspaces/{ws}/tickets/12")),
        (Method::PATCH, format!("/api/workspaces/{ws}/tickets/12")),
        (Method::DELETE, format!("/api/workspaces/{ws}/tickets/%20")),
        (Method::GET, format!("/api/workspaces/{ws}/tickets/zzz/comments")),
        (Method::DELETE, format!("/api/workspaces/{ws}/tickets/{t}/links/xyz")),
        (Method::DELETE, "/api/auth/sessions/nope".into()),
        (Method::DELETE, "/api/auth/tokens/nope".into()),
        (Method::PATCH, "/api/users/nope".into()),
    ];
    for (method, path) in bad_ids {
        let body = (method == Method::PATCH).then(|| json!({ "title": "x", "disabled": true }));
        let res = s.call(method.clone(), &path, Some(&admin.token), body).await;
        res.problem(400);
        assert!(!res.body.to_string().to_lowercase().contains("panic"), "{method} {path}");
    }
    // Bad query values on the sync routes.
    s.get(&format!("/api/workspaces/{ws}/sync/delta?after=-1"), &admin.token).await.problem(422);
    s.get(&format!("/api/workspaces/{ws}/sync/delta?after=x&limit=0"), &admin.token).await.problem(422);
    s.get(&format!("/api/workspaces/{ws}/audit?since=yesterday"), &admin.token).await.problem(422);
    s.get(&format!("/api/workspaces/{ws}/audit?actor=bob"), &admin.token).await.problem(422);
    s.get(&format!("/api/workspaces/{ws}/audit?cursor=abc"), &admin.token).await.problem(400);
    // Unknown routes and methods are problem+json too.
    s.get("/api/nothing-here", &admin.token).await.problem(404);
    s.call(Method::PUT, &format!("/api/workspaces/{ws}/tickets"), Some(&admin.token), None).await.problem(405);

    // Nothing changed anywhere.
    assert_eq!(s.head(&admin, &ws).await, head);
    assert_eq!(s.get(&format!("/api/workspaces/{ws}/tickets/{t}"), &admin.token).await.ok(200), &ticket);
    assert_eq!(s.get("/api/users", &admin.token).await.body, users_before);
    assert_eq!(s.get(&format!("/api/workspaces/{ws}/tickets/{t}/links"), &admin.token).await.ok(200), &json!([]));
    let _ = other;
    s.stop().await;
}
}

#[tokio::test]
async fn internals_never_leak_into_responses() {
    let b = Backend::Sqlite;
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    // Remove the workspace's storage while the server is down: opening it then fails inside the store.
    let s = s.restart().await;
    let tenant_dir = s.data_dir().join("tenants").join(&ws);
    std::fs::remove_dir_all(&tenant_dir).unwrap();
    let res = s.get(&format!("/api/workspaces/{ws}/tickets"), &admin.token).await;
    res.problem(500);
    let text = res.body.to_string();
    assert!(!text.contains("tenant.db") && !text.contains("missing") && !text.contains(&*s.data_dir().to_string_lossy()), "{text}");
    assert!(res.body.get("detail").is_none());
    s.stop().await;
}
