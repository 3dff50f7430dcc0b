//! Mail channels over HTTP, on both backends: owners and admins only; passwords go in and
//! never come out (not in answers, not in the log, not in clear at rest); bad settings are
//! 422s naming the field; one channel per address; and the test route logs in to a real
//! dovecot and a real aiosmtpd, reporting in words what fails (a wrong password, a port
//! nobody listens on, a private address the server may not reach).

use edgedesk::http::outbound::Reach;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer, both_backends, relaxed_limits};
use crate::mailservers::{self, Imap, Smtp};

pub(crate) fn channel_body(imap: &Imap, smtp: &Smtp) -> Value {
    let (smtp_user, smtp_password) = smtp.credentials.clone().unwrap_or_default();
    json!({
        "address": "Support@Example.test",
        "display_name": "Example Support",
        "imap": { "host": "127.0.0.1", "port": imap.port, "security": "none", "user": imap.user, "password": imap.password },
        "smtp": { "host": "127.0.0.1", "port": smtp.port, "security": "none", "user": smtp_user, "password": smtp_password },
    })
}

/// Every byte the workspace's data holds at rest: its SQLite files, or its Postgres rows.
async fn at_rest(s: &TestServer, ws: &str) -> Vec<u8> {
    match s.backend {
        Backend::Sqlite => {
            let dir = s.data_dir().join("tenants").join(ws);
            let mut bytes = Vec::new();
            for name in ["tenant.db", "tenant.db-wal"] {
                bytes.extend(std::fs::read(dir.join(name)).unwrap_or_default());
            }
            bytes
        }
        Backend::Postgres => {
            let pg = s.pg.as_ref().unwrap();
            let (client, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let mut bytes = Vec::new();
            for row in client.query("SELECT imap_password, smtp_password, settings::text FROM mail_channels", &[]).await.unwrap() {
                for column in 0..2 {
                    bytes.extend(row.get::<_, Option<Vec<u8>>>(column).unwrap_or_default());
                }
                bytes.extend(row.get::<_, String>(2).into_bytes());
            }
            for row in client.query("SELECT data::text FROM sync_actions", &[]).await.unwrap() {
                bytes.extend(row.get::<_, String>(0).into_bytes());
            }
            bytes
        }
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

both_backends! {
    async fn channels_keep_passwords_sealed_and_the_test_says_what_fails(b: Backend) {
        if !mailservers::available() {
            return;
        }
        let s = TestServer::start_with(b, relaxed_limits(), |c| c.mail.reach = Reach::Any).await;
        let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
        let admin = s.admin().await;
        let agent = s.user(&admin, "agent").await;
        let customer = s.user(&admin, "customer").await;
        let ws = s.workspace(&admin, "Mail").await;
        s.add_member(&admin, &ws, &agent, "agent").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        let channels = format!("/api/workspaces/{ws}/mail/channels");

        // Owners and admins only.
        for user in [&agent, &customer] {
            s.get(&channels, &user.token).await.problem(403);
            s.post(&channels, &user.token, channel_body(&imap, &smtp)).await.problem(403);
        }

        let created = s.post(&channels, &admin.token, channel_body(&imap, &smtp)).await;
        let channel = created.ok(201).clone();
        let id = channel["id"].as_str().unwrap().to_string();
        assert_eq!(channel["address"], "Support@Example.test");
        assert_eq!(channel["mailbox"], "INBOX");
        assert_eq!(channel["enabled"], true);
        assert_eq!(channel["imap"]["password_set"], true);
        assert_eq!(channel["smtp"]["password_set"], true);
        assert_eq!(channel["imap"]["user"], "support");
        let shown = serde_json::to_string(&channel).unwrap();
        assert!(!shown.contains("imap-secret") && !shown.contains("smtp-secret") && !shown.contains("\"password\""), "{shown}");
        assert_eq!(s.get(&channels, &admin.token).await.ok(200).as_array().unwrap().len(), 1);
        assert_eq!(s.get(&format!("{channels}/{id}"), &admin.token).await.ok(200), &channel);

        // One channel per address, whatever its case.
        let mut again = channel_body(&imap, &smtp);
        again["address"] = json!("support@example.TEST");
        s.post(&channels, &admin.token, again).await.problem(409);

        // Bad settings: 422 naming each field, nothing stored.
        let mut bad = channel_body(&imap, &smtp);
        bad["address"] = json!("not an address");
        bad["imap"]["user"] = json!("support\r\nA1 DELETE INBOX");
        bad["smtp"]["port"] = json!(0);
        bad["smtp"]["host"] = json!("relay.example/../x");
        let refused = s.post(&channels, &admin.token, bad).await;
        refused.problem(422);
        let fields: Vec<&str> = refused.body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        for field in ["address", "imap.user", "smtp.port", "smtp.host"] {
            assert!(fields.contains(&field), "{field} in {}", refused.body);
        }
        let mut unknown = channel_body(&imap, &smtp);
        unknown["imap"]["pasword"] = json!("typo");
        assert!(s.post(&channels, &admin.token, unknown).await.status / 100 == 4);
        assert_eq!(s.get(&channels, &admin.token).await.ok(200).as_array().unwrap().len(), 1);

        // Passwords are nowhere in clear: not at rest, not in the log.
        let rest = at_rest(&s, &ws).await;
        assert!(holds(&rest, "relay-user"), "the settings are stored");
        assert!(!holds(&rest, "imap-secret") && !holds(&rest, "smtp-secret"), "a password in clear at rest");
        let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0"), &admin.token).await.ok(200).clone();
        let kinds: Vec<&str> = delta["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"mail_channel.created"), "{kinds:?}");
        let customer_delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0"), &customer.token).await.ok(200).clone();
        assert!(!serde_json::to_string(&customer_delta).unwrap().contains("mail_channel"), "staff only");

        // The test logs in to both real servers, and neither reads nor sends anything.
        imap.deliver(&std::fs::read(crate::common::fixture("mail/customer-question.eml")).unwrap());
        let test = format!("{channels}/{id}/test");
        let report = s.post(&test, &admin.token, json!({})).await.ok(200).clone();
        assert_eq!(report["ok"], true, "{report}");
        let imap_detail = report["imap"]["detail"].as_str().unwrap();
        assert!(imap_detail.contains("logged in as \"support\" (NOT encrypted)"), "{imap_detail}");
        assert!(imap_detail.contains("INBOX holds 1 messages") && imap_detail.contains("IDLE supported"), "{imap_detail}");
        assert!(report["smtp"]["detail"].as_str().unwrap().contains("logged in as \"relay-user\""), "{report}");
        assert!(smtp.received().is_empty(), "a test sends nothing");
        let again = s.post(&test, &admin.token, json!({})).await.ok(200).clone();
        assert!(again["imap"]["detail"].as_str().unwrap().contains("INBOX holds 1 messages"), "nothing was taken: {again}");

        // A wrong password, a port nobody listens on: each failure in words.
        let patched = s
            .patch(&format!("{channels}/{id}"), &admin.token, json!({ "imap": { "password": "wrong" }, "smtp": { "port": closed_port() } }))
            .await;
        assert_eq!(patched.ok(200)["imap"]["password_set"], true);
        let report = s.post(&test, &admin.token, json!({})).await.ok(200).clone();
        assert_eq!((report["ok"].clone(), report["imap"]["ok"].clone(), report["smtp"]["ok"].clone()), (json!(false), json!(false), json!(false)));
        assert!(report["imap"]["detail"].as_str().unwrap().contains("refused the login as \"support\""), "{report}");
        assert!(report["smtp"]["detail"].as_str().unwrap().contains("cannot connect to 127.0.0.1 port"), "{report}");

        // Removing a password (null) says so, and the test names what is missing.
        let patched = s
            .patch(&format!("{channels}/{id}"), &admin.token, json!({ "imap": { "password": null }, "smtp": { "port": smtp.port } }))
            .await;
        assert_eq!(patched.ok(200)["imap"]["password_set"], false);
        assert_eq!(patched.body["smtp"]["password_set"], true, "the other password stays");
        let report = s.post(&test, &admin.token, json!({})).await.ok(200).clone();
        assert_eq!(report["imap"]["detail"], "no IMAP password is set", "{report}");
        assert_eq!(report["smtp"]["ok"], true, "{report}");

        // A relay that takes mail without a login: no user, no login.
        let relay = Smtp::open_relay().await;
        let patched = s.patch(&format!("{channels}/{id}"), &admin.token, json!({ "smtp": { "port": relay.port, "user": "" } })).await;
        assert_eq!(patched.ok(200)["smtp"]["user"], "");
        let report = s.post(&test, &admin.token, json!({})).await.ok(200).clone();
        assert!(report["smtp"]["detail"].as_str().unwrap().contains("no login (no user set)"), "{report}");

        s.delete(&format!("{channels}/{id}"), &admin.token).await.ok(204);
        s.get(&format!("{channels}/{id}"), &admin.token).await.problem(404);
        s.post(&test, &admin.token, json!({})).await.problem(404);
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// With the default settings, a channel's servers may not be on loopback or a private
/// network: the test says so instead of connecting.
#[tokio::test]
async fn private_addresses_are_refused_by_default() {
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Mail").await;
    let channels = format!("/api/workspaces/{ws}/mail/channels");
    let body = json!({
        "address": "help@example.test",
        "imap": { "host": "localhost", "port": 143, "security": "starttls", "user": "help", "password": "x" },
        "smtp": { "host": "10.0.0.7", "port": 587, "security": "starttls", "user": "help", "password": "y" },
    });
    let id = s.post(&channels, &admin.token, body).await.ok(201)["id"].as_str().unwrap().to_string();
    let report = s.post(&format!("{channels}/{id}/test"), &admin.token, json!({})).await.ok(200).clone();
    assert_eq!(report["ok"], false);
    for server in ["imap", "smtp"] {
        let detail = report[server]["detail"].as_str().unwrap();
        assert!(detail.contains("a private or reserved address that this server does not connect to"), "{detail}");
    }
}

/// Polls `check` until it gives a value, for at most `secs` seconds (a bounded wait).
pub(crate) async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

pub(crate) fn header<'m>(message: &'m str, name: &str) -> Option<&'m str> {
    let head = message.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n").find_map(|line| line.strip_prefix(&format!("{name}: ")))
}

both_backends! {
    async fn public_replies_go_out_once_threaded_and_retried_and_internal_notes_never(b: Backend) {
        if !mailservers::available() {
            return;
        }
        let s = TestServer::start_with(b, relaxed_limits(), |c| {
            c.mail.reach = Reach::Any;
            c.delivery.backoff = edgedesk::backoff::Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_millis(200));
            c.delivery.breaker.min_tries = 1000;
        })
        .await;
        let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
        let admin = s.admin().await;
        let agent = s.user(&admin, "agent").await;
        let customer = s.user(&admin, "customer").await;
        let ws = s.workspace(&admin, "Mail").await;
        s.add_member(&admin, &ws, &agent, "agent").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        s.post(&format!("/api/workspaces/{ws}/mail/channels"), &admin.token, channel_body(&imap, &smtp)).await.ok(201);
        let ticket = s.ticket(&customer, &ws, json!({ "title": "Printer on fire" })).await;
        let (id, number) = (ticket["id"].as_str().unwrap().to_string(), ticket["number"].as_i64().unwrap());
        let comments = format!("/api/workspaces/{ws}/tickets/{id}/comments");
        let mail_of = format!("/api/workspaces/{ws}/tickets/{id}/mail");

        // The customer's own reply and an internal note send nothing; the agent's reply does.
        s.post(&comments, &customer.token, json!({ "body": "Still burning." })).await.ok(201);
        s.post(&comments, &agent.token, json!({ "body": "Internal: call facilities", "internal": true })).await.ok(201);
        s.post(&comments, &agent.token, json!({ "body": "We are on our way <with> an extinguisher.\nStay calm." })).await.ok(201);
        let first = eventually(20, "the first reply's mail", || async {
            let received = smtp.received();
            (received.len() == 1).then(|| received[0].clone())
        })
        .await;
        let (envelope, raw) = first;
        assert_eq!(envelope["from"], "Support@Example.test");
        assert_eq!(envelope["to"], json!([customer.email]));
        let raw = String::from_utf8(raw).unwrap();
        assert_eq!(header(&raw, "Subject"), Some(format!("Re: [#{number}] Printer on fire").as_str()), "{raw}");
        let first_id = header(&raw, "Message-ID").unwrap().to_string();
        assert!(first_id.starts_with('<') && first_id.ends_with("@Example.test>"), "{first_id}");
        assert!(header(&raw, "In-Reply-To").is_none(), "the first mail of the thread");
        assert!(raw.contains("Content-Type: text/plain") && raw.contains("Content-Type: text/html"), "{raw}");
        assert!(raw.contains("&lt;with&gt;"), "the HTML part escapes the reply: {raw}");
        assert!(!raw.contains("call facilities"), "never the internal note");
        let mails = eventually(10, "the mail's row to say sent", || async {
            let mails = s.get(&mail_of, &agent.token).await.ok(200).clone();
            (mails[0]["status"] == "sent").then_some(mails)
        })
        .await;
        assert_eq!(mails.as_array().unwrap().len(), 1, "one mail for one public staff reply: {mails}");
        assert_eq!(format!("<{}>", mails[0]["message_id"].as_str().unwrap()), first_id);
        assert!(mails[0]["relay_answer"].as_str().unwrap().starts_with("250"), "{mails}");
        assert_eq!(mails[0]["attempts"], 1);
        s.get(&mail_of, &customer.token).await.problem(403);

        // A relay that says "later": retried with backoff, then sent, the same message.
        smtp.steer("451");
        s.post(&comments, &agent.token, json!({ "body": "Second answer." })).await.ok(201);
        let retrying = eventually(20, "a retry after a 451", || async {
            let mails = s.get(&mail_of, &agent.token).await.ok(200).clone();
            let second = mails.as_array().unwrap().get(1).cloned()?;
            (second["status"] == "retrying" && second["attempts"].as_u64() >= Some(2)).then_some(second)
        })
        .await;
        assert!(retrying["relay_answer"].as_str().unwrap().contains("451"), "{retrying}");
        assert!(retrying["next_attempt_at"].is_string() || retrying["next_attempt_at"].is_number(), "{retrying}");
        smtp.steer("");
        let (_, second) = eventually(20, "the second mail once the relay recovers", || async {
            let received = smtp.received();
            (received.len() == 2).then(|| received[1].clone())
        })
        .await;
        let second = String::from_utf8(second).unwrap();
        assert_eq!(header(&second, "In-Reply-To"), Some(first_id.as_str()), "threaded under the first");
        assert_eq!(header(&second, "References"), Some(first_id.as_str()));

        // A permanent refusal: failed at once, with the relay's words.
        smtp.steer("550");
        s.post(&comments, &agent.token, json!({ "body": "Third answer." })).await.ok(201);
        let failed = eventually(20, "a failure after a 550", || async {
            let mails = s.get(&mail_of, &agent.token).await.ok(200).clone();
            let third = mails.as_array().unwrap().get(2).cloned()?;
            (third["status"] == "failed").then_some(third)
        })
        .await;
        assert!(failed["relay_answer"].as_str().unwrap().contains("550"), "{failed}");
        assert_eq!(failed["attempts"], 1);
        assert_eq!(smtp.received().len(), 2);

        // Staff see the mail's life in the log; the customer does not.
        let delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0&limit=1000"), &agent.token).await.ok(200).clone();
        let kinds: Vec<&str> = delta["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        for kind in ["mail.queued", "mail.sending", "mail.sent", "mail.retrying", "mail.failed"] {
            assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
        }
        let customer_delta = s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0&limit=1000"), &customer.token).await.ok(200).clone();
        assert!(!serde_json::to_string(&customer_delta).unwrap().contains("\"mail."), "staff only");
        let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        for line in ["edgedesk_mail_workers{state=\"running\"} 2", "edgedesk_mail_workers{state=\"stopped\"} 0",
            "edgedesk_mail_deliveries_total{outcome=\"sent\"} 2", "edgedesk_mail_deliveries_total{outcome=\"failed\"} 1"] {
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }
    }
}

/// A workspace with a mail channel on `smtp` and a ticket the customer opened; returns
/// (agent token, comments path, mail path).
async fn mail_desk(s: &TestServer, imap: &Imap, smtp: &Smtp) -> (String, String, String) {
    let admin = s.admin().await;
    let agent = s.user(&admin, "agent").await;
    let customer = s.user(&admin, "customer").await;
    let ws = s.workspace(&admin, "Mail").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &customer, "requester").await;
    s.post(&format!("/api/workspaces/{ws}/mail/channels"), &admin.token, channel_body(imap, smtp)).await.ok(201);
    let ticket = s.ticket(&customer, &ws, json!({ "title": "Printer on fire" })).await;
    let id = ticket["id"].as_str().unwrap();
    (agent.token, format!("/api/workspaces/{ws}/tickets/{id}/comments"), format!("/api/workspaces/{ws}/tickets/{id}/mail"))
}

/// A SQLite server whose mail may go to loopback servers and is retried within
/// milliseconds, with `tweak` on top, and its [`mail_desk`] on real servers:
/// (server, IMAP, SMTP, agent token, comments path, mail path).
async fn fast_mail_desk(tweak: impl FnOnce(&mut edgedesk::config::Config)) -> (TestServer, Imap, Smtp, String, String, String) {
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| {
        c.mail.reach = Reach::Any;
        c.delivery.backoff = edgedesk::backoff::Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_millis(30));
        tweak(c);
    })
    .await;
    let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
    let (agent, comments, mail_of) = mail_desk(&s, &imap, &smtp).await;
    (s, imap, smtp, agent, comments, mail_of)
}

#[tokio::test]
async fn a_failing_relay_is_held_back_by_its_breaker_and_probed_until_it_recovers() {
    if !mailservers::available() {
        return;
    }
    let (s, _imap, smtp, agent, comments, mail_of) = fast_mail_desk(|c| {
        c.delivery.breaker = edgedesk::mail::breaker::BreakerConfig {
            window: std::time::Duration::from_secs(60),
            min_tries: 3,
            failure_rate: 0.5,
            open_for: std::time::Duration::from_millis(1500),
        };
    })
    .await;
    smtp.steer("451");
    s.post(&comments, &agent, json!({ "body": "An answer the relay will not take yet." })).await.ok(201);
    // Three failed tries open the breaker; then the mail is held back, not tried.
    let held = eventually(10, "the breaker to hold the mail back", || async {
        let mail = s.get(&mail_of, &agent).await.ok(200)[0].clone();
        mail["relay_answer"].as_str().is_some_and(|a| a.starts_with("held back")).then_some(mail)
    })
    .await;
    assert_eq!(held["status"], "retrying");
    assert_eq!(held["attempts"], 3, "held-back turns count no attempt: {held}");
    assert_eq!(smtp.attempts(), 3);
    let metrics = || async { s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap() };
    let breaker = |state: &str| format!("edgedesk_mail_breaker{{relay=\"127.0.0.1:{}\",state=\"{state}\"}} 1", smtp.port);
    let shown = metrics().await;
    assert!(shown.contains(&breaker("open")) && shown.contains("edgedesk_mail_breaker_opened_total 1"), "{shown}");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(smtp.attempts(), 3, "nothing reaches the relay while the breaker is open");
    // Half-open after the open period: one probe, still refused, so open again.
    eventually(10, "the first probe", || async { (smtp.attempts() == 4).then_some(()) }).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(smtp.attempts(), 4, "one probe, then open again");
    // The relay recovers: the next probe delivers the mail, once.
    smtp.steer("");
    let mail = eventually(10, "delivery after the relay recovered", || async {
        let mail = s.get(&mail_of, &agent).await.ok(200)[0].clone();
        (mail["status"] == "sent").then_some(mail)
    })
    .await;
    assert_eq!(mail["attempts"], 5);
    assert_eq!(smtp.received().len(), 1);
    let shown = metrics().await;
    assert!(shown.contains(&breaker("closed")) && shown.contains("edgedesk_mail_breaker_opened_total 1"), "recovered: {shown}");
}

#[tokio::test]
async fn a_mail_whose_worker_stopped_answering_is_claimed_again_when_its_lease_ends() {
    if !mailservers::available() {
        return;
    }
    let (s, _imap, smtp, agent, comments, mail_of) = fast_mail_desk(|c| {
        c.mail.timeout = std::time::Duration::from_secs(5);
        c.delivery.lease = std::time::Duration::from_millis(800);
    })
    .await;
    // The first worker's DATA hangs (a relay, or the worker, gone quiet mid-send).
    smtp.steer("hang");
    s.post(&comments, &agent, json!({ "body": "Sent by whoever holds the lease." })).await.ok(201);
    eventually(10, "the first try to reach the relay", || async { (smtp.attempts() == 1).then_some(()) }).await;
    smtp.steer("");
    // Its lease ends long before its timeout: another worker claims the mail and sends it.
    let (_, raw) = eventually(10, "the mail sent by the second claim", || async { smtp.received().first().cloned() }).await;
    let mail = eventually(10, "the row to say sent", || async {
        let mail = s.get(&mail_of, &agent).await.ok(200)[0].clone();
        (mail["status"] == "sent").then_some(mail)
    })
    .await;
    assert!(String::from_utf8(raw).unwrap().contains(&format!("Message-ID: <{}>", mail["message_id"].as_str().unwrap())));
    // The first worker's late answer does not overwrite what the second recorded.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let after = s.get(&mail_of, &agent).await.ok(200)[0].clone();
    assert_eq!(after["status"], "sent", "{after}");
    assert_eq!(after["relay_answer"], mail["relay_answer"]);
}

#[tokio::test]
async fn two_instances_send_every_mail_once() {
    if !mailservers::available() || !Backend::postgres_available() {
        return;
    }
    let tweak = |c: &mut edgedesk::config::Config| {
        c.mail.reach = Reach::Any;
        c.delivery.workers = 3;
        c.delivery.batch = 2;
    };
    let one = TestServer::start_with(Backend::Postgres, relaxed_limits(), tweak).await;
    let key = one.data_dir().join("master.key");
    let two = TestServer::start_on_with(tempfile::tempdir().unwrap(), one.pg.clone(), |c| {
        tweak(c);
        c.master_key_file = key;
    })
    .await;
    let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
    let (agent, comments, mail_of) = mail_desk(&one, &imap, &smtp).await;
    let replies = 200;
    // Eight at a time, half through each instance.
    use futures::StreamExt;
    let posts = futures::stream::iter(0..replies).map(|i| {
        let (server, comments, agent) = (if i % 2 == 0 { &one } else { &two }, &comments, &agent);
        async move { server.post(comments, agent, json!({ "body": format!("Answer {i}") })).await.ok(201).clone() }
    });
    posts.buffer_unordered(8).collect::<Vec<_>>().await;
    eventually(60, "every mail sent", || async {
        let mails = two.get(&mail_of, &agent).await.ok(200).clone();
        let sent = mails.as_array().unwrap().iter().filter(|m| m["status"] == "sent").count();
        (sent == replies).then_some(())
    })
    .await;
    let received = smtp.received();
    let mut ids: Vec<String> =
        received.iter().map(|(_, raw)| header(&String::from_utf8_lossy(raw), "Message-ID").unwrap().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((received.len(), ids.len(), smtp.attempts()), (replies, replies, replies), "each mail handed over exactly once");
    // Both instances' workers took part.
    for server in [&one, &two] {
        let metrics = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
        let sent: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("edgedesk_mail_deliveries_total{outcome=\"sent\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(sent > 0, "an instance sent nothing:\n{metrics}");
        eprintln!("{} sent {sent} of {replies}", server.base);
    }
}

both_backends! {
    async fn notifications_are_mailed_to_staff_who_want_them_and_never_double_a_reply(b: Backend) {
        if !mailservers::available() {
            return;
        }
        let s = TestServer::start_with(b, relaxed_limits(), |c| c.mail.reach = Reach::Any).await;
        let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
        let admin = s.admin().await;
        let agent = s.user(&admin, "agent").await;
        let customer = s.user(&admin, "customer").await;
        let ws = s.workspace(&admin, "Mail").await;
        s.add_member(&admin, &ws, &agent, "agent").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        s.post(&format!("/api/workspaces/{ws}/mail/channels"), &admin.token, channel_body(&imap, &smtp)).await.ok(201);
        let ticket = s.ticket(&customer, &ws, json!({ "title": "Printer on fire" })).await;
        let (id, number) = (ticket["id"].as_str().unwrap().to_string(), ticket["number"].as_i64().unwrap());
        // The agent wants assignments by mail (the default), but not replies.
        let prefs = json!({ "preferences": [{ "kind": "reply", "in_app": true, "email": false }] });
        s.call(reqwest::Method::PUT, "/api/me/notification-preferences", Some(&agent.token), Some(prefs)).await.ok(200);

        s.patch(&format!("/api/workspaces/{ws}/tickets/{id}"), &admin.token, json!({ "assignee_id": agent.id })).await.ok(200);
        let (envelope, raw) = eventually(20, "the assignment's mail", || async { smtp.received().first().cloned() }).await;
        assert_eq!(envelope["to"], json!([agent.email]));
        let raw = String::from_utf8(raw).unwrap();
        assert_eq!(header(&raw, "Subject"), Some(format!("[#{number}] Assigned to you: Printer on fire").as_str()), "{raw}");
        assert_eq!(header(&raw, "Auto-Submitted"), Some("auto-generated"), "machine-made mail says so");
        assert!(header(&raw, "In-Reply-To").is_none());

        // The customer's reply notifies the agent in the app only; the agent's answer mails
        // the customer once: the reply itself, no notification mail beside it.
        let comments = format!("/api/workspaces/{ws}/tickets/{id}/comments");
        s.post(&comments, &customer.token, json!({ "body": "Any news?" })).await.ok(201);
        s.post(&comments, &agent.token, json!({ "body": "On our way." })).await.ok(201);
        let (envelope, raw) = eventually(20, "the reply's mail", || async { smtp.received().get(1).cloned() }).await;
        assert_eq!(envelope["to"], json!([customer.email]));
        let raw = String::from_utf8(raw).unwrap();
        assert!(header(&raw, "Auto-Submitted").is_none(), "a person's reply is not auto-submitted");
        assert!(header(&raw, "In-Reply-To").is_none(), "notification mails are not on the customer's thread: {raw}");
        s.consumers_caught_up(&ws).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let received = smtp.received();
        assert_eq!(received.len(), 2, "{:?}", received.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>());
        let in_app = s.get(&format!("/api/workspaces/{ws}/notifications"), &agent.token).await.ok(200).clone();
        assert!(serde_json::to_string(&in_app).unwrap().contains("\"reply\""), "the reply notification is in the app: {in_app}");
    }
}

#[tokio::test]
async fn a_relay_that_hangs_times_the_worker_out_and_the_mail_is_retried() {
    if !mailservers::available() {
        return;
    }
    let (s, _imap, smtp, agent, comments, mail_of) = fast_mail_desk(|c| {
        c.mail.timeout = std::time::Duration::from_secs(1);
    })
    .await;
    smtp.steer("hang");
    s.post(&comments, &agent, json!({ "body": "Patience." })).await.ok(201);
    // The retry follows within milliseconds and hangs for a second again, so the row is mostly
    // `sending`: the timed-out try shows in the answer it left, which stays until the next settles.
    let retrying = eventually(10, "the timed-out try to be recorded", || async {
        let mail = s.get(&mail_of, &agent).await.ok(200)[0].clone();
        mail["relay_answer"].as_str().is_some_and(|a| a.contains("no answer within 1 s")).then_some(mail)
    })
    .await;
    assert!(["retrying", "sending"].contains(&retrying["status"].as_str().unwrap()), "{retrying}");
    assert!(retrying["attempts"].as_u64().unwrap() >= 1, "{retrying}");
    smtp.steer("");
    let sent = eventually(10, "the retry to go through", || async {
        let mail = s.get(&mail_of, &agent).await.ok(200)[0].clone();
        (mail["status"] == "sent").then_some(mail)
    })
    .await;
    assert!(sent["attempts"].as_u64().unwrap() >= 2, "{sent}");
}

both_backends! {
    async fn a_reply_carries_the_files_put_on_it_in_its_mail(b: Backend) {
        if !mailservers::available() {
            return;
        }
        let s = TestServer::start_with(b, relaxed_limits(), |c| c.mail.reach = Reach::Any).await;
        let (imap, smtp) = (Imap::start().await, Smtp::with_login("relay-user", "smtp-secret").await);
        let (agent, comments, _) = mail_desk(&s, &imap, &smtp).await;
        let files = comments.replace("/comments", "/attachments");
        let shot = crate::attachments::png(5_000);
        let up = crate::attachments::upload(&s, &agent, &format!("{files}?name=screen.png"), "image/png", shot.clone()).await;
        assert_eq!(up.status(), 201);
        let id = up.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

        // Refused, and nothing written: on an internal note, too many, someone else's file.
        let refused = s.post(&comments, &agent, json!({ "body": "x", "internal": true, "attachments": [id] })).await;
        assert!(refused.problem(409).body.to_string().contains("attachments"), "{}", refused.body);
        let many: Vec<String> = (0..21).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        s.post(&comments, &agent, json!({ "body": "x", "attachments": many })).await.problem(422);
        let admin = s.login("admin@example.com", crate::common::PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
        let theirs = s.post(&comments, &admin, json!({ "body": "x", "attachments": [id] })).await;
        assert!(theirs.problem(409).body.to_string().contains("is not a file you uploaded"), "{}", theirs.body);
        assert_eq!(s.get(&comments, &agent).await.ok(200)["items"].as_array().unwrap().len(), 0, "no refused reply was written");

        let reply =
            s.post(&comments, &agent, json!({ "body": "The screenshot you asked for.", "attachments": [id, id] })).await.ok(201).clone();
        let listed = s.get(&files, &agent).await.ok(200).clone();
        assert_eq!(listed[0]["comment_id"], reply["id"], "the file is on the reply now: {listed}");
        // Once on a reply, it cannot be put on another.
        s.post(&comments, &agent, json!({ "body": "again", "attachments": [id] })).await.problem(409);
        let sent = eventually(10, "the reply's mail", || async { smtp.received().into_iter().next() }).await;
        let message = mail_parser::MessageParser::default().parse(&sent.1[..]).unwrap();
        assert_eq!(message.attachment_count(), 1, "{}", String::from_utf8_lossy(&sent.1));
        let attached = message.attachment(0).unwrap();
        assert_eq!(mail_parser::MimeHeaders::attachment_name(attached), Some("screen.png"));
        assert!(attached.contents() == &shot[..], "the file arrives byte for byte");
        assert!(message.body_text(0).unwrap().contains("The screenshot you asked for."));
    }
}
