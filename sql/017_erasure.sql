-- Erasure: what `email-engine contact forget` keeps of a person once every table has forgotten them.
--
-- A later import must recognise the address without anyone being able to read it back: each
-- tenant gets its own random salt (made by the first erasure, 32 bytes from Python's `secrets`),
-- and the erased address is kept as sha256(salt || address key in UTF-8) only. The import compares
-- in SQL with the built-in sha256() (`contacts.store.finish_file`): a staged row whose key hashes
-- to an erased one becomes a rejected row with reason 'erased' and no raw text. A tenant that never
-- erased anyone has no salt row, and its imports skip the comparison.
-- The address key is the one normalisation that keys contacts.email (quality.syntax.check_address).
CREATE TABLE erasure_salts (
    tenant_id  text PRIMARY KEY REFERENCES tenants (tenant_id),
    salt       bytea NOT NULL CHECK (octet_length(salt) >= 16),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erased_addresses (
    tenant_id  text NOT NULL REFERENCES erasure_salts (tenant_id),
    email_hash bytea NOT NULL CHECK (octet_length(email_hash) = 32),
    erased_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email_hash)
);

-- Feedback about an erased person can still arrive (a late bounce, a click, an unsubscribe): it
-- counts, but it brings the address back in no row. After each statement that adds events, those
-- of an erased address lose it (email NULL; a detail or url that holds it is replaced), and a
-- suppression of an erased address is dropped: the address can never be imported again, so there
-- is nobody to suppress. Statement-level, and skipped at once while nobody was ever erased.
-- Each new row is hashed once and probed in the primary key of erased_addresses (OFFSET 0 keeps the
-- EXISTS a per-row probe, never a join that would hash every (row, erased address) pair).
CREATE FUNCTION forget_erased_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM erased_addresses) THEN
        RETURN NULL;
    END IF;
    UPDATE delivery_events d SET email = NULL,
        detail = CASE WHEN strpos(lower(d.detail), n.email) > 0 THEN '[erased]' ELSE d.detail END,
        url = CASE WHEN strpos(lower(d.url), n.email) > 0 THEN '[erased]' ELSE d.url END
    FROM new_events n JOIN erasure_salts k ON k.tenant_id = n.tenant_id
    WHERE d.event_id = n.event_id AND n.email IS NOT NULL AND EXISTS (
        SELECT 1 FROM erased_addresses e
        WHERE e.tenant_id = n.tenant_id AND e.email_hash = sha256(k.salt || convert_to(n.email, 'UTF8'))
        OFFSET 0);
    RETURN NULL;
END
$$;
CREATE TRIGGER delivery_events_forget_erased
    AFTER INSERT ON delivery_events REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION forget_erased_events();

CREATE FUNCTION forget_erased_suppressions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM erased_addresses) THEN
        RETURN NULL;
    END IF;
    DELETE FROM suppressions s USING new_suppressions n JOIN erasure_salts k ON k.tenant_id = n.tenant_id
    WHERE s.tenant_id = n.tenant_id AND s.email = n.email AND EXISTS (
        SELECT 1 FROM erased_addresses e
        WHERE e.tenant_id = n.tenant_id AND e.email_hash = sha256(k.salt || convert_to(n.email, 'UTF8'))
        OFFSET 0);
    RETURN NULL;
END
$$;
CREATE TRIGGER suppressions_forget_erased
    AFTER INSERT ON suppressions REFERENCING NEW TABLE AS new_suppressions
    FOR EACH STATEMENT EXECUTE FUNCTION forget_erased_suppressions();
