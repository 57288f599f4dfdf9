-- Segments: the contact fields a segment tests, folded and indexed, and membership snapshots.

-- The matcher's folding (polars strip_chars + to_lowercase): trim Unicode White_Space, then lower-case.
-- One definition, used to fill the profile table and for the fields the profile does not hold.
CREATE FUNCTION selection_fold(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN lower(btrim(value, E'\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000'));

-- The one domain rule (email_engine_resources/email_domain.py) for SQL: the part after the last '@',
-- NULL when there is none or it is empty. email_engine_tests/test_email_domain.py holds both to the same cases.
CREATE FUNCTION email_domain(address text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN substring(address FROM '@([^@]+)$');

-- One row per contact: what segments select on most (verdict of the latest check, enriched
-- language, country and phone, category, tags, validation flags, sources, the email key and its domain),
-- folded as the matcher folds them (tags are tag slugs and sources source ids: folded already; no list
-- holds a blank or null element). Refreshed set-based before
-- a tenant's segments are built (only rows that differ are written); it only describes the contact.
CREATE TABLE segment_profiles (
    tenant_id    text NOT NULL,
    contact_id   bigint NOT NULL,
    email        text NOT NULL,
    email_domain text,
    verdict      text,
    phone        text,
    language     text,
    country      text,
    category     text,
    tags         text[] NOT NULL DEFAULT '{}',
    flags        text[] NOT NULL DEFAULT '{}',
    sources      text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, contact_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE CASCADE
);
CREATE INDEX segment_profiles_scalars ON segment_profiles (tenant_id, verdict, country, language);
CREATE INDEX segment_profiles_tags ON segment_profiles USING gin (tags);
CREATE INDEX segment_profiles_flags ON segment_profiles USING gin (flags);

-- The current snapshot of each segment: which definition built it and its counts.
CREATE TABLE segment_snapshots (
    tenant_id           text NOT NULL REFERENCES tenants (tenant_id),
    segment             text NOT NULL CHECK (segment ~ '^[a-z0-9][a-z0-9_]*$'),
    definition_hash     text NOT NULL,
    definition          jsonb NOT NULL,
    built_at            timestamptz NOT NULL DEFAULT now(),
    matched             bigint NOT NULL,
    suppressed_excluded bigint NOT NULL,
    members             bigint NOT NULL,
    per_language        jsonb NOT NULL DEFAULT '{}'::jsonb,
    per_verdict         jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, segment),
    UNIQUE (tenant_id, segment, definition_hash)
);

-- Members of the current snapshot. The key to the snapshot includes the definition hash, so the
-- database refuses a member row of another definition than its snapshot's: a snapshot never mixes
-- two definitions. A rebuild replaces the segment's rows in one transaction (readers see old or new).
CREATE TABLE segment_members (
    tenant_id       text NOT NULL,
    segment         text NOT NULL,
    contact_id      bigint NOT NULL,
    definition_hash text NOT NULL,
    PRIMARY KEY (tenant_id, segment, contact_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, segment, definition_hash)
        REFERENCES segment_snapshots (tenant_id, segment, definition_hash) ON DELETE CASCADE
);
CREATE INDEX segment_members_contact ON segment_members (tenant_id, contact_id);
