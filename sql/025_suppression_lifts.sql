-- suppression_lifts: per tenant, when a suppression was last removed (lifted by `unsuppress`, or gone
-- with an erasure). A removal leaves no row to date it, yet it changes who a segment may hold: a send
-- compares this time, with the newest contact, verdict, enrichment, tag and suppression rows, to the
-- built_at of the segment snapshot it is about to freeze (email_engine_assets.audiences.freshness).
-- Kept by a statement trigger, so every way a suppression is deleted is dated.
CREATE TABLE suppression_lifts (
    tenant_id      text PRIMARY KEY,
    last_lifted_at timestamptz NOT NULL
);

CREATE FUNCTION date_suppression_lifts() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO suppression_lifts AS l (tenant_id, last_lifted_at)
    SELECT DISTINCT tenant_id, now() FROM lifted
    ON CONFLICT (tenant_id) DO UPDATE SET last_lifted_at = greatest(l.last_lifted_at, EXCLUDED.last_lifted_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER suppressions_dated_when_lifted AFTER DELETE ON suppressions
    REFERENCING OLD TABLE AS lifted FOR EACH STATEMENT EXECUTE FUNCTION date_suppression_lifts();
