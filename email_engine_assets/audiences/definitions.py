"""The audiences domain: tag assignments, segments and the sensor observing segment definitions."""

import dagster as dg

from email_engine_assets.audiences.assets import (
    segment_definitions,
    segments,
    tag_assignments,
)
from email_engine_assets.audiences.sensors import segment_definitions_sensor

defs = dg.Definitions(assets=[tag_assignments, segment_definitions, segments], sensors=[segment_definitions_sensor])
