"""A module that deploys its own function only when run as a script: loading it
elsewhere never imports deployer."""

from __future__ import annotations


def predict(rows: list[float]) -> list[float]:
    return [row + 1 for row in rows]


def deploy() -> None:
    import deployer

    deployer.deploy(predict, name="plus-one")


if __name__ == "__main__":
    import deployer

    deployer.deploy(predict, name="plus-one")


try:
    import deployer
except ImportError:
    deployer = None  # type: ignore[assignment]
