//! TLS to Postgres: a cluster of the test's own, started with `ssl=on` and a certificate the
//! test makes with openssl; `sslmode=require` and `verify-full` with the right CA connect
//! (the whole server: pool, listener, migrations), a wrong CA is refused with a clear message.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgedesk::store::postgres::tls;

use crate::common::{Backend, PgDatabase, TestServer};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate it signed for localhost and 127.0.0.1, and an unrelated CA.
fn make_certificates(dir: &Path) {
    let ossl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    for ca in ["ca", "other-ca"] {
        ossl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=edgedesk test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    ossl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
}

struct Cluster {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_bin() -> Option<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql").ok()?.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
    found.sort();
    found.pop().filter(|bin| bin.join("initdb").exists())
}

/// Runs `cmd` as the postgres user when we are root (initdb and postgres refuse root).
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

async fn tls_cluster() -> Option<Cluster> {
    let bin = pg_bin()?;
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let data = dir.path().join("data");
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()));
    }
    run(as_pg(&bin.join("initdb")).args(["-U", "postgres", "-A", "trust", "--no-sync", "-D"]).arg(&data).stdout(Stdio::null()));
    for f in ["server.crt", "server.key"] {
        std::fs::copy(dir.path().join(f), data.join(f)).unwrap();
    }
    if is_root() {
        run(Command::new("chown").args(["postgres:", "server.crt", "server.key"]).current_dir(&data));
    }
    run(Command::new("chmod").args(["0600", "server.key"]).current_dir(&data));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = as_pg(&bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir.path())
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "ssl=on", "-c", "max_connections=100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres starts");
    let cluster = Cluster { child, port, dir };
    for _ in 0..100 {
        if tokio_postgres::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"), tokio_postgres::NoTls).await.is_ok() {
            return Some(cluster);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the TLS test cluster did not come up");
}

async fn ssl_in_use(url: &str) -> Result<bool, String> {
    let target = tls::target(url, None).map_err(|e| e.to_string())?;
    let (client, connection) = target.config.connect(target.tls).await.map_err(|e| tls::describe(&e))?;
    tokio::spawn(connection);
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn postgres_over_tls_require_verify_full_and_a_wrong_ca() {
    if !Backend::postgres_available() {
        return;
    }
    let Some(cluster) = tls_cluster().await else {
        assert!(std::env::var_os("CI").is_none(), "Postgres server binaries are missing in CI");
        eprintln!("SKIPPED: no Postgres server binaries here (CI installs them)");
        return;
    };
    let port = cluster.port;
    let ca = cluster.dir.path().join("ca.pem");
    let other = cluster.dir.path().join("other-ca.pem");
    let base = format!("postgres://postgres@localhost:{port}/postgres");
    assert_eq!(ssl_in_use(&format!("{base}?sslmode=require")).await, Ok(true), "require: encrypted");
    assert_eq!(ssl_in_use(&format!("{base}?sslmode=disable")).await, Ok(false), "disable: plain");
    assert_eq!(ssl_in_use(&base).await, Ok(true), "prefer (the default) takes TLS when offered");
    let full = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    assert_eq!(ssl_in_use(&full).await, Ok(true), "verify-full with the right CA");
    let ip = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}", ca.display());
    assert_eq!(ssl_in_use(&ip).await, Ok(true), "verify-full by address");
    let wrong = format!("{base}?sslmode=verify-full&sslrootcert={}", other.display());
    let err = ssl_in_use(&wrong).await.expect_err("a wrong CA is refused");
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "a clear message: {err}");
    let wrong_ca = format!("{base}?sslmode=verify-ca&sslrootcert={}", other.display());
    assert!(ssl_in_use(&wrong_ca).await.is_err(), "verify-ca checks the chain too");

    // The whole server over verify-full: migrations, the pool and the change-feed listener.
    let pg = PgDatabase::create_on(&format!("postgres://postgres@localhost:{port}/postgres?sslmode=disable")).await;
    let secure = |url: &str| format!("{}?sslmode=verify-full", url.replace("127.0.0.1", "localhost"));
    let pg = PgDatabase { app_url: secure(&pg.app_url), admin_url: secure(&pg.admin_url), superuser_url: pg.superuser_url.clone() };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.clone();
    let s = TestServer::start_on_with(dir, Some(pg), move |c| c.database_ca_file = Some(ca_file)).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Over TLS").await;
    s.ticket(&admin, &ws, serde_json::json!({ "title": "encrypted all the way" })).await;
    s.stop().await;
}
