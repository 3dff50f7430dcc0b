//! The web console in a real browser (headless Chromium over WebDriver, see `browser`),
//! against the real server: what a newcomer, an agent and a requester do there.

use serde_json::json;

use crate::browser::{Browser, Driver};
use crate::common::*;

/// Fails when the screen shows an error message (`role=alert`).
async fn no_error_shown(b: &Browser, screen: &str) {
    let shown = b.eval("return [...document.querySelectorAll('[role=alert]')].map(e => e.innerText);").await;
    assert_eq!(shown, json!([]), "{screen} shows an error");
}

/// Fails on any console error the page logged (a CSP violation, a script error).
async fn no_console_errors(b: &Browser, screen: &str) {
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "{screen}: the console logged errors: {errors:#?}");
}

#[tokio::test]
async fn first_run_setup_sign_in_workspace_and_members_through_the_ui() {
    let Some(driver) = Driver::start().await else { return };
    let s = TestServer::start(Backend::Sqlite).await;
    let b = driver.browser(&s.base).await;

    b.goto("/").await;
    b.wait("#setup-name").await;
    b.axe("first-run setup").await;
    b.screenshot("setup").await;
    b.fill("#setup-name", "Ada Admin").await;
    b.fill("#setup-email", "ada@example.com").await;
    b.fill("#setup-password", PASSWORD).await;
    b.click("form button[type=submit]").await;

    // Signed in at once, and asked for a first workspace.
    b.wait("#ws-name").await;
    b.axe("workspaces").await;
    b.fill("#ws-name", "Support").await;
    b.click("form button[type=submit]").await;
    b.wait("#queue-title").await;
    b.until_text("No tickets here yet.").await;
    b.axe("empty queue").await;
    let ws = b.eval("return location.pathname.split('/')[2];").await.as_str().expect("workspace in the URL").to_string();

    // Members: an agent and a requester who have no account yet.
    b.click("a[href$='/settings']").await;
    b.wait("#m-email").await;
    b.axe("settings: members").await;
    for (email, name, role) in [("grace@example.com", "Grace Agent", "agent"), ("carl@example.com", "Carl Customer", "requester")] {
        b.fill("#m-email", email).await;
        b.select("#m-role", role).await;
        b.click("form button[type=submit]").await;
        b.wait("#m-name").await;
        b.fill("#m-name", name).await;
        b.fill("#m-password", PASSWORD).await;
        b.click("form button[type=submit]").await;
        b.until_text(&format!("{email} is now")).await;
    }
    b.screenshot("settings-members").await;
    no_console_errors(&b, "setup to members").await;

    // The server holds what the screens said.
    let admin = s.login("ada@example.com", PASSWORD).await.ok(200)["token"].as_str().expect("token").to_string();
    let members = s.get(&format!("/api/workspaces/{ws}/members"), &admin).await.ok(200).clone();
    let role_of = |email: &str| members.as_array().expect("members").iter().find(|m| m["email"] == email).map(|m| m["role"].clone());
    assert_eq!(role_of("ada@example.com"), Some(json!("owner")));
    assert_eq!(role_of("grace@example.com"), Some(json!("agent")));
    assert_eq!(role_of("carl@example.com"), Some(json!("requester")));

    // Sign out, and the agent signs in to the workspace's queue.
    b.click("header nav button").await;
    b.wait("#login-email").await;
    b.axe("sign-in").await;
    b.sign_in("grace@example.com", PASSWORD).await;
    b.wait("#queue-title").await;
    assert_eq!(b.eval("return location.pathname;").await, json!(format!("/w/{ws}")));
    no_console_errors(&b, "sign-in").await;
    b.close().await;
    s.stop().await;
}

#[tokio::test]
async fn a_requesters_portal_shows_and_receives_only_their_own_public_conversation() {
    let Some(driver) = Driver::start().await else { return };
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let carl = s.user(&admin, "carl").await;
    let dora = s.user(&admin, "dora").await;
    s.add_member(&admin, &ws, &carl, "requester").await;
    s.add_member(&admin, &ws, &dora, "requester").await;
    let mine = s.ticket(&carl, &ws, json!({ "title": "My invoice is wrong" })).await;
    let id = mine["id"].as_str().expect("id").to_string();
    s.ticket(&dora, &ws, json!({ "title": "Dora's private trouble" })).await;
    let comments = format!("/api/workspaces/{ws}/tickets/{id}/comments");
    s.post(&comments, &admin.token, json!({ "body": "We are looking into your invoice." })).await.ok(201);
    s.post(&comments, &admin.token, json!({ "body": "SECRET-INTERNAL-7f3a customer disputes often", "internal": true })).await.ok(201);

    let b = driver.browser(&s.base).await;
    b.sign_in(&carl.email, PASSWORD).await;
    b.until_text("My invoice is wrong").await;
    b.until_text("Your requests").await;
    b.axe("portal queue").await;
    b.click("ol.list a").await;
    b.until_text("We are looking into your invoice.").await;
    no_error_shown(&b, "portal ticket").await;
    b.axe("portal ticket").await;
    b.screenshot("portal-ticket").await;
    b.color_scheme("dark").await;
    b.axe("portal ticket (dark)").await;
    b.screenshot("portal-ticket-dark").await;
    b.color_scheme("light").await;

    // While the ticket is open, staff add another internal note and a public reply.
    s.post(&comments, &admin.token, json!({ "body": "SECRET-INTERNAL-9b21 refund approved internally", "internal": true })).await.ok(201);
    s.post(&comments, &admin.token, json!({ "body": "Fixed: a corrected invoice is on its way." })).await.ok(201);
    b.until_text("a corrected invoice is on its way").await;

    let page = b.text().await;
    assert!(!page.contains("Dora"), "another requester's ticket is not shown: {page}");
    assert!(!page.contains("SECRET-INTERNAL") && !page.contains("Internal note"), "no internal note is rendered: {page}");
    // The network log: every response the page got (bodies included) and every live event.
    let (exchanges, messages) = b.network().await;
    let api: Vec<_> = exchanges.iter().filter(|e| e.url.contains("/api/")).collect();
    assert!(api.iter().any(|e| e.url.contains(&format!("/tickets/{id}/comments"))), "the page read the conversation: {api:#?}");
    assert!(!messages.is_empty(), "the live stream delivered events");
    for e in &api {
        assert!(
            !e.body.contains("SECRET-INTERNAL") && !e.body.contains("Dora's private"),
            "{} carried what the requester may not see: {}",
            e.url,
            e.body
        );
        assert!(!e.url.contains("/audit") && !e.url.contains("/mail") && !e.url.contains("/members"), "a staff-only request: {}", e.url);
    }
    for m in &messages {
        assert!(!m.contains("SECRET-INTERNAL") && !m.contains("Dora's private"), "a live event carried it: {m}");
    }
    no_console_errors(&b, "portal").await;

    // The requester opens a new ticket from the portal and replies on it.
    b.goto(&format!("/w/{ws}")).await;
    b.click("section .head button").await;
    b.fill("#nt-title", "Second invoice also wrong").await;
    b.fill("#nt-body", "The March invoice has the same problem.").await;
    b.click("dialog form button[type=submit]").await;
    b.until_text("The March invoice has the same problem.").await;
    b.fill("#reply-body", "Attaching nothing, just adding: it is urgent.").await;
    b.click("form.reply button[type=submit]").await;
    b.until_text("it is urgent.").await;
    let created = b.eval("return location.pathname.split('/')[4];").await;
    let created = created.as_str().expect("a ticket id in the URL");
    let t = s.get(&format!("/api/workspaces/{ws}/tickets/{created}"), &admin.token).await.ok(200).clone();
    assert_eq!((t["title"].as_str(), t["requester_id"].as_str()), (Some("Second invoice also wrong"), Some(carl.id.as_str())));
    let replies = s.get(&format!("/api/workspaces/{ws}/tickets/{created}/comments"), &admin.token).await.ok(200).clone();
    assert_eq!(replies["items"].as_array().map(Vec::len), Some(2), "{replies}");
    no_console_errors(&b, "portal: a new ticket").await;
    b.close().await;
    s.stop().await;
}

/// The server for the first browser, and the base URL for the second: on Postgres another
/// instance on the same database (so what one browser does reaches the other through the
/// change feed), on SQLite the same server.
async fn two_doors(b: Backend) -> (TestServer, Option<TestServer>) {
    match b {
        Backend::Sqlite => (TestServer::start(b).await, None),
        Backend::Postgres => {
            let one = TestServer::start(b).await;
            let two = one.second_instance().await;
            (one, Some(two))
        }
    }
}

struct Team {
    admin: User,
    agent: User,
    customer: User,
    ws: String,
}

async fn team(s: &TestServer) -> Team {
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Support").await;
    let agent = s.user(&admin, "grace").await;
    let customer = s.user(&admin, "carl").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &customer, "requester").await;
    Team { admin, agent, customer, ws }
}

both_backends! {
    async fn the_queue_and_an_open_ticket_update_live_across_browsers(b: Backend) {
        let Some(driver) = Driver::start().await else { return };
        let (s, second) = two_doors(b).await;
        let other = second.as_ref().unwrap_or(&s);
        let Team { admin, agent, customer, ws } = team(&s).await;

        let ada = driver.browser(&s.base).await;
        ada.sign_in(&admin.email, PASSWORD).await;
        ada.goto(&format!("/w/{ws}")).await;
        ada.until_text("No tickets here yet.").await;

        // Someone else writes through the API (on the other instance): the open queue shows it.
        let t = other.ticket(&customer, &ws, json!({ "title": "Printer on fire" })).await;
        let id = t["id"].as_str().expect("id").to_string();
        ada.until_text("Printer on fire").await;
        other.patch(&format!("/api/workspaces/{ws}/tickets/{id}"), &agent.token, json!({ "priority": "urgent" })).await.ok(200);
        ada.until("document.querySelector('ol.list .badge.urgent')", "the new priority shows in the queue").await;
        ada.screenshot("queue").await;

        // Both open the ticket; a reply typed in one browser shows in the other.
        let grace = driver.browser(&other.base).await;
        grace.sign_in(&agent.email, PASSWORD).await;
        grace.goto(&format!("/w/{ws}/t/{id}")).await;
        grace.wait("#reply-body").await;
        ada.click("ol.list a").await;
        ada.wait("#reply-body").await;
        // A new page: its title, and focus at its start.
        ada.until("document.activeElement?.id === 'main' && document.title.startsWith('Ticket · Support')", "focus and title move with the page").await;
        grace.fill("#reply-body", "Have you tried turning it off and on again?").await;
        grace.click("form.reply button[type=submit]").await;
        ada.until_text("Have you tried turning it off and on again?").await;
        // An internal note is shown as one.
        grace.click("form.reply input[type=checkbox]").await;
        grace.fill("#reply-body", "Customer sounds upset, be gentle").await;
        grace.click("form.reply button[type=submit]").await;
        ada.until("[...document.querySelectorAll('li.comment.internal')].some(c => c.innerText.includes('be gentle'))", "the note, marked internal").await;
        ada.axe("ticket").await;
        no_console_errors(&ada, "live ticket").await;
        no_console_errors(&grace, "live ticket (second browser)").await;
        ada.close().await;
        grace.close().await;
        if let Some(second) = second {
            second.stop().await;
        }
        s.stop().await;
    }
}

/// The text of the open note editor, without the other editors' carets (their name labels).
const NOTE_TEXT: &str = "(() => { const e = document.querySelector('[data-testid=note-editor] .ProseMirror'); if (!e) return ''; \
     const c = e.cloneNode(true); c.querySelectorAll('.collaboration-carets__caret').forEach(x => x.remove()); \
     return [...c.querySelectorAll('p')].map(p => p.textContent).join('\\n'); })()";

async fn open_note(b: &Browser, ws: &str, id: &str) {
    b.goto(&format!("/w/{ws}/t/{id}")).await;
    b.click("section.note button").await;
    b.wait("[data-testid=note-editor] .ProseMirror").await;
    b.until("document.querySelector('[data-testid=note-status]').innerText.includes('Saved and shared')", "the note is synced").await;
}

async fn type_in_note(b: &Browser, text: &str) {
    let editor = b.wait("[data-testid=note-editor] .ProseMirror").await;
    editor.click().await.expect("focuses the note");
    // To the end of the note, then type.
    b.eval("const s = getSelection(); s.selectAllChildren(document.querySelector('.ProseMirror')); s.collapseToEnd(); return true;").await;
    editor.send_keys(text).await.expect("types into the note");
}

both_backends! {
    async fn two_browsers_edit_the_note_together_and_it_survives_a_restart(b: Backend) {
        let Some(driver) = Driver::start().await else { return };
        let (s, second) = two_doors(b).await;
        let other_base = second.as_ref().map_or(s.base.clone(), |o| o.base.clone());
        let Team { admin, agent, customer, ws } = team(&s).await;
        let t = s.ticket(&customer, &ws, json!({ "title": "Billing export broken" })).await;
        let id = t["id"].as_str().expect("id").to_string();

        let ada = driver.browser(&s.base).await;
        ada.sign_in(&admin.email, PASSWORD).await;
        let grace = driver.browser(&other_base).await;
        grace.sign_in(&agent.email, PASSWORD).await;
        // The editor's code arrives with the note, not before.
        ada.goto(&format!("/w/{ws}/t/{id}")).await;
        ada.wait("section.note button").await;
        let editor_bytes = |sizes: Vec<(String, String, u64)>| sizes.iter().filter(|(url, _, _)| url.contains("NoteEditor")).count();
        assert_eq!(editor_bytes(ada.transfer_sizes().await), 0, "no note editor before the note opens");
        open_note(&ada, &ws, &id).await;
        assert!(editor_bytes(ada.transfer_sizes().await) > 0, "the note editor's chunk arrives with the note");
        open_note(&grace, &ws, &id).await;

        type_in_note(&ada, "Steps from Ada. ").await;
        grace.until(&format!("{NOTE_TEXT}.includes('Steps from Ada.')"), "Ada's words reach Grace").await;
        type_in_note(&grace, "Grace checked the export job.").await;
        for (who, browser) in [("Ada", &ada), ("Grace", &grace)] {
            browser
                .until(&format!("{NOTE_TEXT}.includes('Steps from Ada.') && {NOTE_TEXT}.includes('Grace checked the export job.')"), &format!("{who} has both"))
                .await;
        }
        let ada_text = ada.eval(&format!("return {NOTE_TEXT};")).await;
        grace.until(&format!("{NOTE_TEXT} === {ada_text}"), "both end with the same text").await;
        // Each sees the other (on two instances too): the caret with their name, and who is here.
        ada.until("[...document.querySelectorAll('.collaboration-carets__label')].some(l => l.innerText.includes('grace'))", "Grace's caret in Ada's editor").await;
        ada.until("document.querySelector('[aria-label=\"Also editing\"]').innerText.includes('grace')", "Grace listed as editing").await;
        grace.until("[...document.querySelectorAll('.collaboration-carets__label')].some(l => l.innerText.includes('Admin'))", "Ada's caret in Grace's editor").await;
        grace.until("document.querySelector('[aria-label=\"Also editing\"]').innerText.includes('Admin')", "Ada listed as editing").await;
        // Drawn, not only present: a box on the page with the colour of its editor.
        ada.until(
            "(() => { const l = [...document.querySelectorAll('.collaboration-carets__label')].find(l => l.innerText.includes('grace'));
               if (!l) return false; const r = l.getBoundingClientRect();
               return r.width > 0 && r.height > 0 && getComputedStyle(l).backgroundColor !== 'rgba(0, 0, 0, 0)'; })()",
            "Grace's caret label is drawn",
        )
        .await;
        ada.screenshot("ticket-with-note").await;
        ada.color_scheme("dark").await;
        ada.screenshot("ticket-with-note-dark").await;
        ada.axe("ticket with the note open").await;
        no_console_errors(&ada, "note").await;

        // The server restarts where it was: the text is still the note's, after a reload too.
        let s = s.restart_in_place().await;
        ada.goto(&format!("/w/{ws}")).await;
        open_note(&ada, &ws, &id).await;
        ada.until(&format!("{NOTE_TEXT} === {ada_text}"), "the note after the restart").await;
        let stored = s.get(&format!("/api/workspaces/{ws}/tickets/{id}/note"), &admin.token).await;
        assert!(stored.body.to_string().contains("Grace checked the export job."), "the server's copy: {}", stored.body);
        ada.close().await;
        grace.close().await;
        if let Some(second) = second {
            second.stop().await;
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn attachments_upload_with_progress_and_download_intact() {
    let Some(driver) = Driver::start().await else { return };
    let s = TestServer::start(Backend::Sqlite).await;
    let Team { admin, customer, ws, .. } = team(&s).await;
    let t = s.ticket(&customer, &ws, json!({ "title": "Logs attached" })).await;
    let id = t["id"].as_str().expect("id").to_string();
    // 3 MB that no compressor shrinks, as a file on disk the browser picks.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("server-log.bin");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &bytes).expect("file written");
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));

    let b = driver.browser(&s.base).await;
    b.sign_in(&admin.email, PASSWORD).await;
    b.goto(&format!("/w/{ws}/t/{id}")).await;
    b.wait("#reply-body").await;
    // Every value the upload's progress bar shows.
    b.eval(
        "window.__progress = []; new MutationObserver(() => document.querySelectorAll('progress[data-progress]')
           .forEach(p => window.__progress.push(Number(p.dataset.progress)))).observe(document.body,
           { subtree: true, childList: true, attributes: true, attributeFilter: ['data-progress'] }); return true;",
    )
    .await;
    // A 12 Mbit/s uplink (loopback would finish before the bar could move).
    b.client
        .issue_cmd(crate::browser::Raw::cdp(
            "Network.emulateNetworkConditions",
            json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1_500_000 }),
        ))
        .await
        .expect("uplink throttled");
    b.wait("form.reply input[type=file]").await.send_keys(path.to_str().expect("utf-8 path")).await.expect("picks the file");
    b.until_text("server-log.bin (2.9 MB)").await;
    b.fill("#reply-body", "Here is the log you asked for.").await;
    b.click("form.reply button[type=submit]").await;
    b.until(
        "[...document.querySelectorAll('li.comment a.file')].some(a => a.innerText.includes('server-log.bin'))",
        "the file on the reply",
    )
    .await;
    let progress = b.eval("return window.__progress;").await;
    let seen: Vec<u64> = progress.as_array().expect("values").iter().filter_map(|v| v.as_u64()).collect();
    assert_eq!(seen.last(), Some(&100), "the bar reached 100%: {seen:?}");
    assert!(seen.iter().any(|p| (1..100).contains(p)), "the bar moved through the upload: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "and only forward: {seen:?}");
    // The link downloads the same bytes.
    let digest = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const link = [...document.querySelectorAll('li.comment a.file')].find(a => a.innerText.includes('server-log.bin'));
             fetch(link.href).then(r => r.arrayBuffer()).then(buf => crypto.subtle.digest('SHA-256', buf))
               .then(d => done([...new Uint8Array(d)].map(x => x.toString(16).padStart(2, '0')).join('')), e => done(String(e)));",
            vec![],
        )
        .await
        .expect("downloads");
    assert_eq!(digest, json!(sha), "the download is the upload");
    let (exchanges, _) = b.network().await;
    let upload = exchanges.iter().find(|e| e.url.contains("/attachments?name=server-log.bin")).expect("the upload in the network log");
    assert_eq!((upload.status, upload.kind.as_str()), (201, "XHR"), "{upload:?}");
    no_console_errors(&b, "attachments").await;
    b.close().await;
    s.stop().await;
}

#[tokio::test]
async fn a_failing_mail_channel_test_is_reported_in_words_and_an_assignment_rings_the_bell() {
    let Some(driver) = Driver::start().await else { return };
    // Loopback relays may be reached here (the default refuses private addresses, in words too).
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| c.mail.reach = edgedesk::http::outbound::Reach::Any).await;
    let Team { admin, agent, customer, ws } = team(&s).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();

    let b = driver.browser(&s.base).await;
    b.sign_in(&admin.email, PASSWORD).await;
    b.goto(&format!("/w/{ws}/settings/mail")).await;
    b.wait("#ch-address").await;
    b.axe("settings: mail channels").await;
    b.fill("#ch-address", "support@example.com").await;
    for key in ["imap", "smtp"] {
        b.fill(&format!("#{key}-host"), "127.0.0.1").await;
        b.fill(&format!("#{key}-port"), &closed.to_string()).await;
        b.select(&format!("#{key}-security"), "none").await;
        b.fill(&format!("#{key}-user"), "support").await;
        b.fill(&format!("#{key}-password"), "hunter2hunter2").await;
    }
    b.click("section form button[type=submit]").await;
    b.wait("[data-testid=probe]").await;
    let report = b.eval("return document.querySelector('[data-testid=probe]').innerText;").await;
    let report = report.as_str().expect("text");
    assert!(report.contains("IMAP: ") && report.contains("SMTP: "), "{report}");
    assert_eq!(b.eval("return document.querySelectorAll('[data-testid=probe] .error').length;").await, json!(2), "both fail: {report}");
    assert!(
        report.lines().filter(|l| !l.trim().is_empty()).all(|l| l.len() > "IMAP: ".len() + 10),
        "each failure says what went wrong: {report}"
    );
    eprintln!("the channel test reported: {report}");
    b.screenshot("settings-mail").await;
    b.axe("settings: a failed channel test").await;
    no_console_errors(&b, "mail channel").await;
    b.close().await;

    // The agent's bell rings live when they are assigned a ticket.
    let g = driver.browser(&s.base).await;
    g.sign_in(&agent.email, PASSWORD).await;
    g.goto(&format!("/w/{ws}")).await;
    g.wait("#queue-title").await;
    assert_eq!(g.eval("return document.querySelector('[data-testid=unread-count]');").await, json!(null), "nothing unread yet");
    let t = s.ticket(&customer, &ws, json!({ "title": "Refund please" })).await;
    let id = t["id"].as_str().expect("id");
    s.patch(&format!("/api/workspaces/{ws}/tickets/{id}"), &admin.token, json!({ "assignee_id": agent.id })).await.ok(200);
    g.until("document.querySelector('[data-testid=unread-count]')?.innerText === '1'", "the bell shows one unread").await;
    g.click(".bell button").await;
    g.until_text("assigned to you").await;
    g.until_text("Refund please").await;
    g.axe("notifications open").await;
    no_console_errors(&g, "bell").await;
    g.close().await;
    s.stop().await;
}

#[tokio::test]
async fn every_screen_passes_axe_in_light_and_dark_and_fits_a_phone() {
    let Some(driver) = Driver::start().await else { return };
    let s = TestServer::start(Backend::Sqlite).await;
    let Team { admin, agent, customer, ws } = team(&s).await;
    let mut first = String::new();
    let mut ids = Vec::new();
    for (i, title) in ["Printer on fire", "Cannot log in after the update", "Invoice shows the wrong amount", "Feature request: dark mode"]
        .iter()
        .enumerate()
    {
        let t = s.ticket(&customer, &ws, json!({ "title": title })).await;
        let id = t["id"].as_str().expect("id").to_string();
        let comments = format!("/api/workspaces/{ws}/tickets/{id}/comments");
        s.post(
            &comments,
            &customer.token,
            json!({ "body": "It started this morning and nothing I try helps. The error mentions the printer spooler." }),
        )
        .await
        .ok(201);
        s.post(&comments, &agent.token, json!({ "body": "Thanks, we are on it. Could you send a photo of the printer's display?" }))
            .await
            .ok(201);
        s.post(&comments, &agent.token, json!({ "body": "Looks like the firmware bug from last week.", "internal": true })).await.ok(201);
        ids.push(id.clone());
        if i == 0 {
            s.patch(
                &format!("/api/workspaces/{ws}/tickets/{id}"),
                &admin.token,
                json!({ "priority": "urgent", "tags": ["hardware", "vip"], "assignee_id": agent.id }),
            )
            .await
            .ok(200);
            first = id;
        }
    }
    s.post(&format!("/api/workspaces/{ws}/tickets/{first}/links"), &agent.token, json!({ "target_id": ids[1], "kind": "blocks" }))
        .await
        .ok(201);
    let screens = [
        ("queue", format!("/w/{ws}"), "#queue-title"),
        ("search", format!("/w/{ws}?q=printer"), "ol.list a"),
        ("ticket", format!("/w/{ws}/t/{first}"), "#reply-body"),
        ("settings-members", format!("/w/{ws}/settings/members"), "#m-email"),
        ("settings-mail", format!("/w/{ws}/settings/mail"), "#ch-address"),
        ("account", "/account".to_string(), "#t-name"),
        ("workspaces", "/workspaces".to_string(), "#ws-name"),
    ];
    let b = driver.browser(&s.base).await;
    b.sign_in(&admin.email, PASSWORD).await;
    for scheme in ["light", "dark"] {
        b.color_scheme(scheme).await;
        for (name, path, ready) in &screens {
            b.goto(path).await;
            b.wait(ready).await;
            b.until("!document.querySelector('[aria-busy=true]')", "loaded").await;
            no_error_shown(&b, name).await;
            b.axe(&format!("{name} ({scheme})")).await;
            if ["queue", "ticket", "settings-members"].contains(name) {
                b.screenshot(&format!("{name}-{scheme}")).await;
            }
        }
        b.goto(&format!("/w/{ws}")).await;
        b.click("section .head button").await;
        b.wait("dialog[open] #nt-title").await;
        b.axe(&format!("new ticket dialog ({scheme})")).await;
    }
    // The keyboard: j moves down the queue, Enter opens the ticket.
    b.goto(&format!("/w/{ws}")).await;
    b.wait("ol.list a").await;
    b.click("#queue-title").await;
    let body = b.client.find(fantoccini::Locator::Css("body")).await.expect("body");
    body.send_keys("j").await.expect("j");
    b.until("document.activeElement?.id === 'row-1'", "j selects the second ticket").await;
    let second = b.eval("return document.getElementById('row-1').getAttribute('href');").await;
    body.send_keys(&fantoccini::key::Key::Enter.to_string()).await.expect("Enter");
    b.until(&format!("location.pathname === {second}"), "Enter opens it").await;

    // An API token, shown once.
    b.goto("/account").await;
    b.fill("#t-name", "Reporting script").await;
    b.click("form.row button[type=submit]").await;
    let shown = b.until("document.querySelector('code.token')?.innerText", "the new token is shown").await;
    let token = shown.as_str().expect("token").to_string();
    assert_eq!(s.get("/api/me", &token).await.ok(200)["email"], json!(admin.email), "the token works");
    b.goto("/account").await;
    b.until_text("Reporting script").await;
    assert!(!b.text().await.contains(&token), "shown once only");

    // The ticket's links, both ways.
    b.goto(&format!("/w/{ws}/t/{first}")).await;
    b.until_text("Blocks").await;
    b.until_text("#2 Cannot log in after the update").await;
    b.goto(&format!("/w/{ws}/t/{}", ids[1])).await;
    b.until_text("Blocked by").await;
    b.until_text("#1 Printer on fire").await;
    no_console_errors(&b, "every screen").await;
    b.close().await;

    // A phone: the queue, a ticket and the portal fit 375 px without sideways scrolling.
    let phone = driver.browser_sized(&s.base, 375, 812).await;
    phone.sign_in(&admin.email, PASSWORD).await;
    for (name, path, ready) in &screens[..3] {
        phone.goto(path).await;
        phone.wait(ready).await;
        assert!(!phone.scrolls_sideways().await, "{name} scrolls sideways at 375 px");
        phone.axe(&format!("{name} at 375 px")).await;
    }
    phone.screenshot("ticket-phone").await;
    phone.close().await;
    let portal = driver.browser_sized(&s.base, 375, 812).await;
    portal.sign_in(&customer.email, PASSWORD).await;
    portal.goto(&format!("/w/{ws}/t/{first}")).await;
    portal.wait("#reply-body").await;
    portal.until_text("Thanks, we are on it.").await;
    no_error_shown(&portal, "portal ticket at 375 px").await;
    assert!(!portal.scrolls_sideways().await, "the portal scrolls sideways at 375 px");
    portal.axe("portal ticket at 375 px").await;
    portal.close().await;
    s.stop().await;
}
