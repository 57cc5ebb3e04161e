-- +goose Up
-- GET /v1/idempotency-keys/{key} shows which request a key names: its
-- method and path. Records claimed before this migration have neither.
ALTER TABLE idempotency_keys ADD COLUMN method text, ADD COLUMN path text;

-- +goose Down
ALTER TABLE idempotency_keys DROP COLUMN method, DROP COLUMN path;
