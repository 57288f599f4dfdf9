"""mailwizz_subscribers: a diff-based sync of sendable contacts into standing MailWizz lists (loopback stand-in)."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from email_engine_assets.sync.assets import mailwizz_subscribers
from email_engine_assets.sync.diff import plan_sync, standing_list_name, with_list_names
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import MailwizzResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.mailwizz_server import MailwizzState, running_mailwizz

KEY_ENV = "ACME_MAILWIZZ_KEY"

PEOPLE = [
    # email, first name, category, language, verdict
    ("ann@example.com", "Ann", "shoes", "fr", "valid"),
    ("bob@example.com", "Bob", "shoes", "fr", "valid"),
    ("cid@example.com", "Cid", None, "en", "valid"),
    ("dan@example.com", "Dan", "shoes", "fr", "invalid"),
    ("eve@example.com", "Eve", "hats", "de", "risky"),
]


@pytest.fixture
def mailwizz(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-public-key")
    with running_mailwizz(MailwizzState()) as (url, state):
        yield url, state


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("tenant", ["acme"])
        yield inst


def tenant_file(workspace, url: str, *, sync: bool = True) -> None:
    sync_block = "    sync:\n      from_name: Acme\n      from_email: news@acme.example\n" if sync else ""
    workspace.tenant("acme", f"""\
id: acme
name: Acme
sources:
  - id: crm
transports:
  - name: mw
    kind: mailwizz
    base_url: {url}
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
    retries: 1
{sync_block}""")


def seed(engine, people=PEOPLE) -> dict[str, int]:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x') ON CONFLICT DO NOTHING"))
        ids = {}
        for email, first, category, language, verdict in people:
            cid = conn.execute(
                sa.text("INSERT INTO contacts (tenant_id, email, first_name, category, language) VALUES ('acme', :e, :f, :c, :l)"
                        " RETURNING contact_id"),
                {"e": email, "f": first, "c": category, "l": language},
            ).scalar_one()
            conn.execute(sa.text("INSERT INTO email_validations (tenant_id, contact_id, email, verdict, syntax_ok)"
                                 " VALUES ('acme', :c, :e, :v, true)"), {"c": cid, "e": email, "v": verdict})
            ids[email] = cid
    return ids


def sync(instance, config: dict | None = None):
    return dg.materialize(
        [mailwizz_subscribers], partition_key="acme", instance=instance,
        resources={"db": PostgresResource(), "workspace": WorkspaceResource(), "mailwizz": MailwizzResource()},
        run_config={"ops": {"mailwizz_subscribers": {"config": config or {}}}},
    )


def members(state: MailwizzState) -> dict[str, dict[str, str]]:
    """{list name: {email: status}}"""
    return {v["name"]: {s["EMAIL"]: s["status"] for s in v["subscribers"].values()} for v in state.lists.values()}


def test_list_names_per_category_and_language():
    assert standing_list_name("", "acme", "Shoes & Boots", "fr") == "acme.shoes-boots.fr"
    assert standing_list_name("mw-", "acme", None, "en") == "mw-acme.general.en"


def test_sendable_contacts_go_to_standing_lists_and_a_rerun_pushes_nothing(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    seed(engine)
    result = sync(instance)
    meta = result.asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["added"].value == 3
    assert members(state) == {
        "acme.shoes.fr": {"ann@example.com": "confirmed", "bob@example.com": "confirmed"},
        "acme.general.en": {"cid@example.com": "confirmed"},
    }
    calls = len(state.calls)
    again = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert again["added"].value == 0 and again["updated"].value == 0
    assert len(state.calls) == calls  # nothing changed: no call at all
    assert KEY_ENV not in str(meta) and "test-public-key" not in str(meta)


def test_only_changed_rows_are_pushed(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    seed(engine)
    sync(instance)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE contacts SET first_name = 'Annie' WHERE email = 'ann@example.com'"))
    state.calls.clear()
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["updated"].value == 1 and meta["added"].value == 0
    assert [c[0] for c in state.calls] == ["PUT"]
    (ann,) = [s for v in state.lists.values() for s in v["subscribers"].values() if s["EMAIL"] == "ann@example.com"]
    assert ann["FNAME"] == "Annie"


def test_suppressed_contacts_are_unsubscribed_and_never_resubscribed(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    seed(engine)
    sync(instance)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', 'bob@example.com', 'unsubscribed')"))
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["unsubscribed"].value == 1
    assert members(state)["acme.shoes.fr"]["bob@example.com"] == "unsubscribed"
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM suppressions"))
    sync(instance)
    assert members(state)["acme.shoes.fr"]["bob@example.com"] == "unsubscribed"


def test_contacts_that_leave_the_sendable_set_or_move_list_are_removed(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    seed(engine)
    sync(instance)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE email_validations SET verdict = 'invalid' WHERE email = 'ann@example.com'"))
        conn.execute(sa.text("UPDATE contacts SET category = 'hats' WHERE email = 'cid@example.com'"))
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["removed"].value == 2 and meta["added"].value == 1
    assert members(state) == {
        "acme.shoes.fr": {"bob@example.com": "confirmed"},
        "acme.general.en": {},
        "acme.hats.en": {"cid@example.com": "confirmed"},
    }


def test_an_erased_contact_is_deleted_from_mailwizz(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    ids = seed(engine)
    sync(instance)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM contacts WHERE contact_id = :c"), {"c": ids["ann@example.com"]})
        assert conn.execute(sa.text("SELECT count(*) FROM mailwizz_subscribers WHERE contact_id IS NULL")).scalar_one() == 1
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["erased_removed"].value == 1
    assert "ann@example.com" not in members(state)["acme.shoes.fr"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mailwizz_subscribers")).scalar_one() == 2


def test_a_crash_after_the_push_before_the_state_write_recovers_without_duplicates(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    seed(engine)
    sync(instance)
    with engine.begin() as conn:  # as if the run died after the calls, before its commit
        conn.execute(sa.text("DELETE FROM mailwizz_subscribers"))
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["added"].value == 3
    assert sum(len(v) for v in members(state).values()) == 3
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mailwizz_subscribers WHERE state = 'subscribed'")).scalar_one() == 3


def test_a_blacklisted_address_is_recorded_as_refused_and_not_retried(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    state.blacklist.add("cid@example.com")
    tenant_file(workspace, url)
    seed(engine)
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["refused"].value == 1
    with engine.connect() as conn:
        detail = conn.execute(sa.text("SELECT detail FROM mailwizz_subscribers WHERE state = 'refused'")).scalar_one()
    assert "blacklisted" in detail
    state.calls.clear()
    sync(instance)
    assert state.calls == []


def test_an_address_mailwizz_holds_as_unsubscribed_is_never_pushed_and_becomes_a_suppression(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    seed(engine)
    sync(instance)
    shoes = state.list_by_name("acme.shoes.fr")
    for sub in shoes["subscribers"].values():  # they left through MailWizz, before any poll told us
        if sub["EMAIL"] in ("bob@example.com", "ann@example.com"):
            sub["status"] = "unsubscribed" if sub["EMAIL"] == "bob@example.com" else "blacklisted"
    with engine.begin() as conn:  # the state is lost (a crash before its write): the next sync pushes them again
        conn.execute(sa.text("DELETE FROM mailwizz_subscribers"))
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert (meta["held_out"].value, meta["suppressed"].value, meta["added"].value) == (2, 2, 1)
    assert members(state)["acme.shoes.fr"] == {"ann@example.com": "blacklisted", "bob@example.com": "unsubscribed"}
    with engine.connect() as conn:
        made = dict(conn.execute(sa.text("SELECT email, reason FROM suppressions WHERE tenant_id = 'acme'")).all())
        rows = dict(conn.execute(sa.text("SELECT state, count(*) FROM mailwizz_subscribers GROUP BY 1")).all())
    assert made == {"bob@example.com": "unsubscribed", "ann@example.com": "bounced"}
    assert rows == {"unsubscribed": 2, "subscribed": 1}
    state.calls.clear()
    sync(instance)
    assert members(state)["acme.shoes.fr"]["bob@example.com"] == "unsubscribed" and state.calls == []


def test_an_address_mailwizz_does_not_take_is_refused_as_bad_address_and_the_rest_goes_on(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url)
    seed(engine, [*PEOPLE, ("jos\u00e9@example.com", "Jose", "shoes", "fr", "valid")])
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert (meta["added"].value, meta["bad_address"].value) == (3, 1)
    with engine.connect() as conn:
        detail = conn.execute(sa.text("SELECT detail FROM mailwizz_subscribers WHERE state = 'refused'")).scalar_one()
    assert detail.startswith("bad_address: MailWizz does not take it for an email address")


def test_a_forced_double_opt_in_list_keeps_its_subscribers_unconfirmed_and_says_so(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    state.force_optin = True
    tenant_file(workspace, url)
    seed(engine)
    sync(instance)
    assert members(state)["acme.shoes.fr"] == {"ann@example.com": "unconfirmed", "bob@example.com": "unconfirmed"}
    with engine.connect() as conn:
        details = set(conn.execute(sa.text("SELECT detail FROM mailwizz_subscribers")).scalars())
    assert details == {"unconfirmed: MailWizz waits for the person's confirmation (the list forces double opt-in)"}


def test_instances_without_sync_settings_are_left_alone(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    tenant_file(workspace, url, sync=False)
    seed(engine)
    meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
    assert meta["instances"].value == 0 and state.calls == []


def test_a_missing_key_fails_the_run_naming_the_variable_not_a_value(engine, workspace, instance, mailwizz, monkeypatch):
    url, _ = mailwizz
    tenant_file(workspace, url)
    seed(engine)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(dg.Failure, match=KEY_ENV):
        sync(instance)


def test_the_plan_is_a_pure_diff():
    candidates = pl.DataFrame(
        {"contact_id": [1, 2, 3], "email": ["a@x.io", "b@x.io", "c@x.io"], "email_sha256": ["a", "b", "c"],
         "first_name": ["A", "B", "C"], "last_name": [None, None, None], "category": ["k", "k", "k"],
         "language": ["en", "en", "en"], "row_sha256": ["1", "2", "3"], "sendable": [True, True, False],
         "suppressed": [False, True, False]})
    named = with_list_names(candidates, "", "t")
    state = pl.DataFrame(
        {"contact_id": [2, 3], "list_name": ["t.k.en", "t.k.en"], "email_sha256": ["b", "c"], "list_uid": ["L", "L"],
         "subscriber_uid": ["s2", "s3"], "state": ["subscribed", "subscribed"], "row_sha256": ["2", "3"]})
    plan = plan_sync(named, state)
    assert plan.counts() == {"add": 1, "update": 0, "unsubscribe": 1, "remove": 1}
    assert plan.add["contact_id"].to_list() == [1] and plan.remove["contact_id"].to_list() == [3]


def test_every_synced_instance_of_the_tenant_gets_its_own_lists_and_state(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    with running_mailwizz(MailwizzState()) as (url2, state2):
        block = "    sync:\n      from_name: Acme\n      from_email: news@acme.example\n"
        workspace.tenant("acme", f"""\
id: acme
name: Acme
sources:
  - id: crm
transports:
  - {{name: mw-eu, kind: mailwizz, base_url: "{url}", api_key: {{env: {KEY_ENV}}}, allow_private: true}}
  - name: mw-us
    kind: mailwizz
    base_url: "{url2}"
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
{block}""")
        seed(engine)
        sync(instance)
        assert state.calls == []  # mw-eu has no sync block
        assert sum(len(v) for v in members(state2).values()) == 3
        workspace.tenant("acme", f"""\
id: acme
name: Acme
sources:
  - id: crm
transports:
  - name: mw-eu
    kind: mailwizz
    base_url: "{url}"
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
    sync: {{from_name: Acme, from_email: news@acme.example, list_prefix: "eu-"}}
  - name: mw-us
    kind: mailwizz
    base_url: "{url2}"
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
{block}""")
        state2.calls.clear()
        meta = sync(instance).asset_materializations_for_node("mailwizz_subscribers")[0].metadata
        assert meta["per_instance"].value["mw-eu"]["added"] == 3 and "added" not in meta["per_instance"].value["mw-us"]
        assert set(members(state)) == {"eu-acme.shoes.fr", "eu-acme.general.en"}
        assert state2.calls == []
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT instance, count(*) FROM mailwizz_subscribers GROUP BY instance")).all())
    assert rows == {"mw-eu": 3, "mw-us": 3}


def test_an_unreachable_instance_fails_the_run_after_the_others_are_synced(engine, workspace, instance, mailwizz):
    url, state = mailwizz
    workspace.tenant("acme", f"""\
id: acme
name: Acme
sources:
  - id: crm
transports:
  - name: down
    kind: mailwizz
    base_url: "http://127.0.0.1:9/api"
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
    retries: 0
    sync: {{from_name: Acme, from_email: news@acme.example}}
  - name: up
    kind: mailwizz
    base_url: "{url}"
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
    sync: {{from_name: Acme, from_email: news@acme.example}}
""")
    seed(engine)
    with pytest.raises(dg.Failure, match="'down'.*cannot connect") as caught:
        sync(instance)
    assert "test-public-key" not in str(caught.value)
    assert sum(len(v) for v in members(state).values()) == 3
