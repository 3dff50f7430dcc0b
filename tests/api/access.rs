//! Long-lived streams follow changes of access (role, membership, user state, credential),
//! on both backends and across instances; stream tokens open only what they were minted for.

use std::time::Duration;

use serde_json::json;

use crate::common::{Backend, TestServer, User, both_backends, relaxed_limits};
use crate::live::{desk, open};

/// A change made through the same instance: it ends the streams it touches at once.
const HERE: Duration = Duration::from_secs(1);
/// A change made elsewhere: within the recheck period (set to 300 ms below), with margin.
const ELSEWHERE: Duration = Duration::from_secs(3);

async fn fast_recheck(b: Backend) -> TestServer {
    TestServer::start_with(b, relaxed_limits(), |c| c.stream_recheck = Duration::from_millis(300)).await
}

async fn events_status(s: &TestServer, token: &str, ws: &str) -> u16 {
    s.http.get(format!("{}/api/workspaces/{ws}/events", s.base)).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// A second session (its own token) for `user`.
async fn second_login(s: &TestServer, user: &User) -> String {
    s.login(&user.email, crate::common::PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string()
}

both_backends! {
async fn a_demotion_ends_the_stream_right_after_its_own_event_and_nothing_later_reaches_it(b: Backend) {
    let s = TestServer::start(b).await;
    let (admin, agent, _, ws) = desk(&s).await;
    let t = s.ticket(&agent, &ws, json!({ "title": "secret stuff" })).await;
    let id = t["id"].as_str().unwrap();
    let mut sse = open(&s, &agent, &ws, None, "").await;
    let before = s.head(&admin, &ws).await;
    s.add_member(&admin, &ws, &agent, "requester").await;
    // Written straight after the demotion: later in the log than it.
    s.post(&format!("/api/workspaces/{ws}/tickets/{id}/comments"), &admin.token, json!({ "body": "staff only", "internal": true }))
        .await
        .ok(201);
    // Whichever comes first, the demotion's own event in the log or this instance's watch,
    // the stream ends before anything later than the demotion.
    let seen = sse.until_access_changed(HERE).await.expect("the stream ends with access-changed");
    assert!(seen.iter().all(|f| f.event.as_deref() == Some("member.updated")), "nothing after the demotion: {seen:?}");
    // Reconnecting is authorised afresh: as a requester now, who sees no internal note.
    let mut again = open(&s, &agent, &ws, Some(before), "").await;
    let after = again.drain(Duration::from_millis(400)).await;
    assert!(after.iter().all(|f| f.event.as_deref() != Some("comment.created")), "{after:?}");
    s.stop().await;
}
}

both_backends! {
async fn disabling_logging_out_and_revoking_end_open_streams(b: Backend) {
    let s = TestServer::start(b).await;
    let (admin, _, _, ws) = desk(&s).await;
    let join = |name: &'static str| {
        let (s, admin, ws) = (&s, &admin, ws.clone());
        async move {
            let user = s.user(admin, name).await;
            s.add_member(admin, &ws, &user, "agent").await;
            user
        }
    };

    // Removed from the workspace.
    let user = join("removed").await;
    let mut sse = open(&s, &user, &ws, None, "").await;
    s.delete(&format!("/api/workspaces/{ws}/members/{}", user.id), &admin.token).await.ok(204);
    assert!(sse.until_access_changed(HERE).await.is_some(), "removal ends the stream");
    assert_eq!(events_status(&s, &user.token, &ws).await, 404);

    // Disabled by a platform admin.
    let user = join("disabled").await;
    let mut sse = open(&s, &user, &ws, None, "").await;
    s.patch(&format!("/api/users/{}", user.id), &admin.token, json!({ "disabled": true })).await.ok(200);
    assert!(sse.until_access_changed(HERE).await.is_some(), "disabling ends the stream");
    assert_eq!(events_status(&s, &user.token, &ws).await, 401);

    // Logged out: the stream of that session ends, another session's stays.
    let user = join("logout").await;
    let other = User { token: second_login(&s, &user).await, ..user.clone() };
    let mut sse = open(&s, &user, &ws, None, "").await;
    let mut stays = open(&s, &other, &ws, None, "").await;
    s.post("/api/auth/logout", &user.token, json!({})).await;
    assert!(sse.until_access_changed(HERE).await.is_some(), "logging out ends the session's stream");
    assert!(!stays.ends(Duration::from_millis(500)).await, "another session's stream stays");

    // One session revoked from another.
    let sessions = s.get("/api/auth/sessions", &other.token).await.ok(200).clone();
    let current = sessions.as_array().unwrap().iter().find(|v| v["current"] == true).unwrap()["id"].as_str().unwrap().to_string();
    let third = User { token: second_login(&s, &user).await, ..user.clone() };
    s.delete(&format!("/api/auth/sessions/{current}"), &third.token).await;
    assert!(stays.until_access_changed(HERE).await.is_some(), "a revoked session's stream ends");

    // An API token revoked.
    let created = s.post("/api/auth/tokens", &third.token, json!({ "name": "bot" })).await.ok(201).clone();
    let bot = User { token: created["token"].as_str().unwrap().to_string(), ..user.clone() };
    let mut sse = open(&s, &bot, &ws, None, "").await;
    s.delete(&format!("/api/auth/tokens/{}", created["id"].as_str().unwrap()), &third.token).await;
    assert!(sse.until_access_changed(HERE).await.is_some(), "a revoked API token's stream ends");
    assert_eq!(events_status(&s, &bot.token, &ws).await, 401);
    s.stop().await;
}
}

both_backends! {
async fn a_change_made_behind_the_instances_back_ends_streams_within_the_recheck_period(b: Backend) {
    // Straight through the store, as another process (the CLI) would: nothing here is told.
    let s = fast_recheck(b).await;
    let (_, agent, _, ws) = desk(&s).await;
    let mut sse = open(&s, &agent, &ws, None, "").await;
    let patch = edgedesk::store::UserPatch { disabled: Some(true), ..Default::default() };
    s.app().store().platform.update_user(agent.id.parse().unwrap(), patch).await.unwrap();
    assert!(sse.until_access_changed(ELSEWHERE).await.is_some(), "the periodic check ends the stream");
    s.stop().await;
}
}

#[tokio::test]
async fn changes_made_through_another_instance_end_streams_here() {
    let Some((one, two)) = TestServer::two_postgres_instances().await else { return };
    let (admin, agent, customer, ws) = desk(&one).await;
    // A demotion through two: the event in the log cuts the stream on one (before the
    // recheck period, which the event's frame proves).
    let mut sse = open(&one, &agent, &ws, None, "").await;
    two.add_member(&admin, &ws, &agent, "requester").await;
    let seen = sse.until_access_changed(ELSEWHERE).await.expect("demoted through instance two");
    assert_eq!(seen.last().and_then(|f| f.event.clone()).as_deref(), Some("member.updated"), "cut by its own event");
    // Disabled through two: no event in the workspace, the recheck finds it.
    let mut sse = open(&one, &customer, &ws, None, "").await;
    two.patch(&format!("/api/users/{}", customer.id), &admin.token, json!({ "disabled": true })).await.ok(200);
    assert!(sse.until_access_changed(Duration::from_secs(5)).await.is_some(), "disabled through instance two");
    // Removed through two: cut by its own event, like the demotion.
    let staff = one.user(&admin, "staff").await;
    one.add_member(&admin, &ws, &staff, "agent").await;
    let mut sse = open(&one, &staff, &ws, None, "").await;
    two.delete(&format!("/api/workspaces/{ws}/members/{}", staff.id), &admin.token).await.ok(204);
    assert!(sse.until_access_changed(ELSEWHERE).await.is_some(), "removed through instance two");
    // An API token revoked through two: the recheck finds it.
    let bot = one.user(&admin, "bot").await;
    one.add_member(&admin, &ws, &bot, "agent").await;
    let created = one.post("/api/auth/tokens", &bot.token, json!({ "name": "bot" })).await.ok(201).clone();
    let by_token = User { token: created["token"].as_str().unwrap().to_string(), ..bot.clone() };
    let mut sse = open(&one, &by_token, &ws, None, "").await;
    two.delete(&format!("/api/auth/tokens/{}", created["id"].as_str().unwrap()), &bot.token).await;
    assert!(sse.until_access_changed(Duration::from_secs(5)).await.is_some(), "a token revoked through instance two");
}

both_backends! {
async fn stream_tokens_open_only_their_workspace_and_ticket_and_die_with_their_session(b: Backend) {
    let s = TestServer::start(b).await;
    let (admin, agent, _, ws) = desk(&s).await;
    let one = s.ticket(&agent, &ws, json!({ "title": "one" })).await["id"].as_str().unwrap().to_string();
    let two = s.ticket(&agent, &ws, json!({ "title": "two" })).await["id"].as_str().unwrap().to_string();
    let mint = |body: serde_json::Value, token: String| {
        let s = &s;
        async move { s.post("/api/auth/stream-token", &token, body).await }
    };
    let open_with = |query: String| {
        let s = &s;
        async move { s.http.get(format!("{}{query}", s.base)).send().await.unwrap().status().as_u16() }
    };
    let session = second_login(&s, &agent).await;
    let token = mint(json!({ "workspace_id": ws, "ticket_id": one }), session.clone()).await.ok(200)["token"].as_str().unwrap().to_string();
    assert_eq!(open_with(format!("/api/workspaces/{ws}/events?ticket={one}&access_token={token}")).await, 200);
    assert_eq!(open_with(format!("/api/workspaces/{ws}/events?ticket={two}&access_token={token}")).await, 401, "another ticket");
    assert_eq!(open_with(format!("/api/workspaces/{ws}/events?access_token={token}")).await, 401, "the whole workspace");
    // Not a member: no token.
    let other = s.workspace(&admin, "Elsewhere").await;
    mint(json!({ "workspace_id": other }), session.clone()).await.problem(404);
    mint(json!({}), session.clone()).await.problem(422);
    // It dies with the session that minted it.
    let whole = mint(json!({ "workspace_id": ws }), session.clone()).await.ok(200)["token"].as_str().unwrap().to_string();
    assert_eq!(open_with(format!("/api/workspaces/{ws}/events?access_token={whole}")).await, 200);
    s.post("/api/auth/logout", &session, json!({})).await;
    assert_eq!(open_with(format!("/api/workspaces/{ws}/events?access_token={whole}")).await, 401, "its session is gone");
    s.stop().await;
}
}
