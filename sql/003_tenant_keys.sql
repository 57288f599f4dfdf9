-- Tenant isolation in the schema: a row that names a contact names it by (tenant_id, contact_id),
-- so the database itself refuses a row of one tenant pointing at another tenant's contact.
--
-- The rule for every table holding a contact_id (enforced by email_engine_tests/test_tenant_keys.py):
--   * it has a tenant_id column and FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id);
--   * rows that only describe the contact (validations, enrichment, tag assignments) go with it:
--     ON DELETE CASCADE, and their primary key / upsert target starts with (tenant_id, contact_id);
--   * rows that must outlive an erased contact (campaign sends, delivery events) keep the tenant and
--     lose the person: contact_id is nullable and the key is declared
--         FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE SET NULL (contact_id)
--     (a column list on SET NULL needs PostgreSQL 15 or later; a plain SET NULL would also null tenant_id,
--     which is NOT NULL).
--
-- Also here: the value vocabularies of email_validations as CHECK constraints (domain and mailbox statuses),
-- read back and compared with the Python constants by email_engine_tests/test_vocabularies.py.

ALTER TABLE contacts ADD CONSTRAINT contacts_tenant_contact_key UNIQUE (tenant_id, contact_id);

-- email_validations
ALTER TABLE email_validations DROP CONSTRAINT email_validations_contact_id_fkey;
ALTER TABLE email_validations DROP CONSTRAINT email_validations_pkey;
ALTER TABLE email_validations ADD CONSTRAINT email_validations_pkey PRIMARY KEY (tenant_id, contact_id);
ALTER TABLE email_validations ADD CONSTRAINT email_validations_contact_fkey
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE CASCADE;
ALTER TABLE email_validations ADD CONSTRAINT email_validations_domain_status_check
    CHECK (domain_status IN ('mx', 'a_fallback', 'null_mx', 'nxdomain', 'no_mail', 'unknown'));
ALTER TABLE email_validations ADD CONSTRAINT email_validations_mailbox_status_check
    CHECK (mailbox_status IN ('deliverable', 'undeliverable', 'catch_all', 'full_inbox', 'disabled', 'unknown'));

-- contact_enrichment: the primary key now leads with tenant_id and serves the per-tenant index.
ALTER TABLE contact_enrichment DROP CONSTRAINT contact_enrichment_contact_id_fkey;
ALTER TABLE contact_enrichment DROP CONSTRAINT contact_enrichment_pkey;
ALTER TABLE contact_enrichment ADD CONSTRAINT contact_enrichment_pkey PRIMARY KEY (tenant_id, contact_id);
ALTER TABLE contact_enrichment ADD CONSTRAINT contact_enrichment_contact_fkey
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE CASCADE;
DROP INDEX contact_enrichment_tenant;

-- tag_assignments
ALTER TABLE tag_assignments DROP CONSTRAINT tag_assignments_contact_id_fkey;
ALTER TABLE tag_assignments DROP CONSTRAINT tag_assignments_pkey;
ALTER TABLE tag_assignments ADD CONSTRAINT tag_assignments_pkey PRIMARY KEY (tenant_id, contact_id, tag, provenance);
ALTER TABLE tag_assignments ADD CONSTRAINT tag_assignments_contact_fkey
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE CASCADE;
