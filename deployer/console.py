"""What the user sees while deploying: requirements, the plan, progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from deployer.providers.base import Plan
    from deployer.requirements import Requirements


def pin_kind(specifier: str | None) -> str:
    """'pinned' for one exact version, 'range' for anything a resolver may choose within."""
    if not specifier:
        return "any"
    exact = specifier.startswith("==") and "," not in specifier and "*" not in specifier
    return "pinned" if exact else "range"


class Reporter:
    """Prints to stderr with rich; ``quiet`` silences everything but errors."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    def requirements(self, requirements: Requirements) -> None:
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title="requirements", title_justify="left", box=None)
        table.add_column("package")
        table.add_column("version")
        table.add_column("pin")
        table.add_column("why")
        for requirement in requirements.all:
            table.add_row(
                requirement.name,
                requirement.specifier or "any",
                pin_kind(requirement.specifier),
                requirement.reason,
            )
        self.console.print(table)

    def plan(self, plan: Plan) -> None:
        if self.quiet:
            return
        if plan.changes_nothing:
            self.say(f"[bold]{plan.name}[/] ({plan.provider}): up to date, nothing to change")
            return
        self.say(f"[bold]plan for {plan.name}[/] ({plan.provider}):")
        for action in plan.actions:
            self.say(f"  [cyan]{action.kind}[/]  {action.description}")

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner for long work (environment installs, uploads, cloud waits)."""
        if self.quiet:
            yield
            return
        with self.console.status(message):
            yield
        self.say(f"[green]done[/] {message}")
