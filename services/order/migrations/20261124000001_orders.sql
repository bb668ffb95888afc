-- The Order Service's replica of every restaurant's menu, kept from RestaurantCreated events, so
-- orders are priced without asking the Kitchen Service.
CREATE TABLE restaurants (
    id   UUID PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE menu_items (
    restaurant_id UUID NOT NULL REFERENCES restaurants (id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    price_minor   BIGINT NOT NULL CHECK (price_minor > 0),
    PRIMARY KEY (restaurant_id, id)
);

CREATE TABLE orders (
    id                UUID PRIMARY KEY,
    consumer_id       TEXT NOT NULL,
    restaurant_id     UUID NOT NULL REFERENCES restaurants (id),
    state             TEXT NOT NULL,
    line_items        JSONB NOT NULL,
    order_total_minor BIGINT NOT NULL CHECK (order_total_minor >= 0),
    delivery_address  JSONB NOT NULL,
    rejection_reason  TEXT,
    -- While REVISION_PENDING: the revised line items and total waiting for the saga.
    pending_revision  JSONB,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
