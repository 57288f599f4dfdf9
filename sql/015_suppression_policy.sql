-- The suppression policy's own state, the MailWizz push of suppressions, the MailWizz feedback
-- poll, and the status of every contact.
--
-- feedback_policy_marks: per tenant, the highest delivery_events.event_id the policy has read
-- (events at or below it are final: see email_engine_assets.feedback.policy_store.event_horizon),
-- so a run reads only what is new (plus, for soft bounces, the window around it).
CREATE TABLE feedback_policy_marks (
    tenant_id     text PRIMARY KEY REFERENCES tenants (tenant_id),
    last_event_id bigint NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now()
);

-- mailwizz_suppression_pushes: each suppression of a tenant sent once to each of its MailWizz
-- instances (PUT lists/subscribers/unsubscribe-by-email-from-all-lists). A row exists only once
-- a call was made: pushed (done), failed (no answer or a 5xx / 429 after the client's retries:
-- tried again at the next run), refused (MailWizz refused the address, e.g. not an email to it:
-- not tried again). Follows its suppression: lifted or erased, the row goes with it.
CREATE TABLE mailwizz_suppression_pushes (
    tenant_id  text NOT NULL,
    instance   text NOT NULL,
    email      text NOT NULL,
    state      text NOT NULL CHECK (state IN ('pushed', 'failed', 'refused')),
    attempts   integer NOT NULL DEFAULT 1,
    detail     text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, instance, email),
    FOREIGN KEY (tenant_id, email) REFERENCES suppressions (tenant_id, email) ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX mailwizz_suppression_pushes_state ON mailwizz_suppression_pushes (tenant_id, instance, state);

-- mailwizz_feedback_polls: per MailWizz campaign and kind (unsubscribes, bounces), whether the
-- last poll read every page. MailWizz lists these newest first; after a complete pass a poll
-- stops at the first page it already knows entirely, after an interrupted one it reads them all.
CREATE TABLE mailwizz_feedback_polls (
    tenant_id    text NOT NULL REFERENCES tenants (tenant_id),
    instance     text NOT NULL,
    campaign_uid text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('unsubscribes', 'bounces')),
    complete     boolean NOT NULL,
    records      integer NOT NULL DEFAULT 0,
    polled_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, instance, campaign_uid, kind)
);

-- contact_statuses: each contact's status, from its suppression: active (none), or the
-- suppression's reason (unsubscribed, bounced, complained, manual, erased) with why and since when.
CREATE VIEW contact_statuses AS
SELECT c.tenant_id,
       c.contact_id,
       c.email,
       coalesce(s.reason, 'active') AS status,
       s.detail                     AS status_detail,
       s.created_at                 AS status_since
FROM contacts c
LEFT JOIN suppressions s ON s.tenant_id = c.tenant_id AND s.email = c.email;
