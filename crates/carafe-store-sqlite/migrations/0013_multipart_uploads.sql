-- S3 multipart uploads Carafe sends itself: recorded before the first part goes up and
-- deleted once the upload is completed or aborted, so one a crash interrupted can still be
-- aborted by the sweep (S3 cannot be asked to list them through object_store).
CREATE TABLE multipart_uploads (
    key         TEXT NOT NULL,
    upload_id   TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    PRIMARY KEY (key, upload_id)
) STRICT;
CREATE INDEX multipart_uploads_started ON multipart_uploads (started_at);
