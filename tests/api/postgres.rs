//! Postgres mode only: row-level security binds the app role, the server refuses roles it
//! would not bind, and several instances on one database act as one.

use std::collections::HashSet;
use std::sync::Arc;

use edgedesk::app::App;
use edgedesk::auth::throttle::ThrottleLimits;
use edgedesk::config::{Config, Secret};
use serde_json::json;

use crate::common::{Backend, PgDatabase, TestServer};

const TENANT_TABLES: &[&str] = &[
    "workspace_heads",
    "workspace_info",
    "members",
    "tickets",
    "comments",
    "ticket_links",
    "sync_actions",
    "notification_tickets",
    "ticket_followers",
    "notifications",
];

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Two workspaces with a row in every tenant table.
async fn two_filled_workspaces(s: &TestServer) -> (String, String) {
    let admin = s.admin().await;
    let mut ids = Vec::new();
    for name in ["A", "B"] {
        let ws = s.workspace(&admin, name).await;
        let t1 = s.ticket(&admin, &ws, json!({ "title": format!("{name} one") })).await["id"].as_str().unwrap().to_string();
        let t2 = s.ticket(&admin, &ws, json!({ "title": format!("{name} two") })).await["id"].as_str().unwrap().to_string();
        s.post(&format!("/api/workspaces/{ws}/tickets/{t1}/comments"), &admin.token, json!({ "body": "hi" })).await.ok(201);
        // A notification for the admin: a reply on the ticket they requested, by someone else.
        let agent = s.user(&admin, &format!("agent-{name}")).await;
        s.add_member(&admin, &ws, &agent, "agent").await;
        s.post(&format!("/api/workspaces/{ws}/tickets/{t1}/comments"), &agent.token, json!({ "body": "hello" })).await.ok(201);
        s.consumers_caught_up(&ws).await;
        s.post(&format!("/api/workspaces/{ws}/tickets/{t1}/links"), &admin.token, json!({ "target_id": t2, "kind": "blocks" }))
            .await
            .ok(201);
        ids.push(ws);
    }
    (ids[0].clone(), ids[1].clone())
}

#[tokio::test]
async fn row_level_security_binds_the_app_role() {
    if !Backend::postgres_available() {
        return;
    }
    let s = TestServer::start(Backend::Postgres).await;
    let (a, b) = two_filled_workspaces(&s).await;
    let pg = s.pg.clone().unwrap();
    let app = connect(&pg.app_url).await;

    // No workspace set: every tenant table is empty to the app role.
    for table in TENANT_TABLES {
        let n: i64 = app.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} without app.workspace_id");
    }
    // FORCE binds even the tables' owner; only the superuser sees past it: the rows are there.
    let owner = connect(&pg.admin_url).await;
    let n: i64 = owner.query_one("SELECT count(*) FROM tickets", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "FORCE ROW LEVEL SECURITY binds the owner too");
    let superuser = connect(&pg.superuser_url).await;
    let all: i64 = superuser.query_one("SELECT count(*) FROM tickets", &[]).await.unwrap().get(0);
    assert_eq!(all, 4);

    let (a_id, b_id) = (uuid::Uuid::parse_str(&a).unwrap(), uuid::Uuid::parse_str(&b).unwrap());
    let mut app = app;
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.workspace_id', $1, true)", &[&a]).await.unwrap();
    for table in TENANT_TABLES {
        let other: i64 = tx.query_one(&format!("SELECT count(*) FROM {table} WHERE workspace_id <> $1"), &[&a_id]).await.unwrap().get(0);
        let mine: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(other, 0, "{table}: only A's rows are visible with A set");
        assert!(mine > 0, "{table}: A's rows are visible");
    }
    // The consumers' platform-level tables hold ids and positions only: every workspace's
    // rows are readable, but a transaction scoped to A cannot write B's.
    for table in ["log_heads", "consumer_watermarks"] {
        let all: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert!(all >= 2, "{table}: readable across workspaces");
        let moved = tx.execute(&format!("UPDATE {table} SET workspace_id = workspace_id WHERE workspace_id = $1"), &[&b_id]).await.unwrap();
        assert_eq!(moved, 0, "{table}: B's rows are not writable with A set");
    }
    // Updating B's rows touches nothing; moving a row into B is refused.
    let updated = tx.execute("UPDATE tickets SET title = 'pwned' WHERE workspace_id = $1", &[&b_id]).await.unwrap();
    assert_eq!(updated, 0);
    let moved = tx.execute("UPDATE tickets SET workspace_id = $1 WHERE workspace_id = $2", &[&b_id, &a_id]).await;
    assert!(moved.unwrap_err().to_string().contains("db error"));
    tx.rollback().await.unwrap();
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.workspace_id', $1, true)", &[&a]).await.unwrap();
    let inserted = tx
        .execute(
            "INSERT INTO tickets (workspace_id, id, number, title, status, priority, requester_id, created_at, updated_at)
             VALUES ($1, gen_random_uuid(), 99, 'planted', 'open', 'normal', gen_random_uuid(), 0, 0)",
            &[&b_id],
        )
        .await;
    let err = inserted.unwrap_err();
    assert!(err.as_db_error().unwrap().message().contains("row-level security"), "{err:?}");
    tx.rollback().await.unwrap();
    // SET LOCAL ends with the transaction: the pooled connection carries nothing onward.
    let n: i64 = app.query_one("SELECT count(*) FROM tickets", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    // The app role cannot rewrite history or hard-delete tickets.
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.workspace_id', $1, true)", &[&a]).await.unwrap();
    assert!(tx.execute("DELETE FROM sync_actions", &[]).await.is_err());
    tx.rollback().await.unwrap();
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.workspace_id', $1, true)", &[&a]).await.unwrap();
    assert!(tx.execute("DELETE FROM tickets", &[]).await.is_err());
    tx.rollback().await.unwrap();
    s.stop().await;
}

async fn try_start(database_url: &str, admin: Option<&str>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.bcrypt_cost = 4;
    config.database_url = Some(Secret::new(database_url));
    config.admin_database_url = admin.map(Secret::new);
    App::build_with(config, ThrottleLimits::default()).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_server_refuses_roles_that_row_level_security_would_not_bind() {
    if !Backend::postgres_available() {
        return;
    }
    let pg = PgDatabase::create().await;
    let err = try_start(&pg.app_url, None).await.unwrap_err();
    assert!(err.contains("not migrated") && err.contains("edgedesk migrate"), "{err}");
    try_start(&pg.app_url, Some(&pg.admin_url)).await.expect("the app role, migrated by the owner, starts");

    let err = try_start(&pg.admin_url, None).await.unwrap_err();
    assert!(err.contains("owns the tenant tables"), "{err}");
    let superuser = pg.superuser_url.clone();
    let err = try_start(&superuser, None).await.unwrap_err();
    assert!(err.contains("superuser"), "{err}");
    let err = try_start(&pg.admin_url, Some(&pg.admin_url)).await.unwrap_err();
    assert!(err.contains("separate role"), "{err}");

    // The development override starts anyway (and says so loudly on stderr).
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.database_url = Some(Secret::new(&superuser));
    config.dev_allow_privileged_role = true;
    App::build_with(config, ThrottleLimits::default()).await.map(|_| ()).expect("override starts");
}

#[tokio::test]
async fn two_instances_act_as_one_under_concurrent_writers() {
    let Some((one, two)) = TestServer::two_postgres_instances().await else { return };
    let admin = one.admin().await;
    let ws = one.workspace(&admin, "Shared").await;
    let agent = one.user(&admin, "agent").await;
    one.add_member(&admin, &ws, &agent, "agent").await;
    // Written through one, read and delta-synced through two (which has never seen them).
    let t = one.ticket(&agent, &ws, json!({ "title": "through one" })).await;
    let via_two = two.get(&format!("/api/workspaces/{ws}/tickets/{}", t["id"].as_str().unwrap()), &agent.token).await;
    assert_eq!(via_two.ok(200)["title"], "through one");

    let servers = Arc::new([one, two]);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (servers, token, ws) = (servers.clone(), agent.token.clone(), ws.clone());
        writers.push(tokio::spawn(async move {
            let s = &servers[w % 2];
            let mut ids = Vec::new();
            for i in 0..25 {
                let t = s.post(&format!("/api/workspaces/{ws}/tickets"), &token, json!({ "title": format!("w{w} #{i}") })).await;
                let id = t.ok(201)["id"].as_str().unwrap().to_string();
                s.patch(&format!("/api/workspaces/{ws}/tickets/{id}"), &token, json!({ "status": "pending" })).await.ok(200);
                ids.push(id);
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    assert_eq!(written.len(), 200);
    // The whole log through each instance: strictly increasing, no gaps, nothing missing.
    for s in servers.iter() {
        let mut ids = Vec::new();
        let mut created = HashSet::new();
        let mut after = 0;
        loop {
            let page = s.get(&format!("/api/workspaces/{ws}/sync/delta?after={after}&limit=97"), &agent.token).await;
            for e in page.ok(200)["events"].as_array().unwrap() {
                ids.push(e["sync_id"].as_i64().unwrap());
                if e["kind"] == "ticket.created" {
                    created.insert(e["entity_id"].as_str().unwrap().to_string());
                }
            }
            after = page.body["last_sync_id"].as_i64().unwrap();
            if page.body["has_more"] == false {
                break;
            }
        }
        assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "strictly increasing and gap-free");
        assert!(written.is_subset(&created), "every acknowledged ticket is in the log");
        assert_eq!(ids.len(), 1 + 2 + 1 + 400, "workspace, two members, the first ticket, 200 creates and 200 updates");
    }
}

#[tokio::test]
async fn a_column_whose_type_drifted_answers_500_instead_of_panicking() {
    if !Backend::postgres_available() {
        return;
    }
    let s = TestServer::start(Backend::Postgres).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Drift").await;
    let su = connect(&s.pg.as_ref().unwrap().superuser_url).await;
    // What a hand-made migration gone wrong might leave: the log head as numeric, not bigint.
    su.batch_execute("ALTER TABLE workspace_heads ALTER COLUMN sync_head TYPE numeric").await.expect("alter");
    let res = s
        .http
        .get(format!("{}/api/workspaces/{ws}/events", s.base))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    // At the store boundary it is an error, not a panic (the router would turn a panic into
    // a 500 too, so this is where the difference shows).
    let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
    let err = tenant.head().await.expect_err("a type mismatch is an error");
    assert!(matches!(err, edgedesk::store::StoreError::Internal(_)), "{err:?}");
    // The server is still there.
    s.get("/api/me", &admin.token).await.ok(200);
}

#[tokio::test]
async fn reads_name_their_workspace_even_when_row_level_security_is_bypassed() {
    if !Backend::postgres_available() {
        return;
    }
    let s = TestServer::start(Backend::Postgres).await;
    let (a, b) = two_filled_workspaces(&s).await;
    let token = s.login("admin@example.com", crate::common::PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
    let admin = crate::common::User { id: String::new(), email: "admin@example.com".into(), token };
    // As the cluster's superuser, which row-level security does not bind (the development
    // override): only the queries' own workspace predicates keep workspaces apart now.
    let su = s.pg.as_ref().unwrap().superuser_url.clone();
    let s = s
        .restart_with(move |c| {
            c.database_url = Some(Secret::new(su));
            c.dev_allow_privileged_role = true;
        })
        .await;
    let tickets = s.get(&format!("/api/workspaces/{a}/tickets"), &admin.token).await;
    let titles: Vec<&str> = tickets.ok(200)["items"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap()).collect();
    assert!(titles.iter().all(|t| t.starts_with("A ")), "{titles:?}");
    let delta = s.get(&format!("/api/workspaces/{a}/sync/delta?after=0"), &admin.token).await;
    let b_events = delta.ok(200)["events"].as_array().unwrap().iter().filter(|e| e.to_string().contains(&b)).count();
    assert_eq!(b_events, 0, "no event of workspace B in A's delta");
    let audit = s.get(&format!("/api/workspaces/{a}/audit"), &admin.token).await;
    assert!(!audit.ok(200).to_string().contains("B one"), "no B in A's audit");
    let (_, rows, _) = s.bootstrap(&admin.token, &a).await;
    assert!(rows.iter().all(|r| !r.to_string().contains("B one") && !r.to_string().contains(&b)), "no B in A's snapshot");
    let first = s.get(&format!("/api/workspaces/{a}/tickets"), &admin.token).await.ok(200)["items"][0]["id"].as_str().unwrap().to_string();
    let comments = s.get(&format!("/api/workspaces/{a}/tickets/{first}/comments"), &admin.token).await;
    assert!(comments.ok(200)["items"].as_array().unwrap().len() <= 2);
    let notes = s.get(&format!("/api/workspaces/{a}/notifications"), &admin.token).await;
    assert!(!notes.ok(200).to_string().contains("B one"), "no B in A's notifications");
}
