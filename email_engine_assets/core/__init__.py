"""Functional core: plain functions on polars frames and small dataclasses.

Nothing here imports Dagster or opens a database connection; the assets call these
functions and write what they return.
"""
