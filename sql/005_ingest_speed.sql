-- Ingest at the floor: staged rows without per-row checks or random-order indexes, and the
-- provenance of golden-record fields stored sparsely.

-- staged_rows is read by file (staging, duplicates, merge, accounting) and, per tenant, by the
-- tenant's files: a BRIN index on file_id serves all of them (rows of a file are appended
-- together). The per-row foreign key and the two B-tree indexes cost more than the COPY itself.
-- Line numbers stay unique per file by construction of the readers.
ALTER TABLE staged_rows DROP CONSTRAINT staged_rows_file_id_fkey;
ALTER TABLE staged_rows DROP CONSTRAINT staged_rows_pkey;
DROP INDEX staged_rows_tenant_email;
CREATE INDEX staged_rows_file ON staged_rows USING brin (file_id) WITH (pages_per_range = 32, autosummarize = on);

-- What the dropped foreign key did on delete, once per statement instead of once per row.
-- (The ledger row is created before its rows are staged, under the same tenant lock.)
CREATE FUNCTION delete_staged_rows_of_files() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM staged_rows s USING deleted_files d WHERE s.file_id = d.file_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER import_files_delete_staged_rows
    AFTER DELETE ON import_files REFERENCING OLD TABLE AS deleted_files
    FOR EACH STATEMENT EXECUTE FUNCTION delete_staged_rows_of_files();

-- Sparse provenance. The "primary" row of a contact is its highest-ranked staged row
-- (priority, file id, line); it provides every field it fills. field_sources now holds only the
-- fields won by another row: {field: {"priority": …, "file_id": …, "line": …}}.
-- Contacts merged before this migration keep their per-field entries with no primary row, which
-- is a valid (non-canonical) form; a rebuild rewrites them canonically.
ALTER TABLE contacts
    ADD COLUMN primary_priority integer,
    ADD COLUMN primary_file_id  bigint,
    ADD COLUMN primary_line_no  bigint;
