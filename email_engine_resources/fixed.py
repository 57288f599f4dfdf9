"""Resources whose settings are the deployment's: set by its environment, never by a run's config."""

from __future__ import annotations

import dagster as dg


def fixed_at_launch(resources: dict[str, dg.ConfigurableResource]) -> dict[str, dg.ResourceDefinition]:
    """The deployment's resources, each with an empty run config schema.

    These settings decide where data goes (database, nameservers, SMTP port and HELO name): a
    run config that sets any of them (the Launchpad's ``resources: {db: {config: {url: ...}}}``)
    fails config validation, so the run never starts. They change only with the deployment's
    environment.
    """
    return {key: _fixed(resource) for key, resource in resources.items()}


def _fixed(resource: dg.ConfigurableResource) -> dg.ResourceDefinition:
    def provide(context: dg.InitResourceContext) -> dg.ConfigurableResource:
        resource.setup_for_execution(context)  # e.g. the database refuses a run on an out-of-date schema
        return resource

    return dg.ResourceDefinition(
        resource_fn=provide,
        config_schema={},
        description=f"{type(resource).__name__}, set by the deployment's environment; not configurable per run",
    )
