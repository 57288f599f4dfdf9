"""The Dagster UI in a real browser: ``email-engine ui`` on a free port, driven in headless Chromium.

A small workspace whose campaign has really sent (addresses made valid by a loopback DNS server,
messages written by the outbox transport), then in the browser:

1. the global lineage, every group expanded: the asset nodes and edges the page draws form one
   graph with a path from the inbox (``contact_imports``) to the stats (``campaign_stats``), and
   they are exactly those the webserver's GraphQL endpoint serves to the page;
2. the ``campaign_sends`` partition of the campaign: the send counts of its materialization;
3. ``campaign_pause_job`` launched from the Launchpad with typed run config (the Launchpad refuses
   the empty config first) pauses a campaign in the middle of a send that went through the daemon's
   run queue; the run page shows the run succeed, and the campaign is paused with one message out
   and its other rows still queued.

Screenshots of each step go to ``$EMAIL_ENGINE_ARTIFACTS/ui/`` (default: ``artifacts/ui/`` in the
repository, ignored by git). Needs Debian's ``chromium`` and the Playwright package (the ``[test]``
extra; no browser download): skipped without them, except with ``CI=true``, where a missing piece
fails the test (``.ci/run`` installs ``chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_resources import postgres as database
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_tests.dns_server import LoopbackDnsServer, TestZone
from email_engine_tests.graphs import components as graph_components
from email_engine_tests.smtp_server import free_port

pytestmark = pytest.mark.browser

EMAIL_ENGINE = str(Path(sys.executable).parent / "email-engine")
ARTIFACTS_ENV = "EMAIL_ENGINE_ARTIFACTS"
# Debian's chromium as root on a closed network: no sandbox (root), no GPU, nothing reached on its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LOCATION = "email_engine"
SENT = "acme.spring"  # sent in full before the UI starts
SENDING = "acme.slow"  # one message a minute: still sending when the pause is launched
ADDRESSES = ("ann@good.example", "bob@good.example", "cy@good.example")
COUNT_KEYS = ("state", "audience", "queued", "sent", "handed_off", "failed", "unknown")
UI_READY_S = 120
TIMEOUT_MS = 60_000


def artifacts_dir() -> Path:
    """Where the screenshots land: ``$EMAIL_ENGINE_ARTIFACTS/ui`` or ``<repository>/artifacts/ui``."""
    base = os.environ.get(ARTIFACTS_ENV, "").strip()
    return (Path(base) if base else PROJECT_ROOT / "artifacts") / "ui"


def _browser_parts() -> str:
    """The chromium executable; skips (fails with CI=true) naming what is missing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Playwright package (pip install -e '.[test]')")
    chromium = shutil.which("chromium")
    if not chromium:
        missing.append("chromium (apt-get install chromium; .ci/run installs it)")
    if missing:
        message = f"the browser test needs {' and '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return chromium


# --- the workspace: one tenant, its contacts imported and checked, two campaigns on the outbox ---------------

TENANT = """\
id: acme
name: Acme
default_language: en
default_category: b2b
sources:
  - id: crm
unsubscribe:
  base_url: https://unsubscribe.acme.example
  mailto: unsubscribe@acme.example
segments:
  - name: customers
    all: [{field: category, equals: b2b}]
    verdicts: [valid]
"""
TEMPLATE = """\
category: b2b
language: en
subject: "News for {{ first_name }}"
html: |
  <p>Hello {{ first_name }},</p>
  <p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""
CAMPAIGN = "segment: customers\ncategory: b2b\ntransport: outbox\nfrom_name: Acme\nfrom_email: news@acme.example\n"


def _write_workspace(root: Path) -> Path:
    for folder in ("tenants", "inbox/acme/crm", "templates/acme", "campaigns/acme"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tenants" / "acme.yaml").write_text(TENANT, encoding="utf-8")
    (root / "templates" / "acme" / "b2b_en.yaml").write_text(TEMPLATE, encoding="utf-8")
    (root / "campaigns" / "acme" / "spring.yaml").write_text(CAMPAIGN, encoding="utf-8")
    (root / "campaigns" / "acme" / "slow.yaml").write_text(CAMPAIGN + "rate_per_minute: 1\n", encoding="utf-8")
    return root


@pytest.fixture
def two_databases(db_url):
    """An application database and a Dagster storage database on the test server, dropped afterwards."""
    made = [database.with_database(db_url, f"{database.database_name(db_url)}_{kind}_{uuid.uuid4().hex[:6]}") for kind in ("app", "dg")]
    for url in made:
        database.ensure_database(url)
    yield made
    for url in made:
        database.drop_database(url)


def _email_engine(args: list[str], env: dict, timeout: float = 180) -> dict:
    done = subprocess.run([EMAIL_ENGINE, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"email-engine {' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop a process started in a session of its own and everything in its process group (``dagster
    dev`` outlives ``email-engine ui`` by the seconds it takes to stop its webserver, daemon and code servers)."""
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()  # reaps the leader, whose zombie would keep the group alive
            time.sleep(0.2)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["data"]


LOCATION_STATUS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _wait_for_ui(base: str, proc: subprocess.Popen, log: Path) -> None:
    """Until the webserver answers and the code location is loaded (its load error, if any, is shown)."""
    deadline = time.monotonic() + UI_READY_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"email-engine ui exited {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
        try:
            entries = _graphql(base, LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
        except (OSError, KeyError, TypeError, ValueError):
            time.sleep(0.5)
            continue
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            assert loaded["__typename"] == "RepositoryLocation", f"code location {LOCATION} failed to load: {loaded.get('message')}"
            return
        time.sleep(0.5)
    pytest.fail(f"the UI did not load code location {LOCATION} within {UI_READY_S} s:\n{log.read_text(errors='replace')[-4000:]}")


RUN_QUERY = '{ runOrError(runId: "%s") { ... on Run { jobName status runConfigYaml } } }'


def _campaign(app_url: str, key: str) -> tuple[str, dict[str, int]]:
    tenant_id, name = key.split(".", 1)
    with database.get_engine(app_url).connect() as conn:
        row = store.campaign_row(conn, tenant_id, name)
        return (row["state"] if row else "unknown campaign"), store.state_counts(conn, tenant_id, name)


def _wait_until_sending(app_url: str, proc: subprocess.Popen, key: str, log: Path, timeout: float = 90) -> None:
    """The campaign is ``running`` and its first message is out (the next waits for the rate; the
    message's outcome is recorded with the next exchange, so its row may still read ``sending``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the send of {key} ended before the pause (exit {proc.returncode}):\n{log.read_text(errors='replace')[-4000:]}")
        state, counts = _campaign(app_url, key)
        if state == "running" and counts.get("sent", 0) + counts.get("sending", 0) >= 1:
            return
        time.sleep(0.5)
    pytest.fail(f"{key} was not sending after {timeout} s: {_campaign(app_url, key)}")


# --- reading the page ---------------------------------------------------------------------------------------

# The asset graph as drawn: each asset node's name and box, each edge's first and last point.
RENDERED_GRAPH = """() => {
  const nodes = [];
  for (const box of document.querySelectorAll('svg foreignObject:not(.group)')) {
    const label = box.querySelector('[class*="assetName"] [data-tooltip]');
    if (!label) continue;
    nodes.push({name: label.getAttribute('data-tooltip'), x: +box.getAttribute('x'), y: +box.getAttribute('y'),
                w: +box.getAttribute('width'), h: +box.getAttribute('height')});
  }
  const edges = [];
  for (const path of document.querySelectorAll('svg path[marker-end^="url(#arrow"]')) {
    const n = (path.getAttribute('d') || '').match(/-?\\d+(\\.\\d+)?/g);
    if (n && n.length >= 4) edges.push([+n[0], +n[1], +n[n.length - 2], +n[n.length - 1]]);
  }
  return {nodes, edges};
}"""

# What the webserver serves the page: every asset and the assets it depends on.
SERVED_GRAPH = """async () => {
  const answer = await fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({query: '{ assetNodes { assetKey { path } dependencyKeys { path } } }'})});
  return (await answer.json()).data.assetNodes;
}"""

# The rows of the metadata table shown for the selected partition's latest materialization.
METADATA_ROWS = """() => {
  const rows = {};
  for (const tr of document.querySelectorAll('table tr')) {
    const cells = tr.querySelectorAll('td');
    if (cells.length >= 2) rows[cells[0].innerText.trim()] = cells[1].innerText.trim();
  }
  return rows;
}"""


def _edges_between_boxes(drawn: dict, slack: float = 15) -> set[tuple[str, str]]:
    """Each drawn edge as (upstream, downstream): it leaves the right side of one node's box and ends
    at the left side of another's (the horizontal layout)."""

    def nearest(x: float, y: float, side: str) -> str | None:
        best, name = slack, None
        for node in drawn["nodes"]:
            edge_x = node["x"] + node["w"] if side == "right" else node["x"]
            if node["y"] - slack <= y <= node["y"] + node["h"] + slack and abs(x - edge_x) <= best:
                best, name = abs(x - edge_x), node["name"]
        return name

    found = set()
    for x0, y0, x1, y1 in drawn["edges"]:
        source, target = nearest(x0, y0, "right"), nearest(x1, y1, "left")
        assert source and target, f"an edge from ({x0}, {y0}) to ({x1}, {y1}) joins no two drawn asset nodes"
        found.add((source, target))
    return found


def _downstream(start: str, edges: set[tuple[str, str]]) -> set[str]:
    reached, stack = {start}, [start]
    while stack:
        node = stack.pop()
        for a, b in edges:
            if a == node and b not in reached:
                reached.add(b)
                stack.append(b)
    return reached


def check_lineage(page, base: str, shots: Path) -> None:
    page.goto(f"{base}/asset-groups")
    page.locator("svg foreignObject.group").first.wait_for()
    served = page.evaluate(SERVED_GRAPH)
    served_nodes = {"/".join(a["assetKey"]["path"]) for a in served}
    served_edges = {("/".join(d["path"]), "/".join(a["assetKey"]["path"])) for a in served for d in a["dependencyKeys"]}
    page.keyboard.press("Alt+e")  # the graph's shortcut for "Expand all groups"
    page.wait_for_function(
        """([nodes, edges]) => {
          const drawn = [...document.querySelectorAll('svg foreignObject:not(.group) [class*="assetName"] [data-tooltip]')];
          return drawn.length === nodes && document.querySelectorAll('svg path[marker-end^="url(#arrow"]').length >= edges;
        }""",
        arg=[len(served_nodes), len(served_edges)],
    )
    page.wait_for_timeout(500)  # the last edges the graph's worker hands back
    page.screenshot(path=str(shots / "01-global-lineage.png"))
    drawn = page.evaluate(RENDERED_GRAPH)
    drawn_nodes = {n["name"] for n in drawn["nodes"]}
    drawn_edges = _edges_between_boxes(drawn)
    assert drawn_nodes == served_nodes, (sorted(drawn_nodes ^ served_nodes), "drawn vs served asset nodes differ")
    assert drawn_edges == served_edges, (sorted(drawn_edges ^ served_edges), "drawn vs served edges differ")
    components = graph_components(drawn_nodes, drawn_edges)
    assert len(components) == 1, f"the drawn lineage is {len(components)} unconnected pieces: {sorted(map(sorted, components))}"
    from_inbox = _downstream("contact_imports", drawn_edges)
    assert {"contacts", "segments", "campaign_audiences", "campaign_sends", "delivery_events", "suppressions",
            "campaign_stats"} <= from_inbox, f"not reached from the inbox: {sorted(drawn_nodes - from_inbox)}"


def check_partition_counts(page, base: str, shots: Path, sent: dict) -> None:
    page.goto(f"{base}/assets/campaign_sends?view=partitions&partition={SENT}")
    page.get_by_role("cell", name="handed_off", exact=True).wait_for()
    page.screenshot(path=str(shots / "02-campaign-sends-partition.png"), full_page=True)
    shown = page.evaluate(METADATA_ROWS)
    assert {k: shown.get(k) for k in COUNT_KEYS} == {k: str(sent[k]) for k in COUNT_KEYS}, shown
    assert json.loads(shown["skipped"]) == sent["skipped"]


def check_pause_from_the_launchpad(page, base: str, shots: Path, before_launch) -> str:
    """Typed run config that the Launchpad validates, then (once ``before_launch()`` returns) the run
    launched from it, followed on its run page until it succeeds; its run id."""
    page.goto(f"{base}/locations/{LOCATION}/jobs/campaign_pause_job/playground")
    editor = page.locator(".CodeMirror").first
    editor.wait_for()
    page.get_by_text('Missing required config entry "ops"').wait_for()  # empty config: refused before any run
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(f'ops:\n  campaign_pause:\n    config:\n      campaign: "{SENDING}"\n')
    page.get_by_text("No errors", exact=True).wait_for()
    page.screenshot(path=str(shots / "03-launchpad-campaign-pause.png"))
    before_launch()
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url("**/runs/*")
    run_id = page.url.split("/runs/")[1].split("?")[0].strip("/")
    ended = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first  # the run page's status tag
    ended.wait_for(timeout=2 * TIMEOUT_MS)
    page.screenshot(path=str(shots / "04-campaign-pause-run.png"))
    assert ended.inner_text() == "Success", f"run {run_id} of campaign_pause_job: {ended.inner_text()} (see the screenshot)"
    return run_id


@pytest.fixture(scope="session")
def chromium() -> str:
    """Checked before the database fixtures (session scope, first argument): a skip costs nothing."""
    return _browser_parts()


def test_the_ui_shows_one_lineage_a_campaigns_counts_and_pauses_a_send_from_the_launchpad(chromium, two_databases, tmp_path):
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    shots = artifacts_dir()
    shots.mkdir(parents=True, exist_ok=True)
    for old in [*shots.glob("*.png"), shots / "ui.log"]:
        old.unlink(missing_ok=True)
    app_url, dagster_url = two_databases
    workspace = _write_workspace(tmp_path / "workspace")
    drop = tmp_path / "customers.csv"
    drop.write_text("email,first_name\n" + "".join(f"{a},{a.split('@')[0].title()}\n" for a in ADDRESSES), encoding="utf-8")

    with LoopbackDnsServer(TestZone(mx={"good.example": [(10, "mx.good.example")]})) as dns:
        env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "EMAIL_ENGINE_EXECUTOR")}
        env.update(EMAIL_ENGINE_HOME=str(tmp_path / "home"), EMAIL_ENGINE_WORKSPACE=str(workspace),
                   EMAIL_ENGINE_DATABASE_URL=app_url, EMAIL_ENGINE_DAGSTER_DATABASE_URL=database.dagster_driver_url(dagster_url),
                   EMAIL_ENGINE_DNS_NAMESERVERS="127.0.0.1", EMAIL_ENGINE_DNS_PORT=str(dns.port))
        imported = _email_engine(["import", str(drop), "--tenant", "acme", "--source", "crm", "--json"], env)
        assert imported["new"] == len(ADDRESSES), imported
        sent = _email_engine(["campaign", "send", SENT, "--json"], env)
        assert sent["state"] == "completed" and sent["sent"] == len(ADDRESSES), sent  # valid addresses only: the DNS answered

        clock = {"sent": time.monotonic() - started}
        port = free_port("127.0.0.1")
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "ui.log"
        with log.open("wb") as sink:
            ui = subprocess.Popen([EMAIL_ENGINE, "ui", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=PROJECT_ROOT,
                                  stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        sending = None
        try:
            _wait_for_ui(base, ui, log)
            clock["ui ready"] = time.monotonic() - started
            # the second send goes through the run queue the UI's daemon dequeues, while the browser reads the first
            with (tmp_path / "sending.log").open("wb") as sink:
                sending = subprocess.Popen([EMAIL_ENGINE, "campaign", "send", SENDING, "--json"], env=env, cwd=PROJECT_ROOT,
                                           stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
                context = browser.new_context(viewport={"width": 3000, "height": 1800})  # the whole graph at a readable scale
                context.add_init_script("window.localStorage.setItem('communityNux', '1')")  # no newsletter dialog
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                step = "lineage"
                try:
                    check_lineage(page, base, shots)
                    clock["lineage"] = time.monotonic() - started
                    step = "partition counts"
                    page.set_viewport_size({"width": 1600, "height": 1000})
                    check_partition_counts(page, base, shots, sent)
                    clock["partition"] = time.monotonic() - started
                    step = "pause from the Launchpad"

                    def when_sending() -> None:
                        _wait_until_sending(app_url, sending, SENDING, tmp_path / "sending.log")
                        clock["sending"] = time.monotonic() - started

                    run_id = check_pause_from_the_launchpad(page, base, shots, when_sending)
                    clock["paused"] = time.monotonic() - started
                except Exception:
                    page.screenshot(path=str(shots / f"failed-{step.replace(' ', '-')}.png"))
                    shutil.copyfile(log, shots / "ui.log")
                    raise
                finally:
                    browser.close()
            run = _graphql(base, RUN_QUERY % run_id)["runOrError"]
            assert (run["jobName"], run["status"]) == ("campaign_pause_job", "SUCCESS"), run
            assert f"campaign: {SENDING}" in run["runConfigYaml"], run  # the config typed in the Launchpad
            # paused in the middle of its send: one message out, the rest still queued (the send stops at its
            # next window, a minute after its first at this rate; test_campaign_lifecycle holds that part)
            state, counts = _campaign(app_url, SENDING)
            assert state == "paused" and counts.get("queued", 0) == len(ADDRESSES) - 1, (state, counts)
            assert len(list((tmp_path / "home" / "outbox").rglob("*.eml"))) == len(ADDRESSES) + 1
        finally:
            if sending is not None:
                _stop(sending)
            _stop(ui)
    clock["stopped"] = time.monotonic() - started
    print(f"seconds from the start: {', '.join(f'{k} {v:.1f}' for k, v in clock.items())}; screenshots in {shots}")
