-- Erasure and our own tracking: an erased person's events keep no url.
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
