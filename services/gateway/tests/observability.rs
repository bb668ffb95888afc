//! Traces and metrics. One trace follows an order from the client's HTTP request through the
//! gateway, gRPC, every outbox and NATS hop and every saga participant, to the saga's last step;
//! the metrics count what happened on the way. (Its own test binary: it installs the process's
//! tracer and meter providers, with in-memory exporters.)

mod support;

use std::time::Duration;

use opentelemetry_sdk::{
    metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider, data::AggregatedMetrics, data::MetricData},
    trace::{InMemorySpanExporter, SdkTracerProvider},
};
use reqwest::StatusCode;
use serde_json::json;
use support::Stack;

#[tokio::test]
async fn one_trace_follows_an_order_to_the_last_saga_step_and_metrics_count_its_journey() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    ftgo_platform::telemetry::install(&provider, "warn");
    let metric_exporter = InMemoryMetricExporter::default();
    let meters =
        SdkMeterProvider::builder().with_reader(PeriodicReader::builder(metric_exporter.clone()).build()).build();
    ftgo_platform::telemetry::install_meter_provider(&meters);

    let stack = Stack::start().await;
    let consumer_id = stack.consumer().await;
    let restaurant_id = stack.restaurant().await;
    // A first order waits for the menu to reach the Order Service, so the traced one goes through.
    let first = stack.place_order(&consumer_id, &restaurant_id, json!([{"menuItemId": "1", "quantity": 1}])).await;
    assert_eq!(first.status, StatusCode::CREATED);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = stack
        .http
        .post(format!("{}/api/orders", stack.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({
            "consumerId": consumer_id,
            "restaurantId": restaurant_id,
            "deliveryAddress": {"street1": "1 Main St", "city": "Oakland", "state": "CA", "zip": "94612"},
            "lineItems": [{"menuItemId": "2", "quantity": 1}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: serde_json::Value = response.json().await.unwrap();
    stack.order_in_state(order["orderId"].as_str().unwrap(), "APPROVED").await;

    let expected = [
        "POST /api/orders",
        "/ftgo.order.v1.OrderService/CreateOrder",
        "handle ftgo.order.v1.OrderCreated",
        "handle ftgo.consumer.v1.VerifyConsumer",
        "handle ftgo.kitchen.v1.CreateTicket",
        "handle ftgo.accounting.v1.AuthorizeCard",
        "handle ftgo.kitchen.v1.ConfirmCreateTicket",
        "handle ftgo.order.v1.ApproveOrder",
        "handle ftgo.order.v1.OrderCommandSucceeded",
    ];
    let mut names = Vec::new();
    for _ in 0..100 {
        let _ = provider.force_flush();
        names = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| span.span_context.trace_id().to_string() == trace_id)
            .map(|span| span.name.to_string())
            .collect();
        if expected.iter().all(|e| names.iter().any(|n| n == e)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for span in expected {
        assert!(names.iter().any(|n| n == span), "no {span:?} in the order's trace; it has {names:#?}");
    }
    // Nothing from the first order leaked into this trace.
    let other_orders = names.iter().filter(|n| n.as_str() == "POST /api/orders").count();
    assert_eq!(other_orders, 1);

    // The metrics: two Create Order sagas succeeded; requests, message outcomes, the outbox lag
    // and every circuit were measured.
    let mut succeeded = 0;
    for _ in 0..50 {
        meters.force_flush().unwrap();
        succeeded = metric_totals(&metric_exporter, ("saga_type", "CreateOrderSaga"))
            .get("ftgo.sagas.finished")
            .copied()
            .unwrap_or(0);
        if succeeded >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(succeeded, 2, "two CreateOrderSaga finished");
    let all = metric_totals(&metric_exporter, ("", ""));
    for metric in ["ftgo.saga.duration", "ftgo.messages.handled", "ftgo.outbox.lag", "ftgo.gateway.circuit_state"] {
        assert!(all.get(metric).is_some_and(|total| *total > 0), "{metric} was not measured: {all:#?}");
    }
    let orders_posted = metric_totals(&metric_exporter, ("http.route", "/api/orders"));
    assert!(orders_posted["http.server.request.duration"] >= 2, "{orders_posted:#?}");
}

/// Every metric name in the latest export, with the sum of its counter points (or the count of its
/// histogram points), for the points whose attributes include `with`. The exporter keeps every
/// export and the temporality is cumulative, so only the latest one counts: adding them up would
/// count a saga once per flush that saw it.
fn metric_totals(exporter: &InMemoryMetricExporter, with: (&str, &str)) -> std::collections::BTreeMap<String, u64> {
    let mut totals = std::collections::BTreeMap::new();
    let exports = exporter.get_finished_metrics().unwrap();
    for resource in exports.iter().rev().take(1) {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                let total: u64 = match metric.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                        sum.data_points().filter(|p| has(p.attributes(), with)).map(|p| p.value()).sum()
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        h.data_points().filter(|p| has(p.attributes(), with)).map(|p| p.count()).sum()
                    }
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                        g.data_points().filter(|p| has(p.attributes(), with)).count() as u64
                    }
                    _ => 0,
                };
                *totals.entry(metric.name().to_owned()).or_default() += total;
            }
        }
    }
    totals
}

fn has<'a>(mut attributes: impl Iterator<Item = &'a opentelemetry::KeyValue>, with: (&str, &str)) -> bool {
    with.0.is_empty() || attributes.any(|kv| kv.key.as_str() == with.0 && kv.value.as_str() == with.1)
}
