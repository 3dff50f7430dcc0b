//! Search on both backends: every kind of text is findable (a collaborative note edited
//! through the stock Yjs client included), with typos and prefixes, highlights that name
//! their field, requesters confined to their own tickets' public text with full pages, a
//! deleted ticket gone, malformed queries refused; a write is found by the next search; a
//! deleted index directory is rebuilt while the server runs; two Postgres instances.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Backend, TestServer, User, both_backends, relaxed_limits};
use crate::notes::{note_token, ws_base};

pub(crate) fn search_path(ws: &str, q: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap();
    url.query_pairs_mut().append_pair("q", q);
    format!("/api/workspaces/{ws}/search?{}", url.query().unwrap())
}

/// The tickets (ids) a search finds, and the page.
pub(crate) async fn find(s: &TestServer, user: &User, ws: &str, q: &str) -> (Vec<String>, Value) {
    let page = s.get(&search_path(ws, q), &user.token).await.ok(200).clone();
    let ids = page["items"].as_array().unwrap().iter().map(|h| h["ticket"]["id"].as_str().unwrap().to_string()).collect();
    (ids, page)
}

/// The highlight of `field` in the first hit.
fn highlight<'a>(page: &'a Value, field: &str) -> Option<&'a Value> {
    page["items"][0]["highlights"].as_array()?.iter().find(|h| h["field"] == field)
}

fn yjs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/yjs")
}

/// Writes `text` into the ticket's note with the stock npm provider (`false` when it is not
/// installed outside CI, said loudly).
async fn stock_yjs_write(s: &TestServer, user: &User, ws: &str, ticket: &str, text: &str) -> bool {
    if !yjs_dir().join("node_modules/y-websocket").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the stock Yjs client: tests/clients/yjs/node_modules is missing");
        eprintln!("SKIPPED: the note half of the search test: the stock Yjs client is not installed (run scripts/test)");
        return false;
    }
    let (write, read) = (note_token(s, user, ws, ticket).await, note_token(s, user, ws, ticket).await);
    let run = tokio::process::Command::new("node")
        .current_dir(yjs_dir())
        .arg("write.mjs")
        .arg(format!("{}/api/workspaces/{ws}/tickets", ws_base(s)))
        .arg(format!("{ticket}/note"))
        .args([&write, &read, text])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("node finishes").expect("node runs");
    assert!(output.status.success(), "node failed: {}", String::from_utf8_lossy(&output.stderr));
    true
}

/// Searches until `q` finds `ticket` (every answer a 200), within a generous bound.
async fn until_found(s: &TestServer, user: &User, ws: &str, q: &str, ticket: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ids, page) = find(s, user, ws, q).await;
        if ids.iter().any(|id| id == ticket) {
            return page;
        }
        assert!(Instant::now() < deadline, "{q:?} never found {ticket}: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status once the index has caught up with the log: other consumers (mail, notifications)
/// append events of their own just after a write, so a single read may see a lag of one.
async fn caught_up_status(s: &TestServer, user: &User, ws: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = s.get(&format!("/api/workspaces/{ws}/search/status"), &user.token).await.ok(200).clone();
        if status["lag"] == 0 {
            return status;
        }
        assert!(Instant::now() < deadline, "the index never caught up: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Desk {
    s: TestServer,
    admin: User,
    agent: User,
    customer: User,
    other: User,
    ws: String,
}

async fn desk(b: Backend) -> Desk {
    let s = TestServer::start_with(b, relaxed_limits(), |c| c.notes.text_delay = Duration::from_millis(20)).await;
    let admin = s.admin().await;
    let agent = s.user(&admin, "agent").await;
    let customer = s.user(&admin, "customer").await;
    let other = s.user(&admin, "other").await;
    let ws = s.workspace(&admin, "Support").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &customer, "requester").await;
    s.add_member(&admin, &ws, &other, "requester").await;
    Desk { s, admin, agent, customer, other, ws }
}

both_backends! {
    async fn every_kind_of_text_is_found_as_its_reader_may_see_it(b: Backend) {
        let Desk { s, admin, agent, customer, other, ws } = desk(b).await;
        let t = s.ticket(&agent, &ws, json!({ "title": "Printer on fire", "requester_id": customer.id, "tags": ["hardware"] })).await;
        let id = t["id"].as_str().unwrap().to_string();
        let comments = format!("/api/workspaces/{ws}/tickets/{id}/comments");
        s.post(&comments, &agent.token, json!({ "body": "We replaced the toner cartridge this morning." })).await.ok(201);
        s.post(&comments, &agent.token, json!({ "body": "Suspect the fuser unit is overheating.", "internal": true })).await.ok(201);
        let upload = crate::attachments::upload(&s, &customer.token, &format!("/api/workspaces/{ws}/tickets/{id}/attachments?name=invoice-march.pdf"), "application/pdf", b"%PDF-1.4 tiny".to_vec()).await;
        assert_eq!(upload.status(), 201);
        // Another requester's ticket with the same words.
        let theirs = s.ticket(&agent, &ws, json!({ "title": "Printer jammed", "requester_id": other.id })).await["id"].as_str().unwrap().to_string();

        // A typo in a finished word, a prefix of an unfinished one; the title is highlighted.
        let (ids, page) = find(&s, &agent, &ws, "printr on fire").await;
        assert_eq!(ids, [id.as_str()], "{page}");
        let title = highlight(&page, "title").expect("a title highlight");
        assert_eq!(title["text"], "Printer on fire");
        assert_eq!(title["html"], "<mark>Printer</mark> <mark>on</mark> <mark>fire</mark>");
        let (ids, page) = find(&s, &agent, &ws, "cartri").await;
        assert_eq!(ids, [id.as_str()]);
        let reply = highlight(&page, "reply").expect("a reply highlight");
        assert!(reply["html"].as_str().unwrap().contains("<mark>cartridge</mark>"), "{reply}");
        assert!(reply["comment_id"].is_string());
        // The internal note, the file's name, the ticket's number and tag.
        let (ids, page) = find(&s, &agent, &ws, "fuser").await;
        assert_eq!(ids, [id.as_str()]);
        assert!(highlight(&page, "internal").is_some(), "{page}");
        let (ids, page) = find(&s, &agent, &ws, "invoice").await;
        assert_eq!(ids, [id.as_str()]);
        assert!(highlight(&page, "attachment").expect("a file highlight")["attachment_id"].is_string());
        let (ids, _) = find(&s, &agent, &ws, &format!("{} ", t["number"])).await;
        assert_eq!(ids, [id.as_str()], "the ticket's number");
        let (ids, _) = find(&s, &agent, &ws, "hardware").await;
        assert_eq!(ids, [id.as_str()], "a tag");
        let (ids, _) = find(&s, &agent, &ws, "\"toner cartridge\"").await;
        assert_eq!(ids, [id.as_str()], "a phrase");
        let (ids, _) = find(&s, &agent, &ws, "\"cartridge toner\"").await;
        assert!(ids.is_empty(), "a phrase is in order");
        let (ids, _) = find(&s, &agent, &ws, "printer").await;
        assert_eq!(ids.len(), 2, "staff find every requester's tickets");

        // The collaborative note, edited through the stock Yjs client.
        if stock_yjs_write(&s, &agent, &ws, &id, "Escalation plan: call Contoso facilities").await {
            let page = until_found(&s, &agent, &ws, "contoso", &id).await;
            assert!(highlight(&page, "note").expect("a note highlight")["html"].as_str().unwrap().contains("<mark>Contoso</mark>"));
            let (ids, _) = find(&s, &customer, &ws, "contoso").await;
            assert!(ids.is_empty(), "the note is staff-only");
        }

        // A requester: only their own tickets, only public text, never a staff-only snippet.
        let (ids, page) = find(&s, &customer, &ws, "printer").await;
        assert_eq!(ids, [id.as_str()], "{page}");
        let (ids, _) = find(&s, &customer, &ws, "fuser").await;
        assert!(ids.is_empty(), "internal notes are not searched for requesters");
        let (ids, page) = find(&s, &customer, &ws, "printer toner").await;
        assert_eq!(ids, [id.as_str()]);
        assert!(!page.to_string().contains("fuser"), "{page}");
        let (ids, _) = find(&s, &other, &ws, "printer").await;
        assert_eq!(ids, [theirs.as_str()]);

        // Filters of the ticket list apply.
        let filtered = s.get(&format!("{}&requester={}", search_path(&ws, "printer"), other.id), &agent.token).await;
        let found: Vec<&str> = filtered.ok(200)["items"].as_array().unwrap().iter().map(|h| h["ticket"]["id"].as_str().unwrap()).collect();
        assert_eq!(found, [theirs.as_str()]);
        let none = s.get(&format!("{}&status=closed", search_path(&ws, "printer")), &agent.token).await;
        assert!(none.ok(200)["items"].as_array().unwrap().is_empty());

        // A deleted ticket vanishes.
        s.delete(&format!("/api/workspaces/{ws}/tickets/{id}"), &admin.token).await.ok(204);
        let (ids, _) = find(&s, &agent, &ws, "printer").await;
        assert_eq!(ids, [theirs.as_str()]);

        // Malformed queries say what is wrong.
        for (q, says) in [("\"printer", "quote"), ("?!", "empty"), (&"word ".repeat(40)[..], "32 words")] {
            let res = s.get(&search_path(&ws, q), &agent.token).await;
            let body = res.problem(422).body.to_string();
            assert!(body.contains(says), "{q:?}: {body}");
        }
        s.get(&format!("/api/workspaces/{ws}/search"), &agent.token).await.problem(400);
        s.get(&format!("{}&cursor=nonsense", search_path(&ws, "printer")), &agent.token).await.problem(422);
        s.stop().await;
    }
}

both_backends! {
    async fn a_requester_gets_full_pages_of_their_own_among_many_staff_only_hits(b: Backend) {
        let Desk { s, agent, customer, other, ws, .. } = desk(b).await;
        for i in 0..30 {
            s.ticket(&agent, &ws, json!({ "title": format!("Widget broken {i}"), "requester_id": other.id })).await;
        }
        let mut mine = Vec::new();
        for i in 0..5 {
            let t = s.ticket(&agent, &ws, json!({ "title": format!("Order {i}"), "requester_id": customer.id })).await;
            let id = t["id"].as_str().unwrap().to_string();
            let comments = format!("/api/workspaces/{ws}/tickets/{id}/comments");
            if i < 3 {
                s.post(&comments, &agent.token, json!({ "body": "Your widget ships today" })).await.ok(201);
                mine.push(id);
            } else {
                s.post(&comments, &agent.token, json!({ "body": "widget fraud check", "internal": true })).await.ok(201);
            }
        }
        let first = s.get(&format!("{}&limit=2", search_path(&ws, "widget")), &customer.token).await.ok(200).clone();
        assert_eq!(first["items"].as_array().unwrap().len(), 2, "a full page: {first}");
        let cursor = first["next_cursor"].as_str().expect("more follow");
        let second = s.get(&format!("{}&limit=2&cursor={cursor}", search_path(&ws, "widget")), &customer.token).await.ok(200).clone();
        assert_eq!(second["items"].as_array().unwrap().len(), 1);
        assert!(second["next_cursor"].is_null());
        let mut found: Vec<String> =
            [first, second].iter().flat_map(|p| p["items"].as_array().unwrap().iter().map(|h| h["ticket"]["id"].as_str().unwrap().to_string())).collect();
        found.sort();
        mine.sort();
        assert_eq!(found, mine, "their own tickets with public matches, nothing else");
        let (ids, _) = find(&s, &agent, &ws, "widget").await;
        assert_eq!(ids.len(), 20, "staff get a full default page of the 35");
        s.stop().await;
    }
}

both_backends! {
    async fn a_write_is_found_by_the_next_search_and_a_deleted_index_is_rebuilt(b: Backend) {
        let Desk { s, agent, customer, ws, .. } = desk(b).await;
        let t = s.ticket(&customer, &ws, json!({ "title": "Cannot log in" })).await;
        let id = t["id"].as_str().unwrap().to_string();
        let comments = format!("/api/workspaces/{ws}/tickets/{id}/comments");
        for i in 0..20 {
            let word = format!("zebra{i}");
            s.post(&comments, &agent.token, json!({ "body": format!("Try the {word} procedure") })).await.ok(201);
            let (ids, page) = find(&s, &agent, &ws, &format!("{word} ")).await;
            assert_eq!(ids, [id.as_str()], "the search right after the write finds it: {page}");
        }
        let status = caught_up_status(&s, &agent, &ws).await;
        assert_eq!(status["documents"], 1, "{status}");
        s.get(&format!("/api/workspaces/{ws}/search/status"), &customer.token).await.problem(403);

        // The index directory disappears under the running server: searches go on answering
        // and the index is rebuilt from the log.
        let dir = index_dir(&s, &ws);
        assert!(dir.join("meta.json").exists(), "{}", dir.display());
        std::fs::remove_dir_all(&dir).unwrap();
        until_found(&s, &agent, &ws, "zebra7 ", &id).await;
        let (ids, _) = find(&s, &customer, &ws, "log in").await;
        assert_eq!(ids, [id.as_str()]);
        s.stop().await;
    }
}

/// Where the server keeps the index of `ws`.
pub(crate) fn index_dir(s: &TestServer, ws: &str) -> std::path::PathBuf {
    s.app().search().dir(ws.parse().unwrap())
}

#[tokio::test]
async fn a_write_through_one_postgres_instance_is_found_through_the_other() {
    let Some((one, two)) = TestServer::two_postgres_instances().await else { return };
    let admin = one.admin().await;
    let ws = one.workspace(&admin, "Shared").await;
    assert_ne!(index_dir(&one, &ws), index_dir(&two, &ws), "each instance keeps its own index");
    for i in 0..5 {
        let t = one.ticket(&admin, &ws, json!({ "title": format!("Quokka sighting {i}") })).await;
        let (ids, page) = find(&two, &admin, &ws, &format!("quokka sighting {i} ")).await;
        assert!(ids.contains(&t["id"].as_str().unwrap().to_string()), "{page}");
    }
    two.stop().await;
    one.stop().await;
}

#[tokio::test]
async fn an_unreadable_or_older_index_is_rebuilt_from_the_log() {
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Desk").await;
    let t = s.ticket(&admin, &ws, json!({ "title": "Heating broken" })).await;
    let id = t["id"].as_str().unwrap().to_string();
    let (ids, _) = find(&s, &admin, &ws, "heating").await;
    assert_eq!(ids, [id.as_str()]);
    let dir = index_dir(&s, &ws);

    // Written by an older build: its commit says another schema version (changed while
    // the server is down, before the new one opens it).
    let meta_file = dir.join("meta.json");
    let older = meta_file.clone();
    let s = s
        .restart_with(move |_| {
            let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&older).unwrap()).unwrap();
            let payload: Value = serde_json::from_str(meta["payload"].as_str().expect("a payload")).unwrap();
            assert_eq!(payload["schema"], 1, "{payload}");
            meta["payload"] = Value::String(json!({ "schema": 0, "watermark": payload["watermark"] }).to_string());
            std::fs::write(&older, meta.to_string()).unwrap();
        })
        .await;
    let page = until_found(&s, &admin, &ws, "heating", &id).await;
    assert_eq!(page["head"], page["indexed_through"]);
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta_file).unwrap()).unwrap();
    assert!(meta["payload"].as_str().unwrap().contains("\"schema\":1"), "rebuilt under this schema: {meta}");

    // Unreadable: its metadata is garbage.
    let garbage = meta_file.clone();
    let s = s.restart_with(move |_| std::fs::write(&garbage, b"{ not json").unwrap()).await;
    until_found(&s, &admin, &ws, "heating", &id).await;
    s.stop().await;
}
