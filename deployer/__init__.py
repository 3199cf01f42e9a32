"""deployer: one call from a prediction function to a scheduled or HTTP cloud function.

    import deployer
    from deployer import Cron, Http

    d = deployer.deploy(predict, name="churn-scores", triggers=[Cron("0 6 * * *"), Http()])
    d.invoke(features)
    deployer.read_outputs("churn-scores")

Importing this package is cheap: pandas, pyarrow and cloud SDKs load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deployer.errors import (
    BundleError,
    CaptureError,
    CheckFailed,
    ConcurrentChange,
    ConfigError,
    DeployerError,
    ProviderError,
    QualityWarning,
    RequirementsError,
    RunError,
    SchemaChangeWarning,
    StoreError,
    TriggerError,
)
from deployer.triggers import Cron, Every, Http

__version__ = "0.1.0"

__all__ = [
    "AwsOptions",
    "AzureOptions",
    "Built",
    "BundleError",
    "CaptureError",
    "Check",
    "CheckFailed",
    "ConcurrentChange",
    "ConfigError",
    "Cron",
    "Deployment",
    "DeploymentState",
    "DeployerError",
    "Drift",
    "Every",
    "GcpOptions",
    "Http",
    "Invocation",
    "MapRun",
    "Metric",
    "Plan",
    "Version",
    "ProviderError",
    "QualityWarning",
    "SchemaChangeWarning",
    "RequirementsError",
    "RunError",
    "StoreError",
    "TriggerError",
    "apply",
    "build",
    "committed_files",
    "delete",
    "deploy",
    "get",
    "history",
    "invoke",
    "list_deployments",
    "map",
    "plan",
    "read_outputs",
    "read_quality",
    "read_run",
    "read_runs",
    "register_provider",
    "rollback",
    "set_reference",
    "write_artifacts",
]

if TYPE_CHECKING:
    from deployer.api import (
        Built,
        Deployment,
        apply,
        build,
        delete,
        deploy,
        get,
        history,
        invoke,
        list_deployments,
        plan,
        rollback,
        write_artifacts,
    )
    from deployer.fanout import MapRun
    from deployer.fanout import run_map as map
    from deployer.providers.aws.target import AwsOptions
    from deployer.providers.azure.options import AzureOptions
    from deployer.providers.base import DeploymentState, Invocation, Plan, Version
    from deployer.providers.gcp.target import GcpOptions
    from deployer.quality import Check, Drift, Metric, read_quality, set_reference
    from deployer.registry import register_provider
    from deployer.store import committed_files, read_outputs, read_run, read_runs

_LAZY = {
    "Check": "deployer.quality",
    "Drift": "deployer.quality",
    "Metric": "deployer.quality",
    "read_quality": "deployer.quality",
    "set_reference": "deployer.quality",
    "AwsOptions": "deployer.providers.aws.target",
    "AzureOptions": "deployer.providers.azure.options",
    "GcpOptions": "deployer.providers.gcp.target",
    "apply": "deployer.api",
    "Built": "deployer.api",
    "Deployment": "deployer.api",
    "DeploymentState": "deployer.providers.base",
    "Invocation": "deployer.providers.base",
    "Plan": "deployer.providers.base",
    "Version": "deployer.providers.base",
    "history": "deployer.api",
    "rollback": "deployer.api",
    "invoke": "deployer.api",
    "MapRun": "deployer.fanout",
    "register_provider": "deployer.registry",
    "build": "deployer.api",
    "delete": "deployer.api",
    "deploy": "deployer.api",
    "get": "deployer.api",
    "list_deployments": "deployer.api",
    "plan": "deployer.api",
    "committed_files": "deployer.store",
    "read_outputs": "deployer.store",
    "read_run": "deployer.store",
    "read_runs": "deployer.store",
    "write_artifacts": "deployer.api",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import deployer` does not import pandas or pyarrow.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "map":
        from deployer.fanout import run_map

        return run_map
    raise AttributeError(f"module 'deployer' has no attribute {name!r}")
