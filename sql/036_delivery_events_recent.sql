-- The recent deferrals and refusals of a tenant, read at every batch a campaign claims to find the
-- recipient domains that throttle the sender (campaigns.store.throttling_domains).
CREATE INDEX delivery_events_recent_refusals ON delivery_events (tenant_id, occurred_at)
    WHERE event_type IN ('deferred', 'bounced');
