-- One vocabulary for why a ledger row was never sent: the composer's skip reasons
-- (email_engine_assets.content.composer.SKIP_REASONS: no_template, render_error, bad_address)
-- plus the ledger's own (suppressed, cancelled). 'skipped_render_failed' becomes
-- 'skipped_render_error', and an unusable address gets its own state 'skipped_bad_address'.
ALTER TABLE campaign_sends DROP CONSTRAINT campaign_sends_state_check;
UPDATE campaign_sends SET state = 'skipped_render_error' WHERE state = 'skipped_render_failed';
ALTER TABLE campaign_sends ADD CONSTRAINT campaign_sends_state_check
    CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'handed_off',
                     'skipped_suppressed', 'skipped_no_template', 'skipped_render_error', 'skipped_bad_address',
                     'skipped_cancelled'));
