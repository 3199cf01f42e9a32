"""Providers by name, imported on first use (like fsspec's known_implementations)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deployer.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from deployer.providers.base import Provider

# name -> (module:class, the extra that brings its SDK, or None)
PROVIDERS: dict[str, tuple[str, str | None]] = {
    "local": ("deployer.providers.local.provider:LocalProvider", None),
    "aws": ("deployer.providers.aws.provider:AwsProvider", "aws"),
    "gcp": ("deployer.providers.gcp.provider:GcpProvider", "gcp"),
    "azure": ("deployer.providers.azure.provider:AzureProvider", "azure"),
}


def get_provider(name: str, options: Mapping[str, Any] | None = None) -> Provider:
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)}")
    target, extra = PROVIDERS[name]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise ProviderError(f"provider {name!r} is not available in this version yet") from None
        if extra is None:
            raise
        raise ProviderError(
            f"provider {name!r} needs: pip install 'deployer[{extra}]' ({error.name} is missing)"
        ) from None
    try:
        provider: Provider = getattr(module, class_name)(**dict(options or {}))
    except TypeError as error:
        raise ConfigError(f"provider {name!r} does not take these options ({error})") from None
    return provider
