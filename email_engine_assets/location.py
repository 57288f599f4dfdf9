"""The code location's resources, built for a command that runs outside a run (the CLI).

A command that does what an asset does (``campaign stats``, ``contact forget``) reaches MailWizz,
PowerMTA and the outbox through the same ``mailwizz`` / ``powermta`` / ``outbox`` resources, built
with ``dg.build_resources`` from the code location's definitions, or from the ``definitions`` a
caller passes (tests: ``definitions.with_resources({...})``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg


def location_definitions(definitions: dg.Definitions | None = None) -> dg.Definitions:
    """``definitions`` when given, else the code location."""
    if definitions is not None:
        return definitions
    from email_engine_assets.definitions import defs

    return defs


@contextmanager
def location_resources(keys: Sequence[str], definitions: dg.Definitions | None = None) -> Iterator:
    """The resources ``keys`` of ``definitions`` (default: the code location's), initialised as a run
    initialises them; attributes by key (``built.mailwizz``)."""
    resources = location_definitions(definitions).resources or {}
    with dg.build_resources({k: resources[k] for k in keys}) as built:
        yield built
