-- Suppressions: addresses a tenant must never mail again (or not until lifted by `unsuppress`).
--
-- Keyed by (tenant_id, email) where email is the address's key (the same normalisation as
-- contacts.email), so a suppression also holds for an address no contact row carries yet.
-- The send-time claim of the campaign ledger re-checks this table in the claiming transaction
-- (suppression wins); segments leave suppressed addresses out of their snapshots.
-- The reasons are email_engine_assets.audiences.suppressions.SUPPRESSION_REASONS.
CREATE TABLE suppressions (
    tenant_id  text NOT NULL REFERENCES tenants (tenant_id),
    email      text NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('unsubscribed', 'bounced', 'complained', 'manual', 'erased')),
    detail     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email)
);
