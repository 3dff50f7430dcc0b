//! Mail channels over HTTP, on both backends: owners and admins only; passwords go in and
//! never come out (not in answers, not in the log, not in clear at rest); bad settings are
//! 422s naming the field; one channel per address; and the test route logs in to a real
//! dovecot and a real aiosmtpd, reporting in words what fails (a wrong password, a port
//! nobody listens on, a private address the server may not reach).

use edgedesk::http::outbound::Reach;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer, both_backends, relaxed_limits};
use crate::mailservers::{self, Imap, Smtp};

fn channel_body(imap: &Imap, smtp: &Smtp) -> Value {
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
