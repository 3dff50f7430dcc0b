//! Attachment metadata and the storage quota at the store boundary, on both backends:
//! versions and their events, who sees what, reservations that concurrent uploads cannot
//! overrun, pruning and recounting.

use std::sync::Arc;

use edgedesk::store::attachments::NewVersion;
use edgedesk::store::blobs::{AttachmentId, VersionId};
use edgedesk::store::{Audience, Millis, StoreError, TenantStore};
use serde_json::json;

use crate::common::{Backend, TestServer, both_backends};

fn version(
    ticket: &str,
    comment: Option<&str>,
    attachment: Option<AttachmentId>,
    size: u64,
    reservation: edgedesk::store::attachments::ReservationId,
) -> NewVersion {
    NewVersion {
        attachment: attachment.unwrap_or_default(),
        new: attachment.is_none(),
        version: VersionId::new(),
        ticket: ticket.parse().unwrap(),
        comment: comment.map(|c| c.parse().unwrap()),
        name: "screenshot.png".into(),
        content_type: "image/png".into(),
        size,
        sha256: "00".repeat(32),
        encryption: None,
        reservation,
    }
}

fn later() -> Millis {
    Millis(Millis::now().0 + 60_000)
}

both_backends! {
    async fn versions_visibility_and_quota_hold_on_both_backends(b: Backend) {
        let s = TestServer::start(b).await;
        let admin = s.admin().await;
        let customer = s.user(&admin, "customer").await;
        let other = s.user(&admin, "other").await;
        let ws = s.workspace(&admin, "Files").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        s.add_member(&admin, &ws, &other, "requester").await;
        let ticket = s.ticket(&customer, &ws, json!({ "title": "printer" })).await["id"].as_str().unwrap().to_string();
        let theirs = s.ticket(&other, &ws, json!({ "title": "theirs" })).await["id"].as_str().unwrap().to_string();
        let comments = format!("/api/workspaces/{ws}/tickets/{ticket}/comments");
        let public = s.post(&comments, &admin.token, json!({ "body": "here", "internal": false })).await.ok(201)["id"].as_str().unwrap().to_string();
        let internal = s.post(&comments, &admin.token, json!({ "body": "log", "internal": true })).await.ok(201)["id"].as_str().unwrap().to_string();
        let tenant: Arc<dyn TenantStore> = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
        let store = tenant.attachments();
        let (staff, me, them) = (
            Audience::Staff(admin.id.parse().unwrap()),
            Audience::Requester(customer.id.parse().unwrap()),
            Audience::Requester(other.id.parse().unwrap()),
        );
        let t = ticket.parse().unwrap();

        // Where an upload may go.
        assert!(!store.target(me, t, Some(public.parse().unwrap()), None).await.unwrap().staff_only);
        assert!(matches!(store.target(me, t, Some(internal.parse().unwrap()), None).await, Err(StoreError::NotFound)));
        assert!(store.target(staff, t, Some(internal.parse().unwrap()), None).await.unwrap().staff_only);
        assert!(matches!(store.target(them, t, None, None).await, Err(StoreError::NotFound)));
        assert!(matches!(store.target(me, theirs.parse().unwrap(), None, None).await, Err(StoreError::NotFound)));

        // A customer's screenshot, then an agent's log on the internal note, in two versions.
        let r = store.reserve(100, later()).await.unwrap();
        let shot = store.record(customer.id.parse().unwrap(), version(&ticket, Some(&public), None, 100, r)).await.unwrap();
        assert_eq!(shot.latest.number, 1);
        let r = store.reserve(300, later()).await.unwrap();
        let log = store.record(admin.id.parse().unwrap(), version(&ticket, Some(&internal), None, 300, r)).await.unwrap();
        let r = store.reserve(200, later()).await.unwrap();
        let log2 = store.record(admin.id.parse().unwrap(), version(&ticket, None, Some(log.id), 200, r)).await.unwrap();
        assert_eq!((log2.id, log2.latest.number, log2.latest.size), (log.id, 2, 200));
        assert_eq!(store.versions(staff, t, log.id).await.unwrap().iter().map(|v| v.number).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(store.list(staff, t).await.unwrap().len(), 2);
        // The requester sees the screenshot only; nobody else's ticket shows them anything.
        assert_eq!(store.list(me, t).await.unwrap().iter().map(|a| a.id).collect::<Vec<_>>(), vec![shot.id]);
        assert!(store.get(me, t, log.id).await.unwrap().is_none());
        assert!(store.versions(me, t, log.id).await.unwrap().is_empty());
        assert!(store.list(them, t).await.unwrap().is_empty());
        let usage = store.usage().await.unwrap();
        assert_eq!((usage.used, usage.reserved), (600, 0));

        // The log: staff see three events, the requester only the screenshot's.
        let delta = |token: String| {
            let s = &s;
            let ws = ws.clone();
            async move { s.get(&format!("/api/workspaces/{ws}/sync/delta?after=0&limit=1000"), &token).await.ok(200)["events"].clone() }
        };
        let kinds = |events: serde_json::Value| -> Vec<String> {
            events.as_array().unwrap().iter().filter(|e| e["entity"] == "attachment").map(|e| e["kind"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(kinds(delta(admin.token.clone()).await), ["attachment.created", "attachment.created", "attachment.versioned"]);
        assert_eq!(kinds(delta(customer.token.clone()).await), ["attachment.created"]);

        // Quota: a limit of 1,000 bytes with 600 used.
        store.set_limits(admin.id.parse().unwrap(), Some(1_000), 2).await.unwrap();
        match store.reserve(500, later()).await {
            Err(StoreError::QuotaExceeded { used, limit, requested }) => assert_eq!((used, limit, requested), (600, 1_000, 500)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Eight uploads of 100 at once: four fit, and never more.
        let mut racing = Vec::new();
        for _ in 0..8 {
            let tenant = tenant.clone();
            racing.push(tokio::spawn(async move { tenant.attachments().reserve(100, later()).await }));
        }
        let mut held = Vec::new();
        for r in racing {
            if let Ok(id) = r.await.unwrap() {
                held.push(id);
            }
        }
        assert_eq!(held.len(), 4, "only what fits is held");
        let usage = store.usage().await.unwrap();
        assert_eq!(usage.used + usage.reserved, 1_000);
        for id in held.drain(1..) {
            store.release(id).await.unwrap();
        }
        let third = store.record(admin.id.parse().unwrap(), version(&ticket, None, Some(log.id), 100, held[0])).await.unwrap();
        assert_eq!(third.latest.number, 3);
        assert_eq!(store.usage().await.unwrap().used, 700);

        // Pruning to the two newest frees the first version's 300 bytes.
        let pruned = store.prune(log.id, 2).await.unwrap();
        assert_eq!(pruned, vec![log.latest.id]);
        assert_eq!(store.versions(staff, t, log.id).await.unwrap().iter().map(|v| v.number).collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(store.usage().await.unwrap().used, 400);
        assert_eq!(store.recount().await.unwrap(), 400, "the recount agrees");
        assert_eq!(store.known_versions().await.unwrap().len(), 3);

        // Deleting: not someone else's upload as a requester; staff may.
        assert!(matches!(store.delete(customer.id.parse().unwrap(), me, t, log.id).await, Err(StoreError::NotFound)));
        store.delete(customer.id.parse().unwrap(), me, t, shot.id).await.unwrap();
        assert!(store.get(staff, t, shot.id).await.unwrap().is_none());
        store.delete(admin.id.parse().unwrap(), staff, t, log.id).await.unwrap();
        assert!(store.list(staff, t).await.unwrap().is_empty());
        assert_eq!(kinds(delta(customer.token.clone()).await), ["attachment.created", "attachment.deleted"]);
        s.stop().await;
    }
}

/// A real PNG's first bytes (signature and IHDR), then filler.
pub(crate) fn png(len: usize) -> Vec<u8> {
    let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, b'I', b'H', b'D', b'R'];
    bytes.extend((0..len.saturating_sub(16)).map(|i| (i % 251) as u8));
    bytes
}

pub(crate) async fn upload(s: &TestServer, token: &str, path: &str, content_type: &str, bytes: Vec<u8>) -> reqwest::Response {
    s.http.post(format!("{}{path}", s.base)).bearer_auth(token).header("content-type", content_type).body(bytes).send().await.unwrap()
}

/// Objects the server's blob store holds for `ws`.
async fn objects(s: &TestServer, ws: &str) -> usize {
    use axum::extract::FromRef;
    let state = edgedesk::attachments::AttachmentsState::from_ref(s.app());
    state.blobs.list(ws.parse().unwrap()).await.unwrap().len()
}

both_backends! {
    async fn files_go_up_and_come_down_intact_for_those_who_may_see_them(b: Backend) {
        files(b, false).await
    }
}

both_backends! {
    async fn files_in_an_s3_bucket_behave_the_same(b: Backend) {
        files(b, true).await
    }
}

async fn files(b: Backend, s3: bool) {
    {
        let bucket = match s3 {
            true => match crate::blobs::s3_url() {
                Some(url) => Some(crate::blobs::s3_bucket(&url).await),
                None => return,
            },
            false => None,
        };
        let s = TestServer::start_with(b, crate::common::relaxed_limits(), move |c| {
            c.upload_limit = 1 << 20;
            if let Some(settings) = bucket {
                c.blobs = edgedesk::config::BlobSettings::S3(settings);
            }
        })
        .await;
        let admin = s.admin().await;
        let customer = s.user(&admin, "customer").await;
        let other = s.user(&admin, "other").await;
        let stranger = s.user(&admin, "stranger").await;
        let ws = s.workspace(&admin, "Files").await;
        let elsewhere = s.workspace(&admin, "Elsewhere").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        s.add_member(&admin, &ws, &other, "requester").await;
        s.add_member(&admin, &elsewhere, &stranger, "agent").await;
        let ticket = s.ticket(&customer, &ws, json!({ "title": "printer" })).await["id"].as_str().unwrap().to_string();
        let base = format!("/api/workspaces/{ws}/tickets/{ticket}/attachments");

        // The customer's screenshot.
        let bytes = png(300_000);
        let res = upload(&s, &customer.token, &format!("{base}?name=../shot%201.png"), "image/png", bytes.clone()).await;
        assert_eq!(res.status(), 201);
        let shot: serde_json::Value = res.json().await.unwrap();
        assert_eq!(shot["name"], "shot 1.png");
        assert_eq!(shot["latest"]["content_type"], "image/png");
        assert_eq!(shot["latest"]["size"], 300_000);
        let id = shot["id"].as_str().unwrap().to_string();
        let one = format!("{base}/{id}");
        let got = s.http.get(format!("{}{one}", s.base)).bearer_auth(&customer.token).send().await.unwrap();
        assert_eq!(got.status(), 200);
        let etag = got.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", shot["latest"]["sha256"].as_str().unwrap()));
        assert_eq!(got.headers()["content-type"], "image/png");
        assert_eq!(got.headers()["x-content-type-options"], "nosniff");
        assert_eq!(got.headers()["accept-ranges"], "bytes");
        assert!(got.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"shot 1.png\""));
        assert!(got.bytes().await.unwrap() == bytes, "byte-identical");
        let part =
            s.http.get(format!("{}{one}", s.base)).bearer_auth(&customer.token).header("range", "bytes=100-199").send().await.unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.headers()["content-range"], "bytes 100-199/300000");
        assert!(part.bytes().await.unwrap() == bytes[100..200]);
        let cached =
            s.http.get(format!("{}{one}", s.base)).bearer_auth(&customer.token).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(cached.status(), 304);
        let outside =
            s.http.get(format!("{}{one}", s.base)).bearer_auth(&customer.token).header("range", "bytes=400000-").send().await.unwrap();
        assert_eq!(outside.status(), 416);
        assert_eq!(outside.headers()["content-range"], "bytes */300000");

        // Something a browser would run is served as bytes.
        let page = upload(&s, &admin.token, &format!("{base}?name=page.html"), "text/html", b"<script>alert(1)</script>".to_vec()).await;
        let page: serde_json::Value = page.json().await.unwrap();
        let served =
            s.http.get(format!("{}{base}/{}", s.base, page["id"].as_str().unwrap())).bearer_auth(&admin.token).send().await.unwrap();
        assert_eq!(served.headers()["content-type"], "application/octet-stream");

        // Versions: two kept, the oldest pruned after the response.
        let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
        tenant.attachments().set_limits(admin.id.parse().unwrap(), None, 2).await.unwrap();
        for n in 0..2 {
            let res = upload(&s, &admin.token, &format!("{one}/versions"), "image/png", png(1_000 + n)).await;
            assert_eq!(res.status(), 201);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let versions = loop {
            let versions = s.get(&format!("{one}/versions"), &admin.token).await.ok(200).clone();
            if versions.as_array().unwrap().len() == 2 {
                break versions;
            }
            assert!(tokio::time::Instant::now() < deadline, "not pruned: {versions}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(versions[0]["number"], 3);
        assert_eq!(versions[0]["size"], 1_001);
        let old = format!("{one}/versions/{}", shot["latest"]["id"].as_str().unwrap());
        s.get(&old, &admin.token).await.problem(404);
        let kept = format!("{one}/versions/{}", versions[1]["id"].as_str().unwrap());
        let got = s.http.get(format!("{}{kept}", s.base)).bearer_auth(&customer.token).send().await.unwrap();
        assert!(got.bytes().await.unwrap() == png(1_000));
        let stored = objects(&s, &ws).await;
        assert_eq!(stored, 3, "the pruned version's object is gone too");

        // Limits: the upload limit, then the workspace's quota; neither leaves anything.
        let res = upload(&s, &admin.token, &format!("{base}?name=big.bin"), "application/octet-stream", vec![0; (1 << 20) + 1]).await;
        assert_eq!(res.status(), 413);
        let used = tenant.attachments().usage().await.unwrap().used;
        let storage = format!("/api/workspaces/{ws}/storage");
        s.call(reqwest::Method::PUT, &storage, Some(&customer.token), Some(json!({ "limit": 1, "max_versions": 2 }))).await.problem(403);
        s.call(reqwest::Method::PUT, &storage, Some(&admin.token), Some(json!({ "limit": used + 1_000, "max_versions": 0 })))
            .await
            .problem(422);
        let set =
            s.call(reqwest::Method::PUT, &storage, Some(&admin.token), Some(json!({ "limit": used + 1_000, "max_versions": 2 }))).await;
        assert_eq!(set.ok(200)["limit"], used + 1_000);
        assert_eq!(s.get(&storage, &admin.token).await.ok(200)["used"], used);
        let res = upload(&s, &admin.token, &format!("{base}?name=more.bin"), "application/octet-stream", vec![7; 5_000]).await;
        assert_eq!(res.status(), 413);
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            (problem["used"].as_u64(), problem["limit"].as_u64(), problem["requested"].as_u64()),
            (Some(used), Some(used + 1_000), Some(5_000))
        );
        assert_eq!(objects(&s, &ws).await, stored, "nothing stored");
        assert_eq!(tenant.attachments().usage().await.unwrap().used, used);
        assert_eq!(tenant.attachments().recount().await.unwrap(), used, "the recount agrees");

        // Who may see: not another requester, not a member of another workspace, not a
        // requester on an internal note's attachment.
        let note = s
            .post(&format!("/api/workspaces/{ws}/tickets/{ticket}/comments"), &admin.token, json!({ "body": "log", "internal": true }))
            .await;
        let note = note.ok(201)["id"].as_str().unwrap().to_string();
        let log = upload(&s, &admin.token, &format!("{base}?name=log.txt&comment_id={note}"), "text/plain", b"secret log".to_vec()).await;
        let log: serde_json::Value = log.json().await.unwrap();
        let log_url = format!("{base}/{}", log["id"].as_str().unwrap());
        for (who, path) in [(&other, &one), (&stranger, &one), (&customer, &log_url), (&other, &base)] {
            let res = s.http.get(format!("{}{path}", s.base)).bearer_auth(&who.token).send().await.unwrap();
            assert_eq!(res.status(), 404, "{} on {path}", who.email);
        }
        let res = upload(&s, &customer.token, &format!("{base}?name=x.txt&comment_id={note}"), "text/plain", b"x".to_vec()).await;
        assert_eq!(res.status(), 404, "a requester cannot attach to an internal note");
        // Past the quota or the upload limit, one who may not see the ticket still gets 404.
        for body in [vec![7; 5_000], vec![0; (1 << 20) + 1]] {
            let res = upload(&s, &other.token, &format!("{base}?name=x.bin"), "application/octet-stream", body).await;
            assert_eq!(res.status(), 404, "another requester learns nothing of this ticket's workspace's limits");
        }
        assert_eq!(tenant.attachments().usage().await.unwrap().reserved, 0, "the reservations were given back");
        let listed = s.get(&base, &customer.token).await.ok(200).clone();
        assert!(listed.as_array().unwrap().iter().all(|a| a["id"] != log["id"]));
        // The same object through another workspace's path: not there.
        let res = s
            .http
            .get(format!("{}/api/workspaces/{elsewhere}/tickets/{ticket}/attachments/{id}", s.base))
            .bearer_auth(&stranger.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);

        // Bootstrap carries the metadata, by the same rule.
        let ids = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
            rows.into_iter().filter(|r| r["type"] == "attachment").map(|r| r["id"].clone()).collect()
        };
        let mine = ids(s.bootstrap(&customer.token, &ws).await.1);
        assert!(mine.contains(&json!(id)) && !mine.contains(&log["id"]), "{mine:?}");
        assert!(ids(s.bootstrap(&admin.token, &ws).await.1).contains(&log["id"]));
        assert!(ids(s.bootstrap(&other.token, &ws).await.1).is_empty());

        // Soft delete.
        assert_eq!(s.delete(&one, &customer.token).await.status, 204);
        s.get(&one, &admin.token).await.problem(404);
        s.stop().await;
    }
}

both_backends! {
    async fn a_failed_row_takes_its_object_with_it_and_the_sweep_removes_orphans(b: Backend) {
        use axum::extract::FromRef;
        let s = TestServer::start(b).await;
        let admin = s.admin().await;
        let ws = s.workspace(&admin, "Files").await;
        let ticket = s.ticket(&admin, &ws, json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
        let base = format!("/api/workspaces/{ws}/tickets/{ticket}/attachments");
        let ok = upload(&s, &admin.token, &format!("{base}?name=kept.png"), "image/png", png(1_000)).await;
        assert_eq!(ok.status(), 201);
        assert_eq!(objects(&s, &ws).await, 1);

        // The version's row is refused by the database itself.
        match &s.pg {
            None => {
                let db = rusqlite::Connection::open(s.data_dir().join("tenants").join(&ws).join("tenant.db")).unwrap();
                db.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON attachment_versions BEGIN SELECT RAISE(ABORT, 'refused'); END;").unwrap();
            }
            Some(pg) => {
                let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                su.batch_execute(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
                     CREATE TRIGGER refuse BEFORE INSERT ON attachment_versions FOR EACH ROW EXECUTE FUNCTION refuse();",
                )
                .await
                .unwrap();
            }
        }
        let failed = upload(&s, &admin.token, &format!("{base}?name=lost.png"), "image/png", png(2_000)).await;
        assert_eq!(failed.status(), 500);
        assert_eq!(objects(&s, &ws).await, 1, "the object of the refused row was deleted again");
        let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
        let usage = tenant.attachments().usage().await.unwrap();
        assert_eq!((usage.used, usage.reserved), (1_000, 0), "its reservation was released");

        // A crash between the object and its row, as the store sees it: an object nobody knows.
        let state = edgedesk::attachments::AttachmentsState::from_ref(s.app());
        let orphan = edgedesk::store::blobs::BlobKey { workspace: ws.parse().unwrap(), attachment: AttachmentId::new(), version: VersionId::new() };
        let body: edgedesk::store::blobs::ByteStream = Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"orphan"))]));
        state.blobs.put(&orphan, body, 100).await.unwrap();
        assert_eq!(objects(&s, &ws).await, 2);
        // Inside the grace period it stays (its upload may still be writing the row)…
        assert_eq!(edgedesk::attachments::sweep_orphans(&tenant, &state.blobs, edgedesk::attachments::ORPHAN_GRACE_MS).await.unwrap(), 0);
        // …after it, it goes, and what has a row stays.
        assert_eq!(edgedesk::attachments::sweep_orphans(&tenant, &state.blobs, -1_000).await.unwrap(), 1);
        assert_eq!(objects(&s, &ws).await, 1);
        let kept = ok.json::<serde_json::Value>().await.unwrap();
        let got = s.http.get(format!("{}{base}/{}", s.base, kept["id"].as_str().unwrap())).bearer_auth(&admin.token).send().await.unwrap();
        assert!(got.bytes().await.unwrap() == png(1_000));
        s.stop().await;
    }
}

both_backends! {
    async fn concurrent_uploads_never_pass_the_quota_together(b: Backend) {
        let s = TestServer::start(b).await;
        let admin = s.admin().await;
        let ws = s.workspace(&admin, "Files").await;
        let ticket = s.ticket(&admin, &ws, json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
        let set = s.call(reqwest::Method::PUT, &format!("/api/workspaces/{ws}/storage"), Some(&admin.token), Some(json!({ "limit": 4_000, "max_versions": 10 }))).await;
        set.ok(200);
        let path = format!("/api/workspaces/{ws}/tickets/{ticket}/attachments?name=part.bin");
        let mut uploads = Vec::new();
        for i in 0..8u8 {
            let (http, url, token) = (s.http.clone(), format!("{}{path}", s.base), admin.token.clone());
            uploads.push(tokio::spawn(async move {
                http.post(url).bearer_auth(token).header("content-type", "application/octet-stream").body(vec![i; 1_000]).send().await.unwrap().status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for u in uploads {
            statuses.push(u.await.unwrap());
        }
        statuses.sort();
        assert_eq!(statuses, [201, 201, 201, 201, 413, 413, 413, 413], "exactly what fits");
        let usage = s.get(&format!("/api/workspaces/{ws}/storage"), &admin.token).await.ok(200).clone();
        assert_eq!((usage["used"].as_u64(), usage["reserved"].as_u64()), (Some(4_000), Some(0)));
        assert_eq!(objects(&s, &ws).await, 4, "the refused ones stored nothing");
        s.stop().await;
    }
}
