"""Packaging for Azure Functions: the app zip of the scikit-learn sample, and its cold start.

    python bench/azure_package.py [--cold-pip-cache] [--starts 3]

The function is the sample classifier (bench/model.py: pandas + scikit-learn,
pyarrow for the runtime's Parquet I/O) for Azure Functions python3.11 on
x86_64 (Debian 11, glibc 2.31). Each build case is timed end to end:
capture and bundle, the vendored site-packages (providers/azure/app_package.py
``install_app_dependencies``) and the app zip (``app_zip``):

1. cold: deployer's cache directory fresh;
2. warm: the same again (the tree for that deps_hash is found);
3. code-only: the function changed, its dependencies not.

pip's own download cache (~/.cache/pip) is left warm unless --cold-pip-cache
points pip at an empty one.

Cold start: the zip unpacked alone, run in a virtualenv holding only
azure-functions by the harness of tests/test_azure_app.py (the app root and
.python_packages on sys.path, as the Functions worker puts them): the time to
import function_app, then the first HTTP run (which loads the bundle: pandas,
pyarrow, scikit-learn, the unpickled model) of one process, over ``--starts``
fresh processes. The run writes to a local folder, not Azure Storage, so the
figure is the app's own start, without network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from model import make_predict, train  # noqa: E402
from test_azure_app import make_venv, run_app  # noqa: E402

import deployer  # noqa: E402
from deployer import Cron, Http  # noqa: E402
from deployer.bundle import Bundle  # noqa: E402
from deployer.console import Reporter  # noqa: E402
from deployer.providers.azure.app_package import (  # noqa: E402
    app_zip,
    install_app_dependencies,
)

MEGABYTE = 2**20
NAME = "bench-azure"
# Lambda's python3.11 (Amazon Linux 2, glibc 2.26) needs older numpy and
# scikit-learn than installed here, as in bench/aws_deploy.py; Azure's Debian
# takes the installed versions (the model's pickle needs them for the cold start).
AWS_PINS = ["scikit-learn==1.7.2", "numpy==2.2.6"]


def build_app(function: Any, output: str, destination: Path) -> tuple[float, Bundle, Path]:
    started = time.perf_counter()
    bundle = deployer.build(
        function,
        name=NAME,
        provider="local",
        output=output,
        inputs=f"{output}/features.parquet",
        triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Http()],
    ).bundle
    site_packages = install_app_dependencies(bundle, Reporter(quiet=True))
    archive = app_zip(bundle, site_packages, destination)
    return time.perf_counter() - started, bundle, archive


def build_lambda(function: Any, destination: Path) -> tuple[float, int]:
    """The AWS artifacts of the same function (code zip and layer or slim archive),
    built the same way, for the side-by-side figures; seconds and bytes."""
    started = time.perf_counter()
    built = deployer.build(
        function,
        name=NAME,
        provider="aws",
        output="s3://bench-bucket/runs",
        inputs="s3://bench-bucket/features.parquet",
        triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Http()],
        requirements=AWS_PINS,
        # Over Lambda's 250 MB for layers: the slim archive, unpacked on cold start.
        provider_options={"slim": True},
    )
    written = deployer.write_artifacts(built, destination, quiet=True)
    return time.perf_counter() - started, sum(path.stat().st_size for path in written)


def unzipped_bytes(archive: Path) -> int:
    with zipfile.ZipFile(archive) as opened:
        return sum(info.file_size for info in opened.infolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-pip-cache", action="store_true")
    parser.add_argument("--starts", type=int, default=3)
    arguments = parser.parse_args()
    model, columns, features = train()
    with tempfile.TemporaryDirectory(prefix="deployer-bench-azure-") as scratch_name:
        scratch = Path(scratch_name)
        os.environ["DEPLOYER_CACHE"] = str(scratch / "cache")
        os.environ["DEPLOYER_HOME"] = str(scratch / "home")
        if arguments.cold_pip_cache:
            os.environ["PIP_CACHE_DIR"] = str(scratch / "pip-cache")
        output = str(scratch / "store")
        cold, bundle, archive = build_app(
            make_predict(model, columns), output, scratch / "cold.zip"
        )
        warm, _, _ = build_app(make_predict(model, columns), output, scratch / "warm.zip")
        code_only, changed, changed_archive = build_app(
            make_predict(model, columns, offset=0.1), output, scratch / "code.zip"
        )
        assert changed.deps_hash == bundle.deps_hash and changed.code_hash != bundle.code_hash
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        aws_cold, aws_size = build_lambda(make_predict(model, columns), scratch / "aws-cold")
        aws_warm, _ = build_lambda(make_predict(model, columns), scratch / "aws-warm")
        aws_code, _ = build_lambda(make_predict(model, columns, offset=0.1), scratch / "aws-code")

        python = make_venv(scratch / "venv")
        app_root = scratch / "app"
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(app_root)
        records = json.dumps(features.head(5).to_dict(orient="records"))
        imports, first_runs = [], []
        for _ in range(arguments.starts):
            report = run_app(
                python,
                app_root,
                [{"http": {"body": records, "route": NAME}}],
                {},
            )
            [answer] = report["results"]
            assert answer["status"] == 200, answer
            imports.append(report["import_seconds"])
            first_runs.append(answer["seconds"])
        size, unzipped = archive.stat().st_size, unzipped_bytes(archive)
        code_only_size = changed_archive.stat().st_size

    print(f"scikit-learn sample, python{bundle.manifest.python}: Azure app zip / AWS Lambda")
    print(f"  {'':<16} {'azure':>9} {'aws':>9} {'azure/aws':>10}")
    for label, azure_seconds, aws_seconds in (
        ("build cold", cold, aws_cold),
        ("build warm", warm, aws_warm),
        ("build code-only", code_only, aws_code),
    ):
        print(
            f"  {label:<16} {azure_seconds:8.2f}s {aws_seconds:8.2f}s "
            f"{azure_seconds / aws_seconds:9.2f}x"
        )
    print(
        f"  {'artifacts':<16} {size / MEGABYTE:7.1f}MB {aws_size / MEGABYTE:7.1f}MB "
        f"{size / aws_size:9.2f}x   (azure: {unzipped / MEGABYTE:.0f} MB unzipped; "
        f"code-only zip {code_only_size / MEGABYTE:.1f} MB)"
    )
    import_median = statistics.median(imports)
    run_median = statistics.median(first_runs)
    print(f"cold start in the harness (median of {arguments.starts} processes):")
    print(f"  import function_app  {import_median:6.3f} s")
    print(
        f"  first HTTP run       {run_median:6.3f} s   ({run_median / import_median:.0f} x the "
        "import: loading pandas, pyarrow, scikit-learn and the model)"
    )
    print(f"  total                {import_median + run_median:6.3f} s")


if __name__ == "__main__":
    main()
