//! Configuration layering against a real Consul agent. One test function: it sets process-wide
//! environment variables, which tests running in parallel would see.

use ftgo_platform::config::{self, CommonConfig};
use ftgo_testenv::Consul;

#[tokio::test]
async fn defaults_then_file_then_consul_then_environment_with_clear_errors_for_bad_values() {
    ftgo_testenv::init_test_tracing();
    let consul = Consul::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test-service.toml");
    let defaults = CommonConfig::local("test");
    // SAFETY (for set_var/remove_var): this binary runs this one test only, so no other thread
    // reads the environment meanwhile.
    let set = |key: &str, value: &str| unsafe { std::env::set_var(key, value) };
    let unset = |key: &str| unsafe { std::env::remove_var(key) };

    // The file overrides the defaults.
    std::fs::write(&file, "log_level = \"debug\"\n[grpc]\nlisten = \"127.0.0.1:7001\"\n").unwrap();
    set("FTGO_CONFIG_FILE", file.to_str().unwrap());
    let loaded = config::load("test-service", defaults.clone()).await.unwrap();
    assert_eq!(loaded.base.log_level, "debug");
    assert_eq!(loaded.grpc.listen.port(), 7001);
    assert_eq!(loaded.database, defaults.database);

    // Consul KV is read only outside `local`.
    reqwest::Client::new()
        .put(format!("{}/v1/kv/ftgo/config/test-service", consul.http_url()))
        .body("log_level = \"trace\"\n[database]\nmax_connections = 3\n")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    set("FTGO_CONSUL__ADDR", &consul.http_url());
    let local = config::load("test-service", defaults.clone()).await.unwrap();
    assert_eq!(local.database.max_connections, 10, "local ignores Consul");

    set("FTGO_ENVIRONMENT", "staging");
    let staged = config::load("test-service", defaults.clone()).await.unwrap();
    assert_eq!(staged.database.max_connections, 3, "Consul overrides the defaults");
    assert_eq!(staged.base.log_level, "trace", "Consul overrides the file");
    assert_eq!(staged.grpc.listen.port(), 7001, "what Consul does not set comes from the file");

    // The environment overrides everything.
    set("FTGO_LOG_LEVEL", "warn");
    set("FTGO_DATABASE__MAX_CONNECTIONS", "7");
    let overridden = config::load("test-service", defaults.clone()).await.unwrap();
    assert_eq!(overridden.base.log_level, "warn");
    assert_eq!(overridden.database.max_connections, 7);

    // Bad values are errors that name the key, not silent defaults.
    set("FTGO_DATABASE__MAX_CONNECTIONS", "lots");
    let err = format!("{:#}", config::load("test-service", defaults.clone()).await.unwrap_err()).to_lowercase();
    assert!(err.contains("max_connections"), "{err}");
    unset("FTGO_DATABASE__MAX_CONNECTIONS");
    set("FTGO_DATABASE__URLL", "postgres://typo");
    let err = format!("{:#}", config::load("test-service", defaults.clone()).await.unwrap_err()).to_lowercase();
    assert!(err.contains("urll"), "{err}");
    unset("FTGO_DATABASE__URLL");

    // A missing key in Consul is no error.
    set("FTGO_CONSUL__ADDR", &consul.http_url());
    let other = config::load("other-service", defaults.clone()).await.unwrap();
    assert_eq!(other.database.max_connections, 10);
    for key in ["FTGO_CONFIG_FILE", "FTGO_CONSUL__ADDR", "FTGO_ENVIRONMENT", "FTGO_LOG_LEVEL"] {
        unset(key);
    }
}
