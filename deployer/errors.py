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


class CheckFailed(RunError):
    """The run succeeded but failed a check or bound of severity "error".

    Its predictions are in ``predictions`` (a DataFrame, or None); what failed is
    in ``reasons``.
    """

    def __init__(self, message: str, *, predictions: object, reasons: list[str]) -> None:
        super().__init__(message)
        self.predictions = predictions
        self.reasons = reasons


class QualityWarning(UserWarning):
    """The run warned: a warning-severity check or bound, drift or a schema change."""


class StoreError(DeployerError):
    """Runs or outputs cannot be read from the object store."""


class SchemaChangeWarning(UserWarning):
    """The output's columns or types differ between runs (or will, with new code)."""
