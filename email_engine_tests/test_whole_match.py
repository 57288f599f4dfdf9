"""Names and other whole values are matched in full: Python's ``$`` also matches before a trailing
newline, so ``"acme\\n"`` passed every ``^...$`` check that used ``re.match``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from email_engine_assets.campaigns.files import split_key
from email_engine_assets.feedback.webhook_payloads import campaign_of
from email_engine_assets.tenancy.config import ConfigError, parse_tenant
from email_engine_assets.tenancy.strict import is_slug

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["acme\n", "acme\r\n", "\nacme", "ac me", "Acme", "-acme", "", "a" * 65])
def test_what_is_not_a_slug(value):
    assert not is_slug(value)


@pytest.mark.parametrize("value", ["acme", "a", "acme_2-b", "0" * 64])
def test_what_is_a_slug(value):
    assert is_slug(value)


def test_a_tenant_id_with_a_trailing_newline_is_refused():
    with pytest.raises(ConfigError, match="id"):
        parse_tenant(Path("tenants/acme\n.yaml"), 'id: "acme\\n"\nname: Acme\n')


def test_campaign_keys_and_mailwizz_campaign_names_with_a_trailing_newline_are_refused():
    with pytest.raises(ValueError, match="a campaign is named"):
        split_key("acme.spring\n")
    with pytest.raises(ValueError, match="a campaign is named"):
        split_key("acme\n.spring")
    assert split_key("acme.spring") == ("acme", "spring")
    assert campaign_of("acme.spring\n.welcome", "acme") is None
    assert campaign_of("acme.spring.welcome", "acme") == "spring"


def _anchored_with_dollar(node: ast.AST, constants: dict[str, ast.AST]) -> bool:
    if isinstance(node, ast.Name):
        node = constants.get(node.id, node)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr) and all(isinstance(part, ast.Constant) for part in node.values[:1] + node.values[-1:]):
        text = node.values[0].value + node.values[-1].value
    else:
        return False
    return text.startswith("^") and text.endswith("$") and not text.endswith("\\$")


def test_no_whole_value_pattern_of_python_re_ends_in_a_dollar():
    """A pattern ``^...$`` given to ``re`` (compile, match, search, fullmatch) must end in ``\\Z``
    (or be used with ``fullmatch`` and no ``$``). Polars' and pydantic's patterns (Rust regex,
    where ``$`` is the end of the text) are not concerned."""
    found = []
    for path in sorted((ROOT / "email_engine_assets").rglob("*.py")) + sorted((ROOT / "email_engine_resources").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                    and node.func.attr in {"compile", "match", "search", "fullmatch"} and node.args
                    and _anchored_with_dollar(node.args[0], constants)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
