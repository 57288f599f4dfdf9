-- Campaign stats: the last computed stats object of each campaign (email_engine_assets.feedback.stats).
--
-- stats holds the keys `campaign stats --json` prints (counts, <count>_rate, by_language,
-- by_template). mailwizz holds MailWizz's own figures per template, mapped onto our keys, as last
-- fetched (GET campaigns/{uid}/stats), with when: a computation that does not reach MailWizz (the
-- sender_reputation check before a send) merges these instead of losing them. One row per
-- campaign, replaced by each computation; campaigns.hard_bounces / complaints follow it.
CREATE TABLE campaign_stats (
    tenant_id   text NOT NULL,
    campaign    text NOT NULL,
    stats       jsonb NOT NULL,
    mailwizz    jsonb,
    mailwizz_fetched_at timestamptz,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign),
    FOREIGN KEY (tenant_id, campaign) REFERENCES campaigns (tenant_id, campaign) ON DELETE CASCADE
);
