"""The embedded default provider: runs deployed functions on this machine.

State lives under ``DEPLOYER_HOME`` (default ``./.deployer``), laid out like a
tiny cloud:

    local/functions/{name}.json   what is deployed (written temp-then-rename)
    local/bundles/{bundle_sha}/   unpacked bundles, immutable once written
    local/logs/{name}.log         the functions' stderr, rotated at LOG_MAX_BYTES
    local/serve.lock              held by the one `deployer serve` of this home
    local/spool/{name}/{run_id}.json  run records the store refused (read_runs shows them)
    local/locks/{name}.lock       held while a plan for the name is checked and applied
    store/                        the default output store

Nothing under ``local/`` is trusted because of where it sits: a function name
is validated before it becomes a path, and the unpacked bundle is checked
against the tree digest in its entry (outside the bundle) before a worker
loads it.

Environments are shared across projects in ``DEPLOYER_CACHE`` (default
``~/.cache/deployer``): one uv venv per ``deps_hash``, made once and reused, so
a redeploy with the same dependencies installs nothing. Every run executes in
a subprocess of that environment with ``python -I``: a package installed in the
user's environment but missing from the bundle's requirements is not
importable there, exactly as in the cloud.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import hashlib
import io
import json
import os
import queue
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from deployer.archive import sha256_file, write_atomically
from deployer.cache import cache_root, locked, posix_locks
from deployer.errors import ConfigError, ProviderError
from deployer.housekeeping import mark_used
from deployer.providers.base import (
    FUNCTION_STEPS,
    BaseProvider,
    Deployed,
    DeploymentState,
    InstallDependencies,
    Invocation,
    LogEvent,
    LogPage,
    LogQuery,
    Plan,
    Step,
    UpdateCode,
    Version,
    invoke_body,
    trigger_changes,
)
from deployer.runtimes import core, fanout, storage
from deployer.spec import ENV_NAME, NAME_PATTERN, NAME_RULE, check_name

if TYPE_CHECKING:
    from deployer.bundle import Bundle
    from deployer.console import Reporter
    from deployer.spec import DeploySpec

DEFAULT_PORT = 8765
# Loading (starting the interpreter, importing pandas and the model's
# libraries, unpickling) has its own limit: the function's timeout counts only
# the call, as a warm cloud instance's would.
LOAD_TIMEOUT_SECONDS = 120
# A worker's stderr (the function's prints and tracebacks) is rotated at this
# size, keeping LOG_BACKUPS older files: one chatty run must not fill the disk.
LOG_MAX_BYTES = 10 * 2**20
LOG_BACKUPS = 2
# Each line of a log starts with the time it was printed (UTC) and a space.
LOG_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
LOG_TIME = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ")
# A line longer than this without a break is written in pieces.
LOG_LINE_BYTES = 65536
# How much of what a worker printed last is kept to explain a crash.
TAIL_BYTES = 2048
# The worker puts the bundle first on sys.path itself, because ``python -I``
# (isolated: no PYTHONPATH, no user site) ignores the usual ways of doing so.
BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); from deployer_runtime.local import main; main()"
)


def home() -> Path:
    return Path(os.environ.get("DEPLOYER_HOME", ".deployer")).resolve()


def port() -> int:
    return int(os.environ.get("DEPLOYER_PORT", DEFAULT_PORT))


def _functions_dir() -> Path:
    return home() / "local" / "functions"


def log_path(name: str) -> Path:
    # Every path under local/ built from a name is checked with deploy's own
    # rule first, so a name like ``../../x/evil`` never reaches the filesystem.
    return home() / "local" / "logs" / f"{check_name(name)}.log"


def environment_path(deps_hash: str) -> Path:
    return cache_root() / "envs" / deps_hash


def environment_python(environment: Path) -> Path:
    return environment / "bin" / "python"


def ensure_environment(bundle: Bundle, reporter: Reporter) -> tuple[Path, bool]:
    """The venv for ``bundle.deps_hash``: reused if it exists, else made with uv.

    Returns (path, created). Built in a temporary directory and renamed into
    place under a lock, so two deploys never install twice and a failed
    install never leaves a half-made environment that looks ready.
    """
    environment = environment_path(bundle.deps_hash)
    if environment_python(environment).exists():
        mark_used(environment)
        return environment, False
    with locked(environment.with_name(f"{bundle.deps_hash}.lock")):
        if environment_python(environment).exists():
            return environment, False
        from uv import find_uv_bin

        uv = find_uv_bin()
        building = environment.with_name(f".{bundle.deps_hash}.{uuid.uuid4().hex}")
        requirements_file = building.with_suffix(".txt")
        requirements_file.parent.mkdir(parents=True, exist_ok=True)
        requirements_file.write_text("\n".join(bundle.manifest.requirements) + "\n")
        count = len(bundle.manifest.requirements)
        try:
            with reporter.status(
                f"creating environment {bundle.deps_hash[:12]} ({count} "
                "requirements, once per set of dependencies)"
            ):
                _run_uv(
                    [
                        uv,
                        "venv",
                        "--quiet",
                        "--relocatable",
                        "--python",
                        sys.executable,
                        str(building),
                    ]
                )
                _run_uv(
                    [
                        uv,
                        "pip",
                        "install",
                        "--quiet",
                        "--python",
                        str(environment_python(building)),
                        "-r",
                        str(requirements_file),
                    ]
                )
            os.replace(building, environment)
        finally:
            requirements_file.unlink(missing_ok=True)
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
    return environment, True


def _run_uv(command: list[str]) -> None:
    environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()
        raise ProviderError(
            f"installing the function's requirements failed:\n{detail}\n"
            "check the versions listed above exist on your package index for this Python"
        )


def _bundle_sha(bundle: Bundle) -> str:
    return hashlib.sha256(bundle.zip_bytes()).hexdigest()


# What a kept version holds: everything of an entry but the name, the
# provider, the triggers (a rollback keeps the triggers deployed now) and the
# history itself.
_NOT_VERSIONED = ("name", "provider", "triggers", "history")


def _kept_history(
    entry: dict[str, Any], current: dict[str, Any] | None, keep_versions: int
) -> builtins.list[dict[str, Any]]:
    """The versions kept besides ``entry``: the one it replaces first, newest first,
    ``keep_versions`` in all counting ``entry``, none with its very bundle."""
    if current is None:
        return []
    previous = {key: value for key, value in current.items() if key not in _NOT_VERSIONED}
    history = [previous, *current.get("history", [])]
    history = [item for item in history if item.get("bundle_sha") != entry["bundle_sha"]]
    return history[: max(0, keep_versions - 1)]


def _version_of(item: dict[str, Any], *, live: bool) -> Version:
    return Version(
        version=str(item.get("deployed_at", ""))[:19].replace("-", "").replace(":", ""),
        code_hash=item["code_hash"],
        deps_hash=item["deps_hash"],
        deployed_at=str(item.get("deployed_at", "")),
        deployed_by=item.get("deployed_by"),
        live=live,
    )


def _who() -> str | None:
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError):
        return None


def _state_from_entry(entry: dict[str, Any]) -> DeploymentState:
    url = None
    if any(trigger["type"] == "http" for trigger in entry["triggers"]):
        url = f"http://127.0.0.1:{port()}/v1/functions/{entry['name']}"
    return DeploymentState(
        name=entry["name"],
        provider="local",
        url=url,
        code_hash=entry["code_hash"],
        deps_hash=entry["deps_hash"],
        output=entry["output"],
        inputs=entry.get("inputs"),
        triggers=tuple(entry["triggers"]),
        deployed_at=entry["deployed_at"],
        qualname=entry.get("qualname", ""),
    )


class EntryError(ConfigError):
    """A file in the functions folder is not a readable deployment entry."""


def _load_entry(path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise EntryError(
            f"{path} is not a deployment entry ({error}): redeploy the function or delete the file"
        ) from None
    if not isinstance(entry, dict) or entry.get("name") != path.stem:
        raise EntryError(
            f"{path} is not the entry of a function named {path.stem!r}: "
            "redeploy the function or delete the file"
        )
    return entry


def read_entry(name: str) -> dict[str, Any] | None:
    """The entry of ``name``, None if it is not deployed; EntryError if unreadable."""
    path = _functions_dir() / f"{check_name(name)}.json"
    try:
        return _load_entry(path)
    except FileNotFoundError:
        return None


def list_entries(on_error: Callable[[EntryError], None] | None = None) -> list[dict[str, Any]]:
    """Every readable entry. One that is not (a hand-edited or truncated file, a
    name deploy would refuse) is skipped and passed to ``on_error``, so it
    cannot hide the others."""
    directory = _functions_dir()
    if not directory.exists():
        return []
    entries = []
    for path in sorted(directory.glob("*.json")):
        try:
            if not NAME_PATTERN.match(path.stem):
                raise EntryError(
                    f"{path} is not named like a function ({NAME_RULE}): delete the file"
                )
            entries.append(_load_entry(path))
        except FileNotFoundError:  # deleted while we listed
            continue
        except EntryError as error:
            if on_error is not None:
                on_error(error)
    return entries


def tree_digest(directory: Path) -> str:
    """sha256 over every file below ``directory``: its relative path and content.

    An extra file counts as much as a changed one: Python would import a
    planted ``__pycache__/*.pyc`` as readily as an edited ``.py``.
    """
    listing = []
    for root, directories, files in os.walk(directory):
        directories.sort()
        for file_name in files:
            path = Path(root) / file_name
            relative = path.relative_to(directory).as_posix()
            if path.is_symlink():
                listing.append((relative, f"symlink:{os.readlink(path)}"))
                continue
            listing.append((relative, sha256_file(path)))
    return _listing_digest(listing)


def bundle_tree_digest(bundle: Bundle) -> str:
    """What :func:`tree_digest` gives for ``bundle`` unpacked, from its files alone."""
    return _listing_digest(
        [(path, hashlib.sha256(content).hexdigest()) for path, content in bundle.files]
    )


def _listing_digest(listing: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for relative, file_digest in sorted(listing):
        digest.update(f"{relative}\0{file_digest}\n".encode())
    return digest.hexdigest()


class WorkerError(Exception):
    """The function's process died, hung or could not load; the run was recorded as failed.

    ``kind`` is the error type the run record gets: Timeout (the call ran over
    the function's timeout), LoadTimeout (loading ran over its own limit),
    LoadFailed, BundleModified, OutOfMemory or WorkerCrashed.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _LogPump:
    """Copies a worker's stderr into its log, rotating it, and keeps the last bytes.

    The worker writes to a pipe rather than to the log file itself, so the host
    bounds the log's size whatever the function prints. The log gets whole lines
    only, each stamped with the time it was read (``logs --since`` reads it): a
    partial line waits for its end, so workers sharing a log never split each
    other's lines, and a rotation never splits one.
    """

    def __init__(self, stream: Any, path: Path) -> None:
        self.path = path
        self.tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 (reopened on rotation)
        pending = b""  # the start of a line whose end has not come yet
        try:
            if log.tell() and _last_byte(self.path) != b"\n":
                log.write(b"\n")  # a worker killed mid-line: the next line is its own
            for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
                self._remember(chunk)
                pending += chunk
                cut = pending.rfind(b"\n") + 1
                if len(pending) - cut > LOG_LINE_BYTES:
                    cut = len(pending)  # a line that long is cut into pieces
                lines, pending = pending[:cut], pending[cut:]
                log = self._write(log, lines)
        except (OSError, ValueError):  # the pipe was closed under us: the worker is gone
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                log = self._write(log, pending)
            log.close()
            stream.close()

    def _write(self, log: IO[bytes], lines: bytes) -> IO[bytes]:
        """Write ``lines`` stamped, rotating first if they would overfill the log."""
        if not lines:
            return log
        stamped = _stamped(lines)
        if log.tell() + len(stamped) > LOG_MAX_BYTES:
            log.close()
            _rotate(self.path)
            log = open(self.path, "ab")  # noqa: SIM115
        log.write(stamped)
        log.flush()
        return log

    def _remember(self, chunk: bytes) -> None:
        self.tail.append(chunk)
        self._tail_bytes += len(chunk)
        while self._tail_bytes - len(self.tail[0]) >= TAIL_BYTES:
            self._tail_bytes -= len(self.tail.popleft())

    def last_output(self) -> str:
        """What the worker printed last (a few lines), waiting briefly for the pipe to drain."""
        self._thread.join(timeout=1)
        text = b"".join(self.tail)[-TAIL_BYTES:].decode(errors="replace").strip()
        lines = text.splitlines()[-12:]
        return "\n".join(lines)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1)


def _stamped(lines: bytes) -> bytes:
    """``lines``, each after the time now and a space (a missing final break added)."""
    stamp = datetime.now(timezone.utc).strftime(LOG_TIME_FORMAT).encode() + b" "
    return b"".join(stamp + line + b"\n" for line in lines.rstrip(b"\n").split(b"\n"))


def _rotate(path: Path) -> None:
    for index in range(LOG_BACKUPS, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        newer = path.with_name(f"{path.name}.{index - 1}") if index > 1 else path
        if newer.exists():
            os.replace(newer, older)


def _limit_memory(memory_mb: int | None) -> Callable[[], None] | None:
    """A pre-exec hook capping the worker's heap at ``memory_mb``, as the cloud would.

    RLIMIT_DATA (Linux 4.7+) counts the heap and private writable mappings,
    which is what allocations use; RLIMIT_AS would also count the address space
    that pyarrow and OpenBLAS reserve without using, and refuse imports.
    """
    if not memory_mb:
        return None
    import resource

    limit = memory_mb * 2**20

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return apply


class Worker:
    """One subprocess running a deployed function; stays warm between requests."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._pump: _LogPump | None = None
        self._bundle_lock: IO[str] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, load_timeout_seconds: float | None = None) -> None:
        name = self.entry["name"]
        load_timeout_seconds = load_timeout_seconds or LOAD_TIMEOUT_SECONDS
        mark_used(Path(self.entry["python"]).parent.parent)  # for `deployer cache --prune`
        # Held while this worker lives: remove_unused_bundles leaves its bundle alone.
        # Taken before the bundle is checked, so a bundle being removed is seen as gone.
        self._bundle_lock = _share_bundle(self.entry["bundle_sha"])
        expected = self.entry.get("tree_sha")
        if expected and tree_digest(Path(self.entry["bundle_dir"])) != expected:
            raise WorkerError(
                "BundleModified",
                f"the unpacked bundle of {name} in {self.entry['bundle_dir']} is not the one "
                "deployed (a file was changed, added or removed): it was not loaded; "
                "redeploy to restore it",
            )
        # -B: the worker writes no .pyc into the bundle, whose every file is checked.
        self.process = subprocess.Popen(
            [self.entry["python"], "-I", "-B", "-c", BOOTSTRAP, self.entry["bundle_dir"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.entry["bundle_dir"],
            env=_worker_environment(self.entry),
            preexec_fn=_limit_memory(self.entry.get("memory_mb")),  # noqa: PLW1509
        )
        self._pump = _LogPump(self.process.stderr, log_path(name))
        self._buffer = b""
        try:
            ready = self._read_reply(load_timeout_seconds, loading=True)
        except WorkerError:
            self.stop()
            raise
        if not ready.get("ready"):
            self.stop()
            raise WorkerError("LoadFailed", f"{name} failed to load: {ready.get('error')}")

    def request(self, message: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps(message, default=str) + "\n").encode())
        self.process.stdin.flush()
        return self._read_reply(timeout_seconds)

    def _read_reply(self, timeout_seconds: float, *, loading: bool = False) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout_seconds
        stdout = self.process.stdout
        name = self.entry["name"]
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stop()
                    if loading:
                        raise WorkerError(
                            "LoadTimeout",
                            f"loading {name} (interpreter, imports, unpickling) took over the "
                            f"{timeout_seconds:g} s load limit; the function itself never ran"
                            + self._printed_last(),
                        )
                    raise WorkerError(
                        "Timeout",
                        f"the function ran over its timeout of {timeout_seconds:g} s (loading "
                        "is not counted) and was stopped; make it faster or deploy with a "
                        "longer timeout" + self._printed_last(),
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    code = self.process.wait()
                    self.stop()
                    kind, cause = _exit_cause(code, self.entry.get("memory_mb"))
                    raise WorkerError(
                        kind,
                        f"the function's process {cause}; see `deployer logs {name}`"
                        + self._printed_last(),
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _printed_last(self) -> str:
        text = self._pump.last_output() if self._pump is not None else ""
        return f". It printed last:\n{text}" if text else ""

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()
            self.process = None
        if self._bundle_lock is not None:
            self._bundle_lock.close()  # drops the shared lock
            self._bundle_lock = None


def _bundles_dir() -> Path:
    return home() / "local" / "bundles"


def _bundle_lock_path(bundle_sha: str) -> Path:
    # Beside the bundles, not in them: every file of a bundle is checked.
    return _bundles_dir() / ".locks" / f"{bundle_sha}.lock"


def _share_bundle(bundle_sha: str) -> IO[str]:
    fcntl = posix_locks()
    path = _bundle_lock_path(bundle_sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = open(path, "a")  # noqa: SIM115 (held for the worker's life)
    fcntl.flock(lock_file, fcntl.LOCK_SH)
    return lock_file


@contextlib.contextmanager
def _bundles_locked() -> Iterator[None]:
    """Held while a bundle is unpacked and its entry written, and while unused ones go."""
    with locked(home() / "local" / "locks" / "bundles.lock"):
        yield


def remove_unused_bundles(patience_seconds: float = 0.0) -> list[str]:
    """Delete the unpacked bundles no deployed function uses and no worker runs.

    A redeploy leaves the previous bundle behind, and a warm worker of `deployer
    serve` may still be running it: that one is removed by a later sweep (the
    next deploy or delete, or the server when it retires the worker). Nothing
    is removed while any entry cannot be read: it might name a bundle.

    ``patience_seconds``: how long to wait for a bundle's lock. A worker that
    just stopped may still have its lock shared with a process being forked
    at that moment (until that process starts its program); the server,
    which knows the worker stopped, waits a little.
    """
    bundles = _bundles_dir()
    if not bundles.is_dir():
        return []
    fcntl = posix_locks()
    unreadable: list[EntryError] = []
    removed = []
    with _bundles_locked():
        used = {
            version["bundle_sha"]
            for entry in list_entries(on_error=unreadable.append)
            for version in [entry, *entry.get("history", [])]
        }
        if unreadable:
            return []
        for directory in sorted(bundles.iterdir()):
            if directory.name.startswith(".") or directory.name in used:
                continue
            lock_path = _bundle_lock_path(directory.name)
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(lock_path, "a") as lock_file:
                if not _lock_within(lock_file, fcntl.LOCK_EX, patience_seconds):
                    continue  # a worker still runs it
                shutil.rmtree(directory, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            removed.append(directory.name)
    return removed


def _lock_within(lock_file: IO[str], kind: int, seconds: float) -> bool:
    fcntl = posix_locks()
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(lock_file, kind | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _exit_cause(code: int, memory_mb: int | None) -> tuple[str, str]:
    """The error type and a few words for a worker that exited while it should not."""
    import signal

    if code < 0:
        try:
            signal_name = signal.Signals(-code).name
        except ValueError:
            signal_name = str(-code)
        if -code == signal.SIGKILL and memory_mb:
            return "OutOfMemory", (
                f"was killed ({signal_name}), most likely over its memory limit of "
                f"{memory_mb} MB: deploy with more memory= or use less"
            )
        return "WorkerCrashed", f"was killed by signal {signal_name}"
    return "WorkerCrashed", f"exited with code {code}"


def _worker_environment(entry: Mapping[str, Any] | None = None) -> dict[str, str]:
    # Keep only what a process needs to run and reach object stores; the
    # user's PYTHONPATH and virtualenv must not leak into the function's world.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE")
    prefixes = ("AWS_", "AZURE_", "GOOGLE_", "STORAGE_EMULATOR_HOST", "GCE_")
    environment = {
        key: value for key, value in os.environ.items() if key in keep or key.startswith(prefixes)
    }
    entry = entry or {}
    environment.update(entry.get("env") or {})
    secrets = entry.get("secrets") or {}
    if secrets:
        # The references, so that the runtime can name a missing one, and the
        # values this process can see (core.require_secrets checks them).
        environment[core.SECRETS_VARIABLE] = json.dumps(secrets, sort_keys=True)
        found = _local_secrets(secrets)
        environment.update(found)
    if entry.get("alerts"):
        environment[core.ALERTS_VARIABLE] = json.dumps(entry["alerts"])
    return environment


LOCAL_SECRET_PREFIX = "env:"


def _local_secrets(references: Mapping[str, str]) -> dict[str, str]:
    """The values of ``env:VAR`` references: VAR in this process's environment, else
    in the ``.env`` file of its working directory. Missing ones are left out."""
    dotenv: dict[str, str | None] | None = None
    found = {}
    for name, reference in references.items():
        variable = reference[len(LOCAL_SECRET_PREFIX) :]
        value = os.environ.get(variable)
        if value is None:
            if dotenv is None:
                from dotenv import dotenv_values

                dotenv = dict(dotenv_values(".env")) if Path(".env").is_file() else {}
            value = dotenv.get(variable)
        if value is not None:
            found[name] = value
    return found


# Once per home: without `deployer serve`, every invoke starts a new worker.
SERVE_HINT_MARKER = "serve-hint-shown"


def _invoke_through_serve(
    name: str, payload: Any, timeout_seconds: int | None, params: dict[str, Any] | None = None
) -> Invocation | None:
    """The run, made by the running `deployer serve`'s warm worker; None when no
    server runs for this home, or it cannot take this request (then a fresh
    worker runs it, as without a server)."""
    import http.client

    from deployer.providers.local import server

    address = server.serving()
    if address is None:
        return None
    headers = {"Authorization": f"Bearer {server.read_or_create_token()}"}
    if _is_dataframe(payload):
        buffer = io.BytesIO()
        payload.to_parquet(buffer, index=False)
        body = buffer.getvalue()
        headers["Content-Type"] = server.PARQUET_TYPE
        if params is not None:
            headers[server.PARAMS_HEADER] = json.dumps(params)
    else:
        body = invoke_body(payload, params)
        headers["Content-Type"] = "application/json"
    if timeout_seconds:
        headers[server.TIMEOUT_HEADER] = str(int(timeout_seconds))
    entry = read_entry(name) or {}
    # The server records a timed-out run itself; wait a little longer than it does.
    wait = float(timeout_seconds or entry.get("timeout_seconds") or 300) + 30
    connection = http.client.HTTPConnection(*address, timeout=wait)
    try:
        connection.request("POST", f"{server.INVOKE_PREFIX}{name}", body=body, headers=headers)
        response = connection.getresponse()
        reply = json.loads(response.read() or b"{}")
    except (OSError, ValueError):
        return None  # the server went away mid-request: run it here instead
    finally:
        connection.close()
    if response.status in (401, 404, 411, 413) and "run_id" not in reply:
        return None  # another home's server on that port, or a body over its limit
    return Invocation(response.status, reply)


def _hint_serve_once() -> None:
    marker = home() / "local" / SERVE_HINT_MARKER
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(
        "deployer: each invoke starts a new worker (a second or more); while `deployer serve` "
        "runs, invoke uses its warm workers instead (milliseconds)",
        file=sys.stderr,
    )


def run_request(
    worker: Worker,
    entry: dict[str, Any],
    message: dict[str, Any],
    timeout_seconds: float,
) -> Invocation:
    """Send one run request; whatever becomes of the run, it keeps a record.

    If the process dies or hangs, its run never wrote run.json, so the host
    writes it. If the store refuses a run's record (the worker's or the
    host's), the host keeps it in its spool (deployer.store.spool_run), where
    `deployer runs` and read_runs show it: the run stays visible with what went
    wrong instead of vanishing.
    """
    from deployer import store

    started = storage.utc_now()
    message.setdefault("run_id", storage.new_run_id(started))
    output = message.get("output") or entry["output"]

    def spool(record: dict[str, Any]) -> None:
        try:
            store.spool_run(record, output=output)
        except Exception as spool_error:  # then the reply is the only trace left
            record["error"]["message"] += f"; nor could it be spooled: {spool_error}"

    def record_failure(error_type: str, text: str) -> dict[str, Any]:
        record = core.failure_record(
            name=entry["name"],
            run_id=message["run_id"],
            trigger=message.get("trigger", "manual"),
            started=started,
            code_hash=entry["code_hash"],
            error_type=error_type,
            message=text,
        )
        try:
            core.commit_record(output, record)
        except Exception as store_error:  # the store itself refuses: keep it here
            record["error"]["message"] += f" (the run record could not be written: {store_error})"
            spool(record)
        return record

    try:
        if not worker.alive:
            worker.start()
        reply = worker.request(message, timeout_seconds)
    except WorkerError as error:
        worker.stop()
        record = record_failure(error.kind, str(error))
        return Invocation(
            500,
            {
                "run_id": message["run_id"],
                "status": "failed",
                "error": {"type": record["error"]["type"], "message": record["error"]["message"]},
            },
        )
    if reply.get("committed") is False:
        spool(reply["record"])  # the store refused the worker's record
    elif int(reply["http_status"]) >= 500 and "record" not in reply:
        # The worker failed outside the run (or is a runtime from before runs
        # kept their record when the store refused it): the host records it.
        reported = reply["body"].get("error") or {}
        record_failure(
            reported.get("type") or "RunError",
            reported.get("message") or "the run failed outside the function",
        )
    return Invocation(int(reply["http_status"]), reply["body"])


class LocalProvider(BaseProvider):
    name = "local"
    map_concurrency = os.cpu_count() or 2  # a worker per core
    scheduled_map = True  # `deployer serve` coordinates it

    @property
    def where(self) -> str:
        return f"locally (in {home()})"

    def default_output(self) -> str:
        return str(home() / "store")

    def platform(self, python: str) -> str | None:
        return None  # environments are made for this machine

    def check(self, spec: DeploySpec) -> DeploySpec:
        # Runs execute with the bundle as working directory, so relative
        # locations are fixed to absolute ones now, relative to the caller.
        def absolute(url: str | None) -> str | None:
            if url is None or "://" in url:
                return url
            return str(Path(url).expanduser().resolve())

        for name, reference in spec.secrets:
            variable = reference[len(LOCAL_SECRET_PREFIX) :]
            if not reference.startswith(LOCAL_SECRET_PREFIX) or not ENV_NAME.match(variable):
                raise ConfigError(
                    f"secrets=: {name}: {reference!r} is not a local secret reference: use "
                    f"env:VARIABLE, read from the environment of the process that runs the "
                    "function (deployer serve, or the one that invokes it) or its .env file"
                )
        return replace(
            spec, output=absolute(spec.output) or spec.output, inputs=absolute(spec.inputs)
        )

    def write_artifacts(self, bundle: Bundle, directory: Path, reporter: Reporter) -> list[Path]:
        """The bundle zip: what this machine unpacks and runs."""
        return [bundle.write_zip(directory / f"{bundle.name}-{bundle.code_hash[:12]}.zip")]

    def get(self, name: str) -> DeploymentState | None:
        entry = read_entry(name)
        return None if entry is None else _state_from_entry(entry)

    def list(self) -> list[DeploymentState]:
        return [_state_from_entry(entry) for entry in list_entries()]

    @contextlib.contextmanager
    def applying(self, name: str) -> Iterator[None]:
        # Two deploys of one name: the second checks what it planned from only
        # after the first has written its entry, and so sees the change.
        with locked(home() / "local" / "locks" / f"{check_name(name)}.lock"):
            yield

    def deployed(self, name: str) -> Deployed | None:
        entry = read_entry(name)
        if entry is None:
            return None
        return Deployed(
            code_hash=entry["code_hash"],
            deps_hash=entry["deps_hash"],
            settings={
                "output": entry.get("output"),
                "inputs": entry.get("inputs"),
                "timeout": entry.get("timeout_seconds"),
                "memory": entry.get("memory_mb"),
                "env": entry.get("env") or {},
                "secrets": entry.get("secrets") or {},
                "max concurrency": entry.get("max_concurrency"),
            },
            triggers=tuple(entry["triggers"]),
        )

    def require_python(self, python: str) -> None:
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        if python != running:
            raise ConfigError(
                f"this bundle was made on Python {python}, but the local provider runs "
                f"functions with this machine's Python {running} ({sys.executable}); the "
                "function is pickled and loads only on the version that pickled it: deploy "
                f"from Python {running}"
            )

    def plan(self, bundle: Bundle, spec: DeploySpec) -> Plan:
        self.require_python(bundle.manifest.python)
        missing = sorted(set(dict(spec.secrets)) - set(_local_secrets(dict(spec.secrets))))
        if missing:
            reference = dict(spec.secrets)[missing[0]]
            raise ConfigError(
                f"secrets=: {missing[0]}: {reference[len(LOCAL_SECRET_PREFIX) :]} is neither in "
                "this environment nor in ./.env: export it, or add it to .env, where deployer "
                "serve and invoke run"
            )
        observed = self.observe(spec.name)
        steps: list[Step] = []
        if not environment_python(environment_path(bundle.deps_hash)).exists():
            count = len(bundle.manifest.requirements)
            steps.append(
                InstallDependencies(
                    f"create environment {bundle.deps_hash[:12]} ({count} packages)"
                )
            )
        deployed = self.deployed(spec.name)
        steps += self.function_steps(deployed, bundle, spec)
        entry = read_entry(spec.name)
        if (
            entry is not None
            and entry["code_hash"] == bundle.code_hash
            and not _bundle_intact(entry)
        ):
            steps.append(
                UpdateCode(
                    f"restore the unpacked bundle in {entry['bundle_dir']}: "
                    "its files differ from what was deployed"
                )
            )
        existing = deployed.triggers if deployed is not None else ()
        steps += trigger_changes(bundle.manifest.triggers, existing)
        return self.make_plan(bundle, spec, steps, observed)

    def execute(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        """Locally every change is one new entry: the environment, the unpacked
        bundle and the entry naming both, its triggers and settings, written at once."""
        bundle, spec = plan.bundle, plan.spec
        assert bundle is not None and spec is not None
        current = read_entry(plan.name)
        if current is not None and not plan.of_type(InstallDependencies, *FUNCTION_STEPS):
            # Only triggers change: `deployer serve` reads them from the entry;
            # the unpacked bundle serving now stays.
            entry = {**current, "triggers": list(bundle.manifest.triggers)}
            self._write_entry(entry)
            return _state_from_entry(entry)
        environment, _ = ensure_environment(bundle, reporter)
        with _bundles_locked():
            entry = self._unpack_and_record(plan, bundle, spec, environment, current)
        remove_unused_bundles()  # what is no longer kept, unless a worker runs it
        return _state_from_entry(entry)

    def _unpack_and_record(
        self,
        plan: Plan,
        bundle: Bundle,
        spec: DeploySpec,
        environment: Path,
        current: dict[str, Any] | None,
    ) -> dict[str, Any]:
        bundle_sha = _bundle_sha(bundle)
        bundle_dir = _bundles_dir() / bundle_sha
        tree_sha = bundle_tree_digest(bundle)
        _unpack(bundle, bundle_dir, tree_sha)
        manifest = bundle.manifest
        entry = {
            "name": plan.name,
            "provider": self.name,
            "qualname": manifest.function.qualname,
            "code_hash": bundle.code_hash,
            "deps_hash": bundle.deps_hash,
            "bundle_sha": bundle_sha,
            "bundle_dir": str(bundle_dir),
            "python": str(environment_python(environment)),
            "output": manifest.output,
            "inputs": manifest.inputs,
            "triggers": list(manifest.triggers),
            "timeout_seconds": manifest.timeout_seconds,
            "memory_mb": spec.memory_mb,
            "alerts": list(spec.alerts),
            "env": dict(spec.env),
            # References only; the values are read when a worker starts.
            "secrets": dict(spec.secrets),
            "max_concurrency": spec.max_concurrency,
            "tree_sha": tree_sha,
            "deployed_at": storage.utc_now().isoformat(),
            "deployed_by": _who(),
        }
        entry["history"] = _kept_history(entry, current, spec.keep_versions)
        self._write_entry(entry)
        return entry

    # -- versions ------------------------------------------------------------

    def history(self, name: str) -> builtins.list[Version]:
        entry = self._entry(name)
        return [
            _version_of(version, live=version is entry)
            for version in [entry, *entry.get("history", [])]
        ]

    def make_live(self, name: str, version: Version, reporter: Reporter) -> None:
        """The kept bundle and environment of ``version`` become the entry's again:
        nothing is built or installed."""
        entry = self._entry(name)
        kept = entry.get("history", [])
        chosen = next(item for item in kept if _version_of(item, live=False) == version)
        if not _bundle_intact(chosen) or not Path(chosen["python"]).exists():
            raise ConfigError(
                f"code {version.code_hash[:12]} of {name} is no longer on this machine (its "
                "bundle or environment was removed): deploy that code again instead"
            )
        current = {key: value for key, value in entry.items() if key != "history"}
        rolled = {**entry, **chosen}
        rolled["history"] = [current, *(item for item in kept if item is not chosen)]
        with _bundles_locked():
            self._write_entry(rolled)
        remove_unused_bundles()

    def _write_entry(self, entry: dict[str, Any]) -> None:
        path = _functions_dir() / f"{entry['name']}.json"
        write_atomically(path, json.dumps(entry, indent=2, sort_keys=True).encode())
        os.chmod(path, 0o600)  # it may hold alert webhook URLs, which are secrets

    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout_seconds: int | None = None,
        trigger: str = "manual",
        params: dict[str, Any] | None = None,
    ) -> Invocation:
        entry = self._entry(name)
        if trigger == "manual":
            served = _invoke_through_serve(name, payload, timeout_seconds, params)
            if served is not None:
                return served
            _hint_serve_once()
        message: dict[str, Any] = {"trigger": trigger}
        if params is not None:
            message["params"] = params
        with tempfile.TemporaryDirectory(prefix="deployer-invoke-") as scratch:
            if _is_dataframe(payload):
                # Parquet keeps dtypes (timestamps, categories) that JSON would lose.
                payload_file = os.path.join(scratch, "payload.parquet")
                payload.to_parquet(payload_file, index=False)
                message["payload_file"] = payload_file
            elif payload is not None:
                message["payload"] = payload
            worker = Worker(entry)
            try:
                return run_request(
                    worker, entry, message, timeout_seconds or entry["timeout_seconds"]
                )
            finally:
                worker.stop()

    @contextlib.contextmanager
    def map_dispatcher(self, name: str, *, concurrency: int) -> Iterator[fanout.Dispatch]:
        """Shards run on ``concurrency`` warm workers of this machine, all started at
        once (a worker's start, the interpreter and the imports, is most of a short
        map run) and kept for the next shard. A worker that crashed or ran over the
        timeout is stopped and a fresh one started in its place."""
        entry = self._entry(name)
        timeout = float(entry["timeout_seconds"])
        idle: queue.SimpleQueue[Worker | WorkerError] = queue.SimpleQueue()
        started: list[Worker] = []
        lock = threading.Lock()

        closing = threading.Event()

        def start_one() -> None:
            worker = Worker(entry)
            with lock:
                started.append(worker)
            try:
                worker.start()
            except WorkerError as error:
                idle.put(error)
                return
            if closing.is_set():  # the map ended while this one started
                worker.stop()
                return
            idle.put(worker)

        def start_another() -> None:
            threading.Thread(target=start_one, daemon=True).start()

        def dispatch(request: dict[str, Any]) -> dict[str, Any]:
            got = idle.get()
            if isinstance(got, WorkerError):  # its start failed: try another for the next
                start_another()
                raise fanout.ShardUnavailable(got.kind, str(got))
            try:
                reply = got.request({"map": request}, timeout)
            except WorkerError as error:  # the worker is stopped
                start_another()
                raise fanout.ShardUnavailable(error.kind, str(error)) from None
            idle.put(got)
            if "map" not in reply:
                message = (reply.get("body") or {}).get("error", {}).get("message")
                raise fanout.ShardUnavailable("BadRequest", str(message))
            result: dict[str, Any] = reply["map"]
            return result

        for _ in range(concurrency):
            start_another()
        try:
            yield dispatch
        finally:
            closing.set()
            with lock:
                for worker in started:
                    worker.stop()

    def execute_delete(self, plan: Plan, state: DeploymentState, reporter: Reporter) -> None:
        self._entry(plan.name)
        (_functions_dir() / f"{plan.name}.json").unlink(missing_ok=True)
        remove_unused_bundles()

    def log_source(self, name: str) -> Path:
        self._entry(name)
        return log_path(name)

    def log_page(self, source: Path, query: LogQuery, cursor: Any) -> LogPage:
        """The whole lines written after ``cursor`` (the inode of a log file and an
        offset in it: rotation renames files, so a line keeps both), through the
        rotated files in order; with no cursor, from the oldest file kept."""
        events: list[LogEvent] = []
        files = _open_logs(source)
        position = cursor
        try:
            inodes = [inode for inode, _ in files]
            # A cursor rotated out of the kept files: what is kept is all there is.
            start = inodes.index(cursor[0]) if cursor and cursor[0] in inodes else 0
            for index, (inode, file) in enumerate(files[start:], start):
                offset = cursor[1] if cursor and inode == cursor[0] else 0
                file.seek(offset)
                data = file.read()
                if index == len(files) - 1:
                    data = data[: data.rfind(b"\n") + 1]  # a line being written waits
                elif data and not data.endswith(b"\n"):
                    data += b"\n"  # rotated mid-line (before lines were whole): done
                events += _log_events(data, inode, offset)
                position = (inode, offset + len(data))
        finally:
            for _, file in files:
                file.close()
        return LogPage(tuple(event for event in events if query.matches(event)), position)

    def recent_log_events(self, source: Path, count: int) -> builtins.list[LogEvent]:
        # A local log is at most (1 + LOG_BACKUPS) * LOG_MAX_BYTES: read it all.
        return list(self.log_page(source, LogQuery(), None).events[-count:])

    def _entry(self, name: str) -> dict[str, Any]:
        entry = read_entry(name)
        if entry is None:
            self.require(name)  # raises, naming what is deployed
            raise AssertionError(name)
        return entry


def _open_logs(path: Path) -> list[tuple[int, IO[bytes]]]:
    """A function's log files, oldest first, each with its inode.

    Opened newest first: a rotation in between can only make a file turn up
    twice (kept once), never make one be missed.
    """
    files: list[tuple[int, IO[bytes]]] = []
    for index in range(LOG_BACKUPS + 1):
        candidate = path.with_name(f"{path.name}.{index}") if index else path
        try:
            file = open(candidate, "rb")  # noqa: SIM115 (closed by the caller)
        except FileNotFoundError:
            continue
        inode = os.fstat(file.fileno()).st_ino
        if any(inode == known for known, _ in files):
            file.close()
            continue
        files.append((inode, file))
    return files[::-1]


def _log_events(data: bytes, inode: int, offset: int) -> list[LogEvent]:
    """The lines of ``data`` (whole lines, read at ``offset`` of file ``inode``) as events.

    A line written before logs had times gets the time of the line before it (the
    oldest ones: the epoch, so that --since leaves them out)."""
    events = []
    timestamp = datetime.fromtimestamp(0, timezone.utc)
    position = offset
    for line in data.split(b"\n")[:-1]:
        match = LOG_TIME.match(line)
        text = line
        if match is not None:
            timestamp = datetime.strptime(match.group(1).decode(), LOG_TIME_FORMAT).replace(
                tzinfo=timezone.utc
            )
            text = line[match.end() :]
        events.append(LogEvent(timestamp, f"{inode}:{position}", text.decode(errors="replace")))
        position += len(line) + 1
    return events


def _bundle_intact(entry: dict[str, Any]) -> bool:
    expected = entry.get("tree_sha")
    directory = Path(entry["bundle_dir"])
    return bool(expected) and directory.is_dir() and tree_digest(directory) == expected


def _unpack(bundle: Bundle, bundle_dir: Path, tree_sha: str) -> None:
    """Unpack ``bundle`` at ``bundle_dir`` unless an intact copy is already there.

    A copy whose files differ (edited, added, removed) is replaced whole: the
    new tree is staged beside it and swapped in by rename.
    """
    if bundle_dir.is_dir() and tree_digest(bundle_dir) == tree_sha:
        return
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=bundle_dir.parent))
    bundle.extract(staging)
    if bundle_dir.exists():
        retired = bundle_dir.with_name(f".retired-{uuid.uuid4().hex}")
        with contextlib.suppress(OSError):
            os.replace(bundle_dir, retired)
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.replace(staging, bundle_dir)
    except OSError:  # a concurrent deploy of the same bundle got there first
        shutil.rmtree(staging, ignore_errors=True)


def _is_dataframe(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("pandas") and type(value).__name__ == "DataFrame"
