"""Whether a segment's snapshot is older than what it was built from.

A send freezes the snapshot of its segment; it must not freeze one built before the tenant's
contacts, verdicts, enrichment, tags or suppressions last changed, nor one of another definition
than the tenant file's. The times come from the store (the newest row of each input, and when a
suppression was last lifted); this module only compares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

# What a segment is built from, in the order reasons are given.
SEGMENT_INPUTS: tuple[str, ...] = ("contacts", "verdicts", "enrichment", "tags", "suppressions")


@dataclass(frozen=True)
class BuiltSnapshot:
    definition_hash: str
    built_at: datetime


def outdated_reasons(
    segment: str, declared_hash: str | None, snapshot: BuiltSnapshot | None, changed_at: Mapping[str, datetime | None]
) -> list[str]:
    """Why the snapshot of ``segment`` must be rebuilt before it is frozen; ``[]`` when it is current.

    ``declared_hash`` is the definition hash in the tenant file (``None``: the file does not declare
    the segment, so there is nothing to build it from); ``changed_at`` maps each of
    :data:`SEGMENT_INPUTS` to the time it last changed for the tenant (``None``: never).
    """
    if declared_hash is None:
        return []
    if snapshot is None:
        return [f"segment {segment!r} has no snapshot yet"]
    reasons = []
    if snapshot.definition_hash != declared_hash:
        reasons.append(f"segment {segment!r} is defined otherwise in the tenant file than when it was built")
    built = snapshot.built_at.isoformat(timespec="milliseconds")
    for kind in SEGMENT_INPUTS:
        when = changed_at.get(kind)
        if when is not None and when > snapshot.built_at:
            reasons.append(f"{kind} changed at {when.isoformat(timespec='milliseconds')}, after the snapshot of {built}")
    return reasons
