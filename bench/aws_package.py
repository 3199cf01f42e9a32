"""Packaging for AWS Lambda: deployer vs `chalice package`, same function, same pins.

    python bench/aws_package.py [--cold-pip-cache]

The function is the sample classifier (pandas + scikit-learn; pyarrow for the
runtime's Parquet I/O) for python3.11 on x86_64. Its requirements are every
distribution pip resolves for that target (Amazon Linux 2, glibc 2.26) from
``scikit-learn numpy pandas pyarrow>=14 cloudpickle==<local>``, pinned, so
both tools package exactly the same versions; Chalice is installed into its
own virtualenv under the scratch directory and run there.

Cases, each timed end to end (bundle or app code included; for deployer,
AwsProvider(slim=True).package, everything a deploy does before calling AWS):
1. cold: deployer's cache directory fresh / Chalice's .chalice/deployments empty;
2. warm: the same again (dependency caches hit);
3. code-only: the function changed, dependencies not.

pip's own download cache (~/.cache/pip) is shared by both tools and left warm
unless --cold-pip-cache points both at an empty one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import cloudpickle  # noqa: E402
from model import make_predict, train  # noqa: E402

import deployer  # noqa: E402
from deployer import packaging  # noqa: E402
from deployer.console import Reporter  # noqa: E402
from deployer.providers.aws.lambda_package import (  # noqa: E402
    LAYER_LIMIT_BYTES,
    LambdaTarget,
    lambda_target,
    layer_zip,
)
from deployer.providers.aws.provider import AwsProvider  # noqa: E402

WANTED = [
    "scikit-learn",
    "numpy",
    "pandas",
    "pyarrow>=14",
    f"cloudpickle=={cloudpickle.__version__}",
]
IMPORT_STATEMENT = "import pandas, pyarrow.parquet, sklearn.linear_model"
CHALICE_APP = """from chalice import Chalice, Rate

app = Chalice(app_name="bench")


@app.schedule(Rate(1, unit=Rate.HOURS))
def predict(event):
    # Imported inside: `chalice package` imports app.py, and its own
    # virtualenv has none of these.
    import pandas as pd
    import pyarrow.parquet  # noqa: F401
    from sklearn.linear_model import LogisticRegression  # noqa: F401

    return {{"rows": len(pd.DataFrame({{"x": [1, 2]}})) + {offset}}}
"""
MEGABYTE = 2**20


class TimingReporter(Reporter):
    """Records how long each phase of dependency_artifact takes, and its notes."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.phases: list[tuple[str, float]] = []
        self.notes: list[str] = []

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.phases.append((message, time.perf_counter() - started))

    def say(self, message: str) -> None:
        self.notes.append(message)


@dataclass(frozen=True)
class Row:
    tool: str
    cold: float
    warm: float
    code_only: float
    zipped: int
    unzipped: int
    note: str


def resolve_pins(target: LambdaTarget, scratch: Path) -> list[str]:
    """Every distribution pip picks for ``target`` from WANTED, pinned."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--target", str(scratch / "resolve"), "--report", "-"]
    command += ["--only-binary=:all:", "--implementation", "cp"]
    command += ["--python-version", target.python, "--abi", target.platform.abi]
    for tag in target.platform_tags:
        command += ["--platform", tag]
    completed = subprocess.run([*command, *WANTED], capture_output=True, text=True, check=True)
    report = json.loads(completed.stdout)
    return sorted(
        f"{item['metadata']['name'].lower()}=={item['metadata']['version']}"
        for item in report["install"]
    )


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def run_deployer(
    pins: list[str], target: LambdaTarget, scratch: Path
) -> tuple[Row, TimingReporter, dict[str, Any]]:
    model, columns, _ = train()
    os.environ["DEPLOYER_CACHE"] = str(scratch / "deployer-cache")
    provider = AwsProvider(architecture=target.architecture, slim=True)
    reporter = TimingReporter()
    outcome: dict[str, Any] = {}

    def package(offset: float) -> None:
        # What a deploy does before calling AWS: build the bundle, then
        # AwsProvider.package (the dependency artifact, installed, archived and
        # cached once per deps_hash, and slim mode's decompressor), and the code zip.
        built = deployer.build(
            make_predict(model, columns, offset=offset),
            name="bench",
            requirements=pins,
            output=str(scratch / "store"),
        )
        packaged = provider.package(built.bundle, reporter, code_bytes=built.bundle.size)
        code = packaged.code_zip(built.bundle)
        artifact = packaged.dependencies
        outcome.update(
            artifact=artifact,
            zipped=artifact.path.stat().st_size + len(code),
            unzipped=artifact.unzipped_bytes + built.bundle.size,
            requirements=built.bundle.manifest.requirements,
        )

    cold, _ = timed(lambda: package(0.0))
    warm, _ = timed(lambda: package(0.0))
    code_only, _ = timed(lambda: package(0.001))
    mode = outcome["artifact"].mode
    row = Row(
        f"deployer ({mode} mode)",
        cold,
        warm,
        code_only,
        outcome["zipped"],
        outcome["unzipped"],
        "yes" if mode == "layer" else "no: slim mode, /tmp",
    )
    return row, reporter, outcome


def run_chalice(pins: list[str], scratch: Path, environment: dict[str, str]) -> tuple[Row, str]:
    venv = scratch / "chalice-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "chalice"],
        check=True,
        env=environment,
        capture_output=True,
    )
    chalice = str(venv / "bin" / "chalice")
    version = subprocess.run([chalice, "--version"], capture_output=True, text=True).stdout
    app = scratch / "chalice-app"
    (app / ".chalice").mkdir(parents=True)
    (app / ".chalice" / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "bench", "stages": {"dev": {}}})
    )
    (app / "requirements.txt").write_text("".join(f"{pin}\n" for pin in pins))
    # `chalice package` needs a region even though it calls no AWS API.
    chalice_environment = {**environment, "AWS_DEFAULT_REGION": "us-east-1"}
    warnings: list[str] = []

    def package(offset: int, output: str) -> None:
        (app / "app.py").write_text(CHALICE_APP.format(offset=offset))
        completed = subprocess.run(
            [chalice, "package", output],
            cwd=app,
            env=chalice_environment,
            capture_output=True,
            text=True,
            check=True,
        )
        if "Could not install dependencies" in completed.stdout + completed.stderr:
            warnings.append((completed.stdout + completed.stderr).strip())

    cold, _ = timed(lambda: package(0, "out-cold"))
    warm, _ = timed(lambda: package(0, "out-warm"))
    code_only, _ = timed(lambda: package(1, "out-code"))
    deployment = app / "out-cold" / "deployment.zip"
    with zipfile.ZipFile(deployment) as opened:
        unzipped = sum(entry.file_size for entry in opened.infolist())
        top_level = {name.split("/", 1)[0] for name in opened.namelist()}
    missing = [
        name for name in ("numpy", "scipy", "pandas", "pyarrow", "sklearn") if name not in top_level
    ]
    note = "yes" if unzipped <= LAYER_LIMIT_BYTES else "no: fails at deploy"
    if missing:
        note += f"; MISSING {', '.join(missing)}"
    if warnings:
        note += "; warned: could not install some dependencies"
    row = Row("chalice package", cold, warm, code_only, deployment.stat().st_size, unzipped, note)
    return row, version.strip()


def import_seconds(python_dir: Path, scratch: Path, *, runs: int = 3) -> float:
    """Median cold import of pandas, pyarrow.parquet and sklearn from the tree alone."""
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); started = time.perf_counter()\n"
        f"{IMPORT_STATEMENT}\n"
        "print(time.perf_counter() - started)\n"
    )
    times = []
    for _ in range(runs):
        completed = subprocess.run(
            [sys.executable, "-I", "-S", "-B", "-c", script, str(python_dir)],
            capture_output=True,
            text=True,
            check=True,
            cwd=scratch,
        )
        times.append(float(completed.stdout))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cold-pip-cache", action="store_true", help="give both tools an empty pip cache"
    )
    arguments = parser.parse_args()
    if sys.version_info[:2] != (3, 11):
        sys.exit("run this bench with Python 3.11: it packages for Lambda's python3.11")
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-aws-package-"))
    environment = dict(os.environ)
    if arguments.cold_pip_cache:
        environment["PIP_CACHE_DIR"] = str(scratch / "pip-cache")
        os.environ["PIP_CACHE_DIR"] = environment["PIP_CACHE_DIR"]
    target = lambda_target("3.11")
    pins = resolve_pins(target, scratch)
    try:
        ours, reporter, outcome = run_deployer(pins, target, scratch)
        theirs, chalice_version = run_chalice(pins, scratch, environment)
        # The tree again, untimed, for what only a tree shows: its sizes, the
        # layer zip it would make and how fast it imports.
        with packaging.scratch_dependencies(
            outcome["requirements"],
            target.platform,
            deps_hash="bench",
            reporter=Reporter(quiet=True),
        ) as dependencies:
            python_dir = dependencies.python_dir
            metadata = json.loads((dependencies.root / packaging.METADATA_FILE).read_text())
            tree = metadata["sizes"]
            outcome["layer_zip_seconds"], outcome["layer_zip_bytes"] = timed(
                lambda: layer_zip(dependencies, scratch / "layer.zip")
            )
            without_bytecode = scratch / "without-bytecode"
            shutil.copytree(
                python_dir, without_bytecode, ignore=shutil.ignore_patterns("__pycache__")
            )
            imports = (
                import_seconds(python_dir, scratch),
                import_seconds(without_bytecode, scratch),
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"target: {target}")
    print(f"requirements (both tools): {' '.join(outcome['requirements'])}")
    print(f"chalice: {chalice_version}")
    cache = "empty (--cold-pip-cache)" if arguments.cold_pip_cache else "warm (~/.cache/pip)"
    print(f"pip download cache: {cache}; cold = deployer cache dir / .chalice/deployments empty")
    print()
    header = (
        f"{'tool':<22} {'cold s':>7} {'warm s':>7} {'code s':>7} "
        f"{'zipped MB':>10} {'unzipped MB':>12}  within 250 MB?"
    )
    print(header)
    print("-" * len(header))
    for row in (ours, theirs):
        print(
            f"{row.tool:<22} {row.cold:>7.1f} {row.warm:>7.2f} {row.code_only:>7.2f} "
            f"{row.zipped / MEGABYTE:>10.0f} {row.unzipped / MEGABYTE:>12.0f}  {row.note}"
        )
    print()
    print("deployer cold build, by phase:")
    for message, seconds in reporter.phases:
        print(f"  {seconds:>6.1f} s  {message.split(' (')[0]}")
    print(f"  (built in {packaging.workspace()}, which holds only the tree while it is archived)")
    print(
        f"layer zip (not deployable here, built for its size): "
        f"{outcome['layer_zip_bytes'] / MEGABYTE:.0f} MB in {outcome['layer_zip_seconds']:.1f} s"
    )
    removed = ", ".join(f"{kind} {size / MEGABYTE:.0f}" for kind, size in tree["removed"].items())
    print(
        f"dependency tree unzipped: {tree['installed'] / MEGABYTE:.0f} MB as pip installed it, "
        f"{tree['stripped'] / MEGABYTE:.0f} MB stripped (removed MB: {removed}), "
        f"{tree['shipped'] / MEGABYTE:.0f} MB with .pyc"
    )
    print(
        f"cold import ({IMPORT_STATEMENT}) from the tree alone: "
        f"{imports[0]:.2f} s with .pyc, {imports[1]:.2f} s without"
    )
    for note in reporter.notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
