-- What a mail was rendered from: `{"name", "version", "locale"}` as JSON, as headers and tags
-- are kept. NULL for mail given its content directly, and on mail sent before templates.
ALTER TABLE mail ADD COLUMN template JSONB;

-- Mail templates: one row per name, holding its latest version number. A put bumps `latest`
-- with an upsert, whose row lock makes concurrent puts of one name take turns; deleting the row
-- is what makes a name put again start over at 1. `COLLATE "C"` makes `name` order byte
-- order, so keyset pages (`name > $1 ORDER BY name`) go in the same order as on SQLite.
CREATE TABLE mail_template_heads (
    name    TEXT COLLATE "C" PRIMARY KEY,
    latest  INTEGER NOT NULL
);

-- Every version of a template: which locale its put changed, who put it and when. Written once
-- and never updated; removed only with the whole template.
CREATE TABLE mail_template_versions (
    name        TEXT COLLATE "C" NOT NULL,
    version     INTEGER NOT NULL,
    changed     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, version)
);

-- A version's variants, one per locale: the one its put changed and copies of the previous
-- version's others. No foreign key, as for mail_events: they are written in the version's own
-- transaction and deleted with it. `locale` is `COLLATE "C"` so variants read in byte order.
CREATE TABLE mail_template_variants (
    name       TEXT COLLATE "C" NOT NULL,
    version    INTEGER NOT NULL,
    locale     TEXT COLLATE "C" NOT NULL,
    subject    TEXT NOT NULL,
    text_body  TEXT,
    html_body  TEXT,
    layout     TEXT,
    PRIMARY KEY (name, version, locale)
);
