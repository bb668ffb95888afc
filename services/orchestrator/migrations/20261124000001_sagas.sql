-- Every saga instance, with all it needs to resume after a restart: where it is (step and
-- direction), its data, and its history for inspection.
CREATE TABLE sagas (
    id             UUID PRIMARY KEY,
    saga_type      TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('RUNNING', 'COMPENSATING', 'SUCCEEDED', 'COMPENSATED')),
    step           INT NOT NULL,
    data           JSONB NOT NULL,
    history        JSONB NOT NULL DEFAULT '[]'::jsonb,
    failure_reason TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sagas_by_order ON sagas (order_id, created_at);
