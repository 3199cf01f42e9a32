"""For the cache tests: count the pip installs deployer runs, and run one action
on several threads at once."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from deployer import packaging

Result = TypeVar("Result")


def pip_installs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every ``pip install`` that deployer.packaging runs from now on (they still run)."""
    installs: list[list[str]] = []
    real_run: Callable[..., Any] = subprocess.run

    def counting_run(command: list[str], *args: Any, **kwargs: Any) -> Any:
        if command[1:4] == ["-m", "pip", "install"]:
            installs.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(packaging.subprocess, "run", counting_run)
    return installs


def at_once(action: Callable[[], Result], times: int = 3) -> list[Result]:
    """``action`` on ``times`` threads started together; their results, or the first error."""
    results: list[Result] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(action())
        except BaseException as error:  # raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
