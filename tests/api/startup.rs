//! Starting up: secrets generated on the SQLite default and required with
//! PostgreSQL; the `migrate` subcommand of the real binary.

use std::process::Command;

use figment::providers::Serialized;
use produktly_segment::App;

use crate::common::{self, Backend, Env, TestApp};

async fn sqlite_generates_its_secrets_once_and_keeps_them() {
    let Some(env) = Env::new(Backend::Sqlite).await else {
        return;
    };
    let without_secrets = || {
        env.settings(|f| f.merge(Serialized::default("admin_tokens", "")).merge(Serialized::default("secret_key", "")))
    };
    let app = TestApp::start(without_secrets()).await;
    let token_file = env.db.dir.path().join("admin-token");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert!(token.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let authorized =
        |app: &TestApp| app.http.get(app.url("/admin/v1/workspaces/none")).bearer_auth(token.clone()).send();
    assert_eq!(authorized(&app).await.unwrap().status(), 404, "the generated token is accepted");
    let key_before = std::fs::read_to_string(env.db.dir.path().join("secret-key")).unwrap();
    app.stop().await;

    let again = TestApp::start(without_secrets()).await;
    assert_eq!(authorized(&again).await.unwrap().status(), 404, "the same token after a restart");
    assert_eq!(std::fs::read_to_string(env.db.dir.path().join("secret-key")).unwrap(), key_before);
    again.stop().await;
}

async fn postgres_refuses_to_start_without_configured_secrets() {
    let Some(env) = Env::new(Backend::Postgres).await else {
        return;
    };
    for (key, variable) in [("admin_tokens", "PRODUKTLY_ADMIN_TOKENS"), ("secret_key", "PRODUKTLY_SECRET_KEY")] {
        let settings = env.settings(|f| f.merge(Serialized::default(key, "")));
        let error = App::build(settings).await.err().expect("the start is refused").to_string();
        assert!(error.contains(&format!("{variable} is required with PostgreSQL")), "{error}");
    }
    assert!(!env.db.dir.path().join("admin-token").exists(), "nothing is generated for PostgreSQL");
}

async fn the_migrate_command_applies_the_schema(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let output = Command::new(env!("CARGO_BIN_EXE_produktly-segment"))
        .arg("migrate")
        .env("DATABASE_URL", &env.db.url)
        .env("PRODUKTLY_ADMIN_TOKENS", common::ADMIN_TOKEN)
        .env("PRODUKTLY_SECRET_KEY", common::SECRET_KEY)
        .env("PRODUKTLY_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    let store = produktly_segment::store::connect(&env.settings(|f| f)).await.unwrap();
    store.check_ready().await.expect("the schema is current");
}

#[tokio::test]
async fn sqlite_first_run() {
    sqlite_generates_its_secrets_once_and_keeps_them().await;
}

#[tokio::test]
async fn postgres_requires_secrets() {
    postgres_refuses_to_start_without_configured_secrets().await;
}

on_both_backends!(the_migrate_command_applies_the_schema);

/// `healthcheck` (the container's health check) exits 0 while the service on
/// PRODUKTLY_LISTEN answers, and fails once nothing answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_asks_the_running_service() {
    let Some(env) = Env::new(Backend::Sqlite).await else {
        return;
    };
    let app = env.start_app().await;
    let listen = app.base.trim_start_matches("http://").replace("127.0.0.1", "0.0.0.0");
    let healthcheck = move || {
        Command::new(env!("CARGO_BIN_EXE_produktly-segment"))
            .arg("healthcheck")
            .env("PRODUKTLY_LISTEN", &listen)
            .env("PRODUKTLY_LOG_FORMAT", "json")
            .output()
            .unwrap()
    };
    let alive = tokio::task::spawn_blocking(healthcheck.clone()).await.unwrap();
    assert!(alive.status.success(), "{}", String::from_utf8_lossy(&alive.stdout));
    app.stop().await;
    let gone = tokio::task::spawn_blocking(healthcheck).await.unwrap();
    assert!(!gone.status.success());
}
