-- +goose Up
-- Event retention deletes events by age (RETENTION_EVENTS), oldest first,
-- once no delivery refers to them. Without an index on created_at it read
-- the whole table every minute (the plan test, internal/store/plans_test.go,
-- showed a sequential scan of events and of webhook_deliveries).
CREATE INDEX events_created_at ON events (created_at);

-- +goose Down
DROP INDEX events_created_at;
