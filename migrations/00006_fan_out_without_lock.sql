-- +goose Up
-- Creating or deleting a webhook endpoint no longer makes the tenant's
-- writers wait. The fan-out used to take a tenant-wide advisory lock in
-- SHARE mode for every event, and endpoint changes took it EXCLUSIVE: one
-- create queued behind a long transaction of the tenant, and every event
-- insert of the tenant queued behind the create.
--
-- The guarantees of product.md §4 hold without it:
-- * Every event whose request started after an endpoint's 201 is delivered
--   to it: that request's event insert runs after the endpoint committed, and
--   the read of the endpoints below takes a snapshot at least that new.
-- * Nothing is sent after a DELETE answered 204: an event transaction that
--   read the endpoint before the delete may still insert a delivery for it
--   and commit after; the relay removes such a row, unsent, when it claims
--   it (its endpoint is gone), and the DELETE waits for the attempts that
--   were already under way (internal/store/webhook.go).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, status, next_attempt_at, created_at)
    SELECT safeflow_new_id('del_'), NEW.tenant_id, NEW.id, w.id, 'pending', now(), now()
    FROM webhook_endpoints w
    WHERE w.tenant_id = NEW.tenant_id AND (w.event_types = '{}' OR NEW.type = ANY (w.event_types))
    ORDER BY w.id;
    IF FOUND THEN
        PERFORM pg_notify('safeflow_deliveries', '');
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7301, hashtext(NEW.tenant_id));
    INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, status, next_attempt_at, created_at)
    SELECT safeflow_new_id('del_'), NEW.tenant_id, NEW.id, w.id, 'pending', now(), now()
    FROM webhook_endpoints w
    WHERE w.tenant_id = NEW.tenant_id AND (w.event_types = '{}' OR NEW.type = ANY (w.event_types))
    ORDER BY w.id;
    IF FOUND THEN
        PERFORM pg_notify('safeflow_deliveries', '');
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd
