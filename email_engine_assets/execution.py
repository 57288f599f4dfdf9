"""A run of a job of the code location, executed by the calling process with the configured executor.

``dg.execute_job`` on the reconstructable job (not ``JobDefinition.execute_in_process``, which
always runs in process whatever the executor): with ``EMAIL_ENGINE_EXECUTOR=celery`` the steps go
to the workers, which rebuild the job from the same code pointer.

``definitions`` (the code location with some resources replaced, ``definitions.with_resources``)
are reached through the same pointer: they are registered in this process under a name the pointer
carries, so a run whose steps execute in this process (the CLI's default in-process executor) uses
their resources. Steps in other processes (Celery workers, a launched run) rebuild the code
location from its files and the environment, so such a run cannot take them: refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from email_engine_assets import executors

MODULE = __name__
# definitions given to run_job, by the name their pointer carries (this process only)
_GIVEN: dict[str, dg.Definitions] = {}


def code_location_job(name: str, given: str | None = None) -> dg.JobDefinition:
    """The job ``name`` of the code location (or of the definitions registered as ``given``); the
    pointer workers (and subprocess steps) rebuild it from."""
    if given is not None:
        if given not in _GIVEN:
            raise LookupError(f"job {name}: its definitions were given to another process; rebuild it from the code location")
        return _GIVEN[given].resolve_job_def(name)
    from email_engine_assets.definitions import defs

    return defs.resolve_job_def(name)


def reconstructable_job(name: str, given: str | None = None):
    args = (name,) if given is None else (name, given)
    return dg.build_reconstructable_job(MODULE, code_location_job.__name__, reconstructable_args=args)


def _given(definitions: dg.Definitions | None) -> str | None:
    if definitions is None:
        return None
    if executors.uses_celery():
        raise ValueError("definitions with replaced resources run only in this process; unset EMAIL_ENGINE_EXECUTOR")
    key = f"given-{id(definitions):x}"
    _GIVEN[key] = definitions
    return key


@dataclass
class RunResult:
    run_id: str
    success: bool
    step_failures: list[tuple[str, object]] = field(default_factory=list)  # (step key, SerializableErrorInfo or None)
    events: list[dg.DagsterEvent] = field(default_factory=list)


def run_job(
    job_name: str, instance: dg.DagsterInstance, *, partition_key: str | None = None, tags: Mapping[str, str] | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None, run_config: Mapping | None = None,
    definitions: dg.Definitions | None = None,
) -> RunResult:
    """One run of ``job_name``, recorded in ``instance`` as a run launched from the UI would be; with
    the resources of ``definitions`` when given (see the module's docstring)."""
    # the partition's run tags (and the check that the key exists) exactly as execute_in_process sets them
    from dagster._core.execution.execute_in_process import merge_run_tags

    given = _given(definitions)
    job = code_location_job(job_name, given)
    config = {**(run_config or {}), **executors.run_config_for_cli()}
    run_tags = merge_run_tags(job, partition_key, tags, asset_selection, instance, config)
    with dg.execute_job(reconstructable_job(job_name, given), instance=instance, run_config=config, tags=run_tags,
                        asset_selection=list(asset_selection) if asset_selection else None, raise_on_error=False) as result:
        events = list(result.all_events)
        failures = [(e.step_key or "", e.step_failure_data.error) for e in events if e.is_step_failure]
        return RunResult(run_id=result.run_id, success=result.success, step_failures=failures, events=events)


def result_of(instance: dg.DagsterInstance, run_id: str) -> RunResult:
    """The outcome of a run that has ended, from its event log (a run launched elsewhere: the daemon's)."""
    run = instance.get_run_by_id(run_id)
    events = [r.dagster_event for r in instance.all_logs(run_id) if r.dagster_event is not None]
    failures = [(e.step_key or "", e.step_failure_data.error) for e in events if e.is_step_failure]
    return RunResult(run_id=run_id, success=run is not None and run.status == dg.DagsterRunStatus.SUCCESS,
                     step_failures=failures, events=events)


# --- the run queue: with a daemon on the instance's storage, a run is submitted rather than executed here

WORKSPACE_FILE = "workspace.yaml"  # the code location the daemon and the UI load (location ``email_engine``)
QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
_ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


# A queue daemon writes its heartbeat every 30 s; Dagster's own "healthy" tolerates half an hour of
# silence, far too long to leave a send waiting in a queue nobody reads.
HEARTBEAT_MAX_AGE_SECONDS = 90


class QueueNotServed(RuntimeError):
    """A submitted run waits in the queue but no daemon dequeues it any more; ``str()`` says what to do."""


def daemon_running(instance: dg.DagsterInstance) -> bool:
    """Whether a daemon dequeues this instance's run queue now: the instance queues its runs and the
    queue daemon's heartbeat on its storage is at most :data:`HEARTBEAT_MAX_AGE_SECONDS` old (errors
    aside: a daemon that reports an error still launches runs)."""
    import time

    if instance.is_ephemeral or QUEUE_DAEMON not in instance.get_required_daemon_types():
        return False
    heartbeat = instance.get_daemon_heartbeats().get(QUEUE_DAEMON)
    return heartbeat is not None and time.time() - heartbeat.timestamp <= HEARTBEAT_MAX_AGE_SECONDS


def submit_job(
    job_name: str, instance: dg.DagsterInstance, *, partition_key: str | None = None, tags: Mapping[str, str] | None = None,
    run_config: Mapping | None = None, workspace_file: str | None = None,
) -> str:
    """Put a run of ``job_name`` in the instance's run queue, as the UI's Launchpad does: created from
    the code location of ``workspace.yaml`` (the one the daemon loads), then submitted. Its run id."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    from email_engine_resources.settings import PROJECT_ROOT

    target = WorkspaceFileTarget(paths=[workspace_file or str(PROJECT_ROOT / WORKSPACE_FILE)])
    run_tags = {**(tags or {}), **({"dagster/partition": partition_key} if partition_key else {})}
    with WorkspaceProcessContext(instance, target) as process:
        workspace = process.create_request_context()
        [location_name] = workspace.code_location_names
        location = workspace.get_code_location(location_name)
        [repo] = location.get_repositories().values()
        remote_job = repo.get_full_job(job_name)
        plan = location.get_execution_plan(remote_job, run_config or {}, step_keys_to_execute=None, known_state=None,
                                           instance=instance)
        run = instance.create_run(
            job_name=job_name, run_id=None, run_config=run_config or {}, resolved_op_selection=None,
            step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute, op_selection=None, status=None,
            root_run_id=None, parent_run_id=None, tags={**remote_job.tags, **run_tags}, job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot, parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin(),
            asset_selection=None, asset_check_selection=None, asset_graph=repo.asset_graph,
        )
        instance.submit_run(run.run_id, workspace)
    return run.run_id


def follow(instance: dg.DagsterInstance, run_id: str, *, poll_seconds: float = 0.5, on_status=lambda status: None) -> RunResult:
    """Wait for the run to end (queued, launched by the daemon, executed); its outcome. ``on_status``
    is told each status the run passes through."""
    import time

    seen = None
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise LookupError(f"run {run_id} is not in the instance")
        if run.status != seen:
            seen = run.status
            on_status(seen)
        if run.status in _ENDED:
            return result_of(instance, run_id)
        if run.status == dg.DagsterRunStatus.QUEUED and not daemon_running(instance):
            raise QueueNotServed(f"run {run_id} waits in the run queue but no daemon dequeues it any more: start the "
                                 "daemon (email-engine ui) or delete the queued run in the UI and run the command again")
        time.sleep(poll_seconds)
