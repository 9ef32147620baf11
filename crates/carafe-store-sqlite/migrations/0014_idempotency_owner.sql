-- The random token of the request holding an Idempotency-Key: only that request may renew,
-- complete or release its reservation, so one whose lock lapsed and was taken over by a retry
-- cannot overwrite or free the new holder's. NULL on records reserved before it was kept.
ALTER TABLE idempotency_records ADD COLUMN owner TEXT;
