"""`import deployer` stays cheap: no pandas, pyarrow or cloud SDK until used."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_deployer_loads_no_heavy_modules() -> None:
    script = (
        "import json, sys, deployer\n"
        "print(json.dumps(sorted(name.split('.')[0] for name in sys.modules)))"
    )
    loaded = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script], check=True, capture_output=True, text=True
            ).stdout
        )
    )
    heavy = {
        "pandas",
        "pyarrow",
        "numpy",
        "boto3",
        "botocore",
        "google",
        "azure",
        "cloudpickle",
        "croniter",
        "rich",
        "click",
    }
    assert loaded & heavy == set()
    assert "deployer" in loaded


def test_every_public_name_resolves_and_the_types_public_functions_return_are_public() -> None:
    import inspect

    import deployer

    for name in deployer.__all__:
        assert getattr(deployer, name) is not None, name
    for name in ("Plan", "Built", "Invocation", "DeploymentState", "invoke", "write_artifacts"):
        assert name in deployer.__all__
    # plan() takes deploy()'s arguments by name, not **options.
    deploy_parameters = set(inspect.signature(deployer.deploy).parameters)
    assert set(inspect.signature(deployer.plan).parameters) == deploy_parameters
