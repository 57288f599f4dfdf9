"""``email-engine doctor [<tenant>] [--json]``: one line per probe, exit 1 when one fails."""

from __future__ import annotations

import json
import sys

import dagster as dg

from email_engine_assets.doctor.checks import fail
from email_engine_assets.doctor.probes import PROBED_KEYS, Parts, run_probes
from email_engine_resources.postgres import get_engine


def _definitions(definitions: dg.Definitions | None) -> dg.Definitions:
    if definitions is not None:
        return definitions
    from email_engine_assets.definitions import defs

    return defs


def doctor(tenant_id: str | None, *, as_json: bool, definitions: dg.Definitions | None = None) -> int:
    resources = _definitions(definitions).resources or {}
    with dg.build_resources({k: resources[k] for k in ("workspace", *PROBED_KEYS)}) as built:
        try:
            probes = run_probes(Parts.of(built, get_engine), built.workspace.root(), tenant_id)
        except LookupError as exc:
            print(f"error: {fail('tenant', str(exc)).reason}", file=sys.stderr)
            return 2
    if as_json:
        print(json.dumps({"ok": not any(p.failed for p in probes), "probes": [p.as_json() for p in probes]}))
    else:
        for p in probes:
            print(p.line())
    return 1 if any(p.failed for p in probes) else 0
