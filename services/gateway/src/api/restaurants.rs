//! `/api/restaurants`: restaurants and menus, owned by the Kitchen Service and replicated to the
//! Order Service by the `RestaurantCreated` event.

use axum::{Json, extract::State, http::StatusCode};
use ftgo_proto::kitchen::v1 as kitchen;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiJson, ApiPath, path_id, respond, rpc,
    shapes::Id,
    shapes::{Address, Menu, check_text, text_200},
};
use crate::{
    Backends,
    error::{ApiError, BackendErrors, BodyErrors, NotFound},
    resilience::Idempotency,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRestaurant {
    #[schema(schema_with = text_200)]
    pub name: String,
    pub address: Address,
    pub menu: Menu,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestaurantCreated {
    pub restaurant_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restaurant {
    pub restaurant_id: String,
    pub name: String,
    pub address: Address,
    pub menu: Menu,
}

#[utoipa::path(post, path = "/api/restaurants", tag = "restaurants", request_body = CreateRestaurant,
    responses((status = 201, body = RestaurantCreated),
        BodyErrors, BackendErrors))]
pub async fn create(
    State(backends): State<Backends>,
    ApiJson(body): ApiJson<CreateRestaurant>,
) -> Result<(StatusCode, Json<RestaurantCreated>), ApiError> {
    check_text("name", &body.name, 200, true)?;
    body.address.check("address")?;
    let request = kitchen::CreateRestaurantRequest {
        name: body.name,
        address: Some(body.address.into()),
        menu_items: body.menu.to_proto()?,
    };
    let created = respond(&backends.kitchen, Idempotency::NotIdempotent, request, rpc!(create_restaurant), |reply| {
        RestaurantCreated { restaurant_id: reply.restaurant_id }
    })
    .await?;
    Ok((StatusCode::CREATED, created))
}

#[utoipa::path(get, path = "/api/restaurants/{restaurantId}", tag = "restaurants",
    params(("restaurantId" = inline(Id), Path)),
    responses((status = 200, body = Restaurant), NotFound, BackendErrors))]
pub async fn get(
    State(backends): State<Backends>,
    ApiPath(restaurant_id): ApiPath<String>,
) -> Result<Json<Restaurant>, ApiError> {
    let request = kitchen::GetRestaurantRequest { restaurant_id: path_id("restaurant", &restaurant_id)? };
    respond(&backends.kitchen, Idempotency::Idempotent, request, rpc!(get_restaurant), |found| Restaurant {
        restaurant_id: found.restaurant_id,
        name: found.name,
        address: found.address.unwrap_or_default().into(),
        menu: Menu::from_proto(found.menu_items),
    })
    .await
}
