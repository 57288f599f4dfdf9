"""Email Engine: Dagster definitions (assets, checks, sensors, schedules) over a functional core."""
