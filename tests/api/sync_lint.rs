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

/// `(name, body)` of every `async fn` in `source`, by brace matching. A helper that is
/// handed its caller's transaction (`tx: &Transaction`) writes inside it and is left to the
/// caller's check.
pub(crate) fn async_fns(source: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut rest = source;
    let mut offset = 0;
    while let Some(pos) = rest.find("async fn ") {
        let start = offset + pos;
        let name: String = source[start + 9..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
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
        if !source[start..body_start].contains("tx: &Transaction") {
            out.push((name, &source[body_start..end]));
        }
        offset = end.max(start + 9);
        rest = &source[offset..];
    }
    out
}

pub fn check(source: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (name, body) in async_fns(source) {
        if matches!(name.as_str(), "read" | "write" | "write_tx") {
            continue; // the helpers themselves
        }
        let writes = WRITE_MARKERS.iter().any(|m| body.contains(m));
        if writes && !(body.contains(".record(") || body.contains(".exempt(")) {
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
    "#;
    let found = check(forgetful);
    assert_eq!(
        found,
        vec![
            Violation { function: "rename_ticket".into(), problem: "opens a write transaction but records no sync action" },
            Violation { function: "sneaky".into(), problem: "writes outside a recorded write transaction" },
        ]
    );
}
