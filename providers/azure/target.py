"""What Azure Functions can run: the timer trigger's NCRONTAB dialect.

Azure's Linux plans (Flex Consumption among them) ignore ``WEBSITE_TIME_ZONE``
(MicrosoftDocs azure-docs, includes/functions-timezone.md), so every timer
runs in UTC. A ``Cron`` in another zone is emulated in two halves:

    timer_schedule(schedule)   a UTC NCRONTAB firing at every instant that can be a
                               fire time of the schedule in its zone, on any of the
                               zone's UTC offsets (exactly them in UTC and in zones
                               whose offset never changes)
    local_schedule(schedule)   the plain cron and zone the runtime checks each firing
                               against (runtimes/azure.py ``is_fire_time``): only the
                               instants where croniter in that zone fires make a run

so the schedule fires exactly when croniter in the zone fires, across daylight
saving time: a repeated hour runs twice, a skipped time runs at the end of the
gap (unless the hour field is ``*``), as deployer's other schedulers define it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from deployer.triggers import (
    HOUR_FIELD,
    MINUTE_FIELD,
    MONTH_FIELD,
    Cron,
    Every,
    Schedule,
    either_error,
    every_cron_fields,
    every_error,
    format_list,
    format_time_field,
    parse_cron,
    require_schedule,
    require_steady_clock,
    unix_fields,
)

SCHEDULER = "Azure Functions (NCRONTAB timer)"

# The years whose clock changes the UTC timers are widened for: back far enough
# for past-due replays and tests of recent years, forward for decades of deploys
# (a zone that changes its rules later needs a redeploy with newer tzdata).
YEARS_BEFORE = 10
YEARS_AFTER = 30
_DAY = timedelta(days=1)
_MINUTE = timedelta(minutes=1)
_MINUTES_PER_DAY = 24 * 60


def timer_schedule(schedule: Schedule) -> str:
    """The 6-field UTC NCRONTAB `{second} {minute} {hour} {day} {month} {day-of-week}`
    of the timer that runs ``schedule``.

    >>> timer_schedule(Cron("30 9 * * 1-5"))
    '0 30 9 * * 1-5'
    >>> timer_schedule(Cron("0 6 * * *", tz="Europe/Berlin"))  # 06:00 is 05:00 or 04:00 UTC
    '0 0 4,5 * * *'
    >>> timer_schedule(Cron("0 6 * * *", tz="Asia/Kolkata"))  # no DST: exact
    '0 30 0 * * *'
    """
    require_schedule(schedule, SCHEDULER)
    if isinstance(schedule, Every):
        fields = every_cron_fields(schedule)
        if fields is None:
            raise every_error(SCHEDULER, schedule)
        return "0 " + " ".join(fields)
    spec = parse_cron(schedule.expr)
    # NCrontab checks the day of week after the day of month, so restricting both means both
    # must match (CrontabSchedule.TryGetNextOccurrence), unlike unix cron's either
    if spec.day_rule == "either":
        raise either_error(SCHEDULER, schedule)
    clock = _clock(schedule.tz)
    # Wall-clock (hour, minute) and the UTC offset (minutes east) it is read on.
    readings = {
        (hour, minute, offset)
        for hour in spec.hours
        for minute in spec.minutes
        for offset in clock.offsets
    }
    days_move = False
    if spec.hours != frozenset(range(24)):
        for gap in clock.gaps:
            if any(
                (wall.hour in spec.hours and wall.minute in spec.minutes)
                for wall in _walls(gap.start, gap.end)
            ):
                # A skipped time runs at the gap's end: that instant must fire too.
                readings.add((gap.end.hour, gap.end.minute, gap.offset))
                days_move = days_move or gap.start.date() != gap.end.date()
    minutes: set[int] = set()
    hours: set[int] = set()
    day_shifts: set[int] = set()
    for hour, minute, offset in readings:
        shift, minute_of_day = divmod(hour * 60 + minute - offset, _MINUTES_PER_DAY)
        hours.add(minute_of_day // 60)
        minutes.add(minute_of_day % 60)
        day_shifts.add(shift)
    _, _, day_of_month, month, day_of_week = unix_fields(spec)
    if days_move:
        day_of_month, month, day_of_week = "*", "*", "*"
    elif day_shifts != {0}:
        # The UTC date is the local date moved by a day: the day of week moves
        # with it; a day of month and its month move together, across month ends.
        if spec.day_rule == "day-of-week":
            day_of_week = format_list(
                {(day + shift) % 7 for day in spec.days_of_week for shift in day_shifts}
            )
        if spec.day_rule == "day-of-month":
            dates = _moved_dates(spec.months, spec.days_of_month, day_shifts)
        else:
            dates = _moved_dates(spec.months, frozenset(range(1, 32)), day_shifts)
        if spec.day_rule == "day-of-month":
            day_of_month = format_list({day for _, day in dates})
        month = format_time_field(
            frozenset(month_ for month_, _ in dates), MONTH_FIELD, allow_step=False
        )
    return " ".join(
        [
            "0",
            format_time_field(frozenset(minutes), MINUTE_FIELD, allow_step=True),
            format_time_field(frozenset(hours), HOUR_FIELD, allow_step=True),
            day_of_month,
            month,
            day_of_week,
        ]
    )


# The days a month has: February 29 in leap years (its last day is then 28 or 29).
_MONTH_DAYS = {
    **dict.fromkeys((1, 3, 5, 7, 8, 10, 12), 31),
    **dict.fromkeys((4, 6, 9, 11), 30),
    2: 29,
}


def _moved_dates(
    months: frozenset[int], days: frozenset[int], shifts: set[int]
) -> set[tuple[int, int]]:
    """Every (month, day) that a local (month, day) of ``months`` x ``days`` becomes when
    moved by a day in ``shifts`` (-1, 0 or 1), in any year."""
    moved = set()
    for month_ in months:
        for day in days:
            if day > _MONTH_DAYS[month_]:
                continue
            for shift in shifts:
                if shift == 0:
                    moved.add((month_, day))
                elif shift < 0:
                    if day > 1:
                        moved.add((month_, day - 1))
                    else:
                        previous = (month_ - 2) % 12 + 1
                        last_days = (28, 29) if previous == 2 else (_MONTH_DAYS[previous],)
                        moved.update((previous, last) for last in last_days)
                else:
                    if day < _MONTH_DAYS[month_]:
                        moved.add((month_, day + 1))
                    if day >= (28 if month_ == 2 else _MONTH_DAYS[month_]):
                        moved.add((month_ % 12 + 1, 1))
    return moved


def local_schedule(schedule: Schedule) -> tuple[str, str] | None:
    """The plain 5-field cron and IANA zone the runtime checks each firing of
    ``timer_schedule(schedule)`` against; None when every firing is a fire time (Every).

    >>> local_schedule(Cron("0 6 * * MON-FRI", tz="Europe/Berlin"))
    ('0 6 * * 1-5', 'Europe/Berlin')
    """
    require_schedule(schedule, SCHEDULER)
    if isinstance(schedule, Every):
        return None
    return " ".join(unix_fields(parse_cron(schedule.expr))), schedule.tz


@dataclass(frozen=True)
class _Gap:
    """Wall-clock times a zone skips when its clocks jump forward."""

    start: datetime  # naive wall-clock time, the first skipped
    end: datetime  # naive wall-clock time, the first after the jump (not skipped)
    offset: int  # the UTC offset from ``end`` on, in minutes east


@dataclass(frozen=True)
class _Clock:
    offsets: frozenset[int]  # every UTC offset of the zone in the years covered, minutes east
    gaps: tuple[_Gap, ...]


def _walls(start: datetime, end: datetime) -> list[datetime]:
    walls = []
    while start < end:
        walls.append(start)
        start += _MINUTE
    return walls


def _offset_minutes(moment: datetime, zone: ZoneInfo) -> int:
    offset = moment.astimezone(zone).utcoffset() or timedelta(0)
    return int(offset.total_seconds() // 60)


@lru_cache(maxsize=64)
def _clock(tz: str) -> _Clock:
    """The zone's UTC offsets and forward jumps from YEARS_BEFORE to YEARS_AFTER years from now."""
    zone = ZoneInfo(tz)
    year = datetime.now(timezone.utc).year
    moment = datetime(year - YEARS_BEFORE, 1, 1, tzinfo=timezone.utc)
    end = datetime(year + YEARS_AFTER, 1, 1, tzinfo=timezone.utc)
    offset = _offset_minutes(moment, zone)
    offsets = {offset}
    gaps: list[_Gap] = []
    while moment < end:
        following = moment + _DAY
        following_offset = _offset_minutes(following, zone)
        if following_offset != offset:
            # The first minute on the new offset; zones change on whole minutes.
            before, after = 0, _MINUTES_PER_DAY
            while after - before > 1:
                middle = (before + after) // 2
                if _offset_minutes(moment + middle * _MINUTE, zone) == offset:
                    before = middle
                else:
                    after = middle
            change = moment + after * _MINUTE
            if following_offset > offset:
                gaps.append(
                    _Gap(
                        start=(change + timedelta(minutes=offset)).replace(tzinfo=None),
                        end=(change + timedelta(minutes=following_offset)).replace(tzinfo=None),
                        offset=following_offset,
                    )
                )
            offsets.add(following_offset)
        moment, offset = following, following_offset
    return _Clock(offsets=frozenset(offsets), gaps=tuple(gaps))


def to_ncrontab(schedule: Schedule) -> tuple[str, str]:
    """Azure Functions timer as NCRONTAB in the schedule's own zone (WEBSITE_TIME_ZONE).

    Superseded by ``timer_schedule``: Linux plans ignore WEBSITE_TIME_ZONE. Kept
    for tests/test_triggers.py, which checks the plain translation against croniter.

    >>> to_ncrontab(Cron("30 9 * * 1-5", tz="Europe/Berlin"))
    ('0 30 9 * * 1-5', 'Europe/Berlin')
    """
    require_schedule(schedule, SCHEDULER)
    if isinstance(schedule, Every):
        fields = every_cron_fields(schedule)
        if fields is None:
            raise every_error(SCHEDULER, schedule)
        return "0 " + " ".join(fields), "UTC"
    if parse_cron(schedule.expr).day_rule == "either":
        raise either_error(SCHEDULER, schedule)
    require_steady_clock(
        SCHEDULER,
        schedule,
        "shifts a skipped time by the offset change and runs a fixed-time schedule once in a "
        "repeated hour (WebJobs CronSchedule)",
    )
    return "0 " + " ".join(unix_fields(parse_cron(schedule.expr))), schedule.tz


__all__ = ["SCHEDULER", "Cron", "local_schedule", "timer_schedule", "to_ncrontab"]
