"""The embedded PostgreSQL: a second process joins the running server instead of starting another."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

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


def test_second_process_reuses_the_server_and_the_last_one_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EMAIL_ENGINE_DATABASE_URL"}
    env["EMAIL_ENGINE_HOME"] = str(tmp_path)
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
