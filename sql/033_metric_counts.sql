-- Maintained counts for `email-engine metrics serve`: a scrape must stay cheap (under 100 ms) with
-- millions of ledger rows and events, where a GROUP BY over the tables takes seconds.
--
-- family 'ledger':       campaign_sends by (tenant, k1 = campaign, k2 = state)
-- family 'events':       delivery_events by (tenant, k1 = event_type, k2 = bounce_class or '')
-- family 'suppressions': suppressions by (tenant, k1 = reason, k2 = '')
--
-- Writers never update a shared counter row (that would serialise every send of a tenant on one
-- row lock): a statement's triggers append its net change to metric_count_deltas, one row per key
-- it changed. The scrape folds the committed deltas into metric_counts (DELETE ... RETURNING, under
-- an advisory lock) and reads metric_counts plus whatever deltas are left
-- (email_engine_assets.metrics.store). TRUNCATE of a counted table empties its family.
CREATE TABLE metric_counts (
    family    text NOT NULL CHECK (family IN ('ledger', 'events', 'suppressions')),
    tenant_id text NOT NULL,
    k1        text NOT NULL,
    k2        text NOT NULL DEFAULT '',
    n         bigint NOT NULL,
    PRIMARY KEY (family, tenant_id, k1, k2)
);

CREATE TABLE metric_count_deltas (
    family    text NOT NULL,
    tenant_id text NOT NULL,
    k1        text NOT NULL,
    k2        text NOT NULL DEFAULT '',
    n         bigint NOT NULL
);

CREATE FUNCTION metric_count_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'ledger', tenant_id, campaign, state, count(*) FROM new_rows GROUP BY 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'ledger', tenant_id, campaign, state, -count(*) FROM old_rows GROUP BY 2, 3, 4;
    ELSE
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'ledger', tenant_id, campaign, state, sum(d) FROM (
            SELECT tenant_id, campaign, state, 1 AS d FROM new_rows
            UNION ALL
            SELECT tenant_id, campaign, state, -1 FROM old_rows
        ) changed GROUP BY 2, 3, 4 HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION metric_count_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'events', tenant_id, event_type, coalesce(bounce_class, ''), count(*) FROM new_rows GROUP BY 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'events', tenant_id, event_type, coalesce(bounce_class, ''), -count(*) FROM old_rows GROUP BY 2, 3, 4;
    ELSE
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'events', tenant_id, event_type, coalesce(bounce_class, ''), sum(d) FROM (
            SELECT tenant_id, event_type, bounce_class, 1 AS d FROM new_rows
            UNION ALL
            SELECT tenant_id, event_type, bounce_class, -1 FROM old_rows
        ) changed GROUP BY 2, 3, 4 HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION metric_count_suppressions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'suppressions', tenant_id, reason, '', count(*) FROM new_rows GROUP BY 2, 3;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'suppressions', tenant_id, reason, '', -count(*) FROM old_rows GROUP BY 2, 3;
    ELSE
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'suppressions', tenant_id, reason, '', sum(d) FROM (
            SELECT tenant_id, reason, 1 AS d FROM new_rows
            UNION ALL
            SELECT tenant_id, reason, -1 FROM old_rows
        ) changed GROUP BY 2, 3 HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION metric_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM metric_counts WHERE family = TG_ARGV[0];
    DELETE FROM metric_count_deltas WHERE family = TG_ARGV[0];
    RETURN NULL;
END $$;

CREATE TRIGGER campaign_sends_counted_insert AFTER INSERT ON campaign_sends
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_ledger();
CREATE TRIGGER campaign_sends_counted_update AFTER UPDATE ON campaign_sends
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_ledger();
CREATE TRIGGER campaign_sends_counted_delete AFTER DELETE ON campaign_sends
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_ledger();
CREATE TRIGGER campaign_sends_counted_truncate AFTER TRUNCATE ON campaign_sends
    FOR EACH STATEMENT EXECUTE FUNCTION metric_count_truncated('ledger');

CREATE TRIGGER delivery_events_counted_insert AFTER INSERT ON delivery_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_events();
CREATE TRIGGER delivery_events_counted_update AFTER UPDATE ON delivery_events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_events();
CREATE TRIGGER delivery_events_counted_delete AFTER DELETE ON delivery_events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_events();
CREATE TRIGGER delivery_events_counted_truncate AFTER TRUNCATE ON delivery_events
    FOR EACH STATEMENT EXECUTE FUNCTION metric_count_truncated('events');

CREATE TRIGGER suppressions_counted_insert AFTER INSERT ON suppressions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_suppressions();
CREATE TRIGGER suppressions_counted_update AFTER UPDATE ON suppressions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_suppressions();
CREATE TRIGGER suppressions_counted_delete AFTER DELETE ON suppressions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION metric_count_suppressions();
CREATE TRIGGER suppressions_counted_truncate AFTER TRUNCATE ON suppressions
    FOR EACH STATEMENT EXECUTE FUNCTION metric_count_truncated('suppressions');

-- The rows already there (the triggers above hold the tables' locks until this migration commits).
INSERT INTO metric_counts (family, tenant_id, k1, k2, n)
SELECT 'ledger', tenant_id, campaign, state, count(*) FROM campaign_sends GROUP BY 2, 3, 4;
INSERT INTO metric_counts (family, tenant_id, k1, k2, n)
SELECT 'events', tenant_id, event_type, coalesce(bounce_class, ''), count(*) FROM delivery_events GROUP BY 2, 3, 4;
INSERT INTO metric_counts (family, tenant_id, k1, k2, n)
SELECT 'suppressions', tenant_id, reason, '', count(*) FROM suppressions GROUP BY 2, 3;
