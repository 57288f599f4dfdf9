"""The feedback loop: webhooks, PowerMTA accounting, delivery events, suppressions, stats."""
