-- What mailwizz_subscribers last pushed to each MailWizz instance: one row per (tenant, instance,
-- standing list, address), so a sync pushes only the rows whose digest changed.
--
-- The address is kept as its SHA-256 only (the key survives an erasure without the address);
-- contact_id follows the tenant-key rule of 003 and is set NULL when the contact is erased: the
-- row then stays until the next sync has removed the subscriber from MailWizz.
-- state: subscribed (in the list), unsubscribed (suppressed, or unsubscribed in MailWizz: never
-- subscribed again by the sync), refused (MailWizz refused the address, e.g. blacklisted; tried
-- again only when the row changes). The states are email_engine_assets.sync.diff.SYNC_STATES.
CREATE TABLE mailwizz_subscribers (
    tenant_id      text NOT NULL REFERENCES tenants (tenant_id),
    instance       text NOT NULL,
    list_name      text NOT NULL,
    email_sha256   text NOT NULL,
    contact_id     bigint,
    list_uid       text NOT NULL,
    subscriber_uid text,
    state          text NOT NULL CHECK (state IN ('subscribed', 'unsubscribed', 'refused')),
    row_sha256     text NOT NULL,
    detail         text,
    pushed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, instance, list_name, email_sha256),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE SET NULL (contact_id)
);
CREATE INDEX mailwizz_subscribers_contact ON mailwizz_subscribers (tenant_id, contact_id);
