"""A fault injected into the service's own code: a unit of work whose `record`
(called while a command is decided, with what the command changed) raises for
outdials of chosen names, on the real broker and the real stores."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.domain import Aggregate

from services.command.application import OutdialApplication
from services.command.unit_of_work import Change, UnitOfWork


@dataclass
class Faults:
    """Deciding a command that changes an outdial named in `failures` raises
    RuntimeError, that many times (None: always); `calls` keeps when each such
    decision was made. Hand `unit_of_work` to `command_side(uow_class=...)`."""

    failures: dict[str, int | None] = field(default_factory=dict)
    calls: dict[str, list[float]] = field(default_factory=dict)

    def unit_of_work(self, app: OutdialApplication, **kwargs: Any) -> UnitOfWork:
        return FaultyUnitOfWork(self, app, **kwargs)

    def check(self, changed: Sequence[Aggregate]) -> None:
        for aggregate in changed:
            name = getattr(aggregate, "name", None)
            if name in self.failures:
                self.calls.setdefault(name, []).append(time.monotonic())
                left = self.failures[name]
                if left is None or left > 0:
                    self.failures[name] = None if left is None else left - 1
                    raise RuntimeError(f"injected fault deciding {name!r}")


class FaultyUnitOfWork(UnitOfWork):
    def __init__(self, faults: Faults, app: OutdialApplication, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.faults = faults

    def record(self, changed: Sequence[Aggregate]) -> list[Change]:
        self.faults.check(changed)
        return super().record(changed)


def created_outdial_names(app: OutdialApplication) -> list[str]:
    """The name of every outdial the store holds a creation of, in the log's order."""
    return [
        app.mapper.to_domain_event(n).name  # type: ignore[attr-defined]
        for n in app.recorder.select_notifications(start=None, limit=10**9)
        if n.topic.endswith(":Outdial.Created")
    ]
