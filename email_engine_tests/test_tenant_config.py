"""Tenant YAML validation: errors name the file, the path inside it, the bad value and what is expected."""

from __future__ import annotations

import pytest

from email_engine_assets.tenancy.config import ConfigError, load_workspace

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


def assert_error_names(workspace, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_workspace(workspace.root)
    message = str(err.value)
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


def test_duplicate_source_ids_and_id_mismatch(workspace):
    workspace.tenant("acme", GOOD + "  - id: crm\n")
    workspace.tenant("globex", GOOD)
    with pytest.raises(ConfigError) as err:
        load_workspace(workspace.root)
    message = str(err.value)
    assert "duplicate source id: crm" in message
    assert "globex.yaml" in message and "must equal the file name 'globex'" in message


def test_yaml_syntax_error_is_reported(workspace):
    workspace.tenant("acme", "id: acme\nsources: [\n")
    with pytest.raises(ConfigError, match=r"acme.yaml: not valid YAML"):
        load_workspace(workspace.root)


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
