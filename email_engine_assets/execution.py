"""A run of a job of the code location, executed by the calling process with the configured executor.

``dg.execute_job`` on the reconstructable job (not ``JobDefinition.execute_in_process``, which
always runs in process whatever the executor): with ``EMAIL_ENGINE_EXECUTOR=celery`` the steps go
to the workers, which rebuild the job from the same code pointer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from email_engine_assets import executors

MODULE = __name__


def code_location_job(name: str) -> dg.JobDefinition:
    """The job ``name`` of the code location; the pointer workers (and subprocess steps) rebuild it from."""
    from email_engine_assets.definitions import defs

    return defs.resolve_job_def(name)


def reconstructable_job(name: str):
    return dg.build_reconstructable_job(MODULE, code_location_job.__name__, reconstructable_args=(name,))


@dataclass
class RunResult:
    run_id: str
    success: bool
    step_failures: list[tuple[str, object]] = field(default_factory=list)  # (step key, SerializableErrorInfo or None)
    events: list[dg.DagsterEvent] = field(default_factory=list)


def run_job(
    job_name: str, instance: dg.DagsterInstance, *, partition_key: str | None = None, tags: Mapping[str, str] | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None, run_config: Mapping | None = None,
) -> RunResult:
    """One run of ``job_name``, recorded in ``instance`` as a run launched from the UI would be."""
    # the partition's run tags (and the check that the key exists) exactly as execute_in_process sets them
    from dagster._core.execution.execute_in_process import merge_run_tags

    job = code_location_job(job_name)
    config = {**(run_config or {}), **executors.run_config_for_cli()}
    run_tags = merge_run_tags(job, partition_key, tags, asset_selection, instance, config)
    with dg.execute_job(reconstructable_job(job_name), instance=instance, run_config=config, tags=run_tags,
                        asset_selection=list(asset_selection) if asset_selection else None, raise_on_error=False) as result:
        events = list(result.all_events)
        failures = [(e.step_key or "", e.step_failure_data.error) for e in events if e.is_step_failure]
        return RunResult(run_id=result.run_id, success=result.success, step_failures=failures, events=events)
