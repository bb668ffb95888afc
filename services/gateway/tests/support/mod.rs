//! The whole FTGO back end behind a real gateway, for HTTP tests: Postgres and NATS JetStream,
//! the five services (each with its own database) and the gateway, all on free loopback ports.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use ftgo_catalog::ServiceName;
use ftgo_testenv::eventually;
use std::time::Duration;

use ftgo_api_gateway::Config as GatewayConfig;
use ftgo_platform::{config::ServiceConfig, runtime::Running, service::Service, testing::ServiceWorld};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub struct Stack {
    pub base: String,
    pub http: reqwest::Client,
    pub kitchen: Option<Running>,
    pub accounting: Option<Running>,
    _gateway: Running,
    _others: Vec<Running>,
    pub world: ServiceWorld,
}

/// An HTTP answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// Asserts an error answer in the API's format and returns its message.
    pub fn error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{:#}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{:#}", self.body);
        assert!(self.body["error"]["details"].is_array(), "{:#}", self.body);
        let message = self.body["error"]["message"].as_str().expect("an error message").to_owned();
        assert!(!message.is_empty());
        message
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    /// The stack, with `adjust` applied to the gateway's configuration last.
    pub async fn start_with(adjust: impl FnOnce(&mut GatewayConfig)) -> Stack {
        let world = ServiceWorld::start().await.expect("Postgres and NATS");
        let common = |db| {
            let world = &world;
            async move { world.config(db).await.expect("a service database") }
        };
        let shutdown = CancellationToken::new;
        let plain = |service: &'static Service, db| async move {
            service.start(ServiceConfig { common: common(db).await }, shutdown()).await
        };
        let consumer = plain(&ftgo_consumer_service::SERVICE, "consumer");
        let kitchen = plain(&ftgo_kitchen_service::SERVICE, "kitchen");
        let accounting = plain(&ftgo_accounting_service::SERVICE, "accounting");
        let order = ftgo_order_service::start(ftgo_order_service::Config { common: common("order").await }, shutdown());
        let orchestrator = ftgo_orchestrator_service::start(
            ftgo_orchestrator_service::Config { common: common("orchestrator").await, sagas: Default::default() },
            shutdown(),
        );
        let (consumer, kitchen, accounting, order, orchestrator) =
            tokio::try_join!(consumer, kitchen, accounting, order, orchestrator).expect("the services start");

        let mut config = GatewayConfig::default();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.http.max_body_bytes = 16 * 1024;
        let url = |running: &Running| format!("http://{}", running.addr);
        config.backends.set(ServiceName::Consumer, url(&consumer));
        config.backends.set(ServiceName::Kitchen, url(&kitchen));
        config.backends.set(ServiceName::Accounting, url(&accounting));
        config.backends.set(ServiceName::Order, url(&order));
        config.backends.set(ServiceName::Orchestrator, url(&orchestrator));
        config.resilience.call_timeout = Duration::from_secs(2);
        config.resilience.breaker_failures = 3;
        config.resilience.breaker_open_for = Duration::from_secs(60);
        adjust(&mut config);
        let gateway = ftgo_api_gateway::start(config, shutdown()).await.expect("the gateway starts");

        Stack {
            base: url(&gateway),
            http: reqwest::Client::new(),
            kitchen: Some(kitchen),
            accounting: Some(accounting),
            _gateway: gateway,
            _others: vec![consumer, order, orchestrator],
            world,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer { status, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A consumer whose account the Accounting Service has opened.
    pub async fn consumer(&self) -> String {
        let answer = self.post("/api/consumers", json!({"name": {"firstName": "Ada", "lastName": "Lovelace"}})).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:#}", answer.body);
        let id = answer.body["consumerId"].as_str().unwrap().to_owned();
        eventually("the account to open", Duration::from_secs(30), async || {
            let account = self.get(&format!("/api/accounts/{id}")).await;
            (account.status == StatusCode::OK).then_some(())
        })
        .await;
        id
    }

    /// A restaurant with Vindaloo at 12.50 and Dal at 5.00.
    pub async fn restaurant(&self) -> String {
        let answer = self.post("/api/restaurants", restaurant_body()).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:#}", answer.body);
        answer.body["restaurantId"].as_str().unwrap().to_owned()
    }

    /// Places an order, waiting for the restaurant's menu to reach the Order Service first (it
    /// travels by event; until it arrives the restaurant is unknown there, a 404).
    pub async fn place_order(&self, consumer_id: &str, restaurant_id: &str, line_items: Value) -> Answer {
        let body = json!({
            "consumerId": consumer_id,
            "restaurantId": restaurant_id,
            "deliveryAddress": {"street1": "1 Main St", "city": "Oakland", "state": "CA", "zip": "94612"},
            "lineItems": line_items,
        });
        eventually("the menu to be replicated", Duration::from_secs(30), async || {
            let answer = self.post("/api/orders", body.clone()).await;
            let unreplicated = answer.status == StatusCode::NOT_FOUND
                && answer.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("restaurant") && m.ends_with("does not exist"));
            (!unreplicated).then_some(answer)
        })
        .await
    }

    /// Polls `GET /api/orders/{id}` until the order is in `state`.
    pub async fn order_in_state(&self, order_id: &str, state: &str) -> Value {
        eventually(&format!("order {order_id} to be {state}"), Duration::from_secs(30), async || {
            let answer = self.get(&format!("/api/orders/{order_id}")).await;
            assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
            (answer.body["state"] == state).then_some(answer.body)
        })
        .await
    }
}

pub fn restaurant_body() -> Value {
    json!({
        "name": "Ajanta",
        "address": {"street1": "1 Shattuck Ave", "city": "Berkeley", "state": "CA", "zip": "94704"},
        "menu": {"menuItems": [
            {"id": "1", "name": "Vindaloo", "price": "12.50"},
            {"id": "2", "name": "Dal", "price": "5.00"}
        ]}
    })
}
