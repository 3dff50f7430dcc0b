//! Notifications, the first durable log consumer: each rule notifies exactly whom it should,
//! a notification reaches its recipient's live stream and delta and nobody else's, reading
//! and counting work, preferences mute kinds, and a consumer that fails on one event stops
//! in that workspace only.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Backend, TestServer, User, both_backends};
use crate::live::open;

/// A desk: an owner, two agents, the requester of the ticket, and a requester of nothing.
struct Desk {
    admin: User,
    alice: User,
    bob: User,
    carol: User,
    dave: User,
    ws: String,
}

async fn desk(s: &TestServer) -> Desk {
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let alice = s.user(&admin, "alice").await;
    let bob = s.user(&admin, "bob").await;
    let carol = s.user(&admin, "carol").await;
    let dave = s.user(&admin, "dave").await;
    s.add_member(&admin, &ws, &alice, "agent").await;
    s.add_member(&admin, &ws, &bob, "agent").await;
    s.add_member(&admin, &ws, &carol, "requester").await;
    s.add_member(&admin, &ws, &dave, "requester").await;
    Desk { admin, alice, bob, carol, dave, ws }
}

/// Every notification of `user` in `ws`, oldest first (the API answers newest first).
async fn notifications(s: &TestServer, user: &User, ws: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = s.get(&format!("/api/workspaces/{ws}/notifications?limit=2{cursor}"), &user.token).await;
        let body = page.ok(200).clone();
        out.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    out.reverse();
    out
}

fn kinds(list: &[Value]) -> Vec<&str> {
    list.iter().map(|n| n["kind"].as_str().unwrap()).collect()
}

async fn comment(s: &TestServer, user: &User, ws: &str, ticket: &str, body: &str, internal: bool) -> Value {
    s.post(&format!("/api/workspaces/{ws}/tickets/{ticket}/comments"), &user.token, json!({ "body": body, "internal": internal }))
        .await
        .ok(201)
        .clone()
}

async fn assign(s: &TestServer, by: &User, ws: &str, ticket: &str, to: &User) {
    s.patch(&format!("/api/workspaces/{ws}/tickets/{ticket}"), &by.token, json!({ "assignee_id": to.id })).await.ok(200);
}

async fn following(s: &TestServer, user: &User, ws: &str, ticket: &str) -> crate::common::Resp {
    s.get(&format!("/api/workspaces/{ws}/tickets/{ticket}/follow"), &user.token).await
}

/// Every delta event `user` may see in `ws`.
async fn delta(s: &TestServer, user: &User, ws: &str) -> Vec<Value> {
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        let page = s.get(&format!("/api/workspaces/{ws}/sync/delta?after={after}&limit=1000"), &user.token).await.ok(200).clone();
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        after = page["last_sync_id"].as_i64().unwrap();
        if page["has_more"] != true {
            return out;
        }
    }
}

both_backends! {
async fn each_rule_notifies_exactly_the_people_it_should(b: Backend) {
    let s = TestServer::start(b).await;
    let Desk { admin, alice, bob, carol, dave, ws } = desk(&s).await;
    let t1 = s.ticket(&carol, &ws, json!({ "title": "Printer on fire" })).await["id"].as_str().unwrap().to_string();
    let t2 = s.ticket(&admin, &ws, json!({ "title": "Internal chores" })).await["id"].as_str().unwrap().to_string();
    // Assignment notifies the assignee, who now follows.
    assign(&s, &admin, &ws, &t1, &alice).await;
    // A public reply: its followers but the author (carol follows as requester).
    comment(&s, &carol, &ws, &t1, "It is still on fire", false).await;
    s.call(reqwest::Method::PUT, &format!("/api/workspaces/{ws}/tickets/{t1}/follow"), Some(&bob.token), None).await.ok(204);
    // An internal note: staff followers only (not carol).
    comment(&s, &alice, &ws, &t1, "checking the logs", true).await;
    // A mention outranks the reply for bob; dave may not see the ticket, so nothing.
    comment(&s, &alice, &ws, &t1, "@bob can you look? @dave too", false).await;
    // Requesters are never told about internal notes, not even when mentioned in one.
    comment(&s, &alice, &ws, &t1, "@carol must not see this", true).await;
    // Reassigned: bob is told; alice's automatic follow goes with the assignment.
    assign(&s, &admin, &ws, &t1, &bob).await;
    comment(&s, &carol, &ws, &t1, "thanks", false).await;
    // Nobody is told about their own action.
    assign(&s, &alice, &ws, &t2, &alice).await;
    s.consumers_caught_up(&ws).await;

    let alice_n = notifications(&s, &alice, &ws).await;
    let bob_n = notifications(&s, &bob, &ws).await;
    let carol_n = notifications(&s, &carol, &ws).await;
    assert_eq!(kinds(&alice_n), ["assigned", "reply"]);
    assert_eq!(kinds(&bob_n), ["internal_note", "mention", "internal_note", "assigned", "reply"]);
    assert_eq!(kinds(&carol_n), ["reply"]);
    assert!(notifications(&s, &dave, &ws).await.is_empty());
    assert!(notifications(&s, &admin, &ws).await.is_empty());
    let mention = &bob_n[1];
    assert_eq!(mention["ticket_id"], t1.as_str());
    assert_eq!(mention["ticket_title"], "Printer on fire");
    assert_eq!(mention["ticket_number"], 1);
    assert_eq!(mention["actor_id"], alice.id.as_str());
    assert_eq!(mention["excerpt"], "@bob can you look? @dave too");
    assert_eq!(mention["internal"], false);
    assert_eq!(bob_n[0]["internal"], true);
    assert!(bob_n.iter().all(|n| n["recipient_id"] == bob.id.as_str() && n["read_at"].is_null()));

    // The log carries each notification to its recipient alone.
    for (user, mine) in [(&alice, 2), (&bob, 5), (&carol, 1), (&dave, 0), (&admin, 0)] {
        let events = delta(&s, user, &ws).await;
        let theirs: Vec<&Value> = events.iter().filter(|e| e["kind"] == "notification.created").collect();
        assert_eq!(theirs.len(), mine, "{}", user.email);
        assert!(theirs.iter().all(|e| e["data"]["recipient_id"] == user.id.as_str()));
        // A bootstrap carries the same rows.
        let (_, rows, _) = s.bootstrap(&user.token, &ws).await;
        let synced: Vec<&Value> = rows.iter().filter(|r| r["type"] == "notification").collect();
        assert_eq!(synced.len(), mine, "{}", user.email);
        for (row, event) in synced.iter().zip(&theirs) {
            let mut row = (*row).clone();
            row.as_object_mut().unwrap().remove("type");
            assert_eq!(row, event["data"]);
        }
    }
    let carol_events = delta(&s, &carol, &ws).await;
    assert!(carol_events.iter().all(|e| e["data"]["internal"] != true), "no internal note reaches a requester");

    // Following as the consumer applied it.
    assert_eq!(following(&s, &bob, &ws, &t1).await.ok(200).clone(), json!({ "following": true, "reason": "manual" }));
    assert_eq!(following(&s, &alice, &ws, &t1).await.ok(200).clone(), json!({ "following": false, "reason": null }));
    assert_eq!(following(&s, &carol, &ws, &t1).await.ok(200)["reason"], "requester");
    // A ticket the caller may not see does not exist for them.
    following(&s, &dave, &ws, &t1).await.problem(404);
    s.call(reqwest::Method::PUT, &format!("/api/workspaces/{ws}/tickets/{t1}/follow"), Some(&dave.token), None).await.problem(404);
    s.call(reqwest::Method::PUT, &format!("/api/workspaces/{ws}/tickets/nope/follow"), Some(&bob.token), None).await.problem(400);
    // Unfollowed: the next reply passes bob by.
    s.call(reqwest::Method::DELETE, &format!("/api/workspaces/{ws}/tickets/{t1}/follow"), Some(&carol.token), None).await.ok(204);
    comment(&s, &bob, &ws, &t1, "fixed, I think", false).await;
    s.consumers_caught_up(&ws).await;
    assert_eq!(kinds(&notifications(&s, &carol, &ws).await), ["reply"], "carol unfollowed her ticket");
    s.stop().await;
}
}

both_backends! {
async fn reading_counting_and_preferences(b: Backend) {
    let s = TestServer::start(b).await;
    let Desk { admin, alice, bob, carol, ws, .. } = desk(&s).await;
    let t = s.ticket(&carol, &ws, json!({ "title": "Login broken" })).await["id"].as_str().unwrap().to_string();
    assign(&s, &admin, &ws, &t, &bob).await;
    for i in 0..4 {
        comment(&s, &carol, &ws, &t, &format!("still broken ({i})"), false).await;
    }
    s.consumers_caught_up(&ws).await;
    let unread = |u: &User| {
        let s = &s;
        let token = u.token.clone();
        async move { s.get("/api/me/notifications", &token).await.ok(200).clone() }
    };
    let counts = unread(&bob).await;
    assert_eq!(counts["total"], 5);
    assert_eq!(counts["workspaces"][0]["workspace_id"], ws.as_str());
    assert_eq!(counts["workspaces"][0]["name"], "Support");
    assert_eq!(counts["workspaces"][0]["unread"], 5);
    let all = notifications(&s, &bob, &ws).await;
    let ids: Vec<&str> = all.iter().map(|n| n["id"].as_str().unwrap()).collect();
    let read_path = format!("/api/workspaces/{ws}/notifications/read");

    // By id; again changes nothing; someone else's id changes nothing.
    assert_eq!(s.post(&read_path, &bob.token, json!({ "ids": [ids[0]] })).await.ok(200)["read"], json!([ids[0]]));
    assert_eq!(s.post(&read_path, &bob.token, json!({ "ids": [ids[0]] })).await.ok(200)["read"], json!([]));
    assert_eq!(s.post(&read_path, &alice.token, json!({ "ids": [ids[1]] })).await.ok(200)["read"], json!([]));
    assert_eq!(unread(&bob).await["total"], 4);
    let unread_list = s.get(&format!("/api/workspaces/{ws}/notifications?unread=true"), &bob.token).await.ok(200).clone();
    assert_eq!(unread_list["items"].as_array().unwrap().len(), 4);
    // Up to one: it and every older one.
    let read = s.post(&read_path, &bob.token, json!({ "up_to": ids[2] })).await.ok(200)["read"].as_array().unwrap().len();
    assert_eq!(read, 2);
    assert_eq!(unread(&bob).await["total"], 2);
    s.post(&read_path, &bob.token, json!({ "up_to": ids[4] })).await.ok(200);
    assert_eq!(unread(&bob).await["total"], 0);
    assert!(notifications(&s, &bob, &ws).await.iter().all(|n| n["read_at"].is_string()));
    // Each notification that became read is an event for the reader alone, with the row.
    let reads: Vec<Value> = delta(&s, &bob, &ws).await.into_iter().filter(|e| e["kind"] == "notification.updated").collect();
    assert_eq!(reads.len(), 5);
    assert!(reads.iter().all(|e| e["data"]["read_at"].is_string() && e["data"]["recipient_id"] == bob.id.as_str()));
    assert_eq!(delta(&s, &alice, &ws).await.iter().filter(|e| e["kind"] == "notification.updated").count(), 0);

    // Naming nothing marks nothing; naming both marks both (here: nothing more, all are read).
    assert_eq!(s.post(&read_path, &bob.token, json!({})).await.ok(200)["read"], json!([]));
    assert_eq!(s.post(&read_path, &bob.token, json!({ "ids": [ids[0]], "up_to": ids[0] })).await.ok(200)["read"], json!([]));
    // Bad input is refused and changes nothing.
    s.post(&read_path, &bob.token, json!({ "ids": ["not-an-id"] })).await.problem(422);
    s.post(&read_path, &bob.token, json!({ "up_to": uuid::Uuid::now_v7() })).await.problem(404);
    s.post(&read_path, &bob.token, json!({ "ids": vec![ids[0]; 501] })).await.problem(422);
    s.get(&format!("/api/workspaces/{ws}/notifications?unread=maybe"), &bob.token).await.problem(422);
    s.get(&format!("/api/workspaces/{ws}/notifications?cursor=abc"), &bob.token).await.problem(400);
    s.get(&format!("/api/workspaces/{ws}/notifications?limit=0"), &bob.token).await.problem(422);

    // Preferences: every kind listed, on by default.
    let prefs = s.get("/api/me/notification-preferences", &bob.token).await.ok(200)["preferences"].clone();
    assert_eq!(prefs.as_array().unwrap().len(), 4);
    assert!(prefs.as_array().unwrap().iter().all(|p| p["in_app"] == true && p["email"] == true));
    let put = |list: Value| {
        s.call(reqwest::Method::PUT, "/api/me/notification-preferences", Some(&bob.token), Some(json!({ "preferences": list })))
    };
    // A kind given twice: the later entry wins.
    let twice = put(json!([{ "kind": "mention", "in_app": false, "email": true }, { "kind": "mention", "in_app": true, "email": false }])).await;
    let mention = twice.ok(200)["preferences"].as_array().unwrap().iter().find(|p| p["kind"] == "mention").unwrap().clone();
    assert_eq!(mention, json!({ "kind": "mention", "in_app": true, "email": false }));
    put(json!([{ "kind": "gossip", "in_app": false, "email": false }])).await.problem(422);
    put(json!([{ "kind": "mention", "in_app": "no", "email": false }])).await.problem(422);
    let now = put(json!([{ "kind": "mention", "in_app": false, "email": false }])).await.ok(200).clone();
    let mention = now["preferences"].as_array().unwrap().iter().find(|p| p["kind"] == "mention").unwrap().clone();
    assert_eq!(mention, json!({ "kind": "mention", "in_app": false, "email": false }));
    assert_eq!(s.get("/api/me/notification-preferences", &bob.token).await.ok(200).clone(), now);
    // A muted mention falls back to the reply it also is; with replies muted too, nothing.
    comment(&s, &alice, &ws, &t, "@bob have a look", false).await;
    s.consumers_caught_up(&ws).await;
    assert_eq!(kinds(&notifications(&s, &bob, &ws).await).last(), Some(&"reply"));
    put(json!([{ "kind": "reply", "in_app": false, "email": false }])).await.ok(200);
    comment(&s, &alice, &ws, &t, "@bob one more", false).await;
    s.consumers_caught_up(&ws).await;
    assert_eq!(notifications(&s, &bob, &ws).await.len(), 6);
    // Alice's preferences are her own.
    let alices = s.get("/api/me/notification-preferences", &alice.token).await.ok(200)["preferences"].clone();
    assert!(alices.as_array().unwrap().iter().all(|p| p["in_app"] == true));
    s.stop().await;
}
}

both_backends! {
async fn a_notification_reaches_its_recipients_stream_and_no_one_elses(b: Backend) {
    let s = TestServer::start(b).await;
    let Desk { admin, alice, bob, ws, .. } = desk(&s).await;
    let mut alice_stream = open(&s, &alice, &ws, None, "").await;
    let mut bob_stream = open(&s, &bob, &ws, None, "").await;
    let ticket = s.ticket(&admin, &ws, json!({ "title": "Assigned live", "assignee_id": alice.id })).await;
    let within = Duration::from_secs(5);
    let created = alice_stream.event(within).await.expect("ticket.created");
    assert_eq!(created.event.as_deref(), Some("ticket.created"));
    let note = alice_stream.event(within).await.expect("notification.created");
    assert_eq!(note.event.as_deref(), Some("notification.created"));
    let data = note.data.expect("data");
    assert_eq!(data["data"]["kind"], "assigned");
    assert_eq!(data["data"]["ticket_id"], ticket["id"]);
    assert_eq!(data["data"]["recipient_id"], alice.id.as_str());
    let bobs = bob_stream.drain(Duration::from_millis(600)).await;
    assert_eq!(bobs.iter().map(|f| f.event.clone().unwrap()).collect::<Vec<_>>(), ["ticket.created"]);
    s.stop().await;
}
}

/// Appends an event the notifications consumer cannot read (a `comment.created` without a
/// comment), behind the server's back, as a corrupt import or a foreign writer would.
async fn append_unreadable_event(s: &TestServer, ws: &str, ticket: &str) -> i64 {
    match s.backend {
        Backend::Sqlite => {
            let path = s.data_dir().join("tenants").join(ws).join("tenant.db");
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.execute(
                "INSERT INTO sync_actions (at, actor, kind, entity, entity_id, data, ticket_id, staff_only)
                 VALUES (0, NULL, 'comment.created', 'comment', 'x', '{\"garbled\":true}', ?1, 0)",
                [ticket],
            )
            .unwrap();
            conn.last_insert_rowid()
        }
        Backend::Postgres => {
            let pg = s.pg.as_ref().unwrap();
            let (mut su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let (ws, ticket) = (uuid::Uuid::parse_str(ws).unwrap(), uuid::Uuid::parse_str(ticket).unwrap());
            let tx = su.transaction().await.unwrap();
            let head: i64 = tx
                .query_one("UPDATE workspace_heads SET sync_head = sync_head + 1 WHERE workspace_id = $1 RETURNING sync_head", &[&ws])
                .await
                .unwrap()
                .get(0);
            tx.execute(
                "INSERT INTO sync_actions (workspace_id, sync_id, at, kind, entity, entity_id, data, ticket_id)
                 VALUES ($1, $2, 0, 'comment.created', 'comment', 'x', '{\"garbled\":true}', $3)",
                &[&ws, &head, &ticket],
            )
            .await
            .unwrap();
            tx.execute("UPDATE log_heads SET head = $2, changed = pg_current_xact_id() WHERE workspace_id = $1", &[&ws, &head])
                .await
                .unwrap();
            tx.commit().await.unwrap();
            head
        }
    }
}

/// Makes the event readable again (an operator's repair).
async fn repair_event(s: &TestServer, ws: &str, sync_id: i64, comment: &Value) {
    let data = comment.to_string();
    match s.backend {
        Backend::Sqlite => {
            let path = s.data_dir().join("tenants").join(ws).join("tenant.db");
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.execute("UPDATE sync_actions SET data = ?1 WHERE sync_id = ?2", rusqlite::params![data, sync_id]).unwrap();
        }
        Backend::Postgres => {
            let pg = s.pg.as_ref().unwrap();
            let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let ws = uuid::Uuid::parse_str(ws).unwrap();
            su.execute("UPDATE sync_actions SET data = $1::text::jsonb WHERE workspace_id = $2 AND sync_id = $3", &[&data, &ws, &sync_id])
                .await
                .unwrap();
        }
    }
}

async fn metrics(s: &TestServer) -> String {
    s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap()
}

both_backends! {
async fn an_event_that_keeps_failing_stops_its_consumer_in_that_workspace_only(b: Backend) {
    // Retries pause at most 20 ms, so eight attempts take a moment.
    let s = TestServer::start_with(b, crate::common::relaxed_limits(), |c| c.consumer_retry_cap = Duration::from_millis(20)).await;
    let Desk { admin, alice, carol, ws, .. } = desk(&s).await;
    let other = s.workspace(&admin, "Other").await;
    s.add_member(&admin, &other, &alice, "agent").await;
    let ticket = s.ticket(&carol, &ws, json!({ "title": "Broken" })).await["id"].as_str().unwrap().to_string();
    s.consumers_caught_up(&ws).await;

    let bad = append_unreadable_event(&s, &ws, &ticket).await;
    // Committed after the unreadable event: held back while it fails.
    assign(&s, &admin, &ws, &ticket, &alice).await;
    let stopped_line = format!("edgedesk_consumer_stopped{{consumer=\"notifications\",workspace=\"{ws}\",sync_id=\"{bad}\"}} 1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !metrics(&s).await.contains(&stopped_line) {
        assert!(std::time::Instant::now() < deadline, "the consumer did not stop at the unreadable event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics(&s).await;
    let failures: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("edgedesk_consumer_failures_total{consumer=\"notifications\"} "))
        .and_then(|v| v.parse().ok())
        .expect("failures counter");
    assert!(failures >= 8, "{failures} failures counted");

    // Other workspaces go on.
    let there = s.ticket(&admin, &other, json!({ "title": "Elsewhere", "assignee_id": alice.id })).await;
    s.consumers_caught_up(&other).await;
    let elsewhere = notifications(&s, &alice, &other).await;
    assert_eq!(kinds(&elsewhere), ["assigned"]);
    assert_eq!(elsewhere[0]["ticket_id"], there["id"]);
    // Here nothing moved past the event, and the stop survives a wakeup.
    s.ticket(&admin, &ws, json!({ "title": "Poke" })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(notifications(&s, &alice, &ws).await.is_empty());

    // Repaired and resumed, it picks up where it stopped.
    let comment = json!({ "id": uuid::Uuid::now_v7(), "ticket_id": ticket, "author_id": carol.id, "body": "restored",
        "internal": false, "created_at": "2026-01-01T00:00:00.000Z" });
    repair_event(&s, &ws, bad, &comment).await;
    let ws_id: edgedesk::store::WorkspaceId = ws.parse().unwrap();
    assert!(s.app().runner().resume(ws_id, "notifications").await.unwrap());
    // The mail consumer reads replies too, and stopped at the same event.
    assert!(s.app().runner().resume(ws_id, "mail").await.unwrap());
    s.consumers_caught_up(&ws).await;
    assert_eq!(kinds(&notifications(&s, &alice, &ws).await), ["assigned"]);
    assert!(!metrics(&s).await.contains("edgedesk_consumer_stopped{"));
    s.stop().await;
}
}

/// A counter of the runner's, read from `/metrics` (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

both_backends! {
async fn a_restart_catches_up_the_workspaces_left_behind_without_opening_the_others(b: Backend) {
    // Three workspaces, all caught up and quiet (their lanes retired).
    let idle = |c: &mut edgedesk::config::Config| c.consumer_idle = Duration::from_millis(50);
    let s = TestServer::start_with(b, crate::common::relaxed_limits(), idle).await;
    let Desk { admin, alice, ws, .. } = desk(&s).await;
    let quiet: Vec<String> = [s.workspace(&admin, "Quiet 1").await, s.workspace(&admin, "Quiet 2").await].into();
    let ticket = s.ticket(&admin, &ws, json!({ "title": "Left behind" })).await["id"].as_str().unwrap().to_string();
    for w in quiet.iter().chain([&ws]) {
        s.consumers_caught_up(w).await;
    }
    while metric(&metrics(&s).await, "edgedesk_consumer_lanes") > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then one of them moves while no consumer runs.
    let s = s.restart_with(|c| c.run_consumers = false).await;
    assign(&s, &admin, &ws, &ticket, &alice).await;
    let s = s.restart_with(|c| c.run_consumers = true).await;
    // Nobody touches the workspace: the runner finds it on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&s).await;
        if metric(&text, "edgedesk_consumer_events_total{consumer=\"notifications\"}") > 0 {
            if b == Backend::Sqlite {
                // Only the workspace that was behind was opened (its hint said so).
                assert_eq!(metric(&text, "edgedesk_open_tenants"), 1, "{text}");
            }
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the runner never caught up on its own");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.consumers_caught_up(&ws).await;
    assert_eq!(kinds(&notifications(&s, &alice, &ws).await), ["assigned"]);
    for q in &quiet {
        assert!(notifications(&s, &admin, q).await.is_empty());
    }
    s.stop().await;
}
}
