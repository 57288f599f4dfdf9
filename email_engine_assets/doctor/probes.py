"""The doctor's probes, run against the outside parts through the code location's resources.

One function, :func:`run_probes`, for ``email-engine doctor`` and for ``doctor_sensor``:

- ``database``: a query on the application database, and its schema up to date;
- ``resolver``: one MX query to the configured nameservers (any answer, NXDOMAIN included, passes;
  a timeout or SERVFAIL fails);
- ``outbox``: its folder exists (or can be made) and is writable;
- per tenant and transport entry of the tenant files: ``powermta <tenant>.<name> smtp`` (connect and
  EHLO), ``... config`` (PowerMTA's config file read, the virtual MTA found) when ``config_file`` is
  set, ``... management`` (``/status`` of the management API) when ``management_url`` is set;
  ``mailwizz <tenant>.<name> api`` (one authenticated call);
- ``webhook``: ``GET <EMAIL_ENGINE_WEBHOOK_URL>/health`` of the webhook app (skipped when unset);
- a tenant file that does not load is a failing probe ``tenant <id>`` of its own.

Each probe catches its own failure: one part down never hides the others.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from email_engine_assets.doctor.checks import Probe, fail, ok, skip
from email_engine_assets.tenancy.config import load_tenants, load_workspace
from email_engine_resources.migrations import check_current

WEBHOOK_URL_ENV = "EMAIL_ENGINE_WEBHOOK_URL"
DNS_NAME_ENV = "EMAIL_ENGINE_DOCTOR_DOMAIN"
DEFAULT_DNS_NAME = "example.com"
HTTP_TIMEOUT_S = 10.0
PROBED_KEYS = ("dns", "outbox", "powermta", "mailwizz")  # resources the probes reach; the database through `engine`


@dataclass
class Parts:
    """What the probes reach: the application database and the code location's resources."""

    engine: Callable[[], sa.Engine]
    dns: object
    outbox: object
    powermta: object
    mailwizz: object
    webhook_url: str | None = None
    dns_name: str = DEFAULT_DNS_NAME

    @classmethod
    def of(cls, resources, engine: Callable[[], sa.Engine], environ=None) -> Parts:
        env = os.environ if environ is None else environ
        return cls(engine=engine, dns=resources.dns, outbox=resources.outbox, powermta=resources.powermta,
                   mailwizz=resources.mailwizz, webhook_url=env.get(WEBHOOK_URL_ENV, "").strip() or None,
                   dns_name=env.get(DNS_NAME_ENV, "").strip() or DEFAULT_DNS_NAME)


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def probe_database(parts: Parts) -> Probe:
    try:
        engine = parts.engine()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        check_current(engine)
    except Exception as exc:  # noqa: BLE001 (any failure is the probe's finding)
        return fail("database", _why(exc).splitlines()[0] if _why(exc) else "failed")
    return ok("database", "reachable, schema current")


def probe_resolver(parts: Parts) -> Probe:
    try:
        result = parts.dns.check_domains([parts.dns_name])[parts.dns_name]
    except Exception as exc:  # noqa: BLE001
        return fail("resolver", _why(exc))
    servers = ", ".join(parts.dns.nameservers) or "resolv.conf"
    if result.status == "unknown":
        return fail("resolver", f"no answer for {parts.dns_name} from {servers}: {result.detail or 'unknown'}")
    return ok("resolver", f"{servers} answered for {parts.dns_name} ({result.status})")


def probe_outbox(parts: Parts) -> Probe:
    root = parts.outbox.outbox().root
    try:
        Path(root).mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        return fail("outbox", f"{root}: {exc.strerror or type(exc).__name__}")
    return ok("outbox", f"{root} writable")


def probe_webhook(parts: Parts) -> Probe:
    if not parts.webhook_url:
        return skip("webhook", f"{WEBHOOK_URL_ENV} is not set (the webhook app's base URL)")
    url = parts.webhook_url.rstrip("/") + "/health"
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT_S, trust_env=False, follow_redirects=False) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        return fail("webhook", f"{url}: {type(exc).__name__}: {_why(exc)}")
    if response.status_code != 200:
        return fail("webhook", f"{url}: HTTP {response.status_code}")
    return ok("webhook", f"{url}: HTTP 200")


def probe_transport(parts: Parts, tenant_id: str, config) -> list[Probe]:
    """The probes of one transport entry of a tenant file (none for the outbox: probed once for all)."""
    where = f"{tenant_id}.{config.name}"
    if config.kind == "powermta":
        return _powermta(parts, where, config)
    if config.kind == "mailwizz":
        name = f"mailwizz {where} api"
        try:
            parts.mailwizz.check(config)
        except Exception as exc:  # noqa: BLE001 (MailwizzError redacts the key; LookupError names the variable)
            return [fail(name, f"{config.base_url}: {_why(exc)}")]
        return [ok(name, f"{config.base_url}: authenticated call answered")]
    return []


def _powermta(parts: Parts, where: str, config) -> list[Probe]:
    out = []
    name = f"powermta {where} smtp"
    try:
        greeting = parts.powermta.ehlo(config)
        out.append(ok(name, f"{config.host}:{config.port} answered EHLO ({greeting})"))
    except Exception as exc:  # noqa: BLE001
        out.append(fail(name, f"{config.host}:{config.port}: {type(exc).__name__}: {_why(exc)}"))
    if config.config_file:
        name = f"powermta {where} config"
        try:
            parts.powermta.config_file(config).check_virtual_mta(config.virtual_mta)
            out.append(ok(name, f"{config.config_file} read"))
        except Exception as exc:  # noqa: BLE001
            out.append(fail(name, _why(exc)))
    if config.management_url:
        name = f"powermta {where} management"
        try:
            with parts.powermta.management(config) as api:
                api.get("status")
            out.append(ok(name, f"{config.management_url}: /status answered"))
        except Exception as exc:  # noqa: BLE001 (the client redacts the key; LookupError names the variable)
            out.append(fail(name, _why(exc)))
    return out


def run_probes(parts: Parts, root: Path, tenant_id: str | None = None) -> list[Probe]:
    """Every probe (of one tenant's transports with ``tenant_id``; ``LookupError`` for an unknown one)."""
    ws = load_workspace(root) if tenant_id is None else load_tenants(root, [tenant_id])
    if tenant_id is not None and tenant_id not in ws.tenants and tenant_id not in ws.errors:
        raise LookupError(f"no tenant {tenant_id[:64]!r} (no file tenants/{tenant_id[:64]}.yaml in {root})")
    probes = [probe_database(parts), probe_resolver(parts), probe_outbox(parts), probe_webhook(parts)]
    for tid, error in sorted(ws.errors.items()):
        if tenant_id in (None, tid):
            probes.append(fail(f"tenant {tid}", error))
    for tid, tenant in sorted(ws.tenants.items()):
        if tenant_id in (None, tid):
            for config in tenant.transports:
                probes += probe_transport(parts, tid, config)
    return probes
