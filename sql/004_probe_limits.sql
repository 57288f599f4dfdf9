-- Network safety: SMTP probe sessions per destination IP, shared by every batch, run and process.

-- One row per (destination IP, fixed time window): the sessions started towards that IP in the
-- window. A session takes its slot with one INSERT ... ON CONFLICT ... DO UPDATE ... WHERE
-- sessions < limit RETURNING, atomic under concurrency; no row back means the limit is reached.
CREATE TABLE probe_slots (
    ip           inet NOT NULL,
    window_start timestamptz NOT NULL,
    sessions     integer NOT NULL CHECK (sessions > 0),
    PRIMARY KEY (ip, window_start)
);

-- The probe refuses private targets unless the tenant allows them: a mailbox status of its own.
ALTER TABLE email_validations DROP CONSTRAINT email_validations_mailbox_status_check;
ALTER TABLE email_validations ADD CONSTRAINT email_validations_mailbox_status_check CHECK (
    mailbox_status IN ('deliverable', 'undeliverable', 'catch_all', 'full_inbox', 'disabled', 'unknown',
                       'refused_private_target')
);
