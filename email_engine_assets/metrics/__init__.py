"""Metrics: Prometheus figures of the engine (``email-engine metrics serve``) and of the webhook
app (``/metrics``), and the JSON log format. Plain modules hold the names and the mapping of rows to
samples; ``store`` holds the SQL; ``collector``, ``http`` and ``serve`` are the thin shells."""
