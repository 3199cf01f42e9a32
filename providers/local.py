"""The embedded default provider: runs deployed functions on this machine.

State lives under ``DEPLOYER_HOME`` (default ``./.deployer``), laid out like a
tiny cloud:

    local/functions/{name}.json   what is deployed (written temp-then-rename)
    local/bundles/{bundle_sha}/   unpacked bundles, immutable once written
    local/logs/{name}.log         the functions' stderr
    store/                        the default output store

Environments are shared across projects in ``DEPLOYER_CACHE`` (default
``~/.cache/deployer``): one uv venv per ``deps_hash``, made once and reused, so
a redeploy with the same dependencies installs nothing. Every run executes in
a subprocess of that environment with ``python -I``: a package installed in the
user's environment but missing from the bundle's requirements is not
importable there, exactly as in the cloud.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.cache import cache_root, locked
from deployer.errors import ConfigError, ProviderError
from deployer.providers.base import (
    CREATE,
    DELETE,
    INSTALL_DEPENDENCIES,
    UPDATE_CODE,
    UPDATE_CONFIG,
    Action,
    DeploymentState,
    Invocation,
    Plan,
    trigger_changes,
)
from deployer.runtimes import core, storage

if TYPE_CHECKING:
    from deployer.bundle import Bundle
    from deployer.console import Reporter
    from deployer.spec import DeploySpec

DEFAULT_PORT = 8765
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
    return home() / "local" / "logs" / f"{name}.log"


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a mix: rename is atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


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
        return environment, False
    with locked(environment.with_name(f"{bundle.deps_hash}.lock")):
        if environment_python(environment).exists():
            return environment, False
        from uv import find_uv_bin

        uv = find_uv_bin()
        building = environment.with_name(f".{bundle.deps_hash}.{uuid.uuid4().hex}")
        requirements_file = building.with_suffix(".txt")
        requirements_file.parent.mkdir(parents=True, exist_ok=True)
        requirements_file.write_text("\n".join(bundle.manifest["requirements"]) + "\n")
        count = len(bundle.manifest["requirements"])
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


def read_entry(name: str) -> dict[str, Any] | None:
    path = _functions_dir() / f"{name}.json"
    try:
        entry: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return entry


def list_entries() -> list[dict[str, Any]]:
    directory = _functions_dir()
    if not directory.exists():
        return []
    entries = []
    for path in sorted(directory.glob("*.json")):
        try:
            entries.append(json.loads(path.read_text()))
        except FileNotFoundError:  # deleted while we listed
            continue
    return entries


class WorkerError(Exception):
    """The function's process died or timed out; the run was recorded as failed."""


class Worker:
    """One subprocess running a deployed function; stays warm between requests."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_seconds: float) -> None:
        path = log_path(self.entry["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as log:
            self.process = subprocess.Popen(
                [self.entry["python"], "-I", "-c", BOOTSTRAP, self.entry["bundle_dir"]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.entry["bundle_dir"],
                env=_worker_environment(),
            )
        self._buffer = b""
        ready = self._read_reply(timeout_seconds)
        if not ready.get("ready"):
            self.stop()
            raise WorkerError(f"{self.entry['name']} failed to load: {ready.get('error')}")

    def request(self, message: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps(message, default=str) + "\n").encode())
        self.process.stdin.flush()
        return self._read_reply(timeout_seconds)

    def _read_reply(self, timeout_seconds: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout_seconds
        stdout = self.process.stdout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stop()
                    raise WorkerError(
                        f"timed out after {timeout_seconds:g} s: the function is still running; "
                        "make it faster or deploy with a longer timeout"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    code = self.process.wait()
                    self.process = None
                    raise WorkerError(
                        f"the function's process exited with code {code}; "
                        f"see `deployer logs {self.entry['name']}`"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.process = None


def _worker_environment() -> dict[str, str]:
    # Keep only what a process needs to run and reach object stores; the
    # user's PYTHONPATH and virtualenv must not leak into the function's world.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE")
    prefixes = ("AWS_", "AZURE_", "GOOGLE_", "STORAGE_EMULATOR_HOST", "GCE_")
    return {
        key: value for key, value in os.environ.items() if key in keep or key.startswith(prefixes)
    }


def run_request(
    worker: Worker,
    entry: dict[str, Any],
    message: dict[str, Any],
    timeout_seconds: float,
) -> Invocation:
    """Send one run request; if the process dies or hangs, record the run as failed.

    The worker's run never wrote run.json in that case, so the host writes it:
    the run stays visible with what went wrong instead of vanishing.
    """
    started = storage.utc_now()
    message.setdefault("run_id", storage.new_run_id(started))
    try:
        if not worker.alive:
            worker.start(timeout_seconds)
        reply = worker.request(message, timeout_seconds)
    except WorkerError as error:
        worker.stop()
        record = core.failure_record(
            name=entry["name"],
            run_id=message["run_id"],
            trigger=message.get("trigger", "manual"),
            started=started,
            code_hash=entry["code_hash"],
            error_type="Timeout" if "timed out" in str(error) else "WorkerCrashed",
            message=str(error),
        )
        try:
            core.commit_record(entry["output"], record)
        except Exception as store_error:  # the store itself is unreachable: say so
            record["error"]["message"] += f" (the run record could not be written: {store_error})"
        return Invocation(
            500,
            {
                "run_id": message["run_id"],
                "status": "failed",
                "error": {"type": record["error"]["type"], "message": record["error"]["message"]},
            },
        )
    return Invocation(int(reply["http_status"]), reply["body"])


class LocalProvider:
    name = "local"
    preinstalled: frozenset[str] = frozenset()

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

        return replace(
            spec, output=absolute(spec.output) or spec.output, inputs=absolute(spec.inputs)
        )

    def get(self, name: str) -> DeploymentState | None:
        entry = read_entry(name)
        return None if entry is None else _state_from_entry(entry)

    def list(self) -> list[DeploymentState]:
        return [_state_from_entry(entry) for entry in list_entries()]

    def plan(self, bundle: Bundle, spec: DeploySpec) -> Plan:
        current = read_entry(spec.name)
        actions: list[Action] = []
        if not environment_python(environment_path(bundle.deps_hash)).exists():
            count = len(bundle.manifest["requirements"])
            actions.append(
                Action(
                    INSTALL_DEPENDENCIES,
                    f"create environment {bundle.deps_hash[:12]} ({count} packages)",
                )
            )
        wanted = list(bundle.manifest["triggers"])
        if current is None:
            actions.append(Action(CREATE, f"function {spec.name} ({bundle.code_hash[:12]})"))
            existing: list[dict[str, Any]] = []
        else:
            existing = list(current["triggers"])
            if current["code_hash"] != bundle.code_hash:
                actions.append(
                    Action(UPDATE_CODE, f"{current['code_hash'][:12]} -> {bundle.code_hash[:12]}")
                )
            if current["deps_hash"] != bundle.deps_hash:
                actions.append(
                    Action(
                        UPDATE_CONFIG,
                        f"dependencies {current['deps_hash'][:12]} -> {bundle.deps_hash[:12]}",
                    )
                )
            for key in ("output", "inputs", "timeout_seconds"):
                if current.get(key) != bundle.manifest.get(key):
                    actions.append(
                        Action(
                            UPDATE_CONFIG,
                            f"{key}: {current.get(key)!r} -> {bundle.manifest.get(key)!r}",
                        )
                    )
        actions += trigger_changes(wanted, existing)
        return Plan(spec.name, self.name, tuple(actions), bundle=bundle, spec=spec)

    def apply(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        bundle = plan.bundle
        if bundle is None:
            raise ProviderError("a deploy plan needs its bundle")
        current = read_entry(plan.name)
        if plan.changes_nothing and current is not None:
            return _state_from_entry(current)
        environment, _ = ensure_environment(bundle, reporter)
        bundle_sha = _bundle_sha(bundle)
        bundle_dir = home() / "local" / "bundles" / bundle_sha
        if not (bundle_dir / core.MANIFEST_FILE).exists():
            bundle_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=bundle_dir.parent))
            bundle.extract(staging)
            try:
                os.replace(staging, bundle_dir)
            except OSError:  # a concurrent deploy of the same bundle got there first
                shutil.rmtree(staging, ignore_errors=True)
        manifest = bundle.manifest
        entry = {
            "name": plan.name,
            "provider": self.name,
            "qualname": manifest["function"]["qualname"],
            "code_hash": bundle.code_hash,
            "deps_hash": bundle.deps_hash,
            "bundle_sha": bundle_sha,
            "bundle_dir": str(bundle_dir),
            "python": str(environment_python(environment)),
            "output": manifest["output"],
            "inputs": manifest["inputs"],
            "triggers": manifest["triggers"],
            "timeout_seconds": manifest["timeout_seconds"],
            "deployed_at": storage.utc_now().isoformat(),
        }
        _write_atomically(
            _functions_dir() / f"{plan.name}.json",
            json.dumps(entry, indent=2, sort_keys=True).encode(),
        )
        return _state_from_entry(entry)

    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout_seconds: int | None = None,
        trigger: str = "manual",
    ) -> Invocation:
        entry = self._entry(name)
        message: dict[str, Any] = {"trigger": trigger}
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

    def plan_delete(self, name: str) -> Plan:
        entry = self._entry(name)
        actions = [Action(DELETE, f"function {name}")]
        actions += trigger_changes([], entry["triggers"])
        return Plan(name, self.name, tuple(actions))

    def delete(self, plan: Plan, reporter: Reporter) -> None:
        entry = self._entry(plan.name)
        (_functions_dir() / f"{plan.name}.json").unlink(missing_ok=True)
        still_used = {other["bundle_sha"] for other in list_entries()}
        if entry["bundle_sha"] not in still_used:
            shutil.rmtree(entry["bundle_dir"], ignore_errors=True)
        reporter.say(f"deleted {plan.name} (its outputs stay in {entry['output']})")

    def logs(self, name: str, *, lines: int = 100) -> str:
        self._entry(name)
        path = log_path(name)
        if not path.exists():
            return ""
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])

    def _entry(self, name: str) -> dict[str, Any]:
        entry = read_entry(name)
        if entry is None:
            raise ConfigError(
                f"no function named {name!r} is deployed locally (in {home()}): see `deployer list`"
            )
        return entry


def _is_dataframe(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("pandas") and type(value).__name__ == "DataFrame"
