//! A Postgres database of its own, with the owner and app roles, on the cluster named by
//! EDGEDESK_TEST_DATABASE_URL (a superuser URL; scripts/pg-cluster starts one). Shared by
//! the tests and the load harness (`benches/load.rs` includes this file).

/// A database of its own, on the run's cluster, with the owner and app roles.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pub app_url: String,
    pub admin_url: String,
    /// The cluster's superuser on this database: sees past row-level security.
    #[allow(dead_code)] // read by the tests, not by the load harness that shares this file
    pub superuser_url: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let base = std::env::var("EDGEDESK_TEST_DATABASE_URL").expect("EDGEDESK_TEST_DATABASE_URL");
        Self::create_on(&base).await
    }

    /// A fresh database (and the shared roles) on the cluster `base` names, as its superuser.
    pub async fn create_on(base: &str) -> Self {
        let config: tokio_postgres::Config = base.parse().expect("a Postgres URL");
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            #[allow(unreachable_patterns)]
            _ => panic!("EDGEDESK_TEST_DATABASE_URL must use TCP"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls).await.expect("the test cluster answers");
        tokio::spawn(connection);
        // Roles are cluster-wide and tests run in parallel: create them once, tolerate races.
        client
            .batch_execute(
                "SET client_min_messages = warning;
                 DO $$ BEGIN CREATE ROLE edgedesk_owner LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
                 DO $$ BEGIN CREATE ROLE edgedesk_app LOGIN NOSUPERUSER NOBYPASSRLS; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;",
            )
            .await
            .expect("roles");
        let db = format!("edgedesk_{}", uuid::Uuid::new_v4().simple());
        client.batch_execute(&format!("CREATE DATABASE {db} OWNER edgedesk_owner")).await.expect("database");
        let superuser = config.get_user().unwrap_or("postgres");
        Self {
            app_url: format!("postgres://edgedesk_app@{host}:{port}/{db}"),
            admin_url: format!("postgres://edgedesk_owner@{host}:{port}/{db}"),
            superuser_url: format!("postgres://{superuser}@{host}:{port}/{db}"),
        }
    }
}
