-- The guard rail of a running campaign (tenant setting guard_rails): once enough of its messages
-- have feedback, a hard-bounce or complaint rate over the tenant's limit pauses it.
-- paused_reason: why the campaign was paused by the engine (the rate and the sample), NULL when the
-- operator paused it or it is not paused; cleared by resume.
-- guard_rail_overridden: the operator resumed it with --override guard_rail after review; the
-- guard rail no longer pauses this campaign.
ALTER TABLE campaigns
    ADD COLUMN paused_reason text,
    ADD COLUMN guard_rail_overridden boolean NOT NULL DEFAULT false;
