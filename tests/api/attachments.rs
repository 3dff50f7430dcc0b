//! Attachment metadata and the storage quota at the store boundary, on both backends:
//! versions and their events, who sees what, reservations that concurrent uploads cannot
//! overrun, pruning and recounting.

use std::sync::Arc;

use edgedesk::store::attachments::NewVersion;
use edgedesk::store::blobs::{AttachmentId, VersionId};
use edgedesk::store::{Audience, Millis, StoreError, TenantStore};
use serde_json::json;

use crate::common::{TestServer, both_backends};

fn version(
    ticket: &str,
    comment: Option<&str>,
    attachment: Option<AttachmentId>,
    size: u64,
    reservation: edgedesk::store::attachments::ReservationId,
) -> NewVersion {
    NewVersion {
        attachment,
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
