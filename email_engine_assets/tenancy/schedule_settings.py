"""``schedules:`` of a tenant file: when the tenant's re-checks, MailWizz polls and stats refreshes run.

Each kind takes a ``cron`` and a ``timezone`` (an IANA name); ``schedules.timezone`` is the zone of
the kinds that name none. A kind the file leaves out keeps the engine's default (the cron of
:data:`~email_engine_assets.tenancy.cron.DEFAULT_CRONS`, in UTC). An invalid cron or an unknown
time zone makes the tenant file invalid, named by file and key like any other tenant-file error.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from email_engine_assets.tenancy.cron import (
    DEFAULT_CRONS,
    DEFAULT_TIMEZONE,
    TenantCron,
    cron_problem,
    timezone_problem,
)
from email_engine_assets.tenancy.strict import Strict


def _valid_timezone(value: str | None) -> str | None:
    if value is not None:
        problem = timezone_problem(value)
        if problem:
            raise ValueError(problem)
    return value


class KindSchedule(Strict):
    """One kind's cron and time zone; either may be left out."""

    cron: str | None = Field(default=None, description="five fields: minute hour day-of-month month day-of-week")
    timezone: str | None = Field(default=None, description="IANA name, e.g. Europe/Paris")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            problem = cron_problem(value)
            if problem:
                raise ValueError(problem)
            return value.strip()
        return value

    _zone = field_validator("timezone")(_valid_timezone)


class ScheduleSettings(Strict):
    timezone: str | None = Field(default=None, description="the zone of every kind that names none")
    recheck: KindSchedule = KindSchedule()
    mailwizz_poll: KindSchedule = KindSchedule()
    stats_refresh: KindSchedule = KindSchedule()

    _zone = field_validator("timezone")(_valid_timezone)

    def of(self, kind: str) -> TenantCron:
        """The tenant's cron for ``kind`` (one of :data:`~email_engine_assets.tenancy.cron.KINDS`), defaults filled in."""
        own: KindSchedule = getattr(self, kind)
        return TenantCron(cron=own.cron or DEFAULT_CRONS[kind], timezone=own.timezone or self.timezone or DEFAULT_TIMEZONE)
