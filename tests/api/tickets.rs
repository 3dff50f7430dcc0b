//! Tickets, comments and links: every filter, the pagination, and what requesters may do.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::{Backend, TestServer, User, all_pages, both_backends};

struct Desk {
    s: TestServer,
    admin: User,
    agent: User,
    customer: User,
    other_customer: User,
    ws: String,
}

async fn desk(b: Backend) -> Desk {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let agent = s.user(&admin, "agent").await;
    let customer = s.user(&admin, "customer").await;
    let other_customer = s.user(&admin, "other").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &customer, "requester").await;
    s.add_member(&admin, &ws, &other_customer, "requester").await;
    Desk { s, admin, agent, customer, other_customer, ws }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
}

both_backends! {
async fn create_get_patch_delete(b: Backend) {
    let d = desk(b).await;
    let t =
        d.s.ticket(&d.agent, &d.ws, json!({ "title": "  VPN is down  ", "priority": "high", "tags": ["Network", "vpn", "network"] })).await;
    assert_eq!(t["title"], "VPN is down");
    assert_eq!(t["status"], "open");
    assert_eq!(t["priority"], "high");
    assert_eq!(t["tags"], json!(["network", "vpn"]));
    assert_eq!(t["requester_id"], d.agent.id.as_str());
    assert_eq!(t["number"], 1);
    assert_eq!(t["version"], 1);
    let path = format!("/api/workspaces/{}/tickets/{}", d.ws, t["id"].as_str().unwrap());
    assert_eq!(d.s.get(&path, &d.agent.token).await.ok(200), &t);

    let patched = d.s.patch(&path, &d.agent.token, json!({ "status": "pending", "assignee_id": d.agent.id, "tags": [] })).await;
    let p = patched.ok(200).clone();
    assert_eq!(p["status"], "pending");
    assert_eq!(p["assignee_id"], d.agent.id.as_str());
    assert_eq!(p["tags"], json!([]));
    assert_eq!(p["version"], 2);
    assert!(p["updated_at"].as_str() > t["updated_at"].as_str());
    // null unassigns.
    assert_eq!(d.s.patch(&path, &d.agent.token, json!({ "assignee_id": null })).await.ok(200)["assignee_id"], Value::Null);
    // A patch that changes nothing returns the ticket unchanged (no new version).
    let same = d.s.patch(&path, &d.agent.token, json!({ "status": "pending" })).await;
    assert_eq!(same.ok(200)["version"], 3);
    // An empty patch changes nothing either.
    assert_eq!(d.s.patch(&path, &d.agent.token, json!({})).await.ok(200)["version"], 3);
    // Assignees must be staff members; requesters must be members: well-formed ids that the
    // workspace's current members do not match are conflicts (409), naming the field.
    let bad = d.s.patch(&path, &d.agent.token, json!({ "assignee_id": d.customer.id })).await;
    assert!(bad.problem(409).body["detail"].as_str().unwrap().starts_with("assignee_id"));
    let outsider = d.s.user(&d.admin, "outsider").await;
    let bad =
        d.s.post(&format!("/api/workspaces/{}/tickets", d.ws), &d.agent.token, json!({ "title": "x", "requester_id": outsider.id })).await;
    assert!(bad.problem(409).body["detail"].as_str().unwrap().starts_with("requester_id"));

    d.s.delete(&path, &d.agent.token).await.ok(204);
    d.s.get(&path, &d.agent.token).await.problem(404);
    d.s.delete(&path, &d.agent.token).await.problem(404);
    d.s.patch(&path, &d.agent.token, json!({ "title": "x" })).await.problem(404);
    let list = d.s.get(&format!("/api/workspaces/{}/tickets", d.ws), &d.agent.token).await;
    assert_eq!(list.ok(200)["items"], json!([]));
    d.s.stop().await;
}
}

both_backends! {
async fn every_filter_selects_exactly_the_matching_tickets(b: Backend) {
    let d = desk(b).await;
    let base = format!("/api/workspaces/{}/tickets", d.ws);
    let mut all = Vec::new();
    for i in 0..12 {
        let status = ["open", "pending", "resolved", "closed"][i % 4];
        let priority = ["low", "normal", "high", "urgent"][(i / 3) % 4];
        let mut body = json!({ "title": format!("ticket {i}"), "status": status, "priority": priority });
        if i % 2 == 0 {
            body["assignee_id"] = json!(d.agent.id);
        }
        if i % 3 == 0 {
            body["requester_id"] = json!(d.customer.id);
        }
        if i % 5 == 0 {
            body["tags"] = json!(["billing"]);
        }
        all.push(d.s.ticket(&d.agent, &d.ws, body).await);
    }
    let check = |filter: &str, pred: &dyn Fn(&Value) -> bool| {
        let want: HashSet<String> = all.iter().filter(|t| pred(t)).map(|t| t["id"].as_str().unwrap().to_string()).collect();
        (format!("{base}?{filter}"), want)
    };
    let cases = [
        check("status=pending", &|t| t["status"] == "pending"),
        check("priority=urgent", &|t| t["priority"] == "urgent"),
        check(&format!("assignee={}", d.agent.id), &|t| t["assignee_id"] == d.agent.id.as_str()),
        check("assignee=none", &|t| t["assignee_id"].is_null()),
        check(&format!("requester={}", d.customer.id), &|t| t["requester_id"] == d.customer.id.as_str()),
        check("tag=billing", &|t| t["tags"] == json!(["billing"])),
        check("tag=BILLING&status=open", &|t| t["tags"] == json!(["billing"]) && t["status"] == "open"),
        check("status=closed&priority=normal", &|t| t["status"] == "closed" && t["priority"] == "normal"),
    ];
    for (url, want) in cases {
        let got: HashSet<String> = ids(&all_pages(&d.s, &d.agent.token, &format!("{url}&limit=2")).await).into_iter().collect();
        assert_eq!(got, want, "{url}");
        assert!(!want.is_empty(), "{url} should match something");
    }
    // Invalid filter values are 422 naming the parameter.
    for (q, field) in [
        ("status=lost", "status"),
        ("priority=meh", "priority"),
        ("assignee=bob", "assignee"),
        ("requester=1", "requester"),
        ("tag=a%20b", "tag"),
        ("sort=title", "sort"),
        ("order=up", "order"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
    ] {
        let res = d.s.get(&format!("{base}?{q}"), &d.agent.token).await;
        assert_eq!(res.problem(422).body["errors"][0]["field"], field, "{q}");
    }
    d.s.get(&format!("{base}?cursor=garbage"), &d.agent.token).await.problem(400);
    d.s.stop().await;
}
}

both_backends! {
async fn pagination_is_stable_and_complete_in_every_order(b: Backend) {
    let d = desk(b).await;
    let base = format!("/api/workspaces/{}/tickets", d.ws);
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(d.s.ticket(&d.agent, &d.ws, json!({ "title": format!("t{i}") })).await);
    }
    // Touch a few so that updated order differs from created order.
    for t in created.iter().step_by(4) {
        d.s.patch(&format!("{base}/{}", t["id"].as_str().unwrap()), &d.agent.token, json!({ "priority": "high" })).await.ok(200);
    }
    for (sort, order) in [("updated_at", "desc"), ("updated_at", "asc"), ("created_at", "desc"), ("created_at", "asc")] {
        let items = all_pages(&d.s, &d.agent.token, &format!("{base}?sort={sort}&order={order}&limit=5")).await;
        let got = ids(&items);
        assert_eq!(got.len(), 23, "{sort} {order}");
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 23, "no duplicates in {sort} {order}");
        let keys: Vec<(String, String)> =
            items.iter().map(|t| (t[sort].as_str().unwrap().to_string(), t["id"].as_str().unwrap().to_string())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "{sort} {order} is ordered by (key, id)");
    }
    // A cursor made for one ordering is refused by another.
    let first = d.s.get(&format!("{base}?sort=created_at&limit=5"), &d.agent.token).await;
    let cursor = first.ok(200)["next_cursor"].as_str().unwrap().to_string();
    d.s.get(&format!("{base}?sort=updated_at&limit=5&cursor={cursor}"), &d.agent.token).await.problem(409);
    d.s.stop().await;
}
}

both_backends! {
async fn comments_and_internal_notes(b: Backend) {
    let d = desk(b).await;
    let t = d.s.ticket(&d.agent, &d.ws, json!({ "title": "Refund", "requester_id": d.customer.id })).await;
    let comments = format!("/api/workspaces/{}/tickets/{}/comments", d.ws, t["id"].as_str().unwrap());
    let reply = d.s.post(&comments, &d.agent.token, json!({ "body": "We are on it." })).await;
    assert_eq!(reply.ok(201)["internal"], false);
    let note = d.s.post(&comments, &d.agent.token, json!({ "body": "Customer is VIP", "internal": true })).await;
    assert_eq!(note.ok(201)["internal"], true);
    d.s.post(&comments, &d.customer.token, json!({ "body": "Thanks!" })).await.ok(201);
    for i in 0..4 {
        d.s.post(&comments, &d.agent.token, json!({ "body": format!("update {i}") })).await.ok(201);
    }
    let staff = all_pages(&d.s, &d.agent.token, &format!("{comments}?limit=3")).await;
    assert_eq!(staff.len(), 7);
    let bodies: Vec<&str> = staff.iter().map(|c| c["body"].as_str().unwrap()).collect();
    assert_eq!(&bodies[..3], ["We are on it.", "Customer is VIP", "Thanks!"], "oldest first");
    let customer = all_pages(&d.s, &d.customer.token, &format!("{comments}?limit=2")).await;
    assert_eq!(customer.len(), 6);
    assert!(customer.iter().all(|c| c["internal"] == false), "requesters never see internal notes");

    d.s.post(&comments, &d.customer.token, json!({ "body": "sneaky", "internal": true })).await.problem(403);
    d.s.post(&comments, &d.agent.token, json!({ "body": "   " })).await.problem(422);
    d.s.post(&comments, &d.agent.token, json!({ "body": "x".repeat(65_537) })).await.problem(422);
    d.s.post(&comments, &d.other_customer.token, json!({ "body": "hi" })).await.problem(404);
    d.s.get(&comments, &d.other_customer.token).await.problem(404);
    d.s.get(&format!("{comments}?cursor=nope"), &d.agent.token).await.problem(400);
    d.s.stop().await;
}
}

both_backends! {
async fn links_between_tickets(b: Backend) {
    let d = desk(b).await;
    let a = d.s.ticket(&d.agent, &d.ws, json!({ "title": "A", "requester_id": d.customer.id })).await;
    let b = d.s.ticket(&d.agent, &d.ws, json!({ "title": "B" })).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let links = format!("/api/workspaces/{}/tickets/{a_id}/links", d.ws);
    let made = d.s.post(&links, &d.agent.token, json!({ "target_id": b_id, "kind": "duplicates" })).await;
    let link = made.ok(201).clone();
    assert_eq!(link["kind"], "duplicates");
    d.s.post(&links, &d.agent.token, json!({ "target_id": b_id, "kind": "duplicates" })).await.problem(409);
    d.s.post(&links, &d.agent.token, json!({ "target_id": b_id, "kind": "blocks" })).await.ok(201);
    d.s.post(&links, &d.agent.token, json!({ "target_id": a_id, "kind": "relates_to" })).await.problem(422);
    d.s.post(&links, &d.agent.token, json!({ "target_id": b_id, "kind": "causes" })).await.problem(422);
    let missing = uuid_like();
    d.s.post(&links, &d.agent.token, json!({ "target_id": missing, "kind": "blocks" })).await.problem(409);
    // Both ends list the link.
    assert_eq!(d.s.get(&links, &d.agent.token).await.ok(200).as_array().unwrap().len(), 2);
    let from_b = format!("/api/workspaces/{}/tickets/{b_id}/links", d.ws);
    assert_eq!(d.s.get(&from_b, &d.agent.token).await.ok(200).as_array().unwrap().len(), 2);
    // Requesters do not see links, even on their own tickets.
    d.s.get(&links, &d.customer.token).await.problem(403);
    let link_path = format!("{links}/{}", link["id"].as_str().unwrap());
    d.s.delete(&link_path, &d.customer.token).await.problem(403);
    d.s.delete(&link_path, &d.agent.token).await.ok(204);
    d.s.delete(&link_path, &d.agent.token).await.problem(404);
    assert_eq!(d.s.get(&links, &d.agent.token).await.ok(200).as_array().unwrap().len(), 1);
    d.s.stop().await;
}
}

fn uuid_like() -> String {
    "01900000-0000-7000-8000-000000000000".to_string()
}

both_backends! {
async fn requesters_see_and_act_only_on_their_own_tickets(b: Backend) {
    let d = desk(b).await;
    let base = format!("/api/workspaces/{}/tickets", d.ws);
    let mine = d.s.ticket(&d.customer, &d.ws, json!({ "title": "My laptop" })).await;
    assert_eq!(mine["requester_id"], d.customer.id.as_str());
    let theirs = d.s.ticket(&d.other_customer, &d.ws, json!({ "title": "Their laptop" })).await;
    let staff = d.s.ticket(&d.agent, &d.ws, json!({ "title": "Internal" })).await;

    let listed = ids(&all_pages(&d.s, &d.customer.token, &base).await);
    assert_eq!(listed, [mine["id"].as_str().unwrap()]);
    // Filtering by someone else's requester id shows nothing, not their tickets.
    assert!(all_pages(&d.s, &d.customer.token, &format!("{base}?requester={}", d.other_customer.id)).await.is_empty());
    for other in [&theirs, &staff] {
        let path = format!("{base}/{}", other["id"].as_str().unwrap());
        d.s.get(&path, &d.customer.token).await.problem(404);
        d.s.patch(&path, &d.customer.token, json!({ "title": "mine now" })).await.problem(404);
    }
    let path = format!("{base}/{}", mine["id"].as_str().unwrap());
    // Requesters may retitle and close their own ticket, nothing more.
    d.s.patch(&path, &d.customer.token, json!({ "title": "My laptop is slow", "status": "closed" })).await.ok(200);
    d.s.patch(&path, &d.customer.token, json!({ "priority": "urgent" })).await.problem(403);
    d.s.patch(&path, &d.customer.token, json!({ "assignee_id": d.agent.id })).await.problem(403);
    d.s.delete(&path, &d.customer.token).await.problem(403);
    d.s.post(&base, &d.customer.token, json!({ "title": "x", "priority": "urgent" })).await.problem(403);
    d.s.post(&base, &d.customer.token, json!({ "title": "x", "requester_id": d.other_customer.id })).await.problem(403);
    d.s.stop().await;
}
}
