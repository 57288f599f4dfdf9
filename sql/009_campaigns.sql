-- Campaigns and their send ledger.
--
-- campaigns: one row per campaign file (campaigns/<tenant>/<name>.yaml) once it has been seen; the
-- lifecycle state lives here, not in the file. States: email_engine_assets.campaigns.lifecycle.
-- hard_bounces / complaints stay NULL until the feedback loop counts them; the reputation check
-- reads them and passes when there is no data.
CREATE TABLE campaigns (
    tenant_id       text NOT NULL REFERENCES tenants (tenant_id),
    campaign        text NOT NULL,
    state           text NOT NULL CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')),
    segment         text NOT NULL,
    category        text NOT NULL,
    transport       text NOT NULL,
    send_at         timestamptz,
    rate_per_minute integer CHECK (rate_per_minute > 0),
    config_sha256   text NOT NULL,
    snapshot_hash   text,
    audience_frozen_at timestamptz,
    started_at      timestamptz,
    completed_at    timestamptz,
    hard_bounces    integer,
    complaints      integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign)
);

-- campaign_sends: one row per (tenant, campaign, contact), the exactly-once ledger.
-- A row is claimed ('queued' -> 'sending') in the transaction that re-checks the suppressions and
-- the campaign's state, then settled in the transaction that records the transport's answer. A row
-- found 'sending' when a run starts was claimed by a run that died: it becomes 'unknown' and is
-- never sent again unless the operator asks. States: email_engine_assets.campaigns.ledger.
-- The email is kept so that the row outlives an erased contact (contact_id set to NULL).
CREATE TABLE campaign_sends (
    row_id      bigserial PRIMARY KEY,
    tenant_id   text NOT NULL,
    campaign    text NOT NULL,
    contact_id  bigint,
    email       text NOT NULL,
    state       text NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'handed_off',
                                              'skipped_suppressed', 'skipped_no_template', 'skipped_render_failed',
                                              'skipped_cancelled')),
    token       text NOT NULL UNIQUE,
    message_id  text,
    template    text,
    rule        text,
    detail      text,
    attempts    integer NOT NULL DEFAULT 0,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at  timestamptz,
    settled_at  timestamptz,
    FOREIGN KEY (tenant_id, campaign) REFERENCES campaigns (tenant_id, campaign),
    CONSTRAINT campaign_sends_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, contact_id) ON DELETE SET NULL (contact_id),
    UNIQUE (tenant_id, campaign, contact_id),
    UNIQUE (tenant_id, campaign, email)
);
CREATE INDEX campaign_sends_state ON campaign_sends (tenant_id, campaign, state, row_id);
CREATE INDEX campaign_sends_contact ON campaign_sends (tenant_id, contact_id);
