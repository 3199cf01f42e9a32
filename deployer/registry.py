"""Providers by name, imported on first use (like fsspec's known_implementations).

A third party adds a provider with :func:`register_provider`, or by declaring an
entry point in the group ``deployer.providers`` whose value is ``module:Class``
(the extra is then the distribution's own business).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deployer.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from deployer.providers.base import Provider

ENTRY_POINT_GROUP = "deployer.providers"

# name -> (module:class, the extra that brings its SDK, or None)
PROVIDERS: dict[str, tuple[str, str | None]] = {
    "local": ("deployer.providers.local.provider:LocalProvider", None),
    "aws": ("deployer.providers.aws.provider:AwsProvider", "aws"),
    "gcp": ("deployer.providers.gcp.provider:GcpProvider", "gcp"),
    "azure": ("deployer.providers.azure.provider:AzureProvider", "azure"),
}


def register_provider(name: str, target: str, *, extra: str | None = None) -> None:
    """Make ``provider=name`` use the class at ``target`` ("package.module:Class").

    >>> register_provider("acme", "acme_deployer.provider:AcmeProvider")
    """
    module_name, _, class_name = target.partition(":")
    if not name or not module_name or not class_name:
        raise ConfigError(
            f"register_provider({name!r}, {target!r}): give a name and 'package.module:Class'"
        )
    PROVIDERS[name] = (target, extra)


def _known() -> dict[str, tuple[str, str | None]]:
    """The built-in providers, and those other distributions declare as entry points."""
    from importlib.metadata import entry_points

    known = dict(PROVIDERS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        known.setdefault(entry.name, (entry.value, None))
    return known


def provider_names(*, available: bool = False) -> list[str]:
    """Every provider's name; ``available``: only those whose code is here (a known
    name whose module does not exist, such as a registered plug-in not installed, is
    left out). Whether
    its cloud SDK extra is installed is not checked: that error is clearer."""
    known = _known()
    if not available:
        return list(known)
    from importlib.util import find_spec

    names = []
    for name, (target, _) in known.items():
        try:
            if find_spec(target.partition(":")[0]) is not None:
                names.append(name)
        except ModuleNotFoundError:  # a parent package is missing
            continue
    return names


def options_dict(options: Mapping[str, Any] | Any | None) -> dict[str, Any]:
    """``provider_options`` as keyword arguments: a dict as given, or a typed options
    object (AwsOptions, GcpOptions, ...) field by field."""
    if options is None:
        return {}
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {field.name: getattr(options, field.name) for field in dataclasses.fields(options)}
    if isinstance(options, Mapping):
        return dict(options)
    raise ConfigError(
        f"provider_options must be a dict or the provider's options object, not "
        f"{type(options).__name__}"
    )


def get_provider(name: str, options: Mapping[str, Any] | Any | None = None) -> Provider:
    known = _known()
    if name not in known:
        raise ConfigError(f"unknown provider {name!r}: choose one of {', '.join(known)}")
    target, extra = known[name]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            # The provider's own module (or its package) is missing, not a dependency.
            raise ProviderError(f"provider {name!r} is not available in this version yet") from None
        if extra is None:
            raise
        raise ProviderError(
            f"provider {name!r} needs: pip install 'deployer[{extra}]' ({error.name} is missing)"
        ) from None
    provider_class = getattr(module, class_name)
    typed = getattr(provider_class, "Options", None)
    if dataclasses.is_dataclass(options) and not isinstance(options, typed or ()):
        expected = f"options of type {typed.__name__} or a dict" if typed else "no options"
        raise ConfigError(f"provider {name!r} takes {expected}, not {type(options).__name__}")
    given = options_dict(options)
    _check_options(name, provider_class, given)
    provider: Provider = provider_class(**given)
    return provider


def _check_options(name: str, provider_class: type, given: Mapping[str, Any]) -> None:
    """Options the provider's constructor does not take, named before it runs.

    Read from the signature rather than by catching TypeError, which would also
    hide a TypeError raised inside a provider's constructor.
    """
    parameters = inspect.signature(provider_class).parameters
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    accepted = [
        parameter_name
        for parameter_name, parameter in parameters.items()
        if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no options"
        raise ConfigError(
            f"provider {name!r} does not take these options ({', '.join(unknown)}): it takes "
            f"{takes}"
        )
