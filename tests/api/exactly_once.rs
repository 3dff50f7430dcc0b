//! Notifications exist exactly once across kill -9: a burst of assignments and replies,
//! the server killed in the middle of it while its notifications consumer is provably part
//! way through a backlog, restarted; then every notification the log calls for exists,
//! once, and nothing else does. The expectation is recomputed here from the log, with a
//! model of the rules written independently of the server's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::both_backends;
use crate::crash::{json_call, process_fixture, spawn_server, spawn_server_with};

const PASSWORD: &str = "correct horse battery";
const TICKETS: usize = 10;
const AGENTS: usize = 4;
const BURST: usize = 500;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Option<(u16, Value)> {
        json_call(&self.http, method, format!("{}{path}", self.base), token, body).await
    }

    async fn login(&self, email: &str) -> String {
        let (_, body) =
            self.call(Method::POST, "/api/auth/login", None, Some(json!({ "email": email, "password": PASSWORD }))).await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    /// Every event `token` may see, in log order.
    async fn log(&self, token: &str, ws: &str) -> Vec<Value> {
        let (mut out, mut after) = (Vec::new(), 0);
        loop {
            let (_, page) = self
                .call(Method::GET, &format!("/api/workspaces/{ws}/sync/delta?after={after}&limit=1000"), Some(token), None)
                .await
                .unwrap();
            out.extend(page["events"].as_array().unwrap().iter().cloned());
            after = page["last_sync_id"].as_i64().unwrap();
            if page["has_more"] == false {
                return out;
            }
        }
    }

    /// `(recipient, kind, seq)` of every notification of the user behind `token`.
    async fn notifications(&self, token: &str, ws: &str) -> Vec<(String, String, i64)> {
        let (mut out, mut cursor) = (Vec::new(), String::new());
        loop {
            let (status, page) =
                self.call(Method::GET, &format!("/api/workspaces/{ws}/notifications?limit=200{cursor}"), Some(token), None).await.unwrap();
            assert_eq!(status, 200, "{page}");
            for n in page["items"].as_array().unwrap() {
                out.push((n["recipient_id"].as_str().unwrap().into(), n["kind"].as_str().unwrap().into(), n["seq"].as_i64().unwrap()));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return out,
            }
        }
    }
}

/// The notifications the log calls for: assignment to whoever did not assign themselves;
/// a public reply to the ticket's followers (requester, and the assignee while assigned)
/// who followed before it, the author excepted.
fn expected(log: &[Value]) -> BTreeSet<(String, String, i64)> {
    let mut out = BTreeSet::new();
    // ticket → (assignee, followers: user → (automatic reason, since))
    type Followers = BTreeMap<String, (&'static str, i64)>;
    let mut tickets: BTreeMap<String, (Option<String>, Followers)> = BTreeMap::new();
    for e in log {
        let (kind, data, seq) = (e["kind"].as_str().unwrap(), &e["data"], e["sync_id"].as_i64().unwrap());
        let actor = e["actor"].as_str().map(str::to_string);
        match kind {
            "ticket.created" | "ticket.updated" => {
                let id = data["id"].as_str().unwrap().to_string();
                let entry = tickets.entry(id).or_default();
                if kind == "ticket.created" {
                    entry.1.entry(data["requester_id"].as_str().unwrap().into()).or_insert(("requester", seq));
                }
                let assignee = data["assignee_id"].as_str().map(str::to_string);
                if assignee != entry.0 {
                    if let Some(previous) = entry.0.take()
                        && entry.1.get(&previous).is_some_and(|(why, _)| *why == "assignee")
                    {
                        entry.1.remove(&previous);
                    }
                    if let Some(new) = &assignee {
                        entry.1.entry(new.clone()).or_insert(("assignee", seq));
                        if actor.as_ref() != Some(new) {
                            out.insert((new.clone(), "assigned".into(), seq));
                        }
                    }
                    entry.0 = assignee;
                }
            }
            "comment.created" => {
                let (_, followers) = &tickets[data["ticket_id"].as_str().unwrap()];
                let author = data["author_id"].as_str().unwrap();
                for (user, (_, since)) in followers {
                    if user != author && *since < seq {
                        out.insert((user.clone(), "reply".into(), seq));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The burst's writes: assignments by the admin and by agents (to themselves), replies by
/// the customer and the agents, from eight clients at once.
#[derive(Clone)]
struct Burst {
    ws: String,
    admin: String,
    people: Arc<Vec<(String, String)>>,
    tickets: Arc<Vec<String>>,
    done: Arc<AtomicUsize>,
}

impl Burst {
    /// Runs writes `range` of the burst; stops early when the server goes away.
    async fn run(&self, c: &Client, range: std::ops::Range<usize>) {
        let mut workers = Vec::new();
        for w in 0..8 {
            let (me, c, range) = (self.clone(), Client { http: c.http.clone(), base: c.base.clone() }, range.clone());
            workers.push(tokio::spawn(async move {
                let ws = &me.ws;
                for i in range.skip(w).step_by(8) {
                    let ticket = &me.tickets[(i * 7) % TICKETS];
                    let agent = &me.people[i % AGENTS];
                    let (ticket_path, comments) =
                        (format!("/api/workspaces/{ws}/tickets/{ticket}"), format!("/api/workspaces/{ws}/tickets/{ticket}/comments"));
                    let (method, path, token, body) = match i % 4 {
                        0 => (Method::PATCH, &ticket_path, &me.admin, json!({ "assignee_id": agent.0 })),
                        1 => (Method::PATCH, &ticket_path, &agent.1, json!({ "assignee_id": agent.0 })),
                        2 => (Method::POST, &comments, &me.people[AGENTS].1, json!({ "body": format!("still broken {i}") })),
                        _ => (Method::POST, &comments, &agent.1, json!({ "body": format!("on it {i}") })),
                    };
                    if c.call(method, path, Some(token), Some(body)).await.is_none() {
                        return; // the server is gone
                    }
                    me.done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
    }

    /// Fresh tokens (a restart keeps sessions, but a test should not rely on it) for the
    /// customer and every agent.
    async fn tokens(&self, c: &Client) -> Vec<String> {
        let mut tokens = vec![c.login("customer@example.com").await];
        for i in 0..AGENTS {
            tokens.push(c.login(&format!("agent{i}@example.com")).await);
        }
        tokens
    }
}

both_backends! {
async fn every_notification_exists_exactly_once_after_kill_9_mid_burst(b: Backend) {
    let (pg, dir, http) = process_fixture(b).await;
    let data = dir.path().join("data");
    // First half of the burst on an instance that runs no consumers: a backlog builds up.
    let (mut child, base) = spawn_server_with(&data, pg.as_ref(), &[("EDGEDESK_RUN_CONSUMERS", "false")]).await;
    let c = Client { http: http.clone(), base };
    c.call(Method::POST, "/api/setup", None, Some(json!({ "email": "admin@example.com", "password": PASSWORD, "name": "Admin" })))
        .await
        .unwrap();
    let admin = c.login("admin@example.com").await;
    let (_, ws) = c.call(Method::POST, "/api/workspaces", Some(&admin), Some(json!({ "name": "Burst" }))).await.unwrap();
    let ws = ws["id"].as_str().unwrap().to_string();
    let mut people = Vec::new();
    for (name, role) in (0..AGENTS).map(|i| (format!("agent{i}"), "agent")).chain([("customer".to_string(), "requester")]) {
        let email = format!("{name}@example.com");
        let (_, user) = c
            .call(Method::POST, "/api/users", Some(&admin), Some(json!({ "email": email, "password": PASSWORD, "name": name })))
            .await
            .unwrap();
        let id = user["id"].as_str().unwrap().to_string();
        c.call(Method::POST, &format!("/api/workspaces/{ws}/members"), Some(&admin), Some(json!({ "user_id": id, "role": role }))).await.unwrap();
        people.push((id, c.login(&email).await));
    }
    let customer = people[AGENTS].1.clone();
    let mut tickets = Vec::new();
    for i in 0..TICKETS {
        let (_, t) =
            c.call(Method::POST, &format!("/api/workspaces/{ws}/tickets"), Some(&customer), Some(json!({ "title": format!("t{i}") }))).await.unwrap();
        tickets.push(t["id"].as_str().unwrap().to_string());
    }
    let burst = Burst { ws: ws.clone(), admin: admin.clone(), people: Arc::new(people), tickets: Arc::new(tickets), done: Arc::default() };
    burst.run(&c, 0..BURST / 2).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();

    // Consumers on: the backlog is being worked through while the second half is written,
    // and the server is killed once some, not all, of its notifications exist.
    let (mut child, base) = spawn_server(&data, pg.as_ref()).await;
    let c = Client { http: http.clone(), base };
    let tokens = burst.tokens(&c).await;
    let writer = {
        let (burst, c) = (burst.clone(), Client { http: http.clone(), base: c.base.clone() });
        tokio::spawn(async move { burst.run(&c, BURST / 2..BURST).await })
    };
    let before_kill = loop {
        let mut n = 0;
        for token in &tokens {
            n += c.notifications(token, &ws).await.len();
        }
        // Killed once the consumers have done some work and the second half is under way
        // (on a fast machine the backlog alone may be drained before the writer's first
        // request lands; killing then would stop nothing part way).
        if n > 0 && burst.done.load(Ordering::Relaxed) >= BURST / 2 + 20 {
            child.start_kill().expect("SIGKILL");
            break n;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    child.wait().await.unwrap();
    writer.await.unwrap();

    let (_child, base) = spawn_server(&data, pg.as_ref()).await;
    let c = Client { http, base };
    let admin = c.login("admin@example.com").await;
    let tokens = burst.tokens(&c).await;
    let log = c.log(&admin, &ws).await;
    let want = expected(&log);
    assert!(want.len() > 100, "the burst ran ({} notifications called for by {} events)", want.len(), log.len());
    assert!(before_kill < want.len(), "killed part way: {before_kill} of {} notifications existed", want.len());
    // Caught up when every expected notification is there; then hold a moment: anything late
    // would be a duplicate or a stray.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let mut got = Vec::new();
        for token in &tokens {
            got.extend(c.notifications(token, &ws).await);
        }
        if got.len() >= want.len() || std::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut again = Vec::new();
            for token in &tokens {
                again.extend(c.notifications(token, &ws).await);
            }
            break again;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "no notification exists twice");
    let missing: Vec<_> = want.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&want).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, unexpected {extra:?}");
}
}
