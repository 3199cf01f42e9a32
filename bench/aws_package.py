"""Packaging for AWS Lambda: deployer vs `chalice package`, same function, same pins.

    python bench/aws_package.py [--cold-pip-cache]

The function is the sample classifier (pandas + scikit-learn; pyarrow for the
runtime's Parquet I/O) for python3.11 on x86_64. Its requirements are every
distribution pip resolves for that target (Amazon Linux 2, glibc 2.26) from
``scikit-learn numpy pandas pyarrow>=14 cloudpickle==<local>``, pinned, so
both tools package exactly the same versions; Chalice is installed into its
own virtualenv under the scratch directory and run there.

Cases, each timed end to end (bundle or app code included):
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
from deployer.console import Reporter  # noqa: E402
from deployer.packaging import METADATA_FILE, Dependencies  # noqa: E402
from deployer.providers.aws.lambda_package import (  # noqa: E402
    LAYER_LIMIT_BYTES,
    LambdaTarget,
    install_dependencies,
    lambda_target,
    layer_zip,
    slim_archive,
)

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
    """Records how long each phase of install_dependencies takes, and its notes."""

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
) -> tuple[Row, Dependencies, TimingReporter, dict[str, Any]]:
    model, columns, _ = train()
    cache_dir = scratch / "deployer-cache"
    artifacts = scratch / "deployer-artifacts"
    artifacts.mkdir()
    reporter = TimingReporter()
    outcome: dict[str, Any] = {}

    def package(offset: float) -> None:
        # What AwsProvider.package does: build, install (or hit the cache),
        # then the dependency artifact once per deps_hash, and the code zip.
        built = deployer.build(
            make_predict(model, columns, offset=offset),
            name="bench",
            requirements=pins,
            output=str(scratch / "store"),
        )
        dependencies = install_dependencies(
            built.bundle.manifest.requirements,
            target,
            deps_hash=built.bundle.deps_hash,
            cache_dir=cache_dir,
            reporter=reporter,
        )
        code = built.bundle.zip_bytes()
        unzipped = dependencies.unzipped_bytes + built.bundle.size
        mode = "layer" if unzipped <= LAYER_LIMIT_BYTES else "slim"
        artifact = artifacts / f"{dependencies.deps_hash}-{mode}"
        if not artifact.exists():
            build = layer_zip if mode == "layer" else slim_archive
            outcome["artifact_seconds"], _ = timed(lambda: build(dependencies, artifact))
        outcome.update(
            dependencies=dependencies,
            mode=mode,
            zipped=artifact.stat().st_size + len(code),
            unzipped=unzipped,
            requirements=built.bundle.manifest.requirements,
        )

    cold, _ = timed(lambda: package(0.0))
    warm, _ = timed(lambda: package(0.0))
    code_only, _ = timed(lambda: package(0.001))
    dependencies = outcome["dependencies"]
    outcome["layer_zip_seconds"], outcome["layer_zip_bytes"] = timed(
        lambda: layer_zip(dependencies, artifacts / "layer.zip")
    )
    row = Row(
        f"deployer ({outcome['mode']} mode)",
        cold,
        warm,
        code_only,
        outcome["zipped"],
        outcome["unzipped"],
        "yes" if outcome["unzipped"] <= LAYER_LIMIT_BYTES else "no: slim mode, /tmp",
    )
    return row, dependencies, reporter, outcome


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
        ours, dependencies, reporter, outcome = run_deployer(pins, target, scratch)
        theirs, chalice_version = run_chalice(pins, scratch, environment)
        python_dir = dependencies.root / "python"
        tree = json.loads((dependencies.root / METADATA_FILE).read_text())["sizes"]
        without_bytecode = scratch / "without-bytecode"
        shutil.copytree(python_dir, without_bytecode, ignore=shutil.ignore_patterns("__pycache__"))
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
    print(f"  {outcome['artifact_seconds']:>6.1f} s  {ours.tool.split('(')[1][:-1]} archive")
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
