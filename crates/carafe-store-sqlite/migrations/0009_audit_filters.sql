-- Filters of the audit log API. Listings are newest first (by id), so each filterable column is
-- indexed with the id: an exact action or actor is one backward range scan. `at` serves time
-- windows (`since`/`until`), which are the usual shape of an export.
CREATE INDEX audit_events_action ON audit_events (action, id);
CREATE INDEX audit_events_actor ON audit_events (actor, id);
CREATE INDEX audit_events_at ON audit_events (at);
