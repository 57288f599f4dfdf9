"""The workspace folder: tenant YAML files and the inbox (read by ``tenancy.config.load_workspace``)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from email_engine_resources.settings import workspace_dir


class WorkspaceResource(dg.ConfigurableResource):
    """``path`` empty means ``EMAIL_ENGINE_WORKSPACE`` or the bundled ``examples/workspace``."""

    path: str = ""

    def root(self) -> Path:
        return Path(self.path).resolve() if self.path else workspace_dir()

