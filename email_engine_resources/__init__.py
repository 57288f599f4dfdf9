"""Dagster resources: PostgreSQL, DNS resolver, SMTP probe, and later the sending transports."""
