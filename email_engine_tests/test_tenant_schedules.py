"""Per-tenant schedules: each tenant's cron in its time zone, evaluated by one schedule per kind."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from email_engine_assets.quality.schedules import recheck_schedule
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.cron import (
    DEFAULT_CRONS,
    KINDS,
    MAILWIZZ_POLL,
    RECHECK,
    STATS_REFRESH,
    TenantCron,
    cron_problem,
    due_between,
    next_due,
    next_times,
    previous_tick,
    tick_window,
)
from email_engine_assets.tenancy.tenant_schedules import DUE_AT_TAG, NEXT_AT_TAG, TICK_CRON
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def run_ticks(plans: dict[str, TenantCron], start: datetime, end: datetime, every: timedelta = timedelta(minutes=5),
              stored=None) -> list[tuple[str, datetime]]:
    """What a schedule ticking every ``every`` from ``start`` to ``end`` starts: (tenant, due time) pairs."""
    started = []
    tick = start
    while tick <= end:
        window_start, move = tick_window(stored, tick, previous_tick(TICK_CRON, tick))
        started += list(due_between(plans, window_start, tick).items())
        if move:
            stored = (tick, window_start)
        tick += every
    return started


def tenant_yaml(tenant_id: str, schedules: str = "") -> str:
    return f"id: {tenant_id}\nname: {tenant_id.title()}\nsources:\n  - id: crm\n" + schedules


def test_a_tenant_file_without_schedules_keeps_todays_crons(workspace):
    workspace.tenant("acme", tenant_yaml("acme"))
    workspace.tenant("globex", tenant_yaml("globex", "schedules:\n  timezone: Europe/Paris\n"
                                                     "  stats_refresh: {cron: '*/30 * * * *', timezone: Asia/Tokyo}\n"))
    ws = load_workspace(workspace.root)
    acme = ws.tenants["acme"].schedules
    assert {kind: acme.of(kind) for kind in KINDS} == {
        RECHECK: TenantCron("0 3 * * *", "UTC"), MAILWIZZ_POLL: TenantCron("0 * * * *", "UTC"),
        STATS_REFRESH: TenantCron("0 * * * *", "UTC")}
    assert DEFAULT_CRONS == {RECHECK: "0 3 * * *", MAILWIZZ_POLL: "0 * * * *", STATS_REFRESH: "0 * * * *"}
    globex = ws.tenants["globex"].schedules
    assert globex.of(RECHECK) == TenantCron("0 3 * * *", "Europe/Paris")  # the file's zone, today's cron
    assert globex.of(STATS_REFRESH) == TenantCron("*/30 * * * *", "Asia/Tokyo")


def test_an_invalid_cron_or_time_zone_refuses_that_tenant_file_only(workspace):
    workspace.tenant("acme", tenant_yaml("acme", "schedules:\n  recheck: {cron: '61 3 * * *'}\n"
                                                 "  mailwizz_poll: {timezone: Europe/Pariss}\n"))
    workspace.tenant("globex", tenant_yaml("globex", "schedules:\n  stats_refresh: {cron: '0 3 * * * *'}\n"))
    workspace.tenant("initech", tenant_yaml("initech", "schedules:\n  recheck: {cron: '0 2 * * *', timezone: Europe/Paris}\n"))
    ws = load_workspace(workspace.root)
    assert set(ws.tenants) == {"initech"}  # the others' mistakes do not stop it
    acme = ws.errors["acme"].splitlines()
    assert acme[0].endswith("tenants/acme.yaml: schedules.recheck.cron = '61 3 * * *': "
                            "not a valid cron expression: [61 3 * * *] is not acceptable, out of range")
    assert acme[1].endswith("tenants/acme.yaml: schedules.mailwizz_poll.timezone = 'Europe/Pariss': unknown time zone; "
                            "expected an IANA name such as 'Europe/Paris', 'America/New_York' or 'UTC'")
    assert ws.errors["globex"].endswith("tenants/globex.yaml: schedules.stats_refresh.cron = '0 3 * * * *': "
                                        "a cron expression has 5 fields (minute hour day-of-month month day-of-week), this one has 6")


@pytest.mark.parametrize(("cron", "problem"), [
    ("0 3 * * *", None), ("@daily", None), ("0 9 * * MON-FRI", None), ("*/15 * * * *", None),
    ("", "expected a cron expression"), ("0 3 31 2 *", "never fires"), ("R 3 * * *", "hashed or random"),
    ("H 3 * * *", "hashed or random"), ("@reboot", "unknown cron alias"), ("0 25 * * *", "out of range"),
])
def test_cron_expressions_accepted_and_refused(cron, problem):
    found = cron_problem(cron)
    assert (found is None) if problem is None else (problem in found)


def test_a_nightly_cron_in_paris_runs_once_a_night_across_both_daylight_saving_changes():
    plans = {"acme": TenantCron("30 2 * * *", "Europe/Paris")}
    spring = run_ticks(plans, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    # 02:30 does not exist on 29 March (02:00 CET -> 03:00 CEST): the run comes when the clock leaves the gap
    assert spring == [("acme", utc(2026, 3, 28, 1, 30)), ("acme", utc(2026, 3, 29, 1, 0)), ("acme", utc(2026, 3, 30, 0, 30))]
    autumn = run_ticks(plans, utc(2026, 10, 23, 12), utc(2026, 10, 26, 12))
    # 02:30 happens twice on 25 October (03:00 CEST -> 02:00 CET): one run, at the second
    assert autumn == [("acme", utc(2026, 10, 24, 0, 30)), ("acme", utc(2026, 10, 25, 1, 30)), ("acme", utc(2026, 10, 26, 1, 30))]
    new_york = {"globex": TenantCron("0 9 * * MON-FRI", "America/New_York")}
    assert next_due(new_york["globex"], utc(2026, 3, 6, 15)) == utc(2026, 3, 9, 13)  # Monday after the change, EDT
    assert next_due(new_york["globex"], utc(2026, 3, 5, 15)) == utc(2026, 3, 6, 14)  # Friday before it, EST


def test_a_due_time_missed_while_the_daemon_was_down_runs_once():
    plans = {"hourly": TenantCron("0 * * * *"), "nightly": TenantCron("0 3 * * *"), "later": TenantCron("0 9 * * *")}
    stored = (utc(2026, 12, 8, 0, 50), utc(2026, 12, 8, 0, 45))  # the last tick before the outage
    # the daemon comes back at 06:10: the first tick covers (00:50, 06:10]
    start, move = tick_window(stored, utc(2026, 12, 8, 6, 10), utc(2026, 12, 8, 6, 5))
    assert (start, move) == (utc(2026, 12, 8, 0, 50), True)
    assert due_between(plans, start, utc(2026, 12, 8, 6, 10)) == {"hourly": utc(2026, 12, 8, 6), "nightly": utc(2026, 12, 8, 3)}
    # six hourly times and a nightly one missed: one run each; the following ticks start nothing more
    after = run_ticks(plans, utc(2026, 12, 8, 6, 15), utc(2026, 12, 8, 6, 55), stored=(utc(2026, 12, 8, 6, 10), start))
    assert after == []
    # a retried tick gets the window it had (its run keys make a second request of the same run impossible);
    # an older tick evaluated late covers only its own interval and moves nothing
    assert tick_window((utc(2026, 12, 8, 6, 10), start), utc(2026, 12, 8, 6, 10), utc(2026, 12, 8, 6, 5)) == (start, False)
    assert tick_window((utc(2026, 12, 8, 6, 10), start), utc(2026, 12, 8, 5), utc(2026, 12, 8, 4, 55)) == (utc(2026, 12, 8, 4, 55), False)
    assert next_times(plans, utc(2026, 12, 8, 6, 10)) == {
        "hourly": utc(2026, 12, 8, 7), "later": utc(2026, 12, 8, 9), "nightly": utc(2026, 12, 9, 3)}


def test_the_recheck_schedule_requests_the_due_tenants_and_names_them_with_their_next_times(engine, workspace):
    workspace.tenant("acme", tenant_yaml("acme", "schedules:\n  recheck: {cron: '0 2 * * *', timezone: Europe/Paris}\n"))
    workspace.tenant("globex", tenant_yaml("globex"))  # today's 03:00 UTC
    workspace.tenant("initech", tenant_yaml("initech", "schedules:\n  recheck: {cron: '0 2 * * 8'}\n"))
    resources = {"db": PostgresResource(), "workspace": WorkspaceResource()}

    def tick(at: datetime):
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at, resources=resources)
        return recheck_schedule(context)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex", "initech"])
        first = tick(utc(2026, 12, 8, 1, 0))  # 02:00 in Paris
        # the daemon is down from 01:00 to 03:10: globex's 03:00 is run once, at the first tick back
        back = tick(utc(2026, 12, 8, 3, 10))
        quiet = tick(utc(2026, 12, 8, 3, 15))

    assert [(r.partition_key, r.run_key, r.tags) for r in first] == [
        ("acme", "recheck:acme:2026-12-08T01:00Z",
         {"tenant": "acme", DUE_AT_TAG: "2026-12-08T01:00Z", NEXT_AT_TAG: "2026-12-09T01:00Z"})]
    assert [(r.partition_key, r.run_key, r.tags) for r in back] == [
        ("globex", "recheck:globex:2026-12-08T03:00Z",
         {"tenant": "globex", DUE_AT_TAG: "2026-12-08T03:00Z", NEXT_AT_TAG: "2026-12-09T03:00Z"})]
    assert isinstance(quiet, dg.SkipReason)
    message = quiet.skip_message
    assert "recheck: window (2026-12-08T03:10Z, 2026-12-08T03:15Z]; tenants started: none" in message
    assert "next at 2026-12-09T01:00Z: acme" in message and "next at 2026-12-09T03:00Z: globex" in message
    assert "tenant initech not scheduled, its tenant file is invalid: " in message
    assert "tenants/initech.yaml: schedules.recheck.cron = '0 2 * * 8': not a valid cron expression" in message


def test_a_refused_schedule_fails_the_tenant_files_check_of_its_tenant_only(engine, workspace):
    from email_engine_assets.campaigns.tenant_files import tenant_files

    workspace.tenant("acme", tenant_yaml("acme", "schedules:\n  stats_refresh: {cron: '0 9 * * *', timezone: Europe/Pariss}\n"))
    workspace.tenant("globex", tenant_yaml("globex", "schedules:\n  stats_refresh: {cron: '0 9 * * *', timezone: Europe/Paris}\n"))
    checks = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        for tenant_id in ("acme", "globex"):
            result = dg.materialize([tenant_files], partition_key=tenant_id, instance=instance,
                                    resources={"db": PostgresResource(), "workspace": WorkspaceResource()})
            (checks[tenant_id],) = result.get_asset_check_evaluations()
    assert not checks["acme"].passed and checks["acme"].severity == dg.AssetCheckSeverity.ERROR
    assert "tenants/acme.yaml: schedules.stats_refresh.timezone = 'Europe/Pariss': unknown time zone" in checks["acme"].description
    assert checks["globex"].passed
