-- Filters of the audit log API. Listings are newest first (by id), so each filterable column is
-- indexed with the id: an exact action or actor is one backward range scan. Actions are indexed
-- in the "C" collation, in which the store matches them, so an action prefix (`file.*`) is a
-- byte-ordered range scan whatever the database's locale. `at` serves time windows
-- (`since`/`until`), which are the usual shape of an export.
CREATE INDEX audit_events_action ON audit_events (action COLLATE "C", id);
CREATE INDEX audit_events_actor ON audit_events (actor, id);
CREATE INDEX audit_events_at ON audit_events (at);
