-- +goose Up
-- Webhooks: endpoints a tenant subscribes, and one delivery row per (event,
-- endpoint) that the relay (internal/outbox) works through.

-- Ids made in SQL look like domain.NewID's: prefix + 26 characters of base32
-- (0-9, a-z without i, l, o, u) over 48 bits of milliseconds and 80 random
-- bits, so they sort by creation time. A test compares them with Go's.
-- +goose StatementBegin
CREATE FUNCTION safeflow_encode_id(prefix text, raw bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT prefix || string_agg(substr('0123456789abcdefghjkmnpqrstvwxyz', substring(v.b FROM i * 5 + 1 FOR 5)::int + 1, 1), '' ORDER BY i)
    FROM (SELECT ('x' || encode(raw, 'hex'))::bit(128) || B'00' AS b) v, generate_series(0, 25) i
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE FUNCTION safeflow_new_id(prefix text) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT safeflow_encode_id(prefix,
        substr(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16), 1, 6) ||
        substr(uuid_send(gen_random_uuid()), 1, 10))
$$;
-- +goose StatementEnd

-- The secret signs deliveries, so it is kept as issued (whsec_ + base64 of
-- 32 random bytes); the API shows it only in the answer that created it.
-- An empty event_types subscribes to every type.
CREATE TABLE webhook_endpoints (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    url         text NOT NULL,
    event_types text[] NOT NULL DEFAULT '{}',
    secret      text NOT NULL,
    status      text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at  timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

-- status: pending (due at next_attempt_at; while a relay holds it,
-- next_attempt_at is the end of its lease and lease is the claim's token),
-- delivered, or dead (out of attempts, 410 Gone, or its endpoint disabled).
-- There are no foreign keys on purpose: every event insert would take
-- FOR KEY SHARE on the endpoint row, one hot row for all writers. The
-- fan-out trigger and the endpoint flows keep the references (see the
-- advisory lock below), and an invariant checks them.
CREATE TABLE webhook_deliveries (
    id               text PRIMARY KEY,
    tenant_id        text NOT NULL,
    event_id         text NOT NULL,
    endpoint_id      text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz,
    lease            bigint,
    last_error       text,
    last_status_code int,
    delivered_at     timestamptz,
    finished_at      timestamptz,
    replays          int NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    UNIQUE (event_id, endpoint_id),
    CONSTRAINT webhook_deliveries_pending_is_due CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_finished CHECK ((status = 'pending') = (finished_at IS NULL)),
    CONSTRAINT webhook_deliveries_delivered_at CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
) WITH (fillfactor = 70);
-- Claiming: the due pending rows, oldest due first. Partial, so it holds
-- only the backlog however many delivered rows the table keeps.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- Lists, newest first: all of a tenant's, an endpoint's, and the
-- undelivered ones by status (dead letters, backlog).
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, id);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_open ON webhook_deliveries (tenant_id, status, id) WHERE status <> 'delivered';
-- Retention: finished rows by age.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (status, finished_at) WHERE status <> 'pending';

-- Fan-out: every event, as it is inserted in its business transaction,
-- gets one pending delivery per endpoint of its tenant that subscribes to
-- its type, and a NOTIFY that wakes the relays at commit.
--
-- "Only endpoints that exist when the event commits receive it" is exact:
-- the trigger takes the tenant's webhook lock (7301, hashtext(tenant)) in
-- SHARE mode and only then reads the endpoints, in a statement of its own,
-- so with a fresh READ COMMITTED snapshot. Creating or deleting an endpoint
-- takes the same lock EXCLUSIVE. So either the endpoint's transaction ends
-- first and the read sees it, or it waits until the event's transaction has
-- committed. Writers never wait for each other on it (shared mode).
-- +goose StatementBegin
CREATE FUNCTION events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER events_fan_out AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_fan_out();

-- +goose Down
DROP TRIGGER events_fan_out ON events;
DROP FUNCTION events_fan_out();
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
DROP FUNCTION safeflow_new_id(text);
DROP FUNCTION safeflow_encode_id(text, bytea);
