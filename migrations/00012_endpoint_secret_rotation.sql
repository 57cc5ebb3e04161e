-- +goose Up
-- POST /v1/webhook-endpoints/{id}/rotate-secret keeps the previous secret
-- until previous_secret_expires_at; until then every delivery is signed
-- with both (webhook-signature: "v1,<new> v1,<previous>"), so a receiver
-- that knows either verifies it while it switches over.
-- PATCH may change event_types: event_types_changed_at (null: never) lets
-- the invariants hold deliveries to the subscription of their time.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN event_types_changed_at timestamptz,
    ADD CONSTRAINT webhook_endpoints_previous_secret CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));

-- +goose Down
ALTER TABLE webhook_endpoints
    DROP CONSTRAINT webhook_endpoints_previous_secret,
    DROP COLUMN event_types_changed_at,
    DROP COLUMN previous_secret_expires_at,
    DROP COLUMN previous_secret;
