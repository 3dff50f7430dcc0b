//! A workspace moves SQLite → Postgres → SQLite with its content, log and members intact:
//! the same bootstrap rows and checksum at every stop, for staff and for a requester.

use edgedesk::config::Config;
use edgedesk::store::WorkspaceId;
use edgedesk::tenants::transfer::{export_workspace, import_workspace};
use serde_json::{Value, json};

use crate::common::{Backend, PASSWORD, PgDatabase, TestServer};

type Snapshot = (Value, Vec<Value>, Value);

async fn snapshots(s: &TestServer, ws: &str, emails: &[&str]) -> Vec<Snapshot> {
    let mut out = Vec::new();
    for email in emails {
        let token = s.login(email, PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
        out.push(s.bootstrap(&token, ws).await);
    }
    out
}

async fn store_for(dir: &std::path::Path, pg: Option<&PgDatabase>) -> edgedesk::store::Store {
    let mut config = Config::for_data_dir(dir.join("data"));
    if let Some(pg) = pg {
        config.database_url = Some(edgedesk::config::Secret::new(pg.app_url.clone()));
        config.admin_database_url = Some(edgedesk::config::Secret::new(pg.admin_url.clone()));
    }
    edgedesk::app::open_store(&config).await.expect("store opens")
}

#[tokio::test]
async fn a_workspace_moves_from_sqlite_to_postgres_and_back_unchanged() {
    if !Backend::postgres_available() {
        return;
    }
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Moving").await;
    let agent = s.user(&admin, "agent").await;
    let customer = s.user(&admin, "customer").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &customer, "requester").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let requester = if i % 2 == 0 { &customer.id } else { &agent.id };
        let t = s
            .ticket(&agent, &ws, json!({ "title": format!("ticket {i}"), "tags": ["moved", format!("n{i}")], "requester_id": requester }))
            .await;
        ids.push(t["id"].as_str().unwrap().to_string());
    }
    let base = format!("/api/workspaces/{ws}/tickets");
    for (i, id) in ids.iter().enumerate() {
        s.post(&format!("{base}/{id}/comments"), &agent.token, json!({ "body": format!("reply {i}"), "internal": i % 3 == 0 }))
            .await
            .ok(201);
    }
    s.post(&format!("{base}/{}/links", ids[0]), &agent.token, json!({ "target_id": ids[1], "kind": "duplicates" })).await.ok(201);
    s.patch(&format!("{base}/{}", ids[2]), &agent.token, json!({ "status": "resolved", "assignee_id": agent.id })).await.ok(200);
    s.delete(&format!("{base}/{}", ids[3]), &agent.token).await.ok(204);
    // A collaborative note with a snapshot and updates after it.
    let note_ticket: edgedesk::store::TicketId = ids[0].parse().unwrap();
    let writer = crate::yclient::YClient::connect(&crate::notes::note_url(&s, &ws, &ids[0]), Some(&agent.token)).await.unwrap();
    for i in 0..40 {
        writer.insert(writer.len(), &format!("{i} "));
    }
    let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
    let loaded = |t: std::sync::Arc<dyn edgedesk::store::TenantStore>| async move { t.notes().load(note_ticket).await.unwrap() };
    while loaded(tenant.clone()).await.updates.len() < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(edgedesk::notes::compact(&tenant, note_ticket).await.unwrap());
    for i in 0..10 {
        writer.insert(0, &format!("{i}"));
    }
    let note_text = writer.text();
    let note_path = format!("/api/workspaces/{ws}/tickets/{}/note", ids[0]);
    loop {
        let (_, rows, _) = s.bootstrap(&admin.token, &ws).await;
        if rows.iter().any(|r| r["type"] == "note" && r["text"] == note_text.as_str()) && loaded(tenant.clone()).await.updates.len() == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(writer);
    let stored = loaded(tenant.clone()).await;
    assert!(stored.snapshot.is_some());
    s.consumers_caught_up(&ws).await;
    let emails = [admin.email.as_str(), customer.email.as_str()];
    let before = snapshots(&s, &ws, &emails).await;
    let head = s.head(&admin, &ws).await;
    let id: WorkspaceId = ws.parse().unwrap();

    // SQLite → file (a second store on the live data directory, as the CLI does).
    let mut file = Vec::new();
    let sqlite = store_for(s.dir.path(), None).await;
    export_workspace(&sqlite, id, &mut file).await.expect("export from SQLite");

    // → Postgres.
    let pg = PgDatabase::create().await;
    let pg_dir = tempfile::tempdir().unwrap();
    let postgres = store_for(pg_dir.path(), Some(&pg)).await;
    let imported = import_workspace(&postgres, &mut &file[..]).await.expect("import into Postgres");
    assert_eq!(imported.admin_rights_dropped, vec![admin.email.clone()], "the exporting side's admin is not one here");
    assert_eq!(imported.users_created, 3);
    let err = import_workspace(&postgres, &mut &file[..]).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let on_pg = TestServer::start_on(pg_dir, Some(pg.clone())).await;
    assert_eq!(snapshots(&on_pg, &ws, &emails).await, before, "same rows and checksums on Postgres");
    // The note's snapshot and updates, byte for byte, under the same sync_ids.
    let pg_note = loaded(on_pg.app().store().tenants.open(id).await.unwrap()).await;
    assert_eq!((&pg_note.snapshot, pg_note.snapshot_seq), (&stored.snapshot, stored.snapshot_seq));
    assert_eq!(pg_note.updates, stored.updates);
    assert_eq!(on_pg.get(&note_path, &admin_on(&on_pg).await.token).await.ok(200)["text"], note_text.as_str());
    assert_eq!(on_pg.head(&admin_on(&on_pg).await, &ws).await, head);
    // The notifications moved with it, read state included, and none were made again.
    let moved = customer_notifications(&s, &ws).await;
    assert!(!moved.as_array().unwrap().is_empty(), "the customer was told about public replies");
    on_pg.consumers_caught_up(&ws).await;
    assert_eq!(customer_notifications(&on_pg, &ws).await, moved);
    assert_eq!(on_pg.head(&admin_on(&on_pg).await, &ws).await, head, "the consumers had nothing left to do");
    // The log continues gap-free after the move.
    let agent_pg = on_pg.login(&agent.email, PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
    let next = on_pg.post(&base, &agent_pg, json!({ "title": "after the move" })).await;
    assert_eq!(next.ok(201)["number"], 13);

    // Postgres → file → a fresh SQLite installation.
    on_pg.consumers_caught_up(&ws).await;
    let mut back = Vec::new();
    export_workspace(&postgres, id, &mut back).await.expect("export from Postgres");
    let sqlite_dir = tempfile::tempdir().unwrap();
    let fresh = store_for(sqlite_dir.path(), None).await;
    import_workspace(&fresh, &mut &back[..]).await.expect("import into SQLite");
    drop(fresh);
    let on_sqlite = TestServer::start_on(sqlite_dir, None).await;
    let after = snapshots(&on_sqlite, &ws, &emails).await;
    let back_note = loaded(on_sqlite.app().store().tenants.open(id).await.unwrap()).await;
    assert_eq!((&back_note.snapshot, back_note.snapshot_seq, &back_note.updates), (&stored.snapshot, stored.snapshot_seq, &stored.updates));
    let reader =
        crate::yclient::YClient::connect(&crate::notes::note_url(&on_sqlite, &ws, &ids[0]), Some(&admin_on(&on_sqlite).await.token))
            .await
            .unwrap();
    reader.wait_text(&note_text, std::time::Duration::from_secs(10)).await;
    // Everything from before is there, plus the one ticket made on Postgres.
    let (h_before, rows_before, _) = &before[1];
    let (h_after, rows_after, _) = &after[1];
    assert!(h_after["sync_id"].as_i64() > h_before["sync_id"].as_i64());
    assert!(rows_before.iter().all(|r| rows_after.contains(r)));
    assert_eq!(snapshots(&on_pg, &ws, &emails).await, after, "Postgres and its SQLite copy agree row for row");
    let members = on_sqlite.get(&format!("/api/workspaces/{ws}/members"), &admin_on(&on_sqlite).await.token).await;
    assert_eq!(members.ok(200).as_array().unwrap().len(), 3);
}

async fn customer_notifications(s: &TestServer, ws: &str) -> Value {
    let token = s.login("customer@example.com", PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
    s.get(&format!("/api/workspaces/{ws}/notifications?limit=200"), &token).await.ok(200)["items"].clone()
}

async fn admin_on(s: &TestServer) -> crate::common::User {
    let token = s.login("admin@example.com", PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
    let id = s.get("/api/me", &token).await.body["id"].as_str().unwrap().to_string();
    crate::common::User { id, email: "admin@example.com".into(), token }
}

#[tokio::test]
async fn a_crafted_export_cannot_make_platform_administrators() {
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Crafted").await;
    let mallory = s.user(&admin, "mallory").await;
    s.add_member(&admin, &ws, &mallory, "owner").await;
    let mut file = Vec::new();
    let here = store_for(s.dir.path(), None).await;
    export_workspace(&here, ws.parse().unwrap(), &mut file).await.expect("export");
    // Mallory edits the file: every user in it is a platform administrator now.
    let crafted: String = String::from_utf8(file)
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["type"] == "user" {
                v["user"]["is_admin"] = json!(true);
            }
            format!("{v}\n")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let there = store_for(dir.path(), None).await;
    let imported = import_workspace(&there, &mut crafted.as_bytes()).await.expect("import");
    assert!(imported.admin_rights_dropped.contains(&mallory.email), "{:?}", imported.admin_rights_dropped);
    drop(there);
    let other = TestServer::start_on(dir, None).await;
    let token = other.login(&mallory.email, PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
    assert_eq!(other.get("/api/me", &token).await.ok(200)["is_admin"], false);
    other.get("/api/users", &token).await.problem(403);
}
