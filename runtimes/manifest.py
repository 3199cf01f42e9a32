"""The bundle manifest: the one definition of what ``manifest.json`` holds.

``deployer.bundle`` writes it on the host; ``core.load`` reads it inside every
deployed function, where this file ships as ``deployer_runtime/manifest.py``.
So it imports only the standard library, never ``deployer``.

A change to the fields is a new ``FORMAT``. A runtime reads exactly one format
and refuses any other by name, rather than guess at a manifest that a
different version of deployer wrote.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

MANIFEST_FILE = "manifest.json"
FORMAT = 4


class ManifestError(ValueError):
    """manifest.json is not a manifest of the format this runtime reads."""


@dataclass(frozen=True, kw_only=True)
class FunctionEntry:
    """The pickled function: where it is, its digest, and how it is called."""

    file: str
    sha256: str  # checked before unpickling: a pickle runs code when loaded
    qualname: str
    signature: str
    takes_input: bool
    requires_input: bool
    input_kind: str  # "dataframe" (the body becomes a DataFrame) or "json" (passed as is)
    # The keyword-only parameters a run may set (``params=``), name -> the JSON
    # kind its value must have: "int", "float", "str", "bool", or "any".
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CreatedWith:
    """The versions that made the bundle; a pickle loads only on the same Python minor."""

    deployer: str
    cloudpickle: str
    python: str


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a bundle is and how to run it; ``manifest.json`` is ``to_json()`` of it."""

    format: int = field(default=FORMAT, init=False)
    name: str
    python: str  # the Python minor version the function was pickled on, e.g. "3.11"
    platform: str  # the platform tag its dependencies were resolved for
    function: FunctionEntry
    source: str | None  # the function's source text, for people; never executed
    requirements: tuple[str, ...]  # the lines of requirements.txt
    local_modules: tuple[str, ...]  # bundle paths of the local modules shipped as source
    inputs: str | None
    output: str
    # As deployer.triggers.trigger_to_dict writes them ({"type": "cron", ...}):
    # typed triggers would bring deployer.triggers into every runtime, and no
    # runtime reads them; the host parses them with trigger_from_dict.
    triggers: tuple[dict[str, Any], ...]
    timeout_seconds: int
    metrics: tuple[str, ...]  # names of the user's metrics
    checks: tuple[str, ...]  # names of the user's checks
    # Metric bounds and severities, check severities, drift thresholds, and the
    # bundle's reference profile file (or null): read by runtimes/quality.py.
    quality: dict[str, Any]
    code_hash: str
    deps_hash: str
    created_with: CreatedWith

    def to_json(self) -> bytes:
        """Deterministic bytes: sorted keys, two-space indent, one final newline.

        The bundle's bytes, and so "nothing changed" on redeploy, depend on it.
        """
        return (json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Manifest:
        """The manifest in ``raw``; ManifestError naming what is wrong if it is not one."""
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise ManifestError(f"{MANIFEST_FILE} is not JSON ({error}): {_REBUILD}") from None
        if not isinstance(data, dict):
            raise ManifestError(
                f"{MANIFEST_FILE} holds {_type_name(data)}, not an object: {_REBUILD}"
            )
        found = data.get("format")
        if type(found) is not int or found != FORMAT:
            shown = "none" if found is None else repr(found)
            raise ManifestError(
                f"this bundle's manifest format {shown} is not one this runtime reads "
                f"(it reads {FORMAT}): redeploy with this version of deployer"
            )
        fields = _Fields(data, "")
        fields.read("format")  # checked above
        function = fields.record("function")
        created_with = fields.record("created_with")
        manifest = cls(
            name=fields.text("name"),
            python=fields.text("python"),
            platform=fields.text("platform"),
            function=FunctionEntry(
                file=function.text("file"),
                sha256=function.text("sha256"),
                qualname=function.text("qualname"),
                signature=function.text("signature"),
                takes_input=function.flag("takes_input"),
                requires_input=function.flag("requires_input"),
                input_kind=function.text("input_kind"),
                params=function.kinds("params"),
            ),
            source=fields.optional_text("source"),
            requirements=fields.texts("requirements"),
            local_modules=fields.texts("local_modules"),
            inputs=fields.optional_text("inputs"),
            output=fields.text("output"),
            triggers=fields.triggers("triggers"),
            timeout_seconds=fields.whole_number("timeout_seconds"),
            metrics=fields.texts("metrics"),
            checks=fields.texts("checks"),
            quality=fields.mapping("quality"),
            code_hash=fields.text("code_hash"),
            deps_hash=fields.text("deps_hash"),
            created_with=CreatedWith(
                deployer=created_with.text("deployer"),
                cloudpickle=created_with.text("cloudpickle"),
                python=created_with.text("python"),
            ),
        )
        for record in (fields, function, created_with):
            record.check_all_read()
        return manifest


_REBUILD = "the bundle is damaged or was not made by deployer; build and deploy it again"


_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "true/false",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _type_name(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class _Fields:
    """The fields of one JSON object, each read once with its expected type.

    Every field of the object must be read: one that nothing reads would be
    lost on the way through ``from_json`` and ``to_json``.
    """

    def __init__(self, data: dict[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def read(self, key: str) -> Any:
        if key not in self.data:
            raise ManifestError(f"{MANIFEST_FILE} has no field '{self.prefix}{key}': {_REBUILD}")
        self.seen.add(key)
        return self.data[key]

    def _refuse(self, key: str, value: object, expected: str) -> ManifestError:
        return ManifestError(
            f"{MANIFEST_FILE} field '{self.prefix}{key}' must be {expected}, got "
            f"{_type_name(value)} ({value!r:.80}): {_REBUILD}"
        )

    def text(self, key: str) -> str:
        value = self.read(key)
        if not isinstance(value, str):
            raise self._refuse(key, value, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.read(key)
        if value is not None and not isinstance(value, str):
            raise self._refuse(key, value, "a string or null")
        return value

    def flag(self, key: str) -> bool:
        value = self.read(key)
        if not isinstance(value, bool):
            raise self._refuse(key, value, "true or false")
        return value

    def whole_number(self, key: str) -> int:
        value = self.read(key)
        if type(value) is not int:  # bool is an int to isinstance
            raise self._refuse(key, value, "a whole number")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.read(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._refuse(key, value, "a list of strings")
        return tuple(value)

    def triggers(self, key: str) -> tuple[dict[str, Any], ...]:
        value = self.read(key)
        if not isinstance(value, list) or not all(
            isinstance(item, dict) and isinstance(item.get("type"), str) for item in value
        ):
            raise self._refuse(key, value, 'a list of objects, each with a "type"')
        return tuple(value)

    def kinds(self, key: str) -> dict[str, str]:
        value = self.read(key)
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            raise self._refuse(key, value, "an object of strings")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.read(key)
        if not isinstance(value, dict):
            raise self._refuse(key, value, "an object")
        return value

    def record(self, key: str) -> _Fields:
        value = self.read(key)
        if not isinstance(value, dict):
            raise self._refuse(key, value, "an object")
        return _Fields(value, f"{self.prefix}{key}.")

    def check_all_read(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            names = ", ".join(repr(f"{self.prefix}{key}") for key in unknown)
            raise ManifestError(
                f"{MANIFEST_FILE} has fields format {FORMAT} does not define ({names}): {_REBUILD}"
            )
