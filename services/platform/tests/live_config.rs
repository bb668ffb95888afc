//! Live configuration from a real Consul agent: each new version of the service's document
//! reaches the running service; one that does not parse is ignored.

use std::time::Duration;

use ftgo_platform::{
    config::{self, CommonConfig},
    runtime::Running,
};
use ftgo_testenv::Consul;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn put(consul: &Consul, document: &str) {
    reqwest::Client::new()
        .put(format!("{}/v1/kv/ftgo/config/live-service", consul.http_url()))
        .body(document.to_owned())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

#[tokio::test]
async fn each_new_document_is_applied_while_running_and_a_broken_one_is_ignored() {
    let consul = Consul::start().await.unwrap();
    let mut running = Running::new("127.0.0.1:1".parse().unwrap(), CancellationToken::new());
    let (applied, mut received) = mpsc::unbounded_channel();
    config::watch_consul(&mut running, "live-service", &consul.http_url(), CommonConfig::local("live"), move |c| {
        let _ = applied.send(c);
    });
    let next = async |received: &mut mpsc::UnboundedReceiver<CommonConfig>| {
        tokio::time::timeout(Duration::from_secs(10), received.recv()).await.expect("a new configuration").unwrap()
    };

    put(&consul, "log_level = \"debug\"\n").await;
    assert_eq!(next(&mut received).await.base.log_level, "debug");

    put(&consul, "log_level = 42\n[database]\nmax_connections = \"many\"\n").await;
    put(&consul, "log_level = \"warn\"\n").await;
    let applied = next(&mut received).await;
    assert_eq!(applied.base.log_level, "warn", "the broken document was skipped, not applied");
    assert_eq!(applied.database.max_connections, 10, "keys the document leaves out keep their defaults");

    running.stop().await.unwrap();
}
