"""Issue 9, item 11: on a system without POSIX file locks (Windows), a clear error
instead of an ImportError of fcntl."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
import deployer
from deployer.errors import ConfigError
try:
    deployer.deploy(lambda: None, name="x", quiet=True)
except ConfigError as error:
    print("ConfigError:", error)
"""


def test_without_posix_locks_deploying_locally_names_the_systems_that_work(
    deployer_home: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DEPLOYER_HOME": str(deployer_home)},
    )
    assert "ImportError" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "ConfigError: the local provider and the dependency cache run on Linux and macOS, " in (
        result.stdout
    )
    assert f"not on {sys.platform}: use WSL 2" in result.stdout
