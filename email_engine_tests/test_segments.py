"""Segments: the config section, the SQL translation (against the polars matcher), snapshots."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences import store
from email_engine_assets.audiences.matcher import match_expr, with_contact_fields
from email_engine_assets.audiences.regex_dialect import (
    REGEX_MAX_CHARS,
    portability_error,
    postgres_regex,
)
from email_engine_assets.audiences.segments import Segment
from email_engine_assets.audiences.selection import Condition
from email_engine_assets.audiences.tag_rules import evaluate_tag_rules
from email_engine_assets.tenancy.config import ConfigError, parse_tenant
from email_engine_tests.test_tag_rules import POOLS, parse_tag_rules, random_condition, random_rules

# --- the regex dialect ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "translated"),
    [
        (r"\.fr$", r"\.fr$"),
        ("a.b", "a[^\\n]b"),
        ("[.]x", "[.]x"),
        ("(?:ab|c){2,3}?", "(?:ab|c){2,3}?"),
        (r"[^\]a-c]\n\t", r"[^\]a-c]\n\t"),
        ("[]a]", r"[\]a]"),
    ],
)
def test_portable_patterns_are_translated(pattern, translated):
    assert postgres_regex(pattern) == translated


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        (r"\bfr", "word boundaries"),
        (r"\d+", "[0-9]"),
        (r"\w", "[a-z0-9_]"),
        (r"\p{L}", "Unicode classes"),
        ("(?i)fr", "(?:"),
        ("(?P<x>a)", "(?:"),
        ("[[:alpha:]]", "inside a class"),
        ("[a&&b]", "set operation"),
        ("a{300}", "above 255"),
        ("(a{1,255}){1,255}", "multiply to 65025"),  # PostgreSQL: "regular expression is too complex"
        ("^+a", "must follow a character"),  # Rust reads it, PostgreSQL refuses it
        ("a{x", "must start a count"),
        ("[abc", "unclosed '['"),
        ("x" * (REGEX_MAX_CHARS + 1), "at most"),
        # nested unbounded repetition: PostgreSQL takes seconds to minutes to compile these
        ("(.*.*.*.*){255}z", "nested unbounded repetition: the quantifier at position 10 repeats the group at position 0"),
        ("(.*.*){2}", "nested unbounded repetition"),
        ("(a+)+", "nested unbounded repetition"),
        ("(.*)*", "nested unbounded repetition"),
        ("(x|[a-z]*){255}", "nested unbounded repetition"),
        ("(?:a{2,})*", "nested unbounded repetition"),
        ("((a)+){2,}", "nested unbounded repetition"),
        ("(?:x(a+)b){1,3}", "nested unbounded repetition"),
    ],
)
def test_unportable_patterns_are_refused_with_a_reason(pattern, needle):
    problem = portability_error(pattern)
    assert problem is not None and needle in problem


@pytest.mark.parametrize("pattern", ["(a+)?", "(a+){1}", "(a+){0,1}", "(ab){1,3}", "(a|b)*c+", "(a{1,5}){1,5}", "a+b*(c)+"])
def test_repetition_that_does_not_nest_without_bound_is_portable(pattern):
    assert portability_error(pattern) is None


# --- the config section -----------------------------------------------------------------

BASE = "id: acme\nname: Acme\nsources: [{id: crm}]\n"


def parse(text: str):
    return parse_tenant(Path("tenants/acme.yaml"), BASE + text)


def test_seed_campaign_targeting_is_expressible():
    tenant = parse(
        """segments:
  - name: salon_fr_vip
    all:
      - {field: category, equals: B2B}
      - {field: tags, contains_all: [VIP, "Salon 2024"]}
      - {field: country, in: [FR, be]}
    any: [{field: tags, contains_any: [paris, lyon]}]
    exclude: [{field: tags, contains_any: [competitor]}]
    verdicts: [valid, Risky]
    max_contacts: 500
"""
    )
    (segment,) = tenant.segments
    assert tenant.segment("salon_fr_vip") is segment
    assert segment.all[1].operator == ("contains_all", ["vip", "salon_2024"])
    assert segment.all[2].operator == ("in", ["fr", "be"])
    assert segment.verdicts == ["valid", "risky"] and segment.max_contacts == 500


def test_defaults_and_a_hash_independent_of_spelling():
    one = Segment.model_validate({"name": "s", "all": [{"field": "country", "equals": "FR"}]})
    two = Segment.model_validate({"name": "s", "all": [{"field": "country", "equals": " fr"}], "verdicts": ["valid"]})
    three = Segment.model_validate({"name": "s", "all": [{"field": "country", "equals": "DE"}]})
    assert one.verdicts == ["valid"] and one.max_contacts is None
    assert one.definition_hash == two.definition_hash != three.definition_hash


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("segments:\n  - name: a\n  - name: a\n", ["segments[1].name", "duplicate segment name"]),
        ("segments:\n  - name: Bad Name\n", ["segments[0].name", "slug-like", "'bad_name'"]),
        ("segments:\n  - name: a\n    all: [{field: county, equals: FR}]\n", ["segments[0].all[0].field", "unknown field 'county'"]),
        ("segments:\n  - name: a\n    verdicts: [invalid]\n", ["segments[0].verdicts", "never mailed"]),
        ("segments:\n  - name: a\n    verdicts: [great]\n", ["segments[0].verdicts", "unknown verdict 'great'"]),
        ("segments:\n  - name: a\n    verdicts: []\n", ["segments[0].verdicts"]),
        ("segments:\n  - name: a\n    max_contacts: 0\n", ["segments[0].max_contacts", "greater than or equal to 1"]),
        ("segments:\n  - name: a\n    max_contacts: '10'\n", ["segments[0].max_contacts"]),
        ("segments:\n  - name: a\n    size: 3\n", ["segments[0].size", "unknown key"]),
        ("segments:\n  - name: a\n    all: [{field: city, regex: '\\d'}]\n", ["segments[0].all[0].regex", "[0-9]"]),
        ("segments:\n  - name: ok\n  - name: slow\n    all: [{field: email, regex: '(.*.*.*.*){255}z'}]\n",
         ["segments[1].all[0].regex", "segment 'slow'", "nested unbounded repetition"]),
        ("segment_build: {timeout_seconds: 0}\n", ["segment_build.timeout_seconds", "greater than 0"]),
        ("segment_build: {timeout_seconds: 301}\n", ["segment_build.timeout_seconds", "less than or equal to 300"]),
        ("segment_build: {timeout: 3}\n", ["segment_build.timeout", "unknown key"]),
    ],
)
def test_config_errors_name_the_path(text, needles):
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert "tenants/acme.yaml" in message
    for needle in needles:
        assert needle in message, message


def test_segment_build_timeout_defaults_to_30_seconds():
    assert parse("").segment_build.timeout_seconds == 30
    assert parse("segment_build: {timeout_seconds: 2.5}\n").segment_build.timeout_seconds == 2.5


def test_too_many_conditions_are_refused():
    conditions = ", ".join("{field: city, equals: x}" for _ in range(51))
    with pytest.raises(ConfigError, match=r"segments\[0\]\.all"):
        parse(f"segments:\n  - name: a\n    all: [{conditions}]\n")


# --- database fixtures ------------------------------------------------------------------

FIELDS = ("first_name", "last_name", "full_name", "company", "phone", "country", "language", "city", "category", "website")
EXTRA_VALUES = {
    "city": ["\u00a0Paris\u3000", "ÉVRY", "a\nb", "Zoë-Straße"],
    "company": ["Acme\u2003", "[x]", "a.b", "A-B"],
    "first_name": ["ÅSA", "  "],
}
# contacts.tags holds tag slugs and contacts.sources source ids (both slugs), as the pipeline writes them
SOURCES = ["salon-2024", "web", "crm", "import_csv"]
TAGS = ["vip", "b2b", "competitor", "salon_ete", "newsletter", "salon_2024"]
FLAG_COLUMNS = {"disposable": "disposable", "role_account": "role_account", "free_mail": "free_mail"}


def insert_tenant(conn: sa.Connection, tenant: str = "acme") -> None:
    conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x') ON CONFLICT DO NOTHING"),
                 {"t": tenant})


def insert_contacts(conn: sa.Connection, rows: list[dict[str, Any]], tenant: str = "acme") -> list[int]:
    """Contacts with their validation (verdict, flags) and enrichment (country, language) when given."""
    insert_tenant(conn, tenant)
    ids = []
    for row in rows:
        contact = {name: row.get(name) for name in FIELDS} | {
            "email": row["email"], "tags": row.get("tags", []), "sources": row.get("sources", []), "t": tenant}
        contact_id = conn.execute(
            sa.text(
                f"""INSERT INTO contacts (tenant_id, email, tags, sources, {', '.join(FIELDS)})
                    VALUES (:t, :email, :tags, :sources, {', '.join(':' + f for f in FIELDS)}) RETURNING contact_id"""
            ),
            contact,
        ).scalar_one()
        ids.append(contact_id)
        if row.get("verdict") is not None:
            flags = set(row.get("flags", []))
            conn.execute(
                sa.text(
                    """INSERT INTO email_validations (tenant_id, contact_id, email, verdict, syntax_ok, disposable,
                                                      role_account, free_mail, typo_suggestion)
                       VALUES (:t, :c, :e, :v, true, :d, :r, :f, :typo)"""
                ),
                {"t": tenant, "c": contact_id, "e": row["email"], "v": row["verdict"], "d": "disposable" in flags,
                 "r": "role_account" in flags, "f": "free_mail" in flags, "typo": "x" if "typo" in flags else None},
            )
        if row.get("enriched_language") is not None:
            conn.execute(
                sa.text(
                    """INSERT INTO contact_enrichment (tenant_id, contact_id, language, language_rule, country, inputs_sha256)
                       VALUES (:t, :c, :l, 'test', :country, 'x')"""
                ),
                {"t": tenant, "c": contact_id, "l": row["enriched_language"], "country": row.get("enriched_country")},
            )
    return ids


def matcher_frame(conn: sa.Connection, tenant: str = "acme") -> pl.DataFrame:
    """What the polars matcher reads for the tenant: the tag rules' reader, plus contacts.tags."""
    ids = conn.execute(sa.text("SELECT min(contact_id), max(contact_id) FROM contacts WHERE tenant_id = :t"),
                       {"t": tenant}).one()
    fields = store.contacts_for_rules(conn, tenant, (ids[0], ids[1]))
    tags = pl.DataFrame(
        conn.execute(sa.text("SELECT contact_id, tags FROM contacts WHERE tenant_id = :t"), {"t": tenant}).all(),
        schema={"contact_id": pl.Int64, "tags": pl.List(pl.String)}, orient="row",
    )
    return with_contact_fields(fields.join(tags, on="contact_id"))


def polars_members(frame: pl.DataFrame, segment: Segment) -> list[int]:
    verdicts = Condition(field="verdict", **{"in": segment.verdicts})
    expr = match_expr([*segment.all, verdicts], segment.any, segment.exclude)
    return frame.filter(expr)["contact_id"].sort().to_list()


def sql_members(conn: sa.Connection, segment: Segment, tenant: str = "acme") -> list[int]:
    sql, params = store.select_segment_sql(segment)
    return sorted(conn.execute(sa.text(sql), {**params, "tenant": tenant}).scalars())


# --- the SQL translation agrees with the matcher ------------------------------------------

REGEX_PIECES = ["a", "e", "r", "fr", "@", "-", ".", r"\.", r"\-", "[a-f]", "[^0-9]", "[0-9]", r"[\]x]", "(a|e)", "^", "$", "é", "ß", "b"]
QUANTIFIERS = ["", "", "", "*", "+", "?", "{1,2}", "*?", "+?", "{2}"]


def random_regex(rng: random.Random) -> str:
    while True:
        pattern = "".join(rng.choice(REGEX_PIECES) + rng.choice(QUANTIFIERS) for _ in range(rng.randint(1, 3)))
        pattern = re.sub(r"^([*+?{])", r"a\1", pattern)
        try:
            Condition.model_validate({"field": "city", "regex": pattern})
            return pattern
        except ValueError:
            continue


def random_segment_conditions(rng: random.Random) -> dict[str, Any]:
    def one() -> dict[str, Any]:
        raw = random_condition(rng)
        if "regex" in raw and rng.random() < 0.7:
            raw["regex"] = random_regex(rng)
        if raw["field"] in ("company", "city", "first_name") and "equals" in raw and rng.random() < 0.5:
            raw["equals"] = rng.choice(EXTRA_VALUES[raw["field"]]).strip() or "x"
        return raw

    segment: dict[str, Any] = {part: [one() for _ in range(rng.randint(0, 2))] for part in ("all", "any", "exclude")}
    segment["verdicts"] = rng.sample(["valid", "risky", "unknown"], rng.randint(1, 3))
    return segment


def random_rows(rng: random.Random, size: int) -> list[dict[str, Any]]:
    rows = []
    for number in range(size):
        row: dict[str, Any] = {}
        for name in FIELDS:
            pool = POOLS[name] + EXTRA_VALUES.get(name, [])
            row[name] = rng.choice(pool)
        domain = rng.choice(["acme.fr", "Gmail.com", "shop.de", "x.FR", "ex-ample.io"])
        row["email"] = f"u{number}.{rng.choice(['ann', 'bob', 'zoé'])}@{domain}"
        row["tags"] = rng.sample(TAGS, rng.randint(0, 3))
        row["sources"] = sorted(rng.sample(SOURCES, rng.randint(0, 3)))
        row["verdict"] = rng.choice(["valid", "valid", "risky", "unknown", "invalid", None])
        row["flags"] = rng.sample(["disposable", "role_account", "free_mail", "typo"], rng.randint(0, 2))
        if rng.random() < 0.5:
            row["enriched_language"] = rng.choice(["fr", "en", "de"])
            row["enriched_country"] = rng.choice(["FR", "de", None])
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", [11, 2026, 5, 77, 1234])
def test_sql_evaluation_agrees_with_the_polars_matcher(engine, seed):
    rng = random.Random(seed)
    with engine.begin() as conn:
        insert_contacts(conn, random_rows(rng, 400))
        store.refresh_segment_profiles(conn, "acme")
        frame = matcher_frame(conn)
        sizes = []
        for number in range(120):
            segment = Segment.model_validate({"name": f"s{number}", **random_segment_conditions(rng)})
            expected = polars_members(frame, segment)
            assert sql_members(conn, segment) == expected, segment.definition()
            sizes.append(len(expected))
    assert sum(1 for n in sizes if 0 < n < 400) > 40  # the random segments do select, and not everyone


@pytest.mark.parametrize(("seed", "count"), [(3, 25), (2027, 25), (90, 2), (41, 0)])
def test_tag_rules_in_sql_agree_with_the_polars_evaluation(engine, seed, count):
    """The tag sync's rules, run in PostgreSQL, assign exactly what evaluate_tag_rules gives on the same contacts
    (with few rules, only the fields they test are computed)."""
    rng = random.Random(seed)
    rules = parse_tag_rules(random_rules(rng, count) + [{"name": "by_tag", "tag": "Seen", "any": [{"field": "tags", "contains": "vip"}]}])
    with engine.begin() as conn:
        ids = insert_contacts(conn, random_rows(rng, 300))
        manual = pl.DataFrame([(i, t, "manual") for i in ids for t in rng.sample(TAGS, rng.randint(0, 1))],
                              schema=store.ASSIGNMENT_SCHEMA, orient="row")
        imported = pl.DataFrame([(i, t, "import:crm") for i in ids for t in rng.sample(TAGS, rng.randint(0, 2))],
                                schema=store.ASSIGNMENT_SCHEMA, orient="row")
        conn.execute(sa.text("INSERT INTO tag_assignments (tenant_id, contact_id, tag, provenance) VALUES ('acme', :c, :t, :p)"),
                     [{"c": c, "t": t, "p": p} for c, t, p in manual.rows()])
        fields = store.contacts_for_rules(conn, "acme", (ids[0], ids[-1]))
        base = pl.concat([imported, manual]).group_by("contact_id").agg(tags=pl.col("tag").unique().sort())
        fields = fields.join(base, on="contact_id", how="left").with_columns(pl.col("tags").fill_null(pl.lit([], pl.List(pl.String))))
        ruled = evaluate_tag_rules(fields, rules)
        counts = store.sync_ruled_tags(conn, "acme", imported, rules, (ids[0], ids[-1]))
        stored = set(conn.execute(sa.text("SELECT contact_id, tag, provenance FROM tag_assignments")).all())
        tags = dict(conn.execute(sa.text("SELECT contact_id, tags FROM contacts")).all())
    expected = {(c, t, "rule:" + r) for c, t, r in ruled.rows()} | set(imported.rows()) | set(manual.rows())
    assert stored == expected
    assert {k: n for k, n in counts.items() if k.startswith("rule:") and n} == {
        "rule:" + r: n for r, n in ruled.group_by("rule").len().rows()}
    assert tags == {i: sorted({t for c, t, _ in expected if c == i}) for i in ids}
    assert 0 < ruled.height < len(rules) * 300 and ruled.filter(pl.col("rule") == "by_tag").height > 0


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ({"field": "city", "regex": "a.b"}, "a\nb", False),  # '.' never matches a newline, in both
        ({"field": "city", "regex": "a[^x]b"}, "a\nb", True),
        ({"field": "city", "regex": "^paris$"}, "\u00a0Paris\u3000", True),  # Unicode spaces trimmed
        ({"field": "city", "regex": "STRASSE"}, "straße", False),
        ({"field": "city", "regex": "ÉVRY"}, "évry", True),
        ({"field": "city", "regex": r"[\]]"}, "a]", True),
        ({"field": "company", "regex": r"\[x\]"}, "[x]", True),
        ({"field": "city", "equals": "ÉVRY"}, "Évry ", True),
    ],
)
def test_dialect_edges_agree(engine, condition, value, expected):
    segment = Segment.model_validate({"name": "s", "all": [condition]})
    with engine.begin() as conn:
        insert_contacts(conn, [{"email": "a@x.fr", "city": value, "company": value, "verdict": "valid"}])
        store.refresh_segment_profiles(conn, "acme")
        got_polars = polars_members(matcher_frame(conn), segment)
        got_sql = sql_members(conn, segment)
    assert got_sql == got_polars
    assert bool(got_sql) is expected


def test_values_are_bound_never_written_into_the_sql():
    segment = Segment.model_validate(
        {"name": "s", "all": [{"field": "city", "equals": "x'); DROP TABLE contacts; --"}],
         "any": [{"field": "tags", "contains_any": ["a"]}, {"field": "company", "regex": "'"}]}
    )
    sql, params = store.select_segment_sql(segment)
    assert "DROP" not in sql and "'" not in sql.replace("''", "")
    assert "x'); drop table contacts; --" in params.values()


# --- snapshots ------------------------------------------------------------------------------

def people(count: int, **common: Any) -> list[dict[str, Any]]:
    return [{"email": f"p{n}@x.fr", "verdict": "valid", "country": "FR", "tags": ["vip"], **common} for n in range(count)]


def test_build_excludes_suppressed_counts_them_and_caps_in_contact_order(engine):
    with engine.begin() as conn:
        ids = insert_contacts(conn, people(6) + [{"email": "r@x.fr", "verdict": "risky", "country": "FR", "tags": ["vip"]},
                                                 {"email": "n@x.fr", "country": "FR", "tags": ["vip"]}])
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', 'p1@x.fr', 'unsubscribed'),"
                             " ('acme', 'p3@x.fr', 'bounced'), ('acme', 'elsewhere@x.fr', 'manual')"))
        segment = Segment.model_validate({"name": "fr_vip", "all": [{"field": "country", "equals": "fr"},
                                                                     {"field": "tags", "contains": "VIP"}],
                                          "max_contacts": 3})
        counts = store.build_segment(conn, "acme", segment)
        members = store.segment_members(conn, "acme", "fr_vip")
        snapshot = store.current_snapshot(conn, "acme", "fr_vip")
    assert members == [ids[0], ids[2], ids[4]]  # p1, p3 suppressed; r risky; n not checked; capped at 3
    assert counts["matched"] == 6 and counts["suppressed_excluded"] == 2 and counts["members"] == 3 and counts["capped"] == 1
    assert counts["per_verdict"] == {"valid": 3} and counts["per_language"] == {"": 3}
    assert snapshot.members == 3 and snapshot.suppressed_excluded == 2 and snapshot.definition_hash == segment.definition_hash


def test_a_new_definition_replaces_every_member_and_the_schema_refuses_a_mix(engine):
    with engine.begin() as conn:
        ids = insert_contacts(conn, people(3) + [{"email": "de@x.fr", "verdict": "valid", "country": "DE", "tags": []}])
        france = Segment.model_validate({"name": "s", "all": [{"field": "country", "equals": "fr"}]})
        germany = Segment.model_validate({"name": "s", "all": [{"field": "country", "equals": "de"}]})
        store.build_segment(conn, "acme", france)
        counts = store.build_segment(conn, "acme", germany)
        rows = conn.execute(sa.text("SELECT contact_id, definition_hash FROM segment_members")).all()
        assert rows == [(ids[3], germany.definition_hash)]
        assert counts["removed"] == 3 and counts["added"] == 1
        with pytest.raises(sa.exc.IntegrityError, match="segment_members"), conn.begin_nested():
            conn.execute(sa.text("INSERT INTO segment_members VALUES ('acme', 's', :c, :h)"),
                         {"c": ids[0], "h": france.definition_hash})


def test_same_definition_writes_only_the_difference(engine):
    segment = Segment.model_validate({"name": "s", "all": [{"field": "tags", "contains": "vip"}]})
    with engine.begin() as conn:
        ids = insert_contacts(conn, people(4))
        store.build_segment(conn, "acme", segment)
        conn.execute(sa.text("UPDATE contacts SET tags = '{}' WHERE contact_id = :c"), {"c": ids[1]})
        again = store.build_segment(conn, "acme", segment)
        unchanged = store.build_segment(conn, "acme", segment)
        assert store.segment_members(conn, "acme", "s") == [ids[0], ids[2], ids[3]]
    assert (again["added"], again["removed"]) == (0, 1)
    assert (unchanged["added"], unchanged["removed"]) == (0, 0)


def test_members_read_in_batches_and_a_rebuild_with_another_definition_is_noticed(engine):
    with engine.begin() as conn:
        ids = insert_contacts(conn, people(5))
        segment = Segment.model_validate({"name": "s"})
        store.build_segment(conn, "acme", segment)
        snapshot = store.current_snapshot(conn, "acme", "s")
        first = store.segment_members(conn, "acme", "s", limit=2, definition_hash=snapshot.definition_hash)
        second = store.segment_members(conn, "acme", "s", after_contact_id=first[-1], limit=2,
                                       definition_hash=snapshot.definition_hash)
        assert first + second == ids[:4]
        store.build_segment(conn, "acme", Segment.model_validate({"name": "s", "verdicts": ["valid", "risky"]}))
        with pytest.raises(store.SnapshotChanged, match="rebuilt with another definition"):
            store.segment_members(conn, "acme", "s", after_contact_id=second[-1], limit=2,
                                  definition_hash=snapshot.definition_hash)
        assert store.current_snapshot(conn, "acme", "missing") is None
        with pytest.raises(ValueError, match="limit"):
            store.segment_members(conn, "acme", "s", limit=0)


def test_tenants_are_isolated_and_erased_contacts_leave_the_snapshot(engine):
    segment = Segment.model_validate({"name": "s"})
    with engine.begin() as conn:
        acme = insert_contacts(conn, people(2))
        globex = insert_contacts(conn, people(2), tenant="globex")
        store.build_segment(conn, "acme", segment)
        assert store.segment_members(conn, "acme", "s") == acme
        assert store.segment_members(conn, "globex", "s") == []
        conn.execute(sa.text("DELETE FROM contacts WHERE contact_id = :c"), {"c": acme[0]})
        assert store.segment_members(conn, "acme", "s") == [acme[1]]
        store.build_segment(conn, "globex", segment)
        assert store.segment_members(conn, "globex", "s") == globex
        assert store.drop_segments_except(conn, "acme", []) == ["s"]
        assert store.current_snapshot(conn, "acme", "s") is None and store.segment_members(conn, "globex", "s") == globex


def test_a_build_that_fails_halfway_leaves_the_previous_snapshot_whole(engine):
    france = Segment.model_validate({"name": "s", "all": [{"field": "country", "equals": "fr"}]})
    germany = Segment.model_validate({"name": "s", "all": [{"field": "country", "equals": "de"}]})
    with engine.begin() as conn:
        ids = insert_contacts(conn, people(2) + [{"email": "de@x.fr", "verdict": "valid", "country": "DE"}])
        store.build_segment(conn, "acme", france)
    with engine.begin() as conn:  # the members' insert fails after the old members were deleted
        conn.execute(sa.text("ALTER TABLE segment_members ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"))
    try:
        with pytest.raises(sa.exc.IntegrityError, match="refuse_all"), engine.begin() as conn:
            store.build_segment(conn, "acme", germany)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE segment_members DROP CONSTRAINT refuse_all"))
    with engine.connect() as conn:
        assert store.segment_members(conn, "acme", "s") == ids[:2]
        assert store.current_snapshot(conn, "acme", "s").definition_hash == france.definition_hash


# PostgreSQL takes minutes to compile this one (measured: over 20 s on an empty string); the checker
# cannot see it (no unbounded part nests), the build's time limit stops it.
SLOW_PATTERN = "(.?.?.?.?){255}z"


def test_a_segment_past_its_time_limit_fails_naming_it_and_keeps_its_previous_snapshot(engine):
    assert portability_error(SLOW_PATTERN) is None
    before = Segment.model_validate({"name": "slow", "all": [{"field": "country", "equals": "fr"}]})
    slow = Segment.model_validate({"name": "slow", "all": [{"field": "email", "regex": SLOW_PATTERN}]})
    with engine.begin() as conn:
        ids = insert_contacts(conn, people(2))
        store.build_segment(conn, "acme", before, timeout_seconds=1)
        # the limit holds for the evaluation only: the connection's own setting is back afterwards
        assert conn.execute(sa.text("SELECT current_setting('statement_timeout')")).scalar_one() == "0"
    started = time.perf_counter()
    with pytest.raises(store.SegmentBuildFailed) as caught, engine.begin() as conn:
        store.build_segment(conn, "acme", slow, timeout_seconds=1)
    elapsed = time.perf_counter() - started
    assert elapsed < 5, elapsed
    assert caught.value.segment == "slow"
    assert str(caught.value).startswith("segment 'slow': its evaluation was stopped after 1 s (segment_build.timeout_seconds")
    assert "previous snapshot (if any) is kept" in str(caught.value)
    with engine.connect() as conn:
        assert store.segment_members(conn, "acme", "slow") == ids
        assert store.current_snapshot(conn, "acme", "slow").definition_hash == before.definition_hash


def test_a_pathological_pattern_fails_even_when_no_row_reaches_it(engine):
    """PostgreSQL compiles a pattern at its first use: a build that no row reaches must not pass now and hang later."""
    unreached = Segment.model_validate({"name": "unreached", "all": [
        {"field": "country", "equals": "zz"}, {"field": "email", "regex": SLOW_PATTERN},
    ]})
    with engine.begin() as conn:
        insert_contacts(conn, people(2))
    started = time.perf_counter()
    with pytest.raises(store.SegmentBuildFailed) as caught, engine.begin() as conn:
        store.build_segment(conn, "acme", unreached, timeout_seconds=1)
    assert time.perf_counter() - started < 5
    assert str(caught.value).startswith("segment 'unreached': its evaluation was stopped after 1 s")
