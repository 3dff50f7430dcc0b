//! The sync-action lint, as a test: every write function of the tenant store must record a
//! sync action (`tx.record(…)`) or say why not (`tx.exempt("…")`).
//!
//! It reads the backends' tenant store sources, finds every `async fn`, and checks:
//! - a function that opens a write transaction (`self.write(` in SQLite, `self.write_tx(`
//!   in Postgres) records or exempts;
//! - a function that does not contains no SQL write and no write helper.
//!
//! `WriteTx::commit` enforces the same at run time; this catches it before anything runs.

/// The tenant store's files: its core, and each feature's own store in each backend.
const SOURCES: &[&str] = &[
    "src/store/sqlite/tenant.rs",
    "src/store/postgres/tenant.rs",
    "src/store/sqlite/consumers.rs",
    "src/store/postgres/consumers.rs",
    "src/store/sqlite/notifications.rs",
    "src/store/postgres/notifications.rs",
    "src/store/sqlite/notes.rs",
    "src/store/postgres/notes.rs",
    "src/store/sqlite/attachments.rs",
    "src/store/postgres/attachments.rs",
    "src/store/sqlite/mail.rs",
    "src/store/postgres/mail.rs",
];

/// How each backend opens a write transaction: a recorded write, or (Postgres) a
/// bookkeeping one, which must say why it records nothing just the same.
const WRITE_MARKERS: &[&str] = &["self.write(", "self.write_tx(", "PgWrite::begin_new(", "PgWrite::begin_consumer(", "Bookkeeping::begin("];

/// SQL and helpers that write.
const WRITES: &[&str] =
    &["INSERT ", "UPDATE ", "DELETE ", "write_tags(", "write_batch(", "write_state(", "write_followers(", "advance_watermark("];

#[derive(Debug, PartialEq)]
pub struct Violation {
    pub function: String,
    pub problem: &'static str,
}

/// One function of a source file, found by brace matching.
pub(crate) struct Function<'s> {
    pub name: String,
    pub signature: &'s str,
    pub body: &'s str,
    pub is_async: bool,
}

impl Function<'_> {
    /// Handed its caller's transaction: it writes inside it and is left to the caller's check.
    fn in_callers_transaction(&self) -> bool {
        ["tx: &Transaction", "&mut WriteTx", "&mut PgWrite"].iter().any(|t| self.signature.contains(t))
    }
}

/// Every `fn` in `source` (async or not) with its signature and body.
pub(crate) fn functions(source: &str) -> Vec<Function<'_>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Some(pos) = source[offset..].find("fn ") {
        let start = offset + pos;
        offset = start + 3;
        if start > 0 && !source[..start].ends_with(|c: char| c.is_whitespace()) {
            continue;
        }
        let name: String = source[start + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue;
        }
        // The body starts at the first `{` after the signature's closing parenthesis level.
        let Some(open_rel) = source[start..].find(") ->").or_else(|| source[start..].find(')')) else { break };
        let Some(brace_rel) = source[start + open_rel..].find('{') else { break };
        let body_start = start + open_rel + brace_rel;
        let mut depth = 0usize;
        let mut end = body_start;
        for (i, c) in source[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = body_start + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let is_async = source[..start].trim_end().ends_with("async");
        out.push(Function { name, signature: &source[start..body_start], body: &source[body_start..end], is_async });
        offset = end.max(start + 3);
    }
    out
}

/// `(name, body)` of every `async fn` in `source` that opens its own transactions (one handed
/// its caller's is left to the caller's check).
pub(crate) fn async_fns(source: &str) -> Vec<(String, &str)> {
    functions(source).into_iter().filter(|f| f.is_async && !f.in_callers_transaction()).map(|f| (f.name, f.body)).collect()
}

/// Helpers handed a write transaction that record a sync action in it: calling one records.
fn recording_helpers(source: &str) -> Vec<String> {
    functions(source).into_iter().filter(|f| f.in_callers_transaction() && f.body.contains(".record(")).map(|f| f.name).collect()
}

pub fn check(source: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let helpers = recording_helpers(source);
    for (name, body) in async_fns(source) {
        if matches!(name.as_str(), "read" | "write" | "write_tx") {
            continue; // the helpers themselves
        }
        let writes = WRITE_MARKERS.iter().any(|m| body.contains(m));
        let records = body.contains(".record(") || body.contains(".exempt(") || helpers.iter().any(|h| body.contains(&format!("{h}(")));
        if writes && !records {
            violations.push(Violation { function: name.clone(), problem: "opens a write transaction but records no sync action" });
        }
        if !writes && WRITES.iter().any(|w| body.contains(w)) {
            violations.push(Violation { function: name, problem: "writes outside a recorded write transaction" });
        }
    }
    violations
}

#[test]
fn every_tenant_write_records_a_sync_action() {
    for path in SOURCES {
        let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let fns = async_fns(&source);
        let writers = fns.iter().filter(|(_, body)| WRITE_MARKERS.iter().any(|m| body.contains(m))).count();
        let least = if path.ends_with("tenant.rs") { 8 } else { 3 };
        assert!(writers >= least, "{path}: the scanner found {writers} write functions");
        let violations = check(&source);
        assert!(violations.is_empty(), "{path}: {violations:#?}");
    }
}

#[test]
fn the_lint_catches_a_write_that_forgets_its_sync_action() {
    let forgetful = r#"
        async fn rename_ticket(&self, actor: UserId, id: TicketId) -> StoreResult<()> {
            self.write(move |tx| {
                tx.execute("UPDATE tickets SET title = 'x' WHERE id = ?1", params![id]).map_err(error)?;
                Ok(())
            })
            .await
        }
        async fn sneaky(&self) -> StoreResult<()> {
            self.read(move |conn| { conn.execute("DELETE FROM tickets", []).map_err(error)?; Ok(()) }).await
        }
        async fn honest(&self, actor: UserId) -> StoreResult<()> {
            self.write(move |tx| { tx.exempt("nothing visible changes"); Ok(()) }).await
        }
        fn rename(tx: &mut WriteTx<'_>, id: TicketId) -> StoreResult<()> {
            tx.execute("UPDATE tickets SET title = 'x' WHERE id = ?1", params![id]).map_err(error)?;
            tx.record(None, Event::ticket_updated(&ticket))?;
            Ok(())
        }
        fn touch(tx: &mut WriteTx<'_>, id: TicketId) -> StoreResult<()> {
            tx.execute("UPDATE tickets SET title = 'x' WHERE id = ?1", params![id]).map_err(error)?;
            Ok(())
        }
        async fn delegated(&self, id: TicketId) -> StoreResult<()> {
            self.write(move |tx| rename(tx, id)).await
        }
        async fn delegated_badly(&self, id: TicketId) -> StoreResult<()> {
            self.write(move |tx| touch(tx, id)).await
        }
    "#;
    let found = check(forgetful);
    assert_eq!(
        found,
        vec![
            Violation { function: "rename_ticket".into(), problem: "opens a write transaction but records no sync action" },
            Violation { function: "sneaky".into(), problem: "writes outside a recorded write transaction" },
            Violation { function: "delegated_badly".into(), problem: "opens a write transaction but records no sync action" },
        ]
    );
}
