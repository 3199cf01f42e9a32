"""A callable class living in a local module: its instances pickle by reference."""

from __future__ import annotations

from . import weights


class Threshold:
    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, rows: list[float]) -> list[bool]:
        return [row * weights.FACTOR > self.limit for row in rows]
