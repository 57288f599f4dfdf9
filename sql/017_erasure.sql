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
