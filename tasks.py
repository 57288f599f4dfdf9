#!/usr/bin/env python3
"""Set up and run Email Engine with nothing but Python >= 3.11.

    python3 tasks.py run      # main job on the embedded PostgreSQL with the bundled example workspace
    python3 tasks.py test     # the test suite
    python3 tasks.py <any email-engine command>   (ui, import, rejects, check, db upgrade, ...)

The first call creates ``.venv`` and installs the project with the pinned versions of
``requirements.lock``; later calls reinstall only when ``pyproject.toml`` or the lock file changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("EMAIL_ENGINE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".email-engine-installed"


def _wanted_stamp() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "requirements.lock"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Python >= 3.11 is required (this is {sys.version.split()[0]})")
    if not PYTHON.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _wanted_stamp()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing dependencies (pinned by requirements.lock)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.check_call(pip + ["-c", str(ROOT / "requirements.lock"), "-e", f"{ROOT}[test]"])
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    ensure_environment()
    if argv[0] == "test":
        return subprocess.call([str(PYTHON), "-m", "pytest", *argv[1:]], cwd=ROOT)
    return subprocess.call([str(BIN / "email-engine"), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
