"""The one error hierarchy. Every message says what is wrong, where, and what to do."""

from __future__ import annotations


class DeployerError(Exception):
    """Base of every error deployer raises on purpose."""


class CaptureError(DeployerError):
    """The function, or something it captures, cannot be shipped."""


class RequirementsError(DeployerError):
    """A dependency cannot be pinned or installed on the target."""


class BundleError(DeployerError):
    """The bundle cannot be built, or a built bundle is invalid."""


class TriggerError(DeployerError):
    """A trigger is invalid, or a provider cannot represent it exactly."""


class ConfigError(DeployerError):
    """An argument of deploy() or the CLI is invalid (name, output, inputs...)."""


class ProviderError(DeployerError):
    """A provider failed to package, plan, apply, invoke or delete."""


class ConcurrentChange(ProviderError):
    """What a plan was made from changed before it was applied (another deploy ran)."""


class RunError(DeployerError):
    """A run of the deployed function failed."""


class StoreError(DeployerError):
    """Runs or outputs cannot be read from the object store."""
