"""Where the steps of a run execute, chosen by the deployment's environment.

``EMAIL_ENGINE_EXECUTOR`` unset (or ``default``): Dagster's default executor. Runs launched by the
daemon or the UI run each step in a subprocess; the CLI (``run``, ``import``) runs its jobs in its
own process.

``EMAIL_ENGINE_EXECUTOR=celery``: every job of the code location hands its steps to Celery workers
(``email-engine worker``) through the broker ``EMAIL_ENGINE_CELERY_BROKER`` (default
``amqp://guest:guest@127.0.0.1:5672//``, RabbitMQ) on the queue ``EMAIL_ENGINE_CELERY_QUEUE``
(default ``email_engine``). The CLI, the daemon and the UI's launches all take this path; the
process that runs a job only orchestrates it.

Results go back over the broker (``rpc://``): the process that runs the job reads each step's result
within a second of the step's end, and the durable record of every step is the event log the
worker writes to the Dagster instance itself (PostgreSQL). A database result backend would add a
poll query per step and per second, and a table that needs its own clean-up, for nothing the run
reads later.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the CLI reads these settings before it needs Dagster
    import dagster as dg

EXECUTOR_ENV = "EMAIL_ENGINE_EXECUTOR"
BROKER_ENV = "EMAIL_ENGINE_CELERY_BROKER"
QUEUE_ENV = "EMAIL_ENGINE_CELERY_QUEUE"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_QUEUE = "email_engine"  # the project's own name: a broker shared with other projects keeps them apart
RESULT_BACKEND = "rpc://"
EXECUTORS = ("default", "celery")
BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss")


class ExecutorConfigError(ValueError):
    """A setting of the executor is wrong; the message names the variable (never a password)."""


def selected() -> str:
    """``default`` or ``celery``, from ``EMAIL_ENGINE_EXECUTOR``."""
    value = os.environ.get(EXECUTOR_ENV, "").strip().lower() or "default"
    if value not in EXECUTORS:
        raise ExecutorConfigError(f"{EXECUTOR_ENV}: expected one of {', '.join(EXECUTORS)} (or unset), got {value!r}")
    return value


def uses_celery() -> bool:
    return selected() == "celery"


def queue() -> str:
    name = os.environ.get(QUEUE_ENV, "").strip() or DEFAULT_QUEUE
    if not all(ch.isalnum() or ch in "._-" for ch in name):
        raise ExecutorConfigError(f"{QUEUE_ENV}: a queue name is letters, digits, '.', '_' or '-', got {name!r}")
    return name


def broker_url() -> str:
    url = os.environ.get(BROKER_ENV, "").strip() or DEFAULT_BROKER
    scheme = urlsplit(url).scheme
    if scheme not in BROKER_SCHEMES or "://" not in url:
        raise ExecutorConfigError(
            f"{BROKER_ENV}: expected a broker URL such as {DEFAULT_BROKER} (schemes: {', '.join(BROKER_SCHEMES)}), "
            f"got one with scheme {scheme!r}"
        )
    return url


def celery_config() -> dict:
    """The ``celery_executor`` config; the broker stays an ``{env: ...}`` reference when the variable is
    set, so its password never shows in the run config, the UI or the event log."""
    broker_url()  # refuse a bad URL when the code location loads, not when the first step is submitted
    return {
        "broker": {"env": BROKER_ENV} if os.environ.get(BROKER_ENV, "").strip() else DEFAULT_BROKER,
        "backend": RESULT_BACKEND,
        "config_source": {
            "task_default_queue": queue(),
            "worker_prefetch_multiplier": 1,  # a worker takes a step only when it is free to run it
            # the reply queue of each orchestrating process goes an hour after its last use (Celery: a day);
            # a running orchestrator reads it every second
            "result_expires": 3600,
        },
    }


def check() -> None:
    """Raise :class:`ExecutorConfigError` for a wrong setting (the CLI checks before it starts anything)."""
    if uses_celery():
        broker_url()
        queue()


def code_location_executor() -> dg.ExecutorDefinition | None:
    """The executor of every job of the code location; ``None``: Dagster's default."""
    if not uses_celery():
        return None
    from celery.exceptions import DuplicateTaskNameWarning
    from dagster_celery import celery_executor

    # dagster-celery registers its step task anew for every step it submits, always the same task
    warnings.filterwarnings("ignore", category=DuplicateTaskNameWarning)

    return celery_executor.configured(celery_config(), name="celery")


def run_config_for_cli() -> dict:
    """The ``execution`` part of a run the CLI executes itself: in its own process by default (a
    subprocess per step would cost seconds per step); the configured executor otherwise."""
    return {} if uses_celery() else {"execution": {"config": {"in_process": {}}}}
