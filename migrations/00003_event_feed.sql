-- +goose Up
-- The event feed reads a tenant's events in (xid, position) order, only below
-- the oldest transaction still running (pg_snapshot_xmin), so that an event
-- whose transaction commits late can never sort before one already served.
CREATE INDEX events_tenant_feed ON events (tenant_id, xid, position);

-- +goose Down
DROP INDEX events_tenant_feed;
