-- Our own open and click tracking (outbox and PowerMTA sends; README "Tracking").
--
-- A hit on /o/<token> or /c/<token> is committed to webhook_inbox (kind 'tracking') before the
-- answer, and the delivery_events asset applies it as an 'opened' / 'clicked' event of origin
-- 'tracking', linked to its ledger row by the row token the signed tracking token names.
-- machine: whether a machine made the hit (a mail proxy's prefetch, a link scanner, a HEAD, too
-- soon after the hand-off), NULL where nobody classed it (MailWizz's own tracking);
-- classified_by: the rule that decided (email_engine_assets.feedback.tracking_rules);
-- link_index: which link of the message was clicked (its index in the rendered message).
ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_kind_check;
ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_kind_check CHECK (kind IN ('mailwizz', 'contacts', 'tracking'));
ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_origin_check;
ALTER TABLE delivery_events ADD CONSTRAINT delivery_events_origin_check
    CHECK (origin IN ('powermta', 'mailwizz', 'unsubscribe_link', 'operator', 'tracking'));
ALTER TABLE delivery_events ADD COLUMN machine boolean;
ALTER TABLE delivery_events ADD COLUMN classified_by text;
ALTER TABLE delivery_events ADD COLUMN link_index integer CHECK (link_index >= 0);
