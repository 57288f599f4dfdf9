"""Steps on Celery workers: two worker processes, standing for two machines, run the steps of three
tenants' imports started at once, and the tables they leave equal those of the in-process run.

Needs RabbitMQ (``EMAIL_ENGINE_CELERY_BROKER``, default 127.0.0.1:5672): skipped without it, except
with ``CI=true``, where a missing broker fails the test (``.ci/run`` starts it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import executors
from email_engine_resources import postgres as database
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_tests.conftest import WorkspaceBuilder
from email_engine_tests.smtp_server import free_port

EMAIL_ENGINE = str(Path(sys.executable).parent / "email-engine")
TENANTS = ("north", "south", "west")
STEP_LINE = re.compile(r"\[(?P<worker>[^@\s]+)@\S+ pid (?P<pid>\d+)\] step (?P<step>\S+) of run (?P<run>[0-9a-f-]+): started")
# volatile columns: serial ids (contact ids are replaced by the contact's email) and clock times
VOLATILE = {"contact_id", "file_id", "primary_file_id", "created_at", "updated_at", "checked_at", "assigned_at"}


def test_the_executor_is_chosen_by_the_environment(monkeypatch):
    for name in (executors.EXECUTOR_ENV, executors.BROKER_ENV, executors.QUEUE_ENV):
        monkeypatch.delenv(name, raising=False)
    assert executors.code_location_executor() is None  # Dagster's default; the CLI then runs its jobs in process
    assert executors.run_config_for_cli() == {"execution": {"config": {"in_process": {}}}}

    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")
    assert executors.run_config_for_cli() == {}
    assert executors.celery_config() == {
        "broker": "amqp://guest:guest@127.0.0.1:5672//", "backend": "rpc://",
        "config_source": {"task_default_queue": "email_engine", "worker_prefetch_multiplier": 1, "result_expires": 3600},
    }

    @dg.asset
    def one() -> None: ...

    defs = dg.Definitions(assets=[one], jobs=[dg.define_asset_job("some_job")], executor=executors.code_location_executor())
    assert defs.resolve_job_def("some_job").executor_def.name == "celery"  # every job without an executor of its own

    # a broker with a password stays an {env: ...} reference: the run config and the UI show the variable's name only
    monkeypatch.setenv(executors.BROKER_ENV, "amqp://mail:s3cret@mq.internal:5672/engine")
    monkeypatch.setenv(executors.QUEUE_ENV, "engine_b")
    config = executors.celery_config()
    assert config["broker"] == {"env": executors.BROKER_ENV} and "s3cret" not in repr(config)
    assert config["config_source"]["task_default_queue"] == "engine_b"


def test_every_job_of_the_code_location_takes_the_celery_executor_from_the_environment():
    """What the daemon and the UI launch: the code location, loaded in a process of its own."""
    probe = "from email_engine_assets.definitions import defs; print(sorted({j.executor_def.name for j in defs.resolve_all_job_defs()}))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_ENGINE_CELERY")}
    done = subprocess.run([sys.executable, "-c", probe], env={**env, executors.EXECUTOR_ENV: "celery"},
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['celery']"


@pytest.mark.parametrize("variable, value, named", [
    (executors.EXECUTOR_ENV, "threads", "EMAIL_ENGINE_EXECUTOR: expected one of default, celery (or unset), got 'threads'"),
    (executors.BROKER_ENV, "http://mail:s3cret@mq.internal/", "EMAIL_ENGINE_CELERY_BROKER: expected a broker URL"),
    (executors.QUEUE_ENV, "my queue", "EMAIL_ENGINE_CELERY_QUEUE: a queue name is letters"),
])
def test_a_wrong_executor_setting_stops_the_cli_before_it_starts(monkeypatch, capsys, variable, value, named):
    from email_engine_assets import cli

    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")
    monkeypatch.setenv(variable, value)
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert named in err and "s3cret" not in err


def _rows(tenant: str, n: int) -> str:
    """A small CSV per tenant: valid and broken addresses, a duplicate, phones, languages, tags."""
    lines = ["email,first_name,last_name,company,phone,country,language,tags"]
    lines += [f"{tenant}.{i}@example.org,Ann{i},Lee,{tenant.title()} Ltd,+44 20 7946 09{i:02d},GB,en,client; vip" for i in range(n)]
    lines += [f"Info@{tenant}-shop.example.com,,,{tenant} shop,,FR,fr,prospect",
              f"{tenant}.0@EXAMPLE.org,Dup,,,,,,",  # same address as the first row
              "not an address,,,,,,,",
              f"jo@{tenant}.example.de,Jo,Schmidt,,030 1234567,DE,de,lead"]
    return "\n".join(lines) + "\n"


def _broker() -> str:
    url = os.environ.get(executors.BROKER_ENV, "").strip() or executors.DEFAULT_BROKER
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        message = f"RabbitMQ is not reachable at {host}:{port} ({exc}): the Celery worker test needs it (.ci/run starts it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def fresh_databases(db_url):
    """A function making empty databases on the test server, all dropped after the test."""
    made = []

    def make() -> str:
        url = database.with_database(db_url, f"{database.database_name(db_url)}_{uuid.uuid4().hex[:6]}")
        database.ensure_database(url)
        made.append(url)
        return url

    yield make
    for url in made:
        database.drop_database(url)


def _instance(home: Path, url: str) -> dg.DagsterInstance:
    """The Dagster instance on ``url`` (creates its tables before several processes open it at once)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {database.dagster_driver_url(url)}\n")
    return dg.DagsterInstance.from_config(str(home))


def _env(home: Path, workspace: Path, app_url: str, dagster_url: str, dns_port: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", executors.EXECUTOR_ENV)}
    env.update(EMAIL_ENGINE_HOME=str(home), EMAIL_ENGINE_WORKSPACE=str(workspace), EMAIL_ENGINE_DATABASE_URL=app_url,
               EMAIL_ENGINE_DAGSTER_DATABASE_URL=database.dagster_driver_url(dagster_url),
               EMAIL_ENGINE_DNS_NAMESERVERS="127.0.0.1", EMAIL_ENGINE_DNS_PORT=str(dns_port), **extra)
    return env


def _imports(env: dict, files: dict[str, Path]) -> list[subprocess.Popen]:
    """``email-engine import`` of each tenant's file, all started at once."""
    return [subprocess.Popen([EMAIL_ENGINE, "import", str(path), "--tenant", tenant, "--source", "crm", "--json"],
                             env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for tenant, path in files.items()]


def _counts(procs: list[subprocess.Popen]) -> dict[str, dict]:
    """Per tenant, the import's counts (its file path aside: each run has its own workspace)."""
    out = {}
    for tenant, proc in zip(TENANTS, procs):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stdout + stderr
        out[tenant] = _without_path(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _without_path(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if k != "file"}


def _imports_in_one_process(env: dict, files: dict[str, Path]) -> subprocess.Popen:
    """The same imports one after the other, in one process (the in-process run, at the cost of one start-up)."""
    calls = "; ".join(f"main(['import', {str(path)!r}, '--tenant', {tenant!r}, '--source', 'crm', '--json'])"
                      for tenant, path in files.items())
    return subprocess.Popen([sys.executable, "-c", f"from email_engine_assets.cli import main; {calls}"], env=env,
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tables(url: str) -> dict[str, list]:
    """The rows of the contacts and quality tables, contact ids replaced by emails, without clock times."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    engine = sa.create_engine(database.sqlalchemy_url(url))
    out = {}
    with engine.connect() as conn:
        out["contacts"] = conn.execute(sa.text("SELECT to_jsonb(c) FROM contacts c")).scalars().all()
        for table in ("email_validations", "contact_enrichment", "tag_assignments"):
            out[table] = conn.execute(sa.text(
                f"SELECT to_jsonb(t) || jsonb_build_object('contact', c.email) FROM {table} t JOIN contacts c USING (tenant_id, contact_id)"
            )).scalars().all()
    engine.dispose()
    return {table: sorted((clean(row) for row in rows), key=lambda r: json.dumps(r, sort_keys=True)) for table, rows in out.items()}


def _start_worker(name: str, env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as sink:
        return subprocess.Popen([EMAIL_ENGINE, "worker", "--name", f"{name}@%h", "--concurrency", "1"], env=env,
                                cwd=PROJECT_ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(workers: dict[str, tuple[subprocess.Popen, Path]], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    waiting = dict(workers)
    while waiting and time.monotonic() < deadline:
        for name, (proc, log) in list(waiting.items()):
            text = log.read_text(errors="replace")
            assert proc.poll() is None, f"worker {name} exited ({proc.returncode}):\n{text[-3000:]}"
            if re.search(rf"{name}@\S+ ready\.", text):
                del waiting[name]
        time.sleep(0.2)
    assert not waiting, f"workers not ready after {timeout} s: {sorted(waiting)}"


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _delete_queue(broker: str, queue: str) -> None:
    from kombu import Connection

    with Connection(broker, connect_timeout=5) as conn:
        channel = conn.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


def test_two_workers_run_the_steps_of_three_tenants_and_match_the_in_process_run(engine, db_url, scratch_database,
                                                                                 fresh_databases, tmp_path):
    broker = _broker()
    queue = f"email_engine_test_{uuid.uuid4().hex[:8]}"  # tasks of an earlier, interrupted run cannot reach these workers
    base = WorkspaceBuilder(tmp_path / "workspace")
    drops = tmp_path / "drops"
    drops.mkdir()
    files = {}
    for i, tenant in enumerate(TENANTS):
        base.tenant(tenant)
        files[tenant] = drops / f"{tenant}.csv"
        files[tenant].write_text(_rows(tenant, 4 + i), encoding="utf-8")
    dns_port = free_port("127.0.0.1")  # nothing answers there: every domain is "unknown", in both runs alike

    # the in-process run (default executor) on databases of its own
    plain_app, plain_dagster = fresh_databases(), fresh_databases()
    with _instance(tmp_path / "plain_instance", plain_dagster):
        pass
    shutil.copytree(base.root, tmp_path / "plain_ws")
    plain_env = _env(tmp_path / "plain_home", tmp_path / "plain_ws", plain_app, plain_dagster, dns_port)

    celery_env = _env(tmp_path / "celery_home", base.root, db_url, scratch_database, dns_port,
                      EMAIL_ENGINE_EXECUTOR="celery", EMAIL_ENGINE_CELERY_BROKER=broker, EMAIL_ENGINE_CELERY_QUEUE=queue)
    instance = _instance(tmp_path / "celery_instance", scratch_database)
    workers = {name: (_start_worker(name, celery_env, tmp_path / f"{name}.log"), tmp_path / f"{name}.log") for name in ("w1", "w2")}
    try:
        in_process = _imports_in_one_process(plain_env, files)  # runs beside the workers' runs: its own databases
        _wait_ready(workers)
        on_workers = _counts(_imports(celery_env, files))
        stdout, stderr = in_process.communicate(timeout=180)
        assert in_process.returncode == 0, stdout + stderr
        plain = {tenant: _without_path(json.loads(line)) for tenant, line in zip(TENANTS, stdout.strip().splitlines())}
        assert plain == on_workers
        assert all(on_workers[t]["status"] == "imported" and on_workers[t]["contacts_total"] == 6 + i
                   for i, t in enumerate(TENANTS)), on_workers
    finally:
        for proc, _ in workers.values():
            if proc.poll() is None:
                proc.terminate()  # warm shutdown: each worker ends its pool processes
        for proc, _ in workers.values():
            _stop(proc)
        _delete_queue(broker, queue)

    # every step of every run went to a worker, and both workers took some
    logs = {name: log.read_text(errors="replace") for name, (_, log) in workers.items()}
    logged = [m.groupdict() for text in logs.values() for m in STEP_LINE.finditer(text)]
    assert {line["worker"] for line in logged} == {"w1", "w2"}, logs
    pids = {line["worker"]: set() for line in logged}
    for line in logged:
        pids[line["worker"]].add(int(line["pid"]))
    runs = instance.get_runs()
    assert len(runs) == 3 * len(TENANTS) and {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    ran = set()
    for run in runs:
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.is_engine_event and "Celery worker" in event.engine_event_data.metadata:
                worker = str(event.engine_event_data.metadata["Celery worker"].value).split("@")[0]
                ran.add((run.run_id, event.step_key, worker))
            elif event.is_step_start:
                # the step started in a process of the worker whose log names the step
                assert any(event.pid in found and f"step {event.step_key} of run {run.run_id}: started" in logs[w]
                           for w, found in pids.items()), (event.step_key, event.pid, pids)
    assert {(r["run"], r["step"], r["worker"]) for r in logged} == ran
    assert len(ran) == len(TENANTS) * 5  # contact_imports, contacts, email_validations, contact_enrichment, tag_assignments
    instance.dispose()

    # the same rows as the in-process run
    on_workers_rows, plain_rows = _tables(db_url), _tables(plain_app)
    for table, rows in plain_rows.items():
        assert len(rows) > 0 and len(on_workers_rows[table]) == len(rows), table
        for got, expected in zip(on_workers_rows[table], rows):
            assert got == expected, table
