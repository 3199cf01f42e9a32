"""Entry of the AWS Lambda provider: ``deployer_runtime.aws.handler``.

Events it answers:
- EventBridge Scheduler, whose target input deployer writes as
  ``{"deployer": {"trigger": "schedule", "schedule": NAME,
  "scheduled_time": "<aws.scheduler.scheduled-time>"}}``. The run id comes from
  the scheduled time and the schedule's name, so Scheduler's retry of the same
  firing overwrites one run instead of adding a second.
- Function URL requests (payload format 2.0): JSON in, JSON out, 400 on a body
  that is not JSON or not a table.
- Direct invokes: ``{"deployer": {"trigger": "manual", "payload": ...}}``.
- Shards of a map run, by direct invoke only (IAM: the owner):
  ``{"deployer": {"trigger": "map", "shard": {...}}}`` (runtimes/fanout.py).

Every run gets the invocation's deadline (``context.get_remaining_time_in_millis()``),
so a run about to be stopped by Lambda's timeout records itself as failed
first, and a record the store refuses goes to the log (CloudWatch) as one
JSON line tagged ``deployer.run_not_committed``.

Slim mode: when the dependencies are too large for layers, they are one archive
in S3 (``DEPLOYER_SLIM_ARCHIVE`` = s3://bucket/key, ``DEPLOYER_SLIM_SHA256``),
downloaded in parallel ranges, decompressed (zstd) and unpacked into /tmp as it
arrives on cold start, and reused while the instance is warm. This module imports
only the standard library at load, so that happens before anything imports
pandas; the decompressor is the standard library's from Python 3.14, before that
the backports.zstd that deploy puts in the code zip.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time
from datetime import datetime
from typing import Any

_loaded: Any = None


class ScheduledRunFailed(Exception):
    """A scheduled run failed; its run.json (with the traceback) is already written."""


def _task_root() -> str:
    return os.environ.get("LAMBDA_TASK_ROOT") or os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))
    )


# A slim archive comes down in ranges of RANGE_BYTES, RANGE_STREAMS at once, and is
# decompressed and unpacked as it arrives (bench/slim_archive.py chose these).
RANGE_BYTES = 16 * 1024 * 1024
RANGE_STREAMS = 8


def _unpack_slim_dependencies() -> None:
    archive_url = os.environ.get("DEPLOYER_SLIM_ARCHIVE")
    if not archive_url:
        return
    expected = os.environ["DEPLOYER_SLIM_SHA256"]
    target = os.path.join(os.environ.get("DEPLOYER_SLIM_DIR", "/tmp"), f"deps-{expected[:16]}")
    if not os.path.exists(os.path.join(target, ".complete")):
        _fetch_slim_archive(archive_url, expected, target)
    if target not in sys.path:
        # After the task root, as Lambda orders layers: the bundle's own modules
        # must win over a same-named module among the dependencies.
        task_root = _task_root()
        position = sys.path.index(task_root) + 1 if task_root in sys.path else 0
        sys.path.insert(position, target)


def _fetch_slim_archive(archive_url: str, expected: str, target: str) -> None:
    """Download, decompress and unpack in one pass into a folder of its own, checking the
    sha256 of what came down; only a verified folder is renamed to ``target``.

    The archive is unpacked before its last byte is hashed, so a changed one is
    written (regular files and folders only, inside the folder: ``unpack_tree``)
    and then deleted, never put on sys.path.
    """
    import boto3
    import botocore.config

    bucket, _, key = archive_url[len("s3://") :].partition("/")
    client = boto3.client("s3", config=botocore.config.Config(max_pool_connections=RANGE_STREAMS))
    partial = f"{target}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    download = _RangedDownload(client, bucket, key)
    try:
        with _zstd().ZstdFile(download, mode="rb") as decompressed:
            unpack_tree(decompressed, partial)
        download.drain()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        download.close()
    if download.sha256 != expected:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(
            f"{archive_url} has sha256 {download.sha256}, expected {expected}: "
            "the dependency archive changed after deploy; redeploy"
        )
    open(os.path.join(partial, ".complete"), "w").close()
    shutil.rmtree(target, ignore_errors=True)  # an earlier, unfinished attempt
    os.rename(partial, target)
    print(
        f"deployer: dependencies fetched and unpacked in {time.perf_counter() - started:.2f} s "
        f"({download.size / 2**20:.0f} MB from {archive_url})",
        file=sys.stderr,
        flush=True,
    )


def _zstd() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[no-redef,unused-ignore]
        except ImportError:
            raise RuntimeError(
                "the slim dependency archive is zstd-compressed, and neither "
                "compression.zstd (Python 3.14+) nor backports.zstd is in the code zip: "
                "deploy again with this version of deployer"
            ) from None
    return zstd


def unpack_tree(stream: Any, destination: str) -> None:
    """Unpack the tar ``stream`` (read once, in order) into ``destination``.

    Only what deployer's archives hold is accepted: regular files and folders
    with relative names that stay inside ``destination``; anything else (links,
    devices, absolute or ``..`` names) raises before it is written. Files are
    read whole and written by a few threads while the stream goes on: creating
    thousands of files waits on the filesystem, not on this process (tarfile's
    extractall, with its "data" filter checking every name through the
    filesystem and copying in 16 KB pieces, took twice as long).
    """
    from concurrent.futures import ThreadPoolExecutor

    made: set[str] = set()
    in_flight: collections.deque[Any] = collections.deque()
    with (
        ThreadPoolExecutor(max_workers=UNPACK_WRITERS) as writers,
        tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_READ_BYTES) as archive,
    ):
        for member in archive:
            name = member.name
            if (
                name.startswith("/")
                or "\\" in name
                or ".." in name.split("/")
                or not (member.isfile() or member.isdir())
            ):
                raise RuntimeError(
                    f"the dependency archive holds {name!r} ({member.type!r}): deployer's "
                    "archives hold only files and folders inside their root; redeploy"
                )
            path = os.path.join(destination, name)
            if member.isdir():
                os.makedirs(path, exist_ok=True)
                continue
            folder = os.path.dirname(path)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            content = archive.extractfile(member)
            assert content is not None  # a regular file
            mode = 0o755 if member.mode & 0o111 else 0o644
            in_flight.append(writers.submit(_write_new_file, path, content.read(), mode))
            while len(in_flight) > 4 * UNPACK_WRITERS:
                in_flight.popleft().result()
        for written in in_flight:
            written.result()


def _write_new_file(path: str, content: bytes, mode: int) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(content)


UNPACK_WRITERS = 8
TAR_READ_BYTES = 64 * 1024


class _RangedDownload(io.RawIOBase):
    """An S3 object read in order while later ranges of it are already coming down,
    hashed as it is read."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._client, self._bucket, self._key = client, bucket, key
        first = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{RANGE_BYTES - 1}")
        self._size = int(first["ContentRange"].rsplit("/", 1)[1])
        self._pool = ThreadPoolExecutor(max_workers=RANGE_STREAMS)
        self._next = RANGE_BYTES
        self._pending: collections.deque[Any] = collections.deque()
        for _ in range(RANGE_STREAMS):
            self._request()
        self._chunk = memoryview(first["Body"].read())
        self._hash = hashlib.sha256(self._chunk)
        self._offset = 0

    def _request(self) -> None:
        if self._next >= self._size:
            return
        start, end = self._next, min(self._next + RANGE_BYTES, self._size) - 1
        self._next = end + 1
        self._pending.append(self._pool.submit(self._get, start, end))

    def _get(self, start: int, end: int) -> bytes:
        reply = self._client.get_object(
            Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{end}"
        )
        data: bytes = reply["Body"].read()
        if len(data) != end - start + 1:
            raise OSError(f"s3://{self._bucket}/{self._key}: range {start}-{end} came short")
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._offset >= len(self._chunk):
            if not self._pending:
                return 0
            self._chunk = memoryview(self._pending.popleft().result())
            self._hash.update(self._chunk)
            self._offset = 0
            self._request()
        count = min(len(buffer), len(self._chunk) - self._offset)
        buffer[:count] = self._chunk[self._offset : self._offset + count]
        self._offset += count
        return count

    def drain(self) -> None:
        """Read what the unpacking left (the tar's end padding): all of it is hashed."""
        while self._pending:  # the range being read was hashed when it came
            self._hash.update(self._pending.popleft().result())
            self._request()
        self._chunk, self._offset = memoryview(b""), 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if not self.closed:
            for pending in self._pending:
                pending.cancel()
            self._pool.shutdown(wait=False)
        super().close()


_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+$")
_PARAMETER_ARN = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter/[\w/.-]+$")
_SECRET_NAME = re.compile(r"^[\w/+=.@-]{1,512}$")
_PARAMETER_NAME = re.compile(r"^/?[\w.-]+(/[\w.-]+)*$")
SECRET_REFERENCE_FORMS = (
    "secretsmanager:NAME, secretsmanager:NAME#JSON_KEY, a Secrets Manager ARN (optionally "
    "#JSON_KEY), ssm:/PARAMETER/PATH or an SSM parameter ARN"
)


def parse_secret_reference(reference: str) -> tuple[str, str, str | None]:
    """("secretsmanager" | "ssm", secret id or parameter name/ARN, JSON key or None);
    ValueError naming the accepted forms."""
    body, _, key = reference.partition("#")
    if body.startswith("secretsmanager:") and _SECRET_NAME.match(body[len("secretsmanager:") :]):
        return "secretsmanager", body[len("secretsmanager:") :], key or None
    if _SECRET_ARN.match(body):
        return "secretsmanager", body, key or None
    if not key and body.startswith("ssm:") and _PARAMETER_NAME.match(body[len("ssm:") :]):
        return "ssm", body[len("ssm:") :], None
    if not key and _PARAMETER_ARN.match(body):
        return "ssm", body, None
    raise ValueError(f"{reference!r} is not a secret reference: use {SECRET_REFERENCE_FORMS}")


def _resolve_secrets() -> None:
    """Read the user's secrets into this process's environment, once per cold start.

    Errors name the variable, its reference and the service's error code,
    never a value."""
    from .core import SECRETS_VARIABLE, SecretError

    references = json.loads(os.environ.get(SECRETS_VARIABLE) or "{}")
    if not references:
        return
    import boto3  # in every Lambda Python runtime; only loaded when there are secrets

    clients: dict[str, Any] = {}
    for name, reference in sorted(references.items()):
        service, identifier, key = parse_secret_reference(reference)
        client = clients.get(service) or clients.setdefault(service, boto3.client(service))
        try:
            if service == "ssm":
                parameter = client.get_parameter(Name=identifier, WithDecryption=True)
                value = parameter["Parameter"]["Value"]
            else:
                value = client.get_secret_value(SecretId=identifier).get("SecretString")
                if value is None:
                    raise SecretError(
                        f"secret {name} ({reference}) is binary: store it as text (SecretString)"
                    )
        except SecretError:
            raise
        except Exception as error:  # botocore's ClientError, without importing botocore
            code = getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)
            raise SecretError(
                f"secret {name} ({reference}) could not be read at cold start: {code}. Check that "
                "it exists in this function's region and account, and deploy again so that the "
                "execution role may read it"
            ) from None
        if key is not None:
            try:
                value = json.loads(value)[key]
            except (ValueError, KeyError, TypeError):
                raise SecretError(
                    f"secret {name} ({reference}) is not a JSON object with the key {key!r}"
                ) from None
            if not isinstance(value, str):
                value = json.dumps(value)
        os.environ[name] = value


def _load() -> Any:
    global _loaded
    if _loaded is None:
        _unpack_slim_dependencies()
        _resolve_secrets()
        from . import core

        _loaded = core.load(_task_root())
    return _loaded


def _http_reply(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body, default=str),
    }


def _deadline(context: Any) -> float | None:
    """When Lambda will stop this invocation, on the time.monotonic() clock."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return time.monotonic() + remaining() / 1000


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    from . import core

    deadline = _deadline(context)
    loaded = _load()
    if "requestContext" in event and "http" in event.get("requestContext", {}):
        raw: bytes | str = event.get("body") or ""
        if event.get("isBase64Encoded"):
            raw = base64.b64decode(raw)
        try:
            payload, params = core.split_params(core.parse_body(raw))
            result = core.run(
                loaded, trigger="http", payload=payload, params=params, deadline=deadline
            )
        except core.PayloadError as error:
            return _http_reply(400, core.bad_request(error))
        # A function URL's caller is not necessarily the owner: no error message.
        status, body = core.response_body(result)
        return _http_reply(*core.for_http_caller(status, body, loaded.manifest.name))
    request = event.get("deployer", {})
    trigger = request.get("trigger", "manual")
    if trigger == "map":  # one shard of a map run: only a direct invoke reaches here
        from . import fanout

        try:
            return {"map": fanout.run_shard(loaded, request.get("shard"))}
        except fanout.ShardRequestError as error:
            return {"http_status": 400, "body": core.bad_request(str(error))}
    if trigger == "schedule" and request.get("map"):
        return _scheduled_map(loaded, request, context, deadline)
    if trigger == "schedule":
        fire_time = datetime.fromisoformat(request["scheduled_time"].replace("Z", "+00:00"))
        result = core.run(
            loaded,
            trigger="schedule",
            fire_time=fire_time,
            event_id=f"aws:{request.get('schedule', '')}",
            deadline=deadline,
            params=request.get("params"),
            overlap=request.get("overlap", True) is not False,
        )
        if result.status == "failed":
            # Raising makes the failure visible to Lambda (error metrics, alarms)
            # and lets its retry of this event run again; the retry derives the
            # same run id, so it overwrites this failed run rather than adding one.
            failure = result.record.get("error", {})
            raise ScheduledRunFailed(
                f"run {result.run_id} failed: {failure.get('type')}: {failure.get('message')}"
            )
    else:
        payload = request.get("payload", core.NO_PAYLOAD)
        try:
            result = core.run(
                loaded,
                trigger="manual",
                payload=payload,
                params=request.get("params"),
                deadline=deadline,
            )
        except core.PayloadError as error:
            return {"http_status": 400, "body": core.bad_request(error)}
    status, body = core.response_body(result)
    return {"http_status": status, "body": body}


def _scheduled_map(
    loaded: Any, request: dict[str, Any], context: Any, deadline: float | None
) -> dict[str, Any]:
    """A schedule with map=True: this invocation coordinates, invoking this very
    function (its alias, as invoked) once per shard."""
    import boto3
    import botocore.config

    from . import fanout

    concurrency = int(
        os.environ.get(fanout.CONCURRENCY_VARIABLE) or fanout.DEFAULT_SCHEDULED_CONCURRENCY
    )
    client = boto3.client(
        "lambda",
        config=botocore.config.Config(
            max_pool_connections=concurrency,
            read_timeout=960,  # a shard may run Lambda's 15 minutes
            retries={"max_attempts": 1},  # throttling: invoke_shards retries it
        ),
    )
    function = (
        getattr(context, "invoked_function_arn", None) or os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    )
    manifest = loaded.manifest
    record = fanout.scheduled_map(
        fanout.MapTarget(manifest.name, manifest.output, manifest.code_hash),
        manifest.inputs,
        invoke_shards(client, function),
        fire_time=datetime.fromisoformat(request["scheduled_time"].replace("Z", "+00:00")),
        event_id=f"aws:{request.get('schedule', '')}",
        concurrency=concurrency,
        deadline=deadline,
        timeout_seconds=manifest.timeout_seconds,
    )
    if record["status"] == "failed":  # visible to Lambda; its retry redoes the same run
        failure = record.get("error") or {}
        raise ScheduledRunFailed(
            f"map run {record['run_id']} failed: {failure.get('type')}: {failure.get('message')}"
        )
    return {"http_status": 200, "body": {"run_id": record["run_id"], "status": record["status"]}}


# Lambda's answers to more concurrent invokes than the account or function allows.
THROTTLED = ("TooManyRequestsException", "ThrottlingException")


def invoke_shards(client: Any, function: str, qualifier: str | None = None) -> Any:
    """A map run's dispatcher over Lambda: each shard one synchronous invoke (a
    request of a few hundred bytes, inside Lambda's 6 MB); throttling is retried
    here with backoff and does not count against the shard. Used by the host
    (deployer map) and by a scheduled map run's coordinator in Lambda."""
    from botocore.exceptions import ClientError

    from . import fanout

    target = {"FunctionName": function, **({"Qualifier": qualifier} if qualifier else {})}

    def dispatch(request: dict[str, Any]) -> dict[str, Any]:
        event = {"deployer": {"trigger": "map", "shard": request}}
        for pause in [*fanout.busy_pauses(), None]:
            try:
                response = client.invoke(Payload=json.dumps(event).encode(), **target)
                break
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code not in THROTTLED or pause is None:
                    raise fanout.ShardUnavailable(code, str(error)) from None
                time.sleep(pause)
        reply = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):  # Lambda's: a timeout, a crash, out of memory
            raise fanout.ShardUnavailable(
                str(reply.get("errorType", "LambdaError")), str(reply.get("errorMessage", ""))
            )
        if "map" not in reply:
            message = (reply.get("body") or {}).get("error", {}).get("message", reply)
            raise fanout.ShardUnavailable("BadRequest", str(message))
        result: dict[str, Any] = reply["map"]
        return result

    return dispatch
