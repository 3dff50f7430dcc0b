//! The test harness: a real server on 127.0.0.1:0 over a temporary data directory, and a
//! real HTTP client with helpers for the calls every test needs.

use std::time::Duration;

use edgedesk::app::{App, Server};
use edgedesk::auth::throttle::ThrottleLimits;
use edgedesk::config::Config;
use reqwest::Method;
use serde_json::{Value, json};

pub struct TestServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub backend: Backend,
    pub pg: Option<PgDatabase>,
    server: Option<Server>,
}

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Whether the Postgres half of the suite can run. Outside CI, without a database, it is
    /// skipped with a loud note; in CI (`CI` set) a missing database fails the test.
    pub fn postgres_available() -> bool {
        if std::env::var_os("EDGEDESK_TEST_DATABASE_URL").is_some() {
            return true;
        }
        if std::env::var_os("CI").is_some() {
            panic!("CI must run the Postgres tests, but EDGEDESK_TEST_DATABASE_URL is not set (scripts/test starts a cluster)");
        }
        eprintln!("SKIPPED on Postgres: EDGEDESK_TEST_DATABASE_URL is not set. Run scripts/test to include the Postgres backend.");
        false
    }
}

pub use crate::pgdb::PgDatabase;

/// Terminates every instance's LISTEN connection in `pg`'s database, as a failover or an
/// administrator would; returns how many there were.
pub async fn kill_listeners(pg: &PgDatabase) -> usize {
    let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.expect("superuser connects");
    tokio::spawn(connection);
    su.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'edgedesk-listener' AND datname = current_database()", &[])
        .await
        .expect("listeners terminated")
        .len()
}

/// Runs a test body once per backend, as `name::sqlite` and `name::postgres`.
macro_rules! both_backends {
    (async fn $name:ident($b:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($b: crate::common::Backend) $body

            #[tokio::test]
            async fn sqlite() {
                run(crate::common::Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                if crate::common::Backend::postgres_available() {
                    run(crate::common::Backend::Postgres).await
                }
            }
        }
    };
}
pub(crate) use both_backends;

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Resp {
    /// Asserts an error response: the status and a problem+json body that says the same.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "expected {status}, got {} {}", self.status, self.body);
        assert_eq!(self.content_type, "application/problem+json", "{}", self.body);
        assert_eq!(self.body["status"], status, "{}", self.body);
        self
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "expected {status}, got {} {}", self.status, self.body);
        &self.body
    }
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

pub const PASSWORD: &str = "correct horse battery";

/// Generous limits so that ordinary tests never trip the login throttle.
pub fn relaxed_limits() -> ThrottleLimits {
    ThrottleLimits { per_account: 1000, per_ip: 10_000, ..ThrottleLimits::default() }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, relaxed_limits(), |_| {}).await
    }

    pub async fn start_with(backend: Backend, limits: ThrottleLimits, tweak: impl FnOnce(&mut Config)) -> Self {
        let pg = match backend {
            Backend::Postgres => Some(PgDatabase::create().await),
            Backend::Sqlite => None,
        };
        Self::start_in(tempfile::tempdir().expect("temp dir"), backend, pg, limits, tweak).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        backend: Backend,
        pg: Option<PgDatabase>,
        limits: ThrottleLimits,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        // Server logs in test output, filtered by RUST_LOG (quiet by default).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let mut config = Config::for_data_dir(dir.path().join("data"));
        config.bcrypt_cost = 4;
        if let Some(pg) = &pg {
            config.database_url = Some(edgedesk::config::Secret::new(pg.app_url.clone()));
            config.admin_database_url = Some(edgedesk::config::Secret::new(pg.admin_url.clone()));
            config.database_pool_size = 8;
        }
        tweak(&mut config);
        let app = App::build_with(config, limits).await.expect("app builds");
        let server = edgedesk::app::start(app).await.expect("server starts");
        let base = format!("http://{}", server.addr);
        edgedesk::crypto::install_tls_provider();
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        Self { base, dir, http, backend, pg, server: Some(server) }
    }

    /// The running application, for what a test must reach past HTTP (the runner).
    pub fn app(&self) -> &App {
        &self.server.as_ref().expect("a running server").app
    }

    /// Waits until every durable log consumer of `ws` whose watermark the store keeps stands
    /// at the log's head (its own events, such as notifications, included).
    pub async fn consumers_caught_up(&self, ws: &str) {
        let ws: edgedesk::store::WorkspaceId = ws.parse().expect("workspace id");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let store = self.app().store().clone();
        loop {
            let tenant = store.tenants.open(ws).await.expect("workspace opens");
            let head = tenant.head().await.expect("head");
            let mut behind = false;
            for name in self.app().runner().stored_names() {
                behind |= tenant.consumers().state(name).await.expect("state").position < head;
            }
            if !behind {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the log consumers of {ws} did not catch up with {head}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A server over existing storage: a data directory (SQLite) or a database (Postgres).
    pub async fn start_on(dir: tempfile::TempDir, pg: Option<PgDatabase>) -> Self {
        Self::start_on_with(dir, pg, |_| {}).await
    }

    pub async fn start_on_with(dir: tempfile::TempDir, pg: Option<PgDatabase>, tweak: impl FnOnce(&mut Config)) -> Self {
        let backend = if pg.is_some() { Backend::Postgres } else { Backend::Sqlite };
        Self::start_in(dir, backend, pg, relaxed_limits(), tweak).await
    }

    /// Two servers on one Postgres database, or `None` when the Postgres half is skipped
    /// (see [`Backend::postgres_available`]).
    pub async fn two_postgres_instances() -> Option<(Self, Self)> {
        if !Backend::postgres_available() {
            return None;
        }
        let one = Self::start(Backend::Postgres).await;
        let two = one.second_instance().await;
        Some((one, two))
    }

    /// Another server on the same database (Postgres): a second instance behind the same
    /// load balancer, with its own caches.
    pub async fn second_instance(&self) -> Self {
        assert_eq!(self.backend, Backend::Postgres, "instances share a database only in Postgres mode");
        Self::start_in(tempfile::tempdir().expect("temp dir"), self.backend, self.pg.clone(), relaxed_limits(), |_| {}).await
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops the server and starts a new one on the same storage and the same address, as
    /// a redeployed server comes back where its clients left it.
    pub async fn restart_in_place(self) -> Self {
        let addr = self.server.as_ref().expect("a running server").addr;
        self.restart_with(|c| c.listen = addr).await
    }

    /// Stops the server and starts a new one on the same storage with changed settings.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Self::start_in(dir, self.backend, self.pg.clone(), relaxed_limits(), tweak).await
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("server stops");
        }
    }

    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let res = req.send().await.expect("request is answered");
        let status = res.status().as_u16();
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = res.text().await.expect("body");
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Resp { status, content_type, body }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let body = body.map(|v| ("application/json", serde_json::to_vec(&v).expect("json")));
        self.raw(method, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Resp {
        self.call(Method::POST, "/api/auth/login", None, Some(json!({ "email": email, "password": password }))).await
    }

    /// Creates the first administrator and logs in.
    pub async fn admin(&self) -> User {
        let email = "admin@example.com";
        let created =
            self.call(Method::POST, "/api/setup", None, Some(json!({ "email": email, "password": PASSWORD, "name": "Admin" }))).await;
        let id = created.ok(201)["id"].as_str().expect("id").to_string();
        let token = self.login(email, PASSWORD).await.ok(200)["token"].as_str().expect("token").to_string();
        User { id, email: email.into(), token }
    }

    /// Creates a user (as `admin`) and logs in as them.
    pub async fn user(&self, admin: &User, name: &str) -> User {
        let email = format!("{name}@example.com");
        let created = self.post("/api/users", &admin.token, json!({ "email": email, "password": PASSWORD, "name": name })).await;
        let id = created.ok(201)["id"].as_str().expect("id").to_string();
        let token = self.login(&email, PASSWORD).await.ok(200)["token"].as_str().expect("token").to_string();
        User { id, email, token }
    }

    pub async fn workspace(&self, owner: &User, name: &str) -> String {
        self.post("/api/workspaces", &owner.token, json!({ "name": name })).await.ok(201)["id"].as_str().expect("id").to_string()
    }

    pub async fn add_member(&self, admin: &User, ws: &str, user: &User, role: &str) {
        let res = self.post(&format!("/api/workspaces/{ws}/members"), &admin.token, json!({ "user_id": user.id, "role": role })).await;
        assert!(res.status == 201 || res.status == 200, "{res:?}");
    }

    pub async fn ticket(&self, user: &User, ws: &str, body: Value) -> Value {
        self.post(&format!("/api/workspaces/{ws}/tickets"), &user.token, body).await.ok(201).clone()
    }

    /// The workspace log's head as the owner sees it (via delta).
    pub async fn head(&self, owner: &User, ws: &str) -> i64 {
        let mut after = 0;
        loop {
            let page = self.get(&format!("/api/workspaces/{ws}/sync/delta?after={after}&limit=1000"), &owner.token).await;
            let body = page.ok(200);
            after = body["last_sync_id"].as_i64().expect("last_sync_id");
            if !body["has_more"].as_bool().expect("has_more") {
                return after;
            }
        }
    }

    /// Parses a bootstrap into (header, rows, footer).
    pub async fn bootstrap(&self, token: &str, ws: &str) -> (Value, Vec<Value>, Value) {
        let res =
            self.http.get(format!("{}/api/workspaces/{ws}/sync/bootstrap", self.base)).bearer_auth(token).send().await.expect("bootstrap");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        let text = res.text().await.expect("body");
        let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
        let footer = lines.pop().expect("footer");
        assert_eq!(footer["type"], "footer");
        let header = lines.remove(0);
        assert_eq!(header["type"], "header");
        assert_eq!(footer["count"].as_u64(), Some(lines.len() as u64));
        (header, lines, footer)
    }
}

/// Every ticket id in a list, walking all pages.
pub async fn all_pages(server: &TestServer, token: &str, path_and_query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path_and_query}{sep}cursor={c}"),
            None => path_and_query.to_string(),
        };
        let page = server.get(&url, token).await;
        let body = page.ok(200);
        items.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
    }
}

/// A test input kept in `fixtures/` (a real artefact: an `.eml` message, a Yjs update).
pub fn fixture(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(relative)
}
