-- +goose Up
-- The record of failed attempts: one row per request that ended in a 5xx
-- or ran out of retries, written after its transaction rolled back, in a
-- statement of its own (what REQUIRES_NEW audit logs do elsewhere), so the
-- failure outlives the rollback. No foreign keys: recording must not fail
-- or lock. Purged after FAILURE_RETENTION.
CREATE TABLE request_failures (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL,
    idempotency_key text,
    request_id      text NOT NULL,
    method          text NOT NULL,
    route           text NOT NULL,
    cause           text NOT NULL,
    attempts        int NOT NULL,
    status          int NOT NULL,
    code            text NOT NULL,
    duration_ms     bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_failures_key ON request_failures (tenant_id, idempotency_key, id) WHERE idempotency_key IS NOT NULL;
CREATE INDEX request_failures_age ON request_failures (created_at);

-- +goose Down
DROP TABLE request_failures;
