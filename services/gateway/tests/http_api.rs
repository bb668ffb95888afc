//! The public HTTP contract (`docs/api.md`) against the real back end: every service with its
//! own database, real NATS JetStream, the real gateway.

mod support;

use std::time::Duration;

use ftgo_testenv::eventually;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Stack, restaurant_body};

fn vindaloos(quantity: i64) -> Value {
    json!([{"menuItemId": "1", "quantity": quantity}])
}

/// A running stack with a consumer and a restaurant to order from, as most tests begin.
async fn stack_with_consumer_and_restaurant() -> (Stack, String, String) {
    let stack = Stack::start().await;
    let consumer_id = stack.consumer().await;
    let restaurant_id = stack.restaurant().await;
    (stack, consumer_id, restaurant_id)
}

/// Places an order for one vindaloo and waits for its saga to approve it: the order's id and view.
async fn approved_order(stack: &Stack, consumer_id: &str, restaurant_id: &str) -> (String, Value) {
    let placed = stack.place_order(consumer_id, restaurant_id, vindaloos(1)).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:#}", placed.body);
    let order_id = placed.body["orderId"].as_str().unwrap().to_owned();
    let order = stack.order_in_state(&order_id, "APPROVED").await;
    (order_id, order)
}

#[tokio::test]
async fn an_order_goes_from_approval_pending_to_approved_is_revised_and_cancelled_over_http() {
    let (stack, consumer_id, restaurant_id) = stack_with_consumer_and_restaurant().await;

    let consumer = stack.get(&format!("/api/consumers/{consumer_id}")).await;
    assert_eq!(consumer.status, StatusCode::OK);
    assert_eq!(consumer.body, json!({"consumerId": consumer_id, "name": {"firstName": "Ada", "lastName": "Lovelace"}}));
    let restaurant = stack.get(&format!("/api/restaurants/{restaurant_id}")).await;
    assert_eq!(restaurant.body["menu"]["menuItems"][0], json!({"id": "1", "name": "Vindaloo", "price": "12.50"}));

    let placed = stack.place_order(&consumer_id, &restaurant_id, vindaloos(2)).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:#}", placed.body);
    assert_eq!(placed.body["state"], "APPROVAL_PENDING");
    assert_eq!(placed.body["orderTotal"], "25.00");
    let order_id = placed.body["orderId"].as_str().unwrap().to_owned();

    // The client waits for the outcome in one request instead of polling for it.
    let outcome = stack.get(&format!("/api/orders/{order_id}?wait=APPROVED,REJECTED&timeout=20s")).await;
    assert_eq!(outcome.status, StatusCode::OK, "{:#}", outcome.body);
    let approved = outcome.body;
    assert_eq!(approved["state"], "APPROVED");
    assert_eq!(approved["ticket"]["state"], "AWAITING_ACCEPTANCE");
    assert_eq!(approved["payment"], json!({"state": "AUTHORIZED", "amount": "25.00"}));
    assert_eq!(
        approved["lineItems"],
        json!([{"menuItemId": "1", "name": "Vindaloo", "price": "12.50", "quantity": 2}])
    );
    assert!(approved.get("rejectionReason").is_none());
    let placed_at = approved["createdAt"].as_str().expect("createdAt is filled");
    let placed_at = chrono::DateTime::parse_from_rfc3339(placed_at).unwrap();
    assert!((chrono::Utc::now() - placed_at.to_utc()).num_seconds().abs() < 300, "{placed_at}");
    // The summary is the order alone: Kitchen and Accounting are not asked.
    let summary = stack.get(&format!("/api/orders/{order_id}?wait=APPROVED,REJECTED&timeout=1s&view=summary")).await;
    assert_eq!(summary.status, StatusCode::OK, "{:#}", summary.body);
    let mut full = approved.clone();
    full.as_object_mut().unwrap().retain(|key, _| key != "ticket" && key != "payment");
    assert_eq!(summary.body, full);
    assert_eq!(stack.get(&format!("/api/orders/{order_id}?view=full")).await.body, approved);
    let account = stack.get(&format!("/api/accounts/{consumer_id}")).await;
    assert_eq!(
        account.body,
        json!({"consumerId": consumer_id, "creditLimit": "500.00", "reserved": "25.00", "enabled": true})
    );

    let revised =
        stack.post(&format!("/api/orders/{order_id}/revise"), json!({"revisedLineItems": vindaloos(3)})).await;
    assert_eq!(revised.status, StatusCode::ACCEPTED, "{:#}", revised.body);
    assert_eq!(revised.body, json!({"orderId": order_id, "state": "REVISION_PENDING"}));
    let revised = eventually("the revision", Duration::from_secs(30), async || {
        let order = stack.order_in_state(&order_id, "APPROVED").await;
        (order["orderTotal"] == "37.50").then_some(order)
    })
    .await;
    assert_eq!(revised["payment"]["amount"], "37.50");

    let cancelled = stack.post(&format!("/api/orders/{order_id}/cancel"), json!({})).await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{:#}", cancelled.body);
    assert_eq!(cancelled.body, json!({"orderId": order_id, "state": "CANCEL_PENDING"}));
    let cancelled = stack.order_in_state(&order_id, "CANCELLED").await;
    assert_eq!(cancelled["ticket"]["state"], "CANCELLED");
    assert_eq!(cancelled["payment"]["state"], "REVERSED");
    let account = stack.get(&format!("/api/accounts/{consumer_id}")).await;
    assert_eq!(account.body["reserved"], "0.00");

    let again = stack.post(&format!("/api/orders/{order_id}/cancel"), json!({})).await;
    again.error(StatusCode::CONFLICT, "conflict");

    let sagas = eventually("every saga to finish", Duration::from_secs(30), async || {
        let sagas = stack.get(&format!("/api/orders/{order_id}/sagas")).await.body;
        let all_done = sagas["sagas"].as_array()?.iter().all(|s| s["state"] == "SUCCEEDED");
        (all_done && sagas["sagas"].as_array()?.len() == 3).then_some(sagas)
    })
    .await;
    let types: Vec<_> = sagas["sagas"].as_array().unwrap().iter().map(|s| s["sagaType"].clone()).collect();
    assert_eq!(types, [json!("CreateOrderSaga"), json!("ReviseOrderSaga"), json!("CancelOrderSaga")]);
    let create_saga = &sagas["sagas"][0];
    let saga = stack.get(&format!("/api/sagas/{}", create_saga["sagaId"].as_str().unwrap())).await;
    assert_eq!(saga.status, StatusCode::OK);
    assert_eq!(saga.body["compensating"], false);
    assert!(saga.body["steps"].as_array().unwrap().len() >= 5, "{:#}", saga.body);
    assert!(saga.body["createdAt"].is_string());
}

#[tokio::test]
async fn a_declined_card_rejects_the_order_with_a_reason_and_compensates_the_ticket() {
    let (stack, consumer_id, restaurant_id) = stack_with_consumer_and_restaurant().await;

    // 41 x 12.50 = 512.50, over the 500.00 credit limit.
    let placed = stack.place_order(&consumer_id, &restaurant_id, vindaloos(41)).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:#}", placed.body);
    let order_id = placed.body["orderId"].as_str().unwrap();

    let rejected = stack.order_in_state(order_id, "REJECTED").await;
    let reason = rejected["rejectionReason"].as_str().expect("a rejection reason");
    assert!(reason.contains("credit limit"), "{reason}");
    assert_eq!(rejected["ticket"]["state"], "CANCELLED", "the ticket is compensated");
    assert!(rejected.get("payment").is_none(), "nothing was authorized: {rejected:#}");
    assert_eq!(stack.get(&format!("/api/accounts/{consumer_id}")).await.body["reserved"], "0.00");
    let sagas = stack.get(&format!("/api/orders/{order_id}/sagas")).await.body;
    assert_eq!(sagas["sagas"][0]["state"], "COMPENSATED");
    assert!(sagas["sagas"][0]["failureReason"].as_str().unwrap().contains("credit limit"));
}

#[tokio::test]
async fn the_kitchen_moves_a_ticket_along_and_a_cancel_after_preparing_is_refused() {
    let (stack, consumer_id, restaurant_id) = stack_with_consumer_and_restaurant().await;
    let (order_id, order) = approved_order(&stack, &consumer_id, &restaurant_id).await;
    let ticket_id = order["ticket"]["ticketId"].as_str().unwrap();

    let past =
        stack.post(&format!("/api/tickets/{ticket_id}/accept"), json!({"readyBy": "2001-01-01T12:00:00Z"})).await;
    past.error(StatusCode::BAD_REQUEST, "invalid_argument");
    let too_early = stack.post(&format!("/api/tickets/{ticket_id}/ready"), json!({})).await;
    too_early.error(StatusCode::CONFLICT, "conflict");

    let ready_by = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    let accepted = stack.post(&format!("/api/tickets/{ticket_id}/accept"), json!({"readyBy": ready_by})).await;
    assert_eq!(accepted.status, StatusCode::OK, "{:#}", accepted.body);
    assert_eq!(accepted.body["state"], "ACCEPTED");
    assert!(accepted.body["readyBy"].is_string());
    let preparing = stack.call(Method::POST, &format!("/api/tickets/{ticket_id}/preparing"), None).await;
    assert_eq!(preparing.body["state"], "PREPARING", "{:#}", preparing.body);

    // The cancel saga starts, the kitchen refuses, the saga compensates: the order stays APPROVED.
    let cancel = stack.post(&format!("/api/orders/{order_id}/cancel"), json!({})).await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED);
    let sagas = eventually("the cancel saga to be compensated", Duration::from_secs(30), async || {
        let sagas = stack.get(&format!("/api/orders/{order_id}/sagas")).await.body;
        (sagas["sagas"][1]["state"] == "COMPENSATED").then_some(sagas)
    })
    .await;
    assert_eq!(sagas["sagas"][1]["sagaType"], "CancelOrderSaga");
    let order = stack.order_in_state(&order_id, "APPROVED").await;
    assert_eq!(order["payment"]["state"], "AUTHORIZED");

    let ready = stack.post(&format!("/api/tickets/{ticket_id}/ready"), json!({})).await;
    assert_eq!(ready.body["state"], "READY_FOR_PICKUP");
    let picked_up = stack.post(&format!("/api/tickets/{ticket_id}/pickedup"), json!({})).await;
    assert_eq!(picked_up.body["state"], "PICKED_UP");
    let ticket = stack.get(&format!("/api/tickets/{ticket_id}")).await;
    assert_eq!(ticket.body["state"], "PICKED_UP");
    stack.post(&format!("/api/tickets/{ticket_id}/preparing"), json!({})).await.error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn bad_input_is_answered_with_a_json_error_and_changes_nothing() {
    let (stack, consumer_id, restaurant_id) = stack_with_consumer_and_restaurant().await;
    let unknown = uuid::Uuid::new_v4();

    // Bodies that are not the JSON asked for.
    let raw = |body: &'static str, content_type: &'static str| {
        let request = stack.http.post(format!("{}/api/consumers", stack.base)).header("content-type", content_type);
        async move {
            let response = request.body(body).send().await.unwrap();
            assert_eq!(response.headers()["content-type"], "application/json");
            support::Answer { status: response.status(), body: response.json().await.unwrap() }
        }
    };
    raw("{\"name\": ", "application/json").await.error(StatusCode::BAD_REQUEST, "malformed_json");
    raw("[1, 2]", "application/json").await.error(StatusCode::BAD_REQUEST, "invalid_body");
    raw("{}", "text/plain").await.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let huge = format!("{{\"name\": {{\"firstName\": \"{}\", \"lastName\": \"x\"}}}}", "a".repeat(100_000));
    let response = stack
        .http
        .post(format!("{}/api/consumers", stack.base))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let answer = support::Answer { status: response.status(), body: response.json().await.unwrap() };
    answer.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Wrong types, missing and unknown fields: the message names the field.
    let wrong_type = stack.post("/api/consumers", json!({"name": {"firstName": 7, "lastName": "x"}})).await;
    assert!(wrong_type.error(StatusCode::BAD_REQUEST, "invalid_body").contains("name.firstName"));
    let missing = stack.post("/api/consumers", json!({"name": {"firstName": "Ada"}})).await;
    assert!(missing.error(StatusCode::BAD_REQUEST, "invalid_body").contains("lastName"));
    let typo = stack.post("/api/consumers", json!({"name": {"firstName": "A", "lastName": "B"}, "nmae": 1})).await;
    assert!(typo.error(StatusCode::BAD_REQUEST, "invalid_body").contains("nmae"));
    stack
        .post("/api/consumers", json!({"name": {"firstName": " ", "lastName": ""}}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_argument");

    // Money is a decimal string with at most two places, never a float or a negative amount.
    for price in [json!(12.5), json!("-1.00"), json!("1.234"), json!("1e3"), json!("")] {
        let mut body = restaurant_body();
        body["menu"]["menuItems"][0]["price"] = price.clone();
        let answer = stack.post("/api/restaurants", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "price {price}: {:#}", answer.body);
    }
    let limit =
        stack.call(Method::PUT, &format!("/api/accounts/{consumer_id}"), Some(json!({"creditLimit": "lots"}))).await;
    assert!(limit.error(StatusCode::BAD_REQUEST, "invalid_argument").contains("creditLimit"));

    // Quantities: zero, negative, huge, fractional, textual.
    for quantity in
        [json!(0), json!(-3), json!(1_000_000_000_000_i64), json!(1.5), json!(2.5), json!("2"), json!(101.0)]
    {
        let body = json!([{"menuItemId": "1", "quantity": quantity}]);
        let answer = stack.place_order(&consumer_id, &restaurant_id, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "quantity {quantity}: {:#}", answer.body);
    }
    let fractional =
        stack.place_order(&consumer_id, &restaurant_id, json!([{"menuItemId": "1", "quantity": 2.5}])).await;
    assert!(fractional.error(StatusCode::BAD_REQUEST, "invalid_body").contains("not a whole number"));
    // Ids in a body are UUIDs, and text follows the document's rules.
    let not_an_id = stack
        .post(
            "/api/orders",
            json!({"consumerId": "not-an-id", "restaurantId": restaurant_id, "lineItems": vindaloos(1),
                   "deliveryAddress": {"street1": "1 Main St", "city": "Oakland", "state": "CA", "zip": "94612"}}),
        )
        .await;
    assert!(not_an_id.error(StatusCode::BAD_REQUEST, "invalid_argument").contains("consumerId"));
    let long_zip = stack
        .post(
            "/api/orders",
            json!({"consumerId": consumer_id, "restaurantId": restaurant_id, "lineItems": vindaloos(1),
                   "deliveryAddress": {"street1": "1 Main St", "city": "Oakland", "state": "CA", "zip": format!(" {} ", "9".repeat(19))}}),
        )
        .await;
    assert!(long_zip.error(StatusCode::BAD_REQUEST, "invalid_argument").contains("deliveryAddress.zip"));
    stack
        .post("/api/consumers", json!({"name": {"firstName": "A\tB", "lastName": "x"}}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_argument");
    let no_items = stack.place_order(&consumer_id, &restaurant_id, json!([])).await;
    no_items.error(StatusCode::BAD_REQUEST, "invalid_argument");
    let unknown_item =
        stack.place_order(&consumer_id, &restaurant_id, json!([{"menuItemId": "99", "quantity": 1}])).await;
    unknown_item.error(StatusCode::NOT_FOUND, "not_found");
    let unknown_restaurant = stack
        .post(
            "/api/orders",
            json!({"consumerId": consumer_id, "restaurantId": unknown, "lineItems": vindaloos(1),
                   "deliveryAddress": {"street1": "1 Main St", "city": "Oakland", "state": "CA", "zip": "94612"}}),
        )
        .await;
    unknown_restaurant.error(StatusCode::NOT_FOUND, "not_found");
    let ready_by = stack.post(&format!("/api/tickets/{unknown}/accept"), json!({"readyBy": "tomorrow"})).await;
    assert!(ready_by.error(StatusCode::BAD_REQUEST, "invalid_body").contains("readyBy"));

    // Unknown ids, ids that cannot be ids, paths and methods that do not exist.
    for path in [
        format!("/api/consumers/{unknown}"),
        format!("/api/accounts/{unknown}"),
        format!("/api/restaurants/{unknown}"),
        format!("/api/orders/{unknown}"),
        format!("/api/orders/{unknown}/sagas"),
        format!("/api/sagas/{unknown}"),
        format!("/api/tickets/{unknown}"),
        "/api/orders/not-an-id".to_owned(),
        "/api/orders/%27%3B%20DROP%20TABLE%20orders".to_owned(),
        "/api/nothing-here".to_owned(),
    ] {
        stack.get(&path).await.error(StatusCode::NOT_FOUND, "not_found");
    }
    stack.post(&format!("/api/orders/{unknown}/cancel"), json!({})).await.error(StatusCode::NOT_FOUND, "not_found");
    stack.post(&format!("/api/tickets/{unknown}/preparing"), json!({})).await.error(StatusCode::NOT_FOUND, "not_found");
    stack.call(Method::DELETE, "/api/orders", None).await.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // None of it left a trace: the consumer's account is untouched and a good order still works.
    let account = stack.get(&format!("/api/accounts/{consumer_id}")).await;
    assert_eq!(account.body["reserved"], "0.00");
    assert_eq!(account.body["creditLimit"], "500.00");
    let (good_id, _) = approved_order(&stack, &consumer_id, &restaurant_id).await;

    // A quantity written as a number with a zero fraction is a whole number, as JSON Schema says.
    let two = stack.place_order(&consumer_id, &restaurant_id, json!([{"menuItemId": "1", "quantity": 2.0}])).await;
    assert_eq!(two.status, StatusCode::CREATED, "{:#}", two.body);
    assert_eq!(two.body["orderTotal"], "25.00");

    // Waits that cannot be honoured: the message says what is wrong.
    let order = format!("/api/orders/{good_id}");
    for (query, code, says) in [
        ("?wait=DONE", "invalid_argument", "DONE"),
        ("?wait=approved", "invalid_argument", "approved"),
        ("?wait=APPROVED&timeout=31s", "invalid_argument", "timeout"),
        ("?wait=APPROVED&timeout=soon", "invalid_argument", "timeout"),
        ("?wait=APPROVED&timeout=1.2345s", "invalid_argument", "timeout"),
        ("?wait=APPROVED,%20REJECTED", "invalid_argument", "REJECTED"),
        ("?timeout=5s", "invalid_argument", "only allowed with wait"),
        ("?wiat=APPROVED", "invalid_query", "wiat"),
        ("?view=everything", "invalid_query", "everything"),
    ] {
        let answer = stack.get(&format!("{order}{query}")).await;
        assert!(answer.error(StatusCode::BAD_REQUEST, code).contains(says), "{query}: {:#}", answer.body);
    }
    let timed_out = stack.get(&format!("{order}?wait=CANCELLED&timeout=100ms")).await;
    assert_eq!(timed_out.status, StatusCode::OK, "a wait that times out answers with the order as it is");
    assert_ne!(timed_out.body["state"], "CANCELLED");
    stack
        .get(&format!("/api/orders/{unknown}?wait=APPROVED&timeout=1s"))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_order_view_leaves_out_the_parts_whose_service_is_down() {
    let (mut stack, consumer_id, restaurant_id) = stack_with_consumer_and_restaurant().await;
    let (order_id, approved) = approved_order(&stack, &consumer_id, &restaurant_id).await;
    assert!(approved.get("ticket").is_some() && approved.get("payment").is_some());

    stack.kitchen.take().unwrap().stop().await.unwrap();
    stack.accounting.take().unwrap().stop().await.unwrap();
    for _ in 0..4 {
        let order = stack.get(&format!("/api/orders/{order_id}")).await;
        assert_eq!(order.status, StatusCode::OK, "{:#}", order.body);
        assert_eq!(order.body["state"], "APPROVED");
        assert!(order.body.get("ticket").is_none(), "{:#}", order.body);
        assert!(order.body.get("payment").is_none(), "{:#}", order.body);
    }
    // After repeated failures the circuits are open: calls fail fast, and /healthz shows it.
    let health = stack.get("/healthz").await;
    assert_eq!(health.body["status"], "ok");
    assert_eq!(health.body["circuits"]["kitchen"], "open", "{:#}", health.body);
    assert_eq!(health.body["circuits"]["order"], "closed");
    let message = stack
        .get(&format!("/api/restaurants/{restaurant_id}"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(message.contains("circuit open"), "{message}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_path() {
    let stack = Stack::start().await;
    let document = stack.get("/api/openapi.json").await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.body["openapi"].as_str().unwrap().starts_with("3."));
    // The served document is the one made from the router's own list of routes.
    assert_eq!(document.body, serde_json::to_value(ftgo_api_gateway::openapi::document()).unwrap());
    let paths = document.body["paths"].as_object().unwrap();

    // And every documented operation is routed: with any id in its path and an empty body, the
    // answer is the handler's (a 4xx of its own, a 200 or a 503), never the router's "no such
    // path" or "method not allowed".
    let mut operations = 0;
    let any_id = uuid::Uuid::new_v4().to_string();
    for (path, item) in paths {
        let concrete: String = path
            .split('/')
            .map(|segment| if segment.starts_with('{') { any_id.as_str() } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = (method != Method::GET).then(|| json!({}));
            let answer = stack.call(method.clone(), &concrete, body).await;
            let code = &answer.body["error"]["code"];
            assert!(
                code != "unknown_path"
                    && code != "method_not_allowed"
                    && answer.status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed: {:#}",
                answer.body
            );
            operations += 1;
        }
    }
    assert!(paths.contains_key("/api/orders") && operations >= 18, "{operations} operations: {paths:#?}");
    let schemas = &document.body["components"]["schemas"];
    assert_eq!(schemas["OrderView"]["properties"]["orderTotal"]["type"], "string");
    assert!(schemas["ErrorBody"].is_object());
    let parameters = paths["/api/orders/{orderId}"]["get"]["parameters"].as_array().unwrap();
    for (name, says) in [("wait", "|REVISION_PENDING)"), ("timeout", "|30000)ms|")] {
        let parameter = parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no {name} parameter"));
        assert_eq!(parameter["in"], "query");
        assert!(parameter["schema"]["pattern"].as_str().unwrap().contains(says), "{parameter:#}");
    }
    let view = parameters.iter().find(|p| p["name"] == "view").expect("no view parameter");
    assert_eq!(view["schema"]["enum"], json!(["full", "summary"]), "{view:#}");
}

/// The document states every rule the gateway enforces and every status it answers: what
/// schemathesis (`local/tests/contract.rs`) holds the running system to.
#[tokio::test]
async fn the_openapi_document_states_the_rules_and_statuses_the_gateway_enforces() {
    use ftgo_api_gateway::api::shapes;

    let document = serde_json::to_value(ftgo_api_gateway::openapi::document()).unwrap();
    let schemas = &document["components"]["schemas"];
    let paths = document["paths"].as_object().unwrap();

    // Every id in a path is a UUID; every operation that calls a service documents its failures,
    // every one with a JSON body documents 400, 413 and 415, all with the error body.
    let mut with_body = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                if parameter["in"] == "path" && name.ends_with("Id") {
                    assert_eq!(parameter["schema"]["format"], "uuid", "{method} {path} {name}");
                }
            }
            let responses = operation["responses"].as_object().unwrap();
            let error_body = |status: &str| {
                let response = responses.get(status).unwrap_or_else(|| panic!("{method} {path}: no {status}"));
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            };
            if path != "/healthz" {
                for status in ["502", "503", "504"] {
                    error_body(status);
                }
            }
            if operation.get("requestBody").is_some() {
                with_body += 1;
                for status in ["400", "413", "415"] {
                    error_body(status);
                }
            }
            if path.contains('{') {
                error_body("404");
            }
        }
    }
    assert_eq!(with_body, 6, "the operations with a JSON body");

    let property = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
    let quantity = property("LineItemRequest", "quantity");
    assert_eq!(
        (&quantity["type"], &quantity["minimum"], &quantity["maximum"]),
        (&json!("integer"), &json!(1), &json!(100))
    );
    for (schema, list, most) in
        [("CreateOrder", "lineItems", 50), ("ReviseOrder", "revisedLineItems", 50), ("Menu", "menuItems", 500)]
    {
        let items = property(schema, list);
        assert_eq!((&items["minItems"], &items["maxItems"]), (&json!(1), &json!(most)), "{schema}.{list}");
    }
    for name in ["consumerId", "restaurantId"] {
        assert_eq!(property("CreateOrder", name)["format"], "uuid");
    }
    for (schema, name, most) in [
        ("PersonName", "firstName", 100),
        ("PersonName", "lastName", 100),
        ("Address", "street1", 200),
        ("Address", "city", 100),
        ("Address", "zip", 20),
        ("CreateRestaurant", "name", 200),
        ("MenuItem", "id", 100),
        ("MenuItem", "name", 200),
    ] {
        let text = property(schema, name);
        assert_eq!((&text["minLength"], &text["maxLength"]), (&json!(1), &json!(most)), "{schema}.{name}");
        assert_eq!(text["pattern"], shapes::REQUIRED_TEXT_PATTERN, "{schema}.{name}");
    }
    assert_eq!(property("Address", "street2")["pattern"], shapes::OPTIONAL_TEXT_PATTERN);
    assert_eq!(property("MenuItem", "price")["pattern"], shapes::POSITIVE_MONEY_PATTERN);
    assert_eq!(property("UpdateAccount", "creditLimit")["pattern"], shapes::MONEY_PATTERN);
    let service = &paths["/api/admin/{service}/dead-letters"]["get"]["parameters"][0]["schema"];
    assert_eq!(service["enum"], json!(["consumer", "kitchen", "accounting", "order", "orchestrator"]));

    // What the money pattern describes is what the gateway parses: spot checks of both sides.
    for (text, accepted) in [
        ("12", true),
        ("12.3", true),
        ("12.34", true),
        ("0", true),
        ("000999999999.99", true),
        ("1000000000.00", true),
        ("001000000000", true),
        ("1000000000.01", false),
        ("0000000000001", false),
        ("12.", false),
        (".5", false),
        ("1.234", false),
        ("-1", false),
        ("1e3", false),
        (" 1", false),
        ("", false),
    ] {
        assert_eq!(shapes::parse_money("m", text).is_ok(), accepted, "{text:?}");
    }
}

/// An oversized body is answered 413 in the API's format, read to its end first: the client is not
/// cut off while it still sends (a broken pipe instead of the answer).
#[tokio::test]
async fn a_body_over_the_limit_is_always_answered_413_with_the_error_body() {
    let stack = Stack::start().await;
    let huge = format!("{{\"name\": {{\"firstName\": \"{}\", \"lastName\": \"x\"}}}}", "a".repeat(4 << 20));
    for attempt in 0..5 {
        let response = stack
            .http
            .post(format!("{}/api/consumers", stack.base))
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the 4 MiB request failed instead of being answered: {e:?}"));
        assert_eq!(response.headers()["content-type"], "application/json");
        let answer = support::Answer { status: response.status(), body: response.json().await.unwrap() };
        answer.error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    // And the gateway still serves.
    assert_eq!(stack.get("/healthz").await.status, StatusCode::OK);
}

/// Every string field of every creating call, filled with something a hostile or careless client
/// might send: the answer is a success or a 4xx with the API's error body, never a 5xx.
#[tokio::test]
async fn hostile_strings_in_any_field_never_cause_a_server_error() {
    let (stack, consumer_id, restaurant_id) = stack_with_consumer_and_restaurant().await;
    // Make sure the menu has reached the Order Service, so orders reach their validation.
    let first = stack.place_order(&consumer_id, &restaurant_id, vindaloos(1)).await;
    assert_eq!(first.status, StatusCode::CREATED);

    let address = json!({"street1": "1 Main St", "street2": "", "city": "Oakland", "state": "CA", "zip": "94612"});
    let calls: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "/api/consumers",
            json!({"name": {"firstName": "Ada", "lastName": "Lovelace"}}),
            vec!["/name/firstName", "/name/lastName"],
        ),
        (
            "/api/restaurants",
            restaurant_body(),
            vec![
                "/name",
                "/address/street1",
                "/address/city",
                "/address/zip",
                "/menu/menuItems/0/id",
                "/menu/menuItems/0/name",
                "/menu/menuItems/0/price",
            ],
        ),
        (
            "/api/orders",
            json!({"consumerId": consumer_id, "restaurantId": restaurant_id, "deliveryAddress": address,
                   "lineItems": [{"menuItemId": "1", "quantity": 1}]}),
            vec![
                "/consumerId",
                "/restaurantId",
                "/deliveryAddress/street1",
                "/deliveryAddress/street2",
                "/deliveryAddress/state",
                "/lineItems/0/menuItemId",
            ],
        ),
    ];
    let hostile =
        ["\u{0}", "a\u{0}b", "x".repeat(5000).leak() as &str, "'; DROP TABLE orders; --", "🍛\u{202e}", " ", "\u{7f}"];
    for (path, body, fields) in &calls {
        for field in fields {
            for value in hostile {
                let mut body = body.clone();
                *body.pointer_mut(field).unwrap() = json!(value);
                let answer = stack.post(path, body).await;
                assert!(
                    answer.status.is_success() || answer.status.is_client_error(),
                    "{path} with {field} = {:?}: {} {:#}",
                    value.chars().take(30).collect::<String>(),
                    answer.status,
                    answer.body
                );
                if answer.status.is_client_error() {
                    assert!(answer.body["error"]["message"].is_string(), "{:#}", answer.body);
                }
            }
        }
    }
}

/// The gateway's breaker thresholds come from Consul KV and change while it runs (the design's
/// live configuration); a document that does not parse is ignored.
#[tokio::test]
async fn breaker_thresholds_change_live_from_consul() {
    let consul = ftgo_testenv::Consul::start().await.unwrap();
    let consul_url = consul.http_url();
    let mut stack = Stack::start_with(|config| {
        config.base.environment = "test".to_owned();
        config.base.consul.addr = consul_url.clone();
        // So high that no circuit opens in this test unless the threshold changes.
        config.resilience.breaker_failures = 1000;
    })
    .await;
    let restaurant_id = stack.restaurant().await;
    stack.kitchen.take().unwrap().stop().await.unwrap();

    let put = |document: &'static str| {
        let url = format!("{consul_url}/v1/kv/ftgo/config/api-gateway");
        async move { reqwest::Client::new().put(url).body(document).send().await.unwrap().error_for_status().unwrap() }
    };
    put("[resilience]\nbreaker_failures = \"not a number\"\n").await;
    put("[resilience]\nbreaker_failures = 1\n").await;

    let mut opened = false;
    for _ in 0..20 {
        let answer = stack.get(&format!("/api/restaurants/{restaurant_id}")).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{:#}", answer.body);
        if stack.get("/healthz").await.body["circuits"]["kitchen"] == "open" {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(opened, "the new threshold (1 failure) was not applied");
}

#[tokio::test]
async fn an_operator_lists_a_services_dead_letters_and_a_replay_that_fails_again_changes_nothing() {
    let stack = Stack::start().await;
    // A command the Kitchen Service cannot even decode: refused at once, and dead-lettered.
    let garbage = ftgo_platform::messaging::OutgoingMessage::new(
        "ftgo.command.kitchen.CreateTicket",
        "ftgo.kitchen.v1.CreateTicket",
        vec![0xff, 0xff, 0xff],
    )
    .with_header("Ftgo-Saga-Id", "5b1f9c1e-0000-4000-8000-000000000001")
    .with_header("Ftgo-Reply-To", "ftgo.reply.orchestrator.saga");
    stack.world.publish(&garbage).await.unwrap();
    let listed = eventually("the dead letter", Duration::from_secs(30), async || {
        let listed = stack.get("/api/admin/kitchen/dead-letters").await;
        (listed.status == StatusCode::OK && listed.body["deadLetters"].as_array()?.len() == 1).then_some(listed)
    })
    .await;
    assert_eq!(listed.body["service"], "kitchen");
    let letter = &listed.body["deadLetters"][0];
    assert_eq!(letter["messageId"], garbage.id.to_string());
    assert_eq!(letter["messageType"], "ftgo.kitchen.v1.CreateTicket");
    assert_eq!(letter["sagaId"], "5b1f9c1e-0000-4000-8000-000000000001");
    assert_eq!(letter["consumer"], "kitchen-service");
    assert!(letter["error"].as_str().unwrap().contains("undecodable"), "{letter}");
    assert!(letter.get("replayedAt").is_none());
    // Other services have their own (none here).
    let order = stack.get("/api/admin/order/dead-letters?waiting=true&limit=5").await;
    assert_eq!((order.status, &order.body["deadLetters"]), (StatusCode::OK, &json!([])));

    // The cause is still there: the replay fails with it, and the dead letter waits.
    let id = letter["id"].as_i64().unwrap();
    let replay = stack.call(Method::POST, &format!("/api/admin/kitchen/dead-letters/{id}/replay"), None).await;
    assert!(replay.error(StatusCode::CONFLICT, "conflict").contains("undecodable"));
    let waiting = stack.get("/api/admin/kitchen/dead-letters?waiting=true").await;
    assert_eq!(waiting.body["deadLetters"][0]["id"], id);

    // Bad input.
    stack.get("/api/admin/gateway/dead-letters").await.error(StatusCode::NOT_FOUND, "not_found");
    stack.get("/api/admin/nope/dead-letters").await.error(StatusCode::NOT_FOUND, "not_found");
    for query in ["limit=0", "limit=1001", "limit=x", "waiting=maybe", "colour=red"] {
        stack
            .get(&format!("/api/admin/kitchen/dead-letters?{query}"))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    for id in ["x", "99999999", "-1"] {
        let answer = stack.call(Method::POST, &format!("/api/admin/kitchen/dead-letters/{id}/replay"), None).await;
        answer.error(StatusCode::NOT_FOUND, "not_found");
    }
    let answer = stack.call(Method::GET, &format!("/api/admin/kitchen/dead-letters/{id}/replay"), None).await;
    answer.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn a_command_sent_again_with_its_idempotency_key_gets_the_first_answer_and_happens_once() {
    let (stack, consumer_id, restaurant_id) = stack_with_consumer_and_restaurant().await;
    // The menu first, so that every order below is priced.
    approved_order(&stack, &consumer_id, &restaurant_id).await;
    let order = |quantity: i64| {
        json!({
            "consumerId": consumer_id,
            "restaurantId": restaurant_id,
            "deliveryAddress": {"street1": "1 Main St", "city": "Oakland", "state": "CA", "zip": "94612"},
            "lineItems": vindaloos(quantity),
        })
    };
    let post = |path: &str, key: &str, body: Option<Value>| {
        let mut request = stack.http.post(format!("{}{path}", stack.base)).header("Idempotency-Key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let key = format!("order-{}", uuid::Uuid::new_v4());

    let (status, first) = post("/api/orders", &key, Some(order(2))).await;
    assert_eq!(status, StatusCode::CREATED, "{first:#}");
    let (status, again) = post("/api/orders", &key, Some(order(2))).await;
    assert_eq!(status, StatusCode::CREATED, "{again:#}");
    assert_eq!(again, first, "the first answer, word for word");
    let order_id = first["orderId"].as_str().unwrap().to_owned();

    // The same key with another order is refused, and places nothing.
    let (status, refused) = post("/api/orders", &key, Some(order(3))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused:#}");
    assert_eq!(refused["error"]["code"], "idempotency_key_reused", "{refused:#}");
    let sagas = stack.get(&format!("/api/orders/{order_id}/sagas")).await;
    assert_eq!(sagas.body["sagas"].as_array().map(Vec::len), Some(1), "one order, one saga: {:#}", sagas.body);

    // A cancel sent twice with its key: the second gets the first's 202, not a 409.
    stack.order_in_state(&order_id, "APPROVED").await;
    let cancel = format!("/api/orders/{order_id}/cancel");
    let cancel_key = format!("cancel-{order_id}");
    let (status, first_cancel) = post(&cancel, &cancel_key, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first_cancel:#}");
    let (status, second_cancel) = post(&cancel, &cancel_key, None).await;
    assert_eq!((status, &second_cancel), (StatusCode::ACCEPTED, &first_cancel));
    // Without the key, a second cancel is a new command, refused by the order's state.
    assert_eq!(stack.post(&cancel, json!({})).await.status, StatusCode::CONFLICT);

    // A malformed key is refused before anything runs.
    for bad in ["", "two words", &"k".repeat(256)] {
        let (status, answer) = post("/api/orders", bad, Some(order(1))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {answer:#}");
        assert_eq!(answer["error"]["code"], "invalid_idempotency_key", "{answer:#}");
    }

    // The contract says so on every POST.
    let document = stack.get("/api/openapi.json").await.body;
    for (path, item) in document["paths"].as_object().unwrap() {
        let Some(post) = item.get("post") else { continue };
        let header = post["parameters"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"));
        assert_eq!(header.map(|h| &h["in"]), Some(&json!("header")), "POST {path}");
        assert!(post["responses"].get("422").is_some(), "POST {path} documents 422");
    }
}
