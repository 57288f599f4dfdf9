-- tag_assignments: one index fewer to maintain per assignment.
-- (tenant_id, provenance) serves no query: reads go by (tenant_id, contact_id) ranges or by the whole
-- tenant, which the primary key (tenant_id, contact_id, tag, provenance) serves; a first tagging of
-- a large tenant inserts about two assignments per contact, and each index costs on every one.
DROP INDEX tag_assignments_tenant;
