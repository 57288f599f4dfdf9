-- The webhook inbox: every accepted webhook request's raw body, committed before the 200.
--
-- kind 'mailwizz': MailWizz open / click payloads (POST /hooks/mailwizz/<tenant>), source_id NULL;
-- kind 'contacts': contacts pushed to a source (POST /hooks/contacts/<tenant>/<source>).
-- dedupe_key is SHA-256 over (tenant, kind, source, raw body): a byte-identical retry stores nothing
-- new and is answered 200 all the same. Rows are applied in id order by the delivery_events asset
-- (mailwizz -> delivery events, contacts -> a file in inbox/<tenant>/<source>/); applied_at stays
-- NULL until then, and outcome / detail say how it went ('failed' rows keep their body and reason).
-- No foreign key to tenants: a tenant may receive pushes before its first import registers it.
CREATE TABLE webhook_inbox (
    id           bigserial PRIMARY KEY,
    tenant_id    text NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]*$'),
    kind         text NOT NULL CHECK (kind IN ('mailwizz', 'contacts')),
    source_id    text CHECK (source_id ~ '^[a-z0-9][a-z0-9_-]*$'),
    received_at  timestamptz NOT NULL DEFAULT now(),
    body         bytea NOT NULL,
    content_type text,
    dedupe_key   text NOT NULL,
    applied_at   timestamptz,
    outcome      text CHECK (outcome IN ('applied', 'failed')),
    detail       text,
    CHECK ((kind = 'contacts') = (source_id IS NOT NULL)),
    CHECK ((applied_at IS NULL) = (outcome IS NULL)),
    UNIQUE (tenant_id, dedupe_key)
);
-- The apply step and the sensor's late-row check read the unapplied rows of a tenant in id order.
CREATE INDEX webhook_inbox_pending ON webhook_inbox (tenant_id, id) WHERE applied_at IS NULL;
