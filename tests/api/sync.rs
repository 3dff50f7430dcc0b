//! Bootstrap + delta reproduce the final state exactly, while writers work concurrently.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use serde_json::{Value, json};

use crate::common::{TestServer, User, both_backends};

/// A client's replica: rows keyed by (type, id).
#[derive(Debug, Default, PartialEq)]
struct Replica(BTreeMap<(String, String), Value>);

fn key_of(kind: &str, row: &Value) -> String {
    let field = if kind == "member" { "user_id" } else { "id" };
    row[field].as_str().unwrap_or_else(|| panic!("{kind} row without {field}: {row}")).to_string()
}

impl Replica {
    fn from_rows(rows: &[Value]) -> Self {
        let mut r = Self::default();
        for row in rows {
            let kind = row["type"].as_str().unwrap().to_string();
            let mut data = row.clone();
            data.as_object_mut().unwrap().remove("type");
            r.0.insert((kind.clone(), key_of(&kind, &data)), data);
        }
        r
    }

    /// Applies one delta event, as a client would.
    fn apply(&mut self, event: &Value) {
        let entity = event["entity"].as_str().unwrap().to_string();
        let data = event["data"].clone();
        match event["kind"].as_str().unwrap() {
            "ticket.deleted" => {
                let id = data["id"].as_str().unwrap().to_string();
                self.0.remove(&("ticket".into(), id.clone()));
                self.0.retain(|(kind, _), row| match kind.as_str() {
                    "comment" => row["ticket_id"] != id.as_str(),
                    "link" => row["source_id"] != id.as_str() && row["target_id"] != id.as_str(),
                    _ => true,
                });
            }
            "link.deleted" => {
                self.0.remove(&("link".into(), data["id"].as_str().unwrap().to_string()));
            }
            _ => {
                let key = key_of(&entity, &data);
                self.0.insert((entity, key), data);
            }
        }
    }
}

async fn catch_up(s: &TestServer, user: &User, ws: &str, mut after: i64, replica: &mut Replica) -> i64 {
    loop {
        let page = s.get(&format!("/api/workspaces/{ws}/sync/delta?after={after}&limit=37"), &user.token).await;
        let body = page.ok(200);
        let mut last = after;
        for event in body["events"].as_array().unwrap() {
            let id = event["sync_id"].as_i64().unwrap();
            assert!(id > last, "events arrive in strictly increasing order");
            last = id;
            replica.apply(event);
        }
        after = body["last_sync_id"].as_i64().unwrap();
        assert!(after >= last);
        if body["has_more"] == false {
            return after;
        }
    }
}

/// One writer's share of the load: creates, updates, comments, notes, links, deletes.
async fn writer(s: Arc<TestServer>, agent: User, customer: User, ws: String, n: usize, seed: usize) {
    let base = format!("/api/workspaces/{ws}/tickets");
    let mut mine: Vec<String> = Vec::new();
    for i in 0..n {
        let step = (i + seed) % 7;
        if mine.len() < 2 || step == 0 {
            let (who, body) = if i % 3 == 0 {
                (&customer, json!({ "title": format!("w{seed} customer {i}") }))
            } else {
                (&agent, json!({ "title": format!("w{seed} ticket {i}"), "tags": [format!("w{seed}")], "requester_id": customer.id }))
            };
            let t = s.post(&base, &who.token, body).await;
            mine.push(t.ok(201)["id"].as_str().unwrap().to_string());
            continue;
        }
        let t = &mine[i % mine.len()].clone();
        let res = match step {
            1 => {
                s.patch(
                    &format!("{base}/{t}"),
                    &agent.token,
                    json!({ "status": (["pending", "resolved", "open"][i % 3]), "priority": "high" }),
                )
                .await
            }
            2 => s.post(&format!("{base}/{t}/comments"), &agent.token, json!({ "body": format!("reply {i}") })).await,
            3 => s.post(&format!("{base}/{t}/comments"), &agent.token, json!({ "body": format!("note {i}"), "internal": true })).await,
            4 => s.post(&format!("{base}/{t}/comments"), &customer.token, json!({ "body": format!("customer says {i}") })).await,
            5 => {
                let target = &mine[(i / 2) % mine.len()];
                s.post(&format!("{base}/{t}/links"), &agent.token, json!({ "target_id": target, "kind": "relates_to" })).await
            }
            _ => {
                let res = s.delete(&format!("{base}/{t}"), &agent.token).await;
                mine.retain(|x| x != t);
                res
            }
        };
        // Links may collide (409) or point at themselves (422); deleted tickets 404. All fine.
        assert!([200, 201, 204, 404, 409, 422].contains(&res.status), "{res:?}");
    }
}

both_backends! {
async fn a_midway_bootstrap_plus_delta_equals_the_final_state(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Busy").await;
    let agent = s.user(&admin, "agent").await;
    let customer = s.user(&admin, "customer").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &customer, "requester").await;
    let s = Arc::new(s);

    let writers: Vec<_> =
        (0..4).map(|seed| tokio::spawn(writer(s.clone(), agent.clone(), customer.clone(), ws.clone(), 60, seed))).collect();
    // Let the writers get going, then snapshot as staff and as the requester while they run.
    while s.head(&admin, &ws).await < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (staff_header, staff_rows, _) = s.bootstrap(&agent.token, &ws).await;
    let (cust_header, cust_rows, _) = s.bootstrap(&customer.token, &ws).await;
    for w in writers {
        w.await.unwrap();
    }
    // The notifications consumer appends to the log too: let it finish.
    s.consumers_caught_up(&ws).await;
    let head = s.head(&admin, &ws).await;
    assert!(staff_header["sync_id"].as_i64().unwrap() < head, "the snapshot was taken mid-run");

    for (user, header, rows) in [(&agent, staff_header, staff_rows), (&customer, cust_header, cust_rows)] {
        let mut replica = Replica::from_rows(&rows);
        let reached = catch_up(&s, user, &ws, header["sync_id"].as_i64().unwrap(), &mut replica).await;
        assert_eq!(reached, head);
        let (final_header, final_rows, _) = s.bootstrap(&user.token, &ws).await;
        assert_eq!(final_header["sync_id"].as_i64(), Some(head));
        let expected = Replica::from_rows(&final_rows);
        assert_eq!(replica.0.len(), expected.0.len(), "{}", user.email);
        for (key, row) in &expected.0 {
            assert_eq!(replica.0.get(key), Some(row), "{} row {key:?}", user.email);
        }
    }
    // The whole log from zero has no gaps (read from the store: notifications are for their
    // recipients alone, so no one user's delta holds every event).
    let events = {
        let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
        let (mut all, mut after) = (Vec::new(), 0);
        loop {
            let page = tenant.feed(after, 1000).await.unwrap();
            all.extend(page.items.iter().map(|e| e.event.sync_id));
            after = all.last().copied().unwrap_or(after);
            if !page.has_more {
                break all;
            }
        }
    };
    assert_eq!(events, (1..=head).collect::<Vec<_>>());
}
}

both_backends! {
async fn two_bootstraps_of_the_same_state_have_the_same_checksum(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Quiet").await;
    for i in 0..30 {
        s.ticket(&admin, &ws, json!({ "title": format!("t{i}"), "tags": ["x"] })).await;
    }
    let (h1, rows1, f1) = s.bootstrap(&admin.token, &ws).await;
    let (h2, rows2, f2) = s.bootstrap(&admin.token, &ws).await;
    assert_eq!((h1, rows1, &f1), (h2, rows2, &f2));
    assert!(f1["checksum"].as_str().unwrap().starts_with("xxh3-128:"));
    // The audit trail lists the same events newest first, filterable.
    let audit = s.get(&format!("/api/workspaces/{ws}/audit?entity=ticket&limit=10"), &admin.token).await;
    let items = audit.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 10);
    assert!(items.windows(2).all(|w| w[0]["sync_id"].as_i64() > w[1]["sync_id"].as_i64()));
    assert!(items.iter().all(|e| e["kind"] == "ticket.created" && e["actor"] == admin.id.as_str()));
    let next = audit.body["next_cursor"].as_str().unwrap();
    let page2 = s.get(&format!("/api/workspaces/{ws}/audit?entity=ticket&limit=50&cursor={next}"), &admin.token).await;
    assert_eq!(page2.ok(200)["items"].as_array().unwrap().len(), 20);
    let by_kind = s.get(&format!("/api/workspaces/{ws}/audit?kind=member.added"), &admin.token).await;
    assert_eq!(by_kind.ok(200)["items"].as_array().unwrap().len(), 1);
    let future = s.get(&format!("/api/workspaces/{ws}/audit?since=2999-01-01T00:00:00Z"), &admin.token).await;
    assert_eq!(future.ok(200)["items"], json!([]));
    let by_actor = s.get(&format!("/api/workspaces/{ws}/audit?actor={}&limit=500", admin.id), &admin.token).await;
    assert_eq!(by_actor.ok(200)["items"].as_array().unwrap().len(), 32);
}
}

/// `n` tickets with long titles in `ws`: enough that a snapshot cannot fit in the channel
/// and the socket buffers. SQLite through the store; Postgres straight in, as its superuser.
async fn seed_big(s: &TestServer, ws: &str, requester: &str, n: usize) {
    match &s.pg {
        Some(pg) => {
            let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            su.batch_execute(&format!(
                "INSERT INTO tickets (workspace_id, id, number, title, status, priority, requester_id, created_at, updated_at)
                 SELECT '{ws}', gen_random_uuid(), 1000 + i, lpad(i::text, 5, '0') || ' ' || repeat('x', 400), 'open', 'normal', '{requester}', 0, 0
                 FROM generate_series(1, {n}) AS i;
                 UPDATE workspace_heads SET ticket_number = 1000 + {n} WHERE workspace_id = '{ws}';"
            ))
            .await
            .unwrap();
        }
        None => {
            let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
            let actor: edgedesk::store::UserId = requester.parse().unwrap();
            futures::stream::iter(0..n)
                .map(|i| {
                    let tenant = tenant.clone();
                    async move {
                        let title = format!("{i:05} {}", "x".repeat(400));
                        tenant.create_ticket(actor, crate::store::new_ticket(&title, actor)).await.unwrap()
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await;
        }
    }
}

both_backends! {
async fn slow_bootstraps_are_capped_per_workspace_and_closed_at_their_deadline(b: Backend) {
    let s = TestServer::start_with(b, crate::common::relaxed_limits(), |c| {
        c.bootstrap_max_per_workspace = 2;
        c.bootstrap_max_open = Duration::from_secs(2);
    })
    .await;
    let admin = s.admin().await;
    let big = s.workspace(&admin, "Big").await;
    let small = s.workspace(&admin, "Small").await;
    let t = s.ticket(&admin, &small, json!({ "title": "elsewhere" })).await;
    seed_big(&s, &big, &admin.id, 20_000).await;
    let start = |ws: String| {
        let s = &s;
        let token = admin.token.clone();
        async move { s.http.get(format!("{}/api/workspaces/{ws}/sync/bootstrap", s.base)).bearer_auth(token).send().await.unwrap() }
    };
    // Two readers that never read hold the workspace's places…
    let first = start(big.clone()).await;
    let second = start(big.clone()).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = start(big.clone()).await;
    assert_eq!(third.status(), 429, "the workspace's places are taken");
    assert!(third.headers().contains_key("retry-after"));
    // …while another workspace's snapshots go on (the per-instance cap, 503, is the gate's
    // unit test: a small snapshot ends before a second request could find it open).
    let other = start(small.clone()).await;
    assert_eq!(other.status(), 200);
    drop(other);
    // Everything else goes on meanwhile.
    s.get("/api/me", &admin.token).await.ok(200);
    s.get(&format!("/api/workspaces/{small}/tickets/{}", t["id"].as_str().unwrap()), &admin.token).await.ok(200);
    // The stalled snapshots are closed at their deadline and their places come free.
    let mut freed = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = start(big.clone()).await;
        if again.status() == 200 {
            freed = true;
            break;
        }
    }
    assert!(freed, "a place came free within the deadline");
    drop((first, second));
}
}
