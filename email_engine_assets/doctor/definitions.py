"""The doctor's sensor (its probes use the code location's ``db`` settings, ``dns``, ``outbox``, ``powermta``, ``mailwizz``)."""

import dagster as dg

from email_engine_assets.doctor.sensors import doctor_sensor

defs = dg.Definitions(sensors=[doctor_sensor])
