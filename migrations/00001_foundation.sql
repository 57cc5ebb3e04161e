-- +goose Up
-- Tenants and their API keys. Only a SHA-256 hash of each secret is stored.
CREATE TABLE tenants (
    id         text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    hash       bytea NOT NULL UNIQUE,
    prefix     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Accounts. A customer account caches its three books on the row; the cache is
-- updated in the same transaction as the ledger lines, under FOR UPDATE.
-- A system (external) account exists per tenant and currency; it funds deposits
-- and receives withdrawals. It has no balance check and no cache (its books are
-- NULL and its balance is the sum of its ledger lines), so no request ever locks
-- or updates its row: deposits to different accounts never queue behind it.
CREATE TABLE accounts (
    id         text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    kind       text NOT NULL CHECK (kind IN ('customer', 'system')),
    currency   char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    name       text,
    metadata   jsonb NOT NULL DEFAULT '{}',
    available  bigint,
    held       bigint,
    incoming   bigint,
    version    bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL,
    CONSTRAINT accounts_books_cached CHECK (
        (kind = 'customer') = (available IS NOT NULL AND held IS NOT NULL AND incoming IS NOT NULL)
        AND (kind = 'system') = (available IS NULL AND held IS NULL AND incoming IS NULL)),
    CONSTRAINT accounts_books_nonnegative CHECK (available >= 0 AND held >= 0 AND incoming >= 0)
) WITH (fillfactor = 80); -- room for HOT updates of the books
CREATE INDEX accounts_tenant_list ON accounts (tenant_id, id) WHERE kind = 'customer';
CREATE UNIQUE INDEX accounts_one_system_per_currency ON accounts (tenant_id, currency) WHERE kind = 'system';

-- Deposits and withdrawals: money in from / out to the tenant's system account.
CREATE TABLE movements (
    id         text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    kind       text NOT NULL CHECK (kind IN ('deposit', 'withdrawal')),
    account_id text NOT NULL REFERENCES accounts (id),
    amount     bigint NOT NULL CHECK (amount > 0),
    currency   char(3) NOT NULL,
    reference  text,
    journal_id text NOT NULL,
    created_at timestamptz NOT NULL
);

-- The ledger: append-only, double-entry. Every journal sums to zero, checked
-- by a statement-level trigger.
-- account_id has no foreign key on purpose: a foreign key takes FOR KEY SHARE
-- on the referenced row, so every movement would lock the tenant's system
-- account row and pile concurrent movements into one MultiXact on it. The
-- writer has the customer account locked and the system account id read in
-- the same transaction; the invariant checks in the tests verify the lines.
CREATE TABLE ledger_entries (
    id         text PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES tenants (id),
    journal_id text NOT NULL,
    account_id text NOT NULL,
    book       text NOT NULL CHECK (book IN ('available', 'held', 'incoming')),
    amount     bigint NOT NULL CHECK (amount <> 0),
    currency   char(3) NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (tenant_id, account_id, id);
CREATE INDEX ledger_entries_journal ON ledger_entries (journal_id);

-- The lines of a journal are inserted by one statement; this checks every
-- journal of each statement once, over the statement's transition table.
-- +goose StatementBegin
CREATE FUNCTION ledger_journal_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT journal_id INTO bad FROM new_lines GROUP BY journal_id HAVING sum(amount) <> 0 LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger journal % does not sum to zero (a journal''s lines are inserted by one statement)', bad
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_journal_balanced';
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd
CREATE TRIGGER ledger_journal_balanced AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION ledger_journal_balanced();

-- +goose StatementBegin
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
-- +goose StatementEnd
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- The transactional outbox. Events are immutable: payload holds the exact
-- envelope bytes that are served by the feed and signed for webhooks.
-- position orders inserts; xid (the writing transaction) lets the feed avoid
-- skipping events that commit late. Per-endpoint delivery state lives in its
-- own table (one row per event and endpoint), never on the event row.
CREATE TABLE events (
    id             text PRIMARY KEY,
    position       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    tenant_id      text NOT NULL REFERENCES tenants (id),
    type           text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence > 0),
    payload        bytea NOT NULL,
    created_at     timestamptz NOT NULL,
    xid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (tenant_id, aggregate_type, aggregate_id, sequence)
);
CREATE INDEX events_tenant_position ON events (tenant_id, position);

-- Idempotency records. A row is inserted (claimed) at the start of the business
-- transaction and completed with the response before commit, so a committed
-- row always holds a response; an uncommitted one is a lock that concurrent
-- duplicates wait on. The body is bytea so it replays byte for byte.
CREATE TABLE idempotency_keys (
    tenant_id    text NOT NULL REFERENCES tenants (id),
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,
    status_code  int,
    content_type text,
    location     text,
    etag         text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITH (fillfactor = 80); -- room for the HOT update that stores the response
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE events;
DROP TABLE ledger_entries;
DROP FUNCTION ledger_append_only();
DROP FUNCTION ledger_journal_balanced();
DROP TABLE movements;
DROP TABLE accounts;
DROP TABLE api_keys;
DROP TABLE tenants;
