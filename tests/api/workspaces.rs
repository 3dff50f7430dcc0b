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
    // Changing a role answers 200, and really changes it: the agent is an admin at once
    // (the role cache follows) and the log says so.
    s.post(&members, &agent.token, json!({ "user_id": customer.id, "role": "agent" })).await.problem(403);
    assert_eq!(s.post(&members, &admin.token, json!({ "user_id": agent.id, "role": "admin" })).await.ok(200)["role"], "admin");
    s.post(&members, &agent.token, json!({ "user_id": customer.id, "role": "requester" })).await.ok(200);
    let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0"), &admin.token).await;
    let updated: Vec<_> = delta.ok(200)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "member.updated" && e["entity_id"] == agent.id.as_str())
        .map(|e| e["data"]["role"].clone())
        .collect();
    assert_eq!(updated, vec![json!("admin")], "one member.updated, with the new role");
    // Setting the role it already has changes nothing and records nothing.
    assert_eq!(s.post(&members, &admin.token, json!({ "user_id": agent.id, "role": "admin" })).await.ok(200)["role"], "admin");
    s.post(&members, &admin.token, json!({ "user_id": agent.id, "role": "agent" })).await.ok(200);

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
    assert!(unknown.problem(409).body["detail"].as_str().unwrap().starts_with("email"));
    s.post(&members, &admin.token, json!({ "role": "agent" })).await.problem(422);
    s.post(&members, &admin.token, json!({ "user_id": agent.id, "role": "boss" })).await.problem(422);

    // The workspace shows up in each member's list with their role.
    let theirs = s.get("/api/workspaces", &customer.token).await;
    assert_eq!(theirs.ok(200)[0]["role"], "requester");
    s.stop().await;
}
}

both_backends! {
async fn members_are_removed_and_the_last_owner_stays_however_demotions_race(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Owners").await;
    let other = s.user(&admin, "co-owner").await;
    let agent = s.user(&admin, "agent").await;
    let members = format!("/api/workspaces/{ws}/members");
    s.add_member(&admin, &ws, &agent, "agent").await;

    // Removal: 204, gone from the list and the workspace, recorded in the log.
    s.delete(&format!("{members}/{}", agent.id), &admin.token).await.ok(204);
    assert_eq!(s.get(&members, &admin.token).await.ok(200).as_array().unwrap().len(), 1);
    s.get(&format!("/api/workspaces/{ws}"), &agent.token).await.problem(404);
    let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0"), &admin.token).await;
    let kinds: Vec<String> = delta.ok(200)["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds.last().map(String::as_str), Some("member.removed"), "{kinds:?}");
    s.delete(&format!("{members}/{}", agent.id), &admin.token).await.problem(404);
    s.delete(&format!("{members}/{}", admin.id), &admin.token).await.problem(409);

    // Two owners demoting each other at the same moment: never both.
    for round in 0..10 {
        s.post(&members, &admin.token, json!({ "user_id": other.id, "role": "owner" })).await;
        s.post(&members, &other.token, json!({ "user_id": admin.id, "role": "owner" })).await;
        let (a, b) = tokio::join!(
            s.post(&members, &admin.token, json!({ "user_id": other.id, "role": "agent" })),
            s.post(&members, &other.token, json!({ "user_id": admin.id, "role": "agent" })),
        );
        let ok = [a.status, b.status].iter().filter(|st| **st == 200).count();
        assert!(ok <= 1, "round {round}: both demotions went through ({} and {})", a.status, b.status);
        let owners = s.get(&members, &admin.token).await;
        let owners = owners.ok(200).as_array().unwrap().iter().filter(|m| m["role"] == "owner").count();
        assert_eq!(owners, 1, "round {round}: the workspace keeps exactly one owner");
        // Whoever is still owner promotes the other back for the next round.
        let (owner, demoted) = if a.status == 200 { (&admin, &other) } else { (&other, &admin) };
        s.post(&members, &owner.token, json!({ "user_id": demoted.id, "role": "owner" })).await.ok(200);
    }
    s.stop().await;
}
}

both_backends! {
async fn a_membership_whose_mirror_was_never_written_is_mirrored_at_the_next_start(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Crash").await;
    let agent = s.user(&admin, "agent").await;
    // The platform commits the membership, then the process dies before the workspace's
    // copy is written: exactly what `set_member` without its mirror leaves.
    let (wid, uid) = (ws.parse().unwrap(), agent.id.parse().unwrap());
    s.app().store().platform.set_member(wid, uid, Some(edgedesk::store::Role::Agent), None).await.unwrap();
    async fn kinds(s: &TestServer, ws: &str, token: &str) -> Vec<(String, serde_json::Value)> {
        let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0"), token).await;
        delta.ok(200)["events"].as_array().unwrap().iter().map(|e| (e["kind"].as_str().unwrap().to_string(), e["entity_id"].clone())).collect()
    }
    let added = |events: &[(String, serde_json::Value)]| events.iter().filter(|(k, id)| k == "member.added" && *id == agent.id.as_str()).count();
    assert_eq!(added(&kinds(&s, &ws, &admin.token).await), 0, "no member.added yet: the mirror is pending");
    let s = s.restart().await;
    assert_eq!(added(&kinds(&s, &ws, &admin.token).await), 1, "written at start, once");
    let s = s.restart().await;
    assert_eq!(added(&kinds(&s, &ws, &admin.token).await), 1, "and not again");
    let (_, rows, _) = s.bootstrap(&admin.token, &ws).await;
    assert!(rows.iter().any(|r| r["type"] == "member" && r["user_id"] == agent.id.as_str()), "the snapshot has the member");
    s.stop().await;
}
}
