//! Store-level tests, below HTTP, on both backends: concurrent writers, some failing.

use edgedesk::store::postgres::PgOptions;
use edgedesk::store::sqlite::SqliteOptions;
use edgedesk::store::{
    Audience, LinkKind, Millis, NewTicket, Priority, Status, Store, StoreError, TicketId, UserId, Workspace, WorkspaceId,
};

use crate::common::{Backend, PgDatabase, both_backends};

pub fn new_ticket(title: &str, requester: UserId) -> NewTicket {
    NewTicket {
        title: title.into(),
        status: Status::Open,
        priority: Priority::Normal,
        requester_id: requester,
        assignee_id: None,
        tags: vec!["x".into()],
    }
}

/// A store of the given backend over fresh storage (kept alive by the returned guard).
pub async fn fresh_store(b: Backend) -> (Store, tempfile::TempDir, Option<PgDatabase>) {
    let dir = tempfile::tempdir().unwrap();
    match b {
        Backend::Sqlite => {
            let options = SqliteOptions::new(8, std::time::Duration::from_secs(60));
            (edgedesk::store::sqlite::open(dir.path(), options).unwrap(), dir, None)
        }
        Backend::Postgres => {
            let pg = PgDatabase::create().await;
            let options = PgOptions {
                database_url: pg.app_url.clone(),
                admin_database_url: Some(pg.admin_url.clone()),
                allow_privileged_role: false,
                pool_size: 8,
                ca_file: None,
            };
            (edgedesk::store::postgres::open(&options).await.unwrap(), dir, Some(pg))
        }
    }
}

both_backends! {
async fn failing_writes_leave_the_others_committed_and_the_log_contiguous(b: Backend) {
    // On SQLite these writes share group commits; on Postgres they queue on the head row.
    let (store, _dir, _pg) = fresh_store(b).await;
    let actor = UserId::new();
    let ws = Workspace { id: WorkspaceId::new(), name: "Batch".into(), created_at: Millis::now() };
    let tenant = store.tenants.create(&ws, actor).await.unwrap();
    let first = tenant.create_ticket(actor, new_ticket("first", actor)).await.unwrap();

    // 200 concurrent writes, a third of which fail in the store: they share batches.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => tenant.add_link(actor, first.id, first.id, LinkKind::Blocks).await.map(|_| ()),
                1 => tenant.delete_ticket(actor, TicketId::new()).await,
                _ => tenant.create_ticket(actor, new_ticket(&format!("t{i}"), actor)).await.map(|_| ()),
            }
        }));
    }
    let mut ok = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match (i % 3, task.await.unwrap()) {
            (0, Err(StoreError::Invalid { .. })) | (1, Err(StoreError::NotFound)) => {}
            (2, Ok(())) => ok += 1,
            (kind, other) => panic!("write {i} (kind {kind}): {other:?}"),
        }
    }
    assert_eq!(ok, 66);
    let page = tenant.delta(Audience::Staff(edgedesk::store::UserId::new()), 0, 1000).await.unwrap();
    let ids: Vec<i64> = page.events.iter().map(|e| e.sync_id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "no gaps from rolled-back savepoints");
    // workspace.created, the first ticket, and the 66 that succeeded.
    assert_eq!(ids.len(), 68);
    let tickets = page.events.iter().filter(|e| e.kind == "ticket.created").count();
    assert_eq!(tickets, 67);
    let numbers: Vec<i64> = page.events.iter().filter(|e| e.kind == "ticket.created").map(|e| e.data["number"].as_i64().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "ticket numbers follow log order");
}
}

#[tokio::test]
async fn instances_starting_together_migrate_once() {
    if !Backend::postgres_available() {
        return;
    }
    let pg = PgDatabase::create().await;
    let options = PgOptions {
        database_url: pg.app_url.clone(),
        admin_database_url: Some(pg.admin_url.clone()),
        allow_privileged_role: false,
        pool_size: 2,
        ca_file: None,
    };
    let starts = futures::future::join_all((0..4).map(|_| edgedesk::store::postgres::open(&options))).await;
    for started in starts {
        started.expect("every instance starts: the advisory lock serialises their migrations");
    }
    let (client, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let applied: i64 = client.query_one("SELECT count(*) FROM schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(applied as usize, edgedesk::store::postgres::migrate::MIGRATIONS.len());
}

both_backends! {
async fn each_backends_delta_admits_exactly_what_the_one_visibility_rule_admits(b: Backend) {
    use edgedesk::store::notifications::{ContextNeeds, Notification, NotificationBatch, NotificationId, NotificationKind, Planner};
    use edgedesk::store::{Advance, Member, Role};
    let (store, _dir, _pg) = fresh_store(b).await;
    let (staff, other_staff, alice, bob, nobody) = (UserId::new(), UserId::new(), UserId::new(), UserId::new(), UserId::new());
    let ws = Workspace { id: WorkspaceId::new(), name: "Rules".into(), created_at: Millis::now() };
    let tenant = store.tenants.create(&ws, staff).await.unwrap();
    let member = Member { user_id: alice, email: "a@x".into(), name: "A".into(), role: Role::Requester, joined_at: Millis::now() };
    tenant.mirror_member(Some(staff), alice, Some(&member)).await.unwrap();
    let mine = tenant.create_ticket(staff, new_ticket("alice's", alice)).await.unwrap();
    let theirs = tenant.create_ticket(staff, new_ticket("bob's", bob)).await.unwrap();
    for (ticket, internal) in [(mine.id, false), (mine.id, true), (theirs.id, false), (theirs.id, true)] {
        tenant.add_comment(staff, Audience::Staff(staff), ticket, "c".into(), internal, Vec::new()).await.unwrap();
    }
    tenant.add_link(staff, mine.id, theirs.id, LinkKind::RelatesTo).await.unwrap();
    // Notifications for several recipients, about public and internal comments.
    let head = tenant.head().await.unwrap();
    let note = |recipient, ticket: &edgedesk::store::Ticket, internal, seq| Notification {
        id: NotificationId::new(),
        kind: if internal { NotificationKind::InternalNote } else { NotificationKind::Reply },
        recipient_id: recipient,
        ticket_id: ticket.id,
        ticket_number: ticket.number,
        ticket_title: ticket.title.clone(),
        actor_id: Some(staff),
        comment_id: None,
        excerpt: None,
        internal,
        seq,
        created_at: Millis::now(),
        read_at: None,
    };
    let notifications = vec![note(alice, &mine, false, 1), note(staff, &mine, true, 2), note(other_staff, &theirs, false, 3), note(bob, &theirs, false, 4), note(alice, &theirs, false, 5)];
    let batch = NotificationBatch { notifications, ..Default::default() };
    let plan: Planner = Box::new(move |_| Ok(batch));
    tenant.notifications().plan_and_apply(Advance { consumer: "notifications", from: 0, to: head }, ContextNeeds::default(), plan).await.unwrap();

    let feed = tenant.feed(0, 10_000).await.unwrap().items;
    assert_eq!(feed.len(), 14, "every shape of event was written");
    for audience in [Audience::Staff(staff), Audience::Staff(other_staff), Audience::Requester(alice), Audience::Requester(bob), Audience::Requester(nobody)] {
        let want: Vec<i64> = feed.iter().filter(|e| e.visibility.admits(audience)).map(|e| e.event.sync_id).collect();
        let got: Vec<i64> = tenant.delta(audience, 0, 10_000).await.unwrap().events.iter().map(|e| e.sync_id).collect();
        assert_eq!(got, want, "{audience:?}");
        // The notifications list applies the same rule to the notifications table.
        let query = edgedesk::store::notifications::NotificationQuery { limit: 100, ..Default::default() };
        let mut listed: Vec<String> =
            tenant.notifications().list(audience, &query).await.unwrap().items.iter().map(|n| n.id.to_string()).collect();
        let mut want_listed: Vec<String> = feed
            .iter()
            .filter(|e| e.event.kind == "notification.created" && e.visibility.admits(audience))
            .map(|e| e.event.entity_id.clone())
            .collect();
        listed.sort();
        want_listed.sort();
        assert_eq!(listed, want_listed, "{audience:?}");
    }
    // The shapes that matter, spelled out: a requester's notification about someone else's
    // ticket stays hidden, staff see only their own notifications.
    let alice_sees = tenant.delta(Audience::Requester(alice), 0, 10_000).await.unwrap().events;
    assert_eq!(alice_sees.iter().filter(|e| e.kind == "notification.created").count(), 1);
    let staff_sees = tenant.delta(Audience::Staff(staff), 0, 10_000).await.unwrap().events;
    assert_eq!(staff_sees.iter().filter(|e| e.kind == "notification.created").count(), 1);
}
}
