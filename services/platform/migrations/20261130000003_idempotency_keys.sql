-- The commands a client sent with an `Idempotency-Key`, and what they answered: the same key with
-- the same request gets the same answer again, never a second effect. Written in the command's
-- own transaction, so a key is recorded exactly when its effect is.
CREATE TABLE messaging.idempotency_keys (
    operation  TEXT NOT NULL,
    key        TEXT NOT NULL,
    request    BYTEA NOT NULL,
    response   BYTEA,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (operation, key)
);
CREATE INDEX idempotency_keys_by_age ON messaging.idempotency_keys (created_at);
