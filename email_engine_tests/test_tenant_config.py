"""Tenant YAML validation: errors name the file, the path inside it, the bad value and what is expected."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences.assets import tag_assignments
from email_engine_assets.contacts.assets import contact_imports
from email_engine_assets.contacts.sensors import inbox_sensor
from email_engine_assets.tenancy.config import (
    MAX_PROBLEMS,
    PROBLEM_MAX_CHARS,
    TENANT_FILE_MAX_BYTES,
    ConfigError,
    load_workspace,
)
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

GOOD = """\
id: acme
name: Acme
default_language: fr
sources:
  - id: crm
    priority: 20
    encoding: cp1252
    delimiter: ";"
    columns: {"Adresse mail": email}
    tags: ["Salon Été"]
"""


def tenant_errors(workspace) -> dict[str, str]:
    """The errors of the broken tenant files; a broken file never loads as a tenant."""
    ws = load_workspace(workspace.root)
    assert ws.errors and not set(ws.errors) & set(ws.tenants)
    return ws.errors


def assert_error_names(workspace, expected: list[str]) -> None:
    message = tenant_errors(workspace)["acme"]
    assert "acme.yaml" in message
    for part in expected:
        assert part in message


def test_valid_file_loads_with_normalised_tags(workspace):
    workspace.tenant("acme", GOOD)
    ws = load_workspace(workspace.root)
    src = ws.tenants["acme"].source("crm")
    assert src.priority == 20 and src.tags == ["salon_ete"] and src.columns == {"Adresse mail": "email"}


@pytest.mark.parametrize(
    "change, expected",
    [
        (("priority: 20", "priority: high"), ["sources[0].priority", "'high'", "integer"]),
        (("priority: 20", "priority: 20\n    colour: red"), ["sources[0].colour", "unknown key"]),
        (("encoding: cp1252", "encoding: klingon"), ["sources[0].encoding", "'klingon'", "unknown text encoding"]),
        (("encoding: cp1252", "encoding: rot13"), ["sources[0].encoding", "'rot13'", "not a text encoding"]),
        (("delimiter: \";\"", "delimiter: \";;\""), ["sources[0].delimiter", "single character"]),
        (("{\"Adresse mail\": email}", "{\"Adresse mail\": mailbox}"), ["sources[0].columns", "unknown field 'mailbox'"]),
        (("default_language: fr", "default_language: it"), ["default_language", "'it'", "expected one of"]),
        (("  - id: crm", "  - id: CRM Export"), ["sources[0].id", "slug"]),
        (("name: Acme\n", ""), ["name", "required"]),
    ],
)
def test_errors_name_file_path_value_and_expectation(workspace, change, expected):
    workspace.tenant("acme", GOOD.replace(*change))
    assert_error_names(workspace, expected)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("feedback:\n  soft_bounce_limit: 0\n", ["feedback.soft_bounce_limit", "greater than or equal to 1"]),
        ("feedback:\n  max_complaint_rate: 2\n", ["feedback.max_complaint_rate", "less than or equal to 1"]),
        ("feedback:\n  hard_bounces: 1\n", ["feedback.hard_bounces", "unknown key"]),
        # a secret written in the file instead of named in the environment is refused
        ("webhooks:\n  mailwizz_token: s3cret-in-the-file\n", ["webhooks.mailwizz_token", "{env: NAME}"]),
        ("webhooks:\n  mailwizz_token: {env: \"NOT A NAME\"}\n", ["webhooks.mailwizz_token.env"]),
        ("transports:\n  - {name: pmta, kind: powermta, host: h, bounce_address: b@x.example,"
         " management_url: \"ftp://pmta:8080\"}\n", ["transports[0].powermta.management_url", "http"]),
    ],
)
def test_feedback_and_webhook_settings_are_checked(workspace, extra, expected):
    workspace.tenant("acme", GOOD + extra)
    message = tenant_errors(workspace)["acme"]
    for part in expected:
        assert part in message
    assert "s3cret-in-the-file" not in message  # a secret written in the file is never echoed


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("guard_rails:\n  min_sample: -5\n", ["guard_rails.min_sample", "-5", "greater than or equal to 1"]),
        ("guard_rails:\n  check_every_s: -1\n", ["guard_rails.check_every_s", "greater than or equal to 0"]),
        ("guard_rails:\n  min_sample: 10000001\n", ["guard_rails.min_sample", "less than or equal to 10000000"]),
        ("guard_rails:\n  check_every_s: 3601\n", ["guard_rails.check_every_s", "less than or equal to 3600"]),
        ("guard_rails:\n  destination_window_s: 86401\n", ["guard_rails.destination_window_s", "less than or equal to 86400"]),
        ("guard_rails:\n  destination_deferrals: 0\n", ["guard_rails.destination_deferrals", "greater than or equal to 1"]),
        ("guard_rails:\n  max_complaint_rate: 0.01\n", ["guard_rails.max_complaint_rate", "unknown key"]),
        ("guard_rails:\n  min_sample: lots\n", ["guard_rails.min_sample", "'lots'", "integer"]),
        ("guard_rails:\n  check_every_s: [30]\n", ["guard_rails.check_every_s", "number"]),
        ("guard_rails: 200\n", ["guard_rails = 200", "valid dictionary"]),
    ],
)
def test_bad_guard_rails_are_refused_naming_the_file_and_the_field(workspace, extra, expected):
    assert_refused(workspace, extra, expected)


def assert_refused(workspace, extra: str, expected: list[str]) -> None:
    """The tenant file GOOD + ``extra`` is refused with a message naming the file and each of ``expected``."""
    workspace.tenant("acme", GOOD + extra)
    message = tenant_errors(workspace)["acme"]
    assert "tenants/acme.yaml" in message or f"tenants{os.sep}acme.yaml" in message, message
    for part in expected:
        assert part in message, message
    assert "acme" not in load_workspace(workspace.root).tenants  # the tenant is not loaded with a default instead


def test_a_source_webhook_secret_is_named_not_written(workspace):
    workspace.tenant("acme", GOOD.replace("    priority: 20\n", "    priority: 20\n    webhook_secret: plain-secret\n"))
    message = tenant_errors(workspace)["acme"]
    assert "sources[0].webhook_secret" in message and "plain-secret" not in message
    workspace.tenant("acme", GOOD.replace("    priority: 20\n", "    priority: 20\n    webhook_secret: {env: ACME_CRM_SECRET}\n"))
    assert load_workspace(workspace.root).tenants["acme"].source("crm").webhook_secret.env == "ACME_CRM_SECRET"


def test_duplicate_source_ids_and_id_mismatch(workspace):
    workspace.tenant("acme", GOOD + "  - id: crm\n")
    workspace.tenant("globex", GOOD)
    errors = tenant_errors(workspace)
    assert "duplicate source id: crm" in errors["acme"]
    assert "globex.yaml" in errors["globex"] and "must equal the file name 'globex'" in errors["globex"]


def test_yaml_syntax_error_is_reported(workspace):
    workspace.tenant("acme", "id: acme\nsources: [\n")
    assert "acme.yaml: not valid YAML at line 3, column 1: expected" in tenant_errors(workspace)["acme"]


def test_a_workspace_without_tenant_folder_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no tenants/ folder"):
        load_workspace(tmp_path)


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("  - name: r1\n    tag: x\n    all: [{field: shoe_size, equals: '42'}]\n", ["tag_rules[0].all[0]", "shoe_size"]),
        ("  - name: r1\n    tag: x\n    all: [{field: email, regex: '(unclosed'}]\n", ["tag_rules[0].all[0].regex", "r1", "(unclosed"]),
        ("  - name: r1\n    tag: x\n    colour: red\n    all: [{field: email, exists: true}]\n", ["tag_rules[0].colour", "unknown key"]),
    ],
)
def test_invalid_tag_rules_are_named(workspace, rule, expected):
    workspace.tenant("acme", GOOD + "tag_rules:\n" + rule)
    assert_error_names(workspace, expected)


# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, from 450 bytes of text.
ALIAS_BOMB = "id: acme\nname:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  {n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
) + "sources: [{id: crm}]\n"


def test_an_alias_bomb_is_refused_at_once_naming_file_and_line(workspace):
    assert 400 <= len(ALIAS_BOMB.encode()) <= 500
    workspace.tenant("acme", ALIAS_BOMB)
    started = time.perf_counter()
    message = tenant_errors(workspace)["acme"]
    assert time.perf_counter() - started < 5  # expanding it took minutes and gigabytes
    assert "acme.yaml: not valid YAML at line 3, column 6: anchors and aliases (&name, *name) are not allowed" in message


def test_an_anchor_alone_is_refused_too(workspace):
    workspace.tenant("acme", GOOD.replace("name: Acme", "name: &n Acme"))
    assert "line 2, column 7: anchors and aliases" in tenant_errors(workspace)["acme"]


def test_an_oversize_tenant_file_is_refused_naming_its_size_and_the_cap(workspace):
    size = TENANT_FILE_MAX_BYTES + 10
    path = workspace.tenant("acme", GOOD)
    path.write_bytes(GOOD.encode() + b"#" * (size - len(GOOD.encode()) - 1) + b"\n")
    assert f"acme.yaml: file is {size} bytes; a tenant file may hold at most {TENANT_FILE_MAX_BYTES} bytes" in tenant_errors(workspace)["acme"]


def test_deeply_nested_yaml_is_a_clear_error(workspace):
    workspace.tenant("acme", "id: acme\nname: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert "acme.yaml: not valid YAML: values nested too deeply" in tenant_errors(workspace)["acme"]


def test_an_error_quoting_long_input_shows_a_short_escaped_excerpt(workspace):
    tag = "\\x1b" + "!" * 200_000  # YAML escape: the value holds a real ESC character; no letter or digit
    workspace.tenant("acme", GOOD.replace('tags: ["Salon Été"]', f'tags: ["{tag}"]'))
    message = tenant_errors(workspace)["acme"]
    assert "sources[0].tags" in message and "more characters" in message
    assert len(message) < PROBLEM_MAX_CHARS + 200 and "\x1b" not in message and "\\x1b" in message


def test_a_file_with_thousands_of_problems_reports_a_bounded_list(workspace):
    sources = "".join(f"  - id: s{i}\n    priority: high\n" for i in range(1_000))
    workspace.tenant("acme", "id: acme\nname: Acme\nsources:\n" + sources)
    lines = tenant_errors(workspace)["acme"].splitlines()
    assert len(lines) == MAX_PROBLEMS + 1 and lines[-1].endswith(f"and {1_000 - MAX_PROBLEMS} more problems")


def test_one_broken_tenant_file_stops_only_that_tenant(engine, workspace, capsys):
    workspace.tenant("acme", GOOD.replace("priority: 20", "priority: high"))
    workspace.tenant("globex")
    settled = time.time() - 3600
    for tenant in ("acme", "globex"):
        os.utime(workspace.file(tenant, "crm", "a.csv", "email\na@example.com\n"), (settled, settled))
    resources = {"db": PostgresResource(), "workspace": WorkspaceResource()}
    with dg.instance_for_test() as instance:
        tick = inbox_sensor(dg.build_sensor_context(instance=instance, resources={"workspace": WorkspaceResource(), "db": PostgresResource()}))
        assert [r.tags["tenant"] for r in tick.run_requests] == ["globex"]
        logged = capsys.readouterr().err
        assert "tenant file not loaded" in logged and "acme.yaml: sources[0].priority" in logged
        for request in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        instance.add_dynamic_partitions("tenant", ["acme"])
        imported = dg.materialize([contact_imports], partition_key=tick.run_requests[0].partition_key, instance=instance, resources=resources)
        assert imported.asset_materializations_for_node("contact_imports")[0].metadata["files_imported"].value == 1
        broken = dg.materialize(
            [contact_imports], partition_key=dg.MultiPartitionKey({"tenant": "acme", "source": "crm"}),
            instance=instance, resources=resources, raise_on_error=False,
        )
        tags = dg.materialize([tag_assignments], partition_key="acme", instance=instance, resources=resources, raise_on_error=False)
    for result in (broken, tags):
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message
        assert "tenant 'acme' has an invalid tenant file" in message and "acme.yaml: sources[0].priority = 'high'" in message
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT tenant_id, status FROM import_files")).all() == [("globex", "imported")]


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("tracking:\n  opens: true\n", ["tracking is on but has no base_url"]),
        ("tracking:\n  clicks: true\n  base_url: http://t.acme.example\n", ["tracking.base_url", "https://"]),
        ("tracking:\n  exclude_field: vip\n", ["tracking.exclude_field", "must be a contact field"]),
        ("tracking:\n  exclude_tag: No Tracking\n", ["tracking.exclude_tag", "slug"]),
        ("tracking:\n  machines:\n    too_soon_s: 30\n", ["tracking.machines.too_soon_s", "less than or equal to 10"]),
        ("tracking:\n  machines:\n    burst_links: 1\n", ["tracking.machines.burst_links", "greater than or equal to 2"]),
        ("tracking:\n  machines:\n    networks: [10.0.0.300/8]\n", ["tracking.machines.networks"]),
        ("tracking:\n  machines:\n    scanners: true\n", ["tracking.machines.scanners", "unknown key"]),
        ("tracking:\n  opens: sometimes\n", ["tracking.opens", "'sometimes'"]),
    ],
)
def test_bad_tracking_settings_are_refused_naming_the_file_and_the_field(workspace, extra, expected):
    assert_refused(workspace, extra, expected)


def test_tracking_defaults_to_off_and_its_base_url_to_the_unsubscribe_one(workspace):
    workspace.tenant("acme", GOOD + "unsubscribe:\n  base_url: https://u.acme.example/\ntracking:\n  opens: true\n")
    tenant = load_workspace(workspace.root).tenants["acme"]
    assert (tenant.tracking.opens, tenant.tracking.clicks, tenant.tracking_base_url) == (True, False, "https://u.acme.example")
    workspace.tenant("acme", GOOD)
    tenant = load_workspace(workspace.root).tenants["acme"]
    assert not tenant.tracking.on and tenant.tracking.machines.too_soon_s <= 10


PMTA = "transports:\n  - {name: pmta, kind: powermta, host: pmta.example, bounce_address: b@bounce.acme.example, %s}\n"


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("pipeline_depth: 0", ["transports[0].powermta.pipeline_depth", "greater than or equal to 1"]),
        ("pipeline_depth: 65", ["transports[0].powermta.pipeline_depth", "less than or equal to 64"]),
        ("pipeline_depth: deep", ["transports[0].powermta.pipeline_depth", "'deep'", "integer"]),
    ],
)
def test_a_bad_pipeline_depth_is_refused_naming_the_file_and_the_field(workspace, setting, expected):
    assert_refused(workspace, PMTA % setting, expected)


def test_a_transport_pipeline_depth_sets_what_each_connection_holds(workspace):
    from email_engine_resources.transports import PowerMtaResource

    workspace.tenant("acme", GOOD + PMTA % "pipeline_depth: 16")
    config = load_workspace(workspace.root).tenants["acme"].transports[0]
    assert PowerMtaResource().injection(config).config().pipeline_depth == 16
    workspace.tenant("acme", GOOD + PMTA % "connections: 2")
    config = load_workspace(workspace.root).tenants["acme"].transports[0]
    assert config.pipeline_depth is None and PowerMtaResource().injection(config).config().pipeline_depth == 4
