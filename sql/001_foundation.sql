-- Foundation: tenants, sources, the import ledger, rejects, staged rows (provenance), golden contacts.
-- Every table carries tenant_id.

CREATE TABLE tenants (
    tenant_id     text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]*$'),
    name          text NOT NULL,
    config_sha256 text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE data_sources (
    tenant_id  text NOT NULL REFERENCES tenants (tenant_id),
    source_id  text NOT NULL CHECK (source_id ~ '^[a-z0-9][a-z0-9_-]*$'),
    priority   integer NOT NULL DEFAULT 0,
    settings   jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source_id)
);

-- One row per distinct file content per (tenant, source): a renamed or re-dropped file is not imported twice.
CREATE TABLE import_files (
    file_id        bigserial PRIMARY KEY,
    tenant_id      text NOT NULL,
    source_id      text NOT NULL,
    path           text NOT NULL,
    content_sha256 text NOT NULL,
    size_bytes     bigint NOT NULL,
    status         text NOT NULL CHECK (status IN ('processing', 'imported', 'failed')),
    format         text,
    encoding       text,
    delimiter      text,
    priority       integer NOT NULL DEFAULT 0,
    rows_total     bigint NOT NULL DEFAULT 0,
    new            bigint NOT NULL DEFAULT 0,
    merged         bigint NOT NULL DEFAULT 0,
    duplicates     bigint NOT NULL DEFAULT 0,
    rejected       bigint NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    duration_ms    bigint,
    error          text,
    merged_at      timestamptz,
    run_id         text,
    FOREIGN KEY (tenant_id, source_id) REFERENCES data_sources (tenant_id, source_id),
    UNIQUE (tenant_id, source_id, content_sha256)
);
CREATE INDEX import_files_pending_merge ON import_files (tenant_id) WHERE status = 'imported' AND merged_at IS NULL;

CREATE TABLE rejected_rows (
    tenant_id text NOT NULL,
    file_id   bigint NOT NULL REFERENCES import_files (file_id) ON DELETE CASCADE,
    line_no   bigint NOT NULL,
    raw_text  text NOT NULL,
    reason    text NOT NULL,
    PRIMARY KEY (file_id, line_no)
);
CREATE INDEX rejected_rows_tenant ON rejected_rows (tenant_id, file_id);

-- Normalised rows of each import: the provenance of every golden-record field.
CREATE TABLE staged_rows (
    tenant_id    text NOT NULL,
    file_id      bigint NOT NULL REFERENCES import_files (file_id) ON DELETE CASCADE,
    line_no      bigint NOT NULL,
    email        text NOT NULL,
    email_raw    text NOT NULL,
    first_name   text,
    last_name    text,
    full_name    text,
    company      text,
    phone        text,
    country      text,
    language     text,
    city         text,
    category     text,
    website      text,
    tags         text[] NOT NULL DEFAULT '{}',
    is_duplicate boolean NOT NULL DEFAULT false,
    PRIMARY KEY (file_id, line_no)
);
CREATE INDEX staged_rows_tenant_email ON staged_rows (tenant_id, email);

CREATE TABLE contacts (
    contact_id    bigserial PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (tenant_id),
    email         text NOT NULL,
    first_name    text,
    last_name     text,
    full_name     text,
    company       text,
    phone         text,
    country       text,
    language      text,
    city          text,
    category      text,
    website       text,
    tags          text[] NOT NULL DEFAULT '{}',
    sources       text[] NOT NULL DEFAULT '{}',
    -- per field: {"source": ..., "file_id": ..., "line": ..., "priority": ...} of the value that won
    field_sources jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);
CREATE INDEX contacts_tags ON contacts USING gin (tags);
