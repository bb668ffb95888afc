-- The messaging tables every FTGO service database has, in their own schema so that no service
-- migration can collide with them. Applied by ftgo_platform::db::migrate before the service's own.

-- Transactional outbox: a message is inserted in the same transaction as the state change that
-- causes it, and relayed to JetStream afterwards with `id` as its Nats-Msg-Id.
CREATE TABLE messaging.outbox (
    id           UUID PRIMARY KEY,
    -- Relay order. Taken at insert, not at commit, so it is close to commit order but not exactly
    -- it; no consumer relies on a global order.
    seq          BIGSERIAL NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    message_type TEXT NOT NULL,
    headers      JSONB NOT NULL DEFAULT '{}'::jsonb,
    payload      BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished ON messaging.outbox (seq) WHERE published_at IS NULL;

-- Wake the relay when new rows commit, instead of making it poll hard.
CREATE FUNCTION messaging.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ftgo_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_inserted AFTER INSERT ON messaging.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION messaging.notify_outbox();

-- Idempotent consumers: the id of every message a consumer has handled, recorded in the same
-- transaction as the handler's effect. A redelivered message finds its id here and has no effect.
CREATE TABLE messaging.processed_messages (
    consumer     TEXT NOT NULL,
    message_id   UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Messages a consumer gave up on: refused by its handler, or still failing after the bounded
-- number of deliveries. Kept whole, with the reason, so nothing is lost and an operator can see,
-- count and replay them.
CREATE TABLE messaging.dead_letters (
    id           BIGSERIAL PRIMARY KEY,
    consumer     TEXT NOT NULL,
    message_id   UUID,
    subject      TEXT NOT NULL,
    message_type TEXT,
    headers      JSONB NOT NULL,
    payload      BYTEA NOT NULL,
    error        TEXT NOT NULL,
    deliveries   BIGINT NOT NULL,
    failed_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_by_consumer ON messaging.dead_letters (consumer, failed_at);
