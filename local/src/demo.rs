//! `just demo`: walks orders through a running FTGO over its public HTTP API, printing what each
//! service did. It is a client like any other: everything it shows, `curl` can show too.
//!
//! 1. A consumer registers (Accounting opens an account from the `ConsumerCreated` event) and a
//!    restaurant publishes its menu (replicated to the Order Service by `RestaurantCreated`).
//! 2. An order is placed and followed to `APPROVED` through the Create Order saga.
//! 3. An order over the consumer's credit limit ends `REJECTED`; its ticket is compensated.
//! 4. Another order is revised (Revise Order saga): more of the same dish, a new total.
//! 5. The first order is cancelled: ticket cancelled, card authorization reversed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!("calling {method} {}{path}: is FTGO running? (`just up` in another terminal)", self.base)
        })?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// A call that must answer `expected`; anything else stops the demo with the server's error.
    async fn expect(&self, method: Method, path: &str, body: Option<Value>, expected: StatusCode) -> Result<Value> {
        let (status, answer) = self.call(method.clone(), path, body).await?;
        if status != expected {
            bail!("{method} {path} answered {status}: {answer}");
        }
        Ok(answer)
    }

    /// Polls `GET path` every 200 ms, for at most 30 s, until it exists and `done` holds.
    async fn poll(&self, path: &str, mut done: impl FnMut(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, value) = self.call(Method::GET, path, None).await?;
            match status {
                StatusCode::OK if done(&value) => return Ok(value),
                StatusCode::OK | StatusCode::NOT_FOUND => {}
                _ => bail!("GET {path} answered {status}: {value}"),
            }
            if Instant::now() > deadline {
                bail!("gave up waiting on {path}; last answer: {value}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub async fn run(base: &str) -> Result<()> {
    let client = Client { base: base.trim_end_matches('/').to_owned(), http: reqwest::Client::new() };
    client.expect(Method::GET, "/healthz", None, StatusCode::OK).await?;
    println!("FTGO demo against {}\n", client.base);

    println!("1. Register a consumer and a restaurant");
    let consumer = client
        .expect(
            Method::POST,
            "/api/consumers",
            Some(json!({"name": {"firstName": "Ada", "lastName": "Lovelace"}})),
            StatusCode::CREATED,
        )
        .await?;
    let consumer_id = text(&consumer["consumerId"]);
    println!("   consumer {consumer_id} registered (Consumer Service)");
    let account = client.poll(&format!("/api/accounts/{consumer_id}"), |_| true).await?;
    println!(
        "   account opened from the ConsumerCreated event: credit limit {} (Accounting Service)",
        text(&account["creditLimit"])
    );
    let restaurant = client
        .expect(
            Method::POST,
            "/api/restaurants",
            Some(json!({
                "name": "Ajanta",
                "address": {"street1": "1 Shattuck Ave", "city": "Berkeley", "state": "CA", "zip": "94704"},
                "menu": {"menuItems": [
                    {"id": "1", "name": "Chicken Vindaloo", "price": "12.50"},
                    {"id": "2", "name": "Dal", "price": "5.00"}
                ]}
            })),
            StatusCode::CREATED,
        )
        .await?;
    let restaurant_id = text(&restaurant["restaurantId"]);
    println!(
        "   restaurant {restaurant_id} \"Ajanta\" created (Kitchen Service); its menu travels to the Order Service by event\n"
    );

    println!("2. Place an order: 2 x Chicken Vindaloo, 1 x Dal");
    let order_id = place(
        &client,
        &consumer_id,
        &restaurant_id,
        json!([
            {"menuItemId": "1", "quantity": 2}, {"menuItemId": "2", "quantity": 1}
        ]),
    )
    .await?;
    let approved = follow(&client, &order_id, "APPROVED").await?;
    println!(
        "   ticket {} is {}; payment {} {}",
        text(&approved["ticket"]["ticketId"]),
        text(&approved["ticket"]["state"]),
        text(&approved["payment"]["state"]),
        text(&approved["payment"]["amount"]),
    );
    show_sagas(&client, &order_id).await?;

    println!("\n3. Place an order over the 500.00 credit limit: 41 x Chicken Vindaloo = 512.50");
    let declined_id =
        place(&client, &consumer_id, &restaurant_id, json!([{"menuItemId": "1", "quantity": 41}])).await?;
    let rejected = follow(&client, &declined_id, "REJECTED").await?;
    println!("   rejection reason: {}", text(&rejected["rejectionReason"]));
    println!("   ticket {} (compensated)", text(&rejected["ticket"]["state"]));
    show_sagas(&client, &declined_id).await?;

    println!("\n4. Place an order for 1 x Dal, then revise it to 3 x Dal");
    let revised_id = place(&client, &consumer_id, &restaurant_id, json!([{"menuItemId": "2", "quantity": 1}])).await?;
    follow(&client, &revised_id, "APPROVED").await?;
    let revise = client
        .expect(
            Method::POST,
            &format!("/api/orders/{revised_id}/revise"),
            Some(json!({"revisedLineItems": [{"menuItemId": "2", "quantity": 3}]})),
            StatusCode::ACCEPTED,
        )
        .await?;
    println!("   POST /api/orders/{revised_id}/revise -> 202 {}", text(&revise["state"]));
    let revised = follow(&client, &revised_id, "APPROVED").await?;
    println!("   order is {} with total {}", text(&revised["state"]), text(&revised["orderTotal"]));
    show_sagas(&client, &revised_id).await?;

    println!("\n5. Cancel the first order");
    let cancel =
        client.expect(Method::POST, &format!("/api/orders/{order_id}/cancel"), None, StatusCode::ACCEPTED).await?;
    println!("   POST /api/orders/{order_id}/cancel -> 202 {}", text(&cancel["state"]));
    let cancelled = follow(&client, &order_id, "CANCELLED").await?;
    println!("   ticket {}; payment {}", text(&cancelled["ticket"]["state"]), text(&cancelled["payment"]["state"]));
    let account = client.expect(Method::GET, &format!("/api/accounts/{consumer_id}"), None, StatusCode::OK).await?;
    println!("   reserved on the account: {}", text(&account["reserved"]));
    show_sagas(&client, &order_id).await?;

    println!("\nDone. Browse the API at {}/api/openapi.json", client.base);
    Ok(())
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// Places an order, waiting (bounded) for the restaurant's menu to reach the Order Service.
async fn place(client: &Client, consumer_id: &str, restaurant_id: &str, line_items: Value) -> Result<String> {
    let body = json!({
        "consumerId": consumer_id,
        "restaurantId": restaurant_id,
        "deliveryAddress": {"street1": "9 Telegraph Ave", "city": "Oakland", "state": "CA", "zip": "94612"},
        "lineItems": line_items,
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = client.call(Method::POST, "/api/orders", Some(body.clone())).await?;
        if status == StatusCode::CREATED {
            let order_id = text(&answer["orderId"]);
            println!(
                "   POST /api/orders -> 201 order {order_id} {} total {}",
                text(&answer["state"]),
                text(&answer["orderTotal"])
            );
            return Ok(order_id);
        }
        if status != StatusCode::NOT_FOUND || Instant::now() > deadline {
            bail!("POST /api/orders answered {status}: {answer}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits, in one request, until the order is `last` (`?wait=...`: the gateway answers the moment
/// the saga's step commits, no polling), and prints it.
async fn follow(client: &Client, order_id: &str, last: &str) -> Result<Value> {
    let path = format!("/api/orders/{order_id}?wait={last}&timeout=30s");
    let order = client.expect(Method::GET, &path, None, StatusCode::OK).await?;
    let state = text(&order["state"]);
    println!("   GET /api/orders/{order_id}?wait={last} -> order is {state}");
    if state != last {
        bail!("order {order_id} is still {state} after 30 s, not {last}");
    }
    Ok(order)
}

async fn show_sagas(client: &Client, order_id: &str) -> Result<()> {
    let sagas = client
        .poll(&format!("/api/orders/{order_id}/sagas"), |s| {
            s["sagas"]
                .as_array()
                .is_some_and(|all| all.iter().all(|saga| saga["state"] != "RUNNING" && saga["state"] != "COMPENSATING"))
        })
        .await?;
    for saga in sagas["sagas"].as_array().into_iter().flatten() {
        let steps: Vec<String> = saga["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|step| format!("{} {}", text(&step["name"]), text(&step["status"]).to_lowercase()))
            .collect();
        println!("   {} {}: {}", text(&saga["sagaType"]), text(&saga["state"]), steps.join(" -> "));
    }
    Ok(())
}
