"""Tag rules: the rule model, the one matcher (ALL / ANY / EXCLUDE) and the evaluation."""

from __future__ import annotations

import random
import re
from typing import Any

import polars as pl
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from email_engine_assets.audiences.matcher import (
    condition_expr,
    fold_contact_fields,
    match_expr,
    with_contact_fields,
)
from email_engine_assets.audiences.selection import CONTACT_FIELDS, Condition
from email_engine_assets.audiences.tag_rules import (
    DuplicateRuleName,
    TagRule,
    TagRuleList,
    evaluate_tag_rules,
    validate_rule_names,
)
from email_engine_assets.tenancy.tag_slug import tag_slug


class TagRulesSection(BaseModel):
    """The ``tag_rules:`` section alone, so errors carry the same ``loc`` as in the tenant file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag_rules: TagRuleList = []


def parse_tag_rules(data: Any) -> list[TagRule]:
    """Validate a raw ``tag_rules:`` value; error ``loc`` reads ``('tag_rules', <position>, ...)``."""
    return TagRulesSection.model_validate({"tag_rules": [] if data is None else data}).tag_rules


BRIEF_YAML = r"""
tag_rules:
  - name: french_b2b
    tag: "B2B France"
    all:
      - {field: country, equals: FR}
      - {field: category, in: [b2b, pro]}
    any:
      - {field: company, exists: true}
      - {field: email_domain, regex: "\\.fr$"}
    exclude:
      - {field: verdict, in: [invalid]}
      - {field: tags, contains: competitor}
"""


def holds(condition: dict[str, Any], column: str, values: list[Any], dtype: pl.DataType | None = None) -> list[bool]:
    """Evaluate one condition on a one-column contact frame, one value per row.

    Checks on the way that the folded-once frame gives the same answer.
    """
    frame = with_contact_fields(pl.DataFrame({column: values}, schema={column: dtype} if dtype else None))
    cond = Condition.model_validate(condition)
    result = frame.select(condition_expr(cond))[:, 0].to_list()
    assert fold_contact_fields(frame).select(condition_expr(cond, folded=True))[:, 0].to_list() == result
    return result


# --- operators, field kinds, nulls, case --------------------------------------------

STRING = pl.String
STRINGS = pl.List(pl.String)

OPERATOR_CASES = [
    # (condition, column, values, dtype, expected)
    ({"field": "country", "equals": "FR"}, "country", ["FR", " fr ", "Fr", "DE", "FRA", None], STRING,
     [True, True, True, False, False, False]),
    ({"field": "country", "equals": " fr "}, "country", ["FR", "de"], STRING, [True, False]),
    ({"field": "category", "in": ["B2B", "pro"]}, "category", ["b2b", "PRO ", "b2c", "", None], STRING,
     [True, True, False, False, False]),
    ({"field": "email_domain", "regex": r"\.fr$"}, "email_domain", ["Example.FR", "x.com", "fr.com", None], STRING,
     [True, False, False, False]),
    ({"field": "company", "regex": "acme"}, "company", ["The ACME Corp", "Acne", None], STRING,
     [True, False, False]),
    ({"field": "phone", "regex": r"^\+33"}, "phone", ["+33612345678", " +33 6", "0033", None], STRING,
     [True, True, False, False]),
    ({"field": "company", "exists": True}, "company", ["Acme", "  ", "", None], STRING, [True, False, False, False]),
    ({"field": "company", "exists": False}, "company", ["Acme", "  ", "", None], STRING, [False, True, True, True]),
    ({"field": "language", "equals": "fr"}, "language", [None, None], pl.Null, [False, False]),
    ({"field": "language", "exists": False}, "language", [None, None], pl.Null, [True, True]),
    ({"field": "tags", "contains": "Salon Été"}, "tags", [["salon_ete"], ["SALON_ETE "], ["salon"], [], None, [None]],
     STRINGS, [True, True, False, False, False, False]),
    ({"field": "tags", "contains_any": ["vip", "b2b"]}, "tags", [["b2b", "x"], ["vip"], ["x"], [], None], STRINGS,
     [True, True, False, False, False]),
    ({"field": "tags", "contains_all": ["vip", "b2b"]}, "tags", [["b2b", "vip"], ["vip"], ["x"], None], STRINGS,
     [True, False, False, False]),
    ({"field": "tags", "exists": True}, "tags", [["a"], [], ["", " "], None], STRINGS, [True, False, False, False]),
    ({"field": "tags", "exists": False}, "tags", [["a"], [], ["", " "], None], STRINGS, [False, True, True, True]),
    ({"field": "flags", "contains": "Role_Account"}, "flags", [["role_account"], ["free_mail"], None], STRINGS,
     [True, False, False]),
    ({"field": "flags", "contains_any": ["disposable", "typo"]}, "flags", [["typo"], ["free_mail"], []], STRINGS,
     [True, False, False]),
    ({"field": "sources", "contains": "Salon-2024.csv"}, "sources", [["salon-2024.csv"], ["salon_2024.csv"]], STRINGS,
     [True, False]),
    ({"field": "sources", "contains_all": ["a.csv", "b.csv"]}, "sources", [["B.csv", "a.csv"], ["a.csv"]], STRINGS,
     [True, False]),
    ({"field": "source", "equals": "WEB"}, "sources", [["salon", " web"], ["salon"], [], None], STRINGS,
     [True, False, False, False]),
    ({"field": "source", "in": ["crm", "web"]}, "sources", [["CRM"], ["salon"], None], STRINGS, [True, False, False]),
    ({"field": "source", "regex": "^salon"}, "sources", [["web", "Salon 2024"], ["web"], None], STRINGS,
     [True, False, False]),
    ({"field": "source", "exists": True}, "sources", [["web"], [], None], STRINGS, [True, False, False]),
    ({"field": "verdict", "in": ["invalid", "risky"]}, "verdict", ["INVALID", "valid", None], STRING,
     [True, False, False]),
]


@pytest.mark.parametrize(("condition", "column", "values", "dtype", "expected"), OPERATOR_CASES)
def test_operator_on_field_kind(condition, column, values, dtype, expected) -> None:
    assert holds(condition, column, values, dtype) == expected


def test_unicode_case_folding() -> None:
    assert holds({"field": "city", "equals": "ÉVRY"}, "city", ["évry", "evry"]) == [True, False]
    assert holds({"field": "city", "regex": "^é"}, "city", ["Évry", "Evry"]) == [True, False]


def test_missing_columns_are_null() -> None:
    frame = with_contact_fields(pl.DataFrame({"contact_id": [1]}))
    for field in CONTACT_FIELDS:
        assert frame.select(condition_expr(Condition(field=field, exists=False))).item() is True
        assert frame.select(condition_expr(Condition(field=field, exists=True))).item() is False
    assert frame.select(condition_expr(Condition(field="country", equals="fr"))).item() is False


def test_email_domain_defaults_to_the_domain_of_email() -> None:
    frame = pl.DataFrame({"email": ["jo@Mail.Example.fr", "no-at-sign", None]})
    assert with_contact_fields(frame)["email_domain"].to_list() == ["Mail.Example.fr", None, None]
    assert holds({"field": "email_domain", "equals": "mail.example.fr"}, "email", ["jo@mail.example.FR", "x@y.fr"]) == [
        True,
        False,
    ]


def test_sources_default_to_a_source_string_column() -> None:
    assert holds({"field": "source", "equals": "web"}, "source", ["Web", "crm", None]) == [True, False, False]


def test_columns_of_other_types_are_read_as_text() -> None:
    assert holds({"field": "phone", "equals": "33612"}, "phone", [33612, 1], pl.Int64) == [True, False]
    assert holds({"field": "category", "in": ["b2b"]}, "category", ["b2b", "b2c"], pl.Categorical) == [True, False]
    assert holds({"field": "tags", "contains": "vip"}, "tags", [[], []], pl.List(pl.Null)) == [False, False]


@pytest.mark.parametrize(
    ("frame", "column"),
    [
        (pl.DataFrame({"tags": ["vip;b2b"]}), "tags"),
        (pl.DataFrame({"flags": [1]}), "flags"),
        (pl.DataFrame({"country": [["FR"]]}), "country"),
    ],
)
def test_unusable_column_types_are_named(frame: pl.DataFrame, column: str) -> None:
    with pytest.raises(ValueError, match=f"'{column}'"):
        with_contact_fields(frame)


def test_conditions_store_normalised_values() -> None:
    assert Condition.model_validate({"field": "country", "equals": " FR "}).operator == ("equals", "fr")
    in_condition = Condition.model_validate({"field": "category", "in": ["B2B", "b2b ", "Pro"]})
    assert in_condition.operator == ("in", ["b2b", "pro"])
    assert Condition.model_validate({"field": "tags", "contains_all": ["Salon Été", "VIP"]}).operator == (
        "contains_all",
        ["salon_ete", "vip"],
    )
    assert Condition.model_validate({"field": "phone", "equals": 33}).operator == ("equals", "33")
    assert Condition.model_validate({"field": "city", "regex": "^Év"}).operator == ("regex", "^Év")


# --- ALL / ANY / EXCLUDE -------------------------------------------------------------

SEED_CASES = [
    # (contact tags, all, any, exclude, expected) -- the seed's find_by_tags semantics
    (["vip", "france", "b2b"], ["vip", "b2b"], [], [], True),
    (["vip", "france"], ["vip", "b2b"], [], [], False),
    (["france"], [], ["vip", "france"], [], True),
    (["germany"], [], ["vip", "france"], [], False),
    (["vip", "b2b"], ["vip"], [], ["b2b"], False),
    (["vip"], ["vip"], [], ["b2b"], True),
    (["vip", "france", "b2b"], ["vip"], ["france", "spain"], ["competitor"], True),
    (["vip", "spain", "competitor"], ["vip"], ["france", "spain"], ["competitor"], False),
    ([], [], [], [], True),
    ([], [], [], ["b2b"], True),
    ([], ["vip"], [], [], False),
    (["VIP", "Salon Été"], ["vip"], ["salon_ete"], [], True),
]


@pytest.mark.parametrize(("tags", "all_", "any_", "exclude", "expected"), SEED_CASES)
def test_seed_tag_semantics(tags, all_, any_, exclude, expected) -> None:
    frame = pl.DataFrame({"tags": [[tag_slug(tag) for tag in tags]]}, schema={"tags": STRINGS})

    def on_tags(tags_: list[str]) -> list[Condition]:
        return [Condition(field="tags", contains=tag) for tag in tags_]

    as_conditions = match_expr(on_tags(all_), on_tags(any_), on_tags(exclude))
    assert with_contact_fields(frame).select(as_conditions).item() is expected


def test_combinations_over_fields() -> None:
    frame = with_contact_fields(
        pl.DataFrame(
            {
                "country": ["FR", "FR", "FR", "DE", "FR", "FR"],
                "company": ["Acme", None, None, "Acme", "Acme", "Acme"],
                "email": ["a@x.fr", "b@x.fr", "c@x.com", "d@x.fr", "e@x.fr", "f@x.fr"],
                "verdict": ["valid", "valid", "valid", "valid", "invalid", None],
            }
        )
    )
    expr = match_expr(
        all=[Condition(field="country", equals="fr")],
        any=[Condition(field="company", exists=True), Condition(field="email_domain", regex=r"\.fr$")],
        exclude=[Condition(field="verdict", in_=["invalid"])],
    )
    # null verdict is not excluded: a condition on a null field is false
    assert frame.select(expr)[:, 0].to_list() == [True, True, False, False, False, True]
    assert frame.select(match_expr())[:, 0].to_list() == [True] * 6
    assert frame.filter(match_expr()).height == 6
    only_exclude = match_expr(exclude=[Condition(field="company", exists=True)])
    assert frame.select(only_exclude)[:, 0].to_list() == [False, True, True, False, False, False]




# --- rule evaluation -----------------------------------------------------------------


def test_brief_example_from_yaml() -> None:
    (rule,) = parse_tag_rules(yaml.safe_load(BRIEF_YAML)["tag_rules"])
    assert (rule.name, rule.tag) == ("french_b2b", "b2b_france")
    contacts = pl.DataFrame(
        {
            "contact_id": [10, 11, 12, 13, 14, 15],
            "email": ["a@shop.fr", "b@gmail.com", "c@x.FR", "d@x.fr", "e@x.fr", "f@y.fr"],
            "country": ["FR", "fr", "FR", "FR", "BE", "FR"],
            "category": ["b2b", "PRO", "pro", "b2b", "b2b", "b2c"],
            "company": [None, "Acme", None, None, None, "Acme"],
            "verdict": ["valid", None, "invalid", "valid", "valid", "valid"],
            "tags": [["vip"], None, [], ["competitor"], [], []],
        }
    )
    result = evaluate_tag_rules(contacts, [rule])
    assert result.schema == pl.Schema({"contact_id": pl.Int64, "tag": pl.String, "rule": pl.String})
    assert result.rows() == [(10, "b2b_france", "french_b2b"), (11, "b2b_france", "french_b2b")]


def test_evaluation_rows_come_in_rule_then_contact_order() -> None:
    rules = parse_tag_rules(
        [
            {"name": "fr", "tag": "France", "all": [{"field": "country", "equals": "fr"}]},
            {"name": "everyone_with_mail", "tag": "mail", "any": [{"field": "email", "exists": True}]},
            {"name": "fr_again", "tag": "France", "all": [{"field": "country", "in": ["fr"]}]},
        ]
    )
    contacts = pl.DataFrame({"contact_id": [3, 1, 2], "country": ["FR", "DE", "fr"], "email": ["a@b.c", None, "d@e.f"]},
                            schema_overrides={"contact_id": pl.Int32})
    assert evaluate_tag_rules(contacts, rules).rows() == [
        (3, "france", "fr"),
        (2, "france", "fr"),
        (3, "mail", "everyone_with_mail"),
        (2, "mail", "everyone_with_mail"),
        (3, "france", "fr_again"),
        (2, "france", "fr_again"),
    ]


def test_no_rules_or_no_contacts_give_an_empty_typed_frame() -> None:
    rule = parse_tag_rules([{"name": "r", "tag": "t", "all": [{"field": "city", "exists": False}]}])
    empty = pl.DataFrame({"contact_id": []}, schema={"contact_id": pl.Int64})
    for result in (evaluate_tag_rules(pl.DataFrame({"contact_id": [1]}), []), evaluate_tag_rules(empty, rule)):
        assert result.height == 0
        assert result.schema == pl.Schema({"contact_id": pl.Int64, "tag": pl.String, "rule": pl.String})


@pytest.mark.parametrize(
    ("contacts", "error", "needle"),
    [
        (pl.DataFrame({"id": [1]}), ValueError, "contact_id"),
        (pl.DataFrame({"contact_id": ["1"]}), ValueError, "contact_id"),
        (pl.DataFrame({"contact_id": [1], "tags": ["vip"]}), ValueError, "'tags'"),
        ({"contact_id": [1]}, TypeError, "DataFrame"),
    ],
)
def test_evaluation_refuses_bad_contacts(contacts, error, needle) -> None:
    rules = parse_tag_rules([{"name": "r", "tag": "t", "all": [{"field": "tags", "contains": "vip"}]}])
    with pytest.raises(error, match=needle):
        evaluate_tag_rules(contacts, rules)


def test_evaluation_refuses_duplicate_rule_names() -> None:
    rule = TagRule.model_validate({"name": "r", "tag": "t", "all": [{"field": "city", "exists": True}]})
    with pytest.raises(DuplicateRuleName, match="'r'"):
        evaluate_tag_rules(pl.DataFrame({"contact_id": [1]}), [rule, rule])
    with pytest.raises(ValueError, match="positions 0 and 1"):
        validate_rule_names([rule, rule])


# --- vectorised == per-row on a random frame ------------------------------------------

POOLS: dict[str, list[Any]] = {
    "email": ["ann@acme.fr", "Bob@Gmail.com", " zoe@shop.de ", "x@test.FR", "no-at", None],
    "first_name": ["Ann", "bob", "  Zoé", "", None],
    "last_name": ["Martin", "DURAND", None],
    "full_name": ["Ann Martin", "Bob Durand", None],
    "company": ["Acme", "acme ", "Globex", "   ", "", None],
    "phone": ["+33612345678", "+4930123", "0612", None],
    "city": ["Paris", "paris", "Évry", "Berlin", None],
    "country": ["FR", "fr", " Fr ", "DE", "BE", None],
    "language": ["fr", "EN", "de", None],
    "category": ["b2b", "B2B", "pro", "b2c", "", None],
    "verdict": ["valid", "invalid", "risky", "UNKNOWN", None],
    "website": ["https://acme.fr", "http://globex.com", None],
}
LIST_POOLS: dict[str, list[str | None]] = {
    "tags": ["vip", "b2b", "competitor", "salon_ete", "newsletter", None],
    "flags": ["disposable", "role_account", "FREE_MAIL", "typo"],
    "sources": ["Salon 2024", "web", "CRM", " import.csv"],
}
VALUES: dict[str, list[str]] = {
    field: [value.strip() for value in pool if isinstance(value, str) and value.strip()]
    + ["nothing"]
    for field, pool in POOLS.items()
}
REGEXES = [r"\.fr$", "^a", "o.*e", "[0-9]{4}", "an", "^$", "r"]


def random_contacts(rng: random.Random, size: int) -> pl.DataFrame:
    columns: dict[str, list[Any]] = {"contact_id": list(range(1, size + 1))}
    for field, pool in POOLS.items():
        if field != "email_domain":
            columns[field] = [rng.choice(pool) for _ in range(size)]
    for field, pool in LIST_POOLS.items():
        columns[field] = [None if rng.random() < 0.15 else rng.sample(pool, rng.randint(0, 3)) for _ in range(size)]
    schema = {name: pl.String for name in POOLS} | {name: STRINGS for name in LIST_POOLS} | {"contact_id": pl.Int64}
    return pl.DataFrame(columns, schema=schema)


def random_condition(rng: random.Random) -> dict[str, Any]:
    field = rng.choice([*POOLS, "email_domain", "source", *LIST_POOLS])
    if field in LIST_POOLS:
        pool = [value for value in LIST_POOLS[field] if value] + ["absent"]
        operator = rng.choice(["contains", "contains_any", "contains_all", "exists"])
        value: Any = {
            "contains": rng.choice(pool),
            "contains_any": rng.sample(pool, 2),
            "contains_all": rng.sample(pool, 2),
            "exists": rng.random() < 0.5,
        }[operator]
        return {"field": field, operator: value}
    pool = VALUES.get(field) or ["acme.fr", "gmail.com", "shop.de", "nothing"]
    if field == "source":
        pool = [value.strip() for value in LIST_POOLS["sources"] if value]
    operator = rng.choice(["equals", "in", "regex", "exists"])
    value = {
        "equals": rng.choice(pool).swapcase(),
        "in": rng.sample(pool, min(2, len(pool))),
        "regex": rng.choice(REGEXES),
        "exists": rng.random() < 0.5,
    }[operator]
    return {"field": field, operator: value}


def random_rules(rng: random.Random, count: int) -> list[dict[str, Any]]:
    rules = []
    for number in range(count):
        rule: dict[str, Any] = {"name": f"rule_{number}", "tag": f"Tag {number % 4}"}
        for part, low in (("all", 0), ("any", 0), ("exclude", 0)):
            rule[part] = [random_condition(rng) for _ in range(rng.randint(low, 2))]
        if not rule["all"] and not rule["any"]:
            rule["any"] = [random_condition(rng)]
        rules.append(rule)
    return rules


def row_condition(contact: dict[str, Any], raw: dict[str, Any]) -> bool:
    """Straightforward per-contact reading of one raw YAML condition."""
    field = raw["field"]
    ((operator, value),) = [(key, item) for key, item in raw.items() if key != "field"]
    if field == "email_domain":
        email = contact["email"]
        found = re.search(r"@([^@]+)$", email.strip()) if email is not None else None
        values = [found.group(1)] if found else []
    elif field in LIST_POOLS or field == "source":
        items = contact["sources" if field == "source" else field] or []
        values = [item for item in items if item is not None]
    else:
        values = [] if contact[field] is None else [contact[field]]
    trimmed = [item.strip() for item in values]
    if operator == "exists":
        return any(trimmed) is value
    fold = tag_slug if field == "tags" else (lambda text: text.strip().lower())
    if operator == "equals":
        return fold(value) in [item.lower() for item in trimmed]
    if operator == "in":
        return any(item.lower() in {fold(v) for v in value} for item in trimmed)
    if operator == "regex":
        return any(re.search(value, item, re.IGNORECASE) for item in trimmed)
    lowered = {item.lower() for item in trimmed}
    if operator == "contains":
        return fold(value) in lowered
    if operator == "contains_any":
        return any(fold(v) in lowered for v in value)
    return all(fold(v) in lowered for v in value)


def row_matches(contact: dict[str, Any], rule: dict[str, Any]) -> bool:
    return (
        all(row_condition(contact, cond) for cond in rule["all"])
        and (not rule["any"] or any(row_condition(contact, cond) for cond in rule["any"]))
        and not any(row_condition(contact, cond) for cond in rule["exclude"])
    )


@pytest.mark.parametrize("seed", [7, 2024])
def test_vectorised_evaluation_agrees_with_per_row_evaluation(seed: int) -> None:
    rng = random.Random(seed)
    contacts = random_contacts(rng, 2000)
    raw_rules = random_rules(rng, 25)
    result = evaluate_tag_rules(contacts, parse_tag_rules(raw_rules))
    expected = {
        (contact["contact_id"], tag_slug(rule["tag"]), rule["name"])
        for rule in raw_rules
        for contact in contacts.iter_rows(named=True)
        if row_matches(contact, rule)
    }
    assert set(result.rows()) == expected
    assert result.height == len(expected)
    matched_rules = {name for _, _, name in expected}
    assert len(matched_rules) > 10  # the random rules do select contacts
    assert len(expected) < 25 * 2000  # ... and not everyone


# --- validation errors ---------------------------------------------------------------

GOOD_CONDITION = {"field": "country", "equals": "FR"}


def rule_with(**changes: Any) -> dict[str, Any]:
    return {"name": "french_b2b", "tag": "B2B France", "all": [GOOD_CONDITION]} | changes


VALIDATION_CASES = [
    # (raw rules, loc of the error, words the message must hold)
    ([rule_with(all=[{"field": "county", "equals": "FR"}])], ("tag_rules", 0, "all", 0, "field"),
     ["unknown field 'county'", "allowed fields", "country", "email_domain", "flags"]),
    ([rule_with(all=[{"field": "country", "equal": "FR"}])], ("tag_rules", 0, "all", 0, "equal"),
     ["unknown key 'equal'", "equals"]),
    ([rule_with(colour="red")], ("tag_rules", 0, "colour"), ["unknown key 'colour'", "name, tag, all, any, exclude"]),
    ([rule_with(all=[{"field": "country", "equals": "FR", "in": ["DE"]}])], ("tag_rules", 0, "all", 0),
     ["exactly one", "found equals, in"]),
    ([rule_with(any=[{"field": "country"}])], ("tag_rules", 0, "any", 0), ["exactly one", "found none"]),
    ([rule_with(exclude=[{"field": "email", "regex": "(unclosed"}])], ("tag_rules", 0, "exclude", 0, "regex"),
     ["invalid regex '(unclosed'", "unclosed group"]),
    ([rule_with(all=[{"field": "email", "regex": "a(?=b)"}])], ("tag_rules", 0, "all", 0, "regex"),
     ["invalid regex", "look-around"]),
    ([rule_with(tag="  !! ")], ("tag_rules", 0, "tag"), ["tag '  !! '", "slug is empty"]),
    ([rule_with(), rule_with(tag="other")], ("tag_rules", 1, "name"), ["duplicate rule name", "positions 0 and 1"]),
    ([rule_with(all=[], any=[])], ("tag_rules", 0), ["at least one condition"]),
    ([rule_with(all=[], exclude=[GOOD_CONDITION])], ("tag_rules", 0), ["at least one condition"]),
    ([rule_with(name="French B2B")], ("tag_rules", 0, "name"), ["slug-like", "'french_b2b'"]),
    ([rule_with(all=[{"field": "tags", "equals": "vip"}])], ("tag_rules", 0, "all", 0),
     ["'tags' is a list", "contains"]),
    ([rule_with(all=[{"field": "city", "contains": "paris"}])], ("tag_rules", 0, "all", 0),
     ["'contains' applies to the list fields", "'city'"]),
    ([rule_with(all=[{"field": "country", "equals": False}])], ("tag_rules", 0, "all", 0, "equals"),
     ["boolean", "quote"]),
    ([rule_with(all=[{"field": "country", "in": "FR"}])], ("tag_rules", 0, "all", 0, "in"), ["list", "[FR]"]),
    ([rule_with(all=[{"field": "country", "in": []}])], ("tag_rules", 0, "all", 0, "in"), ["at least 1"]),
    ([rule_with(all=[{"field": "country", "equals": "  "}])], ("tag_rules", 0, "all", 0, "equals"),
     ["empty", "exists: false"]),
    ([rule_with(all=[{"field": "tags", "contains_any": ["vip", "%%"]}])], ("tag_rules", 0, "all", 0, "contains_any"),
     ["'%%'", "tag slug"]),
    ([rule_with(all=[{"field": "company", "exists": "maybe"}])], ("tag_rules", 0, "all", 0, "exists"),
     ["boolean"]),
]


@pytest.mark.parametrize(("rules", "loc", "words"), VALIDATION_CASES)
def test_validation_errors_name_the_rule_and_the_problem(rules, loc, words) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_tag_rules(rules)
    errors = caught.value.errors()
    assert [error["loc"] for error in errors] == [loc]
    message = errors[0]["msg"]
    assert message.startswith(f"rule {rules[-1]['name']!r}: ")
    for word in words:
        assert word in message


def test_several_errors_are_all_reported_with_their_own_rule() -> None:
    rules = [
        {"name": "one", "tag": "", "all": [GOOD_CONDITION]},
        {"name": "two", "tag": "x", "all": [{"field": "nope", "equals": "x"}], "any": [{"field": "city"}]},
        {"tag": "x", "all": [GOOD_CONDITION]},
    ]
    with pytest.raises(ValidationError) as caught:
        parse_tag_rules(rules)
    found = {error["loc"]: error["msg"] for error in caught.value.errors()}
    assert set(found) == {
        ("tag_rules", 0, "tag"),
        ("tag_rules", 1, "all", 0, "field"),
        ("tag_rules", 1, "any", 0),
        ("tag_rules", 2, "name"),
    }
    assert found[("tag_rules", 0, "tag")].startswith("rule 'one': ")
    assert found[("tag_rules", 1, "any", 0)].startswith("rule 'two': ")
    assert found[("tag_rules", 2, "name")] == "rule (unnamed): Field required"


def test_norway_must_be_quoted_in_yaml() -> None:
    unquoted = yaml.safe_load("- {name: norway, tag: nordic, all: [{field: country, equals: NO}]}")
    with pytest.raises(ValidationError, match="quote"):
        parse_tag_rules(unquoted)
    quoted = yaml.safe_load("- {name: norway, tag: nordic, all: [{field: country, equals: 'NO'}]}")
    assert parse_tag_rules(quoted)[0].all[0].operator == ("equals", "no")


def test_parse_accepts_an_absent_section_and_refuses_a_mapping() -> None:
    assert parse_tag_rules(None) == []
    with pytest.raises(ValidationError) as caught:
        parse_tag_rules({"name": "x"})
    assert caught.value.errors()[0]["loc"] == ("tag_rules",)


def test_a_standalone_condition_reports_unknown_keys_readably() -> None:
    with pytest.raises(ValidationError) as caught:
        Condition.model_validate({"field": "city", "equal": "Paris"})
    messages = [error["msg"] for error in caught.value.errors()]
    assert any(message.startswith("unknown key 'equal'; allowed keys: field, equals, in") for message in messages)
