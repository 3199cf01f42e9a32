"""What AWS can run, with no call to AWS: EventBridge Scheduler's schedule dialect.

The Lambda platforms (runtimes, glibc, wheel tags) are in lambda_package.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.triggers import (
    HOUR_FIELD,
    MINUTE_FIELD,
    MONTH_FIELD,
    Every,
    Schedule,
    either_error,
    format_list,
    format_time_field,
    parse_cron,
    require_schedule,
    require_steady_clock,
)

SCHEDULER = "AWS EventBridge Scheduler"


@dataclass(frozen=True)
class AwsOptions:
    """``provider_options`` of provider "aws" (a dict with these keys works too).

    >>> deployer.deploy(predict, name="scores", provider="aws", output="s3://acme/runs",
    ...                 provider_options=AwsOptions(architecture="arm64"))
    """

    architecture: str = "x86_64"
    """The Lambda architecture: "x86_64" or "arm64" (wheels are installed for it)."""
    slim: bool = False
    """Allow dependencies over Lambda's 250 MB: shipped as one archive in S3 that the
    runtime unpacks into /tmp on a cold start (slower cold starts, any size)."""


def to_eventbridge(schedule: Schedule) -> tuple[str, str]:
    """AWS EventBridge Scheduler (ScheduleExpression, ScheduleExpressionTimezone).

    Cron becomes `cron(min hour dom month dow year)` with one day field `?` and days of week
    1-7 = SUN-SAT. Every becomes `rate(n unit)`; a rate counts from the schedule's StartDate,
    so the caller sets StartDate to `next_fire_times(schedule, now, 1)[0]` to keep Every's
    epoch-aligned fire times.

    >>> to_eventbridge(Cron("0 6 * * MON-FRI"))
    ('cron(0 6 ? * 2-6 *)', 'UTC')
    """
    require_schedule(schedule, SCHEDULER)
    if isinstance(schedule, Every):
        total_minutes = schedule.seconds // 60
        if total_minutes % 1440 == 0:
            value, unit = total_minutes // 1440, "day"
        elif total_minutes % 60 == 0:
            value, unit = total_minutes // 60, "hour"
        else:
            value, unit = total_minutes, "minute"
        # AWS rejects "rate(5 minute)" and "rate(1 minutes)": the unit agrees with the value
        return f"rate({value} {unit}{'' if value == 1 else 's'})", "UTC"
    spec = parse_cron(schedule.expr)
    if spec.day_rule == "either":
        raise either_error(SCHEDULER, schedule)
    require_steady_clock(
        SCHEDULER, schedule, "skips a run at a skipped time and runs a repeated time once"
    )
    if spec.day_rule == "day-of-week":
        day_of_month = "?"
        # EventBridge numbers days 1-7 from Sunday; unix numbers them 0-6 from Sunday
        day_of_week = format_list(day + 1 for day in spec.days_of_week)
    else:
        day_of_month = "*" if spec.day_rule == "every-day" else format_list(spec.days_of_month)
        day_of_week = "?"
    # EventBridge's '/' reads differently from cron's in places its docs leave open; lists don't
    minute = format_time_field(spec.minutes, MINUTE_FIELD, allow_step=False)
    hour = format_time_field(spec.hours, HOUR_FIELD, allow_step=False)
    month = format_time_field(spec.months, MONTH_FIELD, allow_step=False)
    return f"cron({minute} {hour} {day_of_month} {month} {day_of_week} *)", schedule.tz
