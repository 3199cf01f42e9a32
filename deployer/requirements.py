"""Referenced modules -> pinned requirements for the bundle.

Two kinds of requirement (ARCHITECTURE, requirements stage):
- what the function's behaviour depends on — distributions of the modules its
  pickle or bytecode references, and pandas when it takes DataFrames — is
  pinned to the version installed here, because a pickled model is only safe
  with the library version that made it;
- what only the runtime needs for its own I/O (pyarrow for Parquet, pandas for
  metrics) is a range, so each target gets the newest version it has wheels for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata

from deployer.capture import Captured
from deployer.errors import RequirementsError

# The runtime's own needs. cloudpickle is pinned separately: a pickle loads
# reliably only with the cloudpickle version that wrote it.
RUNTIME_RANGES = {"pyarrow": ">=14", "pandas": ">=2.1"}


@dataclass(frozen=True)
class Requirement:
    name: str  # canonical distribution name
    specifier: str  # "==1.5.2", ">=14", or "" for an unconstrained user requirement
    reason: str  # why it is there, shown to the user

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


@dataclass(frozen=True)
class Requirements:
    pinned: tuple[Requirement, ...]  # behaviour: exact versions
    runtime: tuple[Requirement, ...]  # runtime I/O: ranges

    @property
    def all(self) -> tuple[Requirement, ...]:
        return tuple(sorted(self.pinned + self.runtime, key=lambda item: item.name))

    def lines(self) -> list[str]:
        """requirements.txt lines, sorted so the file (and deps_hash) is stable."""
        return [str(requirement) for requirement in self.all]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _module_index() -> dict[str, list[str]]:
    return {
        module: list(dict.fromkeys(dists))
        for module, dists in metadata.packages_distributions().items()
    }


def _installed_from(distribution: str) -> str | None:
    """Where a distribution came from when it is not an index: a path, a VCS URL."""
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    direct = json.loads(text)
    url = direct.get("url", "")
    if direct.get("dir_info", {}).get("editable"):
        return f"an editable install of {url}"
    if "vcs_info" in direct:
        return f"a {direct['vcs_info'].get('vcs', 'VCS')} checkout {url}"
    if url.startswith("file://"):
        return f"a local file {url}"
    return None


def _parse_user(line: str) -> tuple[str, str]:
    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement as Parsed

    if line.strip().startswith("-e") or line.strip().startswith("--editable"):
        raise RequirementsError(
            f"requirement {line!r} is an editable install, which a cloud function cannot use: "
            "give a released version instead, such as 'name==1.2.3'"
        )
    try:
        parsed = Parsed(line)
    except InvalidRequirement as error:
        raise RequirementsError(
            f"requirement {line!r} is not a valid requirement ({error}): "
            "use the pip form 'name==1.2.3' or 'name>=1.2'"
        ) from None
    if parsed.url:
        if parsed.url.startswith("file:") or "://" not in parsed.url:
            raise RequirementsError(
                f"requirement {line!r} points at a path on this machine, which the cloud "
                "function cannot reach: publish the package to an index and require its version"
            )
        return canonical(parsed.name), f" @ {parsed.url}"
    return canonical(parsed.name), str(parsed.specifier)


def resolve(
    captured: Captured,
    *,
    user_requirements: Sequence[str] = (),
    preinstalled: Iterable[str] = (),
) -> Requirements:
    """Pin what ``captured`` references; add or override with ``user_requirements``.

    ``preinstalled`` names distributions the provider's runtime already has
    (boto3 on Lambda); they are dropped unless the user asks for them.
    """
    user = dict(_parse_user(line) for line in user_requirements if line.strip())
    skip = {canonical(name) for name in preinstalled}
    owner = captured.qualname
    pinned: dict[str, Requirement] = {}

    def pin(distribution: str, reason: str) -> None:
        name = canonical(distribution)
        if name in user or name in skip or name in pinned:
            return
        source = _installed_from(distribution)
        if source is not None:
            raise RequirementsError(
                f"{distribution} is installed here from {source}; a cloud function cannot "
                f"install from that. Install a released version (pip install '{distribution}') "
                f"or pass requirements=['{distribution}==<released version>']"
            )
        pinned[name] = Requirement(name, f"=={metadata.version(distribution)}", reason)

    for module in captured.modules:
        if module == "deployer" or module == "cloudpickle":
            continue  # the runtime never needs deployer; cloudpickle is pinned below
        distributions = _module_index().get(module, [])
        if not distributions:
            if canonical(module) in user:
                continue
            raise RequirementsError(
                f"{owner}() uses module '{module}', which no installed package provides, "
                f"so its version cannot be pinned: install it here (pip install {module}) "
                f"or pass requirements=['<package>==<version>']"
            )
        for distribution in distributions:
            pin(distribution, f"imported by {owner}()")
    if captured.takes_input and captured.input_kind == "dataframe":
        pin("pandas", f"{owner}() takes a DataFrame")
    pin("cloudpickle", "loads the pickled function")
    runtime = {
        name: Requirement(name, specifier, "runtime I/O")
        for name, specifier in RUNTIME_RANGES.items()
        if name not in pinned and name not in user and name not in skip
    }
    for name, specifier in user.items():
        pinned[name] = Requirement(name, specifier, "requirements=")
    return Requirements(
        pinned=tuple(sorted(pinned.values(), key=lambda item: item.name)),
        runtime=tuple(sorted(runtime.values(), key=lambda item: item.name)),
    )
