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
