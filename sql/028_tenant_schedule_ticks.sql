-- tenant_schedule_ticks: the cursor of each per-tenant schedule (recheck_schedule,
-- mailwizz_feedback_schedule, campaign_stats_schedule), which Dagster 1.13 schedules do not keep.
-- A tick evaluates the tenants' crons over (the last evaluated tick, its own time]: after a daemon
-- outage the whole gap is evaluated once, and a retried tick gets the window it had
-- (email_engine_assets.tenancy.cron.tick_window).
CREATE TABLE tenant_schedule_ticks (
    schedule_name text PRIMARY KEY,
    tick_at       timestamptz NOT NULL,  -- the scheduled time of the last evaluated tick
    window_start  timestamptz NOT NULL,  -- where that tick's window started (exclusive)
    CHECK (window_start < tick_at)
);
