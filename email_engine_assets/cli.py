"""``email-engine``: run the main job, import a file, show rejects, run and preview campaigns, suppress, start the UI, serve webhooks and metrics, migrate."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

from email_engine_resources import settings


def _prepare(workspace: str | None) -> list[str]:
    """Environment shared by every command: workspace, database, Dagster home on PostgreSQL."""
    if workspace:
        os.environ[settings.WORKSPACE_ENV] = str(Path(workspace).resolve())
    from email_engine_assets.executors import check as check_executor

    check_executor()
    from email_engine_resources.migrations import upgrade
    from email_engine_resources.postgres import (
        application_url,
        dagster_storage_url,
        get_engine,
        uses_embedded_server,
    )

    if uses_embedded_server():
        # Child processes (dagster dev, run workers) join the server this process started.
        os.environ[settings.DATABASE_URL_ENV] = application_url()
    os.environ.setdefault(settings.DAGSTER_URL_ENV, dagster_storage_url())
    for key, value in settings.DAGSTER_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    home = settings.make_private_dir(settings.engine_home() / "dagster_home")
    source = settings.PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return upgrade(get_engine())


def cmd_db_upgrade(args) -> int:
    from email_engine_resources.migrations import migration_files

    applied = _prepare(args.workspace)
    print(f"schema up to date ({len(migration_files())} migrations; applied now: {', '.join(applied) or 'none'})")
    return 0


def cmd_doctor(args) -> int:
    from email_engine_assets.doctor.cli import doctor

    if args.workspace:  # the schema is probed, never upgraded here
        os.environ[settings.WORKSPACE_ENV] = str(Path(args.workspace).resolve())
    return doctor(args.tenant, as_json=args.json, definitions=args.definitions)


def cmd_run(args) -> int:
    from email_engine_assets.main_job import print_summary, run_main_job

    _prepare(args.workspace)
    outcome = run_main_job()
    print_summary(outcome)
    print_refused(outcome.refused)
    return 0 if outcome.ok else 1


def print_refused(refused: dict) -> None:
    """The "refused inputs" block: each input not read, by tenant, with why (``run`` then exits 1)."""
    if not refused:
        return
    print(f"\nrefused inputs ({sum(map(len, refused.values()))}; each is reported by every run until it is read or gone):")
    for tenant_id, problems in sorted(refused.items()):
        for problem in problems:
            first, *more = problem.line().splitlines() or [""]
            print(f"REFUSED {terminal_safe(tenant_id)}: {terminal_safe(first)}")
            for line in more:
                print(f"    {terminal_safe(line)}")


def cmd_import(args) -> int:
    from email_engine_assets.main_job import import_one_file

    _prepare(args.workspace)

    def show_counts(counts: dict) -> None:
        if args.json:
            print(json.dumps(counts), flush=True)
        else:
            for key, value in counts.items():
                print(f"{key:>15}: {terminal_safe(str(value))}", flush=True)

    outcome = import_one_file(
        Path(args.file), args.tenant, args.source, quality=not args.no_quality,
        on_counts=show_counts, progress=lambda message: print(terminal_safe(message), file=sys.stderr, flush=True),
    )
    for failure in outcome.failures:
        print(f"FAILED {terminal_safe(failure)}", file=sys.stderr)
    return 0 if outcome.ok else 1


def terminal_safe(text: str) -> str:
    """``text`` with every control, format and separator character shown as an escape (``\\x1b``, ``\\u202e``).

    Raw rows come from files anyone may have written: an ANSI/OSC sequence or a bidi override must
    not drive the operator's terminal or disguise what a row holds.
    """
    return "".join(_visible(ch) if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(ch: str) -> str:
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def cmd_rejects(args) -> int:
    from email_engine_assets.contacts.store import rejected_rows
    from email_engine_resources.postgres import get_engine

    _prepare(args.workspace)
    with get_engine().connect() as conn:
        rows = rejected_rows(conn, args.tenant, args.source, args.limit)
    if not rows:
        print(f"no rejected rows for tenant {args.tenant}" + (f", source {args.source}" if args.source else ""))
    for r in rows:
        where = terminal_safe(f"{r['source_id']}/{Path(r['path']).name}:{r['line_no']}: {r['reason']}")
        print(f"{where}\n    {terminal_safe(r['raw_text'][:200])}")
    return 0


def read_addresses(given: list[str], stdin) -> list[str]:
    """The addresses of ``check``: ``-`` stands for one address per line of standard input."""
    addresses = []
    for item in given:
        if item == "-":
            addresses += [line.strip() for line in stdin if line.strip()]
        else:
            addresses.append(item)
    return addresses


def cmd_check(args) -> int:
    from email_engine_assets.main_job import check_addresses_now

    addresses = read_addresses(args.emails, sys.stdin)
    if not addresses:
        print("error: no address given", file=sys.stderr)
        return 2
    if not args.no_dns:
        _prepare(args.workspace)
    for row in check_addresses_now(addresses, smtp=args.smtp, dns=not args.no_dns):
        print(json.dumps(row, ensure_ascii=False, default=str))
    return 0


def cmd_dagster(args) -> int:
    """Any ``dagster`` CLI command with this project's storage and database environment."""
    _prepare(args.workspace)
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    return subprocess.call([dagster, *args.dagster_args], cwd=settings.PROJECT_ROOT)


def cmd_ui(args) -> int:
    _prepare(args.workspace)
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    print(f"Dagster UI on http://{args.host}:{args.port} (storage: PostgreSQL, DAGSTER_HOME={os.environ['DAGSTER_HOME']})", flush=True)
    workspace_yaml = settings.PROJECT_ROOT / "workspace.yaml"
    cmd = [dagster, "dev", "-w", str(workspace_yaml), "-h", args.host, "-p", str(args.port)]
    return subprocess.call(cmd, cwd=settings.PROJECT_ROOT)


def cmd_worker(args) -> int:
    """A Celery worker for the runs of ``EMAIL_ENGINE_EXECUTOR=celery``, on the queue ``EMAIL_ENGINE_CELERY_QUEUE``."""
    from email_engine_assets import executors

    # the worker rebuilds each job from the code location with the executor the run was made with
    os.environ[executors.EXECUTOR_ENV] = "celery"
    queue = executors.queue()
    _prepare(args.workspace)
    from email_engine_resources.postgres import get_engine

    get_engine().dispose()  # no pooled connection is shared with the worker's forked processes
    from email_engine_assets.definitions import defs
    from email_engine_assets.worker import app

    defs.resolve_all_job_defs()  # loaded once, before the pool forks, not on each process's first step

    argv = ["worker", "-Q", queue, "-n", args.name or f"{queue}@%h", "--loglevel", args.loglevel]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    app.worker_main(argv)
    return 0


def _print_counts(data: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, default=str), flush=True)
        return
    for key, value in data.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}:{v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(" ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else str(item) for item in value)
        print(f"{key:>15}: {terminal_safe(str(value))}", flush=True)


def _print_stats(stats: dict, as_json: bool) -> None:
    """``campaign stats``: one JSON object, or a table of counts and rates (opens and clicks by people
    beside their totals), then per language and template, then the clicks per link."""
    if as_json:
        print(json.dumps(stats, default=str), flush=True)
        return
    from email_engine_assets.feedback.stats import COUNT_KEYS, HUMAN_OF, LINK_COUNT_KEYS

    def rate(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    humans = set(HUMAN_OF.values())
    print(terminal_safe(f"campaign {stats['campaign']} (rates over {stats['rates_over']}, computed {stats.get('computed_at', '')})"))
    print(f"{'':<20}{'count':>10}{'rate':>10}{'by people':>12}{'rate':>10}")
    for k in COUNT_KEYS:
        if k in humans:
            continue
        line = f"{k:<20}{stats[k]:>10}{rate(stats[f'{k}_rate']):>10}"
        if k in HUMAN_OF and HUMAN_OF[k] in stats:
            line += f"{stats[HUMAN_OF[k]]:>12}{rate(stats[HUMAN_OF[k] + '_rate']):>10}"
        print(line)
    for title in ("by_language", "by_template"):
        groups = stats.get(title) or {}
        if not groups:
            continue
        names = list(groups)
        print()
        print(terminal_safe(f"{title:<20}" + "".join(f"{n[:16]:>18}" for n in names)))
        for k in COUNT_KEYS:
            if k in humans:
                continue
            for key, label in ((k, k), *(((HUMAN_OF[k], "  by people"),) if k in HUMAN_OF else ())):
                cells = "".join(f"{groups[n].get(key, 0):>9} {rate(groups[n].get(f'{key}_rate')):>8}" for n in names)
                print(f"{label:<20}{cells}")
    links = stats.get("by_link") or {}
    if links:
        print()
        heads = ("clicked", "unique", "by people", "unique people")  # LINK_COUNT_KEYS, in order
        print(f"{'by_link':<20}{'link':>5}" + "".join(f"{h:>15}" for h in heads) + "  url")
        for name, rows in links.items():
            for row in rows:
                print(terminal_safe(f"{name[:19]:<20}{row['link']:>5}" + "".join(f"{row[k]:>15}" for k in LINK_COUNT_KEYS)
                                    + f"  {row['url'] or '-'}"))
    for name, status in ((stats.get("mailwizz") or {}).get("campaigns") or {}).items():
        print(terminal_safe(f"MailWizz campaign {name}: {status}"))


def cmd_campaign(args) -> int:
    """``campaign list|show|send|pause|resume|cancel|stats``; exit 3 when a check blocks the send."""
    from email_engine_assets import campaign_runs as runs

    _prepare(args.workspace)
    try:
        if args.action == "list":
            rows, problems = runs.list_campaigns(args.target)
            for key, problem in sorted(problems.items()):
                print(f"warning: {terminal_safe(key)}: {terminal_safe(problem)}", file=sys.stderr)
            for row in rows:
                if args.json:
                    print(json.dumps(row, default=str))
                else:
                    skipped = sum(row["skipped"].values())
                    print(terminal_safe(f"{row['campaign']:<32} {row['state']:<10} audience={row['audience']} queued={row['queued']} "
                                        f"sent={row['sent']} handed_off={row['handed_off']} failed={row['failed']} "
                                        f"unknown={row['unknown']} skipped={skipped}"))
            return 0
        if not args.target:
            print("error: name the campaign as <tenant>.<name>", file=sys.stderr)
            return 2
        if args.action == "show":
            _print_counts(runs.show(args.target), args.json)
            return 0
        if args.action == "stats":
            shown, notes = runs.stats(args.target, definitions=args.definitions)
            for note in notes:
                print(f"note: {terminal_safe(note)}", file=sys.stderr)
            _print_stats(shown, args.json)
            return 0
        if args.action in ("pause", "cancel"):
            _print_counts(runs.change_state(args.target, args.action, definitions=args.definitions), args.json)
            return 0
        send = runs.resume if args.action == "resume" else runs.send
        outcome = send(args.target, overrides=args.override or [], resend_unknown=args.resend_unknown,
                       definitions=args.definitions)
    except runs.CampaignRefused as exc:
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    for note in outcome.notes:
        print(f"note: {terminal_safe(note)}", file=sys.stderr)
    _print_counts(outcome.as_json(), args.json)
    for warning in outcome.warnings:
        print(f"warning: {terminal_safe(warning)}", file=sys.stderr)
    for blocked in outcome.blocked:
        print(f"BLOCKED by {blocked['check']}: {terminal_safe(blocked['reason'])} (--override {blocked['check']} to go on)", file=sys.stderr)
    for failure in outcome.failures:
        print(f"FAILED {terminal_safe(failure)}", file=sys.stderr)
    return 3 if outcome.blocked else 1 if outcome.failures else 0


def cmd_preview(args) -> int:
    """``preview <tenant>.<campaign> --email ADDRESS``: the template, the rule and the message that contact would get."""
    from email_engine_assets import campaign_runs as runs

    _prepare(args.workspace)
    try:
        shown = runs.preview(args.campaign, args.email)
    except runs.CampaignRefused as exc:
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    # a template that cannot be rendered is an error of the campaign's files, not an answer about the contact
    status = 1 if shown["skipped"] == "render_error" else 0
    if status:
        print(f"error: {terminal_safe(shown['detail'] or 'the template cannot be rendered')}", file=sys.stderr)
    if args.json:
        print(json.dumps(shown))
        return status
    print(terminal_safe(f"campaign: {shown['campaign']}"))
    print(terminal_safe(f"contact:  {shown['email']} (contact {shown['contact_id']})"))
    if shown["template"] is None:
        print(terminal_safe(f"template: none -- this contact would be skipped ({shown['skipped']}) {shown['detail'] or ''}".rstrip()))
        return status
    print(terminal_safe(f"template: {shown['template']} (rule: {shown['rule']})"))
    print()
    for name, value in shown["headers"]:
        print(terminal_safe(f"{name}: {value}"))
    if shown["dkim_signed"]:
        print("DKIM-Signature: (signed)")
    print()
    for line in shown["text"].splitlines():
        print(terminal_safe(line))
    return 0


def cmd_suppress(args) -> int:
    from email_engine_assets import campaign_runs as runs

    _prepare(args.workspace)
    try:
        if args.command == "suppress":
            key, new = runs.suppress(args.tenant, args.email, args.reason, args.detail)
            print(f"{terminal_safe(key)}: " + ("suppressed" if new else "already suppressed"))
        else:
            key, reason = runs.unsuppress(args.tenant, args.email)
            print(f"{terminal_safe(key)}: " + (f"suppression ({reason}) lifted" if reason else "was not suppressed (or erased: that stays)"))
    except runs.CampaignRefused as exc:
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return 1
    return 0


def cmd_webhooks_inbox(args) -> int:
    """``webhooks status|retry <tenant>``: the tenant's webhook rows by state and why rows failed;
    ``retry`` makes failed rows pending again and applies them now."""
    from email_engine_assets.feedback import inbox_store
    from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
    from email_engine_assets.tenancy.config import one_tenant
    from email_engine_resources.postgres import get_engine

    _prepare(args.workspace)
    try:
        tenant, ws = one_tenant(settings.workspace_dir(), args.tenant)
    except LookupError as exc:
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return 2
    engine = get_engine()
    if args.webhooks_command == "discard":
        from email_engine_assets.feedback.webhook_apply import discard_failed_rows

        done = discard_failed_rows(engine, args.tenant, args.ids)
        print(f"discarded {len(done)} failed row(s)" + (f": {' '.join(f'#{i}' for i in done)}" if done else ""))
        missing = sorted(set(args.ids) - set(done))
        if missing:
            print(f"error: not a failed row of {args.tenant} with a body: {' '.join(f'#{i}' for i in missing)}", file=sys.stderr)
        return 1 if missing else 0
    if args.webhooks_command == "retry":
        with engine.begin() as conn:
            reopened = inbox_store.reopen_failed(conn, args.tenant)
        applied = apply_webhook_rows(engine, ws.root, tenant)
        print(f"reopened {reopened} failed row(s); applied: "
              + " ".join(f"{k}={v}" for k, v in applied.items()))
    with engine.connect() as conn:
        counts = inbox_store.inbox_counts(conn, args.tenant)
        failed = inbox_store.failed_rows(conn, args.tenant)
    print(" ".join(f"{state}={counts.get(state, 0)}" for state in ("pending", "applied", "failed")))
    for row in failed:
        where = row["kind"] + (f"/{row['source_id']}" if row["source_id"] else "")
        print(f"  failed #{row['id']} {where} {row['received_at']:%Y-%m-%d %H:%M:%S}: {terminal_safe(row['detail'] or '')}")
    return 1 if args.webhooks_command == "retry" and counts.get("failed") else 0


def cmd_webhooks(args) -> int:
    import uvicorn

    from email_engine_assets.feedback.tracking_rules import TRUSTED_PROXIES_ENV, trusted_networks
    from email_engine_assets.feedback.webhook_app import app_engine, build_app
    from email_engine_assets.feedback.webhook_server import WebhookLimits, freeze_startup_heap, uvicorn_settings
    from email_engine_resources.postgres import application_url

    try:
        given = {"header_timeout_s": args.header_timeout, "body_timeout_s": args.body_timeout,
                 "max_header_bytes": args.max_header_bytes, "max_in_flight": args.max_in_flight}
        limits = WebhookLimits(**{name: value for name, value in given.items() if value is not None})
        trusted_networks(os.environ.get(TRUSTED_PROXIES_ENV, ""))  # refused here, not per request
    except ValueError as exc:
        print(f"webhooks serve: {exc}", file=sys.stderr)
        return 2
    _prepare(args.workspace)
    app = build_app(settings.workspace_dir(), app_engine(application_url()), max_body_bytes=args.max_body_bytes, limits=limits)
    # EMAIL_ENGINE_LOG_FORMAT=json: uvicorn's loggers go to the root's JSON handler, not its own.
    logs = {"log_config": None} if getattr(args, "log_format", "text") == "json" else {}
    freeze_startup_heap()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", proxy_headers=args.proxy_headers,
                forwarded_allow_ips=args.forwarded_allow_ips, **logs, **uvicorn_settings(limits))


def cmd_metrics(args) -> int:
    """``metrics serve``: the engine's figures for Prometheus, read from PostgreSQL when scraped."""
    from email_engine_assets.feedback.incidents import watch_settings
    from email_engine_assets.metrics.serve import serve
    from email_engine_resources.alerts import AlertPoster
    from email_engine_resources.postgres import get_engine

    if not 0 < args.port < 65536:
        print(f"metrics serve: --port must be between 1 and 65535, not {args.port}", file=sys.stderr)
        return 2
    try:
        watch = watch_settings(os.environ)
    except ValueError as exc:
        print(f"metrics serve: {exc}", file=sys.stderr)
        return 2
    _prepare(args.workspace)
    try:
        serve(get_engine(), args.host, args.port, watch=watch, poster=AlertPoster.from_environment())
    except OSError as exc:
        print(f"metrics serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_contact(args) -> int:
    """``contact explain|export|forget <tenant> <email>``; forget exits 1 while a part is left to do."""
    from email_engine_assets.location import location_resources
    from email_engine_assets.privacy import person
    from email_engine_assets.privacy.dossier import dossier_json, explain_lines
    from email_engine_assets.privacy.erasure import REPORT_KEYS

    _prepare(args.workspace)
    try:
        with location_resources(("outbox", "mailwizz"), args.definitions) as built:
            if args.action == "forget":
                outcome = person.forget(args.tenant, args.email, mailwizz=built.mailwizz, outbox=built.outbox)
            else:
                shown = person.dossier(args.tenant, args.email, outbox=built.outbox)
    except person.PersonRefused as exc:
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return 2
    if args.action == "export":
        print(dossier_json(shown))
    elif args.action == "explain":
        for line in explain_lines(shown):
            print(terminal_safe(line))
    else:
        print(f"erased from tenant {args.tenant} (rows per table):")
        for key in REPORT_KEYS:
            print(f"{key:>22}: {outcome.erased.get(key, 0)}")
        for name, (deleted, dropped) in outcome.mailwizz.items():
            print(f"{'mailwizz ' + name:>22}: {deleted} subscriber(s) deleted, {dropped} sync row(s) dropped")
        disk = outcome.disk
        print(f"{'outbox files':>22}: {disk.outbox_removed}")
        print(f"{'pushed inbox files':>22}: {disk.pushed_rewritten} rewritten, {disk.pushed_removed} removed, "
              f"{disk.records_dropped} record(s) dropped")
        for left in outcome.left:
            print(f"LEFT {terminal_safe(left)}", file=sys.stderr)
        return 0 if outcome.ok else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="email-engine", description=__doc__)
    parser.add_argument("--workspace", help="folder with tenants/*.yaml and inbox/ (default: EMAIL_ENGINE_WORKSPACE or examples/workspace)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.set_defaults(func=func)
        return p

    add("run", cmd_run, "apply pending feedback, import every pending file, build contacts, quality and segments, send due campaigns")
    p = add("import", cmd_import, "place FILE in a tenant/source inbox and import it")
    p.add_argument("file")
    p.add_argument("--tenant", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object with the file's counts (progress goes to stderr)")
    p.add_argument("--no-quality", action="store_true", help="stop after the merge (no verdicts, enrichment or tags)")
    p = add("rejects", cmd_rejects, "show rejected rows with their line numbers and reasons")
    p.add_argument("--tenant", required=True)
    p.add_argument("--source")
    p.add_argument("--limit", type=int, default=50)
    p = add("check", cmd_check, "print the verdict and facets of each address as JSON lines")
    p.add_argument("emails", nargs="+", metavar="EMAIL", help="addresses; - reads one per line from stdin; put addresses starting with - after --")
    p.add_argument("--smtp", action="store_true", help="also probe the mailbox over SMTP (RCPT TO, no mail sent)")
    p.add_argument("--no-dns", action="store_true", help="offline verdict: syntax and flags only, no network")
    p = add("ui", cmd_ui, "start the Dagster webserver and daemon on the same storage")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p = add("worker", cmd_worker, "run the steps of this project's runs as a Celery worker (EMAIL_ENGINE_EXECUTOR=celery)")
    p.add_argument("--name", help="the worker's node name (default: <queue>@<host>; %%h stands for the host name)")
    p.add_argument("--concurrency", type=int, help="steps run at once (default: one per CPU)")
    p.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p = add("dagster", cmd_dagster, "run a dagster CLI command on this project's storage (e.g. definitions validate -w workspace.yaml)")
    p.add_argument("dagster_args", nargs=argparse.REMAINDER)
    p = add("campaign", cmd_campaign, "list, show, send, pause, resume or cancel a campaign, or show its stats (<tenant>.<name>)")
    p.add_argument("action", choices=["list", "show", "send", "pause", "resume", "cancel", "stats"])
    p.add_argument("target", nargs="?", help="<tenant>.<name> (list: an optional tenant)")
    p.add_argument("--json", action="store_true", help="print one JSON object (list: one per line)")
    p.add_argument("--override", action="append", metavar="CHECK", help="go on although CHECK fails (recorded with the run); resume: guard_rail after a guard-rail pause")
    p.add_argument("--resend-unknown", action="store_true", help="send again the rows whose fate is unknown (may reach someone twice)")
    p = add("preview", cmd_preview, "show the template, rule and message a contact would get from a campaign")
    p.add_argument("campaign", help="<tenant>.<name>")
    p.add_argument("--email", required=True, metavar="ADDRESS", help="a contact of the tenant")
    p.add_argument("--json", action="store_true", help="print one JSON object (template, rule, headers, text)")
    for name, help_text in (("suppress", "never mail EMAIL again for TENANT"), ("unsuppress", "lift a suppression of EMAIL for TENANT")):
        p = add(name, cmd_suppress, help_text)
        p.add_argument("tenant")
        p.add_argument("email")
        if name == "suppress":
            p.add_argument("--reason", default="manual", choices=["manual", "unsubscribed", "bounced", "complained"],
                           help="why (default: manual); erasure has its own path")
            p.add_argument("--detail", help="a note kept with the suppression")
    hooks = sub.add_parser("webhooks", help="the webhook app: MailWizz hits, contacts pushes, one-click unsubscribe")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True)
    serve = hooks_sub.add_parser("serve", help="serve the webhook routes (Starlette on uvicorn)")
    serve.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest body taken (default 1 MiB); larger is 413")
    serve.add_argument("--header-timeout", type=float, help="seconds for a request's headers, at most 30 (default 10); then 408")
    serve.add_argument("--body-timeout", type=float, help="seconds for a request's body (default 30); then 408")
    serve.add_argument("--max-header-bytes", type=int, help="largest request head (default 16 KiB); larger is 431")
    serve.add_argument("--max-in-flight", type=int, help="requests handled at once (default 128); more are 503")
    serve.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips")
    serve.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="the reverse proxies whose forwarded headers count")
    serve.set_defaults(func=cmd_webhooks)
    for name, help_text in (("status", "the tenant's webhook rows: pending, applied, failed (with why)"),
                            ("retry", "make the tenant's failed webhook rows pending again and apply them now"),
                            ("discard", "give up failed webhook rows that can never apply (their bodies are emptied)")):
        inbox = hooks_sub.add_parser(name, help=help_text)
        inbox.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        inbox.add_argument("tenant")
        if name == "discard":
            inbox.add_argument("ids", nargs="+", type=int, metavar="ID", help="row ids, as `webhooks status` shows them")
        inbox.set_defaults(func=cmd_webhooks_inbox)
    p = add("contact", cmd_contact, "one person: explain where their data came from, export it as JSON, or forget them")
    p.add_argument("action", choices=["explain", "export", "forget"])
    p.add_argument("tenant")
    p.add_argument("email")
    metrics = sub.add_parser("metrics", help="Prometheus figures of the engine (ledger, events, suppressions, files, sensors, runs)")
    metrics_sub = metrics.add_subparsers(dest="metrics_command", required=True)
    p = metrics_sub.add_parser("serve", help="serve GET /metrics, read from PostgreSQL and Dagster's storage when scraped")
    p.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9108)
    p.set_defaults(func=cmd_metrics)
    p = add("doctor", cmd_doctor, "probe the database, resolver, outbox, transports and webhook app; exit 1 if one fails")
    p.add_argument("tenant", nargs="?", help="only this tenant's transports (the shared parts are always probed)")
    p.add_argument("--json", action="store_true", help="print one JSON object: ok and each probe's name, status, reason")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply pending schema migrations")
    up.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: list[str] | None = None, definitions=None) -> int:
    """``definitions``: the code location whose resources the commands use (default: the project's;
    tests pass ``definitions.with_resources({...})``)."""
    args = build_parser().parse_args(argv)
    args.definitions = definitions
    from email_engine_assets.metrics.log_format import configure as configure_logging

    try:
        args.log_format = configure_logging(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not hasattr(args, "workspace"):
        args.workspace = None
    from email_engine_assets.executors import ExecutorConfigError
    from email_engine_assets.tenancy.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: invalid tenant configuration\n{exc}", file=sys.stderr)
        return 2
    except ExecutorConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
