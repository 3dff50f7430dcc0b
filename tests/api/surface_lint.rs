//! Properties of the source that no request can observe, checked by reading it:
//! - a handler's extractors are its audit surface: `TenantConn` holds no public handle on
//!   the platform store (nor `PlatformConn` one on every workspace), so reaching both takes
//!   both extractors, visibly;
//! - async functions on the request and CLI paths do no blocking file I/O (it belongs on
//!   blocking threads: tokio's fs, `spawn_blocking`, or the SQLite workers).

use crate::sync_lint::async_fns;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text between `pub struct <name> {` and its closing brace.
fn struct_body<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source.find(&format!("pub struct {name} {{")).unwrap_or_else(|| panic!("struct {name}"));
    let end = source[start..].find("\n}").map(|e| start + e).unwrap_or(source.len());
    &source[start..end]
}

#[test]
fn connections_keep_their_store_handles_private() {
    let source = read("src/tenants/extract.rs");
    for (name, private) in [("TenantConn", &["platform", "memberships", "watch"][..]), ("PlatformConn", &["tenants", "memberships"][..])] {
        let body = struct_body(&source, name);
        for field in private {
            assert!(body.contains(&format!("    {field}: ")), "{name} has a field {field}");
            assert!(!body.contains(&format!("pub {field}: ")), "{name}.{field} is public: a handler could reach past its extractors");
        }
    }
}

/// Where blocking file calls may stand inside an async fn: in a closure handed to a thread.
const BLOCKING_CLOSURES: &[&str] = &["run(move ||", "spawn_blocking(move ||", "spawn_blocking(||"];
const BLOCKING_IO: &[&str] = &["std::fs::", ".exists()", "std::io::BufWriter", "std::io::BufReader"];

#[test]
fn async_functions_do_no_blocking_file_io() {
    for path in ["src/tenants/transfer.rs", "src/tenants/mod.rs", "src/cli.rs", "src/store/sqlite/tenants.rs"] {
        let source = read(path);
        for (name, body) in async_fns(&source) {
            for call in BLOCKING_IO {
                for (at, _) in body.match_indices(call) {
                    let in_thread = BLOCKING_CLOSURES.iter().any(|c| body[..at].contains(c));
                    assert!(in_thread, "{path}: async fn {name} calls {call} on an async worker");
                }
            }
        }
    }
}
