-- Alert incidents: a condition worth an alert (a sensor or the daemon silent, the webhook inbox
-- past its size, accounting or webhook input refused, inputs a run could not read) is posted once
-- when it opens and once when it clears, not at every evaluation while it holds.
-- incident_key names the condition (e.g. 'sensor_silent:webhook_inbox_sensor',
-- 'inputs_not_read:acme:mailwizz_feedback'); at most one incident per key is open
-- (cleared_at IS NULL). Cleared incidents are kept as the history of what happened.
-- tenant_id is '' for conditions of the whole engine (the daemon, a sensor).
CREATE TABLE alert_incidents (
    id           bigserial PRIMARY KEY,
    incident_key text NOT NULL,
    kind         text NOT NULL,
    tenant_id    text NOT NULL DEFAULT '',
    opened_at    timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    cleared_at   timestamptz,
    detail       text NOT NULL DEFAULT ''
);

CREATE UNIQUE INDEX alert_incidents_open ON alert_incidents (incident_key) WHERE cleared_at IS NULL;
CREATE INDEX alert_incidents_open_kind ON alert_incidents (kind) WHERE cleared_at IS NULL;
