-- +goose Up
-- Payments move money between two customer accounts of a tenant through the
-- state machine of internal/domain/payment.go. Every transition is a guarded
-- UPDATE … WHERE status = $expected AND version = $expected under FOR UPDATE;
-- the CHECK and the trigger below refuse anything else, whatever the code does.
CREATE TABLE payments (
    id               text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants (id),
    status           text NOT NULL CONSTRAINT payments_status_known
                     CHECK (status IN ('pending', 'confirmed', 'settled', 'cancelled', 'refunded')),
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         char(3) NOT NULL,
    payer_account_id text NOT NULL REFERENCES accounts (id),
    payee_account_id text NOT NULL REFERENCES accounts (id),
    description      text,
    metadata         jsonb NOT NULL DEFAULT '{}',
    version          bigint NOT NULL CHECK (version > 0),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT payments_two_parties CHECK (payer_account_id <> payee_account_id)
) WITH (fillfactor = 80); -- room for HOT updates: a transition changes no indexed column
-- Keyset pagination, newest first: all, or by account. There is no index on
-- status on purpose: every transition changes the status, and an index on it
-- would make each one a non-HOT update writing into every index. A status
-- filter reads the tenant's (or the account's) payments newest first and
-- skips the others.
CREATE INDEX payments_tenant_list ON payments (tenant_id, id);
CREATE INDEX payments_payer ON payments (tenant_id, payer_account_id, id);
CREATE INDEX payments_payee ON payments (tenant_id, payee_account_id, id);

-- The allowed status changes, as in domain.Transitions (a test checks that
-- the two agree), and the fields that never change.
-- +goose StatementBegin
CREATE FUNCTION payments_transition_allowed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (('pending', 'confirmed'), ('confirmed', 'settled'), ('pending', 'cancelled'),
                                        ('confirmed', 'refunded'), ('settled', 'refunded')) THEN
        RAISE EXCEPTION 'payment % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_transition_allowed';
    END IF;
    IF (NEW.id, NEW.tenant_id, NEW.amount, NEW.currency, NEW.payer_account_id, NEW.payee_account_id, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.tenant_id, OLD.amount, OLD.currency, OLD.payer_account_id, OLD.payee_account_id, OLD.created_at)
       OR NEW.version <> OLD.version + 1 THEN
        RAISE EXCEPTION 'payment %: only status, version (+1), updated_at, description and metadata may change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_transition_allowed';
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd
CREATE TRIGGER payments_transition_allowed BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_transition_allowed();

-- The history of every payment: one row per transition (version 1 is the
-- creation), naming the journal it wrote. Rows are immutable; with the event
-- of the same transaction they are the audit trail.
CREATE TABLE payment_transitions (
    payment_id  text NOT NULL REFERENCES payments (id),
    version     bigint NOT NULL CHECK (version > 0),
    tenant_id   text NOT NULL REFERENCES tenants (id),
    action      text NOT NULL CHECK (action IN ('create', 'confirm', 'settle', 'cancel', 'refund')),
    from_status text,
    to_status   text NOT NULL,
    journal_id  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (payment_id, version)
);
-- +goose StatementBegin
CREATE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
-- +goose StatementEnd
CREATE TRIGGER payment_transitions_append_only BEFORE UPDATE OR DELETE ON payment_transitions
    FOR EACH ROW EXECUTE FUNCTION append_only();

-- +goose Down
DROP TABLE payment_transitions;
DROP FUNCTION append_only();
DROP TABLE payments;
DROP FUNCTION payments_transition_allowed();
