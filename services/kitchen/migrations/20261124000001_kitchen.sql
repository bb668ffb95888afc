-- Restaurants and their menus: the Kitchen Service is their source of truth.
CREATE TABLE restaurants (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    address    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE menu_items (
    restaurant_id UUID NOT NULL REFERENCES restaurants (id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    price_minor   BIGINT NOT NULL CHECK (price_minor > 0),
    position      INT NOT NULL,
    PRIMARY KEY (restaurant_id, id)
);

-- One ticket per order.
CREATE TABLE tickets (
    id             UUID PRIMARY KEY,
    order_id       TEXT NOT NULL UNIQUE,
    restaurant_id  UUID NOT NULL REFERENCES restaurants (id),
    state          TEXT NOT NULL,
    -- The state to return to when a pending cancel or revision is undone or confirmed.
    previous_state TEXT,
    line_items     JSONB NOT NULL,
    ready_by       TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
