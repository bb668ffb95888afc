//! The gRPC clients of the services behind the gateway, each wrapped in its calling policy.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use ftgo_catalog::{Protocol, ServiceName};
use ftgo_platform::{
    admin::DESTINATION_HOST,
    consul::{self, Consul},
    idempotency::KEY_METADATA,
    runtime::Running,
    telemetry,
};
use ftgo_proto::{
    accounting::v1::accounting_service_client::AccountingServiceClient,
    admin::v1::dead_letter_service_client::DeadLetterServiceClient,
    consumer::v1::consumer_service_client::ConsumerServiceClient,
    kitchen::v1::kitchen_service_client::KitchenServiceClient,
    orchestrator::v1::saga_service_client::SagaServiceClient, order::v1::order_service_client::OrderServiceClient,
};
use opentelemetry::{KeyValue, metrics::ObservableGauge};
use tonic::{
    Request, Response, Status,
    metadata::{Ascii, MetadataKey, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{
    BackendsConfig, ResilienceConfig,
    resilience::{BreakerState, CallPolicy, CircuitBreaker, Idempotency},
};

/// One service's client and the policy every call to it goes through.
#[derive(Debug)]
pub struct Backend<C> {
    client: C,
    policy: Arc<CallPolicy>,
}

impl<C: Clone> Clone for Backend<C> {
    fn clone(&self) -> Self {
        Self { client: self.client.clone(), policy: self.policy.clone() }
    }
}

impl<C: Clone> Backend<C> {
    /// Calls the backend with `message` through its policy. `rpc` is a client method, e.g.
    /// `|mut c, r| async move { c.get_order(r).await }`.
    pub async fn call<M, T, F, Fut>(&self, idempotency: Idempotency, message: M, rpc: F) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(C, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_waiting(idempotency, Duration::ZERO, message, rpc).await
    }

    /// [`call`](Self::call) for a call the backend may hold for up to `wait` on purpose.
    pub async fn call_waiting<M, T, F, Fut>(
        &self,
        idempotency: Idempotency,
        wait: Duration,
        message: M,
        rpc: F,
    ) -> Result<T, Status>
    where
        M: Clone,
        F: Fn(C, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        // A command with an idempotency key may be sent again: its service answers a repeat with
        // the first answer.
        let key = crate::idempotency::current().and_then(|key| MetadataValue::try_from(key).ok());
        let idempotency = if key.is_some() { Idempotency::Idempotent } else { idempotency };
        self.policy
            .run_waiting(idempotency, wait, |deadline| {
                let mut request = Request::new(message.clone());
                if let Some(key) = &key {
                    request.metadata_mut().insert(KEY_METADATA, key.clone());
                }
                // Tells the server when the gateway stops waiting, so it can stop working too.
                request.set_timeout(deadline);
                // Carries the trace along, so the service's span joins the request's trace.
                for (name, value) in telemetry::current_context_headers() {
                    if let (Ok(name), Ok(value)) = (name.parse::<MetadataKey<Ascii>>(), value.parse()) {
                        request.metadata_mut().insert(name, value);
                    }
                }
                rpc(self.client.clone(), request)
            })
            .await
            .map(Response::into_inner)
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.policy.breaker.state()
    }

    fn configure(&self, resilience: &ResilienceConfig) {
        self.policy.set_timeout(resilience.call_timeout);
        self.policy.breaker.configure(resilience.breaker_failures, resilience.breaker_open_for);
    }
}

/// Adds `dsthost: <binary>` to every call, so that Fabio's gRPC proxy routes it to that service's
/// admin API (every service serves one under the same gRPC name).
#[derive(Debug, Clone)]
pub struct DestinationHost(MetadataValue<Ascii>);

impl Interceptor for DestinationHost {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(DESTINATION_HOST, self.0.clone());
        Ok(request)
    }
}

/// A service's admin API (its dead letters), on the service's own channel and policy.
pub type AdminClient = DeadLetterServiceClient<InterceptedService<Channel, DestinationHost>>;

/// Every service the gateway talks to.
#[derive(Debug, Clone)]
pub struct Backends {
    pub consumer: Backend<ConsumerServiceClient<Channel>>,
    pub kitchen: Backend<KitchenServiceClient<Channel>>,
    pub accounting: Backend<AccountingServiceClient<Channel>>,
    pub order: Backend<OrderServiceClient<Channel>>,
    pub orchestrator: Backend<SagaServiceClient<Channel>>,
    /// Each back-end service's admin API, in catalog order.
    admin: Vec<(ServiceName, Backend<AdminClient>)>,
}

impl Backends {
    /// Prepares a lazily connected channel per service: nothing is dialled until the first call,
    /// and a service that is down only fails the calls that need it.
    pub fn connect(addresses: &BackendsConfig, resilience: &ResilienceConfig) -> Result<Self> {
        if let Some(service) = addresses.0.keys().find(|s| s.protocol() != Protocol::Grpc) {
            anyhow::bail!("backends.{service}: the {service} is not a back-end service");
        }
        let mut admin = Vec::new();
        // One channel and one policy per service, shared by its API client and its admin client.
        let mut backend = |service: ServiceName| -> Result<(Channel, Arc<CallPolicy>)> {
            let url = addresses.address(service).with_context(|| format!("backends.{service} is not set"))?;
            let channel = Endpoint::from_shared(url.to_owned())
                .with_context(|| format!("backends.{service}: {url:?} is not a valid URL"))?
                .connect_timeout(resilience.connect_timeout)
                .connect_lazy();
            let breaker = CircuitBreaker::new(resilience.breaker_failures, resilience.breaker_open_for);
            let policy = Arc::new(CallPolicy::new(service.as_str(), resilience.call_timeout, breaker));
            let host = DestinationHost(MetadataValue::from_static(service.binary()));
            let client = DeadLetterServiceClient::with_interceptor(channel.clone(), host);
            admin.push((service, Backend { client, policy: policy.clone() }));
            Ok((channel, policy))
        };
        fn api<C>((channel, policy): (Channel, Arc<CallPolicy>), client: fn(Channel) -> C) -> Backend<C> {
            Backend { client: client(channel), policy }
        }
        Ok(Self {
            consumer: api(backend(ServiceName::Consumer)?, ConsumerServiceClient::new),
            kitchen: api(backend(ServiceName::Kitchen)?, KitchenServiceClient::new),
            accounting: api(backend(ServiceName::Accounting)?, AccountingServiceClient::new),
            order: api(backend(ServiceName::Order)?, OrderServiceClient::new),
            orchestrator: api(backend(ServiceName::Orchestrator)?, SagaServiceClient::new),
            admin,
        })
    }

    /// The admin API of `service`, if it has one (every back-end service does).
    pub fn admin(&self, service: ServiceName) -> Option<&Backend<AdminClient>> {
        self.admin.iter().find(|(s, _)| *s == service).map(|(_, backend)| backend)
    }

    /// Applies new deadlines and breaker thresholds to every backend (live configuration). Each
    /// service's clients share one policy, so configuring its admin client configures them all.
    pub fn configure(&self, resilience: &ResilienceConfig) {
        for (_, backend) in &self.admin {
            backend.configure(resilience);
        }
    }

    /// Follows, in the Consul at `consul_addr`, how many instances of each backend pass their
    /// health checks, as tasks of `running`: when there are more than before (one came back), the
    /// backend's circuit, if open, tries it again promptly ([`CircuitBreaker::healthy_instance_seen`]).
    pub fn follow_health(&self, running: &mut Running, consul_addr: &str) -> Result<()> {
        let consul = Consul::new(consul_addr)?;
        for (service, backend) in &self.admin {
            let (consul, service, policy) = (consul.clone(), *service, backend.policy.clone());
            let shutdown = running.shutdown_token();
            running.spawn("backend health", async move {
                let (mut index, mut passing) = (0, None);
                loop {
                    let answer = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        answer = consul.passing_instances_watch(service.binary(), index) => answer,
                    };
                    match answer {
                        Ok(seen) => {
                            index = seen.next_index(index);
                            if passing.is_some_and(|before| seen.value > before) {
                                tracing::debug!(%service, passing = seen.value, "an instance is back");
                                policy.breaker.healthy_instance_seen();
                            }
                            passing = Some(seen.value);
                        }
                        Err(e) if consul::pause_after(&e, "the backends' health", &shutdown).await => {}
                        Err(_) => return Ok(()),
                    }
                }
            });
        }
        Ok(())
    }

    /// Each backend's name and the state of its circuit, in catalog order.
    pub fn circuits(&self) -> Vec<(&'static str, BreakerState)> {
        self.admin.iter().map(|(service, backend)| (service.as_str(), backend.breaker_state())).collect()
    }

    /// A gauge of every backend's circuit: 0 closed, 1 half-open, 2 open. Reported while the
    /// returned instrument is alive.
    pub fn observe_circuits(self) -> ObservableGauge<u64> {
        telemetry::meter()
            .u64_observable_gauge("ftgo.gateway.circuit_state")
            .with_description("Circuit breaker state per backend: 0 closed, 1 half-open, 2 open")
            .with_callback(move |observer| {
                for (backend, state) in self.circuits() {
                    let value = match state {
                        BreakerState::Closed => 0,
                        BreakerState::HalfOpen => 1,
                        BreakerState::Open => 2,
                    };
                    observer.observe(value, &[KeyValue::new("backend", backend)]);
                }
            })
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn loaded(document: &str) -> anyhow::Result<Config> {
        ftgo_platform::config::with_consul_document("api-gateway", Config::default(), document)
    }

    #[tokio::test]
    async fn an_instance_back_in_consul_makes_the_open_circuit_try_again_at_once() {
        let consul = ftgo_testenv::Consul::start().await.unwrap();
        let mut config = Config::default();
        config.resilience.breaker_failures = 1;
        let backends = Backends::connect(&config.backends, &config.resilience).unwrap();
        let mut running = Running::new("127.0.0.1:1".parse().unwrap(), tokio_util::sync::CancellationToken::new());
        backends.follow_health(&mut running, &consul.http_url()).unwrap();

        // The Order Service is down long enough for its circuit's backoff to reach 2 s.
        let breaker = &backends.order.policy.breaker;
        let fail = || breaker.try_acquire().expect("a permit").record(false);
        fail();
        for open in [250, 500, 1000] {
            tokio::time::sleep(Duration::from_millis(open)).await;
            fail();
        }
        let opened = std::time::Instant::now();
        assert_eq!(breaker.state(), BreakerState::Open);

        // An instance registers, passing: the circuit tries it within FIRST_OPEN, not in 2 s.
        let instance = serde_json::json!({"ID": "order-1", "Name": "order-service", "Address": "127.0.0.1", "Port": 1});
        ftgo_platform::consul::Consul::new(&consul.http_url()).unwrap().agent_register(&instance).await.unwrap();
        while breaker.state() == BreakerState::Open {
            assert!(
                opened.elapsed() < Duration::from_millis(1500),
                "still open {:?} after it opened",
                opened.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(backends.kitchen.breaker_state(), BreakerState::Closed, "the other circuits are not touched");
        running.stop().await.unwrap();
    }

    #[tokio::test]
    async fn backends_are_keyed_by_the_catalogs_back_end_services() {
        let config = loaded("[backends]\nkitchen = \"http://10.0.0.7:7102\"\n").unwrap();
        assert_eq!(config.backends.address(ServiceName::Kitchen), Some("http://10.0.0.7:7102"));
        assert_eq!(
            config.backends.address(ServiceName::Order),
            Some("http://127.0.0.1:7104"),
            "the rest keep their defaults"
        );
        assert!(Backends::connect(&config.backends, &config.resilience).is_ok());

        let typo = loaded("[backends]\nkitchn = \"http://10.0.0.7:7102\"\n").unwrap_err();
        assert!(format!("{typo:#}").contains("kitchn"), "{typo:#}");

        let mut gateway = Config::default();
        gateway.backends.set(ServiceName::Gateway, "http://127.0.0.1:8080");
        let refused = Backends::connect(&gateway.backends, &gateway.resilience).unwrap_err();
        assert_eq!(refused.to_string(), "backends.gateway: the gateway is not a back-end service");

        let mut missing = Config::default();
        missing.backends.0.remove(&ServiceName::Order);
        let refused = Backends::connect(&missing.backends, &missing.resilience).unwrap_err();
        assert_eq!(refused.to_string(), "backends.order is not set");
    }
}
