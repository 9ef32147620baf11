-- Each queue may set the lease a claim or heartbeat gets when it names none (milliseconds);
-- NULL uses the server's default (`jobs.lease`).
ALTER TABLE queues ADD COLUMN lease_ms INTEGER;
