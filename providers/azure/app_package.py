"""The Azure Functions app zip, built offline: which platform a Python runs on, and the zip.

The pipeline's packaging stage for Azure, without any Azure call
(``providers/azure/provider.py`` deploys what this builds). Installing,
stripping and precompiling the wheels is ``deployer/packaging.py``'s; this
module says what the Functions Linux image is and how an app takes the tree:

    azure_platform("3.11")        the Python and glibc of the Functions image for it
    install_app_dependencies(...) the vendored site-packages for a bundle, cached per deps_hash
    app_zip(...)                  function_app.py + host.json + the bundle + the tree

The dependencies are vendored, never built remotely (RemoteBuild=false):
wheels built for the wrong platform or Python are the most common failure of
Python apps on Azure (azure-functions-python-worker issues 464, 904, 1454,
1497), and a vendored tree is the one deployer installed and import-checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deployer import packaging
from deployer.archive import extend_zip, write_zip
from deployer.bundle import RUNTIME_PACKAGE, Bundle
from deployer.cache import cache_root
from deployer.errors import BundleError, ConfigError
from deployer.packaging import Platform
from deployer.requirements import canonical
from deployer.triggers import Cron, Every, Http, Trigger, trigger_from_dict

from .target import local_schedule, timer_schedule

if TYPE_CHECKING:
    from deployer.console import Reporter

# The Python versions Azure Functions 4.x runs on Linux, generally available on
# the Flex Consumption plan: 3.10 to 3.13 (3.14 is in preview). MicrosoftDocs
# azure-docs articles/azure-functions/supported-languages.md and
# functions-reference-python.md; Azure/azure-functions-python-worker README.
# The glibc is that of the Functions host image for each Python
# (Azure/azure-functions-docker): python3.10 and 3.11 run on Debian 11
# bullseye (host/4/bullseye/amd64/python/python311/python311.Dockerfile, from
# python:3.11-slim-bullseye: glibc 2.31), python3.12 and 3.13 on Debian 12
# bookworm (host/4/bookworm/python/python312/python312.Dockerfile, from
# oryx/python:3.12-debian-bookworm: glibc 2.36). Wheels up to manylinux_2_31 /
# manylinux_2_36 load there; python3.11 thus takes the manylinux_2_28 wheels of
# the newest numpy, pyarrow and scikit-learn, unlike Lambda's python3.11.
SUPPORTED_PYTHONS: tuple[str, ...] = ("3.10", "3.11", "3.12", "3.13")
DEBIAN_11 = "Debian 11"
DEBIAN_12 = "Debian 12"
OPERATING_SYSTEM_GLIBC = {DEBIAN_11: (2, 31), DEBIAN_12: (2, 36)}
PYTHON_OPERATING_SYSTEMS = {
    "3.10": DEBIAN_11,
    "3.11": DEBIAN_11,
    "3.12": DEBIAN_12,
    "3.13": DEBIAN_12,
}
# Flex Consumption runs on x86_64 only.
MACHINE = "x86_64"
# Where the worker finds an app's packages (it puts the folder on sys.path
# itself); the app is mounted at /home/site/wwwroot, so the tree's .pyc files
# name that path as their source.
SITE_PACKAGES = ".python_packages/lib/site-packages"
APP_ROOT = "/home/site/wwwroot"
# The directory of Azure's trees in the machine's cache (``<cache>/azure/<deps_hash>``).
CACHE_DIRECTORY = "azure"

FUNCTION_APP_FILE = "function_app.py"
HOST_FILE = "host.json"
HTTP_FUNCTION = "http"
# Extension bundle 4.x carries the timer and HTTP bindings for Functions 4.x.
EXTENSION_BUNDLE = {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
# Azure does not retry a failed timer run unless a retry policy says so; the
# retry gets the same timer status, hence the same fire time and run id.
TIMER_RETRIES = 2
TIMER_RETRY_DELAY = "00:01:00"


def azure_platform(python: str) -> Platform:
    """The Linux an app for Python ``python`` ("3.11") runs on in Azure Functions."""
    operating_system = PYTHON_OPERATING_SYSTEMS.get(python)
    if operating_system is None:
        offered = ", ".join(SUPPORTED_PYTHONS)
        raise ConfigError(
            f"Azure Functions has no Python {python} runtime: it offers Python {offered} on "
            "Linux. A pickled function only loads on the Python version that pickled it, so "
            "deploy from one of those (for example a virtualenv made with "
            "`uv venv --python 3.12`)"
        )
    glibc = OPERATING_SYSTEM_GLIBC[operating_system]
    return Platform(
        python=python,
        glibc=glibc,
        machine=MACHINE,
        site_dir=f"{APP_ROOT}/{SITE_PACKAGES}",
        name=(
            f"Azure Functions python{python} on {MACHINE} "
            f"({operating_system}, glibc {glibc[0]}.{glibc[1]})"
        ),
    )


def install_app_dependencies(bundle: Bundle, reporter: Reporter) -> Path | None:
    """The site-packages tree the app ships for ``bundle``, or None when it needs none.

    Installed once per deps_hash into ``<cache>/azure/<deps_hash>``: a change to
    the code alone finds the tree there and installs nothing. The worker brings
    ``azure.functions`` itself (function_app.py imports it before any of ours).
    """
    lines = [line for line in bundle.manifest.requirements if line.strip()]
    if not lines:
        return None
    if not any(
        canonical(re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]) == "tzdata" for line in lines
    ):
        # The runtime reads the schedule's zone with zoneinfo, which needs the
        # IANA database; the Debian 12 images may lack /usr/share/zoneinfo
        # (tzdata is no longer a required package there), and zoneinfo falls
        # back to this package. Always, not only for zoned schedules: the
        # tree is cached per deps_hash, which does not cover the triggers.
        lines.append("tzdata")
    platform = azure_platform(bundle.manifest.python)
    dependencies = packaging.install_dependencies(
        lines,
        platform,
        deps_hash=bundle.deps_hash,
        cache_dir=cache_root() / CACHE_DIRECTORY,
        reporter=reporter,
        alternatives=_other_pythons(platform.python),
    )
    return dependencies.python_dir


def _other_pythons(python: str) -> tuple[Platform, ...]:
    """The other Azure Pythons, newest first: their newer glibc takes more wheels."""
    return tuple(
        azure_platform(other)
        for other in sorted(
            SUPPORTED_PYTHONS, key=lambda version: tuple(map(int, version.split("."))), reverse=True
        )
        if other != python
    )


def app_zip(bundle: Bundle, site_packages: Path | None, destination: Path) -> Path:
    """Write the app zip to ``destination``: function_app.py, host.json, the bundle's
    files at the root and ``site_packages`` under .python_packages/lib/site-packages/.

    The same inputs give the same bytes (sorted entries, fixed timestamps), so
    an unchanged app is recognised by its sha256 without uploading it.
    """
    own = {FUNCTION_APP_FILE, HOST_FILE}
    for path, _ in bundle.files:
        top = path.split("/", 1)[0]
        if path in own or top == ".python_packages":
            raise BundleError(
                f"the bundle has a file {path!r}, which is the Azure app's own: rename the "
                "local module that became it"
            )
    entries: list[tuple[str, Path | bytes]] = [
        (FUNCTION_APP_FILE, function_app_source(bundle).encode()),
        (HOST_FILE, host_json(bundle)),
        *bundle.files,
    ]
    destination.parent.mkdir(parents=True, exist_ok=True)
    if site_packages is None:
        write_zip(entries, destination)
    else:
        # The dependencies, compressed once per deps_hash: a code-only change
        # appends its few files to that zip instead of compressing them again.
        extend_zip(dependencies_zip(site_packages), entries, destination)
    return destination


def dependencies_zip(site_packages: Path) -> Path:
    """The vendored tree as a zip under .python_packages/, kept beside the tree."""
    cached = site_packages.with_name(f"{site_packages.name}.app-deps.zip")
    if not cached.exists():
        write_zip(
            [
                (f"{SITE_PACKAGES}/{file.relative_to(site_packages).as_posix()}", file)
                for file in site_packages.rglob("*")
                if file.is_file()
            ],
            cached,
        )
    return cached


def host_json(bundle: Bundle) -> bytes:
    """host.json: Functions 4.x, the run's timeout, extension bundle 4, quiet logs.

    Only the function's own lines (``Function`` category: what the run prints,
    with deployer's run markers) are kept at Information; the host's chatter is
    cut to warnings.
    """
    document = {
        "version": "2.0",
        "functionTimeout": function_timeout(bundle.manifest.timeout_seconds),
        "extensionBundle": EXTENSION_BUNDLE,
        "logging": {
            "logLevel": {"default": "Warning", "Function": "Information"},
        },
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def function_timeout(seconds: int) -> str:
    """A TimeSpan as host.json takes it: ``hh:mm:ss``, days before a dot past 24 hours."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}.{clock}" if days else clock


def _auth_level(triggers: Sequence[Trigger]) -> str:
    """Who may call the HTTP function: anyone for Http(public=True), a function key
    holder for Http(), and with no Http trigger only the master key (``deployer invoke``)."""
    https = [trigger for trigger in triggers if isinstance(trigger, Http)]
    if not https:
        return "ADMIN"
    return "ANONYMOUS" if https[0].public else "FUNCTION"


def function_app_source(bundle: Bundle) -> str:
    """The generated function_app.py: the app's functions, each a call into deployer_runtime.

    No user code runs here; the only user-given values (the function name, the
    schedules) are validated by deployer and written as Python literals (repr).
    """
    manifest = bundle.manifest
    triggers = [trigger_from_dict(data) for data in manifest.triggers]
    lines = [
        f'"""The Azure Functions app of {manifest.name!r}, generated by deployer: do not edit.',
        "",
        "Each function calls deployer_runtime.azure, which loads the bundle (manifest.json,",
        "function.pkl) once per process, on the first invocation.",
        '"""',
        "",
        "import azure.functions as func",
        "",
        f"from {RUNTIME_PACKAGE} import azure as deployer_azure",
        "",
        "app = func.FunctionApp()",
        "",
        "",
        f"@app.function_name(name={HTTP_FUNCTION!r})",
        f"@app.route(route={manifest.name!r}, methods=['POST'], "
        f"auth_level=func.AuthLevel.{_auth_level(triggers)})",
        f"def {HTTP_FUNCTION}(req: func.HttpRequest) -> func.HttpResponse:",
        "    return deployer_azure.handle_http(req)",
    ]
    schedules = [trigger for trigger in triggers if isinstance(trigger, (Cron, Every))]
    for index, schedule in enumerate(schedules):
        function = f"schedule_{index}"
        checked = local_schedule(schedule)
        check = "" if checked is None else f", cron={checked[0]!r}, tz={checked[1]!r}"
        if schedule.params:
            # JSON values are Python literals once true/false/null are spelled so.
            check += f", params={dict(schedule.params)!r}"
        if not schedule.overlap:
            check += ", overlap=False"
        lines += [
            "",
            "",
            f"@app.function_name(name={function!r})",
            f"@app.timer_trigger(schedule={timer_schedule(schedule)!r}, arg_name='timer', "
            "run_on_startup=False, use_monitor=True)",
            f"@app.retry(strategy='fixed_delay', max_retry_count={str(TIMER_RETRIES)!r}, "
            f"delay_interval={TIMER_RETRY_DELAY!r})",
            f"def {function}(timer: func.TimerRequest) -> None:",
            f"    deployer_azure.handle_timer(timer, {index}{check})",
        ]
    return "\n".join(lines) + "\n"
