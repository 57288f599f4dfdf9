"""The contact fields, defined once: what a source column maps to and what a golden record holds.

``contacts`` and ``staged_rows`` have one column per field (a test reads the tables back); the
selection vocabulary of tag rules and segments builds on :data:`TEXT_FIELDS`.
"""

from __future__ import annotations

# Optional text fields of a contact, in table order (the email key and the tags are handled apart).
TEXT_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "full_name",
    "company",
    "phone",
    "country",
    "language",
    "city",
    "category",
    "website",
)
# Every field a source column can be mapped to (synonyms and per-source overrides).
CANONICAL_FIELDS: tuple[str, ...] = ("email", *TEXT_FIELDS, "tags")
