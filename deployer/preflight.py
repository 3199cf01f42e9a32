"""What would make tomorrow's 06:00 run fail, found at deploy time.

``check_signature`` is pure and runs in every build. ``check_inputs`` and
``check_output_writable`` reach the store with the deploying identity's
credentials, so they run only when planning a deploy (``deployer build``
stays offline): after the provider has checked access, before anything is
uploaded or changed. ``output_schema_change`` runs the new code on a sample
of ``inputs`` when planning a redeploy, to warn when the output's columns change.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import secrets
import time
import typing
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from deployer.errors import ConfigError, DeployerError
from deployer.runtimes import core, storage
from deployer.triggers import Cron, Every, describe

if TYPE_CHECKING:
    from pyarrow import fs as pafs

    from deployer.capture import Captured
    from deployer.spec import DeploySpec

PROBE_PREFIX = ".deployer-probe-"
PROBE_CONTENT = b"deployer checks that it can write here; this object is deleted at once\n"
PROBE_DELETE_ATTEMPTS = 3

# Runs read a data set with pyarrow.dataset, which skips files and folders whose
# names start with these; so does the check, or it would pass on a `_SUCCESS`.
IGNORED_PREFIXES = (".", "_")

# How a store says "not yours" or "no such bucket": pyarrow raises plain OSError
# for S3 and GCS, with the cloud's error code in the message.
DENIED_MARKERS = ("ACCESS_DENIED", "AccessDenied", "PERMISSION_DENIED", "Forbidden", "code: 403")
NO_BUCKET_MARKERS = ("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist")

ALLOW_MISSING = "pass allow_missing_inputs=True if the data set is only written after the deploy"


# -- the function's signature ------------------------------------------------------


def check_signature(function: object, captured: Captured, spec: DeploySpec) -> None:
    """Refuse a function that the runtime's call would fail on, every run.

    A run calls it with exactly one positional argument (the inputs data set
    or the request body) when it takes input, or with none (runtimes/core.py
    ``_call``). So every parameter but the first needs a default, and a
    function given ``inputs`` must take them. ``captured.takes_input`` and
    ``requires_input`` come from the same ``inspect.signature``.
    """
    scheduled = any(isinstance(trigger, (Cron, Every)) for trigger in spec.triggers)
    if scheduled and captured.requires_input and spec.inputs is None:
        raise ConfigError(
            f"{captured.qualname}() needs an input, but scheduled runs have none: pass "
            "inputs='<path or URL of a Parquet/CSV data set>' or give the parameter a default"
        )
    try:
        signature = inspect.signature(typing.cast(Callable[..., object], function))
    except (TypeError, ValueError):
        return  # no signature (some built-ins): the runtime passes the input and hopes
    parameters = list(signature.parameters.values())
    required_positional = [
        parameter
        for parameter in parameters
        if parameter.kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and parameter.default is inspect.Parameter.empty
    ]
    required_keyword = [
        parameter
        for parameter in parameters
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and parameter.default is inspect.Parameter.empty
    ]
    unfilled = required_positional[1:] + required_keyword
    shown = f"{captured.qualname}{_without_annotations(signature)}"
    if unfilled:
        names = [parameter.name for parameter in unfilled]
        them = "it" if len(names) == 1 else "them"
        example = ", ".join(f"{name}=..." for name in names)
        call = "its input as the one argument" if captured.takes_input else "no arguments"
        raise ConfigError(
            f"{shown} cannot be deployed: every run calls it "
            f"with {call}, so {_listed(names)} would have no value and every run would fail. "
            f"Give {_listed(names)} a default ({example}), or bind {them} before deploying: "
            f"functools.partial({_partial_target(function, captured)}, {example})"
        )
    if spec.inputs is not None and not captured.takes_input:
        raise ConfigError(
            f"{shown} takes no positional argument, but "
            f"inputs={spec.inputs!r} is set: every run would read the data set and could "
            "not pass it. Give the function a parameter for it (e.g. `frame`), or drop inputs="
        )
    for trigger in spec.triggers:
        if isinstance(trigger, (Cron, Every)) and trigger.params:
            try:
                core.check_params(trigger.params, captured.qualname, captured.params)
            except core.PayloadError as error:
                raise ConfigError(f"{describe(trigger)}: {error}") from None


def _without_annotations(signature: inspect.Signature) -> str:
    # "score(frame, threshold)" reads better in one line than with its types,
    # which are strings anyway under `from __future__ import annotations`.
    return str(
        signature.replace(
            parameters=[
                parameter.replace(annotation=inspect.Parameter.empty)
                for parameter in signature.parameters.values()
            ],
            return_annotation=inspect.Signature.empty,
        )
    )


def _listed(names: Sequence[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _partial_target(function: object, captured: Captured) -> str:
    # A plain function is bound by its name; a method or instance by the object
    # the user holds, which we cannot name.
    if inspect.isfunction(function) and "<" not in captured.qualname:
        return captured.qualname
    return "<the function>"


# -- inputs ------------------------------------------------------------------------


def check_inputs(url: str, *, allow_missing: bool = False) -> None:
    """Refuse ``inputs`` a run could not read: missing, an empty folder, not
    Parquet/CSV, or not readable.

    Reads metadata only: the Parquet footer or the first block of a CSV, of
    one file. ``allow_missing`` accepts a data set that is not there yet (or
    that the deploying identity may not read); what is there is still checked.
    """
    from pyarrow import fs as pafs

    filesystem, path = storage.filesystem(url)
    try:
        info = filesystem.get_file_info(path)
    except OSError as error:
        if allow_missing and _denied(error):
            return
        raise _unreadable(url, error) from None
    if info.type == pafs.FileType.NotFound:
        if allow_missing:
            return
        raise ConfigError(
            f"inputs {url!r} does not exist, so every run that reads it would fail: write the data "
            f"set there before deploying, correct the path, or {ALLOW_MISSING}"
        )
    # The runtime's own rule (runtimes/core.py _read_inputs): CSV when the
    # location's name ends in .csv, Parquet otherwise, also for a folder.
    data_format = "csv" if path.endswith(".csv") else "parquet"
    if info.type == pafs.FileType.File:
        _check_data_file(filesystem, path, data_format, url, url)
        return
    try:
        listed = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    except OSError as error:
        if allow_missing and _denied(error):
            return
        raise _unreadable(url, error) from None
    data_files = sorted(
        entry.path
        for entry in listed
        if entry.type == pafs.FileType.File and not _ignored(path, entry.path)
    )
    if not data_files:
        if allow_missing:
            return
        raise ConfigError(
            f"inputs {url!r} is a folder with no data files (names starting with '.' or '_' "
            "are skipped, as runs skip them), so every run that reads it would get no data: write "
            f"Parquet files into it, point inputs= at a file, or {ALLOW_MISSING}"
        )
    first = data_files[0]
    shown = storage.join(url, first[len(path) :])
    _check_data_file(filesystem, first, data_format, url, shown)


def _ignored(root: str, path: str) -> bool:
    relative = path[len(root) :].strip("/")
    return any(part.startswith(IGNORED_PREFIXES) for part in relative.split("/"))


def _check_data_file(
    filesystem: pafs.FileSystem, path: str, data_format: str, url: str, shown: str
) -> None:
    import pyarrow as pa

    try:
        if data_format == "csv":
            from pyarrow import csv

            # Opening parses the first block only, to find the columns.
            with filesystem.open_input_stream(path) as stream, csv.open_csv(stream):
                pass
        else:
            import pyarrow.parquet as pq

            pq.read_metadata(path, filesystem=filesystem)
    except pa.ArrowInvalid as error:
        where = f"inputs {url!r}" if shown == url else f"inputs {url!r}: {shown}, its first file,"
        if data_format == "csv":
            raise ConfigError(
                f"{where} cannot be read as CSV ({_first_line(error)}): fix the file, or point "
                "inputs= at a Parquet data set"
            ) from None
        raise ConfigError(
            f"{where} is not a Parquet file ({_first_line(error)}). Runs read "
            "inputs as Parquet, or as CSV when the name ends in .csv: convert it "
            "(frame.to_parquet(...)) or point inputs= at the data set"
        ) from None
    except OSError as error:
        raise _unreadable(url, error) from None


def _unreadable(url: str, error: OSError) -> ConfigError:
    if _denied(error):
        return ConfigError(
            f"inputs {url!r} cannot be read: permission denied ({_first_line(error)}). Give "
            "the identity you deploy with read access to it (the function gets its own), or "
            f"{ALLOW_MISSING}"
        )
    return ConfigError(
        f"inputs {url!r} cannot be read ({type(error).__name__}: {_first_line(error)}): check "
        f"the location and your access, or {ALLOW_MISSING}"
    )


# -- output ------------------------------------------------------------------------


def check_output_writable(url: str, name: str) -> None:
    """Write a tiny object under ``{output}/{name}/`` and delete it again.

    A refused write raises, naming the location and the store's own error.
    The probe is never meant to stay: a delete that fails is retried, and if
    the probe is still there after that the warning names it. (On S3, pyarrow
    keeps the emptied folder as a zero-byte ``{output}/{name}/`` marker: the
    folder runs write into, not a probe.)
    """
    filesystem, root = storage.filesystem(url)
    probe_name = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    probe = storage.join(root, name, probe_name)
    shown = storage.join(url, name, probe_name)
    with _removing_created_folders(url, name):
        try:
            storage.write_bytes(filesystem, probe, PROBE_CONTENT)
        except OSError as error:  # what pyarrow raises for every store's refusal
            # A write can fail after the store kept the object (a lost reply).
            left = "" if _remove_probe(filesystem, probe) else f"; {_left_behind(shown)}"
            raise _not_writable(url, shown, error, left) from None
        if not _remove_probe(filesystem, probe):
            warnings.warn(
                f"output {url!r} is writable, but the test object deployer wrote there could "
                f"not be deleted: {_left_behind(shown)}",
                UserWarning,
                stacklevel=2,
            )


def _remove_probe(filesystem: pafs.FileSystem, path: str) -> bool:
    """Delete the probe, with a few tries; True when it is gone (or never got there)."""
    from pyarrow import fs as pafs

    for attempt in range(PROBE_DELETE_ATTEMPTS):
        if storage.delete_quietly(filesystem, path):
            return True
        time.sleep(0.2 * (attempt + 1))
    try:
        return filesystem.get_file_info(path).type == pafs.FileType.NotFound
    except OSError:
        return False


def _left_behind(shown: str) -> str:
    return f"it may still be at {shown} (a few bytes, never read): delete it by hand"


@contextlib.contextmanager
def _removing_created_folders(url: str, name: str) -> typing.Iterator[None]:
    """On a local disk, remove again the (empty) folders the probe had to create,
    so that a plan changes nothing. Object stores have no folders to remove."""
    local = storage.local_path(url)
    if local is None:
        yield
        return
    created = []
    folder = os.path.join(local, name)
    while not os.path.lexists(folder):
        created.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    try:
        yield
    finally:
        for folder in created:  # deepest first; a folder someone filled meanwhile stays
            try:
                os.rmdir(folder)
            except OSError:
                break


def _not_writable(url: str, shown: str, error: OSError, left: str) -> ConfigError:
    reason = f"{type(error).__name__}: {_first_line(error)}"
    if _denied(error):
        return ConfigError(
            f"output {url!r} is not writable: writing a test object ({shown}) was refused, "
            f"permission denied ({reason}){left}. Give the identity you deploy with write "
            "access to it, or choose another output="
        )
    if storage.local_path(url) is None and (
        isinstance(error, FileNotFoundError)
        or any(marker in str(error) for marker in NO_BUCKET_MARKERS)
    ):
        return ConfigError(
            f"output {url!r} is not writable: its bucket does not exist ({reason}){left}. "
            "Create the bucket, or choose another output="
        )
    return ConfigError(
        f"output {url!r} is not writable: writing a test object ({shown}) failed "
        f"({reason}){left}. Check the location and your access, or choose another output="
    )


def _denied(error: BaseException) -> bool:
    return isinstance(error, PermissionError) or any(
        marker in str(error) for marker in DENIED_MARKERS
    )


def _first_line(error: BaseException) -> str:
    # pyarrow appends request ids and C++ details on further lines.
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


# -- the output's schema -------------------------------------------------------------

SAMPLE_ROWS = 100


def output_schema_change(function: Callable[..., Any], spec: DeploySpec) -> str | None:
    """How new code changes the output's columns from the last committed run, or None.

    Found by calling ``function`` on the first SAMPLE_ROWS rows of ``inputs``
    on this machine (reading only those rows), as a run would call it. Nothing
    to compare (no inputs, no committed run) is None. The new code raising on
    the sample, or returning what Parquet cannot store, is said too: every run
    would fail the same way.
    """
    if spec.inputs is None or not _takes_input(function):
        return None
    from deployer.runtimes import core
    from deployer.runtimes.profile import FORMAT, schema_changes
    from deployer.store import committed_runs

    try:
        last = committed_runs(spec.name, output=spec.output, last=1)
    except (OSError, DeployerError):
        return None
    old = ((last[0].get("metrics") or {}).get("schema") or {}) if last else {}
    if not old:
        return None
    sample = _sample(spec.inputs)
    if sample is None:
        return None
    try:
        table = core.to_arrow(core.to_frame(function(sample)))
    except Exception as error:  # the user's code: what it raised is the finding
        return (
            f"the new code fails on the first {len(sample)} rows of inputs, as every run "
            f"would: {type(error).__name__}: {_first_line(error)}"
        )
    new = {field.name: str(field.type) for field in table.schema}
    changes = schema_changes(
        {"format": FORMAT, "columns": {column: {"type": kind} for column, kind in new.items()}},
        {"format": FORMAT, "columns": {column: {"type": kind} for column, kind in old.items()}},
    )
    if not changes:
        return None
    described = [
        f"+{change['column']} {change['type']}"
        if change["change"] == "added"
        else f"-{change['column']}"
        if change["change"] == "removed"
        else f"{change['column']} {change['old_type']} -> {change['new_type']}"
        for change in changes
    ]
    return (
        f"the output's columns change from the last run ({last[0]['run_id']}): "
        f"{', '.join(described)} (found by calling the new code on {len(sample)} rows of "
        "inputs). Readers of the outputs get both schemas: read_outputs warns and says how "
        "it combines them"
    )


def _takes_input(function: Callable[..., Any]) -> bool:
    try:
        return bool(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return True


def _sample(url: str) -> Any:
    """The first SAMPLE_ROWS rows of a data set as a DataFrame (only those are read)."""
    import pyarrow.dataset as dataset

    filesystem, path = storage.filesystem(url)
    data_format = "csv" if path.endswith(".csv") else "parquet"
    try:
        found = dataset.dataset(path, filesystem=filesystem, format=data_format)
        return found.head(SAMPLE_ROWS).to_pandas()
    except (OSError, ValueError):  # missing (allowed) or unreadable: checked elsewhere
        return None
