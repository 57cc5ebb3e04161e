-- +goose Up
-- A guarded write (an UPDATE that must match exactly the row the
-- transaction locked, at the version it read) checks itself on the server.
-- The safe flow sends its writes and its COMMIT in one round trip
-- (internal/store/flow.go), so a check made by the client after the
-- replies would come after the COMMIT. The statement
--   WITH changed AS (UPDATE … RETURNING 1) SELECT safeflow_expect_one(count(*), 'what') FROM changed
-- raises instead, which aborts the transaction and makes the server skip
-- the COMMIT queued behind it. A guard that fires is a bug, never a
-- client's fault: SQLSTATE SF001 is answered as an internal error.
-- +goose StatementBegin
CREATE FUNCTION safeflow_expect_one(matched bigint, what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF matched <> 1 THEN
        RAISE EXCEPTION 'safeflow: the guarded write of % matched % rows, not 1', what, matched
            USING ERRCODE = 'SF001';
    END IF;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION safeflow_expect_one(bigint, text);
