"""What GCP can run, with no call to Google: Cloud Scheduler's schedule dialect.

The Cloud Functions runtimes are in source.py.
"""

from __future__ import annotations

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
