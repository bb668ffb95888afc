-- One account per consumer, opened from the ConsumerCreated event.
CREATE TABLE accounts (
    consumer_id         UUID PRIMARY KEY,
    credit_limit_minor  BIGINT NOT NULL CHECK (credit_limit_minor >= 0),
    reserved_minor      BIGINT NOT NULL CHECK (reserved_minor >= 0),
    enabled             BOOLEAN NOT NULL,
    opened_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One authorization per order: what is reserved for it, or that it was released.
CREATE TABLE authorizations (
    order_id      TEXT PRIMARY KEY,
    consumer_id   UUID NOT NULL REFERENCES accounts (consumer_id),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    state         TEXT NOT NULL CHECK (state IN ('AUTHORIZED', 'REVERSED')),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX authorizations_by_consumer ON authorizations (consumer_id);
