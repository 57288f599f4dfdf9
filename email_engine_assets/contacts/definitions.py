"""The contacts domain: file imports per tenant × source, golden records per tenant, the inbox sensor."""

import dagster as dg

from email_engine_assets.contacts.assets import contact_imports, contacts
from email_engine_assets.contacts.jobs import import_job
from email_engine_assets.contacts.sensors import inbox_sensor

defs = dg.Definitions(assets=[contact_imports, contacts], jobs=[import_job], sensors=[inbox_sensor])
