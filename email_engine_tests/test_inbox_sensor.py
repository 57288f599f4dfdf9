"""inbox_sensor ticks with build_sensor_context: new file, same file again, growing file, unknown folders."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest

from email_engine_assets.contacts import sensors
from email_engine_assets.contacts.sensors import inbox_sensor
from email_engine_resources.workspace import WorkspaceResource


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def tick(instance, cursor=None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"workspace": WorkspaceResource()})
    return inbox_sensor(context)


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
