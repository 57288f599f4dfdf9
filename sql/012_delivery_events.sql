-- Delivery events: what happened to a message after it left us, one row per event.
--
-- Written by the feedback loop from PowerMTA accounting lines (delivered, deferred, bounced,
-- complained), MailWizz webhooks and polls (opened, clicked, unsubscribed, bounced) and the
-- one-click unsubscribe route. Linked to the send ledger row (and so the campaign and contact)
-- when it can be; an event that matches no row is kept with send_row_id NULL.
--
-- dedupe_key is unique per tenant: a line or payload applied twice counts once. The email is the
-- address key (contacts.email normalisation); it and contact_id are set NULL when a person is
-- erased, so the counts survive without the personal data.
-- Vocabularies: email_engine_assets.feedback.events (EVENT_TYPES, BOUNCE_CLASSES, EVENT_ORIGINS).
CREATE TABLE delivery_events (
    event_id     bigserial PRIMARY KEY,
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    event_type   text NOT NULL CHECK (event_type IN ('delivered', 'deferred', 'bounced', 'complained',
                                                     'opened', 'clicked', 'unsubscribed')),
    bounce_class text CHECK (bounce_class IN ('hard', 'soft', 'reputation')),
    origin       text NOT NULL CHECK (origin IN ('powermta', 'mailwizz', 'unsubscribe_link', 'operator')),
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    campaign     text,
    send_row_id  bigint REFERENCES campaign_sends (row_id) ON DELETE SET NULL,
    contact_id   bigint,
    email        text,
    detail       text,
    url          text,
    dedupe_key   text NOT NULL,
    CHECK ((event_type = 'bounced') = (bounce_class IS NOT NULL)),
    UNIQUE (tenant_id, dedupe_key),
    CONSTRAINT delivery_events_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES contacts (tenant_id, contact_id) ON DELETE SET NULL (contact_id)
);
CREATE INDEX delivery_events_campaign ON delivery_events (tenant_id, campaign, event_type);
CREATE INDEX delivery_events_email ON delivery_events (tenant_id, email, event_type, occurred_at);
CREATE INDEX delivery_events_contact ON delivery_events (tenant_id, contact_id);
CREATE INDEX delivery_events_row ON delivery_events (send_row_id);
