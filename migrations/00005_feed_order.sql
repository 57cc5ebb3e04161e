-- +goose Up
-- The event feed serves each aggregate's events in sequence order.
--
-- It used to order by the writer's xid, which is taken at the idempotency
-- claim, before the aggregate's row lock: two requests racing on one
-- payment could commit in the opposite order of their xids, and the feed
-- served sequence 4 before sequence 3.
--
-- feed_xid is the event's sort key: the greater of the writer's xid and
-- the feed_xid of the aggregate's previous event (which has committed: its
-- writer held the row lock this writer waited for). Ties break by position,
-- and an event that inherits a key was inserted after the one it inherits
-- from, so it takes a higher position. The no-skip argument is unchanged,
-- because feed_xid >= xid (a CHECK keeps it so): the feed serves only keys
-- below the snapshot's xmin, every transaction with an xid below it has
-- finished, and any event still to commit has a writer xid, so a key, of at
-- least xmin. And all events that will ever have key K exist once K is below
-- xmin, so the order among them is final.
ALTER TABLE events ADD COLUMN feed_xid xid8;
UPDATE events SET feed_xid = xid;
ALTER TABLE events ALTER COLUMN feed_xid SET NOT NULL;
ALTER TABLE events ADD CONSTRAINT events_feed_xid_from_writer CHECK (feed_xid >= xid);
CREATE INDEX events_tenant_feed_order ON events (tenant_id, feed_xid, position);
DROP INDEX events_tenant_feed;

-- +goose Down
CREATE INDEX events_tenant_feed ON events (tenant_id, xid, position);
DROP INDEX events_tenant_feed_order;
ALTER TABLE events DROP COLUMN feed_xid;
