-- Erasure and our own tracking: an erased person's events keep no url; metrics count opens and clicks by class.
--
-- A clicked link may be personalised (?u=<id>, ?email=..., a path of theirs) in ways no address
-- matcher sees, so `contact forget` clears the url of the person's events (privacy.store.erase),
-- and this trigger does the same for the events that arrive later:
-- - an event whose address hashes to an erased one (as in 017): email NULL, detail redacted when it
--   holds the address, and now url NULL whatever it holds;
-- - an event linked by token to a ledger row whose person was erased (erase sets campaign_sends.email
--   to 'erased:<row_id>'): a tracking hit names the row, never the address, so 017's hash never saw
--   it. Only events with a url are looked at (opens and clicks), so accounting chunks pay nothing.
CREATE OR REPLACE FUNCTION forget_erased_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM erased_addresses) THEN
        RETURN NULL;
    END IF;
    UPDATE delivery_events d SET email = NULL,
        detail = CASE WHEN strpos(lower(d.detail), n.email) > 0 THEN '[erased]' ELSE d.detail END,
        url = NULL
    FROM new_events n JOIN erasure_salts k ON k.tenant_id = n.tenant_id
    WHERE d.event_id = n.event_id AND n.email IS NOT NULL AND EXISTS (
        SELECT 1 FROM erased_addresses e
        WHERE e.tenant_id = n.tenant_id AND e.email_hash = sha256(k.salt || convert_to(n.email, 'UTF8'))
        OFFSET 0);
    UPDATE delivery_events d SET url = NULL
    FROM new_events n JOIN campaign_sends s ON s.row_id = n.send_row_id
    WHERE d.event_id = n.event_id AND n.url IS NOT NULL AND starts_with(s.email, 'erased:');
    RETURN NULL;
END
$$;

-- Metrics: opens and clicks counted by who made them, as campaign stats count them
-- (email_engine_assets.metrics.families: label `classified`). In metric_counts family 'events', k2 is
-- the bounce class of a bounce (as in 033) and, for an open or a click, 'machine' or 'person' as
-- tracking classed it ('' where nobody did: MailWizz's). The update trigger already sees a
-- reclassification (a late burst marking earlier clicks machine) as a move between keys.
CREATE FUNCTION metric_event_k2(event_type text, bounce_class text, machine boolean) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN event_type IN ('opened', 'clicked')
                THEN CASE machine WHEN true THEN 'machine' WHEN false THEN 'person' ELSE '' END
                ELSE coalesce(bounce_class, '') END
$$;

CREATE OR REPLACE FUNCTION metric_count_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'events', tenant_id, event_type, metric_event_k2(event_type, bounce_class, machine), count(*)
        FROM new_rows GROUP BY 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'events', tenant_id, event_type, metric_event_k2(event_type, bounce_class, machine), -count(*)
        FROM old_rows GROUP BY 2, 3, 4;
    ELSE
        INSERT INTO metric_count_deltas (family, tenant_id, k1, k2, n)
        SELECT 'events', tenant_id, event_type, k2, sum(d) FROM (
            SELECT tenant_id, event_type, metric_event_k2(event_type, bounce_class, machine) AS k2, 1 AS d FROM new_rows
            UNION ALL
            SELECT tenant_id, event_type, metric_event_k2(event_type, bounce_class, machine), -1 FROM old_rows
        ) changed GROUP BY 2, 3, 4 HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END $$;

-- The opens and clicks already counted, counted again by class (writers wait for this migration:
-- the lock keeps a statement from adding deltas between the recount and the commit).
LOCK TABLE delivery_events IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM metric_count_deltas WHERE family = 'events' AND k1 IN ('opened', 'clicked');
DELETE FROM metric_counts WHERE family = 'events' AND k1 IN ('opened', 'clicked');
INSERT INTO metric_counts (family, tenant_id, k1, k2, n)
SELECT 'events', tenant_id, event_type, metric_event_k2(event_type, bounce_class, machine), count(*)
FROM delivery_events WHERE event_type IN ('opened', 'clicked') GROUP BY 2, 3, 4;
