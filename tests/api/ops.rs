//! Operations: the OpenAPI document covers every route, health/readiness/metrics answer,
//! and the open-tenant cap holds.

use reqwest::Method;
use serde_json::json;

use crate::common::{Backend, TestServer, both_backends, relaxed_limits};

/// Every route the server serves, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("post", "/api/setup"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("post", "/api/auth/stream-token"),
    ("get", "/api/me"),
    ("get", "/api/auth/sessions"),
    ("delete", "/api/auth/sessions/{id}"),
    ("get", "/api/auth/tokens"),
    ("post", "/api/auth/tokens"),
    ("delete", "/api/auth/tokens/{id}"),
    ("get", "/api/setup"),
    ("get", "/api/users"),
    ("post", "/api/users"),
    ("patch", "/api/users/{id}"),
    ("get", "/api/workspaces"),
    ("post", "/api/workspaces"),
    ("get", "/api/workspaces/{ws}"),
    ("get", "/api/workspaces/{ws}/members"),
    ("post", "/api/workspaces/{ws}/members"),
    ("get", "/api/workspaces/{ws}/tickets"),
    ("post", "/api/workspaces/{ws}/tickets"),
    ("get", "/api/workspaces/{ws}/tickets/{id}"),
    ("patch", "/api/workspaces/{ws}/tickets/{id}"),
    ("delete", "/api/workspaces/{ws}/members/{user}"),
    ("delete", "/api/workspaces/{ws}/tickets/{id}"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/comments"),
    ("post", "/api/workspaces/{ws}/tickets/{id}/comments"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/links"),
    ("post", "/api/workspaces/{ws}/tickets/{id}/links"),
    ("delete", "/api/workspaces/{ws}/tickets/{id}/links/{link}"),
    ("get", "/api/workspaces/{ws}/sync/bootstrap"),
    ("get", "/api/workspaces/{ws}/sync/delta"),
    ("get", "/api/workspaces/{ws}/audit"),
    ("get", "/api/workspaces/{ws}/events"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/note"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/attachments"),
    ("post", "/api/workspaces/{ws}/tickets/{id}/attachments"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/attachments/{att}"),
    ("delete", "/api/workspaces/{ws}/tickets/{id}/attachments/{att}"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/attachments/{att}/versions"),
    ("post", "/api/workspaces/{ws}/tickets/{id}/attachments/{att}/versions"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/attachments/{att}/versions/{ver}"),
    ("get", "/api/workspaces/{ws}/storage"),
    ("put", "/api/workspaces/{ws}/storage"),
    ("get", "/api/workspaces/{ws}/notifications"),
    ("post", "/api/workspaces/{ws}/notifications/read"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/follow"),
    ("put", "/api/workspaces/{ws}/tickets/{id}/follow"),
    ("delete", "/api/workspaces/{ws}/tickets/{id}/follow"),
    ("get", "/api/me/notifications"),
    ("get", "/api/me/notification-preferences"),
    ("put", "/api/me/notification-preferences"),
    ("get", "/api/me/keys"),
    ("put", "/api/me/keys"),
    ("get", "/api/me/keys/{version}"),
    ("get", "/api/workspaces/{ws}/members/{user}/keys"),
    ("get", "/api/workspaces/{ws}/mail/channels"),
    ("post", "/api/workspaces/{ws}/mail/channels"),
    ("get", "/api/workspaces/{ws}/mail/channels/{id}"),
    ("patch", "/api/workspaces/{ws}/mail/channels/{id}"),
    ("delete", "/api/workspaces/{ws}/mail/channels/{id}"),
    ("post", "/api/workspaces/{ws}/mail/channels/{id}/test"),
    ("get", "/api/workspaces/{ws}/tickets/{id}/mail"),
    ("get", "/api/workspaces/{ws}/search"),
    ("get", "/api/workspaces/{ws}/search/status"),
    ("get", "/metrics"),
];

both_backends! {
async fn the_openapi_document_covers_every_route_and_nothing_else(b: Backend) {
    let s = TestServer::start(b).await;
    let doc = s.call(Method::GET, "/api/openapi.json", None, None).await;
    let doc = doc.ok(200).clone();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|k| ["get", "post", "patch", "put", "delete"].contains(&k.as_str())) {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented route is really served: none answers the router's 404 fallback.
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{ws}", "01900000-0000-7000-8000-000000000001")
            .replace("{id}", "01900000-0000-7000-8000-000000000002")
            .replace("{link}", "01900000-0000-7000-8000-000000000003");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let res = s.call(method.clone(), &concrete, None, Some(json!({}))).await;
        assert_ne!(res.status, 405, "{method} {path}");
        if !path.contains("{ws}") && !["/api/setup", "/api/auth/login", "/health", "/ready", "/metrics"].contains(path) {
            assert_eq!(res.status, 401, "{method} {path} requires authentication");
        }
    }
    let docs = s.http.get(format!("{}/api/docs/", s.base)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"), "interactive docs are served from the binary");
    s.stop().await;
}
}

both_backends! {
async fn health_ready_and_metrics_answer(b: Backend) {
    let s = TestServer::start(b).await;
    assert_eq!(s.call(Method::GET, "/health", None, None).await.ok(200)["status"], "ok");
    assert_eq!(s.call(Method::GET, "/ready", None, None).await.ok(200)["status"], "ready");
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    // Each backend's own gauges, and the consumer runner's.
    match b {
        Backend::Sqlite => assert!(metrics.contains("edgedesk_open_tenants 0"), "{metrics}"),
        Backend::Postgres => assert!(metrics.contains("edgedesk_pg_pool_connections "), "{metrics}"),
    }
    assert!(metrics.contains("edgedesk_consumer_events_total{consumer=\"notifications\"}"), "{metrics}");
    let res = s.http.get(format!("{}/health", s.base)).send().await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    s.stop().await;
}
}

#[tokio::test]
async fn open_tenants_stay_under_the_cap() {
    let b = Backend::Sqlite;
    let s = TestServer::start_with(b, relaxed_limits(), |c| c.max_open_tenants = 3).await;
    let admin = s.admin().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(s.workspace(&admin, &format!("ws {i}")).await);
    }
    // Every workspace still works, old and new, while at most 3 are open at once.
    for ws in ids.iter().chain(ids.iter().rev()) {
        s.ticket(&admin, ws, json!({ "title": "hello" })).await;
        let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        let open: usize = metrics.lines().find_map(|l| l.strip_prefix("edgedesk_open_tenants ")).unwrap().parse().unwrap();
        assert!(open <= 3, "{open} open");
    }
    for ws in &ids {
        let list = s.get(&format!("/api/workspaces/{ws}/tickets"), &admin.token).await;
        assert_eq!(list.ok(200)["items"].as_array().unwrap().len(), 2);
    }
    s.stop().await;
}
