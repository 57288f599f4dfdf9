"""``email-engine campaign ...``, ``suppress`` and ``unsuppress``: JSON counts, exit 3 when blocked, --override."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import cli
from email_engine_assets.campaigns.assets import TRANSPORT_TAG
from email_engine_assets.campaigns.parts import Problem
from email_engine_resources import postgres as database
from email_engine_tests.campaign_parts import (
    Late,
    SimpleComposers,
    StaticAudience,
    add_contacts,
    campaign_defs,
    outbox_recipients,
    write_campaign,
)


@pytest.fixture
def cli_camp(engine, workspace, scratch_database, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", database.dagster_driver_url(scratch_database))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    workspace.tenant("acme")
    ids = add_contacts(engine, "acme", ["ann@example.com", "bob@example.com", "cy@example.com"])
    state = {"composers": SimpleComposers()}
    state["defs"] = campaign_defs(StaticAudience({"vip": ids}), Late(state, "composers"))
    write_campaign(workspace.root, "acme", "spring")
    yield state
    os.environ.pop("DAGSTER_HOME", None)


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_send_json_counts_the_whole_campaign(cli_camp, capsys, tmp_path):
    assert cli.main(["campaign", "send", "acme.spring", "--json"], definitions=cli_camp["defs"]) == 0
    data = _json(capsys)
    assert data == {"campaign": "acme.spring", "state": "completed", "audience": 3, "queued": 0, "sent": 3, "handed_off": 0,
                    "failed": 0, "unknown": 0, "skipped": {"suppressed": 0, "no_template": 0, "render_error": 0, "bad_address": 0, "cancelled": 0},
                    "blocked": [], "failures": [], "warnings": []}
    assert data["audience"] == sum(v for k, v in data.items() if k in ("queued", "sent", "handed_off", "failed", "unknown")) + sum(data["skipped"].values())
    assert outbox_recipients(tmp_path / "home" / "outbox") == ["ann@example.com", "bob@example.com", "cy@example.com"]
    assert cli.main(["campaign", "show", "acme.spring", "--json"], definitions=cli_camp["defs"]) == 0
    assert _json(capsys)["state"] == "completed"
    with dg.DagsterInstance.get() as instance:  # the send is a Dagster run of the instance (visible in the UI)
        [run] = instance.get_runs(limit=1)
    assert run.job_name == "campaign_send_job" and run.tags[TRANSPORT_TAG] == "acme.outbox"


def test_a_blocked_send_exits_3_with_the_check_and_override_goes_on(cli_camp, capsys):
    cli_camp["composers"] = SimpleComposers(problems=[Problem("templates/acme/news.yaml", 7, "fname", "undefined variable")])
    assert cli.main(["campaign", "send", "acme.spring", "--json"], definitions=cli_camp["defs"]) == 3
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["blocked"] == [{"check": "preflight_renders", "reason": "1 rendering problem(s): templates/acme/news.yaml:7: fname: undefined variable"}]
    assert data["state"] == "draft" and data["sent"] == 0
    assert "BLOCKED by preflight_renders" in captured.err and "--override preflight_renders" in captured.err
    assert cli.main(["campaign", "send", "acme.spring", "--json", "--override", "preflight_renders"], definitions=cli_camp["defs"]) == 0
    sent = _json(capsys)
    assert sent["sent"] == 3 and sent["blocked"] == [] and set(sent) == set(data)  # one shape, blocked or sent
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(limit=1)
    # the override is kept in the run config, as the Launchpad shows and takes it
    assert run.run_config["ops"]["campaign_audiences"]["config"]["overrides"] == ["preflight_renders"]


def test_list_pause_cancel_and_refusals(cli_camp, capsys):
    assert cli.main(["campaign", "list", "acme"], definitions=cli_camp["defs"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["acme.spring", "draft"]
    assert cli.main(["campaign", "pause", "acme.spring"], definitions=cli_camp["defs"]) == 1
    assert "cannot pause a draft campaign" in capsys.readouterr().err
    assert cli.main(["campaign", "cancel", "acme.spring", "--json"], definitions=cli_camp["defs"]) == 0
    assert _json(capsys)["state"] == "cancelled"
    assert cli.main(["campaign", "send", "acme.spring"], definitions=cli_camp["defs"]) == 1
    assert "cancelled" in capsys.readouterr().err
    assert cli.main(["campaign", "send", "acme.nope"], definitions=cli_camp["defs"]) == 1
    assert "no campaign file campaigns/acme/nope.yaml" in capsys.readouterr().err


def test_suppress_and_unsuppress_by_the_address_key(cli_camp, capsys, engine):
    assert cli.main(["suppress", "acme", "Ann@Example.COM"], definitions=cli_camp["defs"]) == 0
    assert capsys.readouterr().out.strip() == "ann@example.com: suppressed"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT email, reason FROM suppressions")).all() == [("ann@example.com", "manual")]
    assert cli.main(["suppress", "acme", "not an address"], definitions=cli_camp["defs"]) == 1
    assert "not a valid email address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["suppress", "acme", "bob@example.com", "--reason", "erased"], definitions=cli_camp["defs"])
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', 'bob@example.com', 'erased')"))
    capsys.readouterr()
    assert cli.main(["unsuppress", "acme", "ann@example.com"], definitions=cli_camp["defs"]) == 0
    assert "suppression (manual) lifted" in capsys.readouterr().out
    assert cli.main(["unsuppress", "acme", "bob@example.com"], definitions=cli_camp["defs"]) == 0  # an erasure is not lifted
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT email FROM suppressions")).scalars().all() == ["bob@example.com"]


@pytest.mark.parametrize("workers", ["many", "-1", "65", "2.5"])
def test_a_bad_compose_workers_setting_fails_the_send_naming_it_before_any_row_leaves(cli_camp, capsys, engine, monkeypatch, workers):
    monkeypatch.setenv("EMAIL_ENGINE_COMPOSE_WORKERS", workers)
    assert cli.main(["campaign", "send", "acme.spring", "--json"], definitions=cli_camp["defs"]) != 0
    captured = capsys.readouterr()
    assert "EMAIL_ENGINE_COMPOSE_WORKERS must be a whole number from 0 to 64" in captured.out + captured.err
    with engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT state, count(*) FROM campaign_sends WHERE campaign = 'spring' GROUP BY state")).all())
    assert "sent" not in states and "sending" not in states, states
