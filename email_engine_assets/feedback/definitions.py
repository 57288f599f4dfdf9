"""The feedback domain: webhook inbox, accounting files, delivery events, suppressions, stats, alerts."""

import dagster as dg

defs = dg.Definitions()
