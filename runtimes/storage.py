"""The storage layout of runs, and how to reach an object store through pyarrow.fs.

    {output}/{name}/runs/{run_id}/started.json     written FIRST: run id, trigger, started,
                                                   timeout_seconds, code_hash
    {output}/{name}/runs/{run_id}/output.parquet   predictions (absent if none)
    {output}/{name}/runs/{run_id}/metrics.json     built-in + user metrics
    {output}/{name}/runs/{run_id}/run.json         written LAST: the commit marker

Readers only trust the results of runs whose run.json exists, so a run that
died half-way never shows half its output. started.json alone is a run that
is still going or that the platform stopped (timeout, out of memory) before it
could commit; readers tell the two apart by its timeout. It stays after the
commit (deleting it would cost every run a second request) and is never read
once run.json exists. pyarrow.fs is used (not fsspec) so the runtime ships no
extra dependencies and the same code reaches S3, GCS, Azure and local disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from pyarrow import fs as pafs

STARTED_FILE = "started.json"
OUTPUT_FILE = "output.parquet"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"

# Schemes an output or inputs URL may use; a plain path means the local disk.
SCHEMES = ("file", "s3", "gs", "az", "abfs")


class StorageError(Exception):
    """An output or inputs location is unsupported or unreachable."""


def new_run_id(started: datetime, *, fire_time: datetime | None = None, event_id: str = "") -> str:
    """A run id that sorts by time: ``20261127T060000Z-<8 hex>``.

    A scheduled run derives its id from the fire time and the trigger's event id,
    so a provider's retry of the same event overwrites the same run instead of
    adding a duplicate. Other runs get a random suffix.
    """
    moment = fire_time or started
    stamp = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if fire_time is not None:
        suffix = hashlib.sha256(f"{stamp}|{event_id}".encode()).hexdigest()[:8]
    else:
        # Milliseconds first, so runs within one second still sort by time
        # ("the last run" is then the last one), then randomness against clashes.
        milliseconds = moment.microsecond // 1000
        suffix = f"{milliseconds:03x}{secrets.token_hex(3)[:5]}"
    return f"{stamp}-{suffix}"


def check_location(url: str) -> None:
    """Raise StorageError unless ``url`` names a supported store."""
    scheme = urlparse(url).scheme
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme and scheme not in SCHEMES:
        raise StorageError(
            f"unsupported storage scheme '{scheme}://' in {url!r}: use a local path, file://, "
            "s3://, gs://, az:// or abfs://"
        )


def filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``url`` and the path within it.

    Endpoint overrides come from the standard environment, so the same code
    reaches the emulators in tests and the real clouds for users:
    AWS_ENDPOINT_URL(_S3) for S3, STORAGE_EMULATOR_HOST for GCS and
    AZURE_STORAGE_CONNECTION_STRING-style settings for Azure.
    """
    from pyarrow import fs as pafs

    check_location(url)
    parsed = urlparse(url)
    scheme = parsed.scheme if len(parsed.scheme) > 1 else ""
    path = local_path(url)
    if path is not None:
        return pafs.LocalFileSystem(), path
    bucket_path = (parsed.netloc + parsed.path).rstrip("/")
    if scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        options: dict[str, Any] = {}
        if endpoint:
            endpoint_url = urlparse(endpoint)
            options["endpoint_override"] = endpoint_url.netloc or endpoint
            options["scheme"] = endpoint_url.scheme or "https"
        if region:
            options["region"] = region
        try:
            # Delayed open sends a small object as one PutObject instead of a
            # three-request multipart upload; most run files are small. The
            # option is newer than some pyarrow versions a target may resolve to
            # (python3.11 on Lambda gets pyarrow 20, which lacks it).
            return pafs.S3FileSystem(allow_delayed_open=True, **options), bucket_path
        except TypeError:
            return pafs.S3FileSystem(**options), bucket_path
    if scheme == "gs":
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            emulator_url = urlparse(emulator if "://" in emulator else f"http://{emulator}")
            return (
                pafs.GcsFileSystem(
                    endpoint_override=emulator_url.netloc,
                    scheme=emulator_url.scheme,
                    anonymous=True,
                ),
                bucket_path,
            )
        return pafs.GcsFileSystem(), bucket_path
    # az://container/path and abfs://container@account.dfs.core.windows.net/path
    settings = _azure_settings()
    account = settings.get("AccountName", "")
    container = parsed.netloc
    if "@" in container:
        container, host = container.split("@", 1)
        account = host.split(".", 1)[0]
    # Without a key pyarrow signs in with Azure's default credential chain
    # (a function app's managed identity, `az login` on a laptop).
    azure_options: dict[str, Any] = {"account_name": account}
    if settings.get("AccountKey"):
        azure_options["account_key"] = settings["AccountKey"]
    if settings.get("BlobEndpoint"):
        blob_url = urlparse(settings["BlobEndpoint"])
        # pyarrow also asks the DFS endpoint whether the account has a
        # hierarchical namespace: the same host for an emulator (Azurite has
        # no DFS and answers "no"), the .dfs. twin of a .blob. host otherwise.
        dfs_url = urlparse(
            settings.get("DfsEndpoint") or settings["BlobEndpoint"].replace(".blob.", ".dfs.", 1)
        )
        azure_options["blob_storage_authority"] = blob_url.netloc
        azure_options["blob_storage_scheme"] = blob_url.scheme or "https"
        azure_options["dfs_storage_authority"] = dfs_url.netloc
        azure_options["dfs_storage_scheme"] = dfs_url.scheme or "https"
    return pafs.AzureFileSystem(**azure_options), (container + parsed.path).rstrip("/")


# The single settings, each overriding its part of AZURE_STORAGE_CONNECTION_STRING.
_AZURE_VARIABLES = {
    "AccountName": "AZURE_STORAGE_ACCOUNT_NAME",
    "AccountKey": "AZURE_STORAGE_ACCOUNT_KEY",
    "BlobEndpoint": "AZURE_STORAGE_BLOB_ENDPOINT",
    "DfsEndpoint": "AZURE_STORAGE_DFS_ENDPOINT",
}


def _azure_settings() -> dict[str, str]:
    """Account, key and endpoints for Azure storage, from the environment.

    ``AZURE_STORAGE_CONNECTION_STRING`` (``AccountName=...;AccountKey=...;
    BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1``, as Azurite and the
    portal give it) first, then the single variables over it.
    """
    settings: dict[str, str] = {}
    for part in os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";"):
        key, _, value = part.partition("=")
        if key.strip() and value:
            settings[key.strip()] = value.strip()
    for key, variable in _AZURE_VARIABLES.items():
        if os.environ.get(variable):
            settings[key] = os.environ[variable]
    return settings


def local_path(url: str) -> str | None:
    """The absolute path a plain path or ``file://`` URL names; None for an object store."""
    parsed = urlparse(url)
    scheme = parsed.scheme if len(parsed.scheme) > 1 else ""  # "C:" is a drive, not a scheme
    if scheme not in ("", "file"):
        return None
    path = parsed.path if scheme == "file" else url
    return os.path.abspath(os.path.expanduser(path))


def join(*parts: str) -> str:
    return "/".join(
        part.strip("/") if index else part.rstrip("/") for index, part in enumerate(parts) if part
    )


def runs_path(root: str, name: str) -> str:
    return join(root, name, "runs")


def run_path(root: str, name: str, run_id: str) -> str:
    return join(root, name, "runs", run_id)


def write_bytes(filesystem_: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write one object so that a reader never sees it half-written (see write_stream)."""
    write_stream(filesystem_, path, lambda stream: stream.write(data))


def write_stream(filesystem_: pafs.FileSystem, path: str, produce: Callable[[Any], object]) -> None:
    """Write one object by handing ``produce`` the open stream; a reader never
    sees it half-written.

    Object stores make each PUT atomic; on a local disk we write a temporary
    file next to the target and rename it over, which is atomic on POSIX.
    Streaming lets a large output go to the store as it is encoded, without
    a copy in memory first.
    """
    from pyarrow import fs as pafs

    parent = path.rsplit("/", 1)[0]
    if isinstance(filesystem_, pafs.LocalFileSystem):
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with _opened_in_folder(filesystem_, parent, temporary) as stream:
                produce(stream)
            filesystem_.move(temporary, path)
        except BaseException:
            # A refused write must not leave its temporary file behind.
            delete_quietly(filesystem_, temporary)
            raise
        return
    with filesystem_.open_output_stream(path) as stream:
        produce(stream)


# A folder created for a write may be removed before the file is opened in it,
# by something tidying up its own empty folders (a plan's write test does):
# create it again, this many times at most.
LOCAL_OPEN_ATTEMPTS = 5


def _opened_in_folder(filesystem_: pafs.FileSystem, folder: str, path: str) -> Any:
    """``path`` opened for writing, its folder created first (again, if it went)."""
    for attempt in range(LOCAL_OPEN_ATTEMPTS):
        try:
            filesystem_.create_dir(folder, recursive=True)
            return filesystem_.open_output_stream(path)
        except FileNotFoundError:
            if attempt == LOCAL_OPEN_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def delete_quietly(filesystem_: pafs.FileSystem, path: str) -> bool:
    """Delete one file if it can be deleted; True when it is gone.

    For cleaning up after a failure, where the store may be refusing requests
    and the original error is the one worth reporting.
    """
    try:
        filesystem_.delete_file(path)
    except FileNotFoundError:
        return True
    except Exception:
        return False
    return True


def read_bytes(filesystem_: pafs.FileSystem, path: str) -> bytes:
    with filesystem_.open_input_stream(path) as stream:
        return bytes(stream.readall())


def json_bytes(value: Any) -> bytes:
    """How every JSON file of a run is written."""
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode()


def write_json(filesystem_: pafs.FileSystem, path: str, value: Any) -> None:
    write_bytes(filesystem_, path, json_bytes(value))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
