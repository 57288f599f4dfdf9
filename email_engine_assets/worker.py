"""The Celery app of ``email-engine worker``: dagster-celery's step task, with this project's broker and queue.

``celery -A email_engine_assets.worker worker`` works as well, in an environment that ``email-engine``
prepared (database URLs, ``DAGSTER_HOME``). Each step a worker runs is logged to its output with the
worker's name and process id, when it starts and when it ends.
"""

from __future__ import annotations

import logging
import os

from celery import signals
from celery.app import trace
from dagster._core.execution.retries import RetryMode
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import unpack_value
from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from email_engine_assets import executors


def make_worker_app():
    """The app the executor submits to (same broker, result backend and queue settings)."""
    config = executors.celery_config()
    settings = CeleryExecutor(retries=RetryMode(RetryMode.DISABLED), broker=executors.broker_url(),
                              backend=config["backend"], config_source=config["config_source"])
    return make_app(settings.app_args())


app = make_worker_app()
execute_plan = create_task(app)
# a step's result is the list of its serialized events: the log line of each task names the task, not that list
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
log = logging.getLogger("email_engine.worker")


def step_of(kwargs: dict) -> tuple[str, str]:
    """(step keys, run id) of an ``execute_plan`` task's arguments."""
    args = unpack_value(kwargs["execute_step_args_packed"], as_type=ExecuteStepArgs)
    return ", ".join(args.step_keys_to_execute or []), args.run_id


@signals.task_prerun.connect
def _step_started(sender=None, task_id=None, task=None, kwargs=None, **_):
    if task is not None and task.name == TASK_EXECUTE_PLAN_NAME and kwargs:
        steps, run_id = step_of(kwargs)
        log.info("[%s pid %s] step %s of run %s: started", task.request.hostname, os.getpid(), steps, run_id)


@signals.task_postrun.connect
def _step_ended(sender=None, task_id=None, task=None, kwargs=None, state=None, **_):
    # the task succeeds when the step ran, whatever its outcome: the step's own events are in the run's log
    if task is not None and task.name == TASK_EXECUTE_PLAN_NAME and kwargs:
        steps, run_id = step_of(kwargs)
        log.info("[%s pid %s] step %s of run %s: ended (task %s)", task.request.hostname, os.getpid(), steps, run_id, state)
