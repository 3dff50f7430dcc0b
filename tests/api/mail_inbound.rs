//! Incoming mail through a real dovecot, on both backends: a message delivered into the
//! mailbox becomes a ticket within a bounded wait (the session waits in IDLE; no slow poll),
//! with its sender as requester, its text and its attachment; answers thread onto their
//! ticket by In-Reply-To, by an old reference, by the subject tag; a fresh message opens a
//! new ticket; auto-replies, lists and bounces open none, and a bounce fails the mail it
//! returns; a message fetched twice is filed once; a restarted IMAP server is reconnected to.

use edgedesk::http::outbound::Reach;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer, User, both_backends, fixture, relaxed_limits};
use crate::mail::{channel_body, eventually, header};
use crate::mailservers::{self, Imap, Smtp};

fn eml(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("mail/{name}"))).unwrap()
}

/// A server that reads mailboxes every 100 ms and reconnects within milliseconds.
async fn inbound_server(b: Backend) -> TestServer {
    TestServer::start_with(b, relaxed_limits(), |c| {
        c.mail.reach = Reach::Any;
        c.ingest.scan = std::time::Duration::from_millis(100);
        c.ingest.lease = std::time::Duration::from_secs(3);
        c.ingest.reconnect = edgedesk::backoff::Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_millis(200));
    })
    .await
}

struct Desk {
    admin: User,
    agent: User,
    ws: String,
}

impl Desk {
    async fn open(s: &TestServer, imap: &Imap, smtp: &Smtp) -> Self {
        let admin = s.admin().await;
        let agent = s.user(&admin, "agent").await;
        let ws = s.workspace(&admin, "Mail").await;
        s.add_member(&admin, &ws, &agent, "agent").await;
        s.post(&format!("/api/workspaces/{ws}/mail/channels"), &admin.token, channel_body(imap, smtp)).await.ok(201);
        Self { admin, agent, ws }
    }

    async fn tickets(&self, s: &TestServer) -> Vec<Value> {
        let page = s.get(&format!("/api/workspaces/{}/tickets?limit=100&sort=created_at&order=asc", self.ws), &self.admin.token).await;
        page.ok(200)["items"].as_array().unwrap().clone()
    }

    async fn comments(&self, s: &TestServer, ticket: &str) -> Vec<Value> {
        let page = s.get(&format!("/api/workspaces/{}/tickets/{ticket}/comments?limit=100", self.ws), &self.admin.token).await;
        page.ok(200)["items"].as_array().unwrap().clone()
    }

    /// Waits until there are `n` tickets (a bounded wait), and returns them, oldest first.
    async fn wait_for_tickets(&self, s: &TestServer, n: usize, what: &str) -> Vec<Value> {
        eventually(10, what, || async {
            let tickets = self.tickets(s).await;
            (tickets.len() >= n).then_some(tickets)
        })
        .await
    }

    async fn wait_for_comments(&self, s: &TestServer, ticket: &str, n: usize, what: &str) -> Vec<Value> {
        eventually(10, what, || async {
            let comments = self.comments(s, ticket).await;
            (comments.len() >= n).then_some(comments)
        })
        .await
    }
}

/// A plain message from `from` with these headers.
fn message(from: &str, subject: &str, id: &str, extra: &str, text: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support@example.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Tue, 1 Dec 2026 12:00:00 +0000\r\n{extra}\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    )
    .into_bytes()
}

both_backends! {
    async fn mail_in_becomes_tickets_threads_onto_them_and_loops_open_none(b: Backend) {
        if !mailservers::available() {
            return;
        }
        let s = inbound_server(b).await;
        let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
        let desk = Desk::open(&s, &imap, &smtp).await;
        let ws = desk.ws.clone();

        // A customer's question becomes a ticket, the customer its requester.
        imap.deliver(&eml("customer-question.eml"));
        let tickets = desk.wait_for_tickets(&s, 1, "the mailed question to become a ticket").await;
        let ticket = tickets[0].clone();
        let id = ticket["id"].as_str().unwrap().to_string();
        assert_eq!(ticket["title"], "Printer on fire");
        let members = s.get(&format!("/api/workspaces/{ws}/members"), &desk.admin.token).await.ok(200).clone();
        let ada = members.as_array().unwrap().iter().find(|m| m.to_string().contains("ada@customer.test")).expect("the sender is a member").clone();
        assert_eq!(ada["role"], "requester");
        assert_eq!(ticket["requester_id"], ada["user_id"]);
        let first = desk.comments(&s, &id).await;
        assert_eq!(first.len(), 1);
        assert!(first[0]["body"].as_str().unwrap().contains("the printer on the second floor is on fire again"), "{}", first[0]);
        assert_eq!(first[0]["internal"], false);
        // The new requester has no password: nobody can sign in as them.
        s.login("ada@customer.test", "a long passphrase").await.problem(401);

        // An HTML message with an attachment: safe text, and the file, byte for byte.
        imap.deliver(&eml("html-with-attachment.eml"));
        let tickets = desk.wait_for_tickets(&s, 2, "the HTML message to become a ticket").await;
        let html = tickets[1]["id"].as_str().unwrap().to_string();
        let body = desk.comments(&s, &html).await[0]["body"].as_str().unwrap().to_string();
        assert!(!body.contains('<'), "no markup is kept: {body}");
        let files = eventually(10, "the attachment to be stored", || async {
            let files = s.get(&format!("/api/workspaces/{ws}/tickets/{html}/attachments"), &desk.admin.token).await.ok(200).clone();
            (!files.as_array().unwrap().is_empty()).then_some(files)
        })
        .await;
        let file = &files[0];
        assert_eq!(file["name"], "printer.png");
        let parsed = mail_parser::MessageParser::default().parse(&eml("html-with-attachment.eml")[..]).unwrap().attachment(0).unwrap().contents().to_vec();
        let path = format!("{}/api/workspaces/{ws}/tickets/{html}/attachments/{}", s.base, file["id"].as_str().unwrap());
        let got = s.http.get(path).bearer_auth(&desk.admin.token).send().await.unwrap().bytes().await.unwrap();
        assert!(got == parsed, "the attachment downloads intact");

        // Our public reply goes out; the customer answers it under another subject.
        s.post(&format!("/api/workspaces/{ws}/tickets/{id}/comments"), &desk.agent.token, json!({ "body": "Stay calm." })).await.ok(201);
        let sent = eventually(10, "the reply to be sent", || async {
            let got = smtp.received();
            (!got.is_empty()).then(|| String::from_utf8_lossy(&got[0].1).to_string())
        })
        .await;
        let ours = header(&sent, "Message-ID").unwrap().trim_matches(['<', '>']).to_string();
        // It answers the customer's message, so it threads under it in their mail program.
        assert_eq!(header(&sent, "In-Reply-To"), Some("<20261201091403.4242@customer.test>"), "{sent}");
        assert!(header(&sent, "Subject").unwrap().contains(&format!("[#{}]", ticket["number"])), "{sent}");
        let reply = String::from_utf8(eml("customer-reply-changed-subject.eml")).unwrap().replace("0123456789abcdef0123456789abcdef@Example.test", &ours);
        imap.deliver(reply.as_bytes());
        let thread = desk.wait_for_comments(&s, &id, 3, "the changed-subject answer on its ticket").await;
        assert!(thread[2]["body"].as_str().unwrap().starts_with("Thanks, the fire is out now."), "{}", thread[2]);
        assert!(thread[2]["body"].as_str().unwrap().contains("> Stay calm."), "the quote is kept, marked: {}", thread[2]);

        // One that references only the first message of the thread; one with only the tag.
        let number = ticket["number"].as_i64().unwrap();
        imap.deliver(&message("Ada Lovelace <ada@customer.test>", "Another thing", "old-ref.1@customer.test",
            "References: <20261201091403.4242@customer.test>\r\n", "And the scanner smokes."));
        desk.wait_for_comments(&s, &id, 4, "the answer to an old message on its ticket").await;
        imap.deliver(&message("Ada Lovelace <ada@customer.test>", &format!("Re: [#{number}] what now"), "tag.1@customer.test", "", "Tagged."));
        desk.wait_for_comments(&s, &id, 5, "the tagged message on its ticket").await;
        // A colleague of the customer answers: a comment that says who sent it.
        imap.deliver(&message("Bob <bob@customer.test>", &format!("Re: [#{number}]"), "bob.1@customer.test", "", "Same here."));
        let thread = desk.wait_for_comments(&s, &id, 6, "the colleague's message on the ticket").await;
        assert!(thread[5]["body"].as_str().unwrap().contains("Sent by bob@customer.test, who is not this ticket's requester."), "{}", thread[5]);

        // Loops open nothing: an auto-reply, a list, a bounce (which fails our mail), the
        // same question again, and our own address; then a fresh message opens a ticket.
        imap.deliver(&eml("auto-reply.eml"));
        imap.deliver(&eml("mailing-list.eml"));
        let bounce = String::from_utf8(eml("bounce.eml")).unwrap().replace("0123456789abcdef0123456789abcdef@Example.test", &ours);
        imap.deliver(bounce.as_bytes());
        imap.deliver(&eml("customer-question.eml"));
        imap.deliver(&message("support@example.test", "Loop", "self.1@example.test", "", "From ourselves."));
        imap.deliver(&message("Eve <eve@elsewhere.test>", "A new question", "fresh.1@elsewhere.test", "", "Hello?"));
        let tickets = desk.wait_for_tickets(&s, 3, "the fresh message to open a ticket").await;
        assert_eq!(tickets.len(), 3, "nothing else opened a ticket: {tickets:?}");
        assert_eq!(tickets[2]["title"], "A new question");
        assert_eq!(desk.comments(&s, &id).await.len(), 6, "nor added to one");
        let mail = s.get(&format!("/api/workspaces/{ws}/tickets/{id}/mail"), &desk.agent.token).await.ok(200).clone();
        assert_eq!(mail[0]["status"], "failed", "{mail}");
        assert!(mail[0]["relay_answer"].as_str().unwrap().starts_with("bounced:"), "{mail}");
        let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("edgedesk_mail_inbound_total{outcome=\"bounce\"} 1"), "{metrics}");
        assert!(metrics.contains("edgedesk_mail_imap_sessions 1"), "{metrics}");
    }
}

#[tokio::test]
async fn a_restarted_imap_server_is_reconnected_to_and_nothing_is_filed_twice() {
    if !mailservers::available() {
        return;
    }
    let s = inbound_server(Backend::Sqlite).await;
    let (mut imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
    let desk = Desk::open(&s, &imap, &smtp).await;
    imap.deliver(&message("Ada <ada@customer.test>", "One", "one@customer.test", "", "First."));
    desk.wait_for_tickets(&s, 1, "the first message").await;
    imap.restart().await;
    imap.deliver(&message("Ada <ada@customer.test>", "Two", "two@customer.test", "", "Second."));
    let tickets = desk.wait_for_tickets(&s, 2, "the message after the restart").await;
    // The first message, fetched again after a server that forgot it was seen, is not filed again.
    imap.deliver(&message("Ada <ada@customer.test>", "One", "one@customer.test", "", "First."));
    imap.deliver(&message("Ada <ada@customer.test>", "Three", "three@customer.test", "", "Third."));
    let tickets_after = desk.wait_for_tickets(&s, 3, "the third message").await;
    assert_eq!(tickets.len(), 2);
    assert_eq!(tickets_after.iter().map(|t| t["title"].as_str().unwrap()).collect::<Vec<_>>(), ["One", "Two", "Three"]);
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("edgedesk_mail_imap_reconnects_total 0"), "the session reconnected: {metrics}");
    // A question and its follow-up fetched in one batch: the follow-up is filed after it,
    // onto its ticket (messages of a batch are filed concurrently otherwise).
    imap.deliver(&message("Ada <ada@customer.test>", "Four", "four@customer.test", "", "Fourth."));
    imap.deliver(&message(
        "Ada <ada@customer.test>",
        "Re: Four",
        "four.re@customer.test",
        "In-Reply-To: <four@customer.test>\r\n",
        "More.",
    ));
    let tickets = desk.wait_for_tickets(&s, 4, "the fourth question").await;
    assert_eq!(tickets[3]["title"], "Four");
    desk.wait_for_comments(&s, tickets[3]["id"].as_str().unwrap(), 2, "the follow-up on its ticket").await;
    assert_eq!(desk.tickets(&s).await.len(), 4, "the follow-up opened no ticket");
}

#[tokio::test]
async fn one_channel_is_read_by_one_of_two_instances() {
    if !mailservers::available() || !Backend::postgres_available() {
        return;
    }
    let one = inbound_server(Backend::Postgres).await;
    let key = one.data_dir().join("master.key");
    let two = TestServer::start_on_with(tempfile::tempdir().unwrap(), one.pg.clone(), |c| {
        c.mail.reach = Reach::Any;
        c.ingest.scan = std::time::Duration::from_millis(100);
        c.ingest.lease = std::time::Duration::from_secs(3);
        c.master_key_file = key;
    })
    .await;
    let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
    let desk = Desk::open(&one, &imap, &smtp).await;
    for i in 0..20 {
        imap.deliver(&message("Ada <ada@customer.test>", &format!("Question {i}"), &format!("q{i}@customer.test"), "", "?"));
    }
    let tickets = desk.wait_for_tickets(&one, 20, "every message to become a ticket").await;
    let sessions = |s: &TestServer| {
        let s = s.http.get(format!("{}/metrics", s.base));
        async move {
            let text = s.send().await.unwrap().text().await.unwrap();
            text.lines().find_map(|l| l.strip_prefix("edgedesk_mail_imap_sessions ")).unwrap().parse::<u32>().unwrap()
        }
    };
    let (a, b) = (sessions(&one).await, sessions(&two).await);
    assert_eq!(a + b, 1, "exactly one instance reads the channel");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(desk.tickets(&one).await.len(), 20, "each message once: {tickets:?}");
    // The reader stops: the other takes the mailbox over once its lease has ended.
    let (reader, other) = if a == 1 { (one, two) } else { (two, one) };
    reader.stop().await;
    imap.deliver(&message("Ada <ada@customer.test>", "After the handover", "after@customer.test", "", "?"));
    let tickets = eventually(15, "the other instance to file new mail", || async {
        let tickets = desk.tickets(&other).await;
        (tickets.len() == 21).then_some(tickets)
    })
    .await;
    assert_eq!(tickets[20]["title"], "After the handover");
    assert_eq!(sessions(&other).await, 1);
}

#[tokio::test]
async fn oversized_mail_and_floods_are_set_aside_and_recorded() {
    if !mailservers::available() {
        return;
    }
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| {
        c.mail.reach = Reach::Any;
        c.ingest.scan = std::time::Duration::from_millis(100);
        c.filing.max_message_bytes = 4096;
        c.filing.per_sender_hourly = 3;
        c.filing.max_attachments = 0;
    })
    .await;
    let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
    let desk = Desk::open(&s, &imap, &smtp).await;
    imap.deliver(&message("Big <big@customer.test>", "Huge", "huge@customer.test", "", &"x".repeat(10_000)));
    for i in 0..4 {
        imap.deliver(&message("Flood <flood@customer.test>", &format!("Flood {i}"), &format!("flood{i}@customer.test"), "", "again"));
    }
    // Over the attachment cap (0 here): named in the comment, not stored.
    imap.deliver(&eml("html-with-attachment.eml"));
    let tickets = desk.wait_for_tickets(&s, 4, "the flood's first three and the last message").await;
    // Messages from different senders are filed concurrently: compare as a set.
    let mut titles: Vec<&str> = tickets.iter().map(|t| t["title"].as_str().unwrap()).collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        ["Flood 0", "Flood 1", "Flood 2", "Re: [#42] Printer on fire"],
        "the large one and the fourth flood message open nothing"
    );
    let last = tickets.iter().find(|t| t["title"] == "Re: [#42] Printer on fire").unwrap()["id"].as_str().unwrap();
    let body = desk.comments(&s, last).await[0]["body"].as_str().unwrap().to_string();
    assert!(body.contains("Not stored (more than 0 attachments): printer.png"), "{body}");
    let files = s.get(&format!("/api/workspaces/{}/tickets/{last}/attachments", desk.ws), &desk.admin.token).await.ok(200).clone();
    assert_eq!(files.as_array().unwrap().len(), 0);
    // Both set-aside messages are on the record, with why.
    let audit = s.get(&format!("/api/workspaces/{}/audit?limit=200", desk.ws), &desk.admin.token).await.ok(200).to_string();
    assert!(audit.contains("larger than the 4096 byte cap"), "{audit}");
    assert!(audit.contains("flood limit"), "{audit}");
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("edgedesk_mail_inbound_total{outcome=\"ignored\"} 2"), "{metrics}");
}
