"""`outdial replay`: rebuild the read model from the event store (CONTRACT 6).

The rebuild projects the whole log into a second set of tables (`*_next`),
tracked under its own name, while the live projection and the API go on with
the live tables. When it has caught up, one transaction locks the live
projection out, applies what arrived meanwhile, and renames the new tables
into place: readers see the old model, then the new one, never a mix. An
interrupted rebuild resumes from its own tracked position.

`--check` projects the log into `*_check` tables up to the live position and
compares them, row for row, with the live tables as of that same position.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from tqdm import tqdm

from services.command.application import OutdialApplication
from services.query.projection import Projection
from services.query.read_model import NEXT, ReadModelMixin

CHECK = "_check"
PAGE_SIZE = 1000


def _project(
    app: OutdialApplication, projection: Projection, stop: int | None, out: TextIO
) -> None:
    """Catch `projection` up to `stop` (or the head), with a progress bar."""
    start = projection.read_model.position()
    head = stop if stop is not None else (app.recorder.max_notification_id() or 0)
    with tqdm(
        total=max(head - start, 0),
        unit="event",
        unit_scale=True,
        desc="replay",
        file=out,
        dynamic_ncols=True,
        mininterval=0.5,
    ) as bar:
        position = start
        while projection.catch_up_page(stop):
            reached = projection.read_model.position()
            if reached > bar.total + start:
                bar.total = reached - start  # events stored since we began
            bar.update(reached - position)
            position = reached


def rebuild(app: OutdialApplication, live: ReadModelMixin, *, out: TextIO = sys.stderr) -> int:
    """Rebuild every read model and swap it in; return the new live position."""
    rebuilt = live.variant(NEXT)
    rebuilt.create_views()
    projection = Projection(app, rebuilt, page_size=PAGE_SIZE)
    started = time.monotonic()
    _project(app, projection, None, out)
    position = live.swap_in(rebuilt, projection.catch_up_in)
    print(
        f"replay: rebuilt to position {position} in {time.monotonic() - started:.1f} s; "
        "the rebuilt read model is live",
        file=out,
    )
    return position


@dataclass
class Comparison:
    position: int
    rows: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences


def check(
    app: OutdialApplication, live: ReadModelMixin, *, out: TextIO = sys.stderr, limit: int = 50
) -> Comparison:
    """Rebuild into scratch tables and compare them with the live read model."""
    fresh = live.variant(CHECK)
    fresh.drop_views()
    fresh.create_views()
    fresh.forget_position()
    projection = Projection(app, fresh, page_size=PAGE_SIZE)
    try:
        _project(app, projection, live.position(), out)
        with live.snapshot() as c:
            # The live rows and position as of one moment: the fresh tables are
            # brought to exactly that position before they are compared.
            position = live.tracked_in(c)
            projection.catch_up(stop=position)
            with fresh.snapshot() as f:
                comparison = _compare(live.dump(c), fresh.dump(f), position, limit)
    finally:
        fresh.drop_views()
        fresh.forget_position()
    return comparison


def _compare(
    live: Iterator[tuple[str, str, str]],
    fresh: Iterator[tuple[str, str, str]],
    position: int,
    limit: int,
) -> Comparison:
    """Merge two row streams sorted alike by (table, id), noting every difference."""
    comparison = Comparison(position)
    a, b = next(live, None), next(fresh, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[:2] < b[:2]):
            assert a is not None
            comparison.differences.append(f"{a[0]} {a[1]}: in the live model only")
            a = next(live, None)
            continue
        comparison.rows += 1
        if a is None or b[:2] < a[:2]:
            comparison.differences.append(f"{b[0]} {b[1]}: missing from the live model")
        else:
            if a[2] != b[2]:
                comparison.differences.append(f"{a[0]} {a[1]}: live {a[2]} != rebuilt {b[2]}")
            a = next(live, None)
        b = next(fresh, None)
    del comparison.differences[limit:]
    return comparison
