"""What Azure Functions can run: the timer trigger's NCRONTAB dialect.

The provider itself is not written yet (issue 12); the registry says so.
"""

from __future__ import annotations

from deployer.triggers import (
    Every,
    Schedule,
    either_error,
    every_cron_fields,
    every_error,
    parse_cron,
    require_schedule,
    require_steady_clock,
    unix_fields,
)

SCHEDULER = "Azure Functions (NCRONTAB timer)"


def to_ncrontab(schedule: Schedule) -> tuple[str, str]:
    """Azure Functions timer: 6-field NCRONTAB `{second} {minute} {hour} {day} {month} {dow}`.

    The time zone is an IANA name; Azure applies it through the app setting WEBSITE_TIME_ZONE
    (Windows plans want the Windows zone id, so the provider maps it).

    >>> to_ncrontab(Cron("30 9 * * 1-5", tz="Europe/Berlin"))
    ('0 30 9 * * 1-5', 'Europe/Berlin')
    """
    require_schedule(schedule, SCHEDULER)
    if isinstance(schedule, Every):
        fields = every_cron_fields(schedule)
        if fields is None:
            raise every_error(SCHEDULER, schedule)
        return "0 " + " ".join(fields), "UTC"
    # NCrontab checks the day of week after the day of month, so restricting both means both
    # must match (CrontabSchedule.TryGetNextOccurrence), unlike unix cron's either
    if parse_cron(schedule.expr).day_rule == "either":
        raise either_error(SCHEDULER, schedule)
    require_steady_clock(
        SCHEDULER,
        schedule,
        "shifts a skipped time by the offset change and runs a fixed-time schedule once in a "
        "repeated hour (WebJobs CronSchedule)",
    )
    return "0 " + " ".join(unix_fields(parse_cron(schedule.expr))), schedule.tz
