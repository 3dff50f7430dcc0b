//! Collaborative notes over the y-websocket protocol (a yrs client here; the stock npm
//! client in `notes_npm.rs`): convergence, durability, the text projection, access decided
//! before the upgrade, bad frames, compaction, presence, the relay from another process.

use std::time::Duration;

use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Transact, Update};

use crate::common::{Backend, PASSWORD, TestServer, User, both_backends, relaxed_limits};
use crate::yclient::YClient;

const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn ws_base(s: &TestServer) -> String {
    s.base.replacen("http://", "ws://", 1)
}

pub(crate) fn note_url(s: &TestServer, ws: &str, ticket: &str) -> String {
    format!("{}/api/workspaces/{ws}/tickets/{ticket}/note", ws_base(s))
}

pub(crate) async fn note_token(s: &TestServer, user: &User, ws: &str, ticket: &str) -> String {
    let body = json!({ "workspace_id": ws, "ticket_id": ticket, "purpose": "note" });
    s.post("/api/auth/stream-token", &user.token, body).await.ok(200)["token"].as_str().expect("token").to_string()
}

/// A server with quick text projection, and a workspace with an agent and a ticket.
pub(crate) async fn setup(b: Backend) -> (TestServer, User, User, String, String) {
    let s = TestServer::start_with(b, relaxed_limits(), |c| c.notes.text_delay = Duration::from_millis(20)).await;
    let admin = s.admin().await;
    let agent = s.user(&admin, "agent").await;
    let ws = s.workspace(&admin, "Support").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    let ticket = s.ticket(&admin, &ws, json!({ "title": "Printer on fire" })).await["id"].as_str().unwrap().to_string();
    (s, admin, agent, ws, ticket)
}

async fn stored_updates(s: &TestServer, ws: &str, ticket: &str) -> edgedesk::store::notes::StoredNote {
    let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
    tenant.notes().load(ticket.parse().unwrap()).await.unwrap()
}

both_backends! {
    async fn two_editors_converge_and_the_note_reads_back_everywhere(b: Backend) {
        let (s, admin, agent, ws, ticket) = setup(b).await;
        let url = note_url(&s, &ws, &ticket);
        let a = YClient::connect(&url, Some(&admin.token)).await.expect("bearer opens the note");
        let token = note_token(&s, &agent, &ws, &ticket).await;
        let c = YClient::connect(&format!("{url}?access_token={token}"), None).await.expect("a note token opens the note");
        a.insert(0, "Hello");
        c.wait_text("Hello", WAIT).await;
        c.insert(5, " world");
        a.wait_text("Hello world", WAIT).await;

        // Interleaved inserts and deletes from both sides at once.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 0..300 {
            for editor in [&a, &c] {
                let len = editor.len();
                if len > 20 && rng.random_bool(0.3) {
                    editor.delete(rng.random_range(0..len), rng.random_range(1..4));
                } else {
                    editor.insert(rng.random_range(0..=len), if i % 2 == 0 { "x" } else { "yz" });
                }
            }
        }
        a.wait_for("convergence", WAIT, |a| a.xml() == c.xml() && !a.text().is_empty()).await;
        let text = a.text();

        // Plain HTTP: the text, and the whole document as one update.
        let read = s.get(&format!("/api/workspaces/{ws}/tickets/{ticket}/note"), &agent.token).await;
        assert_eq!(read.ok(200)["text"], text.as_str());
        assert!(read.body["size"].as_u64().unwrap() > 0);
        let bytes = s.http.get(format!("{}/api/workspaces/{ws}/tickets/{ticket}/note", s.base))
            .bearer_auth(&agent.token).header("accept", "application/octet-stream").send().await.unwrap();
        assert_eq!(bytes.headers()["content-type"], "application/octet-stream");
        let fresh = Doc::new();
        fresh.transact_mut().apply_update(Update::decode_v1(&bytes.bytes().await.unwrap()).unwrap()).unwrap();
        assert_eq!(edgedesk::notes::protocol::plain_text(&fresh), text);

        // Bootstrap carries the note's text to staff (once projected), never to requesters;
        // the log says who changed it and by how much, never the bytes.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, rows, _) = s.bootstrap(&agent.token, &ws).await;
            let note = rows.iter().find(|r| r["type"] == "note").cloned();
            if note.as_ref().is_some_and(|n| n["text"] == text.as_str()) {
                assert_eq!(note.unwrap()["ticket_id"], ticket.as_str());
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "bootstrap never carried the note's text: {note:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let requester = s.user(&admin, "customer").await;
        s.add_member(&admin, &ws, &requester, "requester").await;
        let (_, rows, _) = s.bootstrap(&requester.token, &ws).await;
        assert!(rows.iter().all(|r| r["type"] != "note"));
        let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0&limit=1000"), &agent.token).await;
        let updated: Vec<&Value> = delta.ok(200)["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "note.updated").collect();
        assert!(updated.len() > 300, "one event per stored update: {}", updated.len());
        assert!(updated.iter().all(|e| e["data"]["bytes"].as_u64().unwrap() > 0 && e["data"]["ticket_id"] == ticket.as_str()));
        let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0&limit=1000"), &requester.token).await;
        assert!(delta.ok(200)["events"].as_array().unwrap().iter().all(|e| e["kind"] != "note.updated"));

        // A third client joining later gets the whole note; after a restart, so does a fourth.
        let late = YClient::connect(&url, Some(&agent.token)).await.unwrap();
        late.wait_text(&text, WAIT).await;
        drop((a, c, late));
        let s = s.restart_in_place().await;
        let after = YClient::connect(&url, Some(&agent.token)).await.expect("the note opens after a restart");
        after.wait_text(&text, WAIT).await;
        s.stop().await;
    }
}

both_backends! {
    async fn only_staff_reach_a_note_and_the_refusal_comes_before_the_upgrade(b: Backend) {
        let (s, admin, agent, ws, ticket) = setup(b).await;
        let url = note_url(&s, &ws, &ticket);
        let customer = s.user(&admin, "customer").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        let own = s.ticket(&customer, &ws, json!({ "title": "My printer" })).await["id"].as_str().unwrap().to_string();
        let stranger = s.user(&admin, "stranger").await;
        let elsewhere = s.workspace(&admin, "Elsewhere").await;
        s.add_member(&admin, &elsewhere, &stranger, "agent").await;
        let other_ticket = s.ticket(&stranger, &elsewhere, json!({ "title": "theirs" })).await["id"].as_str().unwrap().to_string();

        // A requester, even on their own ticket, and a non-member: the 404 of a missing ticket.
        assert_eq!(YClient::connect(&note_url(&s, &ws, &own), Some(&customer.token)).await.err(), Some(404));
        assert_eq!(YClient::connect(&url, Some(&customer.token)).await.err(), Some(404));
        assert_eq!(YClient::connect(&url, Some(&stranger.token)).await.err(), Some(404));
        s.get(&format!("/api/workspaces/{ws}/tickets/{own}/note"), &customer.token).await.problem(404);
        // A ticket of another workspace through this one's URL, and a missing one.
        assert_eq!(YClient::connect(&note_url(&s, &ws, &other_ticket), Some(&admin.token)).await.err(), Some(404));
        assert_eq!(YClient::connect(&note_url(&s, &ws, &uuid_like()), Some(&admin.token)).await.err(), Some(404));
        assert_eq!(YClient::connect(&note_url(&s, &ws, "not-a-ticket"), Some(&admin.token)).await.err(), Some(400));

        // Stream tokens open only what they were minted for.
        let events = s.post("/api/auth/stream-token", &agent.token, json!({ "workspace_id": ws, "ticket_id": ticket })).await;
        let events = events.ok(200)["token"].as_str().unwrap().to_string();
        assert_eq!(YClient::connect(&format!("{url}?access_token={events}"), None).await.err(), Some(401), "wrong purpose");
        let second = s.ticket(&admin, &ws, json!({ "title": "another" })).await["id"].as_str().unwrap().to_string();
        let for_second = note_token(&s, &agent, &ws, &second).await;
        assert_eq!(YClient::connect(&format!("{url}?access_token={for_second}"), None).await.err(), Some(401), "another ticket");
        let theirs = note_token(&s, &stranger, &elsewhere, &other_ticket).await;
        assert_eq!(YClient::connect(&format!("{url}?access_token={theirs}"), None).await.err(), Some(401), "another workspace");
        let expired = expired_note_token(&s, &agent, &ws, &ticket);
        assert_eq!(YClient::connect(&format!("{url}?access_token={expired}"), None).await.err(), Some(401), "expired");
        s.post("/api/auth/stream-token", &agent.token, json!({ "workspace_id": ws, "purpose": "note" })).await.problem(422);
        // A note token cannot open the events stream either.
        let note = note_token(&s, &agent, &ws, &ticket).await;
        let res = s.http.get(format!("{}/api/workspaces/{ws}/events?ticket={ticket}&access_token={note}", s.base)).send().await.unwrap();
        assert_eq!(res.status(), 401);

        // Demoted while connected: closed, as SSE streams are.
        let c = YClient::connect(&url, Some(&agent.token)).await.unwrap();
        c.insert(0, "before");
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.add_member(&admin, &ws, &agent, "requester").await;
        let closed = c.closed_with(Duration::from_secs(5)).await.expect("closed on demotion");
        assert_eq!(closed.0, 1008, "{closed:?}");

        // A deleted ticket's note is gone, for open connections too.
        let a = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        a.wait_text("before", WAIT).await;
        s.delete(&format!("/api/workspaces/{ws}/tickets/{ticket}"), &admin.token).await.ok(204);
        assert_eq!(a.closed_with(WAIT).await.map(|c| c.0), Some(4404));
        assert_eq!(YClient::connect(&url, Some(&admin.token)).await.err(), Some(404));
        s.get(&format!("/api/workspaces/{ws}/tickets/{ticket}/note"), &admin.token).await.problem(404);
        let (_, rows, _) = s.bootstrap(&admin.token, &ws).await;
        assert!(rows.iter().all(|r| r["type"] != "note"), "a deleted ticket's note leaves bootstrap");
        s.stop().await;
    }
}

fn uuid_like() -> String {
    "01a23403-95f0-7093-bc55-facd975fd424".into()
}

/// A note token that expired a second ago, signed with the server's own key.
fn expired_note_token(s: &TestServer, user: &User, ws: &str, ticket: &str) -> String {
    use edgedesk::auth::stream::{Claims, Purpose, mint};
    use edgedesk::store::{Credential, Millis, SessionId};
    let master = edgedesk::crypto::load_or_create_master_key(&s.app().config().master_key_file).unwrap();
    let key = edgedesk::crypto::derive_key(&master, "stream-token").unwrap();
    // The parent must be live for the token to be judged on its expiry alone: a session id
    // is not visible here, so any parent will do — an expired token is refused first.
    let claims = Claims {
        purpose: Purpose::Note,
        parent: Credential::Session(SessionId::new()),
        user: user.id.parse().unwrap(),
        workspace: ws.parse().unwrap(),
        ticket: Some(ticket.parse().unwrap()),
        expires: Millis(Millis::now().0 - 1_000),
    };
    mint(&key, &claims)
}

/// Frames that are not the y-websocket protocol, each of a kind a fuzzer finds first.
fn hostile_frames() -> Vec<Vec<u8>> {
    vec![
        vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // a varint that never ends
        vec![0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f],                               // an update claiming 4 GiB
        vec![0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3],
        vec![0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x0f], // a state vector claiming 4 billion clients
        vec![0, 2, 10, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0, 0], // an update claiming 4 billion clients
        vec![1, 6, 1, 7, 1, 2, 0xc3, 0x28],          // awareness state: invalid UTF-8
        vec![1, 9, 1, 7, 1, 5, b'{', b'"', b'a', b'"', b':'], // awareness state: not JSON
        vec![0, 9, 0],                               // an unknown sync message
        vec![42],                                    // an unknown message type
        vec![0, 2],                                  // truncated
        vec![],
    ]
}

/// A valid update frame from a real edit, to mutate.
fn sample_update() -> Vec<u8> {
    let doc = Doc::new();
    let fragment = doc.get_or_insert_xml_fragment("default");
    let mut txn = doc.transact_mut();
    use yrs::{Text, XmlElementPrelim, XmlFragment, XmlTextPrelim};
    let p = fragment.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
    let t = p.insert(&mut txn, 0, XmlTextPrelim::new("mutate me"));
    t.insert(&mut txn, 3, "ü€");
    drop(txn);
    edgedesk::notes::protocol::update(&doc.transact().encode_state_as_update_v1(&yrs::StateVector::default())).to_vec()
}

/// Random and mutated frames that the protocol refuses (checked with the server's own
/// decoder: a mutation that happens to be a valid edit is an edit, not a bad frame).
fn fuzz_frames(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base = sample_update();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut frame = match rng.random_range(0..4) {
            0 => (0..rng.random_range(1..64)).map(|_| rng.random()).collect::<Vec<u8>>(),
            1 => base[..rng.random_range(1..base.len())].to_vec(),
            _ => {
                let mut f = base.clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..f.len());
                    f[at] = rng.random();
                }
                f
            }
        };
        if rng.random_bool(0.2) {
            frame.extend_from_slice(&[0xff; 6]);
        }
        if edgedesk::notes::protocol::decode_frame(&frame).is_err() {
            out.push(frame);
        }
    }
    out
}

both_backends! {
    async fn bad_frames_close_only_their_own_connection(b: Backend) {
        let s = TestServer::start_with(b, relaxed_limits(), |c| {
            c.notes.max_frame = 64 * 1024;
            c.notes.per_user = 1_000;
            c.notes.per_document = 1_000;
        })
        .await;
        let admin = s.admin().await;
        let ws = s.workspace(&admin, "Support").await;
        let ticket = s.ticket(&admin, &ws, json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
        let url = note_url(&s, &ws, &ticket);
        let honest = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        honest.insert(0, "honest");

        let mut frames = hostile_frames();
        frames.extend(fuzz_frames(2_000, 11));
        let expected_codes = [1007u16, 1009];
        let total = frames.len();
        let chunks: Vec<Vec<Vec<u8>>> = frames.chunks(total.div_ceil(8)).map(|c| c.to_vec()).collect();
        let mut attackers = Vec::new();
        for chunk in chunks {
            let url = url.clone();
            let token = admin.token.clone();
            attackers.push(tokio::spawn(async move {
                let mut closed = 0;
                for frame in chunk {
                    let bad = YClient::connect(&url, Some(&token)).await.expect("connects");
                    let empty = frame.is_empty();
                    bad.send_raw(frame.clone());
                    match bad.closed_with(Duration::from_secs(5)).await {
                        Some((code, _)) if expected_codes.contains(&code) => closed += 1,
                        other => panic!("frame {frame:?} (empty {empty}) was answered with {other:?}"),
                    }
                }
                closed
            }));
        }
        // Meanwhile the honest client keeps typing.
        for i in 0..100 {
            honest.insert(honest.len(), if i % 2 == 0 { "a" } else { "b" });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut closed = 0;
        for attacker in attackers {
            closed += attacker.await.unwrap();
        }
        assert_eq!(closed, total, "every bad frame closed its own connection");
        // A frame over the size limit, and a text frame.
        let big = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        big.send_raw(edgedesk::notes::protocol::update(&vec![0u8; 100 * 1024]).to_vec());
        assert_eq!(big.closed_with(WAIT).await.map(|c| c.0), Some(1009));
        let text = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        text.send_text_frame("hello");
        assert_eq!(text.closed_with(WAIT).await.map(|c| c.0), Some(1008));

        assert!(honest.is_open(), "the honest client was never disturbed");
        let expected = honest.text();
        assert!(expected.starts_with("honest") && expected.len() == 106, "{expected}");
        let check = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        check.wait_text(&expected, WAIT).await;
        assert_eq!(check.xml(), honest.xml(), "the bad frames changed nothing");
        let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("edgedesk_note_bad_frames_total"), "{metrics}");
        s.stop().await;
    }
}

both_backends! {
    async fn compaction_folds_updates_into_a_snapshot_and_loses_nothing(b: Backend) {
        let (s, admin, _agent, ws, ticket) = setup(b).await;
        let url = note_url(&s, &ws, &ticket);
        let a = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        for i in 0..300 {
            a.insert(a.len(), &format!("{} ", i % 10));
        }
        let watcher = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        watcher.wait_for("all 300 edits", WAIT, |w| w.xml() == a.xml()).await;
        let before = stored_updates(&s, &ws, &ticket).await;
        assert!(before.updates.len() >= 300, "{}", before.updates.len());
        assert!(before.snapshot.is_none());

        // Edits keep coming while the note is compacted.
        let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
        let during = tokio::spawn({
            let url = url.clone();
            let token = admin.token.clone();
            async move {
                let c = YClient::connect(&url, Some(&token)).await.unwrap();
                c.wait_for("the note", WAIT, |c| c.text().ends_with("9 ")).await;
                for _ in 0..100 {
                    c.insert(0, "+");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                c
            }
        });
        let mut compacted = false;
        for _ in 0..20 {
            compacted |= edgedesk::notes::compact(&tenant, ticket.parse().unwrap()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(compacted);
        let c = during.await.unwrap();
        a.wait_for("the edits made during compaction", WAIT, |a| a.xml() == c.xml() && a.text().starts_with(&"+".repeat(100))).await;
        edgedesk::notes::compact(&tenant, ticket.parse().unwrap()).await.unwrap();
        let after = stored_updates(&s, &ws, &ticket).await;
        assert!(after.snapshot.is_some());
        assert!(after.updates.len() < 5, "updates left after compaction: {}", after.updates.len());
        let fresh = YClient::connect(&url, Some(&admin.token)).await.unwrap();
        fresh.wait_for("the compacted note", WAIT, |f| f.xml() == a.xml()).await;
        // The background sweep does the same on its own.
        s.stop().await;
    }
}

#[tokio::test]
async fn presence_reaches_the_other_clients_and_leaves_with_its_connection() {
    let (s, admin, agent, ws, ticket) = setup(Backend::Sqlite).await;
    let url = note_url(&s, &ws, &ticket);
    let a = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    let b = YClient::connect(&url, Some(&agent.token)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Client 77's cursor, as y-protocols encodes an awareness update.
    let mut update = yrs::sync::AwarenessUpdate { clients: Default::default() };
    update.clients.insert(
        yrs::block::ClientID::new(77),
        yrs::sync::awareness::AwarenessUpdateEntry { clock: 1, json: r#"{"user":{"name":"Admin"}}"#.into() },
    );
    a.send_raw(edgedesk::notes::protocol::awareness(&update).to_vec());
    let has =
        |c: &YClient, needle: &str| c.received.lock().unwrap().iter().any(|f| f[0] == 1 && String::from_utf8_lossy(f).contains(needle));
    b.wait_for("the cursor", WAIT, |b| has(b, "Admin")).await;
    // A client joining later is told who is here.
    let c = YClient::connect(&url, Some(&agent.token)).await.unwrap();
    c.wait_for("who is here", WAIT, |c| has(c, "Admin")).await;
    drop(a);
    b.wait_for("the cursor leaving", WAIT, |b| has(b, "null")).await;
    drop(c);
    s.stop().await;
}

#[tokio::test]
async fn an_update_written_by_another_process_reaches_open_documents() {
    let (s, admin, _agent, ws, ticket) = setup(Backend::Sqlite).await;
    let url = note_url(&s, &ws, &ticket);
    let a = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    a.insert(0, "mine");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another process on the same data directory (as the CLI is) appends an edit made by a
    // client that synced the note first.
    let other = Doc::new();
    let state = s
        .http
        .get(format!("{}/api/workspaces/{ws}/tickets/{ticket}/note", s.base))
        .bearer_auth(&admin.token)
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    other.transact_mut().apply_update(Update::decode_v1(&state).unwrap()).unwrap();
    let before = other.transact().state_vector();
    {
        use yrs::{Text, XmlFragment, XmlOut};
        let fragment = other.get_or_insert_xml_fragment("default");
        let mut txn = other.transact_mut();
        let Some(XmlOut::Element(p)) = fragment.get(&txn, 0) else { panic!("paragraph") };
        let Some(XmlOut::Text(t)) = p.get(&txn, 0) else { panic!("text") };
        t.insert(&mut txn, 4, " and theirs");
    }
    let diff = other.transact().encode_state_as_update_v1(&before);
    let data = s.data_dir();
    let (ws_id, ticket_id) = (ws.parse().unwrap(), ticket.parse().unwrap());
    let author = admin.id.parse().unwrap();
    tokio::task::spawn_blocking(move || {
        let store = edgedesk::store::sqlite::open(&data, edgedesk::store::sqlite::SqliteOptions::new(4, Duration::from_secs(60))).unwrap();
        tokio::runtime::Runtime::new().unwrap().block_on(async move {
            let tenant = store.tenants.open(ws_id).await.unwrap();
            let update = edgedesk::store::notes::NewNoteUpdate { author, bytes: diff.into() };
            tenant.notes().append(ticket_id, vec![update]).await.unwrap();
        });
    })
    .await
    .unwrap();
    a.wait_text("mine and theirs", WAIT).await;
    s.stop().await;
}

#[tokio::test]
async fn connections_are_capped_per_user_and_the_server_says_going_away_at_shutdown() {
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| c.notes.per_user = 2).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let ticket = s.ticket(&admin, &ws, json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
    let url = note_url(&s, &ws, &ticket);
    let a = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    let b = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    assert_eq!(YClient::connect(&url, Some(&admin.token)).await.err(), Some(429));
    a.insert(0, "kept");
    b.wait_text("kept", WAIT).await;
    let dir_holder = s;
    let s = dir_holder.restart_in_place().await;
    assert_eq!(a.closed_with(WAIT).await.map(|c| c.0), Some(1001));
    assert_eq!(b.closed_with(WAIT).await.map(|c| c.0), Some(1001));
    let c = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    c.wait_text("kept", WAIT).await;
    let _ = PASSWORD;
    s.stop().await;
}

#[tokio::test]
async fn the_background_sweep_compacts_busy_notes() {
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| {
        c.notes.compact_after = 50;
        c.notes.compact_every = Duration::from_millis(50);
    })
    .await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let ticket = s.ticket(&admin, &ws, json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
    let url = note_url(&s, &ws, &ticket);
    let a = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    for i in 0..120 {
        a.insert(a.len(), &format!("{i},"));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = stored_updates(&s, &ws, &ticket).await;
        if stored.snapshot.is_some() && stored.updates.len() < 50 && stored.through() >= 120 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not compacted: {} updates", stored.updates.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The counter moves just after the compaction's commit: a bounded wait, not a race.
    loop {
        let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        if !metrics.contains("edgedesk_note_compactions_total 0") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    fresh.wait_for("the compacted note", WAIT, |f| f.xml() == a.xml() && f.text().ends_with("119,")).await;
    s.stop().await;
}

#[tokio::test]
async fn a_demotion_made_through_another_instance_closes_the_note_within_the_recheck_bound() {
    let Some((one, two)) = TestServer::two_postgres_instances().await else { return };
    let admin = one.admin().await;
    let agent = one.user(&admin, "agent").await;
    let ws = one.workspace(&admin, "Support").await;
    one.add_member(&admin, &ws, &agent, "agent").await;
    let ticket = one.ticket(&admin, &ws, json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
    let on_two = YClient::connect(&note_url(&two, &ws, &ticket), Some(&agent.token)).await.expect("the agent opens the note on two");
    let writer = YClient::connect(&note_url(&one, &ws, &ticket), Some(&admin.token)).await.unwrap();
    writer.insert(0, "across");
    on_two.wait_text("across", WAIT).await;
    let started = std::time::Instant::now();
    one.add_member(&admin, &ws, &agent, "requester").await;
    let closed = on_two.closed_with(Duration::from_secs(10)).await.expect("closed after the demotion elsewhere");
    assert_eq!(closed.0, 1008, "{closed:?}");
    // EDGEDESK_STREAM_RECHECK_MS (2 s) plus scheduling.
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    // Opening again there is refused, or (while that instance's membership cache, at most
    // EDGEDESK_AUTH_CACHE_SECS, still says agent) closed by the same watch.
    match YClient::connect(&note_url(&two, &ws, &ticket), Some(&agent.token)).await {
        Err(status) => assert_eq!(status, 404),
        Ok(again) => assert_eq!(again.closed_with(Duration::from_secs(10)).await.map(|c| c.0), Some(1008)),
    }
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_connection_over_its_rate_is_slowed_down_and_loses_nothing() {
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| {
        c.notes.updates_per_sec = 100;
        c.notes.burst = 20;
    })
    .await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let ticket = s.ticket(&admin, &ws, json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
    let url = note_url(&s, &ws, &ticket);
    let fast = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    let watcher = YClient::connect(&url, Some(&admin.token)).await.unwrap();
    // A paste that arrives as 150 updates at once.
    for i in 0..150 {
        fast.insert(fast.len(), &format!("{}", i % 10));
    }
    watcher.wait_for("every update, paced", WAIT, |w| w.xml() == fast.xml() && w.len() == 150).await;
    assert!(fast.is_open(), "slowed down, not cut off");
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    let throttled: u64 = metrics.lines().find_map(|l| l.strip_prefix("edgedesk_note_throttled_total ")).unwrap().trim().parse().unwrap();
    assert!(throttled > 0, "{metrics}");
    s.stop().await;
}

#[tokio::test]
async fn presence_crosses_instances_and_leaves_with_its_connection() {
    let Some((one, two)) = TestServer::two_postgres_instances().await else { return };
    let admin = one.admin().await;
    let agent = one.user(&admin, "agent").await;
    let ws = one.workspace(&admin, "Support").await;
    one.add_member(&admin, &ws, &agent, "agent").await;
    let ticket = one.ticket(&admin, &ws, json!({ "title": "Printer on fire" })).await["id"].as_str().unwrap().to_string();
    let a = YClient::connect(&note_url(&one, &ws, &ticket), Some(&admin.token)).await.unwrap();
    let b = YClient::connect(&note_url(&two, &ws, &ticket), Some(&agent.token)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut update = yrs::sync::AwarenessUpdate { clients: Default::default() };
    update.clients.insert(
        yrs::block::ClientID::new(77),
        yrs::sync::awareness::AwarenessUpdateEntry { clock: 1, json: r#"{"user":{"name":"Admin on one"}}"#.into() },
    );
    a.send_raw(edgedesk::notes::protocol::awareness(&update).to_vec());
    let has =
        |c: &YClient, needle: &str| c.received.lock().unwrap().iter().any(|f| f[0] == 1 && String::from_utf8_lossy(f).contains(needle));
    b.wait_for("the cursor from the other instance", WAIT, |b| has(b, "Admin on one")).await;
    // Someone joining the second instance later is told who is on the first.
    let c = YClient::connect(&note_url(&two, &ws, &ticket), Some(&agent.token)).await.unwrap();
    c.wait_for("who is here, on another instance", WAIT, |c| has(c, "Admin on one")).await;
    drop(a);
    b.wait_for("the cursor leaving, from the other instance", WAIT, |b| has(b, "null")).await;
    drop((b, c));
    two.stop().await;
    one.stop().await;
}

both_backends! {
    async fn storing_a_notes_unchanged_text_again_is_not_an_error(b: Backend) {
        let (s, admin, _agent, ws, ticket) = setup(b).await;
        let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
        let ticket_id: edgedesk::store::TicketId = ticket.parse().unwrap();
        let doc = yrs::Doc::new();
        {
            use yrs::{Transact, XmlFragment, XmlTextPrelim};
            let fragment = doc.get_or_insert_xml_fragment("default");
            let mut txn = doc.transact_mut();
            fragment.push_back(&mut txn, XmlTextPrelim::new("hello"));
        }
        let bytes = yrs::Transact::transact(&doc).encode_state_as_update_v1(&yrs::StateVector::default());
        let update = edgedesk::store::notes::NewNoteUpdate { author: admin.id.parse().unwrap(), bytes: bytes.into() };
        tenant.notes().append(ticket_id, vec![update]).await.unwrap();
        tenant.notes().set_text(ticket_id, "hello".into()).await.unwrap();
        // Another instance holding the document, or an edit of formatting only, stores the
        // same text again: nothing changes and nothing fails.
        tenant.notes().set_text(ticket_id, "hello".into()).await.expect("the same text again");
        let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0&limit=1000"), &admin.token).await.ok(200).clone();
        let texts = delta["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "note.text_updated").count();
        assert_eq!(texts, 1, "one change, one event: {delta}");
        s.stop().await;
    }
}
