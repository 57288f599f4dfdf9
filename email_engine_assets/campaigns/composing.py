"""Composition beside injection: worker processes compose a send's windows of rows while it injects.

A message costs far more to compose (render, build the MIME, DKIM-sign) than to inject, and one
Python process does one of them at a time. So a big send claims its windows ahead and hands the
rows to a pool of worker processes (``spawn``: a fresh interpreter that imports only the content
domain), each holding the campaign's composer, unpickled once when it starts; what comes back is
the composed message (bytes) or why the row is skipped. Nothing here touches the ledger: the rows
stay ``queued`` while they are composed, and only the feed's exchange marks the ones a connection
takes; a window composed for a run that stopped (pause, cancel, SIGKILL) is simply dropped.

A worker exits as soon as the process that started it is gone (a SIGKILL of the send leaves no
orphan composing for nobody).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import pickle
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

from email_engine_assets.content.composer import Composed, Skipped

_composer: Any = None


def _start(composer: Any) -> None:
    global _composer
    _composer = composer
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent) -> None:
    parent.join()  # returns once the parent process is gone
    os._exit(0)


def compose_rows(rows: Sequence[tuple[Any, Any, str]]) -> list[Composed | Skipped | tuple[str, str]]:
    """Each row ``(contact, contact_id, token)`` composed: a :class:`Composed`, a :class:`Skipped`, or
    ``("error", detail)`` when the composer raised (a template error for one contact stops no other)."""
    return [compose_one(_composer, contact, contact_id, token) for contact, contact_id, token in rows]


def compose_one(composer: Any, contact: Any, contact_id: Any, token: str) -> Composed | Skipped | tuple[str, str]:
    """One row composed, or ``("error", detail)`` when the composer raised: a template error for one
    contact must not stop the others."""
    try:
        return composer.compose(contact, contact_id=contact_id, row_token=token)
    except Exception as exc:
        return ("error", f"{type(exc).__name__}: {str(exc)[:200]}")


class ComposePool:
    """``workers`` processes composing with ``composer`` (which must pickle)."""

    def __init__(self, composer: Any, workers: int):
        self.workers = workers
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(composer,))
        with _main_hidden():  # every worker started here (a submit starts one while none is idle)
            for _ in range(workers):
                self._pool.submit(int)

    def submit(self, rows: Sequence[dict]) -> concurrent.futures.Future:
        return self._pool.submit(compose_rows, [(r["contact"], r["contact_id"], r["token"]) for r in rows])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _main_hidden():
    """A spawned process first imports the parent's ``__main__`` (the ``email-engine`` script, so the
    CLI, so Dagster: seconds and a hundred MB per worker); with a bare ``__main__`` meanwhile it
    imports only what unpickling the composer needs."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def portable(composer: Any) -> bool:
    """Whether ``composer`` can go to the workers (one patched with a closure, as some tests do, cannot:
    it composes in the sending process)."""
    try:
        pickle.dumps(composer)
    except Exception:
        return False
    return True


def default_workers() -> int:
    """``EMAIL_ENGINE_COMPOSE_WORKERS`` if set, else one per core (0 or 1: compose in the sending process)."""
    configured = os.environ.get("EMAIL_ENGINE_COMPOSE_WORKERS", "").strip()
    if not configured:
        return os.cpu_count() or 1
    if not configured.isdigit() or int(configured) > 64:
        raise ValueError(f"EMAIL_ENGINE_COMPOSE_WORKERS must be a whole number from 0 to 64, got {configured[:40]!r}")
    return int(configured)
