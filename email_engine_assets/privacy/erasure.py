"""What forgetting a person means, table by table, and the salted hash that outlives them.

:data:`ERASED_TABLES` is the whole list: every application table with a column that names a
person (an ``email``-like column, ``contact_id``, or raw input text: a raw line, a payload, a
body) is in it with what ``forget`` does to its rows
(``email_engine_tests/test_contact_privacy.py`` reads the catalog and fails on a table missing
here, so a new table is not forgotten). Tables that keep counts (the send ledger, events, import
files) keep their rows without the person: a count never changes because someone was erased.
"""

from __future__ import annotations

import hashlib

# table -> what `forget` does to the person's rows
ERASED_TABLES: dict[str, str] = {
    "contacts": "deleted",
    "email_validations": "deleted (with the contact)",
    "contact_enrichment": "deleted (with the contact)",
    "tag_assignments": "deleted (with the contact)",
    "segment_profiles": "deleted (with the contact)",
    "segment_members": "deleted (with the contact); the snapshot's counts stay",
    "staged_rows": "turned into rejected rows 'erased' without raw text (the file's counts still add up)",
    "rejected_rows": "raw text naming the address (parsed as its file's format, by key) emptied; row, line and reason kept",
    "campaign_sends": "email replaced by 'erased:<row id>', contact NULL, address removed from detail; queued rows skipped",
    "delivery_events": "email, contact and url NULL, address removed from detail (the event still counts)",
    "suppressions": "deleted: the erasure record (salted hash) takes its place",
    "mailwizz_subscribers": "contact NULL at once; deleted once MailWizz has deleted the subscriber",
    "mailwizz_suppression_pushes": "deleted with the address's suppression (cascade)",
    "accounting_kept_lines": "raw line emptied where a field names the address (file, offset and reason kept)",
    "webhook_inbox": "body emptied where a decoded JSON value names the address (pending rows are applied first), "
                     "and for tracking hits naming one of the person's ledger rows (pending ones closed as failed)",
    "erased_addresses": "the salted hash of the address key is added",
}

# Counted in the report of `forget`, in this order.
REPORT_KEYS: tuple[str, ...] = (
    "contacts", "email_validations", "contact_enrichment", "tag_assignments", "segment_profiles", "segment_members",
    "staged_rows", "rejected_rows", "campaign_sends", "delivery_events", "suppressions", "mailwizz_subscribers",
    "webhook_inbox", "accounting_kept_lines",
)

SALT_BYTES = 32


def erasure_hash(salt: bytes, email_key: str) -> bytes:
    """sha256(salt || key in UTF-8): the same bytes as SQL's ``sha256(salt || convert_to(key, 'UTF8'))``."""
    return hashlib.sha256(salt + email_key.encode("utf-8")).digest()
