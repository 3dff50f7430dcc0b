//! Cross-tenant isolation and requester visibility across list, get, bootstrap and delta.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer, User, both_backends};

/// Every workspace-scoped route, with placeholders for the ids.
fn routes(ws: &str, ticket: &str, link: &str) -> Vec<(Method, String, Option<Value>)> {
    let t = format!("/api/workspaces/{ws}/tickets/{ticket}");
    vec![
        (Method::GET, format!("/api/workspaces/{ws}"), None),
        (Method::GET, format!("/api/workspaces/{ws}/members"), None),
        (Method::POST, format!("/api/workspaces/{ws}/members"), Some(json!({ "email": "admin@example.com", "role": "agent" }))),
        (Method::GET, format!("/api/workspaces/{ws}/tickets"), None),
        (Method::POST, format!("/api/workspaces/{ws}/tickets"), Some(json!({ "title": "intrusion" }))),
        (Method::GET, t.clone(), None),
        (Method::PATCH, t.clone(), Some(json!({ "title": "pwned" }))),
        (Method::DELETE, t.clone(), None),
        (Method::GET, format!("{t}/comments"), None),
        (Method::POST, format!("{t}/comments"), Some(json!({ "body": "hello" }))),
        (Method::GET, format!("{t}/links"), None),
        (Method::POST, format!("{t}/links"), Some(json!({ "target_id": ticket, "kind": "blocks" }))),
        (Method::DELETE, format!("{t}/links/{link}"), None),
        (Method::GET, format!("/api/workspaces/{ws}/sync/bootstrap"), None),
        (Method::GET, format!("/api/workspaces/{ws}/sync/delta?after=0"), None),
        (Method::GET, format!("/api/workspaces/{ws}/audit"), None),
    ]
}

struct Two {
    s: TestServer,
    owner: User,
    alice: User,
    ws_a: String,
    ws_b: String,
    ticket_a: String,
    ticket_b: String,
    link_b: String,
}

async fn two_workspaces(b: Backend) -> Two {
    let s = TestServer::start(b).await;
    let owner = s.admin().await;
    let ws_a = s.workspace(&owner, "A").await;
    let ws_b = s.workspace(&owner, "B").await;
    let alice = s.user(&owner, "alice").await;
    s.add_member(&owner, &ws_a, &alice, "admin").await;
    let ticket_a = s.ticket(&alice, &ws_a, json!({ "title": "A's" })).await["id"].as_str().unwrap().to_string();
    let ticket_b = s.ticket(&owner, &ws_b, json!({ "title": "B's secret" })).await["id"].as_str().unwrap().to_string();
    let other_b = s.ticket(&owner, &ws_b, json!({ "title": "B's other" })).await["id"].as_str().unwrap().to_string();
    let link = s
        .post(&format!("/api/workspaces/{ws_b}/tickets/{ticket_b}/links"), &owner.token, json!({ "target_id": other_b, "kind": "blocks" }))
        .await;
    let link_b = link.ok(201)["id"].as_str().unwrap().to_string();
    Two { s, owner, alice, ws_a, ws_b, ticket_a, ticket_b, link_b }
}

both_backends! {
async fn another_workspace_is_indistinguishable_from_none(b: Backend) {
    let t = two_workspaces(b).await;
    let head_b = t.s.head(&t.owner, &t.ws_b).await;
    let nowhere = "01900000-0000-7000-8000-00000000dead";
    for ((method, b_path, body), (_, none_path, _)) in
        routes(&t.ws_b, &t.ticket_b, &t.link_b).into_iter().zip(routes(nowhere, &t.ticket_b, &t.link_b))
    {
        let in_b = t.s.call(method.clone(), &b_path, Some(&t.alice.token), body.clone()).await;
        let in_none = t.s.call(method.clone(), &none_path, Some(&t.alice.token), body).await;
        in_b.problem(404);
        assert_eq!(in_b.body, in_none.body, "{method} {b_path} must answer exactly like a missing workspace");
    }
    assert_eq!(t.s.head(&t.owner, &t.ws_b).await, head_b, "B is unchanged");
    assert!(!t.s.get("/api/workspaces", &t.alice.token).await.body.to_string().contains(&t.ws_b));
    t.s.stop().await;
}
}

both_backends! {
async fn another_workspaces_ids_do_not_resolve_in_mine(b: Backend) {
    let t = two_workspaces(b).await;
    let head_b = t.s.head(&t.owner, &t.ws_b).await;
    let head_a = t.s.head(&t.owner, &t.ws_a).await;
    // A's workspace, B's ticket and link ids: every ticket route answers 404.
    for (method, path, body) in routes(&t.ws_a, &t.ticket_b, &t.link_b).into_iter().filter(|(_, p, _)| p.contains(&t.ticket_b)) {
        let res = t.s.call(method.clone(), &path, Some(&t.alice.token), body).await;
        res.problem(404);
        assert!(!res.body.to_string().contains("secret"), "{method} {path}");
    }
    // Linking my ticket to B's ticket: the target is simply not found here.
    let link =
        t.s.post(
            &format!("/api/workspaces/{}/tickets/{}/links", t.ws_a, t.ticket_a),
            &t.alice.token,
            json!({ "target_id": t.ticket_b, "kind": "blocks" }),
        )
        .await;
    link.problem(409);
    // A link of B under my ticket: 404.
    t.s.delete(&format!("/api/workspaces/{}/tickets/{}/links/{}", t.ws_a, t.ticket_a, t.link_b), &t.alice.token).await.problem(404);
    assert_eq!(t.s.head(&t.owner, &t.ws_b).await, head_b);
    assert_eq!(t.s.head(&t.owner, &t.ws_a).await, head_a);
    t.s.stop().await;
}
}

both_backends! {
async fn requesters_see_only_their_tickets_in_bootstrap_and_delta(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let agent = s.user(&admin, "agent").await;
    let me = s.user(&admin, "me").await;
    let other = s.user(&admin, "other").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &me, "requester").await;
    s.add_member(&admin, &ws, &other, "requester").await;
    let (_, _, _) = s.bootstrap(&me.token, &ws).await;
    let mine = s.ticket(&me, &ws, json!({ "title": "mine" })).await;
    let theirs = s.ticket(&other, &ws, json!({ "title": "theirs" })).await;
    let mine_id = mine["id"].as_str().unwrap();
    let theirs_id = theirs["id"].as_str().unwrap();
    for (ticket, internal) in [(mine_id, false), (mine_id, true), (theirs_id, false)] {
        s.post(&format!("/api/workspaces/{ws}/tickets/{ticket}/comments"), &agent.token, json!({ "body": "note", "internal": internal }))
            .await
            .ok(201);
    }
    s.post(&format!("/api/workspaces/{ws}/tickets/{mine_id}/links"), &agent.token, json!({ "target_id": theirs_id, "kind": "relates_to" }))
        .await
        .ok(201);
    s.consumers_caught_up(&ws).await;

    let (_, rows, _) = s.bootstrap(&me.token, &ws).await;
    let types: Vec<&str> = rows.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["workspace", "ticket", "comment", "notification"], "no members, no links, one ticket, one public comment, my notification of it");
    assert_eq!(rows[1]["id"], mine_id);
    assert_eq!(rows[2]["internal"], false);
    assert!(!rows.iter().any(|r| r.to_string().contains(theirs_id)));

    let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0"), &me.token).await;
    let events = delta.ok(200)["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // The public reply on my ticket, and my notification of it: nothing else.
    assert_eq!(kinds, ["workspace.created", "ticket.created", "comment.created", "notification.created"]);
    assert_eq!(events[3]["data"]["recipient_id"], me.id.as_str());
    assert!(!delta.body.to_string().contains(theirs_id));
    assert_eq!(delta.body["last_sync_id"].as_i64(), Some(s.head(&admin, &ws).await), "the watermark skips what is hidden");

    // Staff see everything.
    let (_, staff_rows, _) = s.bootstrap(&agent.token, &ws).await;
    assert_eq!(staff_rows.iter().filter(|r| r["type"] == "ticket").count(), 2);
    assert_eq!(staff_rows.iter().filter(|r| r["type"] == "comment").count(), 3);
    assert_eq!(staff_rows.iter().filter(|r| r["type"] == "link").count(), 1);
    assert_eq!(staff_rows.iter().filter(|r| r["type"] == "member").count(), 4);
    // The audit trail is for owners and admins.
    s.get(&format!("/api/workspaces/{ws}/audit"), &agent.token).await.problem(403);
    s.get(&format!("/api/workspaces/{ws}/audit"), &me.token).await.problem(403);
    s.stop().await;
}
}
