-- The template version a mail was rendered from: JSON {"name", "version", "locale"}, NULL for
-- mail submitted with its content given directly.
ALTER TABLE mail ADD COLUMN template TEXT;

-- Template names with the number of their latest version. A put takes the next number here
-- (an upsert, so concurrent puts never share one); deleting a template removes its row, so a
-- name put again starts over at 1.
CREATE TABLE mail_template_heads (
    name    TEXT PRIMARY KEY,
    latest  INTEGER NOT NULL CHECK (latest >= 1)
) STRICT;

-- Template versions, immutable once written: who created each and which locale its put
-- changed.
CREATE TABLE mail_template_versions (
    name        TEXT NOT NULL REFERENCES mail_template_heads (name),
    version     INTEGER NOT NULL CHECK (version >= 1),
    changed     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) STRICT, WITHOUT ROWID;

-- Each version's variants, one per locale: a put copies the previous version's other locales
-- and adds the one it was given. `layout` names another template the output is wrapped in.
CREATE TABLE mail_template_variants (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    locale     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    text_body  TEXT,
    html_body  TEXT,
    layout     TEXT,
    PRIMARY KEY (name, version, locale),
    FOREIGN KEY (name, version) REFERENCES mail_template_versions (name, version)
) STRICT, WITHOUT ROWID;
