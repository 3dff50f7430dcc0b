//! Workspaces and members.

use serde_json::json;

use crate::common::{Backend, TestServer, both_backends};

both_backends! {
async fn creating_a_workspace_makes_its_tenant_database(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    if b == Backend::Sqlite {
        let db = s.data_dir().join("tenants").join(&ws).join("tenant.db");
        assert!(db.is_file(), "{} should exist", db.display());
    }
    let mine = s.get("/api/workspaces", &admin.token).await;
    assert_eq!(mine.ok(200)[0]["id"], ws.as_str());
    assert_eq!(mine.body[0]["role"], "owner");
    let one = s.get(&format!("/api/workspaces/{ws}"), &admin.token).await;
    assert_eq!(one.ok(200)["name"], "Support");
    s.stop().await;
}
}

both_backends! {
async fn only_platform_admins_create_workspaces_and_names_are_validated(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let agent = s.user(&admin, "agent").await;
    s.post("/api/workspaces", &agent.token, json!({ "name": "Mine" })).await.problem(403);
    s.post("/api/workspaces", &admin.token, json!({ "name": "   " })).await.problem(422);
    s.post("/api/workspaces", &admin.token, json!({ "name": "x".repeat(201) })).await.problem(422);
    assert_eq!(s.get("/api/workspaces", &admin.token).await.ok(200).as_array().unwrap().len(), 0);
    s.stop().await;
}
}

both_backends! {
async fn members_are_added_by_email_or_id_and_roles_are_guarded(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let agent = s.user(&admin, "agent").await;
    let lead = s.user(&admin, "lead").await;
    let customer = s.user(&admin, "customer").await;
    let members = format!("/api/workspaces/{ws}/members");

    let added = s.post(&members, &admin.token, json!({ "email": "Agent@Example.com", "role": "agent" })).await;
    assert_eq!(added.ok(201)["user_id"], agent.id.as_str());
    s.post(&members, &admin.token, json!({ "user_id": customer.id, "role": "requester" })).await.ok(201);
    s.post(&members, &admin.token, json!({ "user_id": lead.id, "role": "admin" })).await.ok(201);
    // Changing a role answers 200.
    assert_eq!(s.post(&members, &admin.token, json!({ "user_id": agent.id, "role": "agent" })).await.ok(200)["role"], "agent");

    // Agents and requesters cannot manage members; requesters cannot even list them.
    s.post(&members, &agent.token, json!({ "user_id": customer.id, "role": "agent" })).await.problem(403);
    s.get(&members, &customer.token).await.problem(403);
    assert_eq!(s.get(&members, &agent.token).await.ok(200).as_array().unwrap().len(), 4);
    // Admins cannot grant ownership or demote the owner; the last owner cannot be demoted.
    s.post(&members, &lead.token, json!({ "user_id": agent.id, "role": "owner" })).await.problem(403);
    s.post(&members, &lead.token, json!({ "user_id": admin.id, "role": "agent" })).await.problem(403);
    s.post(&members, &admin.token, json!({ "user_id": admin.id, "role": "admin" })).await.problem(409);
    // Bad references are 422 naming the field.
    let unknown = s.post(&members, &admin.token, json!({ "email": "nobody@example.com", "role": "agent" })).await;
    assert_eq!(unknown.problem(422).body["errors"][0]["field"], "email");
    s.post(&members, &admin.token, json!({ "role": "agent" })).await.problem(422);
    s.post(&members, &admin.token, json!({ "user_id": agent.id, "role": "boss" })).await.problem(422);

    // The workspace shows up in each member's list with their role.
    let theirs = s.get("/api/workspaces", &customer.token).await;
    assert_eq!(theirs.ok(200)[0]["role"], "requester");
    s.stop().await;
}
}
