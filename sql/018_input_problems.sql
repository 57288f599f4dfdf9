-- Inputs the engine could not read, or read only in part: an accounting file, a webhook row, a
-- MailWizz poll, a tenant / campaign / template file, an inbox file. Each read pass of an input
-- kind replaces that kind's rows of the tenant (within the pass's scope: the sources an import
-- covered, say), so a problem is reported by every run until the input is read or is gone.
-- `email-engine run` lists them and exits non-zero; the `inputs_read` asset checks fail on them;
-- the `sender_reputation` check refuses a send while feedback (accounting, webhook, MailWizz) is unread.
-- No foreign key to tenants: a tenant whose file is broken is never registered, yet its file is named here.
CREATE TABLE input_problems (
    tenant_id  text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('tenant_file', 'campaign_file', 'template_file', 'inbox_file',
                                             'accounting_file', 'webhook_row', 'mailwizz_poll')),
    name       text NOT NULL,
    scope      text NOT NULL DEFAULT '',
    reason     text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, name)
);
