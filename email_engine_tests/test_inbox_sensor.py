"""inbox_sensor ticks with build_sensor_context: new file, same file again, growing file, unknown folders."""

from __future__ import annotations

import hashlib
import os
import time

import dagster as dg
import pytest

from email_engine_assets.contacts import sensors
from email_engine_assets.contacts.sensors import inbox_sensor
from email_engine_assets.tenancy.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    TENANTS_TAG,
    ImportBlock,
    import_blocks,
    source_ranges,
    tenant_and_source,
)
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource


@pytest.fixture
def instance(engine):
    """A Dagster instance, and an empty ledger: the sensor skips content the ledger holds."""
    with dg.instance_for_test() as inst:
        yield inst


def tick(instance, cursor=None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"workspace": WorkspaceResource(), "db": PostgresResource()}
    )
    result = inbox_sensor(context)
    for request in result.dynamic_partitions_requests:  # as the daemon does before launching the runs
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def age(path, seconds=3600):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_new_settled_file_registers_partitions_and_requests_one_run(workspace, instance):
    workspace.tenant("acme", sources=("crm", "salon"))
    f = workspace.file("acme", "crm", "a.csv", "email\na@example.com\n")
    age(f)
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == [dg.MultiPartitionKey({"tenant": "acme", "source": "crm"})]
    added = {r.partitions_def_name: set(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert added == {"tenant": {"acme"}, "source": {"crm", "salon"}}
    # the same content again (even under another name) yields the same run key; an unchanged file is not re-hashed
    again = tick(instance, result.cursor)
    assert again.run_requests == [] and "no new files" in again.skip_reason.skip_message


def test_same_content_gives_the_same_run_key(workspace, instance):
    workspace.tenant("acme")
    f = workspace.file("acme", "crm", "a.csv", "email\na@example.com\n")
    age(f)
    first = tick(instance).run_requests[0].run_key
    f.rename(f.with_name("renamed.csv"))
    second = tick(instance).run_requests[0].run_key
    assert first == second


def test_growing_file_waits_until_it_stops_changing(workspace, instance, monkeypatch):
    workspace.tenant("acme")
    f = workspace.file("acme", "crm", "big.csv", "email\na@example.com\n")
    r1 = tick(instance)
    assert r1.run_requests == [] and "still changing" in r1.skip_reason.skip_message
    with f.open("a") as fh:
        fh.write("b@example.com\n")
    r2 = tick(instance, r1.cursor)
    assert r2.run_requests == []
    r3 = tick(instance, r2.cursor)
    assert len(r3.run_requests) == 1


def test_temporary_suffixes_are_ignored(workspace, instance):
    workspace.tenant("acme")
    age(workspace.file("acme", "crm", "upload.csv.part", "email\na@example.com\n"))
    age(workspace.file("acme", "crm", "x.tmp", "email\na@example.com\n"))
    assert tick(instance).run_requests == []


def test_unknown_tenant_and_source_are_named_in_the_skip_reason(workspace, instance):
    workspace.tenant("acme")
    age(workspace.file("ghost", "crm", "a.csv", "email\na@example.com\n"))
    age(workspace.file("acme", "nosuch", "a.csv", "email\na@example.com\n"))
    result = tick(instance)
    assert result.run_requests == []
    assert "inbox/ghost" in result.skip_reason.skip_message and "inbox/acme/nosuch" in result.skip_reason.skip_message


def test_invalid_config_is_a_skip_reason_not_a_crash(workspace, instance):
    workspace.tenant("acme", yaml_text="id: acme\nname: A\nsources: []\n")
    result = tick(instance)
    assert result.run_requests == [] and "acme.yaml" in result.skip_reason.skip_message and "sources" in result.skip_reason.skip_message


def test_thousands_of_unchanged_files_are_not_rehashed(workspace, instance, monkeypatch):
    workspace.tenant("acme")
    for i in range(2000):
        age(workspace.file("acme", "crm", f"f{i:04}.csv", f"email\nu{i}@example.com\n"))
    first = tick(instance)
    assert len(first.run_requests) == 1
    calls = []
    monkeypatch.setattr(sensors, "file_digest", lambda p: calls.append(p) or "x")
    started = time.perf_counter()
    second = tick(instance, first.cursor)
    assert second.run_requests == [] and calls == []
    assert time.perf_counter() - started < 5


def covered_tenants(instance, request: dg.RunRequest) -> list[str]:
    """The tenants a run covers: its own, or the tenant dimension between the corners of its range."""
    if "tenant" in request.tags:
        return [request.tags["tenant"]]
    first, last = (tenant_and_source(request.tags[tag])[0] for tag in (RANGE_START_TAG, RANGE_END_TAG))
    order = list(instance.get_dynamic_partitions("tenant"))
    return order[order.index(first) : order.index(last) + 1]


def test_ticks_are_bounded_and_the_cursor_carries_the_rest(workspace, instance, monkeypatch):
    monkeypatch.setattr(sensors, "MAX_RUNS_PER_TICK", 20)
    monkeypatch.setattr(sensors, "TENANTS_PER_BATCH", 10)
    monkeypatch.setattr(sensors, "MAX_PARTITIONS_PER_RUN", 40)
    sources = ("crm", "shop", "events", "web")
    tenants = [f"t{i:02}" for i in range(50)]
    for t in tenants:
        workspace.tenant(t, sources=sources)
        for s in sources:
            age(workspace.file(t, s, "contacts.csv", f"email\n{s}@{t}.example\n"))
    seen, cursor, sizes = [], None, []
    for _ in range(3):
        result = tick(instance, cursor)
        sizes.append(len(result.run_requests))
        cursor = result.cursor
        # one run covers ten tenants × their four sources: a rectangle of the tenant × source space
        for request in result.run_requests:
            covered = covered_tenants(instance, request)
            assert request.partition_key is None and len(covered) == 10
            assert request.tags[TENANTS_TAG] == f"{covered[0]}..{covered[-1]}"
            assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (f"crm|{covered[0]}", f"web|{covered[-1]}")
            seen += covered
    assert sizes == [2, 2, 1]  # 20 tenants a tick at most, 40 partitions a run
    assert sorted(seen) == tenants  # each tenant once, none lost between ticks
    last = tick(instance, cursor)
    assert last.run_requests == [] and "no new files" in last.skip_reason.skip_message
    # a new file of a tenant the first tick handled is found on the next tick
    age(workspace.file("t03", "shop", "more.csv", "email\nnew@t03.example\n"))
    after = tick(instance, last.cursor)
    assert [(r.tags["tenant"], r.partition_key) for r in after.run_requests] == [
        ("t03", dg.MultiPartitionKey({"tenant": "t03", "source": "shop"}))
    ]


def test_tenants_share_a_run_only_when_the_rectangle_holds_their_own_sources():
    tenants = ["a", "b", "c", "d", "e"]
    order = ["crm", "shop", "web", "scraper"]
    own = {"a": {"crm", "shop", "web"}, "b": {"crm", "shop", "web"}, "c": {"crm", "shop"}, "d": {"crm", "shop", "web", "scraper"}, "e": {"crm"}}
    blocks = import_blocks({"a": [("crm", "web")], "b": [("shop", "shop")], "c": [("crm", "shop")]}, own, tenants, order, max_partitions=100)
    # b's range widens to a's (both have every source of it); c lacks web, so it runs alone
    assert blocks == [ImportBlock(("a", "b"), "crm", "web"), ImportBlock(("c",), "crm", "shop")]
    # a tenant with nothing ready between two others keeps them apart (a run would cover it too)
    assert import_blocks({"a": [("crm", "crm")], "c": [("crm", "crm")]}, own, tenants, order, max_partitions=100) == [
        ImportBlock(("a",), "crm", "crm"), ImportBlock(("c",), "crm", "crm"),
    ]
    # a tenant with two ranges (a source of another tenant in between) gets a run per range
    two = {"d": [("crm", "shop"), ("scraper", "scraper")], "e": [("crm", "crm")]}
    assert import_blocks(two, own, tenants, order, max_partitions=100) == [
        ImportBlock(("d",), "crm", "shop"), ImportBlock(("d",), "scraper", "scraper"), ImportBlock(("e",), "crm", "crm"),
    ]
    # at most max_partitions (tenant, source) pairs a run
    same = {t: [("crm", "crm")] for t in tenants}
    assert [b.tenants for b in import_blocks(same, own, tenants, order, max_partitions=2)] == [("a", "b"), ("c", "d"), ("e",)]


def test_content_the_ledger_holds_requests_nothing(workspace, instance, engine):
    from email_engine_assets.contacts.importer import import_source
    from email_engine_assets.contacts.store import register_workspace
    from email_engine_assets.tenancy.config import load_workspace

    workspace.tenant("acme", sources=("crm", "salon"))
    age(workspace.file("acme", "crm", "a.csv", "email\na@example.com\n"))
    age(workspace.file("acme", "salon", "b.csv", "email\nb@example.com\n"))
    ws = load_workspace(workspace.root)
    with engine.begin() as conn:
        register_workspace(conn, ws)
    tenant = ws.tenants["acme"]
    # as `email-engine import` or `run` would have done before the UI started
    import_source(engine, tenant, tenant.source("crm"), ws.source_dir("acme", "crm"))
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == [dg.MultiPartitionKey({"tenant": "acme", "source": "salon"})]
    import_source(engine, tenant, tenant.source("salon"), ws.source_dir("acme", "salon"))
    assert tick(instance).run_requests == []  # a fresh cursor: the ledger alone answers


def test_a_range_never_covers_a_source_of_another_tenant():
    order = ["crm", "events", "salon", "shop", "web"]
    acme = {"crm", "salon", "shop"}
    assert source_ranges(acme, order, {"crm", "salon", "shop"}) == [("crm", "crm"), ("salon", "shop")]
    # a source of the tenant with nothing new may sit inside a range; it imports nothing
    assert source_ranges(acme | {"web"}, order, {"salon", "web"}) == [("salon", "web")]
    assert source_ranges(acme, order, set()) == []


def _sig(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=5).hexdigest()


def test_cursor_of_twenty_thousand_files_stays_small():
    files = {f"tenant{t:04}": {f"source{s:02}": {"contacts-2026-01-01.csv": _sig(t, s)} for s in range(20)} for t in range(1000)}
    cursor = sensors.encode_cursor({"files": files, "next": None})
    assert len(cursor) < 400_000
    assert sensors.decode_cursor(cursor)["files"] == files
    assert sensors.decode_cursor('{"acme/crm/a.csv": [1, 2, "x"]}') == {}  # an older cursor starts afresh
