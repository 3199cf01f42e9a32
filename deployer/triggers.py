"""When a deployed function runs: the trigger types, and how each provider spells them.

A schedule means the same instants wherever it is deployed. `Cron` is standard 5-field unix
cron in an IANA time zone; `Every` fires on multiples of its interval counted from the Unix
epoch in UTC (so `Every(minutes=15)` fires at :00, :15, :30 and :45, whenever it was deployed).
Each provider's `target.py` translates a schedule into its own syntax with the public pieces
here (`parse_cron` and `CronSpec`, `unix_fields`, `every_cron_fields`, `require_steady_clock`
and the shared errors), or raises `TriggerError` when it cannot fire at exactly the same
instants; it never approximates.

Semantics decided here (tests/test_triggers.py checks them against croniter and against
independent evaluators of each provider's syntax):

* Fields: `*`, numbers, `a-b`, `*/n`, `a-b/n`, `a/n`, comma lists, JAN-DEC and SUN-SAT in any
  case. Day-of-week takes 0-7 (0 and 7 are Sunday). `a-a` is the single value `a` (standard
  cron; croniter alone reads it as the whole field). `a/n` runs to the top of the field, which
  for day-of-week is 6 (Saturday), as in croniter. Ranges must not wrap (`SAT-SUN` is refused).
* `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually` are accepted
  as their usual 5-field meanings; `?`, `L`, `W`, `#` and `@reboot` are refused.
* Day-of-month and day-of-week: when both are restricted (neither is `*`), a day matching
  either fires, as in POSIX, Vixie cron, croniter and Cloud Scheduler. When a restricted day
  field is written with a `*` (`*/2`), cron implementations disagree (Vixie cron ANDs, croniter
  ORs), so that combination is refused with the fix.
* Wall-clock times that a time zone skips or repeats when its clocks change are run the way
  croniter runs them (skipped: at the end of the gap; repeated: both times). AWS, GCP and Azure
  each do something else there, so a Cron that fires inside such a window cannot be translated
  exactly and raises: schedule it in UTC, or outside the window.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deployer.errors import TriggerError

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

_DayRule = Literal["every-day", "day-of-month", "day-of-week", "either"]


@dataclass(frozen=True)
class Cron:
    """Fire on a standard 5-field unix cron schedule, evaluated in the IANA time zone `tz`.

    >>> Cron("0 6 * * MON-FRI", tz="Europe/Berlin")  # 06:00 Berlin time on weekdays
    Cron(expr='0 6 * * MON-FRI', tz='Europe/Berlin')
    """

    expr: str
    tz: str = "UTC"
    # True: each firing fans the deployed inputs out over many invocations, one
    # map run (see deployer.map); its coordinator runs where the schedule fires.
    map: bool = field(default=False, repr=False)
    # Keyword-only parameters of the function this schedule's runs set, e.g.
    # {"threshold": 0.7}; checked against the signature at deploy.
    params: Mapping[str, Any] | None = field(default=None, repr=False, hash=False)
    # False: a firing while the previous run of this function still runs is
    # recorded as skipped instead of running alongside it.
    overlap: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        _check_schedule_options(self)
        if not isinstance(self.expr, str):
            raise TriggerError(
                f"Cron: expr must be a string such as '0 6 * * *', got {self.expr!r} "
                f"({type(self.expr).__name__})"
            )
        if not isinstance(self.tz, str):
            raise TriggerError(
                f"Cron({self.expr!r}): tz must be a string such as 'Europe/Berlin', "
                f"got {self.tz!r} ({type(self.tz).__name__})"
            )
        parse_cron(self.expr)
        _zone(self.tz, owner=f"Cron({self.expr!r}, tz={self.tz!r})")


@dataclass(frozen=True)
class Every:
    """Fire every `days + hours + minutes`, on multiples of that interval since the Unix epoch.

    >>> Every(minutes=15).seconds  # fires at :00, :15, :30 and :45 of every hour (UTC)
    900
    """

    minutes: int = 0
    hours: int = 0
    days: int = 0
    # as Cron's
    map: bool = field(default=False, repr=False)
    params: Mapping[str, Any] | None = field(default=None, repr=False, hash=False)
    overlap: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        _check_schedule_options(self)
        for field_name in ("minutes", "hours", "days"):
            value = getattr(self, field_name)
            # bool is an int subclass; Every(minutes=True) is a bug, not one minute
            if not isinstance(value, int) or isinstance(value, bool):
                raise TriggerError(
                    f"{self!r}: {field_name} must be a whole number (int), got {value!r} "
                    f"({type(value).__name__}); for an hour and a half write "
                    "Every(hours=1, minutes=30)"
                )
            if value < 0:
                raise TriggerError(
                    f"{self!r}: {field_name} must be >= 0, got {value}; "
                    "give a positive interval such as Every(minutes=5)"
                )
        if self.seconds == 0:
            raise TriggerError(
                f"{self!r}: the interval is zero (minutes, hours and days are all 0); "
                "give a positive interval such as Every(minutes=5) or Every(hours=1)"
            )

    @property
    def seconds(self) -> int:
        """The whole interval in seconds."""
        return self.minutes * _MINUTE + self.hours * _HOUR + self.days * _DAY


@dataclass(frozen=True)
class Http:
    """Fire on HTTP requests. Authenticated unless `public=True` is given explicitly."""

    public: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.public, bool):
            raise TriggerError(
                f"Http: public must be True or False, got {self.public!r} "
                f"({type(self.public).__name__})"
            )


MAX_SCHEDULE_PARAMS_CHARS = 300


def _check_schedule_options(schedule: Cron | Every) -> None:
    for option in ("map", "overlap"):
        value = getattr(schedule, option)
        if not isinstance(value, bool):
            raise TriggerError(
                f"{schedule!r}: {option} must be True or False, got {value!r} "
                f"({type(value).__name__})"
            )
    params = schedule.params
    if params is None:
        return
    if not isinstance(params, Mapping) or not all(isinstance(key, str) for key in params):
        raise TriggerError(
            f"{schedule!r}: params must be a dict of parameter names to values, e.g. "
            f'params={{"threshold": 0.7}}, got {params!r}'
        )
    try:
        text = json.dumps(dict(params), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TriggerError(
            f"{schedule!r}: params must be plain JSON values (numbers, strings, true/false, "
            f"null, lists, dicts): {error}"
        ) from None
    if len(text) > MAX_SCHEDULE_PARAMS_CHARS:
        # The cloud schedulers keep the schedule's definition in a description
        # of at most 500 characters (Cloud Scheduler; EventBridge Scheduler 512).
        raise TriggerError(
            f"{schedule!r}: params are {len(text)} characters of JSON, over the "
            f"{MAX_SCHEDULE_PARAMS_CHARS} a schedule carries: keep a few small values here, "
            "and larger settings in a file the function reads"
        )
    if params and schedule.map:
        raise TriggerError(
            f"{schedule!r}: a map schedule cannot set params yet (its shards run with the "
            "defaults): bind them with functools.partial(predict, threshold=0.7) instead"
        )
    # A copy the caller cannot change after the schedule was checked.
    object.__setattr__(schedule, "params", json.loads(text) or None)


Trigger: TypeAlias = Cron | Every | Http
Schedule: TypeAlias = Cron | Every

_TRIGGER_TYPES = (Cron, Every, Http)


# --- parsing cron ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CronField:
    name: str
    low: int
    high: int
    names: Mapping[str, int]
    allowed: str
    example: str


_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DAY_NAMES = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}

_FIELDS = (
    CronField("minute", 0, 59, {}, "0-59", "'0,30' or '*/15'"),
    CronField("hour", 0, 23, {}, "0-23", "'6' or '9-17'"),
    CronField("day-of-month", 1, 31, {}, "1-31", "'1' or '1,15'"),
    CronField("month", 1, 12, _MONTH_NAMES, "1-12 or JAN-DEC", "'1' or 'JAN-MAR'"),
    # 7 is accepted as a second Sunday, as in Vixie cron; values are stored as 0-6
    CronField("day-of-week", 0, 7, _DAY_NAMES, "0-7 or SUN-SAT (0 and 7 are Sunday)", "'MON-FRI'"),
)
MINUTE_FIELD, HOUR_FIELD, _DAY_OF_MONTH_FIELD, MONTH_FIELD, _DAY_OF_WEEK_FIELD = _FIELDS

_SYNTAX = "'*', a number, a range 'a-b', a step '*/n', 'a-b/n' or 'a/n', or a comma list of these"

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_ITEM = re.compile(
    r"^(?:(?P<star>\*)|(?P<start>[0-9a-z]+)(?:-(?P<end>[0-9a-z]+))?)"  # '*', 'a' or 'a-b'
    r"(?:/(?P<step>.*))?$"  # then an optional '/n'
)

# The most days each month can have: February counts 29 because a leap year always comes
_LONGEST_MONTH = {
    **dict.fromkeys((1, 3, 5, 7, 8, 10, 12), 31),
    **dict.fromkeys((4, 6, 9, 11), 30),
    2: 29,
}


@dataclass(frozen=True)
class CronSpec:
    """A parsed cron expression: the values each field matches, and how the day fields combine."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0-6, Sunday is 0
    day_rule: _DayRule

    def matches(self, wall_time: datetime) -> bool:
        if wall_time.minute not in self.minutes or wall_time.hour not in self.hours:
            return False
        if wall_time.month not in self.months:
            return False
        day_of_month_matches = wall_time.day in self.days_of_month
        day_of_week_matches = (wall_time.weekday() + 1) % 7 in self.days_of_week
        if self.day_rule == "either":
            return day_of_month_matches or day_of_week_matches
        return day_of_month_matches and day_of_week_matches


def _cron_error(expr: str, field: CronField, text: str, problem: str, fix: str) -> TriggerError:
    return TriggerError(
        f"Cron({expr!r}): {field.name} {text!r} {problem}. The {field.name} field takes "
        f"{field.allowed}, written as {_SYNTAX}; {fix}"
    )


_WORDS = {
    "hourly": "Every(hours=1)",
    "daily": 'Cron("0 6 * * *") (every day at 06:00) or Every(days=1)',
    "weekly": 'Cron("0 6 * * 1") (Mondays at 06:00)',
    "monthly": 'Cron("0 6 1 * *") (the 1st at 06:00)',
}


def _trigger_for(text: str) -> str:
    """What to write instead of a string given as a trigger: a valid trigger."""
    word = text.strip().lower().lstrip("@")
    if word in _WORDS:
        return _WORDS[word]
    try:
        parse_cron(text)
    except TriggerError:
        return 'Cron("<minute hour day month weekday>"), e.g. Cron("0 6 * * *")'
    return f"Cron({text!r})"


def _parse_value(expr: str, field: CronField, text: str, item: str) -> int:
    if text.isdigit():
        value = int(text)
    elif text in field.names:
        value = field.names[text]
    else:
        fix = f"use numbers {field.allowed}"
        if text in ("l", "w") or text.endswith(("l", "w")):
            fix = "'L' and 'W' are Quartz/AWS extensions that unix cron lacks; " + fix
        raise _cron_error(expr, field, item, f"has {text.upper()!r}, not a number", fix)
    if not field.low <= value <= field.high:
        raise _cron_error(
            expr,
            field,
            item,
            f"is outside {field.low}-{field.high}",
            f"for example {field.example}",
        )
    return value


def _parse_item(expr: str, field: CronField, item: str) -> set[int]:
    lowered = item.lower()
    if "?" in lowered:
        raise _cron_error(
            expr, field, item, "uses '?'", "'?' is Quartz/AWS syntax: in unix cron write '*'"
        )
    if "#" in lowered:
        raise _cron_error(
            expr,
            field,
            item,
            "uses '#'",
            "'#' (nth weekday) is a Quartz/AWS extension that unix cron lacks",
        )
    match = _ITEM.match(lowered)
    if match is None:
        raise _cron_error(
            expr, field, item, "is not valid cron syntax", f"for example {field.example}"
        )
    step_text = match["step"]
    step = 1
    if step_text is not None:
        if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
            raise _cron_error(
                expr,
                field,
                item,
                "has an invalid step",
                "a step after '/' must be a whole number > 0, e.g. '*/15'",
            )
        step = int(step_text)
    # Sunday is both 0 and 7; the top of a starred or open-ended day-of-week is 6, as in croniter
    top = 6 if field is _DAY_OF_WEEK_FIELD else field.high
    if match["star"]:
        if step_text is None:
            raise _cron_error(
                expr,
                field,
                item,
                "mixes '*' into a list",
                "'*' already matches every value: write it alone, or list the values",
            )
        size = top - field.low + 1
        if step >= size:
            raise _cron_error(
                expr,
                field,
                item,
                f"steps past the whole field (step {step})",
                f"'*/{step}' would fire only at {field.low}, not every {step}; "
                "for a fixed interval use Every(...), e.g. Every(minutes=90)",
            )
        return set(range(field.low, top + 1, step))
    start = _parse_value(expr, field, match["start"], item)
    if match["end"] is not None:
        end = _parse_value(expr, field, match["end"], item)
        if start > end:
            raise _cron_error(
                expr,
                field,
                item,
                f"is a range that runs backwards ({start} > {end})",
                "write ranges low-high; for one that wraps around use a list such as "
                "'22-23,0-2'" + (" or 'SAT,SUN' (or '6-7')" if field is _DAY_OF_WEEK_FIELD else ""),
            )
        values = set(range(start, end + 1, step))
    elif step_text is not None:
        if start > top:
            raise _cron_error(
                expr,
                field,
                item,
                f"starts a step at {start}",
                f"'a/n' runs from a to {top}: start at {field.low}-{top} (write Sunday as 0)",
            )
        values = set(range(start, top + 1, step))
    else:
        values = {start}
    if field is _DAY_OF_WEEK_FIELD:
        values = {value % 7 for value in values}
    return values


def _parse_field(expr: str, field: CronField, text: str) -> tuple[frozenset[int], bool]:
    """The values `text` matches, and whether it restricts the field (is anything but '*')."""
    if text == "*":
        top = 6 if field is _DAY_OF_WEEK_FIELD else field.high
        return frozenset(range(field.low, top + 1)), False
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _cron_error(
                expr, field, text, "has an empty list item", "separate values by single commas"
            )
        values |= _parse_item(expr, field, item)
    return frozenset(values), True


@lru_cache(maxsize=512)
def parse_cron(expr: str) -> CronSpec:
    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise TriggerError(
                f"Cron({expr!r}): unknown macro {text!r}; use one of {', '.join(_MACROS)} "
                "or a 5-field expression such as '0 6 * * *'"
            )
        text = _MACROS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        hint = ""
        if len(parts) in (6, 7):
            hint = (
                " A 6- or 7-field expression is Quartz/AWS/NCRONTAB syntax (seconds or year): "
                "drop the seconds and year fields."
            )
        raise TriggerError(
            f"Cron({expr!r}): expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)}.{hint} For example Cron('0 6 * * *') fires daily at 06:00"
        )
    parsed = [_parse_field(expr, field, part) for field, part in zip(_FIELDS, parts, strict=True)]
    (minutes, _), (hours, _), (days_of_month, dom_restricted), (months, _), parsed_dow = parsed
    days_of_week, dow_restricted = parsed_dow
    all_days_of_month = frozenset(range(1, 32))
    all_days_of_week = frozenset(range(7))
    day_rule: _DayRule
    if dom_restricted and dow_restricted:
        if "*" in parts[2] or "*" in parts[4]:
            raise TriggerError(
                f"Cron({expr!r}): day-of-month {parts[2]!r} and day-of-week {parts[4]!r} are "
                "both restricted and one is written with '*'; cron implementations disagree "
                "whether that fires when both match (Vixie cron) or either (POSIX, croniter). "
                "Write the day-of-month and day-of-week without '*' (e.g. '1-31/2' instead of "
                "'*/2') to fire when either matches, or set one of them to '*'"
            )
        day_rule = "either"
        if days_of_month == all_days_of_month or days_of_week == all_days_of_week:
            day_rule = "every-day"
    elif dom_restricted:
        day_rule = "day-of-month" if days_of_month != all_days_of_month else "every-day"
    elif dow_restricted:
        day_rule = "day-of-week" if days_of_week != all_days_of_week else "every-day"
    else:
        day_rule = "every-day"
    # Normalise so that the sets alone say what fires: an unrestricted day field matches all
    if day_rule in ("every-day", "day-of-week"):
        days_of_month = all_days_of_month
    if day_rule in ("every-day", "day-of-month"):
        days_of_week = all_days_of_week
    if day_rule == "day-of-month" and not any(
        day <= _LONGEST_MONTH[month] for day in days_of_month for month in months
    ):
        raise TriggerError(
            f"Cron({expr!r}) can never fire: none of the months in month {parts[3]!r} has "
            f"the days in day-of-month {parts[2]!r}. Pick days that exist in those months "
            "(February has 28 or 29 days; April, June, September and November have 30)"
        )
    return CronSpec(minutes, hours, days_of_month, months, days_of_week, day_rule)


def _zone(tz: str, *, owner: str) -> ZoneInfo:
    # "localtime" and friends resolve to files on this machine, not to zones a cloud knows
    if tz not in ("localtime", "posixrules", "Factory"):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise TriggerError(
        f"{owner}: unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin', "
        "'America/New_York' or 'UTC'"
    )


# --- formatting cron -------------------------------------------------------------------------


def format_list(values: Iterable[int]) -> str:
    """Sorted values as a comma list, with runs of three or more written as ranges."""
    ordered = sorted(values)
    pieces: list[str] = []
    run_start = 0
    for index in range(1, len(ordered) + 1):
        if index < len(ordered) and ordered[index] == ordered[index - 1] + 1:
            continue
        run = ordered[run_start:index]
        if len(run) >= 3:
            pieces.append(f"{run[0]}-{run[-1]}")
        else:
            pieces.extend(str(value) for value in run)
        run_start = index
    return ",".join(pieces)


def format_time_field(values: frozenset[int], field: CronField, *, allow_step: bool) -> str:
    full = frozenset(range(field.low, field.high + 1))
    if values == full:
        return "*"
    ordered = sorted(values)
    if allow_step and len(ordered) >= 2 and ordered[0] == field.low:
        step = ordered[1] - ordered[0]
        if values == frozenset(range(field.low, field.high + 1, step)):
            return f"*/{step}"
    return format_list(ordered)


def unix_fields(spec: CronSpec) -> list[str]:
    """The spec as 5 plain unix fields: only '*', '*/n' (minute and hour), lists and ranges.

    Day fields are never written with '*/n', because whether a starred day field counts as
    restricted is exactly where cron implementations disagree.
    """
    if spec.day_rule == "either":
        day_of_month = format_list(spec.days_of_month)
        day_of_week = format_list(spec.days_of_week)
    else:
        day_of_month = "*" if spec.day_rule != "day-of-month" else format_list(spec.days_of_month)
        day_of_week = "*" if spec.day_rule != "day-of-week" else format_list(spec.days_of_week)
    return [
        format_time_field(spec.minutes, MINUTE_FIELD, allow_step=True),
        format_time_field(spec.hours, HOUR_FIELD, allow_step=True),
        day_of_month,
        format_time_field(spec.months, MONTH_FIELD, allow_step=False),
        day_of_week,
    ]


def either_error(provider: str, cron: Cron) -> TriggerError:
    fields = cron.expr.split() if not cron.expr.strip().startswith("@") else []
    split = ""
    if len(fields) == 5:
        minute, hour, day_of_month, month, day_of_week = fields
        split = (
            f" Split it into two triggers, Cron('{minute} {hour} {day_of_month} {month} *') and "
            f"Cron('{minute} {hour} * {month} {day_of_week}') (both fire on a day matching both)"
        )
    return TriggerError(
        f"{provider} cannot express {describe(cron)}: it restricts both day-of-month and "
        "day-of-week, which unix cron fires on when either matches, but "
        f"{provider} only fires when both match.{split}"
    )


# --- clock changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClockChange:
    start: datetime  # naive wall-clock time, inclusive
    end: datetime  # naive wall-clock time, exclusive
    skipped: bool  # True: these wall times never happen; False: they happen twice


# 28 years: the calendar repeats its weekday/date pattern, so every rule-based change is seen
_CLOCK_CHANGE_YEARS = 28


@lru_cache(maxsize=64)
def _clock_changes(tz: str) -> tuple[_ClockChange, ...]:
    """Windows of wall-clock time that `tz` skips or repeats in the coming years."""
    zone = ZoneInfo(tz)
    start = datetime(datetime.now(timezone.utc).year, 1, 1, tzinfo=timezone.utc)
    changes: list[_ClockChange] = []

    def offset_at(moment: datetime) -> timedelta:
        return moment.astimezone(zone).utcoffset() or timedelta(0)

    day = timedelta(days=1)
    minute = timedelta(minutes=1)
    moment, offset = start, offset_at(start)
    for _ in range(_CLOCK_CHANGE_YEARS * 366):
        following = moment + day
        following_offset = offset_at(following)
        if following_offset != offset:
            # the first minute of the day on the new offset; zones change on whole minutes
            before, after = 0, 24 * 60
            while after - before > 1:
                middle = (before + after) // 2
                if offset_at(moment + middle * minute) == offset:
                    before = middle
                else:
                    after = middle
            change = (moment + after * minute).replace(tzinfo=None)
            changes.append(
                _ClockChange(
                    start=change + min(offset, following_offset),
                    end=change + max(offset, following_offset),
                    skipped=following_offset > offset,
                )
            )
        moment, offset = following, following_offset
    return tuple(changes)


def require_steady_clock(provider: str, cron: Cron, behaviour: str) -> None:
    spec = parse_cron(cron.expr)
    for change in _clock_changes(cron.tz):
        wall_time = change.start
        while wall_time < change.end:
            if spec.matches(wall_time):
                what = "skips" if change.skipped else "repeats"
                raise TriggerError(
                    f"{provider} cannot run {describe(cron)} exactly: it fires at "
                    f"{wall_time:%Y-%m-%d %H:%M}, a wall-clock time that {cron.tz} {what} "
                    f"when its clocks change, and {provider} {behaviour}, while deployer runs "
                    "such times as croniter does (a skipped time at the end of the gap, a "
                    "repeated time twice). Use tz='UTC' with the hours shifted, or keep the "
                    f"schedule out of {change.start:%H:%M}-{change.end:%H:%M} local time on "
                    "clock-change days"
                )
            wall_time += timedelta(minutes=1)


# --- Every as cron ---------------------------------------------------------------------------

# Intervals (in minutes) whose epoch-aligned fire times one cron expression can list: steps
# restart every hour and every day, so only divisors of an hour or a day line up. A week also
# works because the epoch fell on a Thursday at midnight UTC.
_CRON_INTERVALS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440)
_WEEK_MINUTES = 7 * 24 * 60


def every_cron_fields(every: Every) -> list[str] | None:
    total_minutes = every.seconds // _MINUTE
    if total_minutes < 60 and 60 % total_minutes == 0:
        return ["*" if total_minutes == 1 else f"*/{total_minutes}", "*", "*", "*", "*"]
    if total_minutes < 1440 and total_minutes % 60 == 0 and 24 % (total_minutes // 60) == 0:
        hours = total_minutes // 60
        return ["0", "*" if hours == 1 else f"*/{hours}", "*", "*", "*"]
    if total_minutes == 1440:
        return ["0", "0", "*", "*", "*"]
    if total_minutes == _WEEK_MINUTES:
        return ["0", "0", "*", "*", "4"]
    return None


def _every_name(total_minutes: int) -> str:
    days, minutes_of_day = divmod(total_minutes, 1440)
    return describe(Every(minutes=minutes_of_day % 60, hours=minutes_of_day // 60, days=days))


def every_error(provider: str, every: Every) -> TriggerError:
    total_minutes = every.seconds // _MINUTE
    workable = (*_CRON_INTERVALS, _WEEK_MINUTES)
    shorter = max((minutes for minutes in workable if minutes < total_minutes), default=None)
    longer = min((minutes for minutes in workable if minutes > total_minutes), default=None)
    suggestions = []
    for minutes in (shorter, longer):
        if minutes is not None:
            fields = every_cron_fields(Every(minutes=minutes))
            assert fields is not None
            suggestions.append(f"{_every_name(minutes)} (Cron({' '.join(fields)!r}))")
    return TriggerError(
        f"{provider} cannot fire {describe(every)} exactly: its cron steps restart every hour "
        "and day, so only intervals of 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30 minutes, 1, 2, 3, "
        "4, 6, 8 or 12 hours, 1 day or 7 days line up with Every's epoch-aligned fire times. "
        f"The nearest that work: {' or '.join(suggestions)}"
    )


# --- public functions ------------------------------------------------------------------------


def require_schedule(schedule: object, provider: str) -> None:
    if isinstance(schedule, Http):
        raise TriggerError(f"{describe(schedule)} has no schedule to translate for {provider}")
    if not isinstance(schedule, (Cron, Every)):
        raise TriggerError(
            f"{provider}: expected a Cron or Every schedule, got {schedule!r} "
            f"({type(schedule).__name__})"
        )


def validate_triggers(triggers: object) -> tuple[Trigger, ...]:
    """Check the `triggers=` argument: one trigger, or a list or tuple of them.

    >>> validate_triggers([Cron("0 6 * * *"), Http()])
    (Cron(expr='0 6 * * *', tz='UTC'), Http(public=False))
    """
    if isinstance(triggers, _TRIGGER_TYPES):
        items: tuple[object, ...] = (triggers,)
    elif isinstance(triggers, (list, tuple)):
        items = tuple(triggers)
    else:
        hint = f": write {_trigger_for(triggers)}" if isinstance(triggers, str) else ""
        raise TriggerError(
            f"triggers must be a Cron, Every or Http, or a list of them; got {triggers!r} "
            f"({type(triggers).__name__}){hint}"
        )
    checked: list[Trigger] = []
    seen: dict[tuple[object, ...], int] = {}
    http_index: int | None = None
    for index, item in enumerate(items):
        if not isinstance(item, _TRIGGER_TYPES):
            hint = f"; write {_trigger_for(item)}" if isinstance(item, str) else ""
            raise TriggerError(
                f"triggers[{index}] is {item!r} ({type(item).__name__}), not a trigger: use "
                f"Cron(...), Every(...) or Http(){hint}"
            )
        if isinstance(item, Http):
            if http_index is not None:
                raise TriggerError(
                    f"triggers[{index}] ({describe(item)}) is a second Http trigger after "
                    f"triggers[{http_index}] ({describe(checked[http_index])}); a function has "
                    "one HTTP endpoint: keep one Http(...)"
                )
            http_index = index
        key = _identity(item)
        if key in seen:
            earlier = seen[key]
            raise TriggerError(
                f"triggers[{index}] ({describe(item)}) fires at the same times as "
                f"triggers[{earlier}] ({describe(checked[earlier])}); keep one of them"
            )
        seen[key] = index
        checked.append(item)
    return tuple(checked)


def _identity(trigger: Trigger) -> tuple[object, ...]:
    """Equal for triggers that fire at the same instants."""
    if isinstance(trigger, Cron):
        return ("cron", " ".join(unix_fields(parse_cron(trigger.expr))), trigger.tz)
    if isinstance(trigger, Every):
        fields = every_cron_fields(trigger)
        if fields is not None:
            return ("cron", " ".join(fields), "UTC")
        return ("every", trigger.seconds)
    return ("http",)


def next_fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after`, as aware UTC datetimes.

    >>> after = datetime(2024, 1, 1, 6, 30, tzinfo=timezone.utc)
    >>> [time.isoformat() for time in next_fire_times(Every(hours=1), after, 2)]
    ['2024-01-01T07:00:00+00:00', '2024-01-01T08:00:00+00:00']
    """
    require_schedule(schedule, "next_fire_times")
    if not isinstance(after, datetime) or after.tzinfo is None or after.utcoffset() is None:
        raise TriggerError(
            f"next_fire_times: after must be a timezone-aware datetime, got {after!r}; "
            "e.g. datetime.now(timezone.utc)"
        )
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise TriggerError(f"next_fire_times: count must be a whole number >= 0, got {count!r}")
    if isinstance(schedule, Every):
        interval = timedelta(seconds=schedule.seconds)
        first = (after - _UNIX_EPOCH) // interval + 1
        return [_UNIX_EPOCH + interval * (first + index) for index in range(count)]
    from croniter import croniter  # imported here: `import deployer` must stay fast

    zone = _zone(schedule.tz, owner=describe(schedule))
    # croniter evaluates our plain form, so its own readings of 'a-a', 'a/n' never leak in
    iterator = croniter(" ".join(unix_fields(parse_cron(schedule.expr))), after.astimezone(zone))
    return [iterator.get_next(datetime).astimezone(timezone.utc) for _ in range(count)]


def trigger_to_dict(trigger: Trigger) -> dict[str, object]:
    """A JSON-able dict, as stored in the bundle manifest.

    >>> trigger_to_dict(Cron("0 6 * * *", tz="Europe/Berlin"))
    {'type': 'cron', 'expr': '0 6 * * *', 'tz': 'Europe/Berlin'}
    """
    if isinstance(trigger, Cron):
        data: dict[str, object] = {"type": "cron", "expr": trigger.expr, "tz": trigger.tz}
        return {**data, **_schedule_options(trigger)}
    if isinstance(trigger, Every):
        data = {
            "type": "every",
            "minutes": trigger.minutes,
            "hours": trigger.hours,
            "days": trigger.days,
        }
        return {**data, **_schedule_options(trigger)}
    if isinstance(trigger, Http):
        return {"type": "http", "public": trigger.public}
    raise TriggerError(f"not a trigger: {trigger!r} ({type(trigger).__name__})")


def _schedule_options(schedule: Schedule) -> dict[str, object]:
    # Each only when it is not the default: the dicts (and the schedule names
    # made from them) of schedules without it stay as they were.
    options: dict[str, object] = {}
    if schedule.map:
        options["map"] = True
    if schedule.params:
        options["params"] = dict(schedule.params)
    if not schedule.overlap:
        options["overlap"] = False
    return options


_DICT_KEYS: dict[str, tuple[str, ...]] = {
    "cron": ("expr", "tz", "map", "params", "overlap"),
    "every": ("minutes", "hours", "days", "map", "params", "overlap"),
    "http": ("public",),
}


def trigger_from_dict(data: Mapping[str, object]) -> Trigger:
    """The trigger `trigger_to_dict` wrote; TriggerError if `data` is not one."""
    if not isinstance(data, Mapping):
        raise TriggerError(
            f"a trigger must be a mapping with a 'type', got {data!r} ({type(data).__name__})"
        )
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _DICT_KEYS:
        raise TriggerError(
            f"trigger {dict(data)!r} has type {kind!r}; expected one of "
            f"{', '.join(repr(name) for name in _DICT_KEYS)}"
        )
    allowed = _DICT_KEYS[kind]
    unknown = sorted(str(key) for key in data if key != "type" and key not in allowed)
    if unknown:
        raise TriggerError(
            f"{kind} trigger {dict(data)!r} has unknown keys {', '.join(unknown)}; "
            f"a {kind} trigger takes {', '.join(allowed)}"
        )
    arguments = {key: data[key] for key in allowed if key in data}
    if kind == "cron":
        if "expr" not in arguments:
            raise TriggerError(f"cron trigger {dict(data)!r} has no 'expr'")
        return Cron(**arguments)  # type: ignore[arg-type]  # Cron checks the types itself
    if kind == "every":
        return Every(**arguments)  # type: ignore[arg-type]  # Every checks the types itself
    return Http(**arguments)  # type: ignore[arg-type]  # Http checks the type itself


def describe(trigger: Trigger) -> str:
    """One human line, e.g. "cron '0 6 * * *' (Europe/Berlin)", "every 5 minutes"."""
    if isinstance(trigger, (Cron, Every)) and trigger.map:
        return f"{describe(replace(trigger, map=False))}, fanned out (map)"
    if isinstance(trigger, (Cron, Every)) and not trigger.overlap:
        return f"{describe(replace(trigger, overlap=True))}, never overlapping"
    if isinstance(trigger, (Cron, Every)) and trigger.params:
        shown = ", ".join(f"{key}={json.dumps(value)}" for key, value in trigger.params.items())
        return f"{describe(replace(trigger, params=None))} with {shown}"
    if isinstance(trigger, Cron):
        return f"cron {trigger.expr!r} ({trigger.tz})"
    if isinstance(trigger, Every):
        total_minutes = trigger.seconds // _MINUTE
        parts = []
        for size, unit in ((1440, "day"), (60, "hour"), (1, "minute")):
            amount, total_minutes = divmod(total_minutes, size)
            if amount:
                parts.append(f"{amount} {unit}{'' if amount == 1 else 's'}")
        if len(parts) == 1 and parts[0].startswith("1 "):
            return f"every {parts[0][2:]}"
        return "every " + " ".join(parts)
    if isinstance(trigger, Http):
        return f"http ({'public' if trigger.public else 'authenticated'})"
    raise TriggerError(f"not a trigger: {trigger!r} ({type(trigger).__name__})")
