"""What GCP can run, with no call to Google: Cloud Scheduler's schedule dialect.

The Cloud Functions runtimes are in source.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.triggers import (
    Every,
    Schedule,
    every_cron_fields,
    every_error,
    parse_cron,
    require_schedule,
    require_steady_clock,
    unix_fields,
)

SCHEDULER = "GCP Cloud Scheduler"


@dataclass(frozen=True)
class GcpOptions:
    """``provider_options`` of provider "gcp" (a dict with these keys works too).

    >>> deployer.deploy(predict, name="scores", provider="gcp", output="gs://acme/runs",
    ...                 provider_options=GcpOptions(project="acme-ml", region="europe-west1"))
    """

    project: str | None = None
    """The project (default: GOOGLE_CLOUD_PROJECT, gcloud's, or the credentials')."""
    region: str | None = None
    """The region (default: GOOGLE_CLOUD_REGION or gcloud's functions/region)."""
    service_account: str | None = None
    """An existing account the function runs as, instead of the one deployer makes
    (deployer grants it nothing: it must read the inputs and write the output)."""


def to_cloud_scheduler(schedule: Schedule) -> tuple[str, str]:
    """GCP Cloud Scheduler (schedule, time_zone): unix cron, written in its plainest form.

    >>> to_cloud_scheduler(Every(minutes=15))
    ('*/15 * * * *', 'UTC')
    """
    require_schedule(schedule, SCHEDULER)
    if isinstance(schedule, Every):
        fields = every_cron_fields(schedule)
        if fields is None:
            raise every_error(SCHEDULER, schedule)
        return " ".join(fields), "UTC"
    require_steady_clock(
        SCHEDULER, schedule, "does not document what it does there (its docs recommend UTC)"
    )
    # Cloud Scheduler ORs the day fields when neither is '*', as unix cron does (its docs)
    return " ".join(unix_fields(parse_cron(schedule.expr))), schedule.tz
