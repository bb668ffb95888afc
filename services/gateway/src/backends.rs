//! The gRPC clients of the services behind the gateway, each wrapped in its calling policy.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use ftgo_platform::telemetry;
use ftgo_proto::{
    accounting::v1::accounting_service_client::AccountingServiceClient,
    consumer::v1::consumer_service_client::ConsumerServiceClient,
    kitchen::v1::kitchen_service_client::KitchenServiceClient,
    orchestrator::v1::saga_service_client::SagaServiceClient, order::v1::order_service_client::OrderServiceClient,
};
use opentelemetry::{KeyValue, metrics::ObservableGauge};
use tonic::{
    Request, Response, Status,
    metadata::{Ascii, MetadataKey},
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
        self.policy
            .run_waiting(idempotency, wait, |deadline| {
                let mut request = Request::new(message.clone());
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

/// Every service the gateway talks to.
#[derive(Debug, Clone)]
pub struct Backends {
    pub consumer: Backend<ConsumerServiceClient<Channel>>,
    pub kitchen: Backend<KitchenServiceClient<Channel>>,
    pub accounting: Backend<AccountingServiceClient<Channel>>,
    pub order: Backend<OrderServiceClient<Channel>>,
    pub orchestrator: Backend<SagaServiceClient<Channel>>,
}

impl Backends {
    /// Prepares a lazily connected channel per service: nothing is dialled until the first call,
    /// and a service that is down only fails the calls that need it.
    pub fn connect(addresses: &BackendsConfig, resilience: &ResilienceConfig) -> Result<Self> {
        fn backend<C>(
            name: &'static str,
            url: &str,
            resilience: &ResilienceConfig,
            client: fn(Channel) -> C,
        ) -> Result<Backend<C>> {
            let channel = Endpoint::from_shared(url.to_owned())
                .with_context(|| format!("backends.{name}: {url:?} is not a valid URL"))?
                .connect_timeout(resilience.connect_timeout)
                .connect_lazy();
            let breaker = CircuitBreaker::new(resilience.breaker_failures, resilience.breaker_open_for);
            let policy = CallPolicy::new(name, resilience.call_timeout, breaker);
            Ok(Backend { client: client(channel), policy: Arc::new(policy) })
        }
        Ok(Self {
            consumer: backend("consumer", &addresses.consumer, resilience, ConsumerServiceClient::new)?,
            kitchen: backend("kitchen", &addresses.kitchen, resilience, KitchenServiceClient::new)?,
            accounting: backend("accounting", &addresses.accounting, resilience, AccountingServiceClient::new)?,
            order: backend("order", &addresses.order, resilience, OrderServiceClient::new)?,
            orchestrator: backend("orchestrator", &addresses.orchestrator, resilience, SagaServiceClient::new)?,
        })
    }

    /// Applies new deadlines and breaker thresholds to every backend (live configuration).
    pub fn configure(&self, resilience: &ResilienceConfig) {
        self.consumer.configure(resilience);
        self.kitchen.configure(resilience);
        self.accounting.configure(resilience);
        self.order.configure(resilience);
        self.orchestrator.configure(resilience);
    }

    /// Each backend's name and the state of its circuit.
    pub fn circuits(&self) -> [(&'static str, BreakerState); 5] {
        [
            ("consumer", self.consumer.breaker_state()),
            ("kitchen", self.kitchen.breaker_state()),
            ("accounting", self.accounting.breaker_state()),
            ("order", self.order.breaker_state()),
            ("orchestrator", self.orchestrator.breaker_state()),
        ]
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
