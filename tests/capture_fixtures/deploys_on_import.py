"""A module that imports deployer when it loads: it cannot be loaded where deployer
is not installed, which is everywhere a function is deployed to."""

from __future__ import annotations

import deployer  # noqa: F401


def predict(rows: list[float]) -> list[float]:
    return rows
