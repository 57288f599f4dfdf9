"""Campaigns: files, lifecycle, the exactly-once send ledger, audiences -> sends."""
