-- PowerMTA accounting files: how far each file has been read, and the lines that could not be used.
--
-- accounting_files: one row per (tenant, transport, file name). byte_offset is the end of the last
-- complete line applied (a partial last line waits for the next tick); it only moves in the
-- transaction that records that chunk's events, so a crash never skips lines. header is the file's
-- first line (columns are read by name). file_size / inode / first_line_digest identify the file:
-- a file replaced under the same name (rotated, truncated) is read again from its start, and the
-- per-line dedupe keys of delivery_events keep lines already applied from counting twice.
-- A PowerMTA may serve several tenants: each tenant reads the file for the lines of its own jobs.
CREATE TABLE accounting_files (
    tenant_id         text NOT NULL REFERENCES tenants (tenant_id),
    transport         text NOT NULL,
    file_name         text NOT NULL,
    byte_offset       bigint NOT NULL DEFAULT 0 CHECK (byte_offset >= 0),
    header            text NOT NULL,
    file_size         bigint NOT NULL DEFAULT 0,
    inode             bigint,
    first_line_digest text NOT NULL,
    lines             bigint NOT NULL DEFAULT 0,
    events            bigint NOT NULL DEFAULT 0,
    linked            bigint NOT NULL DEFAULT 0,
    duplicates        bigint NOT NULL DEFAULT 0,
    ignored           bigint NOT NULL DEFAULT 0,
    kept              bigint NOT NULL DEFAULT 0,
    other_tenants     bigint NOT NULL DEFAULT 0,
    restarts          integer NOT NULL DEFAULT 0,
    first_seen_at     timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, transport, file_name)
);

-- accounting_kept_lines: lines kept with a reason instead of becoming events (unknown record type,
-- no recipient, a time that does not parse, not CSV of the header's width, too long, no job and
-- no ENVID of the tenant's ledger). Vocabulary:
-- email_engine_assets.feedback.accounting.KEPT_REASONS. A line kept twice (a rotated copy) is kept once.
CREATE TABLE accounting_kept_lines (
    line_id     bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (tenant_id),
    transport   text NOT NULL,
    file_name   text NOT NULL,
    byte_offset bigint NOT NULL,
    line_digest text NOT NULL,
    raw_line    text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('unknown_type', 'no_recipient', 'bad_time', 'malformed',
                                                'line_too_long', 'no_job_not_in_ledger')),
    kept_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, line_digest)
);
CREATE INDEX accounting_kept_lines_file ON accounting_kept_lines (tenant_id, transport, file_name, byte_offset);
