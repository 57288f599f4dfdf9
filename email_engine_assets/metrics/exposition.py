"""Families of :mod:`families` as ``prometheus_client`` metric families (shared by both endpoints)."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from email_engine_assets.metrics.families import Family


def to_prometheus(family: Family) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(family.name, family.help, labels=list(family.labels))
    for labels, value in family.samples:
        gauge.add_metric(list(labels), value)
    return gauge
